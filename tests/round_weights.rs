//! round-weights end to end: a small conv net calibrated on smooth (spatially correlated) images is
//! quantized with weights rounded to nearest and with round-weights; on images it was not calibrated on,
//! the rounded network's output is closer to float under every weight scheme, its integers differ from
//! nearest, and the scales stay place-qdq's.
mod common;
use common::{ints, values, Builder};
use qcc::calib::{calibrate, quant_config, CalibOptions, CalibSet, Calibrated};
use qcc_ir::{Graph, Op, Tensor};
use qcc_passes::{Instrumentation, OptLevel};

fn net() -> Builder {
    let mut b = Builder::new();
    b.input("x", &[1, 3, 12, 12]).output("y", &[1, 10]);
    let w = |n: usize, seed: u32, s: f32| values(n, seed).iter().map(|v| v * s).collect::<Vec<f32>>();
    b.init("w0", &[16, 3, 3, 3], w(16 * 27, 1, 0.4)).init("b0", &[16], w(16, 2, 0.1));
    b.init("w1", &[24, 16, 3, 3], w(24 * 144, 3, 0.12)).init("b1", &[24], w(24, 4, 0.1));
    b.init("wfc", &[10, 24], w(240, 5, 0.3)).init("bfc", &[10], w(10, 6, 0.1));
    b.init_i64("shape", &[2], vec![1, -1]);
    b.node("Conv", "conv0", &["x", "w0", "b0"], &["c0"], vec![ints("pads", &[1, 1, 1, 1])]);
    b.node("Relu", "relu0", &["c0"], &["r0"], vec![]);
    b.node("Conv", "conv1", &["r0", "w1", "b1"], &["c1"], vec![ints("pads", &[1, 1, 1, 1]), ints("strides", &[2, 2])]);
    b.node("Relu", "relu1", &["c1"], &["r1"], vec![]);
    b.node("GlobalAveragePool", "gap", &["r1"], &["p"], vec![]);
    b.node("Reshape", "flat", &["p", "shape"], &["f"], vec![]);
    b.node("Gemm", "fc", &["f", "wfc", "bfc"], &["y"], vec![common::int("transB", 1)]);
    b
}

/// A smooth image: each channel a sum of a few low-frequency waves, so neighbouring pixels and the
/// channels of each pixel are correlated (as in photographs).
fn image(seed: u32) -> Tensor {
    let p = values(12, seed);
    let mut data = vec![0f32; 3 * 144];
    for c in 0..3 {
        for y in 0..12 {
            for x in 0..12 {
                let (fy, fx) = (y as f32 / 12.0, x as f32 / 12.0);
                data[(c * 12 + y) * 12 + x] =
                    p[0] + p[c + 1] * (3.0 * fy + p[4]).sin() + p[c + 5] * (2.5 * fx + p[8]).cos() + 0.3 * p[9 + c] * fx * fy;
            }
        }
    }
    Tensor::from_f32(&[1, 3, 12, 12], data).unwrap()
}

fn calibrated() -> (Graph, Calibrated) {
    // Tests run in parallel: each call gets its own folder.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("qcc-round-weights-{}-{k}", std::process::id()));
    let cal = d.join("calib");
    std::fs::create_dir_all(&cal).unwrap();
    let model = d.join("net.onnx");
    std::fs::write(&model, net().bytes()).unwrap();
    for i in 0..24 {
        qcc::npy::write_npy(&cal.join(format!("s{i:02}.npy")), &image(100 + i)).unwrap();
    }
    let g = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
    let set = CalibSet::open(&cal, &["x".to_string()], None, None).unwrap();
    let inst = Instrumentation { verify: true, ..Default::default() };
    let opts = CalibOptions { input_grams: true, ema_c: 0.01, ..Default::default() };
    let c = calibrate(g.clone(), OptLevel::O2, opts, &set, &inst, &mut std::io::sink()).unwrap();
    std::fs::remove_dir_all(&d).ok();
    (g, c)
}

/// Squared output error against float, summed over images the calibration did not see.
fn error(float: &Graph, q: &Graph) -> f64 {
    (0..32)
        .map(|i| {
            let x = image(1000 + i);
            let a = qcc_runtime::run(float, vec![x.clone()]).unwrap()[0].to_f32_vec();
            let b = qcc_runtime::run(q, vec![x]).unwrap()[0].to_f32_vec();
            a.iter().zip(&b).map(|(u, v)| ((u - v) as f64).powi(2)).sum::<f64>()
        })
        .sum()
}

