//! Property tests of the kernels against scalar references written from docs/semantics.md: every ISA
//! variant this CPU runs, on random shapes, zero points, strides, dilations, paddings and channel counts
//! (tails of every width, the depthwise kernel's folded narrow layers), byte for byte.
use proptest::prelude::*;
use qcc_runtime::kernels::dwconv::{pair_weights, DwConv, DwGeom};
use qcc_runtime::kernels::dwvnni;
use qcc_runtime::kernels::elementwise::IntElem;
use qcc_runtime::kernels::epilogue::{Epilogue, ResidualIn};
use qcc_runtime::kernels::rows::RowKernel;
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

#[derive(Debug, Clone)]
struct GemmCase {
    /// Rows (output pixels when `conv`), K, N.
    m: usize,
    k: usize,
    n: usize,
    /// An implicit convolution (VNNI): geometry, and whether segments are kernel rows (else taps).
    conv: Option<(DwGeom, bool)>,
    zx: i32,
    xor: bool,
    asym: bool,
    /// Multiplier scale: large ones drive sums past the clamp bounds and past i32 after scaling.
    mscale: f32,
    qlo: i32,
    qhi: i32,
    zy: i32,
    /// A fused residual input (stored like the output) and its multiplier.
    residual: Option<(i32, f32)>,
    /// With a tap convolution: input channels of other groups around the window's (the input's pixels
    /// are c + extra bytes apart, and the window reads the last c of each).
    extra: usize,
    seed: u64,
}

