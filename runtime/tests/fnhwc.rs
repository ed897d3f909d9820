//! Property tests of the channels-last f32 kernels (fnhwc.rs) against direct scalar evaluations of
//! their definitions: random geometries (kernel sizes, strides, dilations, paddings), channel counts with
//! tails of every width, groups read from wider pixels or NCHW planes, residuals, both output layouts and
//! activations, on every ISA this CPU runs (AVX-512 and the portable fallback). Float sums may differ in
//! order, so results are compared within a relative tolerance.
use proptest::prelude::*;
use qcc_ir::Act;
use qcc_runtime::kernels::dwconv::DwGeom;
use qcc_runtime::kernels::fnhwc::{pack_conv_weights, FAvgPool, FConvNhwc, FDwNhwc, FGroupNhwc};
use qcc_runtime::kernels::rows::RowKernel;
use qcc_runtime::kernels::Isa;

fn isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx512Vnni].into_iter().filter(|i| i.supported()).collect()
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2862933555777941757).wrapping_add(3037000493);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn close(got: &[f32], want: &[f32]) -> Result<(), String> {
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        if (a - b).abs() > 1e-5 * scale * 16.0 && !(a.is_infinite() && a == b) {
            return Err(format!("element {i}: got {a}, want {b}"));
        }
    }
    Ok(())
}

/// A window geometry with at least one output pixel.
fn geom() -> impl Strategy<Value = DwGeom> {
    (1usize..4, 1usize..4, 1usize..3, 1usize..3, 0usize..3, 1usize..3, 2usize..12, 2usize..12).prop_filter_map(
        "window larger than the padded image",
        |(kh, kw, sy, sx, pad, dil, h, w)| {
            let pad = pad.min(kh.min(kw) - 1);
            let span = |k: usize| (k - 1) * dil + 1;
            let (ph, pw) = (h + 2 * pad, w + 2 * pad);
            if span(kh) > ph || span(kw) > pw {
                return None;
            }
            let (oh, ow) = ((ph - span(kh)) / sy + 1, (pw - span(kw)) / sx + 1);
            Some(DwGeom { n: 1, h, w, c: 1, oh, ow, kh, kw, stride: [sy, sx], pad: [pad, pad], dil: [dil, dil] })
        },
    )
}

/// x at pixel (iy, ix) of the window of output (oy, ox), tap (ky, kx): None in the padding.
fn at(g: &DwGeom, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
    let ix = (ox * g.stride[1] + kx * g.dil[1]) as isize - g.pad[1] as isize;
    (iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w).then_some((iy as usize, ix as usize))
}

/// The convolution by its definition: input pixels ldx floats apart from channel `extra`, weights
/// [m][cin][kh][kw], output (and residual) at q·ldo + o·cso.
#[allow(clippy::too_many_arguments)]
fn reference_conv(
    g: &DwGeom,
    x: &[f32],
    ldx: usize,
    extra: usize,
    w: &[f32],
    m: usize,
    bias: &[f32],
    res: Option<&[f32]>,
    act: Option<Act>,
    ldo: usize,
    cso: usize,
) -> Vec<f32> {
    let (p, cin) = (g.oh * g.ow, g.c);
    let mut want = vec![0f32; p * m];
    for q in 0..p {
        let (oy, ox) = (q / g.ow, q % g.ow);
        for o in 0..m {
            let mut s = bias[o];
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    if let Some((iy, ix)) = at(g, oy, ox, ky, kx) {
                        for c in 0..cin {
                            s += w[((o * cin + c) * g.kh + ky) * g.kw + kx] * x[(iy * g.w + ix) * ldx + extra + c];
                        }
                    }
                }
            }
            s += res.map_or(0.0, |r| r[q * ldo + o * cso]);
            want[q * ldo + o * cso] = act.map_or(s, |f| f.apply(s));
        }
    }
    want
}

