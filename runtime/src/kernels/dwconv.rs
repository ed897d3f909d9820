//! Depthwise convolution (one filter per channel) on NHWC bytes with the requantizing epilogue:
//! acc[c] = bias[c] + Σ_taps (x[c] − zx) · (w[tap][c] − zw[c]), taps outside the input contributing 0.
//! Vectorized across channels (the contiguous axis); rows of output are the parallel tasks.
use super::epilogue::{saturate, Epilogue};
use super::rows::{RowKernel, RowShape};
use super::{multiversion, Isa};

/// Geometry of one depthwise convolution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// Per output row and per output column: the input positions an average-pooling window reads and the
/// taps its count-padding divisor counts (nn::avg_pool_taps), for end pads `pe`.
pub type PoolTaps = (Vec<(Vec<usize>, usize)>, Vec<(Vec<usize>, usize)>);

impl DwGeom {
    pub fn avg_pool_taps(&self, pe: [usize; 2]) -> PoolTaps {
        let rows =
            (0..self.oh).map(|o| crate::nn::avg_pool_taps(o, self.kh, self.stride[0], self.dil[0], self.pad[0], self.h, pe[0])).collect();
        let cols =
            (0..self.ow).map(|o| crate::nn::avg_pool_taps(o, self.kw, self.stride[1], self.dil[1], self.pad[1], self.w, pe[1])).collect();
        (rows, cols)
    }
}

pub struct DwConv<'a> {
    pub isa: Isa,
    pub g: DwGeom,
    pub x: *const u8,
    /// Activation zero point as seen after the optional sign flip (i8 stored as u8 = i8 + 128).
    pub zx: i32,
    pub xor: bool,
    /// [kh * kw][c]: weights minus their zero point, as i16 in the low half of each i32 (high half 0).
    pub wts: &'a [i32],
    /// The AVX-512 interior path's weights: per block of 32 channels and pair of taps (2k, 2k + 1; the
    /// last alone with 0), 16 i32 for the low and 16 for the high unpack halves, each i32 holding the two
    /// taps' weights as i16 (see `pair_weights`). Empty for other ISAs and when `vnni` is set
    /// (the compiler builds one or the other).
    pub pairs: &'a [i32],
    /// The VNNI kernel's table (dwvnni::table), or empty when the weights do not fit i8 or the ISA is
    /// not AVX-512 VNNI.
    pub vnni: &'a [i32],
    pub bias: &'a [i32],
    /// bias[c] − zx · Σ_taps w[tap][c]: the bias of a pixel whose taps all lie inside the image, so its
    /// loop multiplies raw bytes.
    pub bias_full: &'a [i32],
    /// Per channel saturation signs (see epilogue::saturate), when any channel can saturate.
    pub sat: Option<&'a [i32]>,
    pub epi: Epilogue<'a>,
    pub out: *mut u8,
}

// SAFETY: tasks read x and write disjoint output rows.
unsafe impl Sync for DwConv<'_> {}

