//! f32 kernels over channels-last (NHWC) activations, the layout float networks take on AVX-512 CPUs:
//! convolution as an implicit GEMM vectorised over output channels, depthwise convolution, max, average
//! and global average pooling. With the channels of a pixel contiguous, one register holds 16 channels
//! of one pixel whatever the image size or stride: no column of a 7x7 image is padded to a tile, no
//! window is packed, a strided window is just another pointer. Float results need not equal the
//! interpreter bit for bit (the summation order differs; tests compare within a relative tolerance).
use super::dwconv::{DwGeom, PoolTaps};
use super::rows::{RowKernel, RowShape};
use super::{clamp_bounds, Isa};
use qcc_ir::Act;

/// Output channels per weight panel: four AVX-512 registers per pixel of a tile.
pub const NB: usize = 64;
/// Output pixels per micro-tile: 6 × 4 accumulators, 4 weight registers and a broadcast fit the 32
/// registers; per k, 4 weight loads and 6 broadcasts feed 24 FMAs.
pub const R: usize = 6;
/// Packed weights up to this many bytes are read by every tile in turn (half of a 1 MB L2).
pub(super) const SMALL_WEIGHTS: usize = 512 << 10;

/// Channels of panel j of m output channels, rounded up to whole registers (the packed width).
pub(super) fn panel_width(m: usize, j: usize) -> usize {
    (m - j * NB).min(NB).next_multiple_of(16)
}

/// Packs convolution weights (element (o, c, ky, kx) given by `at`) into panels of NB output channels,
/// panel j at j·K·NB floats holding [K][its width] with k = (ky·kw + kx)·cin + c: the order a pixel's
/// window is read in (tap by tap, each tap's channels contiguous in the input).
pub fn pack_conv_weights(m: usize, cin: usize, kh: usize, kw: usize, at: impl Fn(usize, usize, usize, usize) -> f32) -> Vec<f32> {
    let k = cin * kh * kw;
    let panels = m.div_ceil(NB);
    // Only the last panel can be narrower than NB, so panel j starts at j·K·NB.
    let len = if panels == 0 { 0 } else { (panels - 1) * k * NB + panel_width(m, panels - 1) * k };
    let mut out = vec![0f32; len];
    for j in 0..panels {
        let width = panel_width(m, j);
        for ky in 0..kh {
            for kx in 0..kw {
                for c in 0..cin {
                    let kk = (ky * kw + kx) * cin + c;
                    for o in j * NB..(j * NB + width).min(m) {
                        out[j * k * NB + kk * width + o - j * NB] = at(o, c, ky, kx);
                    }
                }
            }
        }
    }
    out
}

/// Bytes of a panel's weights one pass over a chunk of tiles reads (K is split into parts beyond).
pub(super) const PART_BYTES: usize = 256 << 10;

/// The k range k0.. of a tile's runs (whole runs) in a K of kfull: the first part starts from zero,
/// later ones from the partial sums in the output; all but the last store partial sums.
#[derive(Clone, Copy)]
pub(super) struct Part {
    pub k0: usize,
    pub kfull: usize,
    pub first: bool,
    pub last: bool,
}

/// Cache lines (of 16 floats) of the packed weights, from float `at`, a tile asks for ahead of use.
#[derive(Clone, Copy)]
pub(super) struct Prefetch {
    pub at: usize,
    pub lines: usize,
}

/// The taps t of a window axis that land inside the input: output position o, stride s, dilation d,
/// leading pad `pad`, input length n, k taps. Taps lo..hi (possibly empty).
pub(super) fn inside(o: usize, s: usize, d: usize, pad: usize, n: usize, k: usize) -> (usize, usize) {
    let base = (o * s) as isize - pad as isize;
    let lo = if base >= 0 { 0 } else { (-base as usize).div_ceil(d) };
    let hi = if base >= n as isize { 0 } else { ((n as isize - base) as usize).div_ceil(d).min(k) };
    (lo.min(hi), hi)
}

