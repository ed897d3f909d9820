//! Float convolution helpers on NCHW f32 (the layout float values keep): depthwise convolution, global
//! average pooling, and the row spans and phase splits max pooling over planes shares (fpool.rs; fgemm
//! gathers the other convolutions' windows itself). Results agree with the interpreter within float
//! rounding (summation order differs).
use super::dwconv::DwGeom;
use super::{multiversion, pool, Isa};
use qcc_ir::Act;

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
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni && super::fconv_narrow::fits(&g) {
            let groups = g.c.div_ceil(16);
            pool::parallel_for(g.n * groups, &|t| {
                let (img, c0) = (t / groups, t % groups * 16);
                // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen; run()'s caller sized x and out.
                let clamped = unsafe {
                    if g.kh == 3 {
                        super::fconv_narrow::group::<3, 3>(self, img, c0)
                    } else {
                        super::fconv_narrow::group::<5, 5>(self, img, c0)
                    }
                };
                if !clamped {
                    let len = g.oh * g.ow;
                    for plane in img * g.c + c0..img * g.c + (c0 + 16).min(g.c) {
                        // SAFETY: plane `plane` of out, written by this task only.
                        apply_act(unsafe { std::slice::from_raw_parts_mut(self.out.add(plane * len), len) }, self.act);
                    }
                }
            });
            return;
        }
        pool::parallel_for(g.n * g.c, &|t| {
            let c = t % g.c;
            // SAFETY: plane t of x and of out.
            let x = unsafe { std::slice::from_raw_parts(self.x.add(t * g.h * g.w), g.h * g.w) };
            let out = unsafe { std::slice::from_raw_parts_mut(self.out.add(t * g.oh * g.ow), g.oh * g.ow) };
            let w = &self.w[c * g.kh * g.kw..(c + 1) * g.kh * g.kw];
            let bias = self.bias.map_or(0.0, |b| b[c]);
            #[cfg(target_arch = "x86_64")]
            if self.isa == Isa::Avx512Vnni && avx512::fits(&g) && matches!((g.kh, g.kw), (3, 3) | (5, 5)) {
                // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen; the planes are whole.
                let clamped = unsafe {
                    if g.kh == 3 {
                        if avx512::ring_pays(&g, 3, 3) {
                            avx512::plane_padded::<3, 3, true>(x, out, w, bias, self.act, g)
                        } else {
                            avx512::plane_padded::<3, 3, false>(x, out, w, bias, self.act, g)
                        }
                    } else {
                        if avx512::ring_pays(&g, 5, 5) {
                            avx512::plane_padded::<5, 5, true>(x, out, w, bias, self.act, g)
                        } else {
                            avx512::plane_padded::<5, 5, false>(x, out, w, bias, self.act, g)
                        }
                    }
                };
                if !clamped {
                    apply_act(out, self.act);
                }
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if self.isa == Isa::Avx512Vnni && avx512::fits(&g) {
                // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen; the planes are whole.
                let clamped = unsafe { avx512::plane(x, out, w, bias, self.act, g) };
                if !clamped {
                    apply_act(out, self.act);
                }
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if self.isa == Isa::Avx2 && super::fconv_avx2::fits(&g) {
                // SAFETY: AVX2 and FMA are present when Isa::Avx2 was chosen; the planes are whole.
                if !unsafe { super::fconv_avx2::plane(x, out, w, bias, self.act, g) } {
                    apply_act(out, self.act);
                }
                return;
            }
            plane(self.isa, x, out, w, bias, self.act, g);
        });
        multiversion!(
            fn plane(x: &[f32], out: &mut [f32], w: &[f32], bias: f32, act: Option<Act>, g: DwGeom) {
                let s = g.stride[1];
                // Strided rows are split into `s` phases (every s-th element), so every tap is a contiguous
                // multiply-add over output columns.
                let plen = g.w.div_ceil(s);
                let mut phases = vec![0f32; s * plen];
                let spans = row_spans(&g);
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
                            split_phases(src, s, &mut phases);
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

/// Depthwise planes with 16 output columns in one register, where the portable loop streams each tap
/// over the whole output row (memory-bound on the short rows of MobileNets). 3×3 and 5×5 kernels read a
/// zero-padded copy of the plane (stride 2: split into even and odd columns), so every tap is one
/// unmasked load and multiply-add; other sizes mask every load (stride 2 loads 32 columns and keeps the
/// even ones).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::DwGeom;
    use qcc_ir::Act;
    use std::arch::x86_64::*;

    /// Strides 1 and 2, no dilation, windows of at most 7×7.
    pub fn fits(g: &DwGeom) -> bool {
        matches!(g.stride[1], 1 | 2) && g.dil == [1, 1] && g.kw <= 7 && g.kh <= 7
    }

    /// Lanes l (of `n`) whose column ix0 + l·step lies in 0..w, as a mask.
    #[inline(always)]
    fn lanes(ix0: isize, step: isize, n: isize, w: isize) -> u32 {
        // First and one-past-last lane inside the row.
        let lo = if ix0 >= 0 { 0 } else { (-ix0 + step - 1) / step };
        let hi = if ix0 >= w { 0 } else { ((w - ix0 + step - 1) / step).min(n) };
        if hi <= lo {
            0
        } else {
            (((1u64 << hi) - 1) & !((1u64 << lo) - 1)) as u32
        }
    }

    /// The clamp of a fused activation (applied in registers) and whether the activation is one.
    fn clamp_of(act: Option<Act>) -> (f32, f32, bool) {
        let b = crate::kernels::clamp_bounds(act);
        let (lo, hi) = b.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        (lo, hi, b.is_some())
    }

    thread_local! {
        /// Each thread's padded copy of a plane, kept between calls (taken out while a plane runs).
        static PADDED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    }

    /// Whether plane_padded should keep a ring of padded rows: vertical stride 2 (a row is read by at
    /// most two output rows) and a whole padded copy (both phases) past 32 KB, which would not stay in
    /// L1 (measured on MobileNetV2: the 112×112 layer gains 12%, the 56×56 one, 22 KB, loses 7%).
    pub fn ring_pays(g: &DwGeom, kh: usize, kw: usize) -> bool {
        let phases = if g.stride[1] == 1 { 1 } else { 2 };
        g.stride[0] == 2 && ((g.oh - 1) * 2 + kh) * padded_width(g, kw) * phases * 4 > 32 << 10
    }

    /// Padded row length (stride 1), or of each column phase (stride 2), rounded to whole vectors.
    fn padded_width(g: &DwGeom, kw: usize) -> usize {
        let ow16 = g.ow.div_ceil(16) * 16;
        if g.stride[1] == 1 { ow16 + kw - 1 } else { ow16 + (kw - 1) / 2 }.div_ceil(16) * 16
    }

    /// A KH×KW plane through a zero-padded copy of its input (for stride 2 split into even and odd
    /// columns), so every tap of a 16-column block is one unmasked load and multiply-add with the taps in
    /// registers; `plane` instead masks every load, which costs most on the small planes of late layers.
    /// Returns whether the activation was applied, as `plane`.
    ///
    /// # Safety
    /// As `plane`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn plane_padded<const KH: usize, const KW: usize, const RING: bool>(
        x: &[f32],
        out: &mut [f32],
        w: &[f32],
        bias: f32,
        act: Option<Act>,
        g: DwGeom,
    ) -> bool {
        let (lo, hi, clamped) = clamp_of(act);
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let (s0, s1, pt, pl) = (g.stride[0], g.stride[1], g.pad[0], g.pad[1]);
        let hp = (g.oh - 1) * s0 + KH;
        let wq = padded_width(&g, KW);
        let mut buf = PADDED.take();
        // Every padded row, built before the arithmetic; with RING (`ring_pays`), a ring of KH rows, each
        // built when the first output row reading it comes, so the copy stays in L1 however large the
        // plane (a separate instance: the ring's bookkeeping in the same code slowed the stride-1 planes
        // by a third). Horizontal stride 2 keeps the even and the odd columns of every row, one phase
        // after the other.
        let rows = if RING { KH } else { hp };
        let slot = |ry: usize| if RING { ry % KH } else { ry };
        let phase_len = if s1 == 1 { 0 } else { rows * wq };
        buf.resize(if s1 == 1 { rows * wq } else { 2 * phase_len }, 0.0);
        // 16 columns of padded row ry from padded column j: the input row's columns j − pl.. where they
        // exist, zeros elsewhere; masked loads, so nothing outside the row is read (no per-row memset or
        // memcpy calls, which cost more than the arithmetic on the short rows of late layers).
        let (wd, xp) = (g.w as isize, x.as_ptr());
        let padded = |ry: usize, j: usize| -> __m512 {
            let iy = ry as isize - pt as isize;
            if iy < 0 || iy >= g.h as isize {
                return _mm512_setzero_ps();
            }
            let ix0 = j as isize - pl as isize;
            // SAFETY: masked-off lanes are not read (their addresses may lie outside the plane, hence
            // wrapping_offset); the others are columns of input row iy.
            unsafe { _mm512_maskz_loadu_ps(lanes(ix0, 1, 16, wd) as __mmask16, xp.wrapping_offset(iy * wd + ix0)) }
        };
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let build = |buf: &mut [f32], ry: usize| {
            let row = slot(ry) * wq;
            for j in (0..wq).step_by(16) {
                // SAFETY: j + 16 ≤ wq: inside the row's slot (of each phase).
                unsafe {
                    if s1 == 1 {
                        _mm512_storeu_ps(buf.as_mut_ptr().add(row + j), padded(ry, j));
                    } else {
                        let (a, b) = (padded(ry, 2 * j), padded(ry, 2 * j + 16));
                        _mm512_storeu_ps(buf.as_mut_ptr().add(row + j), _mm512_permutex2var_ps(a, evens, b));
                        _mm512_storeu_ps(buf.as_mut_ptr().add(phase_len + row + j), _mm512_permutex2var_ps(a, odds, b));
                    }
                }
            }
        };
        let mut built = if RING { 0 } else { hp };
        if !RING {
            for ry in 0..hp {
                build(&mut buf, ry);
            }
        }
        let mut taps = [_mm512_setzero_ps(); 25];
        for (t, v) in taps.iter_mut().zip(&w[..KH * KW]) {
            *t = _mm512_set1_ps(*v);
        }
        let bias = _mm512_set1_ps(bias);
        for oy in 0..g.oh {
            if RING {
                while built < (oy * s0 + KH).min(hp) {
                    build(&mut buf, built);
                    built += 1;
                }
            }
            for ox0 in (0..g.ow).step_by(16) {
                let mut acc = bias;
                for ky in 0..KH {
                    let row = slot(oy * s0 + ky) * wq;
                    for kx in 0..KW {
                        // Stride 1: padded column ox + kx; stride 2: column 2·ox + kx, phase kx % 2 at ox + kx / 2.
                        let at = if s1 == 1 { row + ox0 + kx } else { (kx % 2) * phase_len + row + ox0 + kx / 2 };
                        // SAFETY: ox0 + 15 + kx (or + kx / 2) < wq: every load is inside row `row` of buf.
                        acc = _mm512_fmadd_ps(taps[ky * KW + kx], unsafe { _mm512_loadu_ps(buf.as_ptr().add(at)) }, acc);
                    }
                }
                // The bound first, as in `plane`: a NaN comes through.
                let acc = _mm512_min_ps(hi, _mm512_max_ps(lo, acc));
                let n = (g.ow - ox0).min(16);
                // SAFETY: n columns from ox0 are inside output row oy.
                unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(oy * g.ow + ox0), ((1u32 << n) - 1) as __mmask16, acc) };
            }
        }
        PADDED.set(buf);
        clamped
    }

    /// Returns whether the activation was applied (ReLU and clips are, in registers; others are the
    /// caller's).
    ///
    /// # Safety
    /// AVX-512F present; x is one h·w plane, out one oh·ow plane, w kh·kw taps; `fits(g)`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn plane(x: &[f32], out: &mut [f32], w: &[f32], bias: f32, act: Option<Act>, g: DwGeom) -> bool {
        let (lo, hi, clamped) = clamp_of(act);
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let (s, pad) = (g.stride[1] as isize, g.pad[1] as isize);
        let (wd, xp) = (g.w as isize, x.as_ptr());
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        // Per column block and kx: the first input column and which of the (16, or 32 for stride 2)
        // columns from there lie inside the row — the same for every row.
        let blocks = g.ow.div_ceil(16);
        let span = if s == 1 { 16 } else { 32 };
        let cols: Vec<(isize, u32)> = (0..blocks * g.kw)
            .map(|i| {
                let ix0 = (i / g.kw * 16) as isize * s + (i % g.kw) as isize - pad;
                (ix0, lanes(ix0, 1, span, wd))
            })
            .collect();
        let mut taps = [_mm512_setzero_ps(); 49];
        for (t, v) in taps.iter_mut().zip(w) {
            *t = _mm512_set1_ps(*v);
        }
        for oy in 0..g.oh {
            let orow = &mut out[oy * g.ow..(oy + 1) * g.ow];
            // The window rows inside the image: (ky, offset of input row iy).
            let mut rows = [(0usize, 0isize); 7];
            let mut nrows = 0;
            for ky in 0..g.kh {
                let iy = (oy * g.stride[0] + ky) as isize - g.pad[0] as isize;
                if iy >= 0 && iy < g.h as isize {
                    rows[nrows] = (ky, iy * wd);
                    nrows += 1;
                }
            }
            for blk in 0..blocks {
                let ox0 = blk * 16;
                let n = (g.ow - ox0).min(16);
                let mut acc = _mm512_set1_ps(bias);
                for &(ky, row) in &rows[..nrows] {
                    for (kx, &(ix0, m)) in cols[blk * g.kw..(blk + 1) * g.kw].iter().enumerate() {
                        // SAFETY: masked-off lanes are not read (their addresses may lie outside the plane,
                        // hence wrapping_offset); every read lane is a column of row iy.
                        let v = unsafe {
                            if s == 1 {
                                _mm512_maskz_loadu_ps(m as __mmask16, xp.wrapping_offset(row + ix0))
                            } else {
                                let a = _mm512_maskz_loadu_ps(m as __mmask16, xp.wrapping_offset(row + ix0));
                                let b = _mm512_maskz_loadu_ps((m >> 16) as __mmask16, xp.wrapping_offset(row + ix0 + 16));
                                _mm512_permutex2var_ps(a, evens, b)
                            }
                        };
                        acc = _mm512_fmadd_ps(taps[ky * g.kw + kx], v, acc);
                    }
                }
                // The bound first: vmaxps/vminps return their second operand when either is NaN, so a NaN
                // comes through (unclamped, as without an activation) instead of becoming a bound.
                let acc = _mm512_min_ps(hi, _mm512_max_ps(lo, acc));
                // SAFETY: n columns from ox0 are inside the output row.
                unsafe { _mm512_mask_storeu_ps(orow.as_mut_ptr().add(ox0), ((1u32 << n) - 1) as __mmask16, acc) };
            }
        }
        clamped
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
        unsafe { *out.add(t) = super::float::pool_sum(hw, |i| p[i]) / hw as f32 };
    }
}

