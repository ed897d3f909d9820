//! f32 matrix product with bias, residual and activation fused, for float convolutions (NCHW: out[m, p] =
//! Σ_k w[m, k] · col[k, p] + bias[m] (+ res[m, p])) and float Gemm layers. Weights are packed once into
//! blocks of MR rows ([K][MR] each). Each task packs its columns of `col` into panels of NR columns
//! ([K][NR], contiguous), gathering convolution windows straight from the NCHW input (an implicit
//! im2col: no column matrix is ever written to memory), and runs every row block over them: the AVX-512
//! microkernel broadcasts the weights of two blocks (12 rows) against the panel's 32 columns per k (24 FMA
//! accumulators), reading both operands as sequential streams. Most convolutions skip the panels
//! (fgemm_shift.rs). Float results need not equal the interpreter bit for bit (the summation order
//! differs; tests compare within a relative tolerance).
use super::dwconv::DwGeom;
use super::{multiversion, pool, Isa};
use qcc_ir::Act;

pub const MR: usize = 6;
pub(crate) const NR: usize = 32;
/// Bytes of packed panels one task keeps: they stay in L2 while every row block passes over them.
const PANEL_BYTES: usize = 1 << 20;
/// Rows of K taken at once (GotoBLAS's kc): a row pair's weights for them (24 KB) stay in L1 across the
/// panels, and the panels in L2 however large K is. Partial sums wait in the output between chunks.
const KC: usize = 512;
/// Up to this many rows, a plain matrix (a pointwise convolution's input) is read in place instead of
/// packed: packing costs about as much per column as the few row blocks gain from contiguous loads.
const DIRECT_M: usize = 24;

/// K rows of up to NR columns the microkernel reads: a packed panel (ld = NR) or the source matrix in
/// place (ld = its row pitch; loads are then masked to the n columns).
#[derive(Clone, Copy)]
pub(crate) struct Panel {
    pub(crate) ptr: *const f32,
    pub(crate) ld: usize,
    pub(crate) rows: usize,
}

/// How one product is split into tasks: K in `chunks` passes of up to KC rows, the NR-column panels over
/// column tasks and, when those are fewer than the threads, pairs of MR-row blocks over row tasks.
pub(crate) struct Split {
    pub(crate) chunks: usize,
    k: usize,
    kc: usize,
    blocks: usize,
    panels: usize,
    pairs: usize,
    col_tasks: usize,
    row_tasks: usize,
}

impl Split {
    pub(crate) fn new(m: usize, k: usize, cols: usize) -> Split {
        let (blocks, panels, threads) = (m.div_ceil(MR), cols.div_ceil(NR), pool::threads());
        // Panels per task: as many as stay in L2 (the weights are read once per column task), all of them
        // when there are only two (the 7x7 layers of ImageNet models, where the weights are the larger
        // operand); a multiple of the threads, so they share the work evenly.
        let chunks = k.div_ceil(KC).max(1);
        let kc = k.div_ceil(chunks);
        let fit = (PANEL_BYTES / (4 * NR * kc.max(1))).clamp(1, 16);
        let mut col_tasks = if panels <= 2 { 1 } else { panels.div_ceil(fit) };
        if col_tasks % threads != 0 && col_tasks > 1 {
            col_tasks = col_tasks.next_multiple_of(threads).min(panels);
        }
        // Rows are split (in pairs of blocks) only when there are fewer column tasks than threads; each row
        // task packs its panels again.
        let pairs = blocks.div_ceil(2);
        let row_tasks = if col_tasks >= threads { 1 } else { threads.div_ceil(col_tasks).min(pairs) };
        Split { chunks, k, kc, blocks, panels, pairs, col_tasks, row_tasks }
    }

    pub(crate) fn tasks(&self) -> usize {
        self.row_tasks * self.col_tasks
    }

    /// Task t's panels j0..j1 and row blocks blk0..blk1. Tasks take panels (and row pairs) in shares that
    /// differ by at most one, so a multiple of the threads in tasks splits the work evenly.
    pub(crate) fn task(&self, t: usize) -> ((usize, usize), (usize, usize)) {
        let share = |i: usize, n: usize, parts: usize| i * n / parts;
        let (rt, ct) = (t / self.col_tasks, t % self.col_tasks);
        let cols = (share(ct, self.panels, self.col_tasks), share(ct + 1, self.panels, self.col_tasks));
        let rows = (2 * share(rt, self.pairs, self.row_tasks), (2 * share(rt + 1, self.pairs, self.row_tasks)).min(self.blocks));
        (cols, rows)
    }