/// A convolution of one image (one group of it), NHWC in: out[p, o] (at out + p·ldo + o·cso) =
/// act(Σ_{ky,kx,c} w[o, c, ky, kx] · x[window(p, ky, kx), c] + bias[o] (+ res[p, o])), where the input
/// pixel (iy, ix) starts at x + (iy·w + ix)·ldx (ldx ≥ the group's channels g.c: a group reads its
/// channels of wider pixels in place). With `nchw`, x is instead an NCHW image of g.c planes (a graph
/// input: the first convolution of most networks), copied channels-last with its padding. The output is
/// NHWC (cso = 1) or, for a graph output, NCHW (ldo = 1, cso = the pixel count). Its tasks and run:
/// fnhwc_tasks.rs.
#[derive(Clone, Copy)]
pub struct FConvNhwc<'a> {
    pub isa: Isa,
    pub g: DwGeom,
    pub x: *const f32,
    pub ldx: usize,
    pub nchw: bool,
    pub m: usize,
    /// pack_conv_weights' panels.
    pub w: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub act: Option<Act>,
    /// Laid out like out.
    pub res: Option<*const f32>,
    pub out: *mut f32,
    pub ldo: usize,
    pub cso: usize,
}

// SAFETY: tasks read x, w and res and write disjoint (pixel range, panel) blocks of out.
unsafe impl Sync for FConvNhwc<'_> {}

impl FConvNhwc<'_> {
    /// Pixels p0..p0 + n (n ≤ R) of panel j, each pixel's window given as runs of `seg` floats (per tap
    /// or per kernel row), in the order of K.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(&self, j: usize, ptrs: &[[*const f32; R]], seg: usize, part: Part, p0: usize, n: usize, pf: Prefetch) {
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni {
            // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen; the caller's bounds.
            unsafe {
                match panel_width(self.m, j) / 16 {
                    4 => avx512::tile::<4>(self, j, ptrs, seg, part, p0, n, pf),
                    3 => avx512::tile::<3>(self, j, ptrs, seg, part, p0, n, pf),
                    2 => avx512::tile::<2>(self, j, ptrs, seg, part, p0, n, pf),
                    _ => avx512::tile::<1>(self, j, ptrs, seg, part, p0, n, pf),
                }
            }
            return;
        }
        // Parts are AVX-512 only: here K is whole.
        let _ = (part, pf);
        let (cin, k) = (seg, ptrs.len() * seg);
        let width = panel_width(self.m, j);
        let w = &self.w[j * k * NB..];
        for r in 0..n {
            let q = p0 + r;
            for o in 0..(self.m - j * NB).min(NB) {
                let mut s = 0f32;
                for (t, tp) in ptrs.iter().enumerate() {
                    for c in 0..cin {
                        // SAFETY: the caller's bounds: each pointer holds cin floats.
                        s += w[(t * cin + c) * width + o] * unsafe { *tp[r].add(c) };
                    }
                }
                let at = q * self.ldo + (j * NB + o) * self.cso;
                // SAFETY: pixel q, channel j·NB + o is inside out (and res).
                unsafe {
                    let v = s + self.bias.map_or(0.0, |b| b[j * NB + o]) + self.res.map_or(0.0, |res| *res.add(at));
                    *self.out.add(at) = self.act.map_or(v, |f| f.apply(v));
                }
            }
        }
    }
}

/// Depthwise convolution (or, with `max`, max pooling: no weights, no bias) of NHWC images: out[n, oy,
/// ox, c] = act(Σ_taps w[tap][c] · x[n, iy, ix, c] + bias[c]) over the taps inside the image.
pub struct FDwNhwc<'a> {
    pub isa: Isa,
    pub g: DwGeom,
    pub x: *const f32,
    /// [kh·kw][c]; empty for max pooling.
    pub w: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub act: Option<Act>,
    pub max: bool,
    pub out: *mut f32,
}

// SAFETY: tasks read x and w and write disjoint output rows.
unsafe impl Sync for FDwNhwc<'_> {}