fn gemm_case() -> impl Strategy<Value = GemmCase> {
    let conv = prop_oneof![
        Just(None),
        (1usize..=4, 1usize..=3, 1usize..=9, 1usize..=9, 1usize..=3, 1usize..=2, 0usize..=1, any::<bool>()).prop_map(
            |(c, k, h, w, s, dil, pad, rows)| {
                // Taps need channels in groups of 4; row segments take any count.
                let c = if rows { c } else { 4 * c };
                let (ek, dil) = (if rows { k } else { (k - 1) * dil + 1 }, if rows { 1 } else { dil });
                let (hp, wp) = ((h + 2 * pad).max(ek), (w + 2 * pad).max(ek));
                let (h, w) = (hp - 2 * pad, wp - 2 * pad);
                let g = DwGeom {
                    n: 1,
                    h,
                    w,
                    c,
                    oh: (hp - ek) / s + 1,
                    ow: (wp - ek) / s + 1,
                    kh: k,
                    kw: k,
                    stride: [s, s],
                    pad: [pad, pad],
                    dil: [dil, dil],
                };
                Some((g, rows))
            }
        ),
    ];
    let quant = (
        0i32..=255,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(1e-4f32), Just(3e-3), Just(10.0), Just(1e4)],
        any::<bool>(),
        0i32..=255,
        0i32..=255,
        0i32..=255,
    );
    let residual = prop_oneof![Just(None), (0i32..=255, prop_oneof![Just(1e-3f32), Just(0.7), Just(300.0)]).prop_map(Some)];
    (1usize..=40, 1usize..=70, 1usize..=140, conv, quant, residual, 0usize..=2, any::<u64>()).prop_map(
        |(m, k, n, conv, (zx, xor, asym, mscale, signed, a, b, zy), residual, extra, seed)| {
            let off = if signed { -128 } else { 0 };
            let (m, k) = match conv {
                Some((g, _)) => (g.oh * g.ow, g.kh * g.kw * g.c),
                None => (m, k),
            };
            // Row segments are for symmetric weights only (the compiler's rule).
            let asym = asym && !conv.is_some_and(|(_, rows)| rows);
            // The residual is stored like the output (its zero point in the same range).
            let residual = residual.map(|(zr, mult)| (zr + off, mult));
            // Row segments read whole kernel rows: ungrouped inputs only (the compiler's rule).
            let extra = if conv.is_some_and(|(_, rows)| !rows) { 4 * extra } else { 0 };
            GemmCase { m, k, n, conv, zx, xor, asym, mscale, qlo: a.min(b) + off, qhi: a.max(b) + off, zy: zy + off, residual, extra, seed }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]
    #[test]
    fn gemm_kernels_equal_the_reference(t in gemm_case()) {
        use qcc_runtime::kernels::gemm::{pack_b, packed_dims, Gemm};
        let mut r = Lcg(t.seed);
        let flip = if t.xor { 0x80u8 } else { 0 };
        // The logical operands: a as rows of K bytes (im2col order (ky, kx, c) for a convolution, padding
        // taps at the zero point), w as K × N.
        let (x, a): (Vec<u8>, Vec<u8>) = match t.conv {
            Some((g, _)) => {
                let x: Vec<u8> = (0..g.h * g.w * (g.c + t.extra)).map(|_| r.next() as u8).collect();
                let mut a = Vec::with_capacity(t.m * t.k);
                for p in 0..t.m {
                    let (oy, ox) = (p / g.ow, p % g.ow);
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
                            let ix = (ox * g.stride[1] + kx * g.dil[1]) as isize - g.pad[1] as isize;
                            let inside = iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w;
                            for ch in 0..g.c {
                                let at = || (iy as usize * g.w + ix as usize) * (g.c + t.extra) + t.extra + ch;
                                a.push(if inside { x[at()] } else { t.zx as u8 ^ flip });
                            }
                        }
                    }
                }
                (x, a)
            }
            None => {
                let a: Vec<u8> = (0..t.m * t.k).map(|_| r.next() as u8).collect();
                (a.clone(), a)
            }
        };
        let w: Vec<i8> = (0..t.k * t.n).map(|_| r.range(-127, 127) as i8).collect();
        let zw: Vec<i32> = (0..t.n).map(|_| if t.asym { r.range(-20, 20) } else { 0 }).collect();
        let bias: Vec<i32> = (0..t.n).map(|_| r.range(-30000, 30000)).collect();
        let mult: Vec<f32> = (0..t.n).map(|_| t.mscale * (0.5 + (r.next() % 1000) as f32 / 1000.0)).collect();
        let res_bytes: Vec<u8> = (0..t.m * t.n + 64).map(|_| r.next() as u8).collect();
        let elem = if t.qlo < 0 { IntElem::I8 } else { IntElem::U8 };
        let residual = t.residual.map(|(zp, mult)| ResidualIn { ptr: res_bytes.as_ptr(), elem, ld: t.n, zp, mult, scale: 0.0 });
        let epi = Epilogue { mult: &mult, zy: t.zy, qlo: t.qlo, qhi: t.qhi, float_act: None, residual };
        let mut want = vec![0u8; t.m * t.n];
        for i in 0..t.m {
            let row = &a[i * t.k..(i + 1) * t.k];
            let sum: i64 = row.iter().map(|v| (v ^ flip) as i64).sum();
            for j in 0..t.n {
                let dot: i64 = row.iter().enumerate().map(|(kk, v)| (v ^ flip) as i64 * w[kk * t.n + j] as i64).sum();
                let acc = (bias[j] as i64 + dot - zw[j] as i64 * sum) as i32;
                // SAFETY: the residual holds m rows of n channels.
                let d = residual.map_or(0, |res| unsafe { res.diff(i, j) });
                want[i * t.n + j] = epi.value_with(acc, j, d) as u8;
            }
        }
        // The kernels' layout of K: row segments pad each kernel row to a multiple of 4 with zero weights.
        let (kl, at): (usize, Box<dyn Fn(usize, usize) -> i8>) = match t.conv {
            Some((g, true)) => {
                let seg = (g.kw * g.c).div_ceil(4) * 4;
                let w = w.clone();
                (g.kh * seg, Box::new(move |kk, j| if kk % seg < g.kw * g.c { w[(kk / seg * g.kw * g.c + kk % seg) * t.n + j] } else { 0 }))
            }
            _ => {
                let w = w.clone();
                (t.k, Box::new(move |kk, j| w[kk * t.n + j]))
            }
        };
        let (_, np) = packed_dims(kl, t.n);
        let pad = vec![t.zx as u8 ^ flip; 64];
        for isa in isas() {
            if t.conv.is_some() && isa == Isa::Scalar {
                continue;
            }
            let b = pack_b(isa, kl, t.n, &*at);
            let mut biasp = bias.clone();
            biasp.resize(np, 0);
            let mut zwp = zw.clone();
            zwp.resize(np, 0);
            let mut multp = mult.clone();
            multp.resize(np, 0.0);
            // Inputs with slack: the kernels read up to 3 bytes past a row, as the arena allows.
            let mut xs = x.clone();
            xs.resize(x.len() + 64, 0);
            let mut out = vec![0xa5u8; want.len() + 64];
            let g = Gemm {
                isa,
                m: t.m,
                k: kl,
                n: t.n,
                // SAFETY: extra < the input's length.
                a: unsafe { xs.as_ptr().add(t.extra) },
                lda: t.conv.map_or(t.k, |(g, _)| g.c + t.extra),
                xor: t.xor,
                b: &b,
                bias: &biasp,
                zw: t.asym.then_some(&zwp[..]),
                sat: None,
                epi: Epilogue { mult: &multp, ..epi },
                out: out.as_mut_ptr(),
                ldo: t.n,
                conv: t.conv.map(|(g, _)| (g, pad.as_ptr())),
                conv_rows: t.conv.is_some_and(|(_, rows)| rows),
            };
            // SAFETY: a, out and the tables are sized for m, k, n (with slack) as run() requires.
            unsafe { g.run() };
            prop_assert_eq!(&out[..want.len()], &want[..], "{:?}", isa);
            prop_assert!(out[want.len()..].iter().all(|&v| v == 0xa5), "{:?} wrote past the output", isa);
            if t.conv.is_none() {
                // The strip entry generated loop nests call for plain GEMMs: strips starting off the
                // 4-row grid, every panel.
                let mut out2 = vec![0xa5u8; want.len() + 64];
                let g = Gemm { out: out2.as_mut_ptr(), ..g };
                let cut = t.m / 3;
                for c0 in (0..t.n).step_by(qcc_runtime::kernels::gemm::PANEL) {
                    let cols = (t.n - c0).min(qcc_runtime::kernels::gemm::PANEL);
                    for (r0, rend) in [(0, cut), (cut, t.m)] {
                        // SAFETY: rows r0..rend and the panel lie inside the product, as above.
                        unsafe { g.strip(r0, rend, c0, cols) };
                    }
                }
                prop_assert_eq!(&out2[..want.len()], &want[..], "{:?} strip", isa);
                prop_assert!(out2[want.len()..].iter().all(|&v| v == 0xa5), "{:?} strip wrote past the output", isa);
            }
        }
    }
}

