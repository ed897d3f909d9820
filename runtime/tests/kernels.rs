//! Property tests of the kernels against scalar references written from docs/semantics.md: every ISA
//! variant this CPU runs, on random shapes, zero points, strides, dilations, paddings and channel counts
//! (tails of every width, the depthwise kernel's folded narrow layers), byte for byte.
use proptest::prelude::*;
use qcc_runtime::kernels::dwconv::{pair_weights, DwConv, DwGeom};
use qcc_runtime::kernels::dwvnni;
use qcc_runtime::kernels::epilogue::Epilogue;
use qcc_runtime::kernels::Isa;

fn isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni].into_iter().filter(|i| i.supported()).collect()
}

/// A small deterministic generator for the tensors of one case.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u32) as i32
    }
}

#[derive(Debug, Clone)]
struct DwCase {
    g: DwGeom,
    /// Weight magnitude bound: 127 fits the VNNI kernel's i8, 255 does not.
    wmax: i32,
    zx: i32,
    xor: bool,
    /// The clamp range inside the output storage (i8 or u8) and the zero point.
    qlo: i32,
    qhi: i32,
    zy: i32,
    seed: u64,
}

fn dw_case() -> impl Strategy<Value = DwCase> {
    let shape = (1usize..=70, 1usize..=9, 1usize..=11, 1usize..=5, 1usize..=5, 1usize..=2, 1usize..=2, 1usize..=2);
    let quant = (prop_oneof![Just(127), Just(255)], 0i32..=255, any::<bool>(), any::<bool>(), 0i32..=255, 0i32..=255, 0i32..=255);
    (shape, (0usize..=4, 0usize..=4, 0usize..=4, 0usize..=4), quant, any::<u64>()).prop_filter_map(
        "the window must fit the padded input",
        |((c, h, w, kh, kw, sy, sx, dil), (pt, pl, pb, pr), (wmax, zx, xor, signed, a, b, zy), seed)| {
            let (ekh, ekw) = ((kh - 1) * dil + 1, (kw - 1) * dil + 1);
            if h + pt + pb < ekh || w + pl + pr < ekw || pt >= ekh || pl >= ekw {
                return None;
            }
            let (oh, ow) = ((h + pt + pb - ekh) / sy + 1, (w + pl + pr - ekw) / sx + 1);
            let off = if signed { -128 } else { 0 };
            let g = DwGeom { n: 1 + (seed % 2) as usize, h, w, c, oh, ow, kh, kw, stride: [sy, sx], pad: [pt, pl], dil: [dil, dil] };
            Some(DwCase { g, wmax, zx, xor, qlo: a.min(b) + off, qhi: a.max(b) + off, zy: zy + off, seed })
        },
    )
}

/// The depthwise convolution of docs/semantics.md: acc = bias + Σ taps inside the input of
/// (x − zx) · w, requantized by the scalar epilogue.
fn dw_reference(t: &DwCase, x: &[u8], wts: &[i32], bias: &[i32], epi: &Epilogue) -> Vec<u8> {
    let g = t.g;
    let mut out = vec![0u8; g.n * g.oh * g.ow * g.c];
    for b in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for ch in 0..g.c {
                    let mut acc = bias[ch] as i64;
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
                            let ix = (ox * g.stride[1] + kx * g.dil[1]) as isize - g.pad[1] as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                let v = x[((b * g.h + iy as usize) * g.w + ix as usize) * g.c + ch] ^ if t.xor { 0x80 } else { 0 };
                                acc += (v as i64 - t.zx as i64) * wts[(ky * g.kw + kx) * g.c + ch] as i16 as i64;
                            }
                        }
                    }
                    out[((b * g.oh + oy) * g.ow + ox) * g.c + ch] = epi.value(acc as i32, ch) as u8;
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn depthwise_kernels_equal_the_reference(t in dw_case()) {
        let g = t.g;
        let mut r = Lcg(t.seed);
        let x: Vec<u8> = (0..g.n * g.h * g.w * g.c).map(|_| r.next() as u8).collect();
        let mut wts: Vec<i32> = (0..g.kh * g.kw * g.c).map(|_| r.range(-t.wmax, t.wmax) as i16 as u16 as i32).collect();
        if t.wmax > 127 {
            // At least one weight outside i8.
            wts[0] = -200i16 as u16 as i32;
        }
        let bias: Vec<i32> = (0..g.c).map(|_| r.range(-20000, 20000)).collect();
        let bias_full: Vec<i32> =
            (0..g.c).map(|ch| bias[ch] - t.zx * (0..g.kh * g.kw).map(|k| wts[k * g.c + ch] as i16 as i32).sum::<i32>()).collect();
        let mult: Vec<f32> = (0..g.c).map(|_| 1e-4 + (r.next() % 1000) as f32 * 2e-5).collect();
        let epi = Epilogue { mult: &mult, zy: t.zy, qlo: t.qlo, qhi: t.qhi, float_act: None, residual: None };
        let want = dw_reference(&t, &x, &wts, &bias, &epi);
        let pairs = pair_weights(&wts, g.kh * g.kw, g.c);
        let table = dwvnni::table(&wts, &g, &bias_full, &mult, None);
        prop_assert_eq!(table.is_some(), t.wmax <= 127);
        for isa in isas() {
            // The AVX-512 variant twice: with the VNNI table and with the vpmaddwd kernel it falls back to.
            let tables: &[&[i32]] = if isa == Isa::Avx512Vnni { &[table.as_deref().unwrap_or(&[]), &[]] } else { &[&[]] };
            for vnni in tables {
                // Guard bytes after the output catch stores past its end.
                let mut out = vec![0xa5u8; want.len() + 64];
                let d = DwConv {
                    isa,
                    g,
                    x: x.as_ptr(),
                    zx: t.zx,
                    xor: t.xor,
                    wts: &wts,
                    pairs: if isa == Isa::Avx512Vnni { &pairs } else { &[] },
                    vnni,
                    bias: &bias,
                    bias_full: &bias_full,
                    sat: None,
                    epi,
                    out: out.as_mut_ptr(),
                };
                // SAFETY: x and out are sized for g (out with slack the kernel must not touch).
                unsafe { d.run() };
                prop_assert_eq!(&out[..want.len()], &want[..], "{:?} with {} table entries", isa, vnni.len());
                prop_assert!(out[want.len()..].iter().all(|&b| b == 0xa5), "{:?} wrote past the output", isa);
            }
        }
    }
}
