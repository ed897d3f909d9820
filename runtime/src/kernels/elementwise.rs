//! Elementwise, pooling and layout kernels on arena buffers: quantize (optionally NCHW → NHWC),
//! dequantize (optionally NHWC → NCHW), qadd, qglobal_average_pool, integer max pooling and plain
//! layout transposes. Each equals its interpreter counterpart bit for bit (docs/semantics.md).
use super::float::UnOp;
use super::{multiversion, pool, Isa};
use qcc_ir::Act;

/// Storage of quantized integers in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntElem {
    U8,
    I8,
    I16,
}

impl IntElem {
    pub fn size(self) -> usize {
        match self {
            IntElem::I16 => 2,
            _ => 1,
        }
    }
    pub fn code(self) -> u64 {
        match self {
            IntElem::U8 => 0,
            IntElem::I8 => 1,
            IntElem::I16 => 2,
        }
    }
    pub fn from_code(c: u64) -> IntElem {
        match c {
            1 => IntElem::I8,
            2 => IntElem::I16,
            _ => IntElem::U8,
        }
    }
    /// Reads element i.
    ///
    /// # Safety
    /// P must hold i + 1 elements.
    #[inline(always)]
    pub unsafe fn read(self, p: *const u8, i: usize) -> i32 {
        // SAFETY: caller's contract.
        unsafe {
            match self {
                IntElem::U8 => *p.add(i) as i32,
                IntElem::I8 => *p.add(i) as i8 as i32,
                IntElem::I16 => (p as *const i16).add(i).read_unaligned() as i32,
            }
        }
    }
    /// Writes element i (v already inside the storage range).
    ///
    /// # Safety
    /// P must hold i + 1 elements.
    #[inline(always)]
    pub unsafe fn write(self, p: *mut u8, i: usize, v: i32) {
        // SAFETY: caller's contract.
        unsafe {
            match self {
                IntElem::U8 | IntElem::I8 => *p.add(i) = v as u8,
                IntElem::I16 => (p as *mut i16).add(i).write_unaligned(v as i16),
            }
        }
    }
}

/// Per-tensor quantization of one value: clamp(rne(x / s) + zp, lo, hi), NaN to zp.
#[inline(always)]
pub fn quantize_one(x: f32, scale: f32, zp: i32, lo: i32, hi: i32) -> i32 {
    let r = (x / scale).round_ties_even();
    let r = if r.is_nan() { 0.0 } else { r };
    clamp_to_int(r, (lo - zp) as f32, (hi - zp) as f32) + zp
}

/// clamp(v, lo, hi) as i32, for v not NaN and integer bounds inside i32. Written with plain comparisons
/// and an unchecked conversion so loops vectorize to max/min/cvt instructions.
#[inline(always)]
pub fn clamp_to_int(v: f32, lo: f32, hi: f32) -> i32 {
    let v = if v > lo { v } else { lo };
    let v = if v < hi { v } else { hi };
    // SAFETY: v is a finite value in [lo, hi] (callers never pass NaN), and lo, hi are i32 values.
    unsafe { v.to_int_unchecked::<i32>() }
}

const CHUNK: usize = 1 << 14;

/// Elementwise over `len` outputs in parallel chunks.
fn chunks(len: usize, f: &(dyn Fn(usize, usize) + Sync)) {
    pool::parallel_for(len.div_ceil(CHUNK), &|t| f(t * CHUNK, (t * CHUNK + CHUNK).min(len)));
}

/// Raw arena pointers shared by parallel chunks (each writes its own range).
#[derive(Clone, Copy)]
pub struct Ptr(pub *mut u8);
// SAFETY: only used for disjoint writes and shared reads inside one kernel call.
unsafe impl Sync for Ptr {}
unsafe impl Send for Ptr {}

impl Ptr {
    /// The pointer (a method, so closures capture the Sync wrapper, not the raw field).
    #[inline(always)]
    pub fn get(self) -> *mut u8 {
        self.0
    }
}

/// Pixels per task of the layout-changing kernels.
const PIXELS: usize = 2048;

