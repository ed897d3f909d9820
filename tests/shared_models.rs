//! CI-only checks on the real models in ../shared (run with `cargo test --test shared_models -- --ignored`;
//! .ci/run does). They fail loudly when ../shared is absent; the core suite never needs it.
use qcc_frontend::{import_file, ImportOptions};
use qcc_ir::{parse_graph, print_graph, PrintOptions};
use qcc_passes::{pipeline, Instrumentation, OptLevel, PassContext, PassManager};
use std::path::{Path, PathBuf};

fn shared_models() -> Vec<PathBuf> {
    let root = std::env::var_os("QCC_SHARED").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let models = root.join("models");
    assert!(
        models.is_dir(),
        "\n\n*** {} is absent: these CI-only tests need ../shared (set QCC_SHARED to its path) ***\n",
        models.display()
    );
    let mut out = Vec::new();
    let mut stack = vec![models];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "onnx") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 11, "expected the 11 shared models, found {}", out.len());
    out
}

#[test]
#[ignore = "needs ../shared"]
fn every_shared_model_imports_prints_and_round_trips() {
    for m in shared_models() {
        let g = import_file(&m, &ImportOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", m.display())).graph;
        qcc_ir::verify(&g).unwrap_or_else(|e| panic!("{}: {e}", m.display()));
        for level in [OptLevel::O0, OptLevel::O2] {
            let mut g = g.clone();
            let mut pm = PassManager::new(pipeline(level), Instrumentation { verify: true, ..Default::default() });
            pm.run(&mut g, &mut PassContext::default(), &mut std::io::sink()).unwrap_or_else(|f| panic!("{}: {}", m.display(), f.error));
            let text = print_graph(&g, PrintOptions::default());
            let back = parse_graph(&text).unwrap_or_else(|e| panic!("{}: {e}", m.display()));
            assert_eq!(print_graph(&back, PrintOptions::default()), text, "{} does not round-trip at {level:?}", m.display());
        }
        println!("ok {}", m.display());
    }
}
