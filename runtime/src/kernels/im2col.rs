//! Im2col of NHWC bytes for convolutions the GEMM cannot read in place (input channels not a multiple
//! of 4, such as RGB first layers): row p of the output holds output pixel p's window in (ky, kx, c)
//! order, kp bytes, padding taps at the zero point and bytes past the window 0.
use super::dwconv::DwGeom;
use super::elementwise::Ptr;
use super::pool;

/// Fills `out` (n·oh·ow rows of kp bytes) from the first c = g.c channels of `x` (n·h·w pixels of
/// `stride` ≥ c bytes: one group's channels of a grouped convolution).
///
/// # Safety
/// X and out hold those sizes and do not overlap; kp ≥ kh·kw·c and kp − kh·kw·c < 8.
pub unsafe fn im2col_u8(x: *const u8, g: DwGeom, stride: usize, pad_byte: u8, kp: usize, out: *mut u8) {
    let (xp, op) = (Ptr(x as *mut u8), Ptr(out));
    let c = g.c;
    let used = g.kh * g.kw * c;
    // Columns whose window lies inside the row: their taps of a row are one copy (or kw when dilated).
    let first_ok = |ox: usize| ox * g.stride[1] >= g.pad[1];
    let last_ok = |ox: usize| ox * g.stride[1] + (g.kw - 1) * g.dil[1] < g.w + g.pad[1];
    let lo = (0..g.ow).find(|&ox| first_ok(ox)).unwrap_or(g.ow);
    let hi = (lo..g.ow).find(|&ox| !last_ok(ox)).unwrap_or(g.ow);
    pool::parallel_for(g.n * g.oh, &|t| {
        let (b, oy) = (t / g.oh, t % g.oh);
        // SAFETY: rows of image b inside the input, output rows of this task inside out (caller's
        // contract); every copy stays inside its window row.
        unsafe {
            let src_row = |ky: usize| {
                let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
                (iy >= 0 && iy < g.h as isize).then(|| (xp.get() as *const u8).add((b * g.h + iy as usize) * g.w * stride))
            };
            for ox in 0..g.ow {
                let row = op.get().add(((b * g.oh + oy) * g.ow + ox) * kp);
                // Zeroing the last 8 bytes first (the window then overwrites its part) keeps bytes
                // used..kp defined without a memset call per pixel.
                if kp >= 8 {
                    std::ptr::write_unaligned(row.add(kp - 8) as *mut u64, 0);
                } else {
                    std::ptr::write_bytes(row.add(used), 0, kp - used);
                }
                let ix0 = (ox * g.stride[1]) as isize - g.pad[1] as isize;
                let inside = ox >= lo && ox < hi;
                for ky in 0..g.kh {
                    let dst = row.add(ky * g.kw * c);
                    match src_row(ky) {
                        Some(src) if inside && g.dil[1] == 1 && stride == c => copy_small(src.offset(ix0 * c as isize), dst, g.kw * c),
                        Some(src) => {
                            for kx in 0..g.kw {
                                let ix = ix0 + (kx * g.dil[1]) as isize;
                                if ix >= 0 && ix < g.w as isize {
                                    copy_small(src.add(ix as usize * stride), dst.add(kx * c), c);
                                } else {
                                    std::ptr::write_bytes(dst.add(kx * c), pad_byte, c);
                                }
                            }
                        }
                        None => std::ptr::write_bytes(dst, pad_byte, g.kw * c),
                    }
                }
            }
        }
    });
}

/// Copies n bytes with overlapping 8- or 4-byte moves below 32 bytes: no call (LLVM turns byte loops
/// into memcpy calls), which matters for the 9-byte window rows of RGB layers.
#[inline(always)]
unsafe fn copy_small(src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY: caller's contract: both valid for n bytes, not overlapping.
    unsafe {
        let mv8 = |j: usize| std::ptr::write_unaligned(dst.add(j) as *mut u64, std::ptr::read_unaligned(src.add(j) as *const u64));
        let mv4 = |j: usize| std::ptr::write_unaligned(dst.add(j) as *mut u32, std::ptr::read_unaligned(src.add(j) as *const u32));
        match n {
            32.. => std::ptr::copy_nonoverlapping(src, dst, n),
            8.. => {
                let mut j = 0;
                while j + 8 < n {
                    mv8(j);
                    j += 8;
                }
                mv8(n - 8);
            }
            4.. => {
                mv4(0);
                mv4(n - 4);
            }
            _ => (0..n).for_each(|j| *dst.add(j) = *src.add(j)),
        }
    }
}
