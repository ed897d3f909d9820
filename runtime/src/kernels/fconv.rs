//! Float convolution helpers on NCHW f32 (the layout float values keep): im2col into [K][P] columns for
//! fgemm, depthwise convolution, global average pooling and max pooling. Results agree with the
//! interpreter within float rounding (summation order differs).
use super::dwconv::DwGeom;
use super::elementwise::Ptr;
use super::{multiversion, pool, Isa};
use qcc_ir::Act;

/// Columns of one image: col[(c·kh + ky)·kw + kx][oy·ow + ox] = x[c, iy, ix] (0 outside).
///
/// # Safety
/// x holds c·h·w floats, col (c·kh·kw)·(oh·ow).
pub unsafe fn im2col(x: *const f32, g: DwGeom, col: *mut f32) {
    let (xp, cp) = (Ptr(x as *mut u8), Ptr(col as *mut u8));
    let p = g.oh * g.ow;
    pool::parallel_for(g.c * g.kh, &|t| {
        let (c, ky) = (t / g.kh, t % g.kh);
        for kx in 0..g.kw {
            // SAFETY: row (c, ky, kx) of col and plane c of x are inside their buffers.
            let row = unsafe { std::slice::from_raw_parts_mut((cp.get() as *mut f32).add(((c * g.kh + ky) * g.kw + kx) * p), p) };
            let plane = unsafe { std::slice::from_raw_parts((xp.get() as *const f32).add(c * g.h * g.w), g.h * g.w) };
            for oy in 0..g.oh {
                let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
                let dst = &mut row[oy * g.ow..(oy + 1) * g.ow];
                if iy < 0 || iy >= g.h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                for (ox, d) in dst.iter_mut().enumerate() {
                    let ix = (ox * g.stride[1] + kx * g.dil[1]) as isize - g.pad[1] as isize;
                    *d = if ix < 0 || ix >= g.w as isize { 0.0 } else { src[ix as usize] };
                }
            }
        }
    });
}

/// Depthwise convolution of NCHW f32 (one filter per channel; w is [c][kh·kw]) with bias and activation.
pub struct FDwConv<'a> {
    pub isa: Isa,
    pub g: DwGeom,
    pub x: *const f32,
    pub w: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub act: Option<Act>,
    pub out: *mut f32,
}

// SAFETY: tasks read x and write disjoint output planes.
unsafe impl Sync for FDwConv<'_> {}

impl FDwConv<'_> {
    /// # Safety
    /// x holds n·c·h·w floats, out n·c·oh·ow.
    pub unsafe fn run(&self) {
        let g = self.g;
        pool::parallel_for(g.n * g.c, &|t| {
            let c = t % g.c;
            // SAFETY: plane t of x and of out.
            let x = unsafe { std::slice::from_raw_parts(self.x.add(t * g.h * g.w), g.h * g.w) };
            let out = unsafe { std::slice::from_raw_parts_mut(self.out.add(t * g.oh * g.ow), g.oh * g.ow) };
            let w = &self.w[c * g.kh * g.kw..(c + 1) * g.kh * g.kw];
            plane(self.isa, x, out, w, self.bias.map_or(0.0, |b| b[c]), self.act, g);
        });
        multiversion!(
            fn plane(x: &[f32], out: &mut [f32], w: &[f32], bias: f32, act: Option<Act>, g: DwGeom) {
                let s = g.stride[1];
                // Strided rows are split into `s` phases (every s-th element), so every tap is a contiguous
                // multiply-add over output columns.
                let plen = g.w.div_ceil(s);
                let mut phases = vec![0f32; s * plen];
                // Per kx, the output columns lo..hi whose input column ox·s + off lies inside the row, and
                // where the first of them starts in the row (or in its phase array): the same for every row.
                let spans: Vec<(usize, usize, usize)> = (0..g.kw)
                    .map(|kx| {
                        let off = (kx * g.dil[1]) as isize - g.pad[1] as isize;
                        let si = s as isize;
                        let lo = if off >= 0 { 0 } else { ((-off + si - 1) / si) as usize };
                        let hi = (((g.w as isize - 1 - off) / si) + 1).clamp(0, g.ow as isize) as usize;
                        let first = (lo as isize * si + off).max(0) as usize;
                        let start = if s == 1 { first } else { (first % s) * plen + first / s };
                        (lo, hi, start)
                    })
                    .collect();
                for oy in 0..g.oh {
                    let o = &mut out[oy * g.ow..(oy + 1) * g.ow];
                    o.fill(bias);
                    for ky in 0..g.kh {
                        let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        let src = &x[iy as usize * g.w..(iy as usize + 1) * g.w];
                        if s > 1 {
                            for q in 0..s {
                                for (d, v) in phases[q * plen..(q + 1) * plen].iter_mut().zip(src[q..].iter().step_by(s)) {
                                    *d = *v;
                                }
                            }
                        }
                        for (kx, &(lo, hi, start)) in spans.iter().enumerate() {
                            let wv = w[ky * g.kw + kx];
                            if hi <= lo {
                                continue;
                            }
                            let row = if s == 1 { &src[start..] } else { &phases[start..] };
                            for (d, v) in o[lo..hi].iter_mut().zip(row) {
                                *d += wv * v;
                            }
                        }
                    }
                    apply_act(o, act);
                }
            }
        );
    }
}