    /// Rows k0..k1 of K in pass `chunk`.
    pub(crate) fn k_range(&self, chunk: usize) -> (usize, usize) {
        (chunk * self.kc, ((chunk + 1) * self.kc).min(self.k))
    }
}

/// The 16-lane mask of lanes lo..hi (clamped to 0..16): the AVX-512 kernels' masked loads and stores.
pub(crate) fn lanes(lo: usize, hi: usize) -> u16 {
    let bits = |n: usize| if n >= 16 { 0xffffu32 } else { (1u32 << n) - 1 };
    (bits(hi) & !bits(lo)) as u16
}

/// Packs w (M x K, element (m, k) given by `at`) into blocks of MR rows, [M/MR][K][MR], zero padded.
pub fn pack_a(m: usize, k: usize, at: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let blocks = m.div_ceil(MR);
    let mut out = vec![0f32; blocks * k * MR];
    for blk in 0..blocks {
        for kk in 0..k {
            for r in 0..MR {
                let row = blk * MR + r;
                if row < m {
                    out[(blk * k + kk) * MR + r] = at(row, kk);
                }
            }
        }
    }
    out
}

/// Where the K x P right-hand matrix comes from.
#[derive(Clone, Copy)]
pub enum FSrc {
    /// Element (k, p) at b[k·ldb + p].
    Matrix { b: *const f32, ldb: usize },
    /// The windows of a convolution over the NCHW image x (one image, c·h·w floats): row k = (c, ky, kx)
    /// in that order, column p = (oy, ox), zero where a window reaches into the padding.
    Conv { x: *const f32, g: DwGeom },
}

/// One product: out[m, p] (address out + m·rs + p·cs) = act(Σ_k a[m, k] · B[k, p] + bias[m]).
pub struct FGemm<'a> {
    pub isa: Isa,
    pub m: usize,
    pub k: usize,
    pub p: usize,
    pub a: &'a [f32],
    pub src: FSrc,
    pub bias: Option<&'a [f32]>,
    pub act: Option<Act>,
    /// A residual laid out like `out`, added after the bias and before the activation.
    pub res: Option<*const f32>,
    pub out: *mut f32,
    pub rs: usize,
    pub cs: usize,
}

/// The parts of a convolution panel's rows that lie inside the image, per tap: (offset in the input
/// plane, offset in the panel row, length). Every input plane c gives row (c, tap) the same pieces, so
/// they are found once per panel; the rest of a row is zero.
struct Pieces {
    pieces: Vec<(usize, usize, usize)>,
    ends: Vec<usize>,
}

impl Pieces {
    /// For the panel of output columns p0..p0 + n.
    fn new(g: &DwGeom, p0: usize, n: usize) -> Pieces {
        let s = g.stride[1];
        let mut pieces = Vec::with_capacity(g.kh * g.kw * 4);
        let mut ends = Vec::with_capacity(g.kh * g.kw);
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let off = (kx * g.dil[1]) as isize - g.pad[1] as isize;
                // Output columns whose input column ox·s + off lies inside the row.
                let lo = if off >= 0 { 0 } else { ((-off + s as isize - 1) / s as isize) as usize };
                let hi = ((g.w as isize - 1 - off).div_euclid(s as isize) + 1).max(0) as usize;
                let mut p = p0;
                while p < p0 + n {
                    let (oy, ox) = (p / g.ow, p % g.ow);
                    let len = (g.ow - ox).min(p0 + n - p);
                    let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
                    let (a, b) = (lo.clamp(ox, ox + len), hi.clamp(ox, ox + len));
                    if iy >= 0 && iy < g.h as isize && a < b {
                        let first = (a as isize * s as isize + off) as usize;
                        pieces.push((iy as usize * g.w + first, p - p0 + a - ox, b - a));
                    }
                    p += len;
                }
                ends.push(pieces.len());
            }
        }
        Pieces { pieces, ends }
    }

    fn of_tap(&self, t: usize) -> &[(usize, usize, usize)] {
        &self.pieces[if t == 0 { 0 } else { self.ends[t - 1] }..self.ends[t]]
    }
}

