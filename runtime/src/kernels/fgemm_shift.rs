//! The f32 GEMM of convolutions without packed panels (AVX-512). The input is copied once into
//! zero-padded planes of width w2 (stride 1: pl + w + pr); in that copy, the row of B for (c, ky, kx)
//! over output positions q = oy·w2 + ox is the copy itself shifted by c·plane + ky·dil·w2 + kx·dil, so
//! the microkernel reads B in place at a per-row offset. A strided axis is split into its phases (every
//! s-th padded row or column), which turns the window into a stride-1 one over the phase planes. The
//! columns ox ≥ ow of each output row (w2 − ow of them) are computed and dropped: a few percent more
//! products in place of gathering every window into panels, which costs a 64-channel 3x3 layer about a
//! quarter of its time.
use super::dwconv::DwGeom;
use super::fgemm::{finish_row, lanes, FGemm, Split, MR, NR};
use super::pool;
use std::arch::x86_64::*;

thread_local! {
    /// The calling thread's padded input copy and the geometry it was last laid out for, kept between
    /// calls: a copy for the same geometry writes the same interior positions, so its zeros still stand.
    static PADDED: std::cell::Cell<(Vec<f32>, Option<DwGeom>)> = const { std::cell::Cell::new((Vec::new(), None)) };
}

/// The padded copy's geometry: plane height and width, and per axis the phases (offsets modulo the
/// stride) some tap reads. A stride-s axis splits into s phases (every s-th padded row or column), each
/// read as by a stride-1 window, so a plane is (phase row, phase column) of one channel.
struct Phases {
    h2: usize,
    w2: usize,
    ys: Vec<usize>,
    xs: Vec<usize>,
}

