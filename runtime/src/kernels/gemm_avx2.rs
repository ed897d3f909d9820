//! The int8 GEMM's AVX2 microkernel (x86-64-v3, CPUs without AVX-512 VNNI), exact like every variant.
//! It reads the VNNI packing (blocks of 16 columns, four consecutive k of a column in one 32-bit lane) and
//! replaces each vpdpbusd with two vpmaddwd on 16-bit halves: the even and the odd bytes of the
//! activations (zero-extended) against the even and odd weight bytes (sign-extended), so each pair sum is
//! at most 2·255·128 in magnitude and exact in i32. vpmaddubsw would take the bytes directly but saturates
//! its 16-bit pair sums (255·127·2 > 32767), which would break bit-exactness.
use super::epilogue::saturate;
use super::gemm::{packed_dims, Gemm, NBLK};
use std::arch::x86_64::*;

/// Computes rows r0..r0+rows, columns c0..c0+cols (a plain GEMM: implicit convolutions are VNNI only) in
/// micro-tiles of 4 rows by one block of 16 columns.
///
/// # Safety
/// The CPU has AVX2; the tile lies inside what Gemm::run's caller guarantees.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn tile(g: &Gemm, r0: usize, rows: usize, c0: usize, cols: usize) {
    assert!(g.conv.is_none(), "implicit convolutions are compiled for AVX-512 VNNI only");
    let mut r = r0;
    while r < r0 + rows {
        let mr = 4.min(r0 + rows - r);
        let mut c = c0;
        while c < c0 + cols {
            let n = NBLK.min(c0 + cols - c);
            // SAFETY: rows r..r + mr and the block at c lie inside the tile.
            unsafe {
                match (mr, g.xor) {
                    (4, false) => micro::<4, false>(g, r, c, n),
                    (4, true) => micro::<4, true>(g, r, c, n),
                    (3, false) => micro::<3, false>(g, r, c, n),
                    (3, true) => micro::<3, true>(g, r, c, n),
                    (2, false) => micro::<2, false>(g, r, c, n),
                    (2, true) => micro::<2, true>(g, r, c, n),
                    (_, false) => micro::<1, false>(g, r, c, n),
                    (_, true) => micro::<1, true>(g, r, c, n),
                }
            }
            c += NBLK;
        }
        r += mr;
    }
}

/// MR rows by one block of 16 columns starting at c (a multiple of 16), n of them stored.
#[target_feature(enable = "avx2,fma")]
unsafe fn micro<const MR: usize, const FLIP: bool>(g: &Gemm, r0: usize, c: usize, n: usize) {
    let (kp, _) = packed_dims(g.k, g.n);
    let (lo_bytes, flip) = (_mm256_set1_epi32(0x00ff_00ff), if FLIP { 0x8080_8080u32 } else { 0 });
    // Two registers per row: columns c..c + 8 and c + 8..c + 16, each lane one column's sum.
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    // SAFETY: rows r0..r0 + MR of a hold kp readable bytes (the arena's slack covers kp > k); block c / 16
    // of the packed weights holds kp / 4 groups of 64 bytes.
    unsafe {
        let bblk = g.b.as_ptr().add(c / NBLK * kp * NBLK);
        let arows: [*const u8; MR] = std::array::from_fn(|i| g.a.add((r0 + i) * g.lda));
        for kg in 0..kp / 4 {
            let bp = bblk.add(kg * 64) as *const __m256i;
            let b = [_mm256_loadu_si256(bp), _mm256_loadu_si256(bp.add(1))];
            // Sign-extended even and odd weight bytes as 16-bit lanes.
            let be = [_mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(b[0])), _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(b[1]))];
            let bo = [_mm256_srai_epi16::<8>(b[0]), _mm256_srai_epi16::<8>(b[1])];
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = (arows[i].add(kg * 4) as *const u32).read_unaligned() ^ flip;
                // Zero-extended even and odd activation bytes, the same four k in every lane.
                let ae = _mm256_and_si256(_mm256_set1_epi32(av as i32), lo_bytes);
                let ao = _mm256_and_si256(_mm256_set1_epi32((av >> 8) as i32), lo_bytes);
                for h in 0..2 {
                    let s = _mm256_add_epi32(_mm256_madd_epi16(ae, be[h]), _mm256_madd_epi16(ao, bo[h]));
                    acc[h] = _mm256_add_epi32(acc[h], s);
                }
            }
        }
        let (mut tmp, mut bytes) = ([0i32; NBLK], [0u8; NBLK]);
        for (i, acc) in acc.iter().enumerate() {
            let r = r0 + i;
            _mm256_storeu_si256(tmp.as_mut_ptr() as *mut __m256i, acc[0]);
            _mm256_storeu_si256(tmp.as_mut_ptr().add(8) as *mut __m256i, acc[1]);
            let rs = if g.zw.is_some() { g.row_sum(r) } else { 0 };
            for (j, t) in tmp.iter_mut().enumerate() {
                let mut v = t.wrapping_add(g.bias[c + j]);
                if let Some(zw) = g.zw {
                    v = v.wrapping_sub(zw[c + j].wrapping_mul(rs));
                }
                *t = g.sat.map_or(v, |s| saturate(v, s[c + j]));
            }
            g.epi.row_at(&tmp[..n], r, c, &mut bytes[..n]);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), g.out.add(r * g.ldo + c), n);
        }
    }
}