/// Applies a fused activation in place, with one loop per kind so clamps vectorize.
#[inline(always)]
pub fn apply_act(o: &mut [f32], act: Option<Act>) {
    match act {
        None => {}
        Some(Act::Relu) => o.iter_mut().for_each(|v| *v = Act::Relu.apply(*v)),
        Some(Act::Clip { min, max }) => o.iter_mut().for_each(|v| *v = v.max(min).min(max)),
        Some(f) => o.iter_mut().for_each(|v| *v = f.apply(*v)),
    }
}

/// Global average pooling of NCHW f32: one mean per plane.
///
/// # Safety
/// x holds planes·hw floats, out planes.
pub unsafe fn gap(x: *const f32, planes: usize, hw: usize, out: *mut f32) {
    for t in 0..planes {
        // SAFETY: plane t.
        let p = unsafe { std::slice::from_raw_parts(x.add(t * hw), hw) };
        unsafe { *out.add(t) = p.iter().sum::<f32>() / hw as f32 };
    }
}

/// Average pooling of NCHW f32 with the interpreter's divisor rule (nn::avg_pool): with `include_pad` the
/// taps inside the padded extent (`pe` = end pads), else only taps inside the input; the same summation
/// order, so results are identical.
///
/// # Safety
/// x holds n·c·h·w floats, out n·c·oh·ow.
pub unsafe fn avgpool(x: *const f32, g: DwGeom, pe: [usize; 2], include_pad: bool, out: *mut f32) {
    let (xp, op) = (Ptr(x as *mut u8), Ptr(out as *mut u8));
    let (rows, cols) = g.avg_pool_taps(pe);
    pool::parallel_for(g.n * g.c, &|t| {
        // SAFETY: plane t of x and of out.
        let plane = unsafe { std::slice::from_raw_parts((xp.get() as *const f32).add(t * g.h * g.w), g.h * g.w) };
        let out = unsafe { std::slice::from_raw_parts_mut((op.get() as *mut f32).add(t * g.oh * g.ow), g.oh * g.ow) };
        for (oy, (ry, py)) in rows.iter().enumerate() {
            for (ox, (cx, px)) in cols.iter().enumerate() {
                let mut sum = 0f32;
                for iy in ry {
                    for ix in cx {
                        sum += plane[iy * g.w + ix];
                    }
                }
                let count = if include_pad { py * px } else { ry.len() * cx.len() };
                out[oy * g.ow + ox] = if count > 0 { sum / count as f32 } else { 0.0 };
            }
        }
    });
}

/// Max pooling of NCHW f32 (padding never wins).
///
/// # Safety
/// x holds n·c·h·w floats, out n·c·oh·ow.
pub unsafe fn maxpool(x: *const f32, g: DwGeom, out: *mut f32) {
    let (xp, op) = (Ptr(x as *mut u8), Ptr(out as *mut u8));
    pool::parallel_for(g.n * g.c, &|t| {
        // SAFETY: plane t of x and of out.
        let x = unsafe { std::slice::from_raw_parts((xp.get() as *const f32).add(t * g.h * g.w), g.h * g.w) };
        let out = unsafe { std::slice::from_raw_parts_mut((op.get() as *mut f32).add(t * g.oh * g.ow), g.oh * g.ow) };
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let mut best = f32::NEG_INFINITY;
                for ky in 0..g.kh {
                    let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    for kx in 0..g.kw {
                        let ix = (ox * g.stride[1] + kx * g.dil[1]) as isize - g.pad[1] as isize;
                        if ix >= 0 && ix < g.w as isize {
                            let v = x[iy as usize * g.w + ix as usize];
                            if v > best {
                                best = v;
                            }
                        }
                    }
                }
                out[oy * g.ow + ox] = best;
            }
        }
    });
}
