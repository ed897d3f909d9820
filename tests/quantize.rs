//! End to end quantization on the bundled MNIST CNN: int8 agrees with float, every scheme and range method
//! works from one calibration pass, and the QDQ ONNX export re-imports to the very same integer graph.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn qcc(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_qcc")).args(args).output().expect("run qcc");
    assert!(o.status.success(), "qcc {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn p(rel: &str) -> String {
    root().join(rel).display().to_string()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qcc-quant-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn json_number(text: &str, key: &str, nth: usize) -> f64 {
    text.split(&format!("\"{key}\": "))
        .nth(nth)
        .unwrap_or_else(|| panic!("{key} in {text}"))
        .split([',', '}'])
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

const CALIB: [&str; 6] = ["--int8", "--calib", "examples/mnist/digits", "--calib-samples", "100", "-O2"];

fn calib_args() -> Vec<String> {
    CALIB.iter().map(|s| if s.starts_with("examples") { p(s) } else { s.to_string() }).collect()
}

#[test]
fn mnist_int8_agrees_with_float() {
    let d = tmp("agree");
    let json = d.join("eval.json");
    for extra in [None, Some("--no-bias-correction")] {
        let mut args = vec!["eval".to_string(), p("examples/mnist/mnist_cnn.onnx")];
        args.extend(calib_args());
        args.extend(["--npy".into(), p("examples/mnist/digits"), "--json".into(), json.display().to_string()]);
        args.extend(extra.map(String::from));
        qcc(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let text = std::fs::read_to_string(&json).unwrap();
        assert_eq!(json_number(&text, "n", 1), 200.0);
        let agreement = json_number(&text, "agreement", 1);
        assert!(agreement >= 99.0, "int8 ({extra:?}) agrees with float on {agreement}% of 200 digits: {text}");
    }
}

#[test]
fn every_scheme_and_method_from_one_calibration() {
    for table in [["--schemes", "all"], ["--calib-method", "all"]] {
        let mut args = vec!["eval".to_string(), p("examples/mnist/mnist_cnn.onnx")];
        args.extend(calib_args());
        args.extend(["--npy".into(), p("examples/mnist/digits"), "--limit".into(), "100".into(), table[0].into(), table[1].into()]);
        let o = qcc(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let out = String::from_utf8_lossy(&o.stdout);
        let rows: Vec<&str> = out.lines().skip(3).collect();
        // Every method, and at -O2 range search's row (from the default method).
        assert_eq!(rows.len(), if table[0] == "--schemes" { 4 } else { 8 }, "{out}");
        if table[0] == "--calib-method" {
            assert!(rows[7].starts_with("range-search:16"), "{out}");
        }
        for r in rows {
            // Columns: name, top-1, top-5, agreement (the last %), output SQNR (dB).
            let agree: f64 = r.split_whitespace().rfind(|t| t.ends_with('%')).unwrap().trim_end_matches('%').parse().unwrap();
            assert!(agree >= 97.0, "{r}");
            let sqnr: f64 = r.trim_end().strip_suffix(" dB").and_then(|t| t.split_whitespace().last()).unwrap().parse().unwrap();
            assert!(sqnr > 0.0 && sqnr <= 100.0, "{r}");
        }
    }
}

#[test]
fn qdq_export_reimports_to_the_same_integer_graph() {
    let d = tmp("qdq");
    let (qir, onnx, qir2) = (d.join("q.qir"), d.join("q.onnx"), d.join("q2.qir"));
    let mut args = vec![p("examples/mnist/mnist_cnn.onnx")];
    args.extend(calib_args());
    args.extend(["-o".into(), qir.display().to_string()]);
    qcc(&args.iter().map(String::as_str).collect::<Vec<_>>());
    qcc(&[&qir.display().to_string(), "-O0", "--emit", "onnx", "-o", &onnx.display().to_string()]);
    qcc(&[&onnx.display().to_string(), "-O2", "-o", &qir2.display().to_string()]);
    let (a, b) = (std::fs::read_to_string(&qir).unwrap(), std::fs::read_to_string(&qir2).unwrap());
    let ops = |t: &str| {
        t.lines().filter(|l| l.trim_start().starts_with('%')).map(|l| l.split_whitespace().nth(2).unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(ops(&a), ops(&b), "the re-imported QDQ model compiles to the same ops");
    for i in [3, 17, 101] {
        let x = p(&format!("examples/mnist/digits/digit_{i:03}.npy"));
        let (y1, y2) = (d.join("y1.npy"), d.join("y2.npy"));
        qcc(&["run", &qir.display().to_string(), "--input", &x, "--output", &y1.display().to_string()]);
        qcc(&["run", &onnx.display().to_string(), "--input", &x, "--output", &y2.display().to_string()]);
        assert_eq!(std::fs::read(&y1).unwrap(), std::fs::read(&y2).unwrap(), "digit {i}: QDQ round trip changed the result");
    }
}

#[test]
fn bad_calibration_data_fails_cleanly() {
    let d = tmp("badcal");
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_qcc"))
        .args([&p("examples/mnist/mnist_cnn.onnx"), "--int8", "--calib", &empty.display().to_string()])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("no .npy calibration samples in") && !e.contains("panicked"), "{e}");

    let wrong = d.join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    qcc::npy::write_npy(&wrong.join("a.npy"), &qcc_ir::Tensor::from_f32(&[2, 2], vec![0.0; 4]).unwrap()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_qcc"))
        .args([&p("examples/mnist/mnist_cnn.onnx"), "--int8", "--calib", &wrong.display().to_string()])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(1) && e.contains("a.npy: shape [2, 2] does not match the model input"), "{e}");

    let ints = d.join("ints");
    std::fs::create_dir_all(&ints).unwrap();
    qcc::npy::write_npy(&ints.join("a.npy"), &qcc_ir::Tensor::from_i64(&[1, 1, 28, 28], vec![0; 784]).unwrap()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_qcc"))
        .args([&p("examples/mnist/mnist_cnn.onnx"), "--int8", "--calib", &ints.display().to_string()])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(1) && e.contains("must be float32"), "{e}");

    let o = Command::new(env!("CARGO_BIN_EXE_qcc")).args([&p("examples/mnist/mnist_cnn.onnx"), "--int8"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("--int8 needs calibration data"));
}

#[test]
fn dynamic_quantization_needs_no_calibration() {
    let d = tmp("dynamic");
    let (json, qir) = (d.join("eval.json"), d.join("d.qir"));
    let model = p("examples/mnist/mnist_cnn.onnx");
    for w in ["sym-per-channel", "asym-per-tensor"] {
        let args = [
            "eval",
            &model,
            "-O2",
            "--dynamic",
            "--weights",
            w,
            "--npy",
            &p("examples/mnist/digits"),
            "--json",
            &json.display().to_string(),
        ];
        qcc(&args);
        let text = std::fs::read_to_string(&json).unwrap();
        assert_eq!(json_number(&text, "n", 1), 200.0);
        let agreement = json_number(&text, "agreement", 1);
        assert!(agreement >= 99.0, "dynamic {w} agrees with float on {agreement}% of 200 digits: {text}");
    }
    qcc(&[&model, "-O2", "--dynamic", "-o", &qir.display().to_string()]);
    let text = std::fs::read_to_string(&qir).unwrap();
    assert_eq!(text.matches("dyn_qconv").count(), 3, "{text}");
    assert_eq!(text.matches("dyn_qgemm").count(), 2, "{text}");
    assert!(!text.contains("quantize %"), "dynamic mode places no static quantize: {text}");
    qcc(&[&model, "-O2", "--dynamic", "--keep-float", "/c2/Conv", "-o", &qir.display().to_string()]);
    let text = std::fs::read_to_string(&qir).unwrap();
    assert_eq!(text.matches("dyn_qconv").count(), 2, "{text}");
    assert!(text.lines().any(|l| l.contains("= conv ") && l.contains("loc(\"/c2/Conv\"")), "{text}");
    // Exported as DynamicQuantizeLinear -> DequantizeLinear -> Conv/Gemm and imported again: the same
    // dynamic ops (a standalone pair imports as dynamic_qdq) and the same bytes out.
    let (onnx, back) = (d.join("dyn.onnx"), d.join("back.qir"));
    qcc(&[&model, "-O2", "--dynamic", "-o", &onnx.display().to_string()]);
    qcc(&[&onnx.display().to_string(), "-O1", "-o", &back.display().to_string()]);
    let text = std::fs::read_to_string(&back).unwrap();
    assert_eq!((text.matches("dyn_qconv").count(), text.matches("dyn_qgemm").count()), (3, 2), "{text}");
    assert!(!text.contains("dynamic_qdq") && !text.contains("= conv "), "{text}");
    for i in [5, 42] {
        let x = p(&format!("examples/mnist/digits/digit_{i:03}.npy"));
        let (y1, y2) = (d.join("y1.npy"), d.join("y2.npy"));
        qcc(&["run", &model, "-O2", "--dynamic", "--input", &x, "--output", &y1.display().to_string()]);
        qcc(&["run", &onnx.display().to_string(), "--input", &x, "--output", &y2.display().to_string()]);
        assert_eq!(std::fs::read(&y1).unwrap(), std::fs::read(&y2).unwrap(), "digit {i}: the dynamic round trip changed the result");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_qcc"))
        .args([&model, "--int8", "--dynamic", "--calib", &p("examples/mnist/digits")])
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("choose one"));
}

#[test]
fn named_layers_can_stay_float_or_use_int16() {
    let d = tmp("mixed");
    let (json, qir) = (d.join("eval.json"), d.join("m.qir"));
    let mut args: Vec<String> = vec!["eval".into(), p("examples/mnist/mnist_cnn.onnx")];
    args.extend(calib_args());
    args.extend(["--keep-float", "/c2/Conv", "--int16", "/c1/Conv,/fc1/Gemm", "--npy"].map(String::from));
    args.extend([p("examples/mnist/digits"), "--json".into(), json.display().to_string()]);
    qcc(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(json_number(&text, "agreement", 1) >= 99.0, "{text}");
    let mut args: Vec<String> = vec![p("examples/mnist/mnist_cnn.onnx")];
    args.extend(calib_args());
    args.extend(["--keep-float", "/c2/Conv", "--int16", "/c1/Conv", "--analysis-samples", "0", "-o"].map(String::from));
    args.push(qir.display().to_string());
    qcc(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let ir = std::fs::read_to_string(&qir).unwrap();
    let line =
        |name: &str| ir.lines().find(|l| l.contains(&format!("loc(\"{name}\""))).unwrap_or_else(|| panic!("{name} in {ir}")).to_string();
    assert!(line("/c1/Conv").contains("= qconv") && line("/c1/Conv").contains(": i16["), "{}", line("/c1/Conv"));
    assert!(line("/c2/Conv").contains("= conv ") && line("/c2/Conv").contains(": f32["), "{}", line("/c2/Conv"));
    assert!(ir.lines().filter(|l| l.contains("= qconv")).count() == 2, "{ir}");
}
