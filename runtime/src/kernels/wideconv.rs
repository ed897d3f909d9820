//! Convolution and GEMM with 16-bit activations (the int16 layers of mixed precision; any mix of
//! u8/i8/i16 input and output storage): per output pixel, the input window minus its zero point is
//! gathered once as i32, then every output channel's exact dot product (i32 blocks, summed in i64) is
//! saturated to i32 and requantized as docs/semantics.md defines. A GEMM is the 1×1 case over
//! [rows, 1, 1, k]. Few layers run here, so this favours simple exact loops (vectorized by the compiler)
//! over hand-tuned speed; rows are spread over the thread pool.
use super::dwconv::DwGeom;
use super::elementwise::IntElem;
use super::epilogue::Epilogue;
use super::{multiversion, pool, Isa};

pub struct WideConv<'a> {
    pub isa: Isa,
    /// NHWC geometry; `c` is the input channels.
    pub g: DwGeom,
    /// Output channels.
    pub m: usize,
    pub groups: usize,
    pub x: *const u8,
    pub ex: IntElem,
    pub zx: i32,
    /// [m][kh][kw][c / groups]: weights minus their zero point.
    pub w: &'a [i32],
    pub bias: &'a [i32],
    pub epi: Epilogue<'a>,
    pub out: *mut u8,
    pub eo: IntElem,
}

// SAFETY: tasks read x and write disjoint output rows.
unsafe impl Sync for WideConv<'_> {}

impl WideConv<'_> {
    /// # Safety
    /// X must hold n·h·w·c elements of `ex` and out n·oh·ow·m of `eo`, not overlapping; `w` holds
    /// m·kh·kw·(c / groups) values and `bias` m.
    pub unsafe fn run(&self) {
        let g = self.g;
        let taps = g.kh * g.kw;
        // Depthwise with fewer than 128 taps: each product is below 2^16 · 2^8 in magnitude, so a sum of
        // fewer than 128 of them fits i32 exactly and the channel loop vectorizes. Weights go [tap][c].
        let dw = (self.groups == g.c && self.m == g.c && taps < 128).then(|| {
            let mut t = vec![0i32; taps * g.c];
            for c in 0..g.c {
                for tap in 0..taps {
                    t[tap * g.c + c] = self.w[c * taps + tap];
                }
            }
            t
        });
        pool::parallel_for(g.n * g.oh, &|t| {
            // SAFETY: row t of the output and the input rows it reads are inside the buffers.
            unsafe { self.row(t / g.oh, t % g.oh, dw.as_deref()) }
        });
    }

    unsafe fn row(&self, b: usize, oy: usize, dw: Option<&[i32]>) {
        let g = self.g;
        let (cg, mg) = (g.c / self.groups, self.m / self.groups);
        let taps = g.kh * g.kw;
        let mut patch = vec![0i32; taps * g.c];
        let (mut acc, mut sat, mut vals) = (vec![0i64; self.m], vec![0i32; self.m], vec![0i32; self.m]);
        for ox in 0..g.ow {
            // Taps outside the input hold the zero point: 0 after subtracting it.
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let row = &mut patch[(ky * g.kw + kx) * g.c..][..g.c];
                    let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
                    let ix = (ox * g.stride[1] + kx * g.dil[1]) as isize - g.pad[1] as isize;
                    if iy < 0 || iy >= g.h as isize || ix < 0 || ix >= g.w as isize {
                        row.fill(0);
                        continue;
                    }
                    let base = ((b * g.h + iy as usize) * g.w + ix as usize) * g.c;
                    // SAFETY: elements base..base + c lie inside x (run()'s contract).
                    unsafe { gather(self.ex, self.x, base, self.zx, row) };
                }
            }
            match dw {
                Some(wt) => dw_sums(self.isa, &patch, wt, self.bias, &mut acc),
                None => conv_sums(self.isa, &patch, self.w, self.bias, taps, cg, mg, &mut acc),
            }
            for (a, s) in sat.iter_mut().zip(&acc) {
                *a = (*s).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
            }
            let pixel = (b * g.oh + oy) * g.ow + ox;
            match self.epi.residual {
                Some(res) => {
                    for (c, (o, a)) in vals.iter_mut().zip(&sat).enumerate() {
                        // SAFETY: the residual has the output's pixels and channels (the compiler's layout).
                        *o = self.epi.value_with(*a, c, unsafe { res.diff(pixel, c) });
                    }
                }
                None => requant(self.isa, &sat, &self.epi, &mut vals),
            }
            // SAFETY: the pixel's m outputs lie inside out.
            unsafe { scatter(self.eo, self.out, pixel * self.m, &vals) };
        }
    }
}

