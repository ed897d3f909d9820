//! The int8 GEMM's AVX2 microkernel (x86-64-v3, CPUs without AVX-512 VNNI), exact like every variant.
//! It reads the VNNI packing (blocks of 16 columns, four consecutive k of a column in one 32-bit lane) and
//! replaces each vpdpbusd with two vpmaddwd on 16-bit halves: the even and the odd bytes of the
//! activations (zero-extended) against the even and odd weight bytes (sign-extended), so each pair sum is
//! at most 2·255·128 in magnitude and exact in i32. vpmaddubsw would take the bytes directly but saturates
//! its 16-bit pair sums (255·127·2 > 32767), which would break bit-exactness. Rows are read through the
//! segment pointers Gemm::row_ptrs gives (a plain GEMM's row, or a convolution's taps or kernel rows read
//! in place), as the VNNI kernel does.
use super::epilogue::saturate;
use super::gemm::{packed_dims, Gemm, NBLK};
use std::arch::x86_64::*;

/// Gemm::micro_tile on AVX2: rows r..r + mr (mr ≤ 4, segment pointers at `ptrs`) by columns c0..c0 +
/// cols, in micro-tiles of one block of 16 columns.
///
/// # Safety
/// The CPU has AVX2; the tile lies inside what Gemm::run's caller guarantees and `ptrs` holds its rows'
/// segment pointers.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn tile(g: &Gemm, ptrs: *const *const u8, r: usize, mr: usize, c0: usize, cols: usize) {
    let mut c = c0;
    while c < c0 + cols {
        let n = NBLK.min(c0 + cols - c);
        // SAFETY: rows r..r + mr and the block at c lie inside the tile.
        unsafe {
            match (mr, g.xor) {
                (4, false) => micro::<4, false>(g, ptrs, r, c, n),
                (4, true) => micro::<4, true>(g, ptrs, r, c, n),
                (3, false) => micro::<3, false>(g, ptrs, r, c, n),
                (3, true) => micro::<3, true>(g, ptrs, r, c, n),
                (2, false) => micro::<2, false>(g, ptrs, r, c, n),
                (2, true) => micro::<2, true>(g, ptrs, r, c, n),
                (_, false) => micro::<1, false>(g, ptrs, r, c, n),
                (_, true) => micro::<1, true>(g, ptrs, r, c, n),
            }
        }
        c += NBLK;
    }
}

/// MR rows by one block of 16 columns starting at c (a multiple of 16), n of them stored.
#[target_feature(enable = "avx2,fma")]
unsafe fn micro<const MR: usize, const FLIP: bool>(g: &Gemm, ptrs: *const *const u8, r0: usize, c: usize, n: usize) {
    let (kp, _) = packed_dims(g.k, g.n);
    let (lo_bytes, flip) = (_mm256_set1_epi32(0x00ff_00ff), _mm256_set1_epi8(0x80u8 as i8));
    // Two registers per row: columns c..c + 8 and c + 8..c + 16, each lane one column's sum.
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    // SAFETY: each row's segments hold their k-groups' readable bytes (the arena's slack covers kp > k);
    // block c / 16 of the packed weights holds kp / 4 groups of 64 bytes.
    unsafe {
        let bblk = g.b.as_ptr().add(c / NBLK * kp * NBLK);
        // Each segment is a run of k-groups read from one pointer per row (Gemm::segments).
        let (segments, seg_groups) = g.segments();
        for seg in 0..segments {
            let arows: [*const u8; MR] = std::array::from_fn(|i| *ptrs.add(i * segments + seg));
            for sg in 0..seg_groups {
                let kg = seg * seg_groups + sg;
                let bp = bblk.add(kg * 64) as *const __m256i;
                let b = [_mm256_loadu_si256(bp), _mm256_loadu_si256(bp.add(1))];
                // Sign-extended even and odd weight bytes as 16-bit lanes.
                let be = [_mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(b[0])), _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(b[1]))];
                let bo = [_mm256_srai_epi16::<8>(b[0]), _mm256_srai_epi16::<8>(b[1])];
                for (i, acc) in acc.iter_mut().enumerate() {
                    // One broadcast load; the odd bytes are the 16-bit lanes shifted right by 8.
                    let mut av = _mm256_set1_epi32((arows[i].add(sg * 4) as *const i32).read_unaligned());
                    if FLIP {
                        av = _mm256_xor_si256(av, flip);
                    }
                    // Zero-extended even and odd activation bytes, the same four k in every lane.
                    let (ae, ao) = (_mm256_and_si256(av, lo_bytes), _mm256_srli_epi16::<8>(av));
                    for h in 0..2 {
                        let s = _mm256_add_epi32(_mm256_madd_epi16(ae, be[h]), _mm256_madd_epi16(ao, bo[h]));
                        acc[h] = _mm256_add_epi32(acc[h], s);
                    }
                }
            }
        }
        let (mut tmp, mut bytes) = ([0i32; NBLK], [0u8; NBLK]);
        let plain = g.epi.float_act.is_none() && g.epi.residual.is_none() && g.sat.is_none();
        for (i, acc) in acc.iter().enumerate() {
            let r = r0 + i;
            let dst = g.out.add(r * g.ldo + c);
            let bias = [0, 8].map(|h| _mm256_loadu_si256(g.bias.as_ptr().add(c + h) as *const __m256i));
            let mut v = [_mm256_add_epi32(acc[0], bias[0]), _mm256_add_epi32(acc[1], bias[1])];
            if let Some(zw) = g.zw {
                let rs = _mm256_set1_epi32(g.row_sum(r));
                for (h, v) in v.iter_mut().enumerate() {
                    let z = _mm256_loadu_si256(zw.as_ptr().add(c + 8 * h) as *const __m256i);
                    *v = _mm256_sub_epi32(*v, _mm256_mullo_epi32(z, rs));
                }
            }
            if plain {
                let q = requant16(v, g.epi.mult.as_ptr().add(c), g.epi.zy, g.epi.qlo, g.epi.qhi);
                if n == NBLK {
                    _mm_storeu_si128(dst as *mut __m128i, q);
                } else {
                    _mm_storeu_si128(bytes.as_mut_ptr() as *mut __m128i, q);
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, n);
                }
                continue;
            }
            _mm256_storeu_si256(tmp.as_mut_ptr() as *mut __m256i, v[0]);
            _mm256_storeu_si256(tmp.as_mut_ptr().add(8) as *mut __m256i, v[1]);
            if let Some(sat) = g.sat {
                for (j, t) in tmp.iter_mut().enumerate() {
                    *t = saturate(*t, sat[c + j]);
                }
            }
            g.epi.row_at(&tmp[..n], r, c, &mut bytes[..n]);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, n);
        }
    }
}