/// Quantizes `len` f32 values; with `nchw` = Some(dims) the output is written NHWC.
///
/// # Safety
/// X holds len f32, out len elements of `elem`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn quantize(
    isa: Isa,
    x: *const f32,
    len: usize,
    nchw: Option<[usize; 4]>,
    scale: f32,
    zp: i32,
    lo: i32,
    hi: i32,
    elem: IntElem,
    out: *mut u8,
) {
    let (xp, op) = (Ptr(x as *mut u8), Ptr(out));
    multiversion!(
        fn q(x: &[f32], out: &mut [i32], s: f32, zp: i32, lo: i32, hi: i32) {
            for (o, v) in out.iter_mut().zip(x) {
                *o = quantize_one(*v, s, zp, lo, hi);
            }
        }
    );
    match nchw {
        None => chunks(len, &|a, b| {
            // SAFETY: a..b lies inside x and out.
            let x = unsafe { std::slice::from_raw_parts((xp.get() as *const f32).add(a), b - a) };
            let mut tmp = vec![0i32; b - a];
            q(isa, x, &mut tmp, scale, zp, lo, hi);
            for (i, v) in tmp.iter().enumerate() {
                // SAFETY: a + i < len.
                unsafe { elem.write(op.get(), a + i, *v) };
            }
        }),
        Some([n, c, h, w]) => {
            let hw = h * w;
            let tiles = hw.div_ceil(PIXELS);
            pool::parallel_for(n * tiles, &|t| {
                let (b, p0) = (t / tiles, (t % tiles) * PIXELS);
                let np = PIXELS.min(hw - p0);
                #[cfg(target_arch = "x86_64")]
                if isa == Isa::Avx512Vnni && c == 3 && elem != IntElem::I16 {
                    // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen; pixels p0..p0+np of
                    // image b lie inside x (three planes) and out.
                    unsafe {
                        avx512::quantize_rgb(
                            (xp.get() as *const f32).add(b * 3 * hw + p0),
                            hw,
                            np,
                            [scale, zp as f32, (lo - zp) as f32, (hi - zp) as f32],
                            op.get().add((b * hw + p0) * 3),
                        )
                    };
                    return;
                }
                let mut tmp = vec![0i32; np * c];
                for ch in 0..c {
                    // SAFETY: plane (b, ch) pixels p0..p0+np lie inside x.
                    let x = unsafe { std::slice::from_raw_parts((xp.get() as *const f32).add((b * c + ch) * hw + p0), np) };
                    q(isa, x, &mut tmp[ch * np..(ch + 1) * np], scale, zp, lo, hi);
                }
                // Interleave the planes into channels-last order, straight into the output.
                let base = (b * hw + p0) * c;
                match elem {
                    IntElem::U8 | IntElem::I8 => {
                        // SAFETY: pixels p0..p0+np of image b lie inside out (one byte each per channel).
                        let dst = unsafe { std::slice::from_raw_parts_mut(op.get().add(base), np * c) };
                        for (ch, plane) in tmp.chunks_exact(np).enumerate() {
                            for (d, v) in dst[ch..].iter_mut().step_by(c).zip(plane) {
                                *d = *v as u8;
                            }
                        }
                    }
                    IntElem::I16 => {
                        for (ch, plane) in tmp.chunks_exact(np).enumerate() {
                            for (i, v) in plane.iter().enumerate() {
                                // SAFETY: as above, two bytes per element.
                                unsafe { (op.get() as *mut i16).add(base + i * c + ch).write_unaligned(*v as i16) };
                            }
                        }
                    }
                }
            });
        }
    }
}

/// Dequantizes `len` integers: (q − zp) · scale; with `nchw` = Some(dims) the input is NHWC and the
/// output NCHW.
///
/// # Safety
/// As quantize.
pub unsafe fn dequantize(x: *const u8, len: usize, nchw: Option<[usize; 4]>, scale: f32, zp: i32, elem: IntElem, out: *mut f32) {
    let (xp, op) = (Ptr(x as *mut u8), Ptr(out as *mut u8));
    match nchw {
        None => chunks(len, &|a, b| {
            for i in a..b {
                // SAFETY: i < len.
                unsafe { *(op.get() as *mut f32).add(i) = (elem.read(xp.get(), i) - zp) as f32 * scale }
            }
        }),
        Some([n, c, h, w]) => {
            let hw = h * w;
            pool::parallel_for(n * c, &|t| {
                let (b, ch) = (t / c, t % c);
                for p in 0..hw {
                    // SAFETY: inside both buffers.
                    unsafe { *(op.get() as *mut f32).add(t * hw + p) = (elem.read(xp.get(), (b * hw + p) * c + ch) - zp) as f32 * scale }
                }
            });
        }
    }
}