/// One f32 depthwise case on every ISA against a direct sum (within float rounding), and nothing
/// written past the output.
#[allow(clippy::too_many_arguments)]
fn check_float_depthwise(
    (c, h, w, k): (usize, usize, usize, usize),
    (sy, sx): (usize, usize),
    (pt, pl, pb, pr): (usize, usize, usize, usize),
    act: Option<qcc_ir::Act>,
    seed: u64,
) -> Result<(), TestCaseError> {
    use qcc_runtime::kernels::fconv::FDwConv;
    let (pt, pl, pb, pr) = (pt.min(k - 1), pl.min(k - 1), pb.min(k - 1), pr.min(k - 1));
    if h + pt + pb < k || w + pl + pr < k {
        return Ok(());
    }
    let (oh, ow) = ((h + pt + pb - k) / sy + 1, (w + pl + pr - k) / sx + 1);
    let g = DwGeom { n: 1, h, w, c, oh, ow, kh: k, kw: k, stride: [sy, sx], pad: [pt, pl], dil: [1, 1] };
    let mut r = Lcg(seed);
    let f = |r: &mut Lcg| (r.next() % 2001) as f32 / 1000.0 - 1.0;
    let x: Vec<f32> = (0..c * h * w).map(|_| f(&mut r)).collect();
    let wt: Vec<f32> = (0..c * k * k).map(|_| f(&mut r)).collect();
    let bias: Vec<f32> = (0..c).map(|_| f(&mut r)).collect();
    let mut want = vec![0f32; c * oh * ow];
    for ch in 0..c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut s = bias[ch] as f64;
                for ky in 0..k {
                    for kx in 0..k {
                        let (iy, ix) = ((oy * sy + ky) as isize - pt as isize, (ox * sx + kx) as isize - pl as isize);
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            s += x[(ch * h + iy as usize) * w + ix as usize] as f64 * wt[(ch * k + ky) * k + kx] as f64;
                        }
                    }
                }
                want[(ch * oh + oy) * ow + ox] = act.map_or(s as f32, |a| a.apply(s as f32));
            }
        }
    }
    for isa in isas() {
        let mut out = vec![f32::NAN; want.len() + 16];
        let d = FDwConv { isa, g, x: x.as_ptr(), w: &wt, bias: Some(&bias), act, out: out.as_mut_ptr() };
        // SAFETY: x and out are sized for g (out with slack the kernel must not touch).
        unsafe { d.run() };
        for (i, (a, b)) in out.iter().zip(&want).enumerate() {
            prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{:?}: output {} is {} not {}", isa, i, a, b);
        }
        prop_assert!(out[want.len()..].iter().all(|v| v.is_nan()), "{:?} wrote past the output", isa);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]
    /// The f32 depthwise kernels (padded-plane AVX-512 and AVX2, masked, 16-channel narrow-plane and
    /// portable) agree with a direct sum within float rounding (their summation orders differ, as
    /// docs/semantics.md allows for floats).
    #[test]
    fn float_depthwise_kernels_match_the_direct_sum(
        (c, h, w, k, sy, sx, pt, pl, pb, pr) in (1usize..=20, 1usize..=40, 1usize..=40, prop_oneof![Just(1usize), Just(3), Just(5), Just(7)], 1usize..=2, 1usize..=2, 0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3),
        act in prop_oneof![Just(None), Just(Some(qcc_ir::Act::Relu)), Just(Some(qcc_ir::Act::Clip { min: -0.5, max: 0.5 })), Just(Some(qcc_ir::Act::LeakyRelu { alpha: 0.1 }))],
        seed in any::<u64>(),
    ) {
        check_float_depthwise((c, h, w, k), (sy, sx), (pt, pl, pb, pr), act, seed)?;
    }

    /// Large stride-2 planes, where the padded-plane kernel keeps a ring of rows instead of the whole copy.
    #[test]
    fn float_depthwise_large_strided_planes_match_the_direct_sum(
        (c, h, w, k, sx, pt, pl, pb, pr) in (1usize..=3, 80usize..=130, 60usize..=130, prop_oneof![Just(3usize), Just(5)], 1usize..=2, 0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
        act in prop_oneof![Just(None), Just(Some(qcc_ir::Act::Clip { min: -0.5, max: 0.5 }))],
        seed in any::<u64>(),
    ) {
        check_float_depthwise((c, h, w, k), (2, sx), (pt, pl, pb, pr), act, seed)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]
    /// The f32 GEMM (packed panels, K in chunks of 512 with partial sums in the output) agrees with a
    /// direct sum within float rounding, on convolutions whose windows it gathers itself (strides 1–3,
    /// dilations, asymmetric padding, a residual) and on plain matrices with a row pitch.
    #[test]
    fn float_gemm_matches_the_direct_sum(
        (c, h, w, m, k, s, d) in (1usize..=70, 1usize..=20, 1usize..=20, 1usize..=40, prop_oneof![Just(1usize), Just(3), Just(5)], 1usize..=3, 1usize..=2),
        (pt, pl, pb, pr) in (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
        act in prop_oneof![Just(None), Just(Some(qcc_ir::Act::Relu)), Just(Some(qcc_ir::Act::Clip { min: -0.5, max: 0.5 })), Just(Some(qcc_ir::Act::LeakyRelu { alpha: 0.1 }))],
        residual in any::<bool>(),
        matrix in any::<bool>(),
        seed in any::<u64>(),
    ) {
        use qcc_runtime::kernels::fgemm::{pack_a, FGemm, FSrc};
        let ke = (k - 1) * d + 1;
        prop_assume!(h + pt + pb >= ke && w + pl + pr >= ke);
        let (oh, ow) = ((h + pt + pb - ke) / s + 1, (w + pl + pr - ke) / s + 1);
        let g = DwGeom { n: 1, h, w, c, oh, ow, kh: k, kw: k, stride: [s, s], pad: [pt, pl], dil: [d, d] };
        let mut r = Lcg(seed);
        let f = |r: &mut Lcg| (r.next() % 2001) as f32 / 1000.0 - 1.0;
        // The matrix case reads a (c·k·k) x (oh·ow) matrix with a row pitch of ldb floats.
        let (kk, p) = (c * k * k, oh * ow);
        let ldb = p + (seed % 5) as usize;
        let x: Vec<f32> = (0..if matrix { kk * ldb } else { c * h * w }).map(|_| f(&mut r)).collect();
        let wt: Vec<f32> = (0..m * kk).map(|_| f(&mut r)).collect();
        let bias: Vec<f32> = (0..m).map(|_| f(&mut r)).collect();
        let res: Vec<f32> = (0..m * p).map(|_| f(&mut r)).collect();
        let col = |row: usize, q: usize| -> f64 {
            if matrix {
                return x[row * ldb + q] as f64;
            }
            let (ch, ky, kx, oy, ox) = (row / (k * k), row / k % k, row % k, q / ow, q % ow);
            let (iy, ix) = ((oy * s + ky * d) as isize - pt as isize, (ox * s + kx * d) as isize - pl as isize);
            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w { x[(ch * h + iy as usize) * w + ix as usize] as f64 } else { 0.0 }
        };
        let mut want = vec![0f32; m * p];
        for mm in 0..m {
            for q in 0..p {
                let mut sum = bias[mm] as f64 + if residual { res[mm * p + q] as f64 } else { 0.0 };
                for row in 0..kk {
                    sum += wt[mm * kk + row] as f64 * col(row, q);
                }
                want[mm * p + q] = act.map_or(sum as f32, |a| a.apply(sum as f32));
            }
        }
        let a = pack_a(m, kk, |row, q| wt[row * kk + q]);
        for isa in isas() {
            let mut out = vec![f32::NAN; want.len() + 16];
            let src = if matrix { FSrc::Matrix { b: x.as_ptr(), ldb } } else { FSrc::Conv { x: x.as_ptr(), g } };
            let gm = FGemm {
                isa, m, k: kk, p, a: &a, src, bias: Some(&bias), act,
                res: residual.then(|| res.as_ptr()), out: out.as_mut_ptr(), rs: p, cs: 1,
            };
            // SAFETY: x holds what src says, out m·p floats (with slack the kernel must not touch).
            unsafe { gm.run() };
            for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()) * (kk as f32).sqrt(), "{:?}: output {} is {} not {}", isa, i, a, b);
            }
            prop_assert!(out[want.len()..].iter().all(|v| v.is_nan()), "{:?} wrote past the output", isa);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]
    /// f32 max pooling equals the direct window maximum exactly (NaN never wins, padding never wins).
    #[test]
    fn float_max_pooling_equals_the_window_maximum(
        (c, h, w, k, s, d) in (1usize..=4, 1usize..=30, 1usize..=30, 1usize..=4, 1usize..=3, 1usize..=2),
        (pt, pl, pb, pr) in (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
        nan in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let ke = (k - 1) * d + 1;
        let (pt, pl, pb, pr) = (pt.min(k - 1), pl.min(k - 1), pb.min(k - 1), pr.min(k - 1));
        prop_assume!(h + pt + pb >= ke && w + pl + pr >= ke);
        let (oh, ow) = ((h + pt + pb - ke) / s + 1, (w + pl + pr - ke) / s + 1);
        let g = DwGeom { n: 1, h, w, c, oh, ow, kh: k, kw: k, stride: [s, s], pad: [pt, pl], dil: [d, d] };
        let mut r = Lcg(seed);
        let x: Vec<f32> = (0..c * h * w).map(|_| if nan && r.next() % 7 == 0 { f32::NAN } else { (r.next() % 2001) as f32 / 1000.0 - 1.0 }).collect();
        let mut want = vec![f32::NEG_INFINITY; c * oh * ow];
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = ((oy * s + ky * d) as isize - pt as isize, (ox * s + kx * d) as isize - pl as isize);
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                let v = x[(ch * h + iy as usize) * w + ix as usize];
                                let o = &mut want[(ch * oh + oy) * ow + ox];
                                if v > *o {
                                    *o = v;
                                }
                            }
                        }
                    }
                }
            }
        }
        for isa in isas() {
            let mut out = vec![7.0f32; want.len() + 16];
            // SAFETY: x and out are sized for g (out with slack the kernel must not touch).
            unsafe { RowKernel::run(&qcc_runtime::kernels::fpool::FMaxPool::new(isa, g, x.as_ptr(), out.as_mut_ptr())) };
            prop_assert_eq!(&out[..want.len()], &want[..], "{:?}", isa);
            prop_assert!(out[want.len()..].iter().all(|&v| v == 7.0), "{:?} wrote past the output", isa);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]
    /// Quantizing an NCHW image into NHWC integers gives the same bytes on every ISA (the AVX-512 path for
    /// three channels interleaves them in registers) as quantize_one element by element: NaN to the zero
    /// point, infinities and out-of-range values saturating.
    #[test]
    fn nchw_quantize_equals_quantize_one(
        (c, h, w) in (1usize..=4, 1usize..=70, 1usize..=70),
        (scale, zp, signed) in (0.001f32..2.0, -20i32..20, any::<bool>()),
        seed in any::<u64>(),
    ) {
        use qcc_runtime::kernels::elementwise::{quantize, quantize_one, IntElem};
        let mut r = Lcg(seed);
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.5 * scale, -1.5 * scale, 2.5 * scale];
        let x: Vec<f32> = (0..c * h * w)
            .map(|_| if r.next() % 13 == 0 { specials[(r.next() % 6) as usize] } else { (r.next() % 100_001) as f32 / 100.0 - 500.0 })
            .collect();
        let (elem, lo, hi, zp) = if signed { (IntElem::I8, -128, 127, zp) } else { (IntElem::U8, 0, 255, zp.abs()) };
        let mut want = vec![0u8; x.len()];
        for ch in 0..c {
            for p in 0..h * w {
                want[p * c + ch] = quantize_one(x[ch * h * w + p], scale, zp, lo, hi) as u8;
            }
        }
        for isa in isas() {
            let mut out = vec![0xa5u8; x.len() + 64];
            // SAFETY: x holds the image, out its bytes (with slack the kernel must not touch).
            unsafe { quantize(isa, x.as_ptr(), x.len(), Some([1, c, h, w]), scale, zp, lo, hi, elem, out.as_mut_ptr()) };
            prop_assert_eq!(&out[..want.len()], &want[..], "{:?}", isa);
            prop_assert!(out[want.len()..].iter().all(|&v| v == 0xa5), "{:?} wrote past the output", isa);
        }
    }
}
