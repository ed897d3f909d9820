//! Depthwise convolution on AVX-512 VNNI. vpdpbusd sums four byte products per i32 lane, so each lane
//! must hold four taps of one channel: for every input column the kernel interleaves the bytes of up
//! to four kernel rows (64 channels at a time, two rounds of unpacks) into a column buffer, once, and
//! every output pixel whose window covers that column reads it back. A 3×3 kernel then costs three
//! vpdpbusd per 16 channels and pixel (the fourth row is zero weight), where widening bytes for
//! vpmaddwd costs a shuffle per two taps. Padding taps read the zero point, so every pixel starts from
//! the bias of a full window (`bias_full`) and multiplies raw bytes.
use super::dwconv::{DwConv, DwGeom};

/// Channels per block: one 64-byte load per input row.
pub const CB: usize = 64;
/// i32 per block before its weights: bias, multiplier bits and saturation signs, 64 of each.
const PARAMS: usize = 3 * CB;
/// Output pixels per column-buffer fill (bounds the buffer to L1-sized chunks of a row).
const CHUNK: usize = 32;
/// Kernel heights the row table covers.
const MAX_KH: usize = 16;

/// The channel (within its block) that lane `j` of accumulator `k` holds: unpacking four rows of 64
/// bytes by bytes and then by words leaves 128-bit lane L of result k with channels 16L + 4k + 0..3.
fn lane_channel(k: usize, j: usize) -> usize {
    16 * (j / 4) + 4 * k + j % 4
}

/// Output pixels that share one 64-byte vector: a channel count that divides 64, at stride 1, puts
/// adjacent pixels side by side (they are contiguous in NHWC), so no lane is padding.
pub fn fold(g: &DwGeom) -> usize {
    if g.c < CB && CB.is_multiple_of(g.c) && g.stride[1] == 1 {
        CB / g.c
    } else {
        1
    }
}

/// The kernel's table for weights `wts` ([tap][c], w − zw as i16 in the low half of each i32, as
/// DwConv::wts), per block of 64 channels (or of `fold` pixels): bias_full, mult (f32 bits) and sat (0
/// when None) in lane order, then [kx][row group of 4][k][16 lanes] i32 each holding four i8 weights
/// (rows 4g..4g+3; rows past kh and channels past c are 0). None when a weight does not fit i8
/// (vpdpbusd multiplies u8 by i8) or the kernel is taller than the kernel handles.
pub fn table(wts: &[i32], g: &DwGeom, bias_full: &[i32], mult: &[f32], sat: Option<&[i32]>) -> Option<Vec<i32>> {
    let (kh, kw, c) = (g.kh, g.kw, g.c);
    let w = |ky: usize, kx: usize, ch: usize| wts[(ky * kw + kx) * c + ch] as i16;
    if kh > MAX_KH || (0..kh * kw * c).any(|i| i8::try_from(wts[i] as i16).is_err()) {
        return None;
    }
    let folded = fold(g) > 1;
    // The channel of a lane: lanes of folded pixels repeat the channels.
    let real = |v: usize| if folded { Some(v % c) } else { (v < c).then_some(v) };
    let groups = kh.div_ceil(4);
    let mut t = Vec::with_capacity(c.div_ceil(CB) * (PARAMS + kw * groups * CB));
    for b in 0..c.div_ceil(CB) {
        let lanes = || (0..4).flat_map(|k| (0..16).map(move |j| real(CB * b + lane_channel(k, j))));
        t.extend(lanes().map(|ch| ch.map_or(0, |ch| bias_full[ch])));
        t.extend(lanes().map(|ch| ch.map_or(0, |ch| mult[ch].to_bits() as i32)));
        t.extend(lanes().map(|ch| ch.and_then(|ch| sat.map(|s| s[ch])).unwrap_or(0)));
        for kx in 0..kw {
            for gr in 0..groups {
                t.extend(lanes().map(|ch| {
                    let byte = |q: usize| match ch {
                        Some(ch) if 4 * gr + q < kh => w(4 * gr + q, kx, ch) as i8 as u8,
                        _ => 0,
                    };
                    i32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)])
                }));
            }
        }
    }
    Some(t)
}