/// Per kx, the output columns lo..hi whose input column ox·s + off lies inside the row, and where the
/// first of them starts in the row (stride 1) or in its phase array (`split_phases`): the same for every
/// row.
pub(crate) fn row_spans(g: &DwGeom) -> Vec<(usize, usize, usize)> {
    let s = g.stride[1];
    let plen = g.w.div_ceil(s);
    (0..g.kw)
        .map(|kx| {
            let off = (kx * g.dil[1]) as isize - g.pad[1] as isize;
            let si = s as isize;
            let lo = (if off >= 0 { 0 } else { ((-off + si - 1) / si) as usize }).min(g.ow);
            // Euclidean: a window starting past the row (w − 1 − off < 0) covers no column.
            let hi = ((g.w as isize - 1 - off).div_euclid(si) + 1).clamp(0, g.ow as isize) as usize;
            let first = (lo as isize * si + off).max(0) as usize;
            let start = if s == 1 { first } else { (first % s) * plen + first / s };
            (lo, hi, start)
        })
        .collect()
}

/// Splits a row into its s phases (every s-th element from 0, 1, ..., s − 1), each w.div_ceil(s) long.
#[inline(always)]
pub(crate) fn split_phases(src: &[f32], s: usize, phases: &mut [f32]) {
    let plen = src.len().div_ceil(s);
    if s == 2 {
        // Pairs, so the loop vectorizes (a step_by loop per phase does not): the strided layers' planes
        // spent most of their time here.
        let (even, odd) = phases.split_at_mut(plen);
        for ((pair, e), o) in src.chunks_exact(2).zip(even.iter_mut()).zip(odd.iter_mut()) {
            *e = pair[0];
            *o = pair[1];
        }
        if src.len() % 2 == 1 {
            even[plen - 1] = src[src.len() - 1];
        }
        return;
    }
    for q in 0..s {
        // skip, not src[q..]: a row may be shorter than the stride.
        for (d, v) in phases[q * plen..(q + 1) * plen].iter_mut().zip(src.iter().skip(q).step_by(s)) {
            *d = *v;
        }
    }
}