impl RowKernel for DwConv<'_> {
    fn shape(&self) -> RowShape {
        RowShape::of(&self.g, 1, 1)
    }
    fn input(&self) -> *const u8 {
        self.x
    }
    fn output(&self) -> *mut u8 {
        self.out
    }

    unsafe fn row(&self, x: *const u8, out: *mut u8, oy: usize) {
        let g = self.g;
        // SAFETY: the trait's contract.
        let x = unsafe { std::slice::from_raw_parts(x, g.h * g.w * g.c) };
        let out = unsafe { std::slice::from_raw_parts_mut(out, g.ow * g.c) };
        multiversion!(
            fn dw_row(x: &[u8], out: &mut [u8], d: &DwConv, oy: usize) {
                let g = d.g;
                // Four interior pixels share each weight load; `pixels` subtracts zx per tap, so the
                // single pixels at the borders need no other bias.
                pixel_groups(&g, oy, |ox, four, taps| {
                    if four {
                        pixels::<PIX>(x, &mut out[ox * g.c..(ox + PIX) * g.c], d, taps, g.stride[1] * g.c);
                    } else {
                        pixels::<1>(x, &mut out[ox * g.c..(ox + 1) * g.c], d, taps, 0);
                    }
                });
            }
        );
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx2 && self.epi.float_act.is_none() {
            // SAFETY: Isa::Avx2 is only chosen when the CPU has AVX2 and FMA.
            unsafe { super::dwconv_avx2::row(x, out, self, oy) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni && self.epi.float_act.is_none() {
            // SAFETY: Isa::Avx512Vnni is only chosen when the CPU has AVX-512 VNNI; the compiler built
            // `vnni` with dwvnni::table for this convolution.
            unsafe {
                if self.vnni.is_empty() {
                    avx512::row(x, out, self, oy)
                } else {
                    super::dwvnni::row(x, out, self, oy)
                }
            };
            return;
        }
        dw_row(self.isa, x, out, self, oy);
    }
}

/// Walks output row oy: calls f(ox, four, taps) for PIX = 4 interior pixels ox..ox + 4 whose every tap
/// lies inside the image (`four`), or else for the single pixel ox, with
/// (weight offset, input offset of pixel ox) of each of its taps inside the image; pixel p of a group
/// reads p·stride·c bytes further.
#[inline(always)]
pub(crate) fn pixel_groups(g: &DwGeom, oy: usize, mut f: impl FnMut(usize, bool, &[(usize, usize)])) {
    let valid = |i: isize, n: usize| i >= 0 && i < n as isize;
    let mut taps: Vec<(usize, usize)> = Vec::with_capacity(g.kh * g.kw);
    let rows: Vec<(usize, usize)> = (0..g.kh)
        .filter_map(|ky| {
            let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
            valid(iy, g.h).then_some((ky, iy as usize))
        })
        .collect();
    let first_ok = |ox: usize| (ox * g.stride[1]) as isize >= g.pad[1] as isize;
    let last_ok = |ox: usize| ((ox * g.stride[1] + (g.kw - 1) * g.dil[1]) as isize - (g.pad[1] as isize)) < g.w as isize;
    let lo_x = (0..g.ow).find(|&ox| first_ok(ox)).unwrap_or(g.ow);
    let hi_x = (lo_x..g.ow).find(|&ox| !last_ok(ox)).unwrap_or(g.ow);
    let mut ox = 0;
    while ox < g.ow {
        taps.clear();
        for &(ky, iy) in &rows {
            for kx in 0..g.kw {
                let ix = (ox * g.stride[1] + kx * g.dil[1]) as isize - g.pad[1] as isize;
                if valid(ix, g.w) {
                    taps.push(((ky * g.kw + kx) * g.c, (iy * g.w + ix as usize) * g.c));
                }
            }
        }
        let four = ox >= lo_x && ox + PIX <= hi_x && taps.len() == g.kh * g.kw;
        f(ox, four, &taps);
        ox += if four { PIX } else { 1 };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::avx512_pairs::paired;
    use super::{DwConv, BLOCK};
    use std::arch::x86_64::*;

    const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

    /// One output row with explicit AVX-512: 16 channels per register (masked at the channel tail), taps
    /// accumulated in registers with vpmaddwd (each i32 weight lane holds the i16 weight in its low half
    /// and 0 above, so the pair product is exactly (x − zx)·w), the requantization of gemm.rs's VNNI
    /// epilogue, byte stores. Interior pixels go four at a time, sharing weight loads.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn row(x: &[u8], out: &mut [u8], d: &DwConv, oy: usize) {
        super::pixel_groups(&d.g, oy, |ox, four, taps| {
            // SAFETY: the taps lie inside the image for these pixels (interior when `four`).
            unsafe {
                // Interior pixels: whole blocks of 32 channels with two taps per vpmaddwd, the rest below.
                let done = match (four && !d.pairs.is_empty(), d.xor) {
                    (true, false) => paired::<false>(x, out, d, taps, ox),
                    (true, true) => paired::<true>(x, out, d, taps, ox),
                    _ => 0,
                };
                match (four, d.xor) {
                    (true, false) => pixels::<4, true, false>(x, out, d, taps, ox, done),
                    (true, true) => pixels::<4, true, true>(x, out, d, taps, ox, done),
                    (false, false) => pixels::<1, false, false>(x, out, d, taps, ox, 0),
                    (false, true) => pixels::<1, false, true>(x, out, d, taps, ox, 0),
                }
            }
        });
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn pixels<const P: usize, const FULL: bool, const FLIP: bool>(
        x: &[u8],
        out: &mut [u8],
        d: &DwConv,
        taps: &[(usize, usize)],
        ox: usize,
        cb0: usize,
    ) {
        let g = d.g;
        let step = g.stride[1] * g.c;
        let (lo, hi) = d.epi.bounds();
        let (lo, hi, zy) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi), _mm512_set1_epi32(d.epi.zy));
        let zx = _mm512_set1_epi32(d.zx);
        let flip = _mm_set1_epi8(if d.xor { 0x80u8 as i8 } else { 0 });
        let mut cb = cb0;
        while cb < g.c {
            let n = BLOCK.min(g.c - cb);
            let m16: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
            // SAFETY: every access is masked to the n channels of this block, inside x, wts, bias, mult
            // and out (the plan sized them for g; pixel p's taps are p·step bytes after pixel 0's).
            unsafe {
                let bias = if FULL { d.bias_full } else { d.bias };
                let b = _mm512_maskz_loadu_epi32(m16, bias.as_ptr().add(cb) as *const _);
                let mut acc = [b; P];
                for &(wo, xo) in taps {
                    let wv = _mm512_maskz_loadu_epi32(m16, d.wts.as_ptr().add(wo + cb) as *const _);
                    for (p, a) in acc.iter_mut().enumerate() {
                        let mut xb = _mm_maskz_loadu_epi8(m16, x.as_ptr().add(xo + p * step + cb) as *const _);
                        if FLIP {
                            xb = _mm_xor_si128(xb, flip);
                        }
                        let mut xv = _mm512_cvtepu8_epi32(xb);
                        if !FULL {
                            xv = _mm512_sub_epi32(xv, zx);
                        }
                        // x − zx is in −255..255 (or x in 0..255): an i16, as vpmaddwd needs.
                        *a = _mm512_add_epi32(*a, _mm512_madd_epi16(xv, wv));
                    }
                }
                if let Some(sat) = d.sat {
                    let sv = _mm512_maskz_loadu_epi32(m16, sat.as_ptr().add(cb) as *const _);
                    for a in acc.iter_mut() {
                        *a = crate::kernels::gemm::saturate16(*a, sv);
                    }
                }
                let m = _mm512_maskz_loadu_ps(m16, d.epi.mult.as_ptr().add(cb));
                for (p, a) in acc.iter().enumerate() {
                    let f = _mm512_mul_round_ps::<RNE>(_mm512_cvt_roundepi32_ps::<RNE>(*a), m);
                    let f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
                    let q = _mm512_add_epi32(_mm512_cvt_roundps_epi32::<RNE>(f), zy);
                    _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add((ox + p) * g.c + cb) as *mut _, m16, q);
                }
            }
            cb += BLOCK;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512_pairs {
    use super::DwConv;
    use std::arch::x86_64::*;

    const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

    /// Four interior pixels (every tap inside the image) over the whole blocks of 32 channels, two taps
    /// per vpmaddwd: the two taps' bytes widened to i16 and interleaved by unpacklo/hi, against `pairs`
    /// (see pair_weights), so each instruction does 32 exact multiply-adds (bytes 0..255 times weights in
    /// −255..255, pair sums far inside i32). The sums come back in channel order through one
    /// permutex2var per 16 channels. Returns the channels done.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn paired<const FLIP: bool>(x: &[u8], out: &mut [u8], d: &DwConv, taps: &[(usize, usize)], ox: usize) -> usize {
        let g = d.g;
        let step = g.stride[1] * g.c;
        let npairs = taps.len().div_ceil(2);
        let (lo, hi) = d.epi.bounds();
        let (lo, hi, zy) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi), _mm512_set1_epi32(d.epi.zy));
        let flip = _mm256_set1_epi8(0x80u8 as i8);
        // Output channels 0..15 are the low half's lanes 0 and 1 interleaved with the high half's, per
        // 128-bit lane; channels 16..31 likewise from lanes 2 and 3.
        let idx0 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
        let idx1 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
        let blocks = g.c / 32;
        for b in 0..blocks {
            let cb = 32 * b;
            // SAFETY: pixels ox..ox+4 and their taps lie inside the image (the caller's interior test),
            // each load reads 32 channels of a full block, pairs holds blocks · npairs · 32 values, and
            // the stores write 16 channels inside the row.
            unsafe {
                let mut acc_lo = [_mm512_setzero_si512(); 4];
                let mut acc_hi = [_mm512_setzero_si512(); 4];
                for k in 0..npairs {
                    let w = d.pairs.as_ptr().add((b * npairs + k) * 32);
                    let (wl, wh) = (_mm512_loadu_si512(w as *const _), _mm512_loadu_si512(w.add(16) as *const _));
                    let (xo0, xo1) = (taps[2 * k].1, taps.get(2 * k + 1).map(|t| t.1));
                    for p in 0..4 {
                        let load = |xo: usize| {
                            let v = _mm256_loadu_si256(x.as_ptr().add(xo + p * step + cb) as *const _);
                            _mm512_cvtepu8_epi16(if FLIP { _mm256_xor_si256(v, flip) } else { v })
                        };
                        let x0 = load(xo0);
                        let x1 = xo1.map_or(_mm512_setzero_si512(), load);
                        acc_lo[p] = _mm512_add_epi32(acc_lo[p], _mm512_madd_epi16(_mm512_unpacklo_epi16(x0, x1), wl));
                        acc_hi[p] = _mm512_add_epi32(acc_hi[p], _mm512_madd_epi16(_mm512_unpackhi_epi16(x0, x1), wh));
                    }
                }
                for half in 0..2 {
                    let c0 = cb + 16 * half;
                    let bias = _mm512_loadu_si512(d.bias_full.as_ptr().add(c0) as *const _);
                    let m = _mm512_loadu_ps(d.epi.mult.as_ptr().add(c0));
                    let idx = if half == 0 { idx0 } else { idx1 };
                    for p in 0..4 {
                        let mut a = _mm512_add_epi32(_mm512_permutex2var_epi32(acc_lo[p], idx, acc_hi[p]), bias);
                        if let Some(sat) = d.sat {
                            a = crate::kernels::gemm::saturate16(a, _mm512_loadu_si512(sat.as_ptr().add(c0) as *const _));
                        }
                        let f = _mm512_mul_round_ps::<RNE>(_mm512_cvt_roundepi32_ps::<RNE>(a), m);
                        let f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
                        let q = _mm512_add_epi32(_mm512_cvt_roundps_epi32::<RNE>(f), zy);
                        _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add((ox + p) * g.c + c0) as *mut _, 0xffff, q);
                    }
                }
            }
        }
        blocks * 32
    }
}

