//! The int8 depthwise kernel's AVX2 variant (x86-64-v3): 8 channels per register, each tap one exact
//! vpmaddwd ((x − zx) in the low 16 bits of an i32 lane against the weight's i16 with 0 above, as the
//! AVX-512 fallback), four interior pixels sharing every weight load, the GEMM's AVX2 requantization;
//! channels past the last multiple of 8 take the scalar loop.
use super::dwconv::{fix_saturation, pixel_groups, DwConv};
use super::gemm_avx2::{requant8, saturate8};
use std::arch::x86_64::*;

/// One output row.
///
/// # Safety
/// The CPU has AVX2; DwConv::run's contract; no float activation (the compiler's epilogue is a clamp).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn row(x: &[u8], out: &mut [u8], d: &DwConv, oy: usize) {
    pixel_groups(&d.g, oy, |ox, four, taps| {
        // SAFETY: the taps lie inside the image for these pixels (all of them when `four`).
        unsafe {
            match (four, d.xor) {
                (true, false) => pixels::<4, true, false>(x, out, d, taps, ox),
                (true, true) => pixels::<4, true, true>(x, out, d, taps, ox),
                (false, false) => pixels::<1, false, false>(x, out, d, taps, ox),
                (false, true) => pixels::<1, false, true>(x, out, d, taps, ox),
            }
        }
    });
}

/// Pixels ox..ox + P over every channel. FULL: every tap is inside the image, so the bias with the
/// zero-point term folded in applies and raw bytes are multiplied.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn pixels<const P: usize, const FULL: bool, const FLIP: bool>(
    x: &[u8],
    out: &mut [u8],
    d: &DwConv,
    taps: &[(usize, usize)],
    ox: usize,
) {
    let g = d.g;
    let step = g.stride[1] * g.c;
    let (zx, flip) = (_mm256_set1_epi32(d.zx), _mm_set1_epi8(0x80u8 as i8));
    let bias = if FULL { d.bias_full } else { d.bias };
    let mut cb = 0;
    // SAFETY: every access covers 8 channels below c of a tap inside the image (the taps' offsets), or
    // of the weight, bias, multiplier and output rows the compiler sized for g.
    unsafe {
        while cb + 8 <= g.c {
            let mut acc = [_mm256_loadu_si256(bias.as_ptr().add(cb) as *const __m256i); P];
            for &(wo, xo) in taps {
                let wv = _mm256_loadu_si256(d.wts.as_ptr().add(wo + cb) as *const __m256i);
                for (p, a) in acc.iter_mut().enumerate() {
                    let mut xb = _mm_loadl_epi64(x.as_ptr().add(xo + p * step + cb) as *const __m128i);
                    if FLIP {
                        xb = _mm_xor_si128(xb, flip);
                    }
                    let mut xv = _mm256_cvtepu8_epi32(xb);
                    if !FULL {
                        xv = _mm256_sub_epi32(xv, zx);
                    }
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(xv, wv));
                }
            }
            for (p, a) in acc.iter().enumerate() {
                let a = match d.sat {
                    Some(sat) => saturate8(*a, _mm256_loadu_si256(sat.as_ptr().add(cb) as *const __m256i)),
                    None => *a,
                };
                let q = requant8(a, d.epi.mult.as_ptr().add(cb), d.epi.zy, d.epi.qlo, d.epi.qhi);
                _mm_storel_epi64(out.as_mut_ptr().add((ox + p) * g.c + cb) as *mut __m128i, q);
            }
            cb += 8;
        }
    }
    if cb < g.c {
        let xf = if FLIP { 0x80u8 } else { 0 };
        let mut tail = [0i32; 8];
        let tail = &mut tail[..g.c - cb];
        for p in 0..P {
            tail.copy_from_slice(&bias[cb..g.c]);
            for &(wo, xo) in taps {
                for (j, a) in tail.iter_mut().enumerate() {
                    let xv = (x[xo + p * step + cb + j] ^ xf) as i32 - if FULL { 0 } else { d.zx };
                    *a = a.wrapping_add(xv.wrapping_mul(d.wts[wo + cb + j] as i16 as i32));
                }
            }
            fix_saturation(tail, d.sat, cb);
            d.epi.row(tail, cb, &mut out[(ox + p) * g.c + cb..(ox + p + 1) * g.c]);
        }
    }
}
