//! Filetests (Cranelift's idea): `tests/filetests/<folder>/*.qir`. The first line says what to do:
//!   `; test pass NAME[,NAME]` — run the passes; the IR after them must equal the `; expect:` block, and the
//!                               interpreter must give the same outputs before and after (within 1e-5 of
//!                               the largest output; 5% once quantized). A list with assign-qparams is
//!                               calibrated on 8 deterministic random inputs just before it;
//!   `; test roundtrip`        — parse, print, parse, print: both prints equal the `; expect:` block;
//!   `; test verify`           — the graph must parse and verify.
//! Negative cases put `; error: TEXT` on the offending line: the test then expects an error there
//! (parse error on that line, or a verifier/pass error about the node defined there) containing TEXT.
//! `QCC_BLESS=1 cargo test --test filetests` rewrites the `; expect:` blocks.
use qcc_ir::{parse_graph, print_graph, verify, Graph, PrintOptions, Tensor, Type};
use qcc_passes::{pass_by_name, Instrumentation, PassContext, PassManager};
use std::path::{Path, PathBuf};

const EXPECT: &str = "; expect:";

fn files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).expect("tests/filetests") {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "qir") {
                    out.push(f);
                }
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no filetests found");
    out
}

/// Deterministic pseudo-random inputs for every f32 graph input.
fn inputs(g: &Graph, seed: u64) -> Option<Vec<Tensor>> {
    let mut state = seed | 1;
    g.inputs()
        .iter()
        .map(|v| match g.ty(*v) {
            Type::Tensor { shape, .. } if g.ty(*v).dtype() == Some(qcc_ir::DType::F32) => {
                let n: usize = shape.iter().product();
                let data = (0..n)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        ((state >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0) as f32
                    })
                    .collect();
                Tensor::from_f32(shape, data)
            }
            _ => None,
        })
        .collect()
}

fn is_quantized(g: &Graph) -> bool {
    g.value_ids().any(|v| g.ty(v).quant().is_some())
}

/// Observers and per-channel means for every observe node, fed 8 deterministic random inputs.
fn calibrate(g: &Graph, seed: u64, cx: &mut PassContext) {
    let mut sums: std::collections::HashMap<qcc_ir::ValueId, (Vec<f64>, u64)> = Default::default();
    // Sums over the input patches of every conv and gemm, by their outputs (round-weights).
    let mut totals: std::collections::HashMap<qcc_ir::ValueId, Option<qcc_passes::InputGram>> = Default::default();
    let mut grams = |v: qcc_ir::ValueId, t: &Tensor| {
        for n in g.node_ids().filter(|n| g.node(*n).inputs.first() == Some(&v)) {
            if let Some(s) = t.as_f32().and_then(|a| qcc_passes::InputGram::of(g, n, a)) {
                qcc_passes::InputGram::accumulate(totals.entry(g.node(n).output).or_default(), &s);
            }
        }
    };
    for k in 0..8 {
        let Some(ins) = inputs(g, seed.wrapping_add(k)) else { break };
        for (v, t) in g.inputs().iter().zip(&ins) {
            grams(*v, t);
        }
        qcc_runtime::run_observed(g, ins, |n, t| {
            grams(g.node(n).output, t);
            if g.node(n).op == qcc_ir::Op::Observe {
                let v = g.node(n).output;
                cx.calib.entry(v).or_default().observe(&t.to_f32_vec());
                let (shape, data) = (t.shape().to_vec(), t.to_f32_vec());
                if shape.len() >= 2 {
                    let (c, inner) = (shape[1], shape[2..].iter().product::<usize>());
                    let (s, cnt) = sums.entry(v).or_insert_with(|| (vec![0.0; c], 0));
                    for (i, x) in data.iter().enumerate() {
                        s[(i / inner.max(1)) % c] += *x as f64;
                    }
                    *cnt += (data.len() / c) as u64;
                }
            }
        })
        .expect("calibration run");
    }
    cx.input_grams = std::sync::Arc::new(totals.into_iter().filter_map(|(v, t)| Some((v, t?))).collect());
    cx.channel_means = sums.into_iter().map(|(v, (s, n))| (v, s.iter().map(|x| (x / n as f64) as f32).collect())).collect();
}

fn close(a: &[Tensor], b: &[Tensor], tol: f32) -> Result<(), String> {
    for (x, y) in a.iter().zip(b) {
        let (xv, yv) = (x.to_f32_vec(), y.to_f32_vec());
        if x.shape() != y.shape() {
            return Err(format!("shapes {:?} and {:?} differ", x.shape(), y.shape()));
        }
        let scale = yv.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (i, (p, q)) in xv.iter().zip(&yv).enumerate() {
            if (p - q).abs() > tol * scale {
                return Err(format!("element {i}: {p} after vs {q} before"));
            }
        }
    }
    Ok(())
}

/// Expected errors: (1-based line, text).
fn expected_errors(src: &str) -> Vec<(usize, String)> {
    src.lines().enumerate().filter_map(|(i, l)| l.find("; error:").map(|p| (i + 1, l[p + 8..].trim().to_string()))).collect()
}

