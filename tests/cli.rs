//! The `qcc` command end to end: the bundled example, the text form through the CLI, instrumentation
//! flags, and bad input — each one clear error, exit code 1, no panic, no output file left behind.
mod common;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn qcc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qcc")).args(args).output().expect("run qcc")
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example() -> String {
    root().join("examples/mnist/mnist_cnn.onnx").display().to_string()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qcc-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a clean failure: exit code 1, an `error:` naming `needle`, no panic, and `out` not created.
fn assert_fails(o: &Output, needle: &str, out: Option<&Path>) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {e}");
    assert!(e.contains("error:") && e.contains(needle), "expected an error mentioning {needle:?}, got: {e}");
    assert!(!e.contains("panicked"), "panic: {e}");
    if let Some(p) = out {
        assert!(!p.exists(), "{} was left behind", p.display());
        let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}

#[test]
fn bundled_example_runs_and_evaluates() {
    let d = tmp("example");
    let y = d.join("y.npy");
    let o = qcc(&[
        "run",
        &example(),
        "--input",
        &root().join("examples/mnist/digits/digit_000.npy").display().to_string(),
        "--output",
        &format!("logits={}", y.display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = qcc::npy::read_npy(&y).unwrap();
    assert_eq!(t.shape(), &[1, 10]);
    let s = t.to_f32_vec();
    let argmax = (0..10).max_by(|a, b| s[*a].total_cmp(&s[*b])).unwrap();
    assert_eq!(argmax, 0, "digit_000 is a 0");

    let json = d.join("eval.json");
    let o = qcc(&[
        "eval",
        &example(),
        "--npy",
        &root().join("examples/mnist/digits").display().to_string(),
        "--json",
        &json.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.contains("\"n\": 200"), "{text}");
    let top1: f64 = text.split("\"top1\": ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    assert!(top1 >= 97.0, "MNIST CNN float top-1 {top1} on the bundled digits");

    // Compiled for a batch of 8 (the model's batch is dynamic): calibrated on single digits, evaluated 8
    // at a time (the last batch of 200 - 3 = 197 holds 5), with the same float accuracy.
    let json8 = d.join("eval8.json");
    let digits = root().join("examples/mnist/digits").display().to_string();
    let o = qcc(&[
        "eval",
        &example(),
        "--input-shape",
        "input=8,1,28,28",
        "--int8",
        "--calib",
        &digits,
        "--calib-samples",
        "20",
        "--npy",
        &digits,
        "--offset",
        "3",
        "--json",
        &json8.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text8 = std::fs::read_to_string(&json8).unwrap();
    assert!(text8.contains("\"n\": 197") && text8.contains("\"agreement\""), "{text8}");
    let o1 = qcc(&["eval", &example(), "--npy", &digits, "--offset", "3"]);
    let o8 = qcc(&["eval", &example(), "--input-shape", "input=8,1,28,28", "--npy", &digits, "--offset", "3"]);
    let float_row = |o: &Output| String::from_utf8_lossy(&o.stdout).lines().find(|l| l.starts_with("float")).map(String::from);
    assert!(float_row(&o1).is_some() && float_row(&o1) == float_row(&o8), "{:?} vs {:?}", float_row(&o1), float_row(&o8));
}

#[test]
fn range_search_from_the_cli() {
    let digits = root().join("examples/mnist/digits").display().to_string();
    let base = ["eval", &example(), "--int8", "--calib", &digits, "--calib-samples", "20", "--npy", &digits, "--limit", "40"];
    let o = qcc(&[&base[..], &["--range-search", "3"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("range search on 3 samples"), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("int8")));
    // With every method: the search is one more row, from the default method.
    let o = qcc(&[&base[..], &["--range-search", "2", "--calib-method", "all"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.lines().any(|l| l.starts_with("range-search:2")) && out.lines().any(|l| l.starts_with("mse")), "{out}");
    // Compiling reports each layer's method as the search's pick.
    let out = tmp("range-search").join("m.qir");
    let o =
        qcc(&[&example(), "--int8", "--calib", &digits, "--calib-samples", "8", "--range-search", "2", "-o", &out.display().to_string()]);
    assert!(o.status.success() && stderr(&o).contains("search: ") && out.exists(), "{}", stderr(&o));
    let o = qcc(&["eval", &example(), "--npy", &digits, "--range-search", "2"]);
    assert_fails(&o, "--range-search", None);
    // On by default at -O2 (16 samples, here all 20 calibration samples' first 16), off with 0 and below -O2.
    let o = qcc(&[&base[..], &["-O2"]].concat());
    assert!(o.status.success() && stderr(&o).contains("range search on 16 samples"), "{}", stderr(&o));
    for off in [&["-O2", "--range-search", "0"][..], &["-O1"][..]] {
        let o = qcc(&[&base[..], off].concat());
        assert!(o.status.success() && !stderr(&o).contains("range search"), "{off:?}: {}", stderr(&o));
    }
}

#[test]
fn qir_round_trips_through_the_cli() {
    let d = tmp("roundtrip");
    let (a, b) = (d.join("a.qir"), d.join("b.qir"));
    for level in ["-O0", "-O2"] {
        let o = qcc(&[&example(), level, "--emit", "qir", "-o", &a.display().to_string()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = qcc(&[&a.display().to_string(), "-O0", "--emit", "qir", "-o", &b.display().to_string()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "qcc x.qir -O0 must reproduce x.qir ({level})");
    }
    // The .qir runs and gives the ONNX model's result.
    let x = root().join("examples/mnist/digits/digit_007.npy").display().to_string();
    let (y1, y2) = (d.join("y1.npy"), d.join("y2.npy"));
    assert!(qcc(&["run", &example(), "--input", &x, "--output", &y1.display().to_string()]).status.success());
    assert!(qcc(&["run", &a.display().to_string(), "--input", &x, "--output", &y2.display().to_string()]).status.success());
    assert_eq!(std::fs::read(&y1).unwrap(), std::fs::read(&y2).unwrap());
}

#[test]
fn instrumentation_flags() {
    let d = tmp("dump");
    let dump = d.join("dumps");
    let o = qcc(&[
        &example(),
        "-O2",
        "--dump-dir",
        &dump.display().to_string(),
        "--print-after=fuse-activation",
        "--time-passes",
        "--elide-constants",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut names: Vec<String> = std::fs::read_dir(&dump).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "00-input.qir",
            "01-canonicalize.qir",
            "02-fold-batchnorm.qir",
            "03-fuse-activation.qir",
            "04-fuse-residual.qir",
            "05-fold-qdq.qir",
            "06-fuse-epilogue.qir",
            "07-canonicalize.qir"
        ]
    );
    let e = stderr(&o);
    assert!(e.contains("IR Dump After fuse-activation") && e.contains("pass execution timing report"), "{e}");
    assert!(!e.contains("IR Dump After fold-batchnorm"), "{e}");

    let o = qcc(&[&example(), "-O2", "--stop-after", "fold-batchnorm", "--elide-constants"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(" relu "), "stopped before fuse-activation: {out}");

    let o = qcc(&[&example(), "--print-after=no-such-pass"]);
    assert_fails(&o, "unknown pass `no-such-pass`", None);

    // --disable-pass leaves a pass out, in the quantizing pipeline too; a name that is no pass is an error.
    let digits = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mnist/digits").display().to_string();
    let dump = d.join("disabled");
    let args = [&example(), "-O2", "--int8", "--calib", &digits, "--calib-samples", "8", "--dump-dir", &dump.display().to_string()];
    let o = qcc(&[&args[..], &["--disable-pass", "fuse-activation,bias-correct"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<String> = std::fs::read_dir(&dump).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().any(|n| n.ends_with("fold-qdq.qir")), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("fuse-activation") || n.contains("bias-correct")), "{names:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(" relu "), "fuse-activation ran: {out}");
    let o = qcc(&[&args[..], &["--disable-pass", "fuse-everything"]].concat());
    assert_fails(&o, "unknown pass `fuse-everything`", None);
}

fn write_model(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

#[test]
fn bad_inputs_fail_cleanly() {
    let d = tmp("bad");
    let out = d.join("out.qir");
    let outs = out.display().to_string();

    let good = std::fs::read(example()).unwrap();
    let m = write_model(&d, "truncated.onnx", &good[..good.len() / 3]);
    assert_fails(&qcc(&[&m, "-o", &outs]), "truncated.onnx is not a valid ONNX model", Some(&out));

    let mut b = common::Builder::new();
    b.input("x", &[1, 4]).output("y", &[1, 4]).node("Add", "add_missing", &["x", "bias"], &["y"], vec![]);
    let m = write_model(&d, "missing.onnx", &b.bytes());
    assert_fails(&qcc(&[&m, "-o", &outs]), "node \"add_missing\" reads \"bias\"", Some(&out));

    let mut b = common::Builder::new();
    b.input("x", &[1, 4]).output("y", &[1, 4]);
    b.node("Relu", "loop_a", &["x_and_b"], &["a"], vec![]).node("Add", "loop_b", &["x", "a"], &["x_and_b"], vec![]).node(
        "Relu",
        "out",
        &["a"],
        &["y"],
        vec![],
    );
    let m = write_model(&d, "cycle.onnx", &b.bytes());
    assert_fails(&qcc(&[&m, "-o", &outs]), "cycle through node \"loop_a\"", Some(&out));

    let mut b = common::Builder::new();
    b.input("x", &[1, 3]).output("y", &[1, 3]).init("w", &[1, 4], vec![1.0; 4]).node("Add", "add_shapes", &["x", "w"], &["y"], vec![]);
    let m = write_model(&d, "shapes.onnx", &b.bytes());
    assert_fails(&qcc(&[&m, "-o", &outs]), "node \"add_shapes\" (Add): shapes", Some(&out));

    let mut b = common::Builder::new();
    b.input("x", &[1, 3]).output("y", &[1, 3]).node("Hardmax", "hardmax_0", &["x"], &["y"], vec![]);
    let m = write_model(&d, "unsupported.onnx", &b.bytes());
    assert_fails(&qcc(&[&m, "-o", &outs]), "node \"hardmax_0\": unsupported op Hardmax (domain \"\", opset 13)", Some(&out));
    // ... and --allow-unsupported keeps it, so the model can be dumped.
    let o = qcc(&[&m, "--allow-unsupported", "-O0"]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("opaque %0 {domain=\"\", op_type=\"Hardmax\"}"),
        "{}",
        stderr(&o)
    );

    let mut b = common::Builder::new();
    b.input("x", &[1, 4]).output("y", &[1, 4]).node("Add", "add_ext", &["x", "w"], &["y"], vec![]);
    b.inits.push(qcc_frontend::onnx::TensorProto {
        name: Some("w".into()),
        dims: vec![1, 4],
        data_type: Some(1),
        data_location: Some(1),
        external_data: vec![qcc_frontend::onnx::StringStringEntryProto {
            key: Some("location".into()),
            value: Some("../../etc/passwd".into()),
        }],
        ..Default::default()
    });
    let m = write_model(&d, "escape.onnx", &b.bytes());
    assert_fails(&qcc(&[&m, "-o", &outs]), "escapes the model's folder", Some(&out));

    let npy = d.join("garbage.npy");
    std::fs::write(&npy, b"not a numpy file").unwrap();
    let y = d.join("y.npy");
    assert_fails(
        &qcc(&["run", &example(), "--input", &npy.display().to_string(), "--output", &y.display().to_string()]),
        "garbage.npy",
        Some(&y),
    );

    let wrong = d.join("wrong.npy");
    qcc::npy::write_npy(&wrong, &qcc_ir::Tensor::from_f32(&[1, 3, 3], vec![0.0; 9]).unwrap()).unwrap();
    assert_fails(
        &qcc(&["run", &example(), "--input", &wrong.display().to_string(), "--output", &y.display().to_string()]),
        "does not match the model input",
        Some(&y),
    );

    assert_fails(&qcc(&[&example(), "-o", "/nonexistent-dir/x.qir"]), "cannot write /nonexistent-dir/x.qir", None);
    assert_fails(&qcc(&["no-such-model.onnx"]), "cannot read no-such-model.onnx", None);

    let q = d.join("bad.qir");
    std::fs::write(&q, "graph @g(%0: f32[2]) -> (%1: f32[2]) {\n  %1 = relu %9 : f32[2]\n}\n").unwrap();
    assert_fails(&qcc(&[&q.display().to_string(), "-o", &outs]), "bad.qir:line 2: use of undefined value %9", Some(&out));
}

/// `-o NAME.o` writes an object file and its header, naming the nodes the interpreter runs; a bad symbol
/// prefix is one error with nothing written; `qcc bench` reports latency as text and JSON.
#[test]
fn object_files_headers_and_bench() {
    let d = tmp("obj");
    let obj = d.join("digits.o");
    let o = qcc(&[&example(), "-O1", "-o", obj.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let header = std::fs::read_to_string(d.join("digits.h")).unwrap();
    for want in
        ["size_t digits_scratch_bytes(void);", "int digits_run(const float *const *inputs", "#define DIGITS_INPUT0_SHAPE {1, 1, 28, 28}"]
    {
        assert!(header.contains(want), "{want} missing from:\n{header}");
    }
    assert_eq!(&std::fs::read(&obj).unwrap()[..4], b"\x7fELF");

    let o = qcc(&[&example(), "-o", obj.to_str().unwrap(), "--symbol-prefix", "9bad"]);
    assert_fails(&o, "is not a C identifier", None);

    // A Pad that no convolution takes in has no kernel: the interpreter in libqcc_runtime.a runs it, in
    // the JIT and in the object file alike, and qcc names it. (examples/c/check.sh links such a model.)
    let mut b = common::Builder::new();
    b.input("x", &[1, 4]).output("y", &[1, 6]);
    b.init_i64("pads", &[4], vec![0, 1, 0, 1]);
    b.node("Pad", "border", &["x", "pads"], &["y"], vec![]);
    let m = write_model(&d, "pad.onnx", &b.bytes());
    let pad = d.join("pad.o");
    let o = qcc(&[&m, "-o", pad.to_str().unwrap()]);
    assert!(o.status.success() && stderr(&o).contains("interpreted: \"border\": no compiled kernel for pad"), "{}", stderr(&o));
    let header = std::fs::read_to_string(d.join("pad.h")).unwrap();
    assert!(header.contains("const char *qcc_last_error(void);") && header.contains("-4 if a step"), "{header}");

    let json = d.join("bench.json");
    let o = qcc(&["bench", &example(), "--iters", "3", "--json", json.to_str().unwrap()]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("median"), "{}", stderr(&o));
    let j = std::fs::read_to_string(&json).unwrap();
    assert!(j.contains("\"median_ms\"") && j.contains("\"p90_ms\"") && j.contains("\"threads\""), "{j}");
    // --profile: every step timed, grouped by kernel, then per node.
    let o = qcc(&["bench", &example(), "-O2", "--iters", "3", "--profile"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("(all)") && out.contains("fgemm") && out.contains("median"), "{out}{}", stderr(&o));
}