/// Applies epilogue::saturate to channels c0.. of a block.
#[inline(always)]
pub(crate) fn fix_saturation(a: &mut [i32], sat: Option<&[i32]>, c0: usize) {
    if let Some(s) = sat {
        for (j, v) in a.iter_mut().enumerate() {
            *v = saturate(*v, s[c0 + j]);
        }
    }
}

/// The `pairs` layout for weights `w` ([tap][c], w − zw as i16 in the low half, as `wts`) of `taps` taps and
/// `c` channels: per
/// block of 32 channels b and tap pair k, 32 i32: for the low unpack half, element i holds channel
/// 32b + 8(i / 4) + i % 4, for the high half channel 32b + 8(i / 4) + 4 + i % 4 (the order
/// `_mm512_unpacklo/hi_epi16` leave 32 channels of two taps in), each as tap 2k's weight in the low i16
/// and tap 2k + 1's (or 0) in the high i16. Channels past the last full block of 32 are not included.
pub fn pair_weights(w: &[i32], taps: usize, c: usize) -> Vec<i32> {
    let pairs = taps.div_ceil(2);
    let mut out = Vec::with_capacity(c / 32 * pairs * 32);
    for b in 0..c / 32 {
        for k in 0..pairs {
            for half in 0..2 {
                for i in 0..16 {
                    let ch = 32 * b + 8 * (i / 4) + 4 * half + i % 4;
                    let lo = w[2 * k * c + ch] as u16 as u32;
                    let hi = if 2 * k + 1 < taps { w[(2 * k + 1) * c + ch] as u16 as u32 } else { 0 };
                    // (`as u16` keeps each weight's low half: its i16 value.)
                    out.push((lo | hi << 16) as i32);
                }
            }
        }
    }
    out
}

