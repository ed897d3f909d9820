//! f32 matrix product with bias, residual and activation fused, for float convolutions (NCHW: out[m, p] =
//! Σ_k w[m, k] · col[k, p] + bias[m] (+ res[m, p])) and float Gemm layers. Weights are packed once into blocks of MR rows
//! ([K][MR] each), so the AVX-512 microkernel broadcasts the weights of two blocks (12 rows) and
//! multiplies them with 32 columns of `col` per k (24 FMA accumulators). Float results need not equal the interpreter bit for bit (the
//! summation order differs; tests compare within a relative tolerance).
use super::{multiversion, pool, Isa};
use qcc_ir::Act;

pub const MR: usize = 6;
const NR: usize = 32;
/// Bytes of `b` one task works on: its columns stay in L2 while every row block of the task passes over
/// them.
const TILE_BYTES: usize = 256 << 10;

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

/// One product: out[m, p] (address out + m·rs + p·cs) = act(Σ_k a[m, k] · b[k·ldb + p] + bias[m]).
pub struct FGemm<'a> {
    pub isa: Isa,
    pub m: usize,
    pub k: usize,
    pub p: usize,
    pub a: &'a [f32],
    pub b: *const f32,
    pub ldb: usize,
    pub bias: Option<&'a [f32]>,
    pub act: Option<Act>,
    /// A residual laid out like `out`, added after the bias and before the activation.
    pub res: Option<*const f32>,
    pub out: *mut f32,
    pub rs: usize,
    pub cs: usize,
}

// SAFETY: tasks read a and b and write disjoint tiles of out.
unsafe impl Sync for FGemm<'_> {}

