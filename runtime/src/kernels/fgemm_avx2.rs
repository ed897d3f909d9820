//! The f32 GEMM's AVX2 microkernel (x86-64-v3): one packed block of 6 weight rows against 16 columns of
//! a panel at a time (12 accumulators, 2 panel loads and 6 broadcasts per k: 15 of the 16 ymm
//! registers), twice per 32-column panel. Same contract as the AVX-512 tile (fgemm.rs): partial sums of
//! earlier rows of K are read from and stored to the output, the epilogue runs after the last.
use super::fgemm::{FGemm, Panel, MR, NR};
use std::arch::x86_64::*;

/// Rows of block blk against columns p0..p0 + n (n ≤ NR) of one panel of rows k0...
///
/// # Safety
/// The CPU has AVX2 and FMA; the panel and the output as FGemm::tile promises.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn tile(g: &FGemm, blk: usize, panel: Panel, p0: usize, n: usize, k0: usize) {
    for h in 0..NR / 16 {
        let w = n.saturating_sub(16 * h).min(16);
        if w == 0 {
            break;
        }
        // SAFETY: columns 16h.. of the panel (and of the output) are the caller's.
        unsafe {
            let half = Panel { ptr: panel.ptr.add(16 * h), ..panel };
            if panel.ld == NR || w == 16 {
                half16::<false>(g, blk, half, p0 + 16 * h, w, k0)
            } else {
                half16::<true>(g, blk, half, p0 + 16 * h, w, k0)
            }
        }
    }
}

/// 6 rows by w ≤ 16 columns. MASKED: the panel is the source read in place, so only w columns of each
/// row may be loaded.
#[target_feature(enable = "avx2,fma")]
unsafe fn half16<const MASKED: bool>(g: &FGemm, blk: usize, panel: Panel, p: usize, w: usize, k0: usize) {
    let rows = MR.min(g.m - blk * MR);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let masks = [_mm256_cmpgt_epi32(_mm256_set1_epi32(w as i32), lane), _mm256_cmpgt_epi32(_mm256_set1_epi32(w as i32 - 8), lane)];
    let k1 = k0 + panel.rows;
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    // SAFETY: the block holds K·MR packed weights; the panel's rows hold the columns read (masked to w
    // in place).
    unsafe {
        let pa = g.a.as_ptr().add(blk * g.k * MR);
        let mut brow = panel.ptr;
        for kk in k0..k1 {
            let b = if MASKED {
                [_mm256_maskload_ps(brow, masks[0]), _mm256_maskload_ps(brow.add(8), masks[1])]
            } else {
                [_mm256_loadu_ps(brow), _mm256_loadu_ps(brow.add(8))]
            };
            brow = brow.add(panel.ld);
            for (r, a) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*pa.add(kk * MR + r));
                a[0] = _mm256_fmadd_ps(av, b[0], a[0]);
                a[1] = _mm256_fmadd_ps(av, b[1], a[1]);
            }
        }
        let clamp = super::clamp_bounds(g.act);
        let mut tmp = [0f32; 16];
        for (r, a) in acc.iter().enumerate().take(rows) {
            let m = blk * MR + r;
            let dst = g.out.add(m * g.rs + p * g.cs);
            if let Some((lo, hi)) = clamp.filter(|_| g.cs == 1 && w == 16) {
                // The common case in registers: partial sums, bias, residual, clamp.
                for (j, a) in a.iter().enumerate() {
                    let mut v = *a;
                    if k0 > 0 {
                        v = _mm256_add_ps(v, _mm256_loadu_ps(dst.add(8 * j)));
                    }
                    if k1 < g.k {
                        _mm256_storeu_ps(dst.add(8 * j), v);
                        continue;
                    }
                    v = _mm256_add_ps(v, _mm256_set1_ps(g.bias.map_or(0.0, |b| b[m])));
                    if let Some(res) = g.res {
                        v = _mm256_add_ps(v, _mm256_loadu_ps(res.add(m * g.rs + p + 8 * j)));
                    }
                    v = _mm256_min_ps(_mm256_set1_ps(hi), _mm256_max_ps(_mm256_set1_ps(lo), v));
                    _mm256_storeu_ps(dst.add(8 * j), v);
                }
                continue;
            }
            _mm256_storeu_ps(tmp.as_mut_ptr(), a[0]);
            _mm256_storeu_ps(tmp.as_mut_ptr().add(8), a[1]);
            for (j, t) in tmp.iter().enumerate().take(w) {
                let at = dst.add(j * g.cs);
                let mut v = *t;
                if k0 > 0 {
                    v += *at;
                }
                if k1 < g.k {
                    *at = v;
                    continue;
                }
                v += g.bias.map_or(0.0, |b| b[m]);
                if let Some(res) = g.res {
                    v += *res.add(m * g.rs + (p + j) * g.cs);
                }
                *at = g.act.map_or(v, |f| f.apply(v));
            }
        }
    }
}