// Every channel's accumulator requantized (Epilogue::value; the clamp path vectorizes).
multiversion!(
    fn requant(acc: &[i32], epi: &Epilogue, out: &mut [i32]) {
        for (c, (o, a)) in out.iter_mut().zip(acc).enumerate() {
            *o = epi.value(*a, c);
        }
    }
);

/// Stores one pixel's values (already inside the storage range) from `base` on.
///
/// # Safety
/// Out holds base + v.len() elements of `e`.
unsafe fn scatter(e: IntElem, out: *mut u8, base: usize, v: &[i32]) {
    // SAFETY: caller's contract.
    unsafe {
        match e {
            IntElem::U8 | IntElem::I8 => {
                std::slice::from_raw_parts_mut(out.add(base), v.len()).iter_mut().zip(v).for_each(|(o, x)| *o = *x as u8)
            }
            IntElem::I16 => {
                let p = (out as *mut i16).add(base);
                v.iter().enumerate().for_each(|(i, x)| p.add(i).write_unaligned(*x as i16))
            }
        }
    }
}

/// `out[i] = x[base + i] − zx` for the elements of one pixel.
///
/// # Safety
/// X holds base + out.len() elements of `e`.
unsafe fn gather(e: IntElem, x: *const u8, base: usize, zx: i32, out: &mut [i32]) {
    // SAFETY: caller's contract; the match is outside the loops so each one vectorizes.
    unsafe {
        match e {
            IntElem::U8 => std::slice::from_raw_parts(x.add(base), out.len()).iter().zip(out).for_each(|(v, o)| *o = *v as i32 - zx),
            IntElem::I8 => {
                std::slice::from_raw_parts(x.add(base) as *const i8, out.len()).iter().zip(out).for_each(|(v, o)| *o = *v as i32 - zx)
            }
            IntElem::I16 => {
                let p = (x as *const i16).add(base);
                out.iter_mut().enumerate().for_each(|(i, o)| *o = p.add(i).read_unaligned() as i32 - zx)
            }
        }
    }
}

// Depthwise: acc[c] = bias[c] + Σ_tap patch[tap][c] · wt[tap][c], summed in i32 (exact: fewer than 128
// taps, see run()).
multiversion!(
    fn dw_sums(patch: &[i32], wt: &[i32], bias: &[i32], acc: &mut [i64]) {
        let c = acc.len();
        let mut part = vec![0i32; c];
        for (xs, ws) in patch.chunks_exact(c).zip(wt.chunks_exact(c)) {
            for ((a, x), w) in part.iter_mut().zip(xs).zip(ws) {
                *a += x * w;
            }
        }
        for ((a, p), b) in acc.iter_mut().zip(&part).zip(bias) {
            *a = *p as i64 + *b as i64;
        }
    }
);

/// Products summed in i32 this many at a time: each is below 2^24 in magnitude, so 64 stay below 2^31.
const BLOCK: usize = 64;

// acc[o] = bias[o] + Σ_(tap, ci) patch[tap][group's c0 + ci] · w[o][tap][ci], exact.
multiversion!(
    fn conv_sums(patch: &[i32], w: &[i32], bias: &[i32], taps: usize, cg: usize, mg: usize, acc: &mut [i64]) {
        let c = patch.len() / taps.max(1);
        for (o, a) in acc.iter_mut().enumerate() {
            let c0 = (o / mg) * cg;
            let wo = &w[o * taps * cg..][..taps * cg];
            let mut s = bias[o] as i64;
            for tap in 0..taps {
                let (xs, ws) = (&patch[tap * c + c0..][..cg], &wo[tap * cg..][..cg]);
                for (xb, wb) in xs.chunks(BLOCK).zip(ws.chunks(BLOCK)) {
                    s += xb.iter().zip(wb).map(|(x, w)| x * w).sum::<i32>() as i64;
                }
            }
            *a = s;
        }
    }
);