/// Quantized add or multiply, quantize(act(dq(a) ∘ dq(b))), of tensors in the same layout.
pub struct QAdd {
    pub isa: Isa,
    pub len: usize,
    pub mul: bool,
    /// Broadcasting over 4 physical dims: (dims, element strides of a, of b); the innermost stride of each
    /// operand is 0 or 1. None: a, b and out all hold len elements.
    pub bcast: Option<([usize; 4], [usize; 4], [usize; 4])>,
    pub a: (*const u8, f32, i32, IntElem),
    pub b: (*const u8, f32, i32, IntElem),
    pub out: (*mut u8, f32, i32, IntElem),
    pub lo: i32,
    pub hi: i32,
    pub act: Option<Act>,
    /// A fused `dequantize → clamp → quantize` after the add: the add's own output quantization
    /// (scale, zp, lo, hi) and the clamp; `out`, `lo` and `hi` then describe the final quantize.
    pub mid: Option<(f32, i32, i32, i32, UnOp)>,
}

/// Elements a..a+n as i32 (one match per call, so the conversion loops vectorize; no zero-filling).
unsafe fn read_range(e: IntElem, p: *const u8, a: usize, n: usize) -> Vec<i32> {
    // SAFETY: caller's contract: p holds a + n elements.
    unsafe {
        match e {
            IntElem::U8 => std::slice::from_raw_parts(p.add(a), n).iter().map(|v| *v as i32).collect(),
            IntElem::I8 => std::slice::from_raw_parts(p.add(a) as *const i8, n).iter().map(|v| *v as i32).collect(),
            IntElem::I16 => (0..n).map(|i| (p as *const i16).add(a + i).read_unaligned() as i32).collect(),
        }
    }
}

unsafe fn write_range(e: IntElem, p: *mut u8, a: usize, v: &[i32]) {
    // SAFETY: caller's contract.
    unsafe {
        match e {
            IntElem::U8 | IntElem::I8 => v.iter().enumerate().for_each(|(i, x)| *p.add(a + i) = *x as u8),
            IntElem::I16 => v.iter().enumerate().for_each(|(i, x)| (p as *mut i16).add(a + i).write_unaligned(*x as i16)),
        }
    }
}

/// `n` elements from `a` with stride 0 (one element repeated) or 1.
unsafe fn read_strided(e: IntElem, p: *const u8, a: usize, n: usize, stride: usize) -> Vec<i32> {
    // SAFETY: caller's contract: p holds the elements read.
    unsafe {
        if stride == 0 {
            vec![read_range(e, p, a, 1)[0]; n]
        } else {
            read_range(e, p, a, n)
        }
    }
}

// SAFETY: the pointers address arena buffers; chunks read a and b and write disjoint ranges of out.
unsafe impl Sync for QAdd {}

