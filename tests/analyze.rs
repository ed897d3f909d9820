//! `qcc analyze`: the per-layer report names a deliberately broken layer first, and its JSON holds every
//! quantized tensor of the bundled MNIST CNN with sane numbers.
mod common;
use common::{int, ints, values, Builder};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qcc-analyze-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn qcc(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_qcc")).args(args).output().expect("run qcc");
    assert!(o.status.success(), "qcc {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// (name, alone_sqnr_db, sqnr_db, rmse_over_scale, sensitivity) of every layer in the JSON report.
fn layers(json: &Path) -> Vec<(String, f64, f64, f64, f64)> {
    let text = std::fs::read_to_string(json).unwrap();
    let num = |row: &str, key: &str| -> f64 {
        let v = row.split(&format!("\"{key}\": ")).nth(1).unwrap().split([',', '}']).next().unwrap().trim().to_string();
        if v == "null" {
            f64::INFINITY
        } else {
            v.parse().unwrap()
        }
    };
    text.lines()
        .filter(|l| l.trim_start().starts_with("{\"name\""))
        .map(|l| {
            let name = l.split("\"name\": \"").nth(1).unwrap().split('"').next().unwrap().to_string();
            (name, num(l, "alone_sqnr_db"), num(l, "sqnr_db"), num(l, "rmse_over_scale"), num(l, "sensitivity"))
        })
        .collect()
}

/// conv1 → relu → conv2 → relu → conv3 → relu → gap → gemm, where conv2 has one huge weight on an input
/// channel that is always 0 (conv1's channel 7 has a bias of −100): harmless in float, but with
/// per-tensor weights it sets conv2's weight scale so every other weight rounds to 0.
fn outlier_model() -> Builder {
    let mut b = Builder::new();
    b.input("x", &[1, 4, 8, 8]).output("y", &[1, 4]);
    let w = |n: usize, seed: u32, s: f32| values(n, seed).iter().map(|v| v * s).collect::<Vec<f32>>();
    let mut b1 = w(8, 2, 0.1);
    b1[7] = -100.0;
    let mut w2 = w(64, 3, 0.4);
    w2[7] = 500.0;
    b.init("w1", &[8, 4, 3, 3], w(288, 1, 0.3)).init("b1", &[8], b1);
    b.init("w2", &[8, 8, 1, 1], w2).init("b2", &[8], w(8, 4, 0.1));
    b.init("w3", &[8, 8, 1, 1], w(64, 5, 0.4)).init("b3", &[8], w(8, 6, 0.1));
    b.init("wfc", &[4, 8], w(32, 7, 0.5)).init("bfc", &[4], w(4, 8, 0.1));
    b.init_i64("shape", &[2], vec![1, -1]);
    b.node("Conv", "conv1", &["x", "w1", "b1"], &["c1"], vec![ints("pads", &[1, 1, 1, 1])]);
    b.node("Relu", "relu1", &["c1"], &["r1"], vec![]);
    b.node("Conv", "conv2", &["r1", "w2", "b2"], &["c2"], vec![]);
    b.node("Relu", "relu2", &["c2"], &["r2"], vec![]);
    b.node("Conv", "conv3", &["r2", "w3", "b3"], &["c3"], vec![]);
    b.node("Relu", "relu3", &["c3"], &["r3"], vec![]);
    b.node("GlobalAveragePool", "gap", &["r3"], &["g"], vec![]);
    b.node("Reshape", "flatten", &["g", "shape"], &["f"], vec![]);
    b.node("Gemm", "fc", &["f", "wfc", "bfc"], &["y"], vec![int("transB", 1)]);
    b
}

#[test]
fn analysis_names_the_broken_layer_first() {
    let d = tmp("outlier");
    let model = d.join("m.onnx");
    std::fs::write(&model, outlier_model().bytes()).unwrap();
    let cal = d.join("calib");
    std::fs::create_dir_all(&cal).unwrap();
    for i in 0..8 {
        let t = qcc_ir::Tensor::from_f32(&[1, 4, 8, 8], values(256, 100 + i)).unwrap();
        qcc::npy::write_npy(&cal.join(format!("s{i}.npy")), &t).unwrap();
    }
    let json = d.join("a.json");
    let (m, c, j) = (model.display().to_string(), cal.display().to_string(), json.display().to_string());
    // Without equalization, which would repair it (checked below).
    let out = qcc(&["analyze", &m, "-O2", "--int8", "--weights", "asym-per-tensor", "--no-equalize", "--calib", &c, "--json", &j]);
    let mut rows = layers(&json);
    assert_eq!(rows.len(), 6, "input, three convs, gap, gemm: {rows:?}");
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    assert_eq!(rows[0].0, "conv2+relu2", "{rows:?}");
    assert!(rows[0].1 < 20.0 && rows[1].1 > rows[0].1 + 20.0, "{rows:?}");
    let broken = rows[0].1;
    assert!(out.contains("the 5 worst by SQNR alone") && out.lines().any(|l| l.starts_with("conv2+relu2")), "{out}");
    // Its error also does the most damage at the network's output (sensitivity, the other layers float).
    rows.sort_by(|a, b| a.4.total_cmp(&b.4));
    assert_eq!(rows[0].0, "conv2+relu2", "{rows:?}");
    assert!(rows[0].4 < 30.0 && rows[1].4 > rows[0].4 + 20.0, "{rows:?}");
    // Per-channel weights confine the damage to conv2's channel 0: conv2 gets much better, the rest stays.
    qcc(&["analyze", &m, "-O2", "--int8", "--no-equalize", "--calib", &c, "--json", &j]);
    let per_channel = layers(&json);
    let conv2 = per_channel.iter().find(|r| r.0 == "conv2+relu2").unwrap();
    assert!(conv2.1 > broken + 8.0, "{per_channel:?}");
    assert!(per_channel.iter().filter(|r| r.0 != "conv2+relu2").all(|r| r.1 > 35.0), "{per_channel:?}");
    // Keeping the named layer float repairs the per-tensor model: conv2 is no longer quantized and every
    // tensor after it is close to float again.
    qcc(&[
        "analyze",
        &m,
        "-O2",
        "--int8",
        "--weights",
        "asym-per-tensor",
        "--no-equalize",
        "--keep-float",
        "conv2",
        "--calib",
        &c,
        "--json",
        &j,
    ]);
    let fixed = layers(&json);
    assert!(fixed.iter().all(|r| r.0 != "conv2+relu2" || r.2 > 35.0), "{fixed:?}");
    assert!(fixed.iter().all(|r| r.2 > 25.0), "end to end after the fix: {fixed:?}");
    // Equalization (the -O2 default) repairs the per-tensor model too, with every weight int8: conv1's
    // always-zero channel 7 is scaled up and conv2's huge weight on it scaled down in proportion.
    qcc(&["analyze", &m, "-O2", "--int8", "--weights", "asym-per-tensor", "--calib", &c, "--json", &j]);
    let equalized = layers(&json);
    let conv2 = equalized.iter().find(|r| r.0 == "conv2+relu2").unwrap();
    assert!(conv2.1 > broken + 8.0, "{equalized:?}");
}

#[test]
fn mnist_report_covers_every_quantized_tensor() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let json = tmp("mnist").join("a.json");
    let (m, c) = (root.join("examples/mnist/mnist_cnn.onnx"), root.join("examples/mnist/digits"));
    let (m, c, j) = (m.display().to_string(), c.display().to_string(), json.display().to_string());
    qcc(&[
        "analyze",
        &m,
        "-O2",
        "--int8",
        "--calib",
        &c,
        "--calib-samples",
        "50",
        "--samples",
        "4",
        "--sensitivity-samples",
        "4",
        "--json",
        &j,
    ]);
    let rows = layers(&json);
    // The classifier's output is the network's: injecting its error alone gives its SQNR alone.
    let fc2 = &rows[5];
    assert!((fc2.4 - fc2.1).abs() < 1e-3, "{rows:?}");
    assert!(rows.iter().all(|r| r.4.is_finite() && r.4 > 30.0), "{rows:?}");
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, ["/Div", "/c1/Conv+/Relu", "/c2/Conv+/Relu_1", "/c3/Conv+/Relu_2", "/fc1/Gemm+/Relu_3", "/fc2/Gemm"]);
    for (name, alone, e2e, ros, _) in &rows {
        // Errors near rounding noise: a few tenths of a step, SQNR above 30 dB; a layer alone never
        // does worse than the whole quantized network up to it (beyond float noise).
        assert!(*ros > 0.2 && *ros < 1.0 && *alone > 30.0 && *e2e > 30.0 && *alone >= *e2e - 0.01, "{name}: {rows:?}");
    }
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.starts_with("{\n  \"samples\": 4,"));
    // The range method of each tensor: the default or range search's pick (on at -O2), except min/max
    // for the network's output.
    let (plain, searched) = (text.matches("\"method\": \"percentile:99.999\"").count(), text.matches("\"method\": \"search: ").count());
    assert!(plain + searched == 5 && searched > 0, "{text}");
    assert!(
        text.contains("\"name\": \"/fc2/Gemm\", \"op\": \"qgemm\", \"precision\": \"uint8\"") && text.contains("\"method\": \"minmax\""),
        "{text}"
    );
}