impl RowKernel for FDwNhwc<'_> {
    fn shape(&self) -> RowShape {
        RowShape::of(&self.g, 4, 4)
    }
    fn input(&self) -> *const u8 {
        self.x as *const u8
    }
    fn output(&self) -> *mut u8 {
        self.out as *mut u8
    }

    unsafe fn row(&self, x: *const u8, out: *mut u8, oy: usize) {
        let (x, out) = (x as *const f32, out as *mut f32);
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni {
            // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen; the trait's contract.
            unsafe { avx512::dw_row(self, x, out, oy) };
            return;
        }
        let g = &self.g;
        let (ky0, ky1) = inside(oy, g.stride[0], g.dil[0], g.pad[0], g.h, g.kh);
        for ox in 0..g.ow {
            let (kx0, kx1) = inside(ox, g.stride[1], g.dil[1], g.pad[1], g.w, g.kw);
            for c in 0..g.c {
                let mut s = if self.max { f32::NEG_INFINITY } else { self.bias.map_or(0.0, |b| b[c]) };
                for ky in ky0..ky1 {
                    for kx in kx0..kx1 {
                        let (iy, ix) = (oy * g.stride[0] + ky * g.dil[0] - g.pad[0], ox * g.stride[1] + kx * g.dil[1] - g.pad[1]);
                        // SAFETY: (iy, ix) is inside the image.
                        let v = unsafe { *x.add((iy * g.w + ix) * g.c + c) };
                        s = if self.max { s.max(v) } else { s + self.w[(ky * g.kw + kx) * g.c + c] * v };
                    }
                }
                // SAFETY: (ox, c) is inside the output row.
                unsafe { *out.add(ox * g.c + c) = self.act.map_or(s, |f| f.apply(s)) };
            }
        }
    }
}

/// A grouped convolution whose groups have fewer than 16 output channels (ResNeXt's 4 and 8), NHWC in
/// and out: a register holds 16 output channels of one pixel across 16 / mg groups, and for input
/// channel ci of a group each lane takes its own group's channel from the (one or two) registers of the
/// block's input channels by a permute. The per-group product would fill only mg of 16 lanes.
/// out[p, o] = act(Σ_{taps inside, ci} w[tap][ci][o] · x[window, (o / mg)·cg + ci] + bias[o]).
pub struct FGroupNhwc<'a> {
    pub isa: Isa,
    /// g.c = all input channels.
    pub g: DwGeom,
    pub x: *const f32,
    pub m: usize,
    /// Output channels per group (divides 16); cg = g.c·mg / m input channels per group, at most 2·mg.
    pub mg: usize,
    /// [kh·kw][cg][m].
    pub w: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub act: Option<Act>,
    pub out: *mut f32,
}

// SAFETY: tasks read x and w and write disjoint output rows.
unsafe impl Sync for FGroupNhwc<'_> {}

impl FGroupNhwc<'_> {
    /// Whether the kernel takes groups of mg output and cg input channels: mg divides 16 and a block's
    /// input channels fit two registers.
    pub fn fits(mg: usize, cg: usize) -> bool {
        mg > 0 && 16 % mg == 0 && mg < 16 && (16 / mg) * cg <= 32
    }

    fn cg(&self) -> usize {
        self.g.c * self.mg / self.m
    }
}

impl RowKernel for FGroupNhwc<'_> {
    fn shape(&self) -> RowShape {
        RowShape { n: self.g.n, oh: self.g.oh, image_bytes: self.g.h * self.g.w * self.g.c * 4, row_bytes: self.g.ow * self.m * 4 }
    }
    fn input(&self) -> *const u8 {
        self.x as *const u8
    }
    fn output(&self) -> *mut u8 {
        self.out as *mut u8
    }

    /// Requires `fits(mg, cg)` and mg dividing m; w holds kh·kw·cg·m weights.
    unsafe fn row(&self, x: *const u8, out: *mut u8, oy: usize) {
        let (x, out) = (x as *const f32, out as *mut f32);
        let g = &self.g;
        let cg = self.cg();
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni {
            // Lane o of a block reads the block's input channel (o / mg)·cg + ci, for each ci (cg ≤ 16
            // by `fits`); per row, since the kernel is decoded per call: 16 divisions, then adds.
            let first: [i32; 16] = std::array::from_fn(|o| ((o / self.mg) * cg) as i32);
            let mut idx = [[0i32; 16]; 16];
            for (ci, v) in idx.iter_mut().enumerate().take(cg) {
                *v = first.map(|f| f + ci as i32);
            }
            // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen; the trait's contract.
            unsafe { avx512::group_row(self, &idx[..cg], x, out, oy) };
            return;
        }
        let (ky0, ky1) = inside(oy, g.stride[0], g.dil[0], g.pad[0], g.h, g.kh);
        for ox in 0..g.ow {
            let (kx0, kx1) = inside(ox, g.stride[1], g.dil[1], g.pad[1], g.w, g.kw);
            for o in 0..self.m {
                let mut s = self.bias.map_or(0.0, |b| b[o]);
                for ky in ky0..ky1 {
                    for kx in kx0..kx1 {
                        let (iy, ix) = (oy * g.stride[0] + ky * g.dil[0] - g.pad[0], ox * g.stride[1] + kx * g.dil[1] - g.pad[1]);
                        for ci in 0..cg {
                            // SAFETY: (iy, ix) is inside the image; the channel is below g.c.
                            let v = unsafe { *x.add((iy * g.w + ix) * g.c + (o / self.mg) * cg + ci) };
                            s += self.w[((ky * g.kw + kx) * cg + ci) * self.m + o] * v;
                        }
                    }
                }
                // SAFETY: (ox, o) is inside the output row.
                unsafe { *out.add(ox * self.m + o) = self.act.map_or(s, |f| f.apply(s)) };
            }
        }
    }
}

