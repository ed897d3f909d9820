//! f32 depthwise convolution of narrow planes (at most 16 output columns: the 14×14 and 7×7 stages of
//! ImageNet models) with 16 channels per AVX-512 register instead of 16 columns, so no lane is wasted on
//! a 7-wide row. Each group of 16 NCHW planes is transposed (16×16 in registers) into a zero-padded
//! [row][column][16 channels] block that stays in L1; every output pixel is then KH·KW loads and
//! multiply-adds, and each output row is transposed back into the 16 planes. Same sums as the other f32
//! depthwise kernels, in the same tap order (row by row, left to right).
use super::dwconv::DwGeom;
use super::fconv::FDwConv;
use std::arch::x86_64::*;

/// Whether `group` handles the layer: 3×3 or 5×5 windows, strides 1–2, no dilation, ≤ 16 output columns.
pub fn fits(g: &DwGeom) -> bool {
    matches!((g.kh, g.kw), (3, 3) | (5, 5)) && g.stride.iter().all(|s| matches!(s, 1 | 2)) && g.dil == [1, 1] && g.ow <= 16
}

thread_local! {
    /// Each thread's padded block, kept between calls (taken out while a group runs).
    static BLOCK: std::cell::Cell<Vec<__m512>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Transposes the 16×16 matrix whose rows are `r` in place (row i becomes column i).
#[target_feature(enable = "avx512f")]
#[inline]
fn transpose16(r: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    // Rows 2i and 2i+1 interleaved: per 128-bit lane L, columns 4L, 4L+1 (even t) and 4L+2, 4L+3 (odd t).
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // r[4i + q], lane L: column 4L + q of rows 4i..4i+3.
    for i in 0..4 {
        let (a, b, c, d) =
            (_mm512_castps_pd(t[4 * i]), _mm512_castps_pd(t[4 * i + 1]), _mm512_castps_pd(t[4 * i + 2]), _mm512_castps_pd(t[4 * i + 3]));
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    // Lanes of the row groups 0, 1 (t[4q], t[4q+1]) and 2, 3 (t[4q+2], t[4q+3]) paired up...
    for q in 0..4 {
        t[4 * q] = _mm512_shuffle_f32x4::<0x88>(r[q], r[4 + q]);
        t[4 * q + 1] = _mm512_shuffle_f32x4::<0xdd>(r[q], r[4 + q]);
        t[4 * q + 2] = _mm512_shuffle_f32x4::<0x88>(r[8 + q], r[12 + q]);
        t[4 * q + 3] = _mm512_shuffle_f32x4::<0xdd>(r[8 + q], r[12 + q]);
    }
    // ...so that column 4L + q gathers lane L of all four groups.
    for q in 0..4 {
        r[q] = _mm512_shuffle_f32x4::<0x88>(t[4 * q], t[4 * q + 2]);
        r[4 + q] = _mm512_shuffle_f32x4::<0x88>(t[4 * q + 1], t[4 * q + 3]);
        r[8 + q] = _mm512_shuffle_f32x4::<0xdd>(t[4 * q], t[4 * q + 2]);
        r[12 + q] = _mm512_shuffle_f32x4::<0xdd>(t[4 * q + 1], t[4 * q + 3]);
    }
}

fn mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Channels c0..c0 + 16 of image `img` (those below g.c). Returns whether the activation was applied.
///
/// # Safety
/// AVX-512F present; `d`'s x and out hold its geometry; `fits(&d.g)`.
#[target_feature(enable = "avx512f")]
pub unsafe fn group<const KH: usize, const KW: usize>(d: &FDwConv, img: usize, c0: usize) -> bool {
    let g = d.g;
    let nc = (g.c - c0).min(16);
    let clamp = crate::kernels::clamp_bounds(d.act);
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let [s0, s1] = g.stride;
    let [pt, pl] = g.pad;
    let (hp, wp) = ((g.oh - 1) * s0 + KH, (g.ow - 1) * s1 + KW);
    let mut block = BLOCK.take();
    block.resize(hp * wp, _mm512_setzero_ps());
    // Padding: rows outside the input, and the columns left and right of it.
    for py in 0..hp {
        let inside = py >= pt && py - pt < g.h;
        for px in 0..wp {
            if !inside || px < pl || px - pl >= g.w {
                block[py * wp + px] = _mm512_setzero_ps();
            }
        }
    }
    let plane = g.h * g.w;
    let x = d.x.wrapping_add((img * g.c + c0) * plane);
    let mut r = [_mm512_setzero_ps(); 16];
    for y in 0..g.h.min(hp.saturating_sub(pt)) {
        for x0 in (0..g.w.min(wp.saturating_sub(pl))).step_by(16) {
            let n = (g.w - x0).min(16).min(wp - pl - x0);
            for (i, v) in r.iter_mut().enumerate() {
                // SAFETY: n columns from x0 of row y of plane c0 + i, which exists (i < nc).
                *v = if i < nc { unsafe { _mm512_maskz_loadu_ps(mask(n), x.add(i * plane + y * g.w + x0)) } } else { _mm512_setzero_ps() };
            }
            transpose16(&mut r);
            block[(y + pt) * wp + pl + x0..][..n].copy_from_slice(&r[..n]);
        }
    }
    let w = &d.w[c0 * KH * KW..];
    let mut taps = [[0f32; 16]; 49];
    for i in 0..nc {
        for (t, tap) in taps.iter_mut().enumerate().take(KH * KW) {
            tap[i] = w[i * KH * KW + t];
        }
    }
    let taps: [__m512; 49] = std::array::from_fn(|t| {
        // SAFETY: 16 floats.
        unsafe { _mm512_loadu_ps(taps[t].as_ptr()) }
    });
    let mut bias = [0f32; 16];
    if let Some(b) = d.bias {
        bias[..nc].copy_from_slice(&b[c0..c0 + nc]);
    }
    // SAFETY: 16 floats.
    let bias = unsafe { _mm512_loadu_ps(bias.as_ptr()) };
    let out = d.out.wrapping_add((img * g.c + c0) * g.oh * g.ow);
    for oy in 0..g.oh {
        for (ox, acc) in r.iter_mut().enumerate() {
            if ox >= g.ow {
                *acc = _mm512_setzero_ps();
                continue;
            }
            let mut a = bias;
            for ky in 0..KH {
                let row = &block[(oy * s0 + ky) * wp + ox * s1..];
                for kx in 0..KW {
                    a = _mm512_fmadd_ps(taps[ky * KW + kx], row[kx], a);
                }
            }
            // The bound first: vmaxps/vminps return their second operand when either is NaN.
            *acc = _mm512_min_ps(hi, _mm512_max_ps(lo, a));
        }
        transpose16(&mut r);
        for (i, v) in r.iter().enumerate().take(nc) {
            // SAFETY: ow columns of output row oy of plane c0 + i.
            unsafe { _mm512_mask_storeu_ps(out.add(i * g.oh * g.ow + oy * g.ow), mask(g.ow), *v) };
        }
    }
    BLOCK.set(block);
    clamp.is_some()
}