impl FGemm<'_> {
    /// # Safety
    /// b must hold k rows of ldb floats (p used), out every addressed element.
    pub unsafe fn run(&self) {
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni && self.p == 1 && self.res.is_none() {
            // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen; b holds k rows of one column.
            unsafe { self.gemv() };
            return;
        }
        let blocks = self.m.div_ceil(MR);
        let cols = (TILE_BYTES / (4 * self.k.max(1)) / NR * NR).clamp(NR, 8 * NR);
        let col_tiles = self.p.div_ceil(cols);
        // Enough row groups that both threads get work on narrow layers.
        let rows_per = blocks.div_ceil((4 * pool::threads()).div_ceil(col_tiles).max(1)).max(1);
        let row_tasks = blocks.div_ceil(rows_per);
        pool::parallel_for(row_tasks * col_tiles, &|t| {
            let (rt, ct) = (t / col_tiles, t % col_tiles);
            let (p0, p1) = (ct * cols, ((ct + 1) * cols).min(self.p));
            let (mut blk, end) = (rt * rows_per, ((rt + 1) * rows_per).min(blocks));
            while blk < end {
                #[cfg(target_arch = "x86_64")]
                if self.isa == Isa::Avx512Vnni && blk + 1 < end {
                    // Two blocks at once: twice the rows per load of b.
                    // SAFETY: AVX-512 is present; blocks blk and blk + 1 exist and the tile is inside the
                    // matrices run()'s caller described.
                    unsafe { avx512::tile::<{ 2 * MR }>(self, blk, p0, p1) };
                    blk += 2;
                    continue;
                }
                // SAFETY: the tile is inside the matrices run()'s caller described.
                unsafe { self.tile(blk, p0, p1) };
                blk += 1;
            }
        });
    }

    /// One column (a Gemm with one input row): each block's packed weights [K][MR] are read as a flat
    /// stream against b with every value repeated MR times, 48 products (8 k × 6 rows) per three
    /// registers, then summed per row. The tile kernel would spend 12 FMAs on 6 products.
    #[cfg(target_arch = "x86_64")]
    unsafe fn gemv(&self) {
        const _: () = assert!(MR == 6, "gemv's lanes assume 6 rows per block");
        let blocks = self.m.div_ceil(MR);
        let k8 = self.k.div_ceil(8) * 8;
        let mut xr = vec![0f32; k8 * MR];
        for kk in 0..self.k {
            // SAFETY: b holds k rows of ldb floats; column 0 is read.
            let v = unsafe { *self.b.add(kk * self.ldb) };
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

    unsafe fn tile(&self, blk: usize, p0: usize, p1: usize) {
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni {
            // SAFETY: AVX-512 is present when Isa::Avx512Vnni was chosen.
            unsafe { avx512::tile::<MR>(self, blk, p0, p1) };
            return;
        }
        multiversion!(
            fn portable(g: &FGemm, blk: usize, p0: usize, p1: usize) {
                let rows = MR.min(g.m - blk * MR);
                let pa = &g.a[blk * g.k * MR..(blk + 1) * g.k * MR];
                let mut acc = vec![0f32; MR * (p1 - p0)];
                let w = p1 - p0;
                for kk in 0..g.k {
                    // SAFETY: row kk of b holds columns p0..p1.
                    let brow = unsafe { std::slice::from_raw_parts(g.b.add(kk * g.ldb + p0), w) };
                    for r in 0..MR {
                        let av = pa[kk * MR + r];
                        for (o, bv) in acc[r * w..(r + 1) * w].iter_mut().zip(brow) {
                            *o += av * bv;
                        }
                    }
                }
                for r in 0..rows {
                    let m = blk * MR + r;
                    let bias = g.bias.map_or(0.0, |b| b[m]);
                    for j in 0..w {
                        let mut v = acc[r * w + j] + bias;
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
        portable(self.isa, self, blk, p0, p1);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{FGemm, MR, NR};
    use qcc_ir::Act;
    use std::arch::x86_64::*;

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

    /// Rows blk·MR.. of R (MR: one packed block; 2·MR: blocks blk and blk + 1, both present).
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    pub unsafe fn tile<const R: usize>(g: &FGemm, blk: usize, p0: usize, p1: usize) {
        let rows = R.min(g.m - blk * MR);
        let pa = g.a.as_ptr().add(blk * g.k * MR);
        // Row r's weight for k: in block r / MR, at k·MR + r % MR.
        let wat = |kk: usize, r: usize| pa.add((r / MR) * g.k * MR + kk * MR + r % MR);
        let mut p = p0;
        while p < p1 {
            let n = NR.min(p1 - p);
            let m0: __mmask16 = if n >= 16 { 0xffff } else { (1u16 << n) - 1 };
            let m1: __mmask16 = if n >= 32 {
                0xffff
            } else if n > 16 {
                (1u16 << (n - 16)) - 1
            } else {
                0
            };
            // SAFETY: loads are masked to the n columns left, inside row kk of b; each of the R rows' blocks
            // holds K·MR floats.
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); 2]; R];
                for kk in 0..g.k {
                    let brow = g.b.add(kk * g.ldb + p);
                    let b0 = _mm512_maskz_loadu_ps(m0, brow);
                    let b1 = _mm512_maskz_loadu_ps(m1, brow.add(16));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let av = _mm512_set1_ps(*wat(kk, r));
                        a[0] = _mm512_fmadd_ps(av, b0, a[0]);
                        a[1] = _mm512_fmadd_ps(av, b1, a[1]);
                    }
                }
                let clamp = match g.act {
                    None => Some((f32::NEG_INFINITY, f32::INFINITY)),
                    Some(Act::Relu) => Some((0.0, f32::INFINITY)),
                    Some(Act::Clip { min, max }) => Some((min, max)),
                    Some(_) => None,
                };
                for (r, a) in acc.iter().enumerate().take(rows) {
                    let m = blk * MR + r;
                    let bias = _mm512_set1_ps(g.bias.map_or(0.0, |b| b[m]));
                    let mut v = [_mm512_add_ps(a[0], bias), _mm512_add_ps(a[1], bias)];
                    if let Some(res) = g.res {
                        let src = res.add(m * g.rs + p * g.cs);
                        if g.cs == 1 {
                            v[0] = _mm512_add_ps(v[0], _mm512_maskz_loadu_ps(m0, src));
                            v[1] = _mm512_add_ps(v[1], _mm512_maskz_loadu_ps(m1, src.add(16)));
                        } else {
                            let mut tmp = [0f32; NR];
                            for (j, t) in tmp.iter_mut().enumerate().take(n) {
                                *t = *src.add(j * g.cs);
                            }
                            v[0] = _mm512_add_ps(v[0], _mm512_loadu_ps(tmp.as_ptr()));
                            v[1] = _mm512_add_ps(v[1], _mm512_loadu_ps(tmp.as_ptr().add(16)));
                        }
                    }
                    if let Some((lo, hi)) = clamp {
                        for x in v.iter_mut() {
                            // Bound first: a NaN comes through (vmaxps/vminps return the second operand).
                            *x = _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), *x));
                        }
                    }
                    let dst = g.out.add(m * g.rs + p * g.cs);
                    if g.cs == 1 && clamp.is_some() {
                        _mm512_mask_storeu_ps(dst, m0, v[0]);
                        _mm512_mask_storeu_ps(dst.add(16), m1, v[1]);
                    } else {
                        let mut tmp = [0f32; NR];
                        _mm512_storeu_ps(tmp.as_mut_ptr(), v[0]);
                        _mm512_storeu_ps(tmp.as_mut_ptr().add(16), v[1]);
                        for (j, t) in tmp.iter().enumerate().take(n) {
                            *dst.add(j * g.cs) = g.act.filter(|_| clamp.is_none()).map_or(*t, |f| f.apply(*t));
                        }
                    }
                }
            }
            p += NR;
        }
    }
}