#[cfg(target_arch = "x86_64")]
pub use avx512::row;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{fold, DwConv, CB, CHUNK, MAX_KH, PARAMS};
    use std::arch::x86_64::*;
    use std::cell::Cell;

    const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    /// Weight registers of the specialised kernel sizes (5×5: 5 columns × 2 row groups × 4).
    const MAX_W: usize = 40;

    /// One cache line of the column buffer.
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Line([u8; 64]);

    thread_local! {
        /// Each thread's column buffer, kept between calls (taken out while a row runs).
        static COLUMNS: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    }

    /// `len` set bits from bit `at` (len ≤ 64 − at).
    fn span(len: usize, at: usize) -> u64 {
        if len >= 64 {
            !0
        } else {
            ((1u64 << len) - 1) << at
        }
    }

    /// Output row `oy` of image `x` into `out` (ow · c bytes), with `d.vnni` as `table` built it.
    ///
    /// # Safety
    /// The CPU has AVX-512 VNNI; x holds h·w·c bytes and out ow·c; d.vnni is d's table.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn row(x: &[u8], out: &mut [u8], d: &DwConv, oy: usize) {
        // SAFETY: the caller's contract. The common kernel sizes get their weights in registers.
        unsafe {
            match (d.g.kw, d.g.kh.div_ceil(4), d.xor) {
                (3, 1, false) => row_k::<3, 1, false>(x, out, d, oy),
                (3, 1, true) => row_k::<3, 1, true>(x, out, d, oy),
                (5, 2, false) => row_k::<5, 2, false>(x, out, d, oy),
                (5, 2, true) => row_k::<5, 2, true>(x, out, d, oy),
                (_, _, false) => row_k::<0, 0, false>(x, out, d, oy),
                (_, _, true) => row_k::<0, 0, true>(x, out, d, oy),
            }
        }
    }

    /// `row` for KW columns of G row groups (KW = 0: the geometry's, weights read from memory).
    #[inline(always)]
    unsafe fn row_k<const KW: usize, const G: usize, const FLIP: bool>(x: &[u8], out: &mut [u8], d: &DwConv, oy: usize) {
        let g = d.g;
        let (kw, groups) = if KW > 0 { (KW, G) } else { (g.kw, g.kh.div_ceil(4)) };
        let f = fold(&g);
        let (sx, dx) = (g.stride[1], g.dil[1]);
        let block_len = PARAMS + kw * groups * CB;
        // Input row read by each kernel row, None in the padding.
        let mut rows = [None; MAX_KH];
        for (ky, r) in rows.iter_mut().enumerate().take(g.kh) {
            let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
            *r = (iy >= 0 && iy < g.h as isize).then_some(iy as usize);
        }
        // Output pixels per column-buffer fill, whole groups of f.
        let chunk = f * (CHUNK / f).max(1);
        let max_cols = (chunk - 1) * sx + (kw - 1) * dx + 1;
        let mut cols = COLUMNS.take();
        cols.resize(max_cols * groups * 4, Line([0; 64]));
        let (lo, hi) = d.epi.bounds();
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let zy = _mm512_set1_epi16(d.epi.zy as i16);
        let signed = d.epi.qlo < 0;
        // The zero point after the sign flip: what a padding tap contributes.
        let fill = _mm512_set1_epi8(d.zx as u8 as i8);
        let flip = _mm512_set1_epi8(0x80u8 as i8);
        for (b, c0) in (0..g.c).step_by(CB).enumerate() {
            // Bytes of one pixel in this block.
            let n = CB.min(g.c - c0);
            // SAFETY: the table holds c.div_ceil(64) blocks of block_len i32 (table()); loads of x are
            // masked to the bytes of in-image pixels of this block; the column buffer has max_cols ·
            // groups · 4 lines and every column index is below max_cols; stores to out are masked to
            // the bytes of output pixels of the row.
            unsafe {
                let t = d.vnni.as_ptr().add(b * block_len);
                let ld = |i: usize| _mm512_loadu_si512(t.add(16 * i) as *const _);
                let bias = [ld(0), ld(1), ld(2), ld(3)];
                let mult = [ld(4), ld(5), ld(6), ld(7)].map(|v| _mm512_castsi512_ps(v));
                let sat = d.sat.is_some().then(|| [ld(8), ld(9), ld(10), ld(11)]);
                let w = t.add(PARAMS) as *const __m512i;
                let mut wr = [_mm512_setzero_si512(); MAX_W];
                if KW > 0 {
                    for (i, r) in wr.iter_mut().enumerate().take(KW * G * 4) {
                        *r = _mm512_loadu_si512(w.add(i));
                    }
                }
                let mut ox0 = 0;
                while ox0 < g.ow {
                    let np = chunk.min(g.ow - ox0);
                    let ngroups = np.div_ceil(f);
                    let ncols = (ngroups - 1) * f * sx + (kw - 1) * dx + 1;
                    let buf = cols.as_mut_ptr() as *mut __m512i;
                    for col in 0..ncols {
                        // The column's f pixels from ix, those inside the image loaded.
                        let ix = (ox0 * sx + col) as isize - g.pad[1] as isize;
                        let (first, end) = (ix.max(0), (ix + f as isize).min(g.w as isize));
                        let m = if end > first { span((end - first) as usize * n, (first - ix) as usize * n) } else { 0 };
                        for gr in 0..groups {
                            let r = std::array::from_fn::<_, 4, _>(|q| match rows.get(4 * gr + q).copied() {
                                _ if 4 * gr + q >= g.kh => _mm512_setzero_si512(),
                                Some(Some(iy)) => {
                                    // Masked-off bytes are not read, so the start may lie before the row.
                                    let p =
                                        x.as_ptr().wrapping_offset((iy * g.w) as isize * g.c as isize + ix * g.c as isize + c0 as isize);
                                    if FLIP {
                                        _mm512_mask_blend_epi8(m, fill, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, p as *const _), flip))
                                    } else {
                                        _mm512_mask_loadu_epi8(fill, m, p as *const _)
                                    }
                                }
                                _ => fill,
                            });
                            let lo01 = _mm512_unpacklo_epi8(r[0], r[1]);
                            let hi01 = _mm512_unpackhi_epi8(r[0], r[1]);
                            let lo23 = _mm512_unpacklo_epi8(r[2], r[3]);
                            let hi23 = _mm512_unpackhi_epi8(r[2], r[3]);
                            let v = buf.add((col * groups + gr) * 4);
                            _mm512_store_si512(v, _mm512_unpacklo_epi16(lo01, lo23));
                            _mm512_store_si512(v.add(1), _mm512_unpackhi_epi16(lo01, lo23));
                            _mm512_store_si512(v.add(2), _mm512_unpacklo_epi16(hi01, hi23));
                            _mm512_store_si512(v.add(3), _mm512_unpackhi_epi16(hi01, hi23));
                        }
                    }
                    for j in 0..ngroups {
                        let mut acc = bias;
                        for kx in 0..kw {
                            let v = buf.add((j * f * sx + kx * dx) * groups * 4);
                            for gr in 0..groups {
                                let v = v.add(4 * gr);
                                let i = (kx * groups + gr) * 4;
                                let wt = |k: usize| if KW > 0 { wr[i + k] } else { _mm512_loadu_si512(w.add(i + k)) };
                                // Constant indices keep the four accumulators in registers.
                                acc[0] = _mm512_dpbusd_epi32(acc[0], _mm512_load_si512(v), wt(0));
                                acc[1] = _mm512_dpbusd_epi32(acc[1], _mm512_load_si512(v.add(1)), wt(1));
                                acc[2] = _mm512_dpbusd_epi32(acc[2], _mm512_load_si512(v.add(2)), wt(2));
                                acc[3] = _mm512_dpbusd_epi32(acc[3], _mm512_load_si512(v.add(3)), wt(3));
                            }
                        }
                        if let Some(s) = sat {
                            for (a, s) in acc.iter_mut().zip(s) {
                                *a = crate::kernels::gemm::saturate16(*a, s);
                            }
                        }
                        let q = std::array::from_fn::<_, 4, _>(|k| {
                            let f = _mm512_mul_round_ps::<RNE>(_mm512_cvt_roundepi32_ps::<RNE>(acc[k]), mult[k]);
                            _mm512_cvt_roundps_epi32::<RNE>(_mm512_min_ps(_mm512_max_ps(f, lo), hi))
                        });
                        // Each pack works within 128-bit lanes, which puts channels 16L..16L+15 back in order.
                        let q01 = _mm512_adds_epi16(_mm512_packs_epi32(q[0], q[1]), zy);
                        let q23 = _mm512_adds_epi16(_mm512_packs_epi32(q[2], q[3]), zy);
                        let bytes = if signed { _mm512_packs_epi16(q01, q23) } else { _mm512_packus_epi16(q01, q23) };
                        let ox = ox0 + j * f;
                        let m = span(f.min(g.ow - ox) * n, 0);
                        _mm512_mask_storeu_epi8(out.as_mut_ptr().add(ox * g.c + c0) as *mut _, m, bytes);
                    }
                    ox0 += np;
                }
            }
        }
        COLUMNS.set(cols);
    }
}
