//! Integer pooling kernels on NHWC activations (global average, max, average) and the requantizing row
//! copy that concatenation is made of. Each equals its interpreter op (runtime/src/qops.rs) exactly.
use super::dwconv::DwGeom;
use super::elementwise::{quantize_one, IntElem, Ptr};
use super::pool;
use crate::quant::quantize_value;

/// Global average pooling of NHWC integers: y[n, c] = quantize((f32(Σ (x − zx)) · sx) / f32(hw)).
///
/// # Safety
/// X holds n·hw·c elements, out n·c.
#[allow(clippy::too_many_arguments)]
pub unsafe fn qgap(
    x: *const u8,
    ex: IntElem,
    n: usize,
    hw: usize,
    c: usize,
    sx: f32,
    zx: i32,
    out: *mut u8,
    eo: IntElem,
    sy: f32,
    zy: i32,
    lo: i32,
    hi: i32,
) {
    let mut sums = vec![0i64; c];
    for b in 0..n {
        sums.fill(0);
        for p in 0..hw {
            for (ch, s) in sums.iter_mut().enumerate() {
                // SAFETY: inside x.
                *s += unsafe { ex.read(x, (b * hw + p) * c + ch) } as i64 - zx as i64;
            }
        }
        for (ch, s) in sums.iter().enumerate() {
            let v = quantize_value((*s as f32 * sx) / hw as f32, sy, zy, lo as i64, hi as i64);
            // SAFETY: inside out.
            unsafe { eo.write(out, b * c + ch, v as i32) };
        }
    }
}

/// Max pooling of NHWC integers (padding never wins; an all-padding window gives the storage minimum,
/// as in the interpreter).
///
/// # Safety
/// x holds n·h·w·c elements, out n·oh·ow·c.
pub unsafe fn qmaxpool(x: *const u8, e: IntElem, g: DwGeom, out: *mut u8) {
    let (xp, op) = (Ptr(x as *mut u8), Ptr(out));
    /// One output row for element type T, channels innermost so the max vectorizes.
    #[inline(always)]
    fn row<T: Copy + Ord>(x: &[T], out: &mut [T], g: DwGeom, b: usize, oy: usize, min: T) {
        let c = g.c;
        for ox in 0..g.ow {
            let best = &mut out[ox * c..(ox + 1) * c];
            best.fill(min);
            for ky in 0..g.kh {
                let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                for kx in 0..g.kw {
                    let ix = (ox * g.stride[1] + kx * g.dil[1]) as isize - g.pad[1] as isize;
                    if ix < 0 || ix >= g.w as isize {
                        continue;
                    }
                    let base = ((b * g.h + iy as usize) * g.w + ix as usize) * c;
                    for (m, v) in best.iter_mut().zip(&x[base..base + c]) {
                        *m = (*m).max(*v);
                    }
                }
            }
        }
    }
    let (xlen, olen) = (g.n * g.h * g.w * g.c, g.n * g.oh * g.ow * g.c);
    pool::parallel_for(g.n * g.oh, &|t| {
        let (b, oy) = (t / g.oh, t % g.oh);
        let span = (b * g.oh + oy) * g.ow * g.c..(b * g.oh + oy + 1) * g.ow * g.c;
        // SAFETY: the buffers hold xlen and olen elements; tasks write disjoint output rows.
        unsafe {
            match e {
                IntElem::U8 => {
                    let x = std::slice::from_raw_parts(xp.get() as *const u8, xlen);
                    let o = &mut std::slice::from_raw_parts_mut(op.get(), olen)[span];
                    row(x, o, g, b, oy, 0u8)
                }
                IntElem::I8 => {
                    let x = std::slice::from_raw_parts(xp.get() as *const i8, xlen);
                    let o = &mut std::slice::from_raw_parts_mut(op.get() as *mut i8, olen)[span];
                    row(x, o, g, b, oy, i8::MIN)
                }
                IntElem::I16 => {
                    let x = std::slice::from_raw_parts(xp.get() as *const i16, xlen);
                    let o = &mut std::slice::from_raw_parts_mut(op.get() as *mut i16, olen)[span];
                    row(x, o, g, b, oy, i16::MIN)
                }
            }
        }
    });
}