// SAFETY: tasks read a and the source and write disjoint tiles of out.
unsafe impl Sync for FGemm<'_> {}

thread_local! {
    /// Each thread's packed panels, kept between calls (taken out while a task runs).
    static PANELS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

impl FGemm<'_> {
    /// # Safety
    /// The source must hold what FSrc says (Matrix: k rows of ldb floats, p used), out every addressed
    /// element.
    pub unsafe fn run(&self) {
        #[cfg(target_arch = "x86_64")]
        if let FSrc::Matrix { b, ldb } = self.src {
            if self.isa == Isa::Avx512Vnni && self.p == 1 && self.res.is_none() {
                // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen; b holds k rows of one column.
                unsafe { self.gemv(b, ldb) };
                return;
            }
        }
        #[cfg(target_arch = "x86_64")]
        if let FSrc::Conv { x, g } = self.src {
            if self.isa == Isa::Avx512Vnni && self.cs == 1 && super::fgemm_shift::pays(&g, self.m) {
                // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen; cs = 1.
                unsafe { self.run_shifted(x, &g) };
                return;
            }
        }
        let sp = Split::new(self.m, self.k, self.p);
        let direct = matches!(self.src, FSrc::Matrix { .. }) && self.m <= DIRECT_M;
        pool::parallel_for(sp.tasks(), &|t| {
            let ((j0, j1), (blk0, blk1)) = sp.task(t);
            let mut buf = PANELS.take();
            for chunk in 0..sp.chunks {
                let (k0, k1) = sp.k_range(chunk);
                let size = (k1 - k0) * NR;
                let panel_of = |buf: &[f32], j: usize| match self.src {
                    // SAFETY: rows k0..k1 of b exist (run()'s contract).
                    FSrc::Matrix { b, ldb } if direct => Panel { ptr: unsafe { b.add(k0 * ldb + j * NR) }, ld: ldb, rows: k1 - k0 },
                    _ => Panel { ptr: buf[(j - j0) * size..].as_ptr(), ld: NR, rows: k1 - k0 },
                };
                let mut skip = 0;
                if !direct {
                    let len = (j1 - j0) * size;
                    // 64-byte aligned panels: every vector load of the microkernel is one cache line.
                    buf.resize(len + 16, 0.0);
                    skip = buf.as_ptr().align_offset(64).min(15);
                    let panel = &mut buf[skip..skip + len];
                    // SAFETY: the source holds what run()'s caller promised; each panel has (k1 − k0)·NR floats.
                    unsafe { self.pack(j0, j1, k0, k1 - k0, panel) };
                }
                let mut blk = blk0;
                while blk < blk1 {
                    let two = blk + 1 < blk1;
                    for j in j0..j1 {
                        let p0 = j * NR;
                        // SAFETY: blocks blk (and blk + 1 when `two`) exist; columns p0.. are inside out.
                        unsafe { self.tile(blk, two, panel_of(&buf[skip..], j), p0, NR.min(self.p - p0), k0) };
                    }
                    blk += if two { 2 } else { 1 };
                }
            }
            PANELS.set(buf);
        });
    }

    /// Panels j0..j1 (columns j·NR.., zeros past p) of B's rows k0..k0 + rows into `dst`, one panel of
    /// rows·NR floats after another, each [rows][NR].
    unsafe fn pack(&self, j0: usize, j1: usize, k0: usize, rows: usize, dst: &mut [f32]) {
        let size = rows * NR;
        match self.src {
            FSrc::Matrix { b, ldb } => {
                for (j, dst) in (j0..j1).zip(dst.chunks_exact_mut(size)) {
                    let (p0, n) = (j * NR, NR.min(self.p - j * NR));
                    #[cfg(target_arch = "x86_64")]
                    if self.isa == Isa::Avx512Vnni {
                        // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen; rows k0.. of b hold
                        // columns p0..p0 + n (run()'s contract).
                        unsafe { avx512::pack_matrix_rows(b.add(k0 * ldb + p0), ldb, n, dst) };
                        continue;
                    }
                    for (kk, row) in (k0..).zip(dst.chunks_exact_mut(NR)) {
                        row[n..].fill(0.0);
                        // SAFETY: row kk of b holds columns p0..p0 + n.
                        unsafe { copy_row(self.isa, b.add(kk * ldb + p0), 1, row, 0, n) };
                    }
                }
            }
            FSrc::Conv { x, g } => {
                let cuts: Vec<Pieces> = (j0..j1).map(|j| Pieces::new(&g, j * NR, NR.min(self.p - j * NR))).collect();
                let (s, taps, plane) = (g.stride[1], g.kh * g.kw, g.h * g.w);
                #[cfg(target_arch = "x86_64")]
                if self.isa == Isa::Avx512Vnni && s <= 2 {
                    // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen; every piece lies inside its
                    // plane and inside its row (Pieces::new).
                    unsafe { avx512::pack_conv(x, plane, taps, s, &cuts, k0, rows, dst) };
                    return;
                }
                // Rows outermost: consecutive panels read consecutive pieces of the same input plane.
                for kk in k0..k0 + rows {
                    let (c, t) = (kk / taps, kk % taps);
                    for (i, cut) in cuts.iter().enumerate() {
                        let row = &mut dst[i * size + (kk - k0) * NR..][..NR];
                        row.fill(0.0);
                        for &(src, at, len) in cut.of_tap(t) {
                            // SAFETY: the piece lies inside input plane c and inside the row (Pieces::new).
                            unsafe { copy_row(self.isa, x.add(c * plane + src), s, row, at, len) };
                        }
                    }
                }
            }
        }
    }

    /// One column (a Gemm with one input row): each block's packed weights [K][MR] are read as a flat
    /// stream against b with every value repeated MR times, 48 products (8 k × 6 rows) per three
    /// registers, then summed per row. The tile kernel would spend 12 FMAs on 6 products.
    #[cfg(target_arch = "x86_64")]
    unsafe fn gemv(&self, b: *const f32, ldb: usize) {
        const _: () = assert!(MR == 6, "gemv's lanes assume 6 rows per block");
        let blocks = self.m.div_ceil(MR);
        let k8 = self.k.div_ceil(8) * 8;
        let mut xr = vec![0f32; k8 * MR];
        for kk in 0..self.k {
            // SAFETY: b holds k rows of ldb floats; column 0 is read.
            let v = unsafe { *b.add(kk * ldb) };
            xr[kk * MR..(kk + 1) * MR].fill(v);
        }
        let per = blocks.div_ceil(4 * pool::threads()).max(1);
        pool::parallel_for(blocks.div_ceil(per), &|t| {
            for blk in t * per..((t + 1) * per).min(blocks) {
                let a = &self.a[blk * self.k * MR..(blk + 1) * self.k * MR];
                // SAFETY: AVX-512 is present (run()'s check).
                let sums = unsafe { avx512::gemv_block(a, &xr) };
                for (r, v) in sums.iter().enumerate().take(MR.min(self.m - blk * MR)) {
                    let m = blk * MR + r;
                    let v = v + self.bias.map_or(0.0, |b| b[m]);
                    // SAFETY: (m, 0) is inside out.
                    unsafe { *self.out.add(m * self.rs) = self.act.map_or(v, |f| f.apply(v)) };
                }
            }
        });
    }

    /// Rows of block blk (and blk + 1 when `two`) against one packed panel of rows k0.. of K: columns
    /// p0..p0 + n. Sums start from the output's partial sums unless k0 = 0; the epilogue runs on the last
    /// rows of K, before it the partial sums are stored.
    unsafe fn tile(&self, blk: usize, two: bool, panel: Panel, p0: usize, n: usize, k0: usize) {
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni {
            // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen.
            unsafe {
                match (two, panel.ld == NR) {
                    (true, true) => avx512::tile::<{ 2 * MR }, false>(self, blk, panel, p0, n, k0),
                    (false, true) => avx512::tile::<MR, false>(self, blk, panel, p0, n, k0),
                    (true, false) => avx512::tile::<{ 2 * MR }, true>(self, blk, panel, p0, n, k0),
                    (false, false) => avx512::tile::<MR, true>(self, blk, panel, p0, n, k0),
                }
            };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx2 {
            // SAFETY: Isa::Avx2 is only chosen when the CPU has AVX2 and FMA.
            unsafe {
                super::fgemm_avx2::tile(self, blk, panel, p0, n, k0);
                if two {
                    super::fgemm_avx2::tile(self, blk + 1, panel, p0, n, k0);
                }
            }
            return;
        }
        multiversion!(
            fn portable(g: &FGemm, blk: usize, panel: Panel, p0: usize, w: usize, k0: usize) {
                let rows = MR.min(g.m - blk * MR);
                let pa = &g.a[blk * g.k * MR..(blk + 1) * g.k * MR];
                let k1 = k0 + panel.rows;
                let mut acc = [[0f32; NR]; MR];
                if k0 > 0 {
                    for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                        for (j, a) in acc.iter_mut().enumerate().take(w) {
                            // SAFETY: (blk·MR + r, p0 + j) is inside out and holds the partial sum.
                            *a = unsafe { *g.out.add((blk * MR + r) * g.rs + (p0 + j) * g.cs) };
                        }
                    }
                }
                for kk in k0..k1 {
                    // SAFETY: row kk − k0 of the panel holds the w columns read.
                    let brow = unsafe { std::slice::from_raw_parts(panel.ptr.add((kk - k0) * panel.ld), w) };
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let av = pa[kk * MR + r];
                        for (o, bv) in acc.iter_mut().zip(brow) {
                            *o += av * bv;
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate().take(rows) {
                    let m = blk * MR + r;
                    let bias = g.bias.map_or(0.0, |b| b[m]);
                    for (j, a) in acc.iter().enumerate().take(w) {
                        if k1 < g.k {
                            // SAFETY: (m, p0 + j) is inside out.
                            unsafe { *g.out.add(m * g.rs + (p0 + j) * g.cs) = *a };
                            continue;
                        }
                        let mut v = a + bias;
                        if let Some(res) = g.res {
                            // SAFETY: the residual has out's layout.
                            v += unsafe { *res.add(m * g.rs + (p0 + j) * g.cs) };
                        }
                        // SAFETY: (m, p0 + j) is inside out.
                        unsafe { *g.out.add(m * g.rs + (p0 + j) * g.cs) = g.act.map_or(v, |f| f.apply(v)) };
                    }
                }
            }
        );
        portable(self.isa, self, blk, panel, p0, n, k0);
        if two {
            portable(self.isa, self, blk + 1, panel, p0, n, k0);
        }
    }
}

/// row[at..at + len] = src[0], src[s], src[2s], ... (len ≤ NR − at); the rest of the row is left alone.
///
/// # Safety
/// src must hold (len − 1)·s + 1 floats.
#[inline(always)]
unsafe fn copy_row(isa: Isa, src: *const f32, s: usize, row: &mut [f32], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni && s <= 2 {
        // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen; the caller's bounds.
        unsafe { avx512::copy_row(src, s, row[at..at + len].as_mut_ptr(), len) };
        return;
    }
    let _ = isa;
    for (i, d) in row[at..at + len].iter_mut().enumerate() {
        // SAFETY: the caller's bounds.
        *d = unsafe { *src.add(i * s) };
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::finish_row;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{lanes, FGemm, Panel, Pieces, MR, NR};
    use std::arch::x86_64::*;

    /// dst[i] = src[i·s] for i < len ≤ 32, s = 1 or 2, with masked loads (nothing past the last element
    /// read is touched) and stores.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn copy_row(src: *const f32, s: usize, dst: *mut f32, len: usize) {
        let mask = |n: usize| lanes(0, n);
        // SAFETY: masked-off lanes are neither read nor written; the caller's bounds cover the rest.
        unsafe {
            if s == 1 {
                let (m0, m1) = (mask(len), mask(len.saturating_sub(16)));
                _mm512_mask_storeu_ps(dst, m0, _mm512_maskz_loadu_ps(m0, src));
                if len > 16 {
                    _mm512_mask_storeu_ps(dst.add(16), m1, _mm512_maskz_loadu_ps(m1, src.add(16)));
                }
                return;
            }
            let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            // Inputs read: 2·len − 1 from src.
            let read = 2 * len - 1;
            let mut i = 0;
            while i < len {
                let base = 2 * i;
                let (ma, mb) = (mask(read.saturating_sub(base)), mask(read.saturating_sub(base + 16)));
                let a = _mm512_maskz_loadu_ps(ma, src.add(base));
                let b = if mb != 0 { _mm512_maskz_loadu_ps(mb, src.add(base + 16)) } else { _mm512_setzero_ps() };
                _mm512_mask_storeu_ps(dst.add(i), mask(len - i), _mm512_permutex2var_ps(a, evens, b));
                i += 16;
            }
        }
    }

    /// FGemm::pack for a convolution: panel rows k = (c, t) for k0..k0 + rows of every panel in `cuts`,
    /// rows outermost (consecutive panels read consecutive pieces of the same input plane). One function,
    /// so the copies inline: called per piece, they cost a third of a 64-channel 3x3 layer's GEMM.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn pack_conv(x: *const f32, plane: usize, taps: usize, s: usize, cuts: &[Pieces], k0: usize, rows: usize, dst: &mut [f32]) {
        let zero = _mm512_setzero_ps();
        let size = rows * NR;
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        for kk in k0..k0 + rows {
            let (c, t) = (kk / taps, kk % taps);
            let src = x.wrapping_add(c * plane);
            for (i, cut) in cuts.iter().enumerate() {
                let row = dst[i * size + (kk - k0) * NR..][..NR].as_mut_ptr();
                if s == 1 {
                    // Unit stride: lane j of a piece (off, at, len) reads src[off + j − at], so each piece is
                    // two masked loads merged into the row's registers and the row is stored once (masked
                    // stores are slow on some AVX-512 CPUs, and a zeroed row stored over is written twice).
                    let (mut lo, mut hi) = (zero, zero);
                    for &(off, at, len) in cut.of_tap(t) {
                        // Masked-off lanes are not read, so the base may point before the plane; wrapping
                        // arithmetic keeps computing the pointer itself defined.
                        let base = src.wrapping_add(off).wrapping_sub(at);
                        // SAFETY: the lanes at..at + len read src[off..off + len], inside plane c (the
                        // caller's bounds); the other lanes are masked off.
                        unsafe {
                            lo = _mm512_mask_loadu_ps(lo, lanes(at, at + len), base);
                            hi = _mm512_mask_loadu_ps(
                                hi,
                                lanes(at.saturating_sub(16), (at + len).saturating_sub(16)),
                                base.wrapping_add(16),
                            );
                        }
                    }
                    // SAFETY: the row has NR = 32 floats.
                    unsafe {
                        _mm512_storeu_ps(row, lo);
                        _mm512_storeu_ps(row.add(16), hi);
                    }
                    continue;
                }
                // Stride 2: lane j of a piece reads src[off + 2(j − at)]; per half of the row, the 32 source
                // floats its lanes need are two masked loads, their even elements one permute, merged in.
                let mut half = [zero; 2];
                for &(off, at, len) in cut.of_tap(t) {
                    let base = src.wrapping_add(off).wrapping_sub(2 * at);
                    for (hf, v) in half.iter_mut().enumerate() {
                        let (l0, l1) = (at.max(16 * hf) - 16 * hf, (at + len).min(16 * hf + 16).saturating_sub(16 * hf));
                        if l0 >= l1 {
                            continue;
                        }
                        // Source floats 2·l0 ..= 2·(l1 − 1) from b.
                        let b = base.wrapping_add(32 * hf);
                        let (ma, mb) = (lanes(2 * l0, 2 * l1 - 1), lanes((2 * l0).max(16) - 16, (2 * l1 - 1).saturating_sub(16)));
                        // SAFETY: the unmasked lanes read src[off..off + 2·len − 1], inside plane c (the
                        // caller's bounds).
                        unsafe {
                            let (a, c) = (_mm512_maskz_loadu_ps(ma, b), _mm512_maskz_loadu_ps(mb, b.wrapping_add(16)));
                            *v = _mm512_mask_mov_ps(*v, lanes(l0, l1), _mm512_permutex2var_ps(a, evens, c));
                        }
                    }
                }
                // SAFETY: the row has NR = 32 floats.
                unsafe {
                    _mm512_storeu_ps(row, half[0]);
                    _mm512_storeu_ps(row.add(16), half[1]);
                }
            }
        }
    }

    /// Rows of n ≤ NR floats, ld apart from b, into dst ([rows][NR], zeros past n).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn pack_matrix_rows(b: *const f32, ld: usize, n: usize, dst: &mut [f32]) {
        let (m0, m1) = (lanes(0, n), lanes(0, n.saturating_sub(16)));
        for (kk, row) in dst.chunks_exact_mut(NR).enumerate() {
            // SAFETY: row kk of b holds n floats (the caller's bounds); masked-off lanes are not read; the
            // row has NR = 32 floats.
            unsafe {
                let src = b.add(kk * ld);
                _mm512_storeu_ps(row.as_mut_ptr(), _mm512_maskz_loadu_ps(m0, src));
                _mm512_storeu_ps(row.as_mut_ptr().add(16), _mm512_maskz_loadu_ps(m1, src.add(16)));
            }
        }
    }

    /// Σ_k a[k][r] · x[k] for the MR rows r of one packed block (`xr` holds each x[k] MR times, zero
    /// padded to a multiple of 8 k).
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    pub unsafe fn gemv_block(a: &[f32], xr: &[f32]) -> [f32; MR] {
        let n = a.len();
        let mut acc = [_mm512_setzero_ps(); 3];
        let mut i = 0;
        // SAFETY: every load lies inside a and xr (xr is at least as long as a, rounded up to 48).
        unsafe {
            while i + 48 <= n {
                for (j, s) in acc.iter_mut().enumerate() {
                    *s = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i + 16 * j)), _mm512_loadu_ps(xr.as_ptr().add(i + 16 * j)), *s);
                }
                i += 48;
            }
        }
        let mut lanes = [0f32; 48];
        for (j, s) in acc.iter().enumerate() {
            // SAFETY: 16 floats at 16·j of 48.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr().add(16 * j), *s) };
        }
        let mut out = [0f32; MR];
        // Lane l of the 48 is row l % 6 (48 is a multiple of 6), as is element i of a; the tail adds on.
        for (l, v) in lanes.iter().enumerate() {
            out[l % MR] += v;
        }
        for (l, (av, xv)) in a[i..].iter().zip(&xr[i..]).enumerate() {
            out[l % MR] += av * xv;
        }
        out
    }

    /// n ≤ NR floats at src, cs apart, as two registers (zeros past n).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load_row(src: *const f32, cs: usize, m0: __mmask16, m1: __mmask16, n: usize) -> [__m512; 2] {
        // SAFETY: the n addressed floats are inside the caller's buffer; masked-off lanes are not read.
        unsafe {
            if cs == 1 {
                return [_mm512_maskz_loadu_ps(m0, src), _mm512_maskz_loadu_ps(m1, src.add(16))];
            }
            let mut tmp = [0f32; NR];
            for (j, t) in tmp.iter_mut().enumerate().take(n) {
                *t = *src.add(j * cs);
            }
            [_mm512_loadu_ps(tmp.as_ptr()), _mm512_loadu_ps(tmp.as_ptr().add(16))]
        }
    }

    /// Stores the first n ≤ NR lanes of v at dst, cs apart.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store_row(dst: *mut f32, cs: usize, m0: __mmask16, m1: __mmask16, n: usize, v: [__m512; 2]) {
        // SAFETY: the n addressed floats are inside the caller's buffer; masked-off lanes are not written.
        unsafe {
            if cs == 1 {
                _mm512_mask_storeu_ps(dst, m0, v[0]);
                _mm512_mask_storeu_ps(dst.add(16), m1, v[1]);
                return;
            }
            let mut tmp = [0f32; NR];
            _mm512_storeu_ps(tmp.as_mut_ptr(), v[0]);
            _mm512_storeu_ps(tmp.as_mut_ptr().add(16), v[1]);
            for (j, t) in tmp.iter().enumerate().take(n) {
                *dst.add(j * cs) = *t;
            }
        }
    }

    /// The epilogue of output row m of a tile, accumulators `a` over rows k0..k1 of K: the partial sums of
    /// earlier passes added (k0 > 0), then stored as partial sums (k1 < K) or finished: bias, residual,
    /// activation. `load` and `store` take the start of row m of a buffer laid out like the output (the
    /// output or the residual) and address the tile's columns in it.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn finish_row(
        g: &FGemm,
        m: usize,
        a: [__m512; 2],
        k0: usize,
        k1: usize,
        load: impl Fn(*const f32) -> [__m512; 2],
        store: impl Fn(*mut f32, [__m512; 2]),
    ) {
        let row = g.out.wrapping_add(m * g.rs);
        let mut a = a;
        if k0 > 0 {
            let s = load(row);
            a = [_mm512_add_ps(a[0], s[0]), _mm512_add_ps(a[1], s[1])];
        }
        if k1 < g.k {
            store(row, a);
            return;
        }
        let bias = _mm512_set1_ps(g.bias.map_or(0.0, |b| b[m]));
        let mut v = [_mm512_add_ps(a[0], bias), _mm512_add_ps(a[1], bias)];
        if let Some(res) = g.res {
            let r = load(res.wrapping_add(m * g.rs));
            v = [_mm512_add_ps(v[0], r[0]), _mm512_add_ps(v[1], r[1])];
        }
        match (crate::kernels::clamp_bounds(g.act), g.act) {
            (Some((lo, hi)), _) => {
                for x in v.iter_mut() {
                    // Bound first: a NaN comes through (vmaxps/vminps return the second operand).
                    *x = _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), *x));
                }
            }
            (None, Some(f)) => {
                let mut tmp = [0f32; NR];
                // SAFETY: tmp holds 32 floats.
                unsafe {
                    _mm512_storeu_ps(tmp.as_mut_ptr(), v[0]);
                    _mm512_storeu_ps(tmp.as_mut_ptr().add(16), v[1]);
                }
                for t in tmp.iter_mut() {
                    *t = f.apply(*t);
                }
                // SAFETY: as above.
                v = unsafe { [_mm512_loadu_ps(tmp.as_ptr()), _mm512_loadu_ps(tmp.as_ptr().add(16))] };
            }
            (None, None) => {}
        }
        store(row, v);
    }

    /// Rows blk·MR.. of R (MR: one packed block; 2·MR: blocks blk and blk + 1, both present) against one
    /// packed panel ([K][NR]) of columns p..p + n.
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    pub unsafe fn tile<const R: usize, const DIRECT: bool>(g: &FGemm, blk: usize, panel: Panel, p: usize, n: usize, k0: usize) {
        let rows = R.min(g.m - blk * MR);
        let pa = g.a.as_ptr().add(blk * g.k * MR);
        // Row r's weight for k: in block r / MR, at k·MR + r % MR.
        let wat = |kk: usize, r: usize| pa.add((r / MR) * g.k * MR + kk * MR + r % MR);
        let (m0, m1) = (lanes(0, n), lanes(0, n.saturating_sub(16)));
        // SAFETY: the panel holds K rows of NR floats; each of the R rows' blocks holds K·MR floats.
        unsafe {
            let k1 = k0 + panel.rows;
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            let mut brow = panel.ptr;
            for kk in k0..k1 {
                // In place, only the n columns of the row may be read.
                let (b0, b1) = if DIRECT {
                    (_mm512_maskz_loadu_ps(m0, brow), _mm512_maskz_loadu_ps(m1, brow.add(16)))
                } else {
                    (_mm512_loadu_ps(brow), _mm512_loadu_ps(brow.add(16)))
                };
                brow = brow.add(panel.ld);
                for (r, a) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*wat(kk, r));
                    a[0] = _mm512_fmadd_ps(av, b0, a[0]);
                    a[1] = _mm512_fmadd_ps(av, b1, a[1]);
                }
            }
            // The accumulators are only read after the loop (writing them in a loop of dynamic length makes
            // LLVM keep them in memory, also inside the k loop).
            for (r, a) in acc.iter().enumerate().take(rows) {
                finish_row(
                    g,
                    blk * MR + r,
                    *a,
                    k0,
                    k1,
                    |row| load_row(row.wrapping_add(p * g.cs), g.cs, m0, m1, n),
                    |row, v| store_row(row.wrapping_add(p * g.cs), g.cs, m0, m1, n, v),
                );
            }
        }
    }
}