#[test]
fn report_is_one_self_contained_html_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = tmp("report");
    let html = d.join("r.html");
    let (m, c, r) = (root.join("examples/mnist/mnist_cnn.onnx"), root.join("examples/mnist/digits"), html.display().to_string());
    let (m, c) = (m.display().to_string(), c.display().to_string());
    qcc(&["analyze", &m, "-O2", "--int8", "--no-equalize", "--calib", &c, "--calib-samples", "50", "--samples", "2", "--report", &r]);
    let text = std::fs::read_to_string(&html).unwrap();
    // SQNR, ranges, RMSE scatter, weight box plots, the worst layer's histogram.
    assert_eq!(text.matches("<svg").count(), 5, "{text}");
    assert!(!text.contains("src=") && !text.contains("href=") && !text.contains("<script"), "nothing is fetched or run");
    // The input normalization (sub, div) stays float, and the report says so.
    assert!(text.contains("Compute nodes: 5 int8, 0 int16, 2 float"), "{text}");
    assert!(text.contains("<tr class=\"float\"><td>/Div</td><td>div</td><td>float</td></tr>"), "{text}");
    assert!(text.contains("<td>/c1/Conv</td><td>qconv</td><td>int8</td>"), "{text}");
    assert!(text.contains("Equalization is off"), "{text}");
    // With equalization (the -O2 default), a sixth chart: each layer's per-channel weight ranges before
    // and after it.
    qcc(&["analyze", &m, "-O2", "--int8", "--calib", &c, "--calib-samples", "50", "--samples", "2", "--report", &r]);
    let text = std::fs::read_to_string(&html).unwrap();
    assert_eq!(text.matches("<svg").count(), 6, "{text}");
    assert!(text.contains("before (red) and after (green)"), "{text}");
    let bad = qcc_err(&["analyze", &m, "-O2", "--int8", "--calib", &c, "--report", &r, "--report-layer", "nope"]);
    assert!(bad.contains("--report-layer \"nope\" names no quantized tensor"), "{bad}");
}

