//! Property tests of the integer semantics in docs/semantics.md: quantize rounding and saturation,
//! dequantize round trips, dynamic quantization parameters, requantization with fused activations and
//! residuals, and qconv (with and without a residual) against its QDQ form.
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use qcc_ir::{Act, DType, ElemType, Op, QParams, QuantType, Tensor, Type};
use qcc_runtime::eval_op;
use qcc_runtime::qops::{Requant, Residual};
use qcc_runtime::quant::{dequantize, quantize, quantize_value};

fn qt(storage: DType, scale: f32, zp: i32) -> QuantType {
    QuantType::new(storage, QParams::PerTensor { scale, zp })
}

proptest! {
    #[test]
    fn quantize_is_round_half_even_and_saturates(x in -1e4f32..1e4, scale in 1e-3f32..10.0, zp in 0i32..=255) {
        let q = quantize_value(x, scale, zp, 0, 255);
        let r = (x / scale) as f64;
        let expect = (r.round_ties_even() + zp as f64).clamp(0.0, 255.0) as i64;
        prop_assert_eq!(q, expect);
        prop_assert!((0..=255).contains(&q));
    }

    #[test]
    fn dynamic_parameters_cover_the_range_and_keep_zero_exact(v in proptest::collection::vec(-50f32..50.0, 1..64), k in 0.0f32..3.0) {
        let x = ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.iter().map(|a| a * k).collect()).unwrap();
        let (scale, zp) = qcc_runtime::qops::dynamic_qparams(&x);
        prop_assert!(scale > 0.0 && (0..=255).contains(&zp));
        let t = qt(DType::U8, scale, zp);
        // Zero is exact, and every value is within half a step (plus f32 rounding) after the round trip.
        prop_assert_eq!(quantize_value(0.0, scale, zp, 0, 255), zp as i64);
        let back = dequantize(&quantize(&x, &t).unwrap(), &t).unwrap();
        for (a, b) in x.iter().zip(back.iter()) {
            prop_assert!((a - b).abs() <= scale * 0.5 + scale * 1e-3 + a.abs() * 1e-6, "{} -> {} (scale {})", a, b, scale);
        }
    }

    #[test]
    fn quantize_is_monotonic(a in -100f32..100.0, b in -100f32..100.0, scale in 1e-2f32..2.0, zp in -128i32..=127) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(quantize_value(lo, scale, zp, -128, 127) <= quantize_value(hi, scale, zp, -128, 127));
    }

    #[test]
    fn dequantize_then_quantize_is_identity(q in 0u8..=255, scale in 1e-4f32..100.0, zp in 0i32..=255) {
        let t = qt(DType::U8, scale, zp);
        let x = dequantize(&Tensor::U8(ArrayD::from_elem(IxDyn(&[1]), q)), &t).unwrap();
        let back = quantize(&x, &t).unwrap();
        prop_assert_eq!(back, Tensor::U8(ArrayD::from_elem(IxDyn(&[1]), q)));
    }

    #[test]
    fn quantize_error_is_at_most_half_a_step(x in -10f32..10.0, scale in 0.05f32..1.0) {
        let t = qt(DType::I16, scale, 0);
        let xa = ArrayD::from_elem(IxDyn(&[1]), x);
        let back = dequantize(&quantize(&xa, &t).unwrap(), &t).unwrap();
        prop_assert!((back[[0]] - x).abs() <= scale * 0.5 * (1.0 + 1e-5));
    }

    #[test]
    fn relu_and_clip_requant_are_clamps_of_the_plain_requant(acc in -100000i64..100000, sx in 1e-3f32..0.1, sw in 1e-3f32..0.1, sy in 1e-3f32..0.5, zy in 0i32..=255) {
        let out = qt(DType::U8, sy, zy);
        let plain = Requant::new(sx, &[sw], &out, None).unwrap().apply(acc, 0);
        let relu = Requant::new(sx, &[sw], &out, Some(Act::Relu)).unwrap().apply(acc, 0);
        prop_assert_eq!(relu, plain.max(zy as i64));
        let clip = Requant::new(sx, &[sw], &out, Some(Act::Clip { min: 0.0, max: 6.0 })).unwrap().apply(acc, 0);
        let hi = quantize_value(6.0, sy, zy, 0, 255);
        prop_assert_eq!(clip, plain.max(zy as i64).min(hi));
    }

    #[test]
    fn a_residual_adds_its_real_value_before_the_one_rounding(acc in -100000i64..100000, r in 0i64..=255, zr in 0i32..=255, sr in 1e-3f32..0.1, sx in 1e-3f32..0.1, sw in 1e-3f32..0.1, sy in 1e-2f32..0.5, zy in 0i32..=255, relu in proptest::bool::ANY) {
        let out = qt(DType::U8, sy, zy);
        let act = relu.then_some(Act::Relu);
        let mut rq = Requant::new(sx, &[sw], &out, act).unwrap();
        rq.residual = Some(Residual::new(sr, zr, sy));
        // At its zero point the residual is a real 0: exactly the plain requantization.
        prop_assert_eq!(rq.apply_residual(acc, 0, zr as i64), rq.apply(acc, 0));
        // Otherwise within one step of rounding the exact real sum once.
        let real = acc as f64 * sx as f64 * sw as f64 + (r - zr as i64) as f64 * sr as f64;
        let lo = if relu { zy as f64 } else { 0.0 };
        let exact = ((real / sy as f64).round() + zy as f64).clamp(lo, 255.0) as i64;
        prop_assert!((rq.apply_residual(acc, 0, r) - exact).abs() <= 1);
    }

    #[test]
    fn qconv_is_within_two_steps_of_its_qdq_form(seed in 0u64..10_000, zx in 0i32..=255, stride in 1i64..=2, group_dw in proptest::bool::ANY, residual in proptest::bool::ANY) {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = move || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
        let (c, m) = if group_dw { (4, 4) } else { (3, 5) };
        let group = if group_dw { 4 } else { 1 };
        let x: Vec<u8> = (0..c * 36).map(|_| next() as u8).collect();
        let w: Vec<i8> = (0..m * (c / group) * 9).map(|_| ((next() % 255) as i64 - 127) as i8).collect();
        let b: Vec<i32> = (0..m).map(|_| (next() % 2001) as i32 - 1000).collect();
        let (sx, sy) = (0.02f32, 0.05f32);
        let sw: Vec<f32> = (0..m).map(|i| 0.001 + i as f32 * 0.0005).collect();
        let xq = qt(DType::U8, sx, zx);
        let mut wq = QuantType::new(DType::I8, QParams::PerAxis { axis: 0, scales: sw.clone(), zps: vec![0; m] });
        (wq.qmin, wq.qmax) = (-127, 127);
        let bq = QuantType::new(DType::I32, QParams::PerAxis { axis: 0, scales: sw.iter().map(|w| ((sx as f64) * (*w as f64)) as f32).collect(), zps: vec![0; m] });
        let yq = qt(DType::U8, sy, 10);
        let xt = Tensor::U8(ArrayD::from_shape_vec(IxDyn(&[1, c, 6, 6]), x).unwrap());
        let wt = Tensor::I8(ArrayD::from_shape_vec(IxDyn(&[m, c / group, 3, 3]), w).unwrap());
        let bt = Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[m]), b.clone()).unwrap());
        let o = (6 + 2 - 3) / stride as usize + 1;
        let ty = |q: &QuantType, shape: &[usize]| Type::Tensor { elem: ElemType::Q(q.clone()), shape: shape.to_vec() };
        let (tx, tw, tb) = (ty(&xq, &[1, c, 6, 6]), ty(&wq, &[m, c / group, 3, 3]), ty(&bq, &[m]));
        let tyy = ty(&yq, &[1, m, o, o]);
        // A residual (the output's shape, its own parameters) on half the cases.
        let rq = qt(DType::U8, 0.03, 100);
        let rt = Tensor::U8(ArrayD::from_shape_vec(IxDyn(&[1, m, o, o]), (0..m * o * o).map(|_| next() as u8).collect()).unwrap());
        let tr = ty(&rq, &[1, m, o, o]);
        let qop = Op::QConv { strides: vec![stride, stride], pads: vec![1; 4], dilations: vec![1, 1], group: group as i64, act: Some(Act::Relu) };
        let (mut qins, mut qtys) = (vec![&xt, &wt, &bt], vec![&tx, &tw, &tb]);
        if residual {
            qins.push(&rt);
            qtys.push(&tr);
        }
        let got = eval_op(&qop, &qins, &qtys, &tyy).unwrap();
        // The QDQ form: dequantize, float conv (plus the dequantized residual), quantize.
        let xf = Tensor::F32(dequantize(&xt, &xq).unwrap());
        let wf = Tensor::F32(dequantize(&wt, &wq).unwrap());
        let bf = Tensor::F32(dequantize(&bt, &bq).unwrap());
        let rf = Tensor::F32(dequantize(&rt, &rq).unwrap());
        let fop = Op::Conv { strides: vec![stride, stride], pads: vec![1; 4], dilations: vec![1, 1], group: group as i64, act: Some(Act::Relu) };
        let f32t = |s: &[usize]| Type::f32(s.to_vec());
        let ftys = [f32t(&[1, c, 6, 6]), f32t(&[m, c / group, 3, 3]), f32t(&[m]), f32t(&[1, m, o, o])];
        let n = if residual { 4 } else { 3 };
        let fins = [&xf, &wf, &bf, &rf];
        let yf = eval_op(&fop, &fins[..n], &ftys.iter().take(n).collect::<Vec<_>>(), &f32t(&[1, m, o, o])).unwrap();
        let want = quantize(yf.as_f32().unwrap(), &yq).unwrap();
        let (g, w) = (got.to_i64_vec().unwrap(), want.to_i64_vec().unwrap());
        for (a, b) in g.iter().zip(&w) {
            prop_assert!((a - b).abs() <= 2, "qconv {a} vs QDQ {b}");
        }
    }
}