/// Average pooling of NHWC images (end pads pe; with `include_pad` the divisor counts the padding taps
/// as nn::avg_pool_taps says). A row kernel: x holds g.n·g.h·g.w·g.c floats, out g.n·g.oh·g.ow·g.c.
/// Over planes (NCHW) it runs on one-channel images (fpool::planes): the interpreter's sum order either way.
pub struct FAvgPool {
    pub x: *const f32,
    pub g: DwGeom,
    pub include_pad: bool,
    /// g.avg_pool_taps for the end pads.
    pub taps: PoolTaps,
    pub out: *mut f32,
}

// SAFETY: rows read x and write disjoint rows of out.
unsafe impl Sync for FAvgPool {}

impl RowKernel for FAvgPool {
    fn shape(&self) -> RowShape {
        RowShape::of(&self.g, 4, 4)
    }
    fn input(&self) -> *const u8 {
        self.x as *const u8
    }
    fn output(&self) -> *mut u8 {
        self.out as *mut u8
    }

    unsafe fn row(&self, x: *const u8, out: *mut u8, oy: usize) {
        let (g, (rows, cols)) = (&self.g, &self.taps);
        let (ry, py) = &rows[oy];
        // SAFETY: the trait's contract: one input image and one output row.
        let (src, dst) = unsafe {
            (std::slice::from_raw_parts(x as *const f32, g.h * g.w * g.c), std::slice::from_raw_parts_mut(out as *mut f32, g.ow * g.c))
        };
        for (ox, (cx, px)) in cols.iter().enumerate() {
            let acc = &mut dst[ox * g.c..(ox + 1) * g.c];
            acc.fill(0.0);
            for iy in ry {
                for ix in cx {
                    for (a, v) in acc.iter_mut().zip(&src[(iy * g.w + ix) * g.c..]) {
                        *a += v;
                    }
                }
            }
            let count = if self.include_pad { py * px } else { ry.len() * cx.len() };
            for a in acc.iter_mut() {
                *a = if count > 0 { *a / count as f32 } else { 0.0 };
            }
        }
    }
}