/// Channels per register block.
const BLOCK: usize = 16;
/// Output pixels computed together in the interior.
const PIX: usize = 4;

/// P adjacent output pixels (input offsets `step` bytes apart) over all channels. `taps` holds (weight
/// offset, input offset of the first pixel) of every tap inside the image.
#[inline(always)]
fn pixels<const P: usize>(x: &[u8], out: &mut [u8], d: &DwConv, taps: &[(usize, usize)], step: usize) {
    let c = d.g.c;
    let flip = if d.xor { 0x80u8 } else { 0 };
    let mut cb = 0;
    // Blocks of 16 channels: each pixel's accumulator stays in one vector register across the taps.
    while cb + BLOCK <= c {
        let mut acc = [[0i32; BLOCK]; P];
        for a in acc.iter_mut() {
            a.copy_from_slice(&d.bias[cb..cb + BLOCK]);
        }
        for &(wo, xo) in taps {
            let ws: &[i32; BLOCK] = d.wts[wo + cb..wo + cb + BLOCK].try_into().expect("block");
            for (p, a) in acc.iter_mut().enumerate() {
                let xs: &[u8; BLOCK] = x[xo + p * step + cb..xo + p * step + cb + BLOCK].try_into().expect("block");
                for j in 0..BLOCK {
                    a[j] = a[j].wrapping_add(((xs[j] ^ flip) as i32 - d.zx).wrapping_mul(ws[j] as i16 as i32));
                }
            }
        }
        for (p, a) in acc.iter_mut().enumerate() {
            fix_saturation(a, d.sat, cb);
            d.epi.row(a, cb, &mut out[p * c + cb..p * c + cb + BLOCK]);
        }
        cb += BLOCK;
    }
    if cb < c {
        let mut tail = vec![0i32; c - cb];
        for p in 0..P {
            tail.copy_from_slice(&d.bias[cb..c]);
            for &(wo, xo) in taps {
                for (j, a) in tail.iter_mut().enumerate() {
                    *a = a.wrapping_add(((x[xo + p * step + cb + j] ^ flip) as i32 - d.zx).wrapping_mul(d.wts[wo + cb + j] as i16 as i32));
                }
            }
            fix_saturation(&mut tail, d.sat, cb);
            d.epi.row(&tail, cb, &mut out[p * c + cb..p * c + c]);
        }
    }
}
