//! u8 x i8 matrix product with the requantizing epilogue fused:
//! out[m, n] = requant(Σ_k a[m, k] · b[k, n] + bias[n] − zw[n] · Σ_k a[m, k]). The activation zero point is folded into `bias` at compile time
//! (the term zx · Σ_k b[k, n]), so the loop multiplies raw bytes. i32 accumulation wraps, which is exact
//! here: the compiler only selects this kernel when the true accumulator provably fits in i32 (ring
//! arithmetic modulo 2^32 then gives the true value).
use super::dwconv::DwGeom;
use super::epilogue::{saturate, Epilogue};
use super::{multiversion, pool, Isa};
use std::mem::MaybeUninit;

/// Columns per block of packed weights (one zmm of i32 lanes).
pub const NBLK: usize = 16;
/// Columns per task panel.
pub const PANEL: usize = 64;
/// Rows per task, at most.
const ROWS: usize = 48;
/// Rows per micro-tile.
pub const MR: usize = 4;
/// Pointers a micro-tile row may read through (taps of a convolution window).
pub const MAX_SEGS: usize = 64;

/// How a product is cut into tasks: `row_blocks` blocks of `block` rows (the last may be shorter) times
/// `panels` panels of PANEL columns; task t is row block t / panels, panel t % panels. Gemm::run and the
/// loop nests codegen generates both follow it. Row blocks outermost, so that a thread's contiguous share
/// of the tasks (pool.rs) is whole rows: threads sharing a row's panels would write the same cache
/// lines wherever a row's bytes are not a multiple of 64 (MobileNetV2's 16 → 96 expansion scaled 1.13×
/// from one thread to two that way), and the next layer reads the rows a thread wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub block: usize,
    pub row_blocks: usize,
    pub panels: usize,
}

impl Split {
    pub fn new(m: usize, n: usize) -> Split {
        let (_, np) = packed_dims(1, n);
        // Equal row blocks of at most ROWS rows (a multiple of the micro-tile), so the last block is not a
        // sliver that leaves a thread idle on small layers.
        let row_blocks = m.div_ceil(ROWS).max(1);
        let block = (m.div_ceil(row_blocks).div_ceil(MR) * MR).max(MR);
        Split { block, row_blocks: m.div_ceil(block), panels: np.div_ceil(PANEL) }
    }

    pub fn tasks(&self) -> usize {
        self.row_blocks * self.panels
    }
}

/// Packed sizes: K rounded up to 4, N to 16.
pub fn packed_dims(k: usize, n: usize) -> (usize, usize) {
    (k.div_ceil(4) * 4, n.div_ceil(NBLK) * NBLK)
}

/// Packs b (K x N, element (k, n) given by `at`) for `isa`: AVX-512 VNNI and AVX2 take blocks of 16
/// columns, each [K/4][16][4] (four consecutive k of a column are one vpdpbusd lane, or two vpmaddwd
/// pairs); the portable kernel takes K rows of N. Padding is zero, so over-read activation bytes
/// multiply by 0.
pub fn pack_b(isa: Isa, k: usize, n: usize, at: impl Fn(usize, usize) -> i8) -> Vec<i8> {
    let (kp, np) = packed_dims(k, n);
    let mut out = vec![0i8; kp * np];
    let get = |kk: usize, nn: usize| if kk < k && nn < n { at(kk, nn) } else { 0 };
    match isa {
        Isa::Avx512Vnni | Isa::Avx2 => {
            for blk in 0..np / NBLK {
                for g in 0..kp / 4 {
                    for j in 0..NBLK {
                        for t in 0..4 {
                            out[blk * kp * NBLK + g * 64 + j * 4 + t] = get(g * 4 + t, blk * NBLK + j);
                        }
                    }
                }
            }
        }
        Isa::Scalar => {
            for kk in 0..kp {
                for nn in 0..np {
                    out[kk * np + nn] = get(kk, nn);
                }
            }
        }
    }
    out
}

