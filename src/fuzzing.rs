//! Entry points shared by the cargo-fuzz targets (fuzz/) and the bounded fuzz smoke test: each takes
//! arbitrary bytes and must never panic, whatever they contain.
use qcc_frontend::{import_bytes, ImportOptions};
use qcc_passes::{pipeline, Instrumentation, OptLevel, PassContext, PassManager};

fn compile(mut g: qcc_ir::Graph) {
    if qcc_ir::verify(&g).is_err() || g.num_values() > 100_000 {
        return;
    }
    let mut pm = PassManager::new(pipeline(OptLevel::O2), Instrumentation { verify: true, ..Default::default() });
    let _ = pm.run(&mut g, &mut PassContext::default(), &mut std::io::sink());
}

/// Imports bytes as an ONNX model and, if that works, runs the -O2 pipeline on it.
pub fn import_onnx(bytes: &[u8]) {
    if let Ok(imp) = import_bytes(bytes, "fuzz", None, &ImportOptions::default()) {
        compile(imp.graph);
    }
}

/// Parses bytes as .qir text, prints what parses and checks print/parse is stable, then compiles it.
pub fn parse_qir(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(g) = qcc_ir::parse_graph(text) {
        let p1 = qcc_ir::print_graph(&g, Default::default());
        let g2 = qcc_ir::parse_graph(&p1).expect("printed IR must parse");
        assert_eq!(qcc_ir::print_graph(&g2, Default::default()), p1, "print/parse must be stable");
        compile(g);
    }
}