impl QAdd {
    ///
    /// # Safety
    /// Every buffer holds len elements (or, broadcasting, what its strides address).
    pub unsafe fn run(&self) {
        let (ap, bp, op) = (Ptr(self.a.0 as *mut u8), Ptr(self.b.0 as *mut u8), Ptr(self.out.0));
        multiversion!(
            fn combine(
                a: &mut [i32],
                b: &[i32],
                mul: bool,
                p: [f32; 3],
                z: [i32; 3],
                lo: i32,
                hi: i32,
                act: Option<Act>,
                mid: Option<(f32, i32, i32, i32, UnOp)>,
            ) {
                // One loop per variant, so each vectorizes without per-element dispatch.
                #[inline(always)]
                fn each(a: &mut [i32], b: &[i32], p: [f32; 3], z: [i32; 3], mul: bool, f: impl Fn(f32) -> i32) {
                    if mul {
                        for (x, y) in a.iter_mut().zip(b) {
                            *x = f((*x - z[0]) as f32 * p[0] * ((*y - z[1]) as f32 * p[1]));
                        }
                    } else {
                        for (x, y) in a.iter_mut().zip(b) {
                            *x = f((*x - z[0]) as f32 * p[0] + (*y - z[1]) as f32 * p[1]);
                        }
                    }
                }
                let q = |v: f32| quantize_one(v, p[2], z[2], lo, hi);
                match (act, mid) {
                    (None, None) => each(a, b, p, z, mul, q),
                    (None, Some((s1, z1, lo1, hi1, UnOp::Clip { min, max }))) => each(a, b, p, z, mul, |v| {
                        let q1 = quantize_one(v, s1, z1, lo1, hi1);
                        let f = (q1 - z1) as f32 * s1;
                        // f is never NaN (a dequantized integer), so the clamp is plain max/min.
                        q(f.max(min).min(max))
                    }),
                    // The common activations as their own loops (through Act::apply's match they do
                    // not vectorize: 8× slower on ResNet-50's adds).
                    (Some(Act::Relu), None) => each(a, b, p, z, mul, |v| q(Act::Relu.apply(v))),
                    (Some(Act::Clip { min, max }), None) => each(a, b, p, z, mul, |v| q(Act::Clip { min, max }.apply(v))),
                    (act, mid) => each(a, b, p, z, mul, |v| {
                        let v = act.map_or(v, |f| f.apply(v));
                        match mid {
                            None => q(v),
                            Some((s1, z1, lo1, hi1, f)) => q(f.apply((quantize_one(v, s1, z1, lo1, hi1) - z1) as f32 * s1)),
                        }
                    }),
                }
            }
        );
        let (p, z) = ([self.a.1, self.b.1, self.out.1], [self.a.2, self.b.2, self.out.2]);
        let run = |ta: &mut [i32], tb: &[i32]| combine(self.isa, ta, tb, self.mul, p, z, self.lo, self.hi, self.act, self.mid);
        match self.bcast {
            None => chunks(self.len, &|s, e| {
                // SAFETY: s..e lies inside every buffer.
                let (mut ta, tb) = unsafe { (read_range(self.a.3, ap.get(), s, e - s), read_range(self.b.3, bp.get(), s, e - s)) };
                run(&mut ta, &tb);
                unsafe { write_range(self.out.3, op.get(), s, &ta) };
            }),
            Some((d, sa, sb)) => pool::parallel_for(d[0] * d[1] * d[2], &|row| {
                let (i0, i1, i2) = (row / (d[1] * d[2]), row / d[2] % d[1], row % d[2]);
                let at = |s: [usize; 4]| i0 * s[0] + i1 * s[1] + i2 * s[2];
                // SAFETY: the strides address elements inside a and b; out rows are disjoint.
                let (mut ta, tb) = unsafe {
                    (read_strided(self.a.3, ap.get(), at(sa), d[3], sa[3]), read_strided(self.b.3, bp.get(), at(sb), d[3], sb[3]))
                };
                run(&mut ta, &tb);
                unsafe { write_range(self.out.3, op.get(), row * d[3], &ta) };
            }),
        }
    }
}

/// Strided copy of `esize`-byte elements: for every index i over `dims`, element Σ i·ss of x goes to
/// element Σ i·ds of out.
///
/// A transpose (the source contiguous along an axis p, the destination along the last axis, and p not
/// the last) copies 16 × 16 blocks of those two axes on the thread pool, so each block's 16 source and
/// 16 destination cache lines stay in L1 (walking destination rows alone reads every source line once
/// per element it holds: a channels-last 112 × 112 × 64 f32 image into planes took 3.3 ms, the blocks
/// 0.6 on one thread). Other copies go row by row on one thread.
///
/// # Safety
/// Every addressed element lies inside x and out, which do not overlap.
pub unsafe fn strided_copy(x: *const u8, out: *mut u8, esize: usize, dims: [usize; 6], ss: [usize; 6], ds: [usize; 6]) {
    if dims.contains(&0) {
        return;
    }
    let p = (0..5).find(|&k| dims[k] > 1 && ss[k] == 1);
    // SAFETY (all calls): the caller's contract, for elements of esize bytes.
    unsafe {
        match (p, esize) {
            (Some(p), _) if dims[5] > 1 && ds[5] == 1 && ss[5] != 1 => match esize {
                1 => blocked::<u8>(x, out, dims, (ss, ds), p),
                2 => blocked::<u16>(x, out, dims, (ss, ds), p),
                _ => blocked::<u32>(x, out, dims, (ss, ds), p),
            },
            (_, 1) => rows(x, out, dims, ss, ds),
            (_, 2) => rows(x as *const u16, out as *mut u16, dims, ss, ds),
            _ => rows(x as *const u32, out as *mut u32, dims, ss, ds),
        }
    }
}

