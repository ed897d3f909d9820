//! insta snapshots of the IR after each pass of the -O2 pipeline on a small model built in the test,
//! plus the interpreter agreeing before and after the whole pipeline.
mod common;
use qcc_frontend::{import_bytes, ImportOptions};
use qcc_ir::{print_graph, PrintOptions, Tensor};
use qcc_passes::{pipeline, Instrumentation, OptLevel, PassContext, PassManager};

#[test]
fn small_cnn_after_each_pass() {
    let bytes = common::small_cnn().bytes();
    let g0 = import_bytes(&bytes, "small_cnn", None, &ImportOptions::default()).expect("import").graph;
    let dir = std::env::temp_dir().join(format!("qcc-snap-{}", std::process::id()));
    let inst = Instrumentation { dump_dir: Some(dir.clone()), verify: true, ..Default::default() };
    let mut g = g0.clone();
    let mut pm = PassManager::new(pipeline(OptLevel::O2), inst);
    pm.run(&mut g, &mut PassContext::default(), &mut std::io::sink()).expect("pipeline");
    let mut dumps: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    dumps.sort();
    assert_eq!(dumps.len(), pm.names().len() + 1, "one dump per pass plus the input");
    for d in &dumps {
        let name = d.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(format!("small_cnn__{name}"), std::fs::read_to_string(d).unwrap());
    }
    std::fs::remove_dir_all(&dir).ok();

    let x = Tensor::from_f32(&[1, 3, 8, 8], common::values(192, 42)).unwrap();
    let before = qcc_runtime::run(&g0, vec![x.clone()]).unwrap();
    let after = qcc_runtime::run(&g, vec![x]).unwrap();
    let (a, b) = (after[0].to_f32_vec(), before[0].to_f32_vec());
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() <= 1e-5 * q.abs().max(1.0), "{p} vs {q}");
    }
    // The final IR is in its shortest form: one conv per conv (BN and activations fused), no reshape chain.
    let text = print_graph(&g, PrintOptions { elide_constants: true });
    assert!(!text.contains("batch_norm") && !text.contains(" relu ") && !text.contains(" clip "), "{text}");
}