fn qcc_err(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_qcc")).args(args).output().expect("run qcc");
    assert!(!o.status.success(), "qcc {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A classifier whose class is the strongest input channel: conv_a copies the 4 channels (and makes an
/// always-zero channel 7), conv_b maps them back, with the same kind of outlier weight as outlier_model
/// (on the dead channel), then global average pooling gives the 4 scores.
fn outlier_classifier() -> Builder {
    let mut b = Builder::new();
    b.input("x", &[1, 4, 8, 8]).output("y", &[1, 4]);
    let mut wa = vec![0f32; 32];
    for k in 0..4 {
        wa[k * 4 + k] = 1.0;
        wa[(k + 4) * 4 + k] = 0.5;
    }
    let mut ba = vec![0f32; 8];
    ba[7] = -100.0;
    let mut wb = vec![0f32; 32];
    for k in 0..4 {
        wb[k * 8 + k] = 1.0;
        wb[k * 8 + 4 + k] = 0.3;
    }
    wb[7] = 500.0;
    b.init("wa", &[8, 4, 1, 1], wa).init("ba", &[8], ba).init("wb", &[4, 8, 1, 1], wb);
    b.init_i64("shape", &[2], vec![1, -1]);
    b.node("Conv", "conv_a", &["x", "wa", "ba"], &["a"], vec![]);
    b.node("Relu", "relu_a", &["a"], &["ra"], vec![]);
    b.node("Conv", "conv_b", &["ra", "wb"], &["cb"], vec![]);
    b.node("GlobalAveragePool", "gap", &["cb"], &["g"], vec![]);
    b.node("Reshape", "flatten", &["g", "shape"], &["y"], vec![]);
    b
}

/// Per-tensor int8 as the auto tests compile it: without equalization and with weights rounded to
/// nearest, either of which would repair the outlier itself (analysis_names_the_broken_layer_first
/// checks equalization's repair).
const PER_TENSOR: [&str; 6] = ["-O2", "--int8", "--weights", "sym-per-tensor", "--no-equalize", "--no-round-weights"];

/// Auto mixed precision repairs the outlier classifier: the tuning set is labeled with the float model's
/// own predictions, per-tensor int8 loses top-1 on it, and promoting conv_b (the layer the analysis names
/// first) to float weights brings it back within budget.
#[test]
fn auto_mixed_precision_promotes_the_broken_layer() {
    let d = tmp("auto");
    let model = d.join("m.onnx");
    std::fs::write(&model, outlier_classifier().bytes()).unwrap();
    let (cal, tune) = (d.join("calib"), d.join("tune"));
    std::fs::create_dir_all(&cal).unwrap();
    std::fs::create_dir_all(&tune).unwrap();
    let g = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
    let mut labels = String::new();
    for i in 0..60u32 {
        // One input channel per sample is stronger, so the float model's predictions vary.
        let mut v = values(256, 100 + i);
        v[(i as usize % 4) * 64..(i as usize % 4 + 1) * 64].iter_mut().for_each(|x| *x = *x * 0.5 + 1.5);
        let t = qcc_ir::Tensor::from_f32(&[1, 4, 8, 8], v).unwrap();
        let (dir, name) = if i < 20 { (&cal, format!("s{i:02}.npy")) } else { (&tune, format!("t{i:02}.npy")) };
        qcc::npy::write_npy(&dir.join(&name), &t).unwrap();
        if i >= 20 {
            let y = qcc_runtime::run(&g, vec![t]).unwrap().remove(0).to_f32_vec();
            let best = (0..y.len()).max_by(|a, b| y[*a].total_cmp(&y[*b])).unwrap();
            labels.push_str(&format!("{name},{best}\n"));
        }
    }
    let classes: std::collections::BTreeSet<&str> = labels.lines().map(|l| l.split(',').nth(1).unwrap()).collect();
    assert!(classes.len() >= 2, "the float model should not predict one class for everything: {labels}");
    std::fs::write(tune.join("labels.csv"), &labels).unwrap();
    let (m, c, t) = (model.display().to_string(), cal.display().to_string(), tune.display().to_string());
    let o = Command::new(env!("CARGO_BIN_EXE_qcc"))
        .arg(&m)
        .args(PER_TENSOR)
        .args(["--calib", &c, "--mixed-precision", "auto", "--tune", &t])
        .args(["--max-drop", "0", "--analysis-samples", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let first = err.lines().find(|l| l.contains("-> float") || l.contains("-> int16")).unwrap_or_else(|| panic!("nothing promoted: {err}"));
    assert!(first.contains("mixed precision: conv_b (qconv"), "{err}");
    assert!(err.contains("within budget after promoting"), "{err}");
    let ir = String::from_utf8_lossy(&o.stdout);
    assert!(ir.lines().any(|l| l.contains("= conv ") && l.contains("loc(\"conv_b\"")), "{ir}");
    // Without labels: the same samples as one unlabeled calibration folder, the tuning part held back
    // (never calibrated on) and float's own probabilities standing in for labels. Same decision.
    for f in std::fs::read_dir(&tune).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "npy") {
            std::fs::copy(&p, cal.join(p.file_name().unwrap())).unwrap();
        }
    }
    let o = Command::new(env!("CARGO_BIN_EXE_qcc"))
        .arg(&m)
        .args(PER_TENSOR)
        .args(["--calib", &c, "--mixed-precision", "auto", "--holdout", "40"])
        .args(["--max-drop", "0", "--analysis-samples", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("40 calibration samples held back") && err.contains("on 40 held-back calibration samples (no labels)"), "{err}");
    let first = err.lines().find(|l| l.contains("-> float") || l.contains("-> int16")).unwrap_or_else(|| panic!("nothing promoted: {err}"));
    assert!(first.contains("mixed precision: conv_b (qconv"), "{err}");
    assert!(err.contains("within budget after promoting 1 layer(s)"), "{err}");
    // The report explains the decisions.
    let html = d.join("auto.html");
    let r = html.display().to_string();
    let args = ["analyze", &m].into_iter().chain(PER_TENSOR);
    qcc(&args
        .chain(["--calib", &c, "--mixed-precision", "auto", "--holdout", "40", "--max-drop", "0", "--samples", "2", "--report", &r])
        .collect::<Vec<_>>());
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.contains("Mixed precision decisions") && text.contains("conv_b (qconv, sensitivity"), "{text}");
    assert!(text.contains("<td>conv_b</td><td>conv</td><td>float</td>"), "{text}");
    // Holding back everything leaves nothing to calibrate on; --holdout belongs to label-free auto.
    let bad = qcc_err(&[&m, "-O2", "--int8", "--calib", &c, "--mixed-precision", "auto", "--holdout", "60"]);
    assert!(bad.contains("cannot hold back 60 of 60 calibration samples"), "{bad}");
    let bad = qcc_err(&[&m, "-O2", "--int8", "--calib", &c, "--holdout", "5"]);
    assert!(bad.contains("--holdout is for --mixed-precision auto without --tune"), "{bad}");
}

/// Numbers in `json` to 3 significant digits, so the snapshot holds across platforms (the float
/// kernels' last bits may differ).
fn rounded(json: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut num = String::new();
    let flush = |num: &mut String, out: &mut String| {
        if !num.is_empty() {
            out.push_str(&num.parse::<f64>().map_or(num.clone(), |v| format!("{v:.2e}")));
            num.clear();
        }
    };
    for ch in json.chars() {
        if !in_str && (ch.is_ascii_digit() || ch == '.' || ch == 'e' && !num.is_empty() || ch == '-' || ch == '+' && !num.is_empty()) {
            num.push(ch);
            continue;
        }
        flush(&mut num, &mut out);
        if ch == '"' {
            in_str = !in_str;
        }
        out.push(ch);
    }
    flush(&mut num, &mut out);
    out
}

/// The JSON report of the bundled MNIST CNN, every field of every layer (numbers to 3 digits).
#[test]
fn mnist_json_snapshot() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let json = tmp("snapshot").join("a.json");
    let (m, c) = (root.join("examples/mnist/mnist_cnn.onnx"), root.join("examples/mnist/digits"));
    let (m, c, j) = (m.display().to_string(), c.display().to_string(), json.display().to_string());
    qcc(&["analyze", &m, "-O2", "--int8", "--calib", &c, "--calib-samples", "50", "--samples", "4", "--json", &j]);
    insta::assert_snapshot!("mnist_analysis_json", rounded(&std::fs::read_to_string(&json).unwrap()));
}
