//! range-search: on a network where one tensor's outliers reach the output and an identically
//! distributed tensor's are clipped away downstream, the search keeps the first's whole range and
//! narrows the second's, which no per-tensor method can tell apart; assign-qparams then uses the chosen
//! ranges for the scheme they were searched for and only for it.
mod common;
use common::Builder;
use qcc::calib::{calibrate, quant_config, CalibOptions, CalibSet, Calibrated};
use qcc_ir::{Graph, Op, QParams, Tensor};
use qcc_passes::{Instrumentation, OptLevel};

const N: usize = 256;

/// Where the outlier sits.
const OUTLIER: usize = 17;

/// `a`, `b` and `c` are the same tensor (2x); `ya` passes `a` on, `yb` multiplies `b`'s outlier position
/// by 0, `yc` scales `c` down.
fn net() -> Builder {
    let mut b = Builder::new();
    b.input("x", &[1, N as i64]).output("ya", &[1, N as i64]).output("yb", &[1, N as i64]);
    let mut mask = vec![1.0; N];
    mask[OUTLIER] = 0.0;
    b.init("ones", &[N as i64], vec![1.0; N]).init("mask", &[N as i64], mask);
    b.node("Add", "a", &["x", "x"], &["a"], vec![]);
    b.node("Mul", "ya", &["a", "ones"], &["ya"], vec![]);
    b.node("Add", "b", &["x", "x"], &["b"], vec![]);
    b.node("Mul", "yb", &["b", "mask"], &["yb"], vec![]);
    // c reaches its output scaled by 1e-4: its error is too small a share to search.
    b.output("yc", &[1, N as i64]).init("tiny", &[N as i64], vec![1e-4; N]);
    b.node("Add", "c", &["x", "x"], &["c"], vec![]);
    b.node("Mul", "yc", &["c", "tiny"], &["yc"], vec![]);
    b
}

/// Values in [0, 1); sample 15, the last calibration sample, also holds one outlier of 25.
fn sample(i: u32) -> Tensor {
    let mut v: Vec<f32> = common::values(N, 7 + i).iter().map(|x| x.abs().fract()).collect();
    if i == 15 {
        v[OUTLIER] = 25.0;
    }
    Tensor::from_f32(&[1, N], v).unwrap()
}

fn calibrated() -> (Graph, Calibrated, CalibSet, std::path::PathBuf) {
    let d = std::env::temp_dir().join(format!("qcc-range-search-{}", std::process::id()));
    let cal = d.join("calib");
    std::fs::create_dir_all(&cal).unwrap();
    let model = d.join("net.onnx");
    std::fs::write(&model, net().bytes()).unwrap();
    for i in 0..16 {
        qcc::npy::write_npy(&cal.join(format!("s{i:02}.npy")), &sample(i)).unwrap();
    }
    let g = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
    let set = CalibSet::open(&cal, &["x".to_string()], None, None).unwrap();
    // The samples are read again by the search: the test removes the folder.
    let inst = Instrumentation { verify: true, ..Default::default() };
    let c =
        calibrate(g.clone(), OptLevel::O1, CalibOptions { ema_c: 0.01, ..Default::default() }, &set, &inst, &mut std::io::sink()).unwrap();
    (g, c, set, d)
}

/// The range chosen for the observed value named `name`.
fn searched(c: &Calibrated, name: &str) -> (f32, f32) {
    let n = c.graph.node_ids().find(|n| c.graph.node(*n).op == Op::Observe && c.graph.node(*n).name() == name).unwrap();
    c.searched.as_ref().unwrap().choices[&c.graph.node(n).output].1
}

/// The scale of the integer op named `name` in the quantized `g`.
fn scale(g: &Graph, name: &str) -> f32 {
    let n = g.node_ids().find(|n| g.node(*n).name() == name && matches!(g.node(*n).op, Op::QAdd { .. })).unwrap();
    match &g.ty(g.node(n).output).quant().unwrap().params {
        QParams::PerTensor { scale, .. } => *scale,
        p => panic!("{name}: {p:?}"),
    }
}

/// Squared error of each output against float over outlier-free samples the calibration did not see.
fn errors(float: &Graph, q: &Graph) -> [f64; 2] {
    let mut e = [0.0; 2];
    for i in 100..116 {
        let a = qcc_runtime::run(float, vec![sample(i)]).unwrap();
        let b = qcc_runtime::run(q, vec![sample(i)]).unwrap();
        for (k, ek) in e.iter_mut().enumerate() {
            *ek += a[k].to_f32_vec().iter().zip(b[k].to_f32_vec()).map(|(u, v)| ((u - v) as f64).powi(2)).sum::<f64>();
        }
    }
    e
}

#[test]
fn search_keeps_outliers_that_reach_the_output_and_clips_those_that_do_not() {
    let (float, mut c, set, dir) = calibrated();
    let cfg = quant_config("sym-per-channel", "asym", "u8", "percentile:99.999").unwrap();
    let sink = &mut std::io::sink();
    let plain = c.finish(&cfg, &Default::default(), sink).unwrap();
    let minmax = quant_config("sym-per-channel", "asym", "u8", "minmax").unwrap();
    let plain_minmax = c.finish(&minmax, &Default::default(), sink).unwrap();
    c.search_ranges(&cfg, &set, 16).unwrap();
    let s = c.searched.as_ref().unwrap();
    assert_eq!(s.log.len(), 3, "x, a and b searched, c not: {:?}", s.log);
    assert!(s.summary().contains("3 of 4 activations"), "{}", s.summary());
    assert!(!s.log.iter().any(|l| l.starts_with("c:")), "{:?}", s.log);
    // Per tensor, a and b are alike: the configured method keeps the outlier (2 × 25) for both.
    for name in ["a", "b"] {
        let v = c.graph.node_ids().find(|n| c.graph.node(*n).name() == name && c.graph.node(*n).op == Op::Observe).unwrap();
        let r = c.observers[&c.graph.node(v).output].range(cfg.method, 256);
        assert!(r.1 > 45.0, "{name}: {r:?}");
    }
    let (ra, rb) = (searched(&c, "a"), searched(&c, "b"));
    assert!(ra.1 > 45.0, "a's outlier reaches ya: its range must hold it, got {ra:?}");
    assert!(rb.1 > 1.9 && rb.1 < 10.0, "b's outlier is masked away: its range should fit the rest, got {rb:?}");
    let found = c.finish(&cfg, &Default::default(), sink).unwrap();
    // assign-qparams takes the searched ranges (u8 over [0, max]).
    for (name, r) in [("a", ra), ("b", rb)] {
        assert!((scale(&found, name) - r.1 / 255.0).abs() < 1e-6 * r.1, "{name}: {}", scale(&found, name));
    }
    assert!(scale(&plain, "b") > 45.0 / 255.0);
    // On outlier-free data b's finer grid shows in yb (x's own grid, which keeps the outlier, adds the
    // same error both ways).
    let (ep, ef) = (errors(&float, &plain), errors(&float, &found));
    assert!(ef[1] < ep[1], "yb: searched {} vs configured {}", ef[1], ep[1]);
    // Another range method ignores the search.
    assert_eq!(c.finish(&minmax, &Default::default(), sink).unwrap().to_string(), plain_minmax.to_string());
    std::fs::remove_dir_all(dir).ok();
}