/// Average pooling of NHWC integers: per window the exact sum of (x − zx) over the taps inside the input,
/// then quantize((f32(sum) · sx) / f32(divisor)); `pe` = end pads (for a divisor that counts padding).
///
/// # Safety
/// x holds n·h·w·c elements of ex, out n·oh·ow·c of eo.
#[allow(clippy::too_many_arguments)]
pub unsafe fn qavgpool(
    x: *const u8,
    ex: IntElem,
    g: DwGeom,
    pe: [usize; 2],
    include_pad: bool,
    (sx, zx): (f32, i32),
    out: *mut u8,
    eo: IntElem,
    (sy, zy, lo, hi): (f32, i32, i32, i32),
) {
    let (xp, op) = (Ptr(x as *mut u8), Ptr(out));
    let (rows, cols) = g.avg_pool_taps(pe);
    pool::parallel_for(g.n * g.oh, &|t| {
        let (b, oy) = (t / g.oh, t % g.oh);
        let (ry, py) = &rows[oy];
        let mut sums = vec![0i32; g.c];
        for (ox, (cx, px)) in cols.iter().enumerate() {
            sums.fill(0);
            for iy in ry {
                for ix in cx {
                    let base = ((b * g.h + iy) * g.w + ix) * g.c;
                    for (ch, s) in sums.iter_mut().enumerate() {
                        // SAFETY: inside x. Window sums of 16-bit values fit i32 for windows below 2^15 taps.
                        *s += unsafe { ex.read(xp.get(), base + ch) };
                    }
                }
            }
            let inside = (ry.len() * cx.len()) as i32;
            let count = if include_pad { py * px } else { ry.len() * cx.len() };
            let at = ((b * g.oh + oy) * g.ow + ox) * g.c;
            for (ch, s) in sums.iter().enumerate() {
                let r = if count > 0 { ((s - inside * zx) as f32 * sx) / count as f32 } else { 0.0 };
                let v = quantize_one(r, sy, zy, lo, hi);
                // SAFETY: inside out; tasks write disjoint output rows.
                unsafe { eo.write(op.get(), at + ch, v) };
            }
        }
    });
}

/// `rows` rows of `len` elements from src (stride len) into dst (stride dst_stride, from element dst_off),
/// each requantized: quantize((x − zs) · ss) with the destination's parameters; with `copy` = the element
/// size, a plain copy (f32 values, or integers whose type and parameters are the destination's).
pub struct RequantRows {
    pub copy: usize,
    pub rows: usize,
    pub len: usize,
    pub src: (*const u8, IntElem, f32, i32),
    pub dst: (*mut u8, IntElem, f32, i32),
    pub dst_stride: usize,
    pub dst_off: usize,
    pub lo: i32,
    pub hi: i32,
}

// SAFETY: rows write disjoint ranges of dst and only read src.
unsafe impl Sync for RequantRows {}

impl RequantRows {
    ///
    /// # Safety
    /// src holds rows·len elements, dst rows·dst_stride.
    pub unsafe fn run(&self) {
        let (sp, dp) = (Ptr(self.src.0 as *mut u8), Ptr(self.dst.0));
        pool::parallel_for(self.rows, &|r| {
            let (from, to) = (r * self.len, r * self.dst_stride + self.dst_off);
            // SAFETY: row r of src and its slot in dst (the caller's contract).
            unsafe {
                if self.copy > 0 {
                    let es = self.copy;
                    std::ptr::copy_nonoverlapping(sp.get().add(from * es), dp.get().add(to * es), self.len * es);
                } else {
                    for i in 0..self.len {
                        let v = (self.src.1.read(sp.get(), from + i) - self.src.3) as f32 * self.src.2;
                        self.dst.1.write(dp.get(), to + i, quantize_one(v, self.dst.2, self.dst.3, self.lo, self.hi));
                    }
                }
            }
        });
    }
}