/// strided_copy one destination row (the last axis) at a time.
///
/// # Safety
/// strided_copy's.
unsafe fn rows<T: Copy>(x: *const T, out: *mut T, dims: [usize; 6], ss: [usize; 6], ds: [usize; 6]) {
    let mut idx = [0usize; 5];
    loop {
        let (s0, d0) = idx.iter().enumerate().fold((0, 0), |(s, d), (k, i)| (s + i * ss[k], d + i * ds[k]));
        for i in 0..dims[5] {
            // SAFETY: the caller's contract covers every index over dims.
            unsafe { *out.add(d0 + i * ds[5]) = *x.add(s0 + i * ss[5]) };
        }
        // The odometer over the outer five dimensions.
        let mut k = 5;
        loop {
            if k == 0 {
                return;
            }
            k -= 1;
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// strided_copy of a transpose: source axis p (stride 1) against destination axis 5 (stride 1), in
/// blocks of 16 × 16; one task per index of the other axes and block row of p.
///
/// # Safety
/// strided_copy's, with x and out pointing at elements of type T.
unsafe fn blocked<T: Copy>(x: *const u8, out: *mut u8, dims: [usize; 6], (ss, ds): ([usize; 6], [usize; 6]), p: usize) {
    const B: usize = 16;
    let outer: Vec<usize> = (0..5).filter(|&k| k != p).collect();
    let outer_n: usize = outer.iter().map(|&k| dims[k]).product();
    let rows_p = dims[p].div_ceil(B);
    let (xp, op) = (Ptr(x as *mut u8), Ptr(out));
    pool::parallel_for(outer_n * rows_p, &|t| {
        let (mut rem, mut s0, mut d0) = (t / rows_p, 0, 0);
        for &k in outer.iter().rev() {
            let i = rem % dims[k];
            rem /= dims[k];
            s0 += i * ss[k];
            d0 += i * ds[k];
        }
        let i0 = (t % rows_p) * B;
        let i1 = (i0 + B).min(dims[p]);
        let (x, out) = (xp.get() as *const T, op.get() as *mut T);
        for j0 in (0..dims[5]).step_by(B) {
            let j1 = (j0 + B).min(dims[5]);
            for i in i0..i1 {
                for j in j0..j1 {
                    // SAFETY: (i, j) and the outer index lie inside dims (the caller's contract).
                    unsafe { *out.add(d0 + i * ds[p] + j) = *x.add(s0 + i + j * ss[5]) };
                }
            }
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

    /// Quantizes n pixels of three NCHW planes (`plane` floats apart) into NHWC bytes, 16 pixels at a
    /// time: quantize_one on each lane (one f32 division with round-to-nearest-even, NaN to the zero
    /// point, the clamp before the conversion), then the three channel vectors interleaved by two
    /// permutations per output vector and narrowed to bytes (values are inside the 8-bit range).
    /// `p` = [scale, zp, lo − zp, hi − zp].
    ///
    /// # Safety
    /// AVX-512F present; x + k·plane holds n floats for k < 3, out 3n bytes.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn quantize_rgb(x: *const f32, plane: usize, n: usize, p: [f32; 4], out: *mut u8) {
        let (scale, zp, lo, hi) = (_mm512_set1_ps(p[0]), _mm512_set1_epi32(p[1] as i32), _mm512_set1_ps(p[2]), _mm512_set1_ps(p[3]));
        // 16 pixels as 48 channel-interleaved values: lane l of output vector v is element e = 16v + l,
        // channel e % 3 of pixel e / 3. First step: channels 0 and 1 (pixel, or 16 + pixel for channel
        // 1; channel-2 lanes get anything); second: keep those lanes or take channel 2 (16 + pixel).
        let idx = |v: usize, second: bool| -> __m512i {
            let i: [i32; 16] = std::array::from_fn(|l| {
                let e = (16 * v + l) as i32;
                match (e % 3, second) {
                    (1, false) | (2, true) => 16 + e / 3,
                    (_, false) => e / 3,
                    (_, true) => l as i32,
                }
            });
            // SAFETY: 16 i32.
            unsafe { _mm512_loadu_si512(i.as_ptr() as *const _) }
        };
        let steps: [(__m512i, __m512i); 3] = std::array::from_fn(|v| (idx(v, false), idx(v, true)));
        let mut i = 0;
        // SAFETY: the caller's bounds; loads and stores are masked to the pixels left.
        unsafe {
            while i < n {
                let m = if n - i >= 16 { 0xffffu16 } else { ((1u32 << (n - i)) - 1) as u16 };
                let q: [__m512i; 3] = std::array::from_fn(|ch| {
                    let v = _mm512_maskz_loadu_ps(m, x.add(ch * plane + i));
                    let r = _mm512_roundscale_ps::<RNE>(_mm512_div_round_ps::<RNE>(v, scale));
                    let r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(r, r), _mm512_setzero_ps());
                    let r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
                    _mm512_add_epi32(_mm512_cvt_roundps_epi32::<RNE>(r), zp)
                });
                let total = 3 * (n - i).min(16);
                for (v, (i1, i2)) in steps.iter().enumerate() {
                    let left = total.saturating_sub(16 * v).min(16);
                    if left > 0 {
                        let mv = if left == 16 { 0xffffu16 } else { ((1u32 << left) - 1) as u16 };
                        let t = _mm512_permutex2var_epi32(_mm512_permutex2var_epi32(q[0], *i1, q[1]), *i2, q[2]);
                        _mm512_mask_cvtepi32_storeu_epi8(out.add(3 * i + 16 * v) as *mut _, mv, t);
                    }
                }
                i += 16;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every permutation of a 3-D u32 tensor with sizes off the block edge, and a slice-like copy with a
    /// step: the blocked transpose and the row walk each equal the definition, element by element.
    #[test]
    fn strided_copies_equal_the_definition() {
        let d = [5usize, 19, 37];
        let src: Vec<u32> = (0..d.iter().product::<usize>() as u32).collect();
        let sst = [d[1] * d[2], d[2], 1];
        for perm in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            let od = perm.map(|a| d[a]);
            let (mut dims, mut ss, mut ds) = ([1usize; 6], [0usize; 6], [0usize; 6]);
            for k in 0..3 {
                (dims[3 + k], ss[3 + k], ds[3 + k]) = (od[k], sst[perm[k]], [od[1] * od[2], od[2], 1][k]);
            }
            for threads in [1, 3] {
                pool::set_threads(threads);
                let mut out = vec![u32::MAX; src.len()];
                // SAFETY: the strides address src and out inside their lengths.
                unsafe { strided_copy(src.as_ptr() as *const u8, out.as_mut_ptr() as *mut u8, 4, dims, ss, ds) };
                for (i, o) in out.iter().enumerate() {
                    let idx = [i / (od[1] * od[2]), (i / od[2]) % od[1], i % od[2]];
                    let at: usize = (0..3).map(|k| idx[k] * sst[perm[k]]).sum();
                    assert_eq!(*o, src[at], "perm {perm:?}, {threads} threads, element {i}");
                }
            }
        }
        pool::set_threads(0);
        // Every other column of bytes: neither side is a transpose.
        let x: Vec<u8> = (0..200u8).collect();
        let mut out = vec![0u8; 100];
        // SAFETY: 10 rows of 10 bytes from 10 rows of 20.
        unsafe { strided_copy(x.as_ptr(), out.as_mut_ptr(), 1, [1, 1, 1, 1, 10, 10], [0, 0, 0, 0, 20, 2], [0, 0, 0, 0, 10, 1]) };
        assert!(out.iter().enumerate().all(|(i, &v)| v as usize == (i / 10) * 20 + (i % 10) * 2));
    }
}