/// One GEMM call. `a` rows are `lda` bytes apart and readable for kp bytes (the arena has slack);
/// `xor` flips the sign bit of every a byte (i8 activations seen as u8 = i8 + 128).
pub struct Gemm<'a> {
    pub isa: Isa,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a: *const u8,
    /// Bytes between rows of `a`; with `conv`, between pixels of the input (its channel count, more than
    /// the window's cin for one group of a grouped convolution; equal to it with `conv_rows`).
    pub lda: usize,
    pub xor: bool,
    pub b: &'a [i8],
    /// Per column (np entries): bias with every constant zero-point term folded in.
    pub bias: &'a [i32],
    /// Per column weight zero points, when any is non-zero (then row sums of a are needed).
    pub zw: Option<&'a [i32]>,
    /// Per column saturation signs (see epilogue::saturate), when any column can saturate.
    pub sat: Option<&'a [i32]>,
    pub epi: Epilogue<'a>,
    pub out: *mut u8,
    pub ldo: usize,
    /// Implicit im2col (VNNI and AVX2): row r of `a` is the convolution window of output pixel r, read
    /// straight from the NHWC input `a` (K = taps × cin, cin a multiple of 4, so no group of 4 k
    /// straddles two taps); taps outside the image read `pad` (cin bytes of the zero point).
    pub conv: Option<(DwGeom, *const u8)>,
    /// With `conv`: the segments read from one pointer are kernel rows (kw·c bytes, padded to a multiple
    /// of 4 with bytes that meet zero weights) instead of taps, for inputs whose channels are not a
    /// multiple of 4 (RGB); windows crossing the left or right edge are assembled in a scratch row, and
    /// `pad` covers a whole row segment.
    pub conv_rows: bool,
}

/// Kernel rows a row-segment convolution may have (one scratch row each per micro-tile row).
pub const ROW_SEGS: usize = 16;
/// A scratch row for a window crossing the image's edge.
pub type EdgeRows = [MaybeUninit<[u8; 64]>; ROW_SEGS];

// SAFETY: the raw pointers address the arena; tasks write disjoint tiles of `out` and only read `a`.
unsafe impl Sync for Gemm<'_> {}