/// Every qconv's and qgemm's integer weights with their type, in node order.
fn weights(g: &Graph) -> Vec<(Vec<i8>, String)> {
    g.node_ids()
        .filter(|n| matches!(g.node(*n).op, Op::QConv { .. } | Op::QGemm { .. }))
        .map(|n| {
            let w = g.node(n).inputs[1];
            let t = g.const_tensor(w).unwrap();
            (t.to_f32_vec().iter().map(|v| *v as i8).collect(), format!("{:?}", g.ty(w)))
        })
        .collect()
}

#[test]
fn rounding_brings_outputs_closer_to_float_than_nearest() {
    let (float, c) = calibrated();
    assert_eq!(c.input_grams.len(), 3, "sums for conv0, conv1 and fc");
    for scheme in ["sym-per-channel", "sym-per-tensor", "asym-per-channel", "asym-per-tensor"] {
        // i16 activations: the output error is then the weights' (u8 activations would add their own).
        let mut cfg = quant_config(scheme, "sym", "i16", "minmax").unwrap();
        let nearest = c.finish(&cfg, &Default::default(), &mut std::io::sink()).unwrap();
        cfg.round_weights = true;
        let rounded = c.finish(&cfg, &Default::default(), &mut std::io::sink()).unwrap();
        let (wn, wr) = (weights(&nearest), weights(&rounded));
        assert_eq!(wn.len(), 3);
        let mut changed = 0;
        for ((a, ta), (b, tb)) in wn.iter().zip(&wr) {
            assert_eq!(ta, tb, "{scheme}: scales and zero points are place-qdq's");
            changed += a.iter().zip(b).filter(|(x, y)| x != y).count();
        }
        assert!(changed > 0, "{scheme}: no integer moved off nearest");
        let (en, er) = (error(&float, &nearest), error(&float, &rounded));
        eprintln!("{scheme}: output error nearest {en:.4e}, rounded {er:.4e}, {changed} integers differ");
        assert!(er < 0.9 * en, "{scheme}: rounded {er} vs nearest {en}");
    }
}

#[test]
fn bias_correction_after_rounding_removes_the_mean_shift_exactly() {
    // A padded, strided conv over the graph input (no activation quantization in between): with
    // bias_correct, round-weights' new bias makes each output channel's mean over the calibration
    // inputs what it was with float weights, the border pixels (which read padding) included.
    let g = qcc_ir::parse_graph(
        r#"graph @t(%x: f32[1,3,12,12]) -> (%y: f32[1,4,6,6]) {
  const @w: f32[4,3,3,3] = dense "WEIGHTS"
  const @b: f32[4] = [0.1, -0.2, 0.3, 0.0]
  %y = conv %x, @w, @b {dilations=[1, 1], group=1, pads=[1, 1, 1, 1], strides=[2, 2]} : f32[1,4,6,6] loc("Conv_0")
}"#
        .replace("WEIGHTS", &values(108, 21).iter().flat_map(|v| (v * 0.5).to_le_bytes()).map(|b| format!("{b:02x}")).collect::<String>())
        .as_str(),
    )
    .unwrap();
    let conv = g.node_ids().next().unwrap();
    let xs: Vec<Tensor> = (0..8)
        .map(|i| image(300 + i))
        .map(|t| Tensor::from_f32(&[1, 3, 12, 12], t.to_f32_vec().iter().map(|v| v + 1.5).collect()).unwrap())
        .collect();
    let quant = qcc_passes::QuantConfig { bias_correct: true, ..quant_config("sym-per-tensor", "asym", "u8", "minmax").unwrap() };
    let mut cx = qcc_passes::PassContext { quant, ..Default::default() };
    let mut total = None;
    for x in &xs {
        qcc_passes::InputGram::accumulate(&mut total, &qcc_passes::InputGram::of(&g, conv, x.as_f32().unwrap()).unwrap());
    }
    cx.input_grams = std::sync::Arc::new([(g.node(conv).output, total.unwrap())].into_iter().collect());
    let mut r = g.clone();
    let passes = vec![qcc_passes::pass_by_name("round-weights").unwrap()];
    qcc_passes::PassManager::new(passes, Instrumentation { verify: true, ..Default::default() })
        .run(&mut r, &mut cx, &mut std::io::sink())
        .unwrap();
    assert!(r.node_ids().any(|n| r.node(n).op == Op::Dequantize), "weights quantized");
    let means = |g: &Graph| -> Vec<f64> {
        let mut m = vec![0f64; 4];
        for x in &xs {
            let y = qcc_runtime::run(g, vec![x.clone()]).unwrap()[0].to_f32_vec();
            m.iter_mut().enumerate().for_each(|(c, m)| *m += y[c * 36..(c + 1) * 36].iter().map(|v| *v as f64).sum::<f64>());
        }
        m
    };
    let (before, after) = (means(&g), means(&r));
    for (a, b) in after.iter().zip(&before) {
        assert!((a - b).abs() < 1e-3, "channel means {after:?} vs float {before:?}");
    }
}