/// out[n, c] = mean over the pixels of x[n, :, :, c] (NHWC, `pixels` per image).
///
/// # Safety
/// x must hold n·pixels·c floats, out n·c.
pub unsafe fn gap(x: *const f32, n: usize, pixels: usize, c: usize, out: *mut f32) {
    for img in 0..n {
        // SAFETY: the caller's bounds.
        let (src, dst) = unsafe {
            (std::slice::from_raw_parts(x.add(img * pixels * c), pixels * c), std::slice::from_raw_parts_mut(out.add(img * c), c))
        };
        for (ch, d) in dst.iter_mut().enumerate() {
            *d = super::float::pool_sum(pixels, |p| src[p * c + ch]) / pixels as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{clamp_bounds, inside, panel_width, FConvNhwc, FDwNhwc, FGroupNhwc, Part, Prefetch, NB, R};
    use crate::kernels::fgemm::lanes;
    use qcc_ir::Act;
    use std::arch::x86_64::*;

    /// Bias (or residual) added, activation applied: the epilogue of 16 channels.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn finish(v: __m512, act: Option<Act>) -> __m512 {
        match (clamp_bounds(act), act) {
            // Bound first: a NaN comes through (vmaxps/vminps return the second operand).
            (Some((lo, hi)), _) => _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), v)),
            (None, Some(f)) => {
                let mut tmp = [0f32; 16];
                // SAFETY: tmp holds 16 floats.
                unsafe { _mm512_storeu_ps(tmp.as_mut_ptr(), v) };
                for t in tmp.iter_mut() {
                    *t = f.apply(*t);
                }
                // SAFETY: as above.
                unsafe { _mm512_loadu_ps(tmp.as_ptr()) }
            }
            (None, None) => v,
        }
    }

    /// FConvNhwc::tile with V registers (16·V channels) per pixel.
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile<const V: usize>(
        f: &FConvNhwc,
        j: usize,
        ptrs: &[[*const f32; R]],
        seg: usize,
        part: Part,
        p0: usize,
        n: usize,
        pf: Prefetch,
    ) {
        let cin = seg;
        let k = ptrs.len() * cin;
        let width = panel_width(f.m, j);
        debug_assert_eq!(width, 16 * V);
        // SAFETY: panel j holds k rows of `width` floats; every pointer holds cin floats (the caller's
        // bounds); the stored channels are masked to those below m.
        unsafe {
            let mut wp = f.w.as_ptr().add(j * part.kfull * NB + part.k0 * width);
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            let mask: [u16; V] = std::array::from_fn(|v| lanes(0, f.m.saturating_sub(j * NB + 16 * v)));
            if !part.first {
                // The partial sums of the earlier parts (rows past n read pixel n − 1's, never stored).
                for (r, a) in acc.iter_mut().enumerate() {
                    let at = (p0 + r.min(n - 1)) * f.ldo + j * NB;
                    for (v, a) in a.iter_mut().enumerate() {
                        *a = _mm512_maskz_loadu_ps(mask[v], f.out.add(at + 16 * v));
                    }
                }
            }
            // pf.lines prefetches spread evenly over the k steps (a Bresenham count: no division).
            let (mut due, mut pp) = (0usize, f.w.as_ptr().wrapping_add(pf.at));
            for tp in ptrs {
                for c in 0..cin {
                    due += pf.lines;
                    if due >= k {
                        due -= k;
                        _mm_prefetch::<_MM_HINT_T1>(pp as *const i8);
                        pp = pp.wrapping_add(16);
                    }
                    let mut wv = [_mm512_setzero_ps(); V];
                    for (v, w) in wv.iter_mut().enumerate() {
                        *w = _mm512_loadu_ps(wp.add(16 * v));
                    }
                    wp = wp.add(width);
                    for (r, a) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*tp[r].add(c));
                        for (a, w) in a.iter_mut().zip(&wv) {
                            *a = _mm512_fmadd_ps(x, *w, *a);
                        }
                    }
                }
            }
            if !part.last {
                for (r, a) in acc.iter().enumerate() {
                    if r < n {
                        let at = (p0 + r) * f.ldo + j * NB;
                        for (v, a) in a.iter().enumerate() {
                            _mm512_mask_storeu_ps(f.out.add(at + 16 * v), mask[v], *a);
                        }
                    }
                }
                return;
            }
            // A whole tile with a clamp (or no) activation is finished in the registers and stored.
            let act = match (clamp_bounds(f.act), f.act) {
                (Some(b), _) => Some(b),
                (None, None) => Some((f32::NEG_INFINITY, f32::INFINITY)),
                (None, Some(_)) => None,
            };
            if let (true, true, 1, Some((lo, hi))) = (n == R, j * NB + 16 * V <= f.m, f.cso, act) {
                let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
                let bias: [__m512; V] =
                    std::array::from_fn(|v| f.bias.map_or(_mm512_setzero_ps(), |b| _mm512_loadu_ps(b.as_ptr().add(j * NB + 16 * v))));
                for (r, a) in acc.iter().enumerate() {
                    let at = (p0 + r) * f.ldo + j * NB;
                    for (v, a) in a.iter().enumerate() {
                        let mut y = _mm512_add_ps(*a, bias[v]);
                        if let Some(res) = f.res {
                            y = _mm512_add_ps(y, _mm512_loadu_ps(res.add(at + 16 * v)));
                        }
                        // Bound first: a NaN comes through (vmaxps/vminps return the second operand).
                        _mm512_storeu_ps(f.out.add(at + 16 * v), _mm512_min_ps(hi, _mm512_max_ps(lo, y)));
                    }
                }
                return;
            }
            // The sums leave the registers through one block of stores: the epilogue's loops (dynamic
            // lengths, calls) would otherwise make LLVM keep the accumulators in memory, also in the k loop.
            let mut sums = [0f32; 16 * 4 * R];
            for (r, a) in acc.iter().enumerate() {
                for (v, a) in a.iter().enumerate() {
                    _mm512_storeu_ps(sums.as_mut_ptr().add(16 * (r * V + v)), *a);
                }
            }
            if f.cso != 1 {
                for r in 0..n {
                    for o in 0..(f.m - j * NB).min(16 * V) {
                        let at = (p0 + r) * f.ldo + (j * NB + o) * f.cso;
                        let v = sums[16 * r * V + o] + f.bias.map_or(0.0, |b| b[j * NB + o]) + f.res.map_or(0.0, |res| *res.add(at));
                        *f.out.add(at) = f.act.map_or(v, |a| a.apply(v));
                    }
                }
                return;
            }
            for r in 0..n {
                let q = p0 + r;
                for v in 0..V {
                    let ch = j * NB + 16 * v;
                    if ch >= f.m {
                        break;
                    }
                    let mask = lanes(0, f.m - ch);
                    let mut y = _mm512_loadu_ps(sums.as_ptr().add(16 * (r * V + v)));
                    if let Some(b) = f.bias {
                        y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, b.as_ptr().add(ch)));
                    }
                    if let Some(res) = f.res {
                        y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, res.add(q * f.ldo + ch)));
                    }
                    _mm512_mask_storeu_ps(f.out.add(q * f.ldo + ch), mask, finish(y, f.act));
                }
            }
        }
    }

    /// FDwNhwc for output row oy of the image at x into the row at out, in blocks of 64 channels (four
    /// registers; the last block as many registers as it needs).
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    pub unsafe fn dw_row(d: &FDwNhwc, x: *const f32, out: *mut f32, oy: usize) {
        let mut c0 = 0;
        while c0 < d.g.c {
            // SAFETY: the caller's bounds; block c0 holds at least one channel.
            unsafe {
                match (d.g.c - c0).div_ceil(16).min(4) {
                    4 => dw_block::<4>(d, x, out, oy, c0),
                    3 => dw_block::<3>(d, x, out, oy, c0),
                    2 => dw_block::<2>(d, x, out, oy, c0),
                    _ => dw_block::<1>(d, x, out, oy, c0),
                }
            }
            c0 += 64;
        }
    }

    /// Channels c0..c0 + 16·V (masked to c) of output row oy of the image at x into the row at out.
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    unsafe fn dw_block<const V: usize>(d: &FDwNhwc, x: *const f32, out: *mut f32, oy: usize, c0: usize) {
        let g = &d.g;
        let c = g.c;
        let (ky0, ky1) = inside(oy, g.stride[0], g.dil[0], g.pad[0], g.h, g.kh);
        let mask: [u16; V] = std::array::from_fn(|v| lanes(0, (c - c0).saturating_sub(16 * v)));
        // SAFETY: every address below is a pixel inside the image (taps limited by `inside`) or inside
        // the output row; channel lanes are masked to those below c.
        unsafe {
            let init: [__m512; V] = match (d.max, d.bias) {
                (true, _) => [_mm512_set1_ps(f32::NEG_INFINITY); V],
                (false, Some(b)) => std::array::from_fn(|v| _mm512_maskz_loadu_ps(mask[v], b.as_ptr().add(c0 + 16 * v))),
                (false, None) => [_mm512_setzero_ps(); V],
            };
            let (x, out) = (x.add(c0), out.add(c0));
            for ox in 0..g.ow {
                let (kx0, kx1) = inside(ox, g.stride[1], g.dil[1], g.pad[1], g.w, g.kw);
                let mut acc = init;
                for ky in ky0..ky1 {
                    let iy = oy * g.stride[0] + ky * g.dil[0] - g.pad[0];
                    for kx in kx0..kx1 {
                        let ix = ox * g.stride[1] + kx * g.dil[1] - g.pad[1];
                        let xp = x.add((iy * g.w + ix) * c);
                        if d.max {
                            for (v, a) in acc.iter_mut().enumerate() {
                                *a = _mm512_max_ps(*a, _mm512_mask_loadu_ps(*a, mask[v], xp.add(16 * v)));
                            }
                        } else {
                            let wp = d.w.as_ptr().add((ky * g.kw + kx) * c + c0);
                            for (v, a) in acc.iter_mut().enumerate() {
                                let xv = _mm512_maskz_loadu_ps(mask[v], xp.add(16 * v));
                                *a = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(mask[v], wp.add(16 * v)), *a);
                            }
                        }
                    }
                }
                for (v, a) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(out.add(ox * c + 16 * v), mask[v], finish(*a, d.act));
                }
            }
        }
    }

    /// FGroupNhwc for output row oy of the image at x into the row at out, 16 output channels at a time.
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    pub unsafe fn group_row(d: &FGroupNhwc, idx: &[[i32; 16]], x: *const f32, out: *mut f32, oy: usize) {
        let mut o0 = 0;
        while o0 < d.m {
            // SAFETY: the caller's bounds. ResNeXt's groups (4 and 8 input channels) get their permute
            // loop unrolled with the indices in registers.
            unsafe {
                match idx.len() {
                    4 => group_block::<4>(d, idx, x, out, oy, o0),
                    8 => group_block::<8>(d, idx, x, out, oy, o0),
                    _ => group_block::<0>(d, idx, x, out, oy, o0),
                }
            }
            o0 += 16;
        }
    }

    /// Output channels o0..o0 + 16 (masked to m) of row oy of the image at x into the row at out; CG input channels per group
    /// (0: as many as idx has).
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    unsafe fn group_block<const CG: usize>(d: &FGroupNhwc, idx: &[[i32; 16]], x: *const f32, out: *mut f32, oy: usize, o0: usize) {
        let g = &d.g;
        let (c, m, mg) = (g.c, d.m, d.mg);
        let cg = if CG > 0 { CG } else { idx.len() };
        let (ky0, ky1) = inside(oy, g.stride[0], g.dil[0], g.pad[0], g.h, g.kh);
        let omask = lanes(0, m - o0);
        // The input channels of the block's groups: `need` of them from (o0 / mg)·cg.
        let need = (m - o0).min(16).div_ceil(mg) * cg;
        let (ma, mb) = (lanes(0, need), lanes(0, need.saturating_sub(16)));
        // SAFETY: every address below is a pixel inside the image (taps limited by `inside`), the block's
        // input channels (masked to those its groups have) or inside the output row (masked to m).
        unsafe {
            // At most 16 index vectors (cg ≤ 2·mg ≤ 16, `fits`): on the stack, not a heap vector per call.
            let mut iv = [_mm512_setzero_si512(); 16];
            for (v, i) in iv.iter_mut().zip(idx) {
                *v = _mm512_loadu_si512(i.as_ptr() as *const _);
            }
            let bias = d.bias.map_or(_mm512_setzero_ps(), |b| _mm512_maskz_loadu_ps(omask, b.as_ptr().add(o0)));
            let x = x.add((o0 / mg) * cg);
            let out = out.add(o0);
            for ox in 0..g.ow {
                let (kx0, kx1) = inside(ox, g.stride[1], g.dil[1], g.pad[1], g.w, g.kw);
                let mut acc = bias;
                for ky in ky0..ky1 {
                    let iy = oy * g.stride[0] + ky * g.dil[0] - g.pad[0];
                    for kx in kx0..kx1 {
                        let ix = ox * g.stride[1] + kx * g.dil[1] - g.pad[1];
                        let xp = x.add((iy * g.w + ix) * c);
                        let xa = _mm512_maskz_loadu_ps(ma, xp);
                        let xb = _mm512_maskz_loadu_ps(mb, xp.wrapping_add(16));
                        let wp = d.w.as_ptr().add((ky * g.kw + kx) * cg * m + o0);
                        for (ci, &i) in iv[..cg].iter().enumerate() {
                            let xv = _mm512_permutex2var_ps(xa, i, xb);
                            acc = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(omask, wp.add(ci * m)), acc);
                        }
                    }
                }
                _mm512_mask_storeu_ps(out.add(ox * m), omask, finish(acc, d.act));
            }
        }
    }
}