impl Gemm<'_> {
    /// Runs the product on the thread pool: the Rust form of the loop nest codegen generates in Cranelift
    /// (codegen/src/nest.rs) around the same micro-tiles and strips; the kernel tests drive them through it.
    ///
    /// # Safety
    /// `a` must be readable for (m-1)·lda + kp bytes and
    /// `out` writable for (m-1)·ldo + n bytes, not overlapping `a`.
    pub unsafe fn run(&self) {
        let split = Split::new(self.m, self.n);
        pool::parallel_for(split.tasks(), &|t| {
            let (rb, p) = (t / split.panels, t % split.panels);
            let (r0, c0) = (rb * split.block, p * PANEL);
            let rows = split.block.min(self.m - r0);
            let cols = PANEL.min(self.n - c0.min(self.n));
            if cols == 0 {
                return;
            }
            if self.conv.is_none() {
                // As the generated nest does: a plain GEMM's task is one strip.
                // SAFETY: rows r0..r0 + rows and columns c0..c0 + cols lie inside run()'s bounds.
                unsafe { self.strip(r0, r0 + rows, c0, cols) };
                return;
            }
            let mut ptrs = [MaybeUninit::<*const u8>::uninit(); MR * MAX_SEGS];
            let mut edge = [[MaybeUninit::uninit(); ROW_SEGS]; MR];
            let (segs, _) = self.segments();
            let mut r = r0;
            while r < r0 + rows {
                let mr = MR.min(r0 + rows - r);
                // SAFETY: rows r..r + mr and columns c0..c0 + cols lie inside the bounds run()'s caller
                // guarantees; the table has MR rows of MAX_SEGS ≥ segs entries.
                unsafe {
                    for i in 0..mr {
                        self.row_ptrs(r + i, ptrs[i * segs..].as_mut_ptr() as *mut *const u8, &mut edge[i]);
                    }
                    self.micro_tile(ptrs.as_ptr() as *const *const u8, r, mr, c0, cols);
                }
                r += mr;
            }
        });
    }

    /// How a row's K bytes are read: (pointers per row, k-groups of 4 bytes read from each). One pointer
    /// for a plain GEMM; for an implicit convolution, one per tap (cin bytes), or with `conv_rows` one
    /// per kernel row (kw·cin bytes padded to a multiple of 4).
    pub fn segments(&self) -> (usize, usize) {
        match self.conv {
            Some((g, _)) if self.conv_rows => (g.kh, (g.kw * g.c).div_ceil(4)),
            Some((g, _)) => (g.kh * g.kw, g.c / 4),
            None => (1, packed_dims(self.k, self.n).0 / 4),
        }
    }

    /// Writes the `segments()` pointers of row r to `out`; a convolution window crossing the image's edge
    /// with `conv_rows` is assembled in `edge`, which must outlive the micro-tile reading it.
    ///
    /// # Safety
    /// r < m; `out` is writable for segments() pointers.
    pub unsafe fn row_ptrs(&self, r: usize, out: *mut *const u8, edge: &mut EdgeRows) {
        let (segs, _) = self.segments();
        // SAFETY: the caller's contract; MaybeUninit<*const u8> has the layout of *const u8.
        let out = unsafe { std::slice::from_raw_parts_mut(out as *mut MaybeUninit<*const u8>, segs) };
        if self.conv.is_some() {
            // SAFETY: r < m, so the pixel is inside the output.
            unsafe { self.tap_ptrs(self.pixel(r), out, edge) };
        } else {
            out[0].write(self.a.wrapping_add(r * self.lda));
        }
    }

    /// One micro-tile: rows r..r + mr (mr ≤ MR) by columns c0..c0 + cols (c0 a multiple of PANEL, cols ≤
    /// PANEL), with the epilogue. Row i reads its segments through `ptrs[i · segs ..]` (see row_ptrs; the
    /// portable kernel, plain GEMMs only, reads rows of `a` itself).
    ///
    /// # Safety
    /// The tile lies inside what run()'s caller guarantees; the pointers address what row_ptrs would.
    pub unsafe fn micro_tile(&self, ptrs: *const *const u8, r: usize, mr: usize, c0: usize, cols: usize) {
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni {
            // SAFETY: Isa::Avx512Vnni is only chosen when the CPU has it; the caller's contract.
            unsafe { vnni::tile(self, ptrs, r, mr, c0, cols) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx2 {
            // SAFETY: Isa::Avx2 is only chosen when the CPU has AVX2 and FMA; the caller's contract.
            unsafe { super::gemm_avx2::tile(self, ptrs, r, mr, c0, cols) };
            return;
        }
        let _ = ptrs;
        // SAFETY: the caller's contract (a plain GEMM: windows are read in place with AVX2 or VNNI only).
        unsafe { self.tile_portable(r, mr, c0, cols) }
    }

    /// The micro-tiles of rows r0..rend (in 4-row tiles from r0) by the panel's columns c0..c0 + cols, of
    /// a plain GEMM (no convolution window: row r is at a + r·lda): one call per task and panel instead
    /// of one per tile, with the tile shape chosen once.
    ///
    /// # Safety
    /// As micro_tile's for every tile; `conv` is None.
    pub unsafe fn strip(&self, r0: usize, rend: usize, c0: usize, cols: usize) {
        debug_assert!(self.conv.is_none());
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni {
            // SAFETY: Isa::Avx512Vnni is only chosen when the CPU has it; the caller's contract.
            unsafe { vnni::strip(self, r0, rend, c0, cols) };
            return;
        }
        let mut r = r0;
        while r < rend {
            let mr = MR.min(rend - r);
            let ptrs: [*const u8; MR] = std::array::from_fn(|i| self.a.wrapping_add((r + i) * self.lda));
            // SAFETY: the caller's contract; a plain GEMM's row pointers are its rows.
            unsafe { self.micro_tile(ptrs.as_ptr(), r, mr, c0, cols) };
            r += mr;
        }
    }

    /// Σ_k a[r, k] (as u8 after the optional xor), for the weight zero-point term.
    pub(crate) unsafe fn row_sum(&self, r: usize) -> i32 {
        let x = if self.xor { 0x80u8 } else { 0 };
        if let Some((g, _)) = self.conv {
            let (mut taps, mut edge) = ([MaybeUninit::uninit(); 64], [MaybeUninit::uninit(); ROW_SEGS]);
            let (segs, len) = if self.conv_rows { (g.kh, g.kw * g.c) } else { (g.kh * g.kw, g.c) };
            // SAFETY: tap_ptrs set the first `segs` entries, each addressing `len` bytes (run()'s contract).
            return unsafe {
                self.tap_ptrs(self.pixel(r), &mut taps[..], &mut edge);
                taps[..segs]
                    .iter()
                    .map(|p| std::slice::from_raw_parts(p.assume_init(), len).iter().map(|v| (v ^ x) as i32).sum::<i32>())
                    .sum()
            };
        }
        // SAFETY: row r is inside a (run()'s contract).
        let row = unsafe { std::slice::from_raw_parts(self.a.add(r * self.lda), self.k) };
        row.iter().map(|v| (v ^ x) as i32).sum()
    }

    /// Image, output row and column of GEMM row r of an implicit convolution.
    #[inline(always)]
    fn pixel(&self, r: usize) -> (usize, usize, usize) {
        let Some((g, _)) = self.conv else { return (0, 0, 0) };
        let (b, p) = (r / (g.oh * g.ow), r % (g.oh * g.ow));
        (b, p / g.ow, p % g.ow)
    }

    /// For implicit convolutions: the address of each tap's cin bytes for output pixel r, in the first
    /// kh·kw entries of `out` (left uninitialised by callers: zeroing 64 per micro-tile cost a memset);
    /// with `conv_rows`, of each kernel row's segment in the first kh, edge windows built in `edge`.
    #[inline(always)]
    unsafe fn tap_ptrs(&self, (b, oy, ox): (usize, usize, usize), out: &mut [MaybeUninit<*const u8>], edge: &mut EdgeRows) {
        let Some((g, pad)) = self.conv else { return };
        if self.conv_rows {
            let (ix0, len) = ((ox * g.stride[1]) as isize - g.pad[1] as isize, g.kw * g.c);
            for ky in 0..g.kh {
                let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
                // Dereferenced only when the row is inside the image.
                let row = self.a.wrapping_add((b * g.h + iy.max(0) as usize) * g.w * self.lda);
                out[ky].write(if iy < 0 || iy >= g.h as isize {
                    pad
                } else if ix0 >= 0 && ix0 as usize + g.kw <= g.w {
                    // SAFETY: columns ix0..ix0 + kw of row iy are inside the image.
                    unsafe { row.add(ix0 as usize * self.lda) }
                } else {
                    let e = edge[ky].as_mut_ptr() as *mut u8;
                    for kx in 0..g.kw {
                        let ix = ix0 + kx as isize;
                        for ch in 0..g.c {
                            // SAFETY: e has 64 bytes ≥ the padded segment; taps inside read the row.
                            unsafe {
                                *e.add(kx * g.c + ch) =
                                    if ix < 0 || ix >= g.w as isize { *pad.add(ch) } else { *row.add(ix as usize * self.lda + ch) };
                            }
                        }
                    }
                    // The padding up to a multiple of 4 meets zero weights; it only needs to be defined.
                    for j in len..len.div_ceil(4) * 4 {
                        // SAFETY: j < 64 (kw·c ≤ 64, the compiler's condition for row segments).
                        unsafe { *e.add(j) = 0 };
                    }
                    e
                });
            }
            return;
        }
        for ky in 0..g.kh {
            let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
            for kx in 0..g.kw {
                let ix = (ox * g.stride[1] + kx * g.dil[1]) as isize - g.pad[1] as isize;
                out[ky * g.kw + kx].write(if iy < 0 || iy >= g.h as isize || ix < 0 || ix >= g.w as isize {
                    pad
                } else {
                    // SAFETY: inside the input image.
                    unsafe { self.a.add(((b * g.h + iy as usize) * g.w + ix as usize) * self.lda) }
                });
            }
        }
    }

    unsafe fn tile_portable(&self, r0: usize, rows: usize, c0: usize, cols: usize) {
        let (kp, np) = packed_dims(self.k, self.n);
        // A micro-tile has at most PANEL columns: its rows fit on the stack (no allocation per tile).
        let width = cols.div_ceil(NBLK) * NBLK;
        let (mut acc_buf, mut bytes_buf) = ([0i32; PANEL], [0u8; PANEL]);
        let (acc, bytes) = (&mut acc_buf[..width], &mut bytes_buf[..width]);
        for r in r0..r0 + rows {
            // SAFETY: row r is inside a.
            let arow = unsafe { std::slice::from_raw_parts(self.a.add(r * self.lda), kp) };
            let rs = if self.zw.is_some() { unsafe { self.row_sum(r) } } else { 0 };
            multiversion!(
                fn dot(acc: &mut [i32], arow: &[u8], b: &[i8], np: usize, c0: usize, xor: bool) {
                    acc.fill(0);
                    let w = acc.len();
                    let x = if xor { 0x80u8 } else { 0 };
                    for (kk, &av) in arow.iter().enumerate() {
                        let av = (av ^ x) as i32;
                        let brow = &b[kk * np + c0..kk * np + c0 + w];
                        for (o, &bv) in acc.iter_mut().zip(brow) {
                            *o = o.wrapping_add(av * bv as i32);
                        }
                    }
                }
            );
            dot(self.isa, acc, arow, self.b, np, c0, self.xor);
            for j in 0..width {
                let mut v = acc[j].wrapping_add(self.bias[c0 + j]);
                if let Some(zw) = self.zw {
                    v = v.wrapping_sub(zw[c0 + j].wrapping_mul(rs));
                }
                acc[j] = self.sat.map_or(v, |s| saturate(v, s[c0 + j]));
            }
            // SAFETY: a residual has the output's rows and columns (the compiler's layout).
            unsafe { self.epi.row_at(&acc[..cols], r, c0, &mut bytes[..cols]) };
            // SAFETY: the output row segment lies inside out.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.out.add(r * self.ldo + c0), cols) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use vnni::saturate16;

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // register tiles are indexed by (row, block) on purpose
mod vnni {
    use super::{packed_dims, saturate, Gemm, NBLK};
    use crate::kernels::elementwise::IntElem;
    use std::arch::x86_64::*;

    const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

    /// epilogue::saturate on 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn saturate16(v: __m512i, sat: __m512i) -> __m512i {
        let zero = _mm512_setzero_si512();
        let up = _mm512_cmpgt_epi32_mask(sat, zero) & _mm512_cmplt_epi32_mask(v, zero);
        let down = _mm512_cmplt_epi32_mask(sat, zero) & _mm512_cmpgt_epi32_mask(v, zero);
        let v = _mm512_mask_mov_epi32(v, up, _mm512_set1_epi32(i32::MAX));
        _mm512_mask_mov_epi32(v, down, _mm512_set1_epi32(i32::MIN))
    }

    /// Stores 64 consecutive scaled outputs `f` (f32(acc) · m, plus a residual's term) as their bytes:
    /// y = clamp(rne(f) + zy, qlo, qhi), as the scalar epilogue. Packing first and clamping bytes
    /// afterwards costs fewer vector operations than clamping each vector in f32, and is exact: only the
    /// upper f32 clamp is needed before conversion (a value below i32's range converts to i32::MIN, which
    /// the saturating packs keep below every bound), and the packs' saturation (i32 → i16, then i16 + zy
    /// → 8 bits) is monotonic with bounds far outside qlo..qhi.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub fn pack64(f: [__m512; 4], zy: i32, qlo: i32, qhi: i32) -> __m512i {
        let hi = _mm512_set1_ps((qhi - zy) as f32);
        let q: [__m512i; 4] = std::array::from_fn(|j| _mm512_cvt_roundps_epi32::<RNE>(_mm512_min_ps(f[j], hi)));
        let zy16 = _mm512_set1_epi16(zy as i16);
        let q01 = _mm512_adds_epi16(_mm512_packs_epi32(q[0], q[1]), zy16);
        let q23 = _mm512_adds_epi16(_mm512_packs_epi32(q[2], q[3]), zy16);
        // The packs interleave 128-bit lanes: dword 4L + k holds outputs 16k + 4L..; put them back in order.
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        if qlo < 0 {
            let b = _mm512_permutexvar_epi32(order, _mm512_packs_epi16(q01, q23));
            _mm512_min_epi8(_mm512_max_epi8(b, _mm512_set1_epi8(qlo as i8)), _mm512_set1_epi8(qhi as i8))
        } else {
            let b = _mm512_permutexvar_epi32(order, _mm512_packus_epi16(q01, q23));
            _mm512_min_epu8(_mm512_max_epu8(b, _mm512_set1_epi8(qlo as u8 as i8)), _mm512_set1_epi8(qhi as u8 as i8))
        }
    }

    /// One micro-tile of `mr` rows (Gemm::micro_tile), up to 4 column blocks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn tile(g: &Gemm, ptrs: *const *const u8, r: usize, mr: usize, c0: usize, cols: usize) {
        // SAFETY (all calls): forwarded contract; FLIP is a compile-time copy of g.xor.
        unsafe {
            if g.xor {
                tile_flip::<true>(g, ptrs, r, mr, c0, cols)
            } else {
                tile_flip::<false>(g, ptrs, r, mr, c0, cols)
            }
        }
    }

    /// Gemm::strip on VNNI: the column blocks and the xor decided once for all the rows' tiles.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn strip(g: &Gemm, r0: usize, rend: usize, c0: usize, cols: usize) {
        // SAFETY (all calls): forwarded contract.
        unsafe {
            match (cols.div_ceil(NBLK), g.xor) {
                (4, false) => strip_nb::<4, false>(g, r0, rend, c0, cols),
                (3, false) => strip_nb::<3, false>(g, r0, rend, c0, cols),
                (2, false) => strip_nb::<2, false>(g, r0, rend, c0, cols),
                (_, false) => strip_nb::<1, false>(g, r0, rend, c0, cols),
                (4, true) => strip_nb::<4, true>(g, r0, rend, c0, cols),
                (3, true) => strip_nb::<3, true>(g, r0, rend, c0, cols),
                (2, true) => strip_nb::<2, true>(g, r0, rend, c0, cols),
                (_, true) => strip_nb::<1, true>(g, r0, rend, c0, cols),
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn strip_nb<const NB: usize, const FLIP: bool>(g: &Gemm, r0: usize, rend: usize, c0: usize, cols: usize) {
        let row = |r: usize| g.a.wrapping_add(r * g.lda);
        let mut r = r0;
        // SAFETY (all calls): rows r..r + MR lie inside r0..rend, which the caller guarantees.
        unsafe {
            while r + 4 <= rend {
                let ptrs = [row(r), row(r + 1), row(r + 2), row(r + 3)];
                micro::<4, NB, FLIP>(g, ptrs.as_ptr(), r, c0, cols);
                r += 4;
            }
            let ptrs = [row(r), row(r + 1), row(r + 2)];
            match rend - r {
                3 => micro::<3, NB, FLIP>(g, ptrs.as_ptr(), r, c0, cols),
                2 => micro::<2, NB, FLIP>(g, ptrs.as_ptr(), r, c0, cols),
                1 => micro::<1, NB, FLIP>(g, ptrs.as_ptr(), r, c0, cols),
                _ => {}
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tile_flip<const FLIP: bool>(g: &Gemm, ptrs: *const *const u8, r: usize, mr: usize, c0: usize, cols: usize) {
        // SAFETY (all calls): rows and blocks stay inside the tile the caller handed out.
        unsafe {
            match (mr, cols.div_ceil(NBLK)) {
                (4, 4) => micro::<4, 4, FLIP>(g, ptrs, r, c0, cols),
                (4, 3) => micro::<4, 3, FLIP>(g, ptrs, r, c0, cols),
                (4, 2) => micro::<4, 2, FLIP>(g, ptrs, r, c0, cols),
                (4, 1) => micro::<4, 1, FLIP>(g, ptrs, r, c0, cols),
                (3, 4) => micro::<3, 4, FLIP>(g, ptrs, r, c0, cols),
                (3, 3) => micro::<3, 3, FLIP>(g, ptrs, r, c0, cols),
                (3, 2) => micro::<3, 2, FLIP>(g, ptrs, r, c0, cols),
                (3, 1) => micro::<3, 1, FLIP>(g, ptrs, r, c0, cols),
                (2, 4) => micro::<2, 4, FLIP>(g, ptrs, r, c0, cols),
                (2, 3) => micro::<2, 3, FLIP>(g, ptrs, r, c0, cols),
                (2, 2) => micro::<2, 2, FLIP>(g, ptrs, r, c0, cols),
                (2, 1) => micro::<2, 1, FLIP>(g, ptrs, r, c0, cols),
                (_, 4) => micro::<1, 4, FLIP>(g, ptrs, r, c0, cols),
                (_, 3) => micro::<1, 3, FLIP>(g, ptrs, r, c0, cols),
                (_, 2) => micro::<1, 2, FLIP>(g, ptrs, r, c0, cols),
                _ => micro::<1, 1, FLIP>(g, ptrs, r, c0, cols),
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn micro<const MR: usize, const NB: usize, const FLIP: bool>(
        g: &Gemm,
        ptrs: *const *const u8,
        r0: usize,
        c0: usize,
        cols: usize,
    ) {
        let (kp, _) = packed_dims(g.k, g.n);
        // SAFETY: bias has np entries, so every block of 16 from c0 is inside it.
        let bias: [__m512i; NB] = std::array::from_fn(|j| unsafe { _mm512_loadu_si512(g.bias.as_ptr().add(c0 + j * NBLK) as *const _) });
        // Accumulators start from the bias: one add fewer per 16 outputs in the epilogue.
        let mut acc = [bias; MR];
        let flip = _mm512_set1_epi32(if g.xor { 0x8080_8080u32 as i32 } else { 0 });
        let blk0 = c0 / NBLK;
        // SAFETY: every pointer below stays inside `a` rows r0..r0+MR (kp bytes each, the arena's
        // slack covers kp > k), the convolution's taps or pad (ptrs, as row_ptrs set them) and the packed
        // weight blocks blk0..blk0+NB.
        unsafe {
            let bbase = g.b.as_ptr().add(blk0 * kp * NBLK);
            // Each segment is a run of k-groups read from one pointer per row: the whole row for a plain
            // GEMM, one tap's cin bytes for an implicit convolution.
            let (segments, seg_groups) = g.segments();
            for seg in 0..segments {
                let arows: [*const u8; MR] = std::array::from_fn(|i| *ptrs.add(i * segments + seg));
                for sg in 0..seg_groups {
                    let kg = seg * seg_groups + sg;
                    let mut bv = [_mm512_setzero_si512(); NB];
                    for (j, b) in bv.iter_mut().enumerate() {
                        *b = _mm512_loadu_si512(bbase.add(j * kp * NBLK + kg * 64) as *const _);
                    }
                    for i in 0..MR {
                        let av = (arows[i].add(sg * 4) as *const i32).read_unaligned();
                        let av = if FLIP { _mm512_xor_si512(_mm512_set1_epi32(av), flip) } else { _mm512_set1_epi32(av) };
                        for j in 0..NB {
                            acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], av, bv[j]);
                        }
                    }
                }
            }
            if g.epi.float_act.is_some() {
                let mut tmp = [0i32; 64];
                let mut bytes = [0u8; 64];
                for i in 0..MR {
                    let r = r0 + i;
                    let rs = if g.zw.is_some() { g.row_sum(r) } else { 0 };
                    for j in 0..NB {
                        _mm512_storeu_si512(tmp.as_mut_ptr().add(j * NBLK) as *mut _, acc[i][j]);
                    }
                    for (j, t) in tmp[..NB * NBLK].iter_mut().enumerate() {
                        let mut v = *t;
                        if let Some(zw) = g.zw {
                            v = v.wrapping_sub(zw[c0 + j].wrapping_mul(rs));
                        }
                        *t = g.sat.map_or(v, |s| saturate(v, s[c0 + j]));
                    }
                    g.epi.row_at(&tmp[..cols], r, c0, &mut bytes[..cols]);
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), g.out.add(r * g.ldo + c0), cols);
                }
                return;
            }
            // One store per row: bytes past `cols` (blocks past NB, lanes past a partial block) are masked off.
            let keep: __mmask64 = if cols >= 64 { !0 } else { (1u64 << cols) - 1 };
            if g.zw.is_none() && g.sat.is_none() {
                epilogue::<MR, NB>(g, &acc, r0, c0, keep);
                return;
            }
            // The residual (8-bit storage only here: the compiler sends 16-bit ones elsewhere).
            let res = g.epi.residual.map(|r| (r, _mm512_set1_epi32(r.zp), _mm512_set1_ps(r.mult)));
            for i in 0..MR {
                let r = r0 + i;
                let rs = if g.zw.is_some() { Some(_mm512_set1_epi32(g.row_sum(r))) } else { None };
                // A loop, not array::from_fn: the closure would not be inlined into this kernel.
                let mut f = [_mm512_setzero_ps(); 4];
                for j in 0..NB {
                    let c = c0 + j * NBLK;
                    let mut v = acc[i][j];
                    if let (Some(rs), Some(zw)) = (rs, g.zw) {
                        v = _mm512_sub_epi32(v, _mm512_mullo_epi32(_mm512_loadu_si512(zw.as_ptr().add(c) as *const _), rs));
                    }
                    if let Some(sat) = g.sat {
                        v = saturate16(v, _mm512_loadu_si512(sat.as_ptr().add(c) as *const _));
                    }
                    let m = _mm512_loadu_ps(g.epi.mult.as_ptr().add(c));
                    f[j] = _mm512_mul_round_ps::<RNE>(_mm512_cvt_roundepi32_ps::<RNE>(v), m);
                    if let Some((rp, rz, rm)) = res {
                        let block = ((keep >> (j * NBLK)) & 0xffff) as __mmask16;
                        f[j] = add_residual(f[j], rp.ptr.add(r * rp.ld + c), block, rp.elem == IntElem::I8, rz, rm);
                    }
                }
                store_row::<NB>(g, f, r, c0, keep);
            }
        }
    }

    /// The common epilogue (no weight zero points, no saturation, no float activation): a function of
    /// its own, so that its constants do not crowd the k-loop's registers, and with no test inside its
    /// loops, so that they unroll.
    ///
    /// # Safety
    /// As micro's.
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn epilogue<const MR: usize, const NB: usize>(g: &Gemm, acc: &[[__m512i; NB]; MR], r0: usize, c0: usize, keep: __mmask64) {
        // SAFETY: the caller's contract.
        unsafe {
            let mut m = [_mm512_setzero_ps(); NB];
            for (j, mj) in m.iter_mut().enumerate() {
                *mj = _mm512_loadu_ps(g.epi.mult.as_ptr().add(c0 + j * NBLK));
            }
            match g.epi.residual {
                None => {
                    for i in 0..MR {
                        let mut f = [_mm512_setzero_ps(); 4];
                        for j in 0..NB {
                            f[j] = _mm512_mul_round_ps::<RNE>(_mm512_cvt_roundepi32_ps::<RNE>(acc[i][j]), m[j]);
                        }
                        store_row::<NB>(g, f, r0 + i, c0, keep);
                    }
                }
                Some(rp) => {
                    let (rz, rm, signed) = (_mm512_set1_epi32(rp.zp), _mm512_set1_ps(rp.mult), rp.elem == IntElem::I8);
                    for i in 0..MR {
                        let row = rp.ptr.add((r0 + i) * rp.ld + c0);
                        let mut f = [_mm512_setzero_ps(); 4];
                        for j in 0..NB {
                            let v = _mm512_mul_round_ps::<RNE>(_mm512_cvt_roundepi32_ps::<RNE>(acc[i][j]), m[j]);
                            f[j] = add_residual(v, row.add(j * NBLK), ((keep >> (j * NBLK)) & 0xffff) as __mmask16, signed, rz, rm);
                        }
                        store_row::<NB>(g, f, r0 + i, c0, keep);
                    }
                }
            }
        }
    }

    /// `f` plus the residual's term for 16 outputs: its bytes at `p` (lanes in `block`), (r − zr) · rm.
    /// r − zr is exact in f32; one product, then one sum, each rounded (as the interpreter).
    ///
    /// # Safety
    /// `p` is readable for the lanes in `block`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn add_residual(f: __m512, p: *const u8, block: __mmask16, signed: bool, rz: __m512i, rm: __m512) -> __m512 {
        // SAFETY: the caller's contract.
        let bytes = unsafe { _mm_maskz_loadu_epi8(block, p as *const _) };
        let wide = if signed { _mm512_cvtepi8_epi32(bytes) } else { _mm512_cvtepu8_epi32(bytes) };
        let d = _mm512_cvt_roundepi32_ps::<RNE>(_mm512_sub_epi32(wide, rz));
        _mm512_add_round_ps::<RNE>(f, _mm512_mul_round_ps::<RNE>(d, rm))
    }

    /// Stores row r's scaled outputs `f` (the first NB blocks; columns c0.., bytes in `keep`) as bytes.
    ///
    /// # Safety
    /// The row's columns in `keep` lie inside `out`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn store_row<const NB: usize>(g: &Gemm, f: [__m512; 4], r: usize, c0: usize, keep: __mmask64) {
        // SAFETY: the caller's contract.
        unsafe {
            if NB <= 2 {
                // One or two blocks: each clamped in f32 (exact: rounding is monotonic and the bounds
                // are integers; a NaN becomes the upper bound, as in pack64), converted, and stored
                // as bytes by vpmovdb; packing 64 lanes would convert and pack 2–3 unused vectors.
                let (lo, hi) = (_mm512_set1_ps((g.epi.qlo - g.epi.zy) as f32), _mm512_set1_ps((g.epi.qhi - g.epi.zy) as f32));
                for (j, fj) in f.iter().enumerate().take(NB) {
                    let q = _mm512_cvt_roundps_epi32::<RNE>(_mm512_max_ps(_mm512_min_ps(*fj, hi), lo));
                    let q = _mm512_add_epi32(q, _mm512_set1_epi32(g.epi.zy));
                    let block = ((keep >> (j * NBLK)) & 0xffff) as __mmask16;
                    _mm512_mask_cvtepi32_storeu_epi8(g.out.add(r * g.ldo + c0 + j * NBLK) as *mut _, block, q);
                }
            } else {
                let bytes = pack64(f, g.epi.zy, g.epi.qlo, g.epi.qhi);
                _mm512_mask_storeu_epi8(g.out.add(r * g.ldo + c0) as *mut _, keep, bytes);
            }
        }
    }
}

/// The vpdpbusd throughput of the calling core in GOPS (2 ops per multiply-add), measured on
/// independent accumulator chains (the limit no GEMM passes), or None without AVX-512 VNNI. Benchmarks
/// report kernel throughput against this rather than a figure measured on another CPU.
pub fn vnni_peak_gops() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if Isa::detect() == Isa::Avx512Vnni {
        const ITERS: usize = 1 << 18;
        let best = (0..7)
            .map(|_| {
                let t = std::time::Instant::now();
                // SAFETY: the CPU has AVX-512 VNNI (checked above).
                std::hint::black_box(unsafe { peak::chains(std::hint::black_box(ITERS)) });
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        return Some((ITERS * peak::CHAINS * 64 * 2) as f64 / best / 1e9);
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;

    /// Independent accumulators: more than latency × throughput of vpdpbusd on current cores.
    pub const CHAINS: usize = 16;

    /// `iters` rounds of one vpdpbusd per chain; returns a sum so nothing is optimised away.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub fn chains(iters: usize) -> i32 {
        let (a, b) = (_mm512_set1_epi32(0x0102_0304), _mm512_set1_epi32(0x0101_0101));
        let mut acc = [_mm512_setzero_si512(); CHAINS];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_dpbusd_epi32(*v, a, b);
            }
        }
        acc.iter().fold(0, |s, v| s.wrapping_add(_mm512_reduce_add_epi32(*v)))
    }
}
