//! The f32 depthwise kernel's AVX2 variant (x86-64-v3) for 3×3 and 5×5 windows at strides 1 and 2: as
//! the AVX-512 padded-plane kernel (fconv.rs), every tap one unmasked load and multiply-add from a
//! zero-padded copy of the plane (stride 2: its even and odd columns apart), 8 output columns per
//! register.
use super::dwconv::DwGeom;
use qcc_ir::Act;
use std::arch::x86_64::*;

/// Whether `plane` takes this geometry.
pub(crate) fn fits(g: &DwGeom) -> bool {
    matches!((g.kh, g.kw), (3, 3) | (5, 5)) && g.dil == [1, 1] && matches!(g.stride[1], 1 | 2)
}

thread_local! {
    /// Each thread's padded copy of a plane, kept between calls (taken out while a plane runs).
    static PADDED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// One plane (`fits(g)`); returns whether the activation was applied (ReLU and clips are, in registers;
/// others are the caller's).
///
/// # Safety
/// The CPU has AVX2 and FMA; x is one h·w plane, out one oh·ow plane, w kh·kw taps.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn plane(x: &[f32], out: &mut [f32], w: &[f32], bias: f32, act: Option<Act>, g: DwGeom) -> bool {
    // SAFETY: forwarded.
    unsafe {
        if g.kh == 3 {
            plane_k::<3>(x, out, w, bias, act, g)
        } else {
            plane_k::<5>(x, out, w, bias, act, g)
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn plane_k<const K: usize>(x: &[f32], out: &mut [f32], w: &[f32], bias: f32, act: Option<Act>, g: DwGeom) -> bool {
    let clamp = super::clamp_bounds(act);
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
    let (s0, s1, pt, pl) = (g.stride[0], g.stride[1], g.pad[0], g.pad[1]);
    let ow8 = g.ow.div_ceil(8) * 8;
    let hp = (g.oh - 1) * s0 + K;
    // Padded row length (stride 1) or of each column phase (stride 2), rounded to whole vectors.
    let wq = if s1 == 1 { ow8 + K - 1 } else { ow8 + (K - 1) / 2 }.div_ceil(8) * 8;
    let phase_len = hp * wq;
    let mut buf = PADDED.take();
    // Stride 2: both phases, then one padded row to split.
    buf.resize(if s1 == 1 { phase_len } else { 2 * phase_len + 2 * wq }, 0.0);
    for ry in 0..hp {
        let iy = ry as isize - pt as isize;
        let src = (iy >= 0 && iy < g.h as isize).then(|| &x[iy as usize * g.w..(iy as usize + 1) * g.w]);
        // Padded row ry: zeros, the input row from column pl, zeros (columns past the row's end are never
        // read by a tap).
        let fill = |dst: &mut [f32]| {
            dst.fill(0.0);
            if let Some(src) = src {
                let n = g.w.min(dst.len().saturating_sub(pl));
                dst[pl..pl + n].copy_from_slice(&src[..n]);
            }
        };
        if s1 == 1 {
            fill(&mut buf[ry * wq..(ry + 1) * wq]);
        } else {
            let (phases, tmp) = buf.split_at_mut(2 * phase_len);
            fill(tmp);
            for j in 0..wq {
                phases[ry * wq + j] = tmp[2 * j];
                phases[phase_len + ry * wq + j] = tmp[2 * j + 1];
            }
        }
    }
    let mut taps = [_mm256_setzero_ps(); 25];
    for (t, v) in taps.iter_mut().zip(&w[..K * K]) {
        *t = _mm256_set1_ps(*v);
    }
    let bias = _mm256_set1_ps(bias);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for oy in 0..g.oh {
        for ox0 in (0..g.ow).step_by(8) {
            let mut acc = bias;
            for ky in 0..K {
                let row = (oy * s0 + ky) * wq;
                for kx in 0..K {
                    // Stride 1: padded column ox + kx; stride 2: column 2·ox + kx, phase kx % 2 at ox + kx / 2.
                    let at = if s1 == 1 { row + ox0 + kx } else { (kx % 2) * phase_len + row + ox0 + kx / 2 };
                    // SAFETY: ox0 + 7 + kx (or + kx / 2) < wq: every load is inside row `row` of buf.
                    acc = _mm256_fmadd_ps(taps[ky * K + kx], unsafe { _mm256_loadu_ps(buf.as_ptr().add(at)) }, acc);
                }
            }
            // The bound first: a NaN comes through.
            let acc = _mm256_min_ps(hi, _mm256_max_ps(lo, acc));
            let n = (g.ow - ox0).min(8);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane);
            // SAFETY: n columns from ox0 are inside output row oy; masked lanes are not written.
            unsafe { _mm256_maskstore_ps(out.as_mut_ptr().add(oy * g.ow + ox0), mask, acc) };
        }
    }
    PADDED.set(buf);
    clamp.is_some()
}