/// Requantizes 8 accumulators (multipliers at `mult`) into the low 8 bytes, as the scalar epilogue does:
/// y = clamp(rne(f32(acc) · m) + zy, qlo, qhi), clamping before rounding (the bounds are integers, so it
/// is the same) and rounding with an explicit round-to-nearest-even, whatever MXCSR says.
///
/// # Safety
/// The CPU has AVX2; mult holds 8 floats.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn requant8(v: __m256i, mult: *const f32, zy: i32, qlo: i32, qhi: i32) -> __m128i {
    let (lo, hi) = (_mm256_set1_ps((qlo - zy) as f32), _mm256_set1_ps((qhi - zy) as f32));
    // SAFETY: the caller's bounds.
    let f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), unsafe { _mm256_loadu_ps(mult) });
    let f = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_min_ps(_mm256_max_ps(f, lo), hi));
    let q = _mm256_add_epi32(_mm256_cvttps_epi32(f), _mm256_set1_epi32(zy));
    // The packs work per 128-bit lane; every value is inside qlo..qhi, so they never saturate.
    let w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
    if qlo < 0 {
        _mm_packs_epi16(w, w)
    } else {
        _mm_packus_epi16(w, w)
    }
}

/// `requant8` of 16 accumulators into 16 bytes.
///
/// # Safety
/// The CPU has AVX2; mult holds 16 floats.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn requant16(v: [__m256i; 2], mult: *const f32, zy: i32, qlo: i32, qhi: i32) -> __m128i {
    // SAFETY: the caller's bounds.
    unsafe { _mm_unpacklo_epi64(requant8(v[0], mult, zy, qlo, qhi), requant8(v[1], mult.add(8), zy, qlo, qhi)) }
}

/// epilogue::saturate on 8 lanes.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn saturate8(v: __m256i, sat: __m256i) -> __m256i {
    let zero = _mm256_setzero_si256();
    let up = _mm256_and_si256(_mm256_cmpgt_epi32(sat, zero), _mm256_cmpgt_epi32(zero, v));
    let down = _mm256_and_si256(_mm256_cmpgt_epi32(zero, sat), _mm256_cmpgt_epi32(v, zero));
    let v = _mm256_blendv_epi8(v, _mm256_set1_epi32(i32::MAX), up);
    _mm256_blendv_epi8(v, _mm256_set1_epi32(i32::MIN), down)
}