impl Phases {
    fn new(g: &DwGeom) -> Phases {
        let used = |k: usize, d: usize, s: usize| {
            let mut v: Vec<usize> = (0..k).map(|t| t * d % s).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        Phases {
            h2: g.oh + (g.kh - 1) * g.dil[0] / g.stride[0],
            w2: g.ow + (g.kw - 1) * g.dil[1] / g.stride[1],
            ys: used(g.kh, g.dil[0], g.stride[0]),
            xs: used(g.kw, g.dil[1], g.stride[1]),
        }
    }

    /// Planes per input channel.
    fn per_channel(&self) -> usize {
        self.ys.len() * self.xs.len()
    }
}

/// Whether the shifted form does less work than packing: its extra columns cost products for every row
/// of the output, packing costs a gather of every window. In a profile of a 64-channel 3x3 layer on
/// 56x56 (AMD EPYC, AVX-512), packing took 0.29 of the products' time: about 20 rows' worth, rounded
/// up to 24 here (with 24, a 512-row layer on 28x28 keeps its panels).
pub(crate) fn pays(g: &DwGeom, m: usize) -> bool {
    let w2 = Phases::new(g).w2;
    let (packed, shifted) = (g.oh * g.ow, (g.oh - 1) * w2 + g.ow);
    let (pp, ps) = (packed.div_ceil(NR), shifted.div_ceil(NR));
    ps * m.div_ceil(MR) * MR <= pp * (m.div_ceil(MR) * MR + 24)
}

impl FGemm<'_> {
    /// # Safety
    /// As FGemm::run, with src a convolution, cs = 1 and an AVX-512 CPU.
    pub(crate) unsafe fn run_shifted(&self, x: *const f32, g: &DwGeom) {
        let ph = Phases::new(g);
        let (s0, s1, d0, d1) = (g.stride[0], g.stride[1], g.dil[0], g.dil[1]);
        let (w2, plane, per) = (ph.w2, ph.h2 * ph.w2, ph.per_channel());
        // Columns of the last output row past ow, and the last tile's columns past the end, read up to NR
        // floats beyond the last plane: the copy has that much zeroed slack.
        let (mut pad, laid_out) = PADDED.take();
        if laid_out != Some(*g) {
            pad.clear();
            pad.resize(g.c * per * plane + NR, 0.0);
        }
        {
            let (pt, pl) = (g.pad[0], g.pad[1]);
            let (dst, src) = (SendPtr(pad.as_mut_ptr()), SendPtr(x as *mut f32));
            let share = g.c.div_ceil(pool::threads());
            pool::parallel_for(g.c.div_ceil(share), &|t| {
                for c in t * share..((t + 1) * share).min(g.c) {
                    for iy in 0..g.h {
                        // Padded row pt + iy is row (pt + iy) / s0 of phase (pt + iy) % s0, if a tap reads it.
                        let (yp, row) = ((pt + iy) % s0, (pt + iy) / s0);
                        let Some(yi) = ph.ys.iter().position(|&v| v == yp) else { continue };
                        if row >= ph.h2 {
                            continue;
                        }
                        // SAFETY: input plane c holds h rows of w floats (run()'s contract).
                        let line = unsafe { std::slice::from_raw_parts(src.get().add((c * g.h + iy) * g.w), g.w) };
                        for (xi, &xp) in ph.xs.iter().enumerate() {
                            // Phase column j holds padded column j·s1 + xp, input column j·s1 + xp − pl.
                            let lo = (pl.saturating_sub(xp)).div_ceil(s1);
                            let hi = ((g.w + pl).saturating_sub(xp).div_ceil(s1)).min(w2);
                            let plane_at = (c * per + yi * ph.xs.len() + xi) * plane + row * w2;
                            for j in lo..hi {
                                // SAFETY: j < w2 lies in the plane's row; tasks write disjoint channels.
                                unsafe { *dst.get().add(plane_at + j) = line[j * s1 + xp - pl] };
                            }
                        }
                    }
                }
            });
        }
        let taps = g.kh * g.kw;
        let offs: Vec<usize> = (0..self.k)
            .map(|k| {
                let (c, ty, tx) = (k / taps, k % taps / g.kw * d0, k % g.kw * d1);
                let yi = ph.ys.iter().position(|&v| v == ty % s0).unwrap_or(0);
                let xi = ph.xs.iter().position(|&v| v == tx % s1).unwrap_or(0);
                (c * per + yi * ph.xs.len() + xi) * plane + ty / s0 * w2 + tx / s1
            })
            .collect();
        let cols = (g.oh - 1) * w2 + g.ow;
        let sp = Split::new(self.m, self.k, cols);
        let base = SendPtr(pad.as_mut_ptr());
        pool::parallel_for(sp.tasks(), &|t| {
            let ((j0, j1), (blk0, blk1)) = sp.task(t);
            let segs: Vec<_> = (j0..j1).map(|j| segments(j * NR, NR.min(cols - j * NR), w2, g.ow)).collect();
            for chunk in 0..sp.chunks {
                let (k0, k1) = sp.k_range(chunk);
                let mut blk = blk0;
                while blk < blk1 {
                    let two = blk + 1 < blk1;
                    for (j, segs) in (j0..j1).zip(&segs) {
                        let q0 = j * NR;
                        // SAFETY: AVX-512 is present (the caller's contract); B's rows lie in the padded copy
                        // with its slack; blocks blk (and blk + 1) exist; segments address real outputs.
                        unsafe {
                            if two {
                                tile::<{ 2 * MR }>(self, blk, base.get(), &offs[k0..k1], q0, k0, k1, segs);
                            } else {
                                tile::<MR>(self, blk, base.get(), &offs[k0..k1], q0, k0, k1, segs);
                            }
                        }
                    }
                    blk += if two { 2 } else { 1 };
                }
            }
        });
        PADDED.set((pad, Some(*g)));
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the tasks that share it write disjoint planes or only read.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// Through a method, so closures capture the whole (Sync) wrapper rather than the raw pointer field.
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// The lanes of a tile of columns q0..q0 + n that are real outputs, one run per output row: (mask of
/// lanes 0..16, mask of lanes 16..32, what to add to a lane's q to get its output column).
fn segments(q0: usize, n: usize, w2: usize, ow: usize) -> Vec<(__mmask16, __mmask16, isize)> {
    let mut out = Vec::with_capacity(NR / w2.max(1) + 2);
    let mut q = q0;
    while q < q0 + n {
        let (oy, ox) = (q / w2, q % w2);
        let row_end = q - ox + w2;
        if ox < ow {
            let (lo, hi) = (q - q0, (q - ox + ow).min(q0 + n) - q0);
            let half = |h: usize| lanes(lo.max(h) - h, hi.max(h) - h);
            out.push((half(0), half(16), -((oy * (w2 - ow)) as isize)));
        }
        q = row_end;
    }
    out
}

/// Rows blk·MR.. (R = MR or 2·MR) against B's rows k0..k1, read at b + offs[k] + q0 (32 columns),
/// then the epilogue on the lanes `segs` names.
#[target_feature(enable = "avx512f,avx512vl,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    g: &FGemm,
    blk: usize,
    b: *const f32,
    offs: &[usize],
    q0: usize,
    k0: usize,
    k1: usize,
    segs: &[(__mmask16, __mmask16, isize)],
) {
    let rows = R.min(g.m - blk * MR);
    // SAFETY: each of the R rows' blocks holds K·MR floats; every B row read lies in the padded copy.
    unsafe {
        let pa = g.a.as_ptr().add(blk * g.k * MR);
        let wat = |kk: usize, r: usize| pa.add((r / MR) * g.k * MR + kk * MR + r % MR);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let bq = b.add(q0);
        for (i, &off) in offs.iter().enumerate() {
            let kk = k0 + i;
            let brow = bq.add(off);
            let (b0, b1) = (_mm512_loadu_ps(brow), _mm512_loadu_ps(brow.add(16)));
            for (r, a) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*wat(kk, r));
                a[0] = _mm512_fmadd_ps(av, b0, a[0]);
                a[1] = _mm512_fmadd_ps(av, b1, a[1]);
            }
        }
        // Loads and stores go through the segments: lane j of a segment with shift d is output column
        // q0 + j + d. Masked-off lanes are neither read nor written, so the base pointers may point outside
        // the row (wrapping arithmetic keeps computing them defined).
        let gather = |p: *const f32| {
            let mut v = [_mm512_setzero_ps(); 2];
            for &(m0, m1, d) in segs {
                let s = p.wrapping_offset(q0 as isize + d);
                v = [_mm512_mask_loadu_ps(v[0], m0, s), _mm512_mask_loadu_ps(v[1], m1, s.wrapping_add(16))];
            }
            v
        };
        let scatter = |p: *mut f32, v: [__m512; 2]| {
            for &(m0, m1, d) in segs {
                let s = p.wrapping_offset(q0 as isize + d);
                _mm512_mask_storeu_ps(s, m0, v[0]);
                _mm512_mask_storeu_ps(s.wrapping_add(16), m1, v[1]);
            }
        };
        // The accumulators are only read after the loop (see fgemm's tile).
        for (r, a) in acc.iter().enumerate().take(rows) {
            finish_row(g, blk * MR + r, *a, k0, k1, gather, scatter);
        }
    }
}
