//! Depthwise convolution (one filter per channel) on NHWC bytes with the requantizing epilogue:
//! acc[c] = bias[c] + Σ_taps (x[c] − zx) · (w[tap][c] − zw[c]), taps outside the input contributing 0.
//! Vectorized across channels (the contiguous axis); rows of output are the parallel tasks.
use super::epilogue::Epilogue;
use super::{multiversion, pool, Isa};

/// Geometry of one depthwise convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DwGeom {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dil: [usize; 2],
}

pub struct DwConv<'a> {
    pub isa: Isa,
    pub g: DwGeom,
    pub x: *const u8,
    /// Activation zero point as seen after the optional sign flip (i8 stored as u8 = i8 + 128).
    pub zx: i32,
    pub xor: bool,
    /// [kh * kw][c]: weights minus their zero point.
    pub wts: &'a [i32],
    pub bias: &'a [i32],
    pub epi: Epilogue<'a>,
    pub out: *mut u8,
}

// SAFETY: tasks read x and write disjoint output rows.
unsafe impl Sync for DwConv<'_> {}

impl DwConv<'_> {
    ///
    /// # Safety
    /// X must hold n·h·w·c bytes and out n·oh·ow·c bytes, not overlapping.
    pub unsafe fn run(&self) {
        let g = self.g;
        pool::parallel_for(g.n * g.oh, &|t| {
            // SAFETY: row t of the output and the input rows it reads are inside the buffers.
            unsafe { self.row(t / g.oh, t % g.oh) }
        });
    }

    unsafe fn row(&self, b: usize, oy: usize) {
        let g = self.g;
        // SAFETY: run()'s contract.
        let x = unsafe { std::slice::from_raw_parts(self.x.add(b * g.h * g.w * g.c), g.h * g.w * g.c) };
        let out = unsafe { std::slice::from_raw_parts_mut(self.out.add((b * g.oh + oy) * g.ow * g.c), g.ow * g.c) };
        multiversion!(
            fn dw_row(x: &[u8], out: &mut [u8], d: &DwConv, oy: usize) {
                let g = d.g;
                let c = g.c;
                let flip = if d.xor { 0x80u8 } else { 0 };
                let valid = |i: isize, n: usize| i >= 0 && i < n as isize;
                let rows: Vec<(usize, usize)> = (0..g.kh)
                    .filter_map(|ky| {
                        let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
                        valid(iy, g.h).then_some((ky, iy as usize))
                    })
                    .collect();
                let mut taps: Vec<(usize, usize)> = Vec::with_capacity(g.kh * g.kw);
                let mut tail = vec![0i32; c % BLOCK];
                for ox in 0..g.ow {
                    // (weight offset, input offset) of every tap inside the image.
                    taps.clear();
                    for &(ky, iy) in &rows {
                        for kx in 0..g.kw {
                            let ix = (ox * g.stride[1] + kx * g.dil[1]) as isize - g.pad[1] as isize;
                            if valid(ix, g.w) {
                                taps.push(((ky * g.kw + kx) * c, (iy * g.w + ix as usize) * c));
                            }
                        }
                    }
                    let o = &mut out[ox * c..(ox + 1) * c];
                    let mut cb = 0;
                    // Blocks of 16 channels: the accumulator stays in one vector register across the taps.
                    while cb + BLOCK <= c {
                        let mut acc = [0i32; BLOCK];
                        acc.copy_from_slice(&d.bias[cb..cb + BLOCK]);
                        for &(wo, xo) in &taps {
                            let xs: &[u8; BLOCK] = x[xo + cb..xo + cb + BLOCK].try_into().expect("block");
                            let ws: &[i32; BLOCK] = d.wts[wo + cb..wo + cb + BLOCK].try_into().expect("block");
                            for j in 0..BLOCK {
                                acc[j] = acc[j].wrapping_add(((xs[j] ^ flip) as i32 - d.zx).wrapping_mul(ws[j]));
                            }
                        }
                        d.epi.row(&acc, cb, &mut o[cb..cb + BLOCK]);
                        cb += BLOCK;
                    }
                    if cb < c {
                        tail.copy_from_slice(&d.bias[cb..c]);
                        for &(wo, xo) in &taps {
                            for (j, a) in tail.iter_mut().enumerate() {
                                *a = a.wrapping_add(((x[xo + cb + j] ^ flip) as i32 - d.zx).wrapping_mul(d.wts[wo + cb + j]));
                            }
                        }
                        d.epi.row(&tail, cb, &mut o[cb..c]);
                    }
                }
            }
        );
        dw_row(self.isa, x, out, self, oy);
    }
}

/// Channels per register block.
const BLOCK: usize = 16;