/// Weights too large for L2 go panel by panel, K in parts with partial sums in the output (here 2.2 MB of
/// weights, 3 parts of 3 taps, a 16-lane last panel), the next part's weights prefetched.
#[test]
fn large_weights_are_taken_in_parts() {
    for stride in [1, 2] {
        let (cin, m) = (300, 200);
        let o = 14 / stride;
        let g = DwGeom { n: 1, h: 14, w: 14, c: cin, oh: o, ow: o, kh: 3, kw: 3, stride: [stride, stride], pad: [1, 1], dil: [1, 1] };
        let x = values(14 * 14 * cin, 7);
        let w = values(m * cin * 9, 8);
        let bias = values(m, 9);
        let r = values(o * o * m, 10);
        let act = Some(Act::Relu);
        let want = reference_conv(&g, &x, cin, 0, &w, m, &bias, Some(&r), act, m, 1);
        let packed = pack_conv_weights(m, cin, 3, 3, |oc, c, ky, kx| w[((oc * cin + c) * 3 + ky) * 3 + kx]);
        for isa in isas() {
            let mut out = vec![f32::NAN; o * o * m];
            let k = FConvNhwc {
                isa,
                g,
                x: x.as_ptr(),
                ldx: cin,
                nchw: false,
                m,
                w: &packed,
                bias: Some(&bias),
                act,
                res: Some(r.as_ptr()),
                out: out.as_mut_ptr(),
                ldo: m,
                cso: 1,
            };
            // SAFETY: every buffer has the extent the kernel's contract asks for.
            unsafe { k.run() };
            close(&out, &want).unwrap_or_else(|e| panic!("{isa:?}, stride {stride}: {e}"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]
    #[test]
    fn convolution_equals_the_definition(g0 in geom(), cin in 1usize..20, extra in 0usize..5, m in 1usize..150,
                                         res in any::<bool>(), act in 0usize..3, nchw in any::<bool>(), nchw_in in any::<bool>(),
                                         seed in any::<u64>()) {
        let g = DwGeom { c: cin, ..g0 };
        let (ldx, p) = (cin + extra, g.oh * g.ow);
        // The group reads channels `extra`.. of each wider pixel.
        let x = values(g.h * g.w * ldx, seed);
        let w = values(m * cin * g.kh * g.kw, seed ^ 1);
        let bias = values(m, seed ^ 2);
        let r = values(p * m, seed ^ 3);
        let act = [None, Some(Act::Clip { min: -0.5, max: 0.75 }), Some(Act::Sigmoid)][act];
        // NHWC output, or NCHW (a graph output).
        let (ldo, cso) = if nchw { (1, p) } else { (m, 1) };
        let want = reference_conv(&g, &x, ldx, extra, &w, m, &bias, res.then_some(&r[..]), act, ldo, cso);
        // The same image as NCHW planes (a graph input), which the kernel copies channels-last itself.
        let planes: Vec<f32> = (0..cin * g.h * g.w).map(|i| x[(i % (g.h * g.w)) * ldx + extra + i / (g.h * g.w)]).collect();
        let packed = pack_conv_weights(m, cin, g.kh, g.kw, |o, c, ky, kx| w[((o * cin + c) * g.kh + ky) * g.kw + kx]);
        for isa in isas() {
            let mut out = vec![f32::NAN; p * m];
            let k = FConvNhwc {
                isa, g, x: if nchw_in { planes.as_ptr() } else { x[extra..].as_ptr() }, ldx, nchw: nchw_in, m, w: &packed,
                bias: Some(&bias), act,
                res: res.then_some(r.as_ptr()), out: out.as_mut_ptr(), ldo, cso,
            };
            // SAFETY: every buffer has the extent the kernel's contract asks for.
            unsafe { k.run() };
            prop_assert!(close(&out, &want).is_ok(), "{isa:?}: {}", close(&out, &want).unwrap_err());
        }
    }

    #[test]
    fn small_groups_equal_the_definition(g0 in geom(), mgl in 0usize..4, cgs in 1usize..17, groups in 1usize..7, n in 1usize..3,
                                         seed in any::<u64>()) {
        // Groups of mg = 1, 2, 4 or 8 outputs and cg ≤ 2·mg inputs (the kernel's range), several blocks
        // of 16 lanes and a partial last one.
        let mg = 1 << mgl;
        let cg = 1 + (cgs - 1) % (2 * mg);
        prop_assume!(FGroupNhwc::fits(mg, cg));
        let (m, c) = (groups * mg, groups * cg);
        let g = DwGeom { c, n, ..g0 };
        let taps = g.kh * g.kw;
        let x = values(n * g.h * g.w * c, seed);
        let w = values(taps * cg * m, seed ^ 1);
        let bias = values(m, seed ^ 2);
        let act = Some(Act::Clip { min: -0.5, max: 0.75 });
        let mut want = vec![0f32; n * g.oh * g.ow * m];
        for img in 0..n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    for o in 0..m {
                        let mut s = bias[o];
                        for t in 0..taps {
                            if let Some((iy, ix)) = at(&g, oy, ox, t / g.kw, t % g.kw) {
                                for ci in 0..cg {
                                    s += w[(t * cg + ci) * m + o] * x[((img * g.h + iy) * g.w + ix) * c + (o / mg) * cg + ci];
                                }
                            }
                        }
                        want[((img * g.oh + oy) * g.ow + ox) * m + o] = act.map_or(s, |f| f.apply(s));
                    }
                }
            }
        }
        for isa in isas() {
            let mut out = vec![f32::NAN; want.len()];
            // SAFETY: every buffer has the extent the kernel's contract asks for.
            unsafe { FGroupNhwc { isa, g, x: x.as_ptr(), m, mg, w: &w, bias: Some(&bias), act, out: out.as_mut_ptr() }.run() };
            prop_assert!(close(&out, &want).is_ok(), "{isa:?}: {}", close(&out, &want).unwrap_err());
        }
    }

    #[test]
    fn depthwise_and_pooling_equal_the_definition(g0 in geom(), c in 1usize..150, n in 1usize..3, mode in 0usize..3,
                                                   seed in any::<u64>()) {
        let g = DwGeom { c, n, ..g0 };
        let x = values(n * g.h * g.w * c, seed);
        let w = values(g.kh * g.kw * c, seed ^ 1);
        let bias = values(c, seed ^ 2);
        let act = Some(Act::Relu);
        let mut want = vec![0f32; n * g.oh * g.ow * c];
        for img in 0..n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    for ch in 0..c {
                        let taps: Vec<(usize, f32)> = (0..g.kh * g.kw)
                            .filter_map(|t| at(&g, oy, ox, t / g.kw, t % g.kw).map(|(iy, ix)| (t, x[((img * g.h + iy) * g.w + ix) * c + ch])))
                            .collect();
                        let s = match mode {
                            0 => act.map_or(0.0, |f| f.apply(taps.iter().fold(bias[ch], |s, (t, v)| s + w[t * c + ch] * v))),
                            1 => taps.iter().fold(f32::NEG_INFINITY, |s, (_, v)| s.max(*v)),
                            // Average without the padding (count_include_pad = 0).
                            _ => taps.iter().map(|(_, v)| v).sum::<f32>() / taps.len().max(1) as f32,
                        };
                        want[((img * g.oh + oy) * g.ow + ox) * c + ch] = s;
                    }
                }
            }
        }
        // Average pooling has no dilation.
        prop_assume!(mode < 2 || g.dil == [1, 1]);
        for isa in isas() {
            let mut out = vec![f32::NAN; want.len()];
            // SAFETY: every buffer has the extent the kernels' contracts ask for.
            unsafe {
                match mode {
                    0 => FDwNhwc { isa, g, x: x.as_ptr(), w: &w, bias: Some(&bias), act, max: false, out: out.as_mut_ptr() }.run(),
                    1 => FDwNhwc { isa, g, x: x.as_ptr(), w: &[], bias: None, act: None, max: true, out: out.as_mut_ptr() }.run(),
                    _ => FAvgPool { x: x.as_ptr(), g, include_pad: false, taps: g.avg_pool_taps(g.pad), out: out.as_mut_ptr() }.run(),
                }
            }
            prop_assert!(close(&out, &want).is_ok(), "{isa:?}, mode {mode}: {}", close(&out, &want).unwrap_err());
        }
    }
}