/// The line defining the node named `loc` (its `loc("...")`), 1-based.
fn line_of_loc(src: &str, loc: &str) -> Option<usize> {
    let name = loc.split('"').nth(1)?;
    let needle = format!("loc(\"{name}\"");
    src.lines().position(|l| l.contains(&needle)).map(|i| i + 1)
}

fn check_error(src: &str, errs: &[(usize, String)], line: usize, msg: &str) -> Result<(), String> {
    match errs.iter().find(|(l, _)| *l == line) {
        Some((_, want)) if msg.contains(want.as_str()) => Ok(()),
        Some((_, want)) => Err(format!("line {line}: error {msg:?} does not contain {want:?}")),
        None => Err(format!("unexpected error at line {line}: {msg}\n{src}")),
    }
}

fn run_file(path: &Path) -> Result<(), String> {
    let src = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let header = src.lines().next().unwrap_or("").trim();
    let errs = expected_errors(&src);
    let body_end = src.find(EXPECT).unwrap_or(src.len());
    let g = match parse_graph(&src[..body_end]) {
        Ok(g) => g,
        Err(e) if !errs.is_empty() => return check_error(&src, &errs, e.line, &e.msg),
        Err(e) => return Err(format!("parse error: {e}")),
    };
    if let Err(v) = verify(&g) {
        if errs.is_empty() {
            return Err(format!("{v}"));
        }
        for e in &v.0 {
            let line = line_of_loc(&src, &e.loc).ok_or_else(|| format!("no line for {}", e.loc))?;
            check_error(&src, &errs, line, &e.msg)?;
        }
        return Ok(());
    }
    let out = if let Some(names) = header.strip_prefix("; test pass ") {
        let names: Vec<&str> = names.split(',').map(str::trim).collect();
        // Seeded by the path inside tests/filetests, so every checkout calibrates alike.
        let rel = path.strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests")).unwrap_or(path);
        let seed = rel.to_string_lossy().bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
        // Passes before assign-qparams run first; then the graph is calibrated on 8 deterministic random
        // inputs, as the driver would on real data.
        let split = names.iter().position(|n| *n == "assign-qparams").unwrap_or(names.len());
        let mut after = g.clone();
        let mut cx = PassContext::default();
        for (k, part) in [&names[..split], &names[split..]].into_iter().enumerate() {
            if k == 1 && !part.is_empty() {
                calibrate(&after, seed, &mut cx);
            }
            let passes = part.iter().map(|n| pass_by_name(n).ok_or(format!("unknown pass {n}"))).collect::<Result<Vec<_>, _>>()?;
            let mut pm = PassManager::new(passes, Instrumentation { verify: true, ..Default::default() });
            if let Err(f) = pm.run(&mut after, &mut cx, &mut std::io::sink()) {
                let msg = f.error.to_string();
                let line = errs.first().map(|e| e.0).ok_or_else(|| format!("pass failed: {msg}"))?;
                return check_error(&src, &errs, line, &msg);
            }
        }
        if !errs.is_empty() {
            return Err("expected an error, the passes succeeded".into());
        }
        if let Some(ins) = inputs(&g, seed) {
            let before = qcc_runtime::run(&g, ins.clone()).map_err(|e| format!("before: {e}"))?;
            let after_out = qcc_runtime::run(&after, ins).map_err(|e| format!("after: {e}"))?;
            // Quantized graphs are compared with a tolerance of a few quantization steps.
            let tol = if is_quantized(&g) || is_quantized(&after) { 0.05 } else { 1e-5 };
            close(&after_out, &before, tol).map_err(|e| format!("interpreter results changed: {e}"))?;
        }
        print_graph(&after, PrintOptions::default())
    } else if header == "; test roundtrip" {
        let p1 = print_graph(&g, PrintOptions::default());
        let g2 = parse_graph(&p1).map_err(|e| format!("reparse: {e}\n{p1}"))?;
        let p2 = print_graph(&g2, PrintOptions::default());
        if p1 != p2 {
            return Err(format!("print(parse(print(x))) differs:\n{p1}\n---\n{p2}"));
        }
        p1
    } else if header == "; test verify" {
        if !errs.is_empty() {
            return Err("expected an error, the graph verified".into());
        }
        return Ok(());
    } else {
        return Err(format!("unknown header {header:?}"));
    };
    let expected: String =
        src[body_end..].lines().skip(1).map(|l| format!("{}\n", l.strip_prefix("; ").unwrap_or(l.trim_start_matches(';')))).collect();
    if expected != out {
        if std::env::var_os("QCC_BLESS").is_some() {
            let mut new = src[..body_end].trim_end().to_string();
            new.push_str(&format!("\n\n{EXPECT}\n"));
            for l in out.lines() {
                new.push_str(&format!("; {l}\n"));
            }
            std::fs::write(path, new).map_err(|e| e.to_string())?;
            return Ok(());
        }
        return Err(format!("output differs from the expect block (QCC_BLESS=1 to update):\n--- got\n{out}--- expected\n{expected}"));
    }
    Ok(())
}

#[test]
fn filetests() {
    let mut failed = Vec::new();
    let all = files();
    for f in &all {
        if let Err(e) = run_file(f) {
            failed.push(format!("{}: {e}", f.display()));
        }
    }
    println!("filetests: {} passed, {} failed", all.len() - failed.len(), failed.len());
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
