//! ONNX backend node conformance: each case of ONNX's own test data (model, inputs, expected outputs) is
//! imported and run on the reference interpreter. tests/onnx-node-manifest.txt lists the cases that must
//! pass; the data comes from the onnx wheel via scripts/fetch-onnx-node-tests.sh.
//! `QCC_CONFORMANCE_REPORT=1` also runs every case of the supported op set and prints what fails and why.
use prost::Message;
use qcc_frontend::onnx::{ModelProto, TensorProto};
use qcc_frontend::{import_bytes, tensor_from_proto, ImportOptions};
use qcc_ir::Tensor;
use std::path::{Path, PathBuf};

/// Case-name prefixes of the op set qcc supports (for the report mode).
const PREFIXES: &[&str] = &[
    "test_conv_",
    "test_convtranspose",
    "test_gemm_",
    "test_matmul_",
    "test_add",
    "test_sub",
    "test_mul",
    "test_div",
    "test_relu",
    "test_clip",
    "test_leakyrelu",
    "test_sigmoid",
    "test_hardsigmoid",
    "test_hardswish",
    "test_tanh",
    "test_erf",
    "test_batchnorm",
    "test_maxpool",
    "test_averagepool",
    "test_globalaveragepool",
    "test_flatten",
    "test_reshape",
    "test_transpose",
    "test_concat",
    "test_constant_pad",
    "test_edge_pad",
    "test_reflect_pad",
    "test_wrap_pad",
    "test_squeeze",
    "test_unsqueeze",
    "test_constant",
    "test_identity",
    "test_dropout",
    "test_softmax",
    "test_resize",
    "test_shape",
    "test_gather_",
    "test_slice",
    "test_split_",
    "test_cast_",
    "test_reduce_mean",
    "test_reduce_sum",
    "test_reduce_max",
    "test_pow",
    "test_sqrt",
    "test_exp",
    "test_max_",
    "test_min_",
    "test_expand",
    "test_equal",
    "test_where",
    "test_layer_normalization",
    "test_quantizelinear",
    "test_dequantizelinear",
    "test_elu",
    "test_selu",
    "test_celu",
    "test_softplus",
    "test_softsign",
    "test_gelu",
    "test_mish",
    "test_neg",
    "test_abs",
    "test_reciprocal",
    "test_log",
    "test_floor",
    "test_ceil",
    "test_sum_",
    "test_mean_",
    "test_prelu",
    "test_globalmaxpool",
    "test_argmax",
    "test_argmin",
    "test_lrn",
    "test_instancenorm",
    "test_depthtospace",
    "test_spacetodepth",
    "test_upsample",
    "test_reduce_min",
    "test_reduce_l1",
    "test_reduce_l2",
    "test_reduce_sum_square",
    "test_logsoftmax",
    "test_castlike",
    "test_size",
    "test_less",
    "test_greater",
    "test_not",
    "test_constantofshape",
];

fn data_dir() -> PathBuf {
    match std::env::var_os("QCC_ONNX_NODE_TESTS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/onnx-node-tests"),
    }
}

fn read_tensor(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let tp = TensorProto::decode(&bytes[..]).map_err(|e| e.to_string())?;
    tensor_from_proto(&tp, None).map_err(|e| e.to_string())
}

fn close(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Err(format!("got {}{:?}, expected {}{:?}", got.dtype(), got.shape(), want.dtype(), want.shape()));
    }
    match (got, want) {
        (Tensor::F32(a), Tensor::F32(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                let ok = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= 1e-5 + 1e-3 * y.abs();
                if !ok {
                    return Err(format!("element {i}: got {x}, expected {y}"));
                }
            }
            Ok(())
        }
        _ if got == want => Ok(()),
        _ => Err("integer results differ".into()),
    }
}

fn run_case(dir: &Path) -> Result<(), String> {
    let bytes = std::fs::read(dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let model = ModelProto::decode(&bytes[..]).map_err(|e| e.to_string())?;
    let gp = model.graph.as_ref().ok_or("no graph")?;
    let inits: std::collections::HashSet<&str> = gp.initializer.iter().map(|t| t.name()).collect();
    let input_names: Vec<&str> = gp.input.iter().map(|i| i.name()).filter(|n| !inits.contains(n)).collect();
    let set = dir.join("test_data_set_0");
    let mut inputs = Vec::new();
    let mut opts = ImportOptions::default();
    for (i, name) in input_names.iter().enumerate() {
        let p = set.join(format!("input_{i}.pb"));
        if !p.exists() {
            break; // trailing optional inputs left out
        }
        let t = read_tensor(&p)?;
        opts.input_shapes.insert(name.to_string(), t.shape().to_vec());
        inputs.push(t);
    }
    // Shape operands fed as graph inputs are frozen to constants, as a user would with --const-input.
    let imp = match import_bytes(&bytes, &dir.display().to_string(), Some(dir), &opts) {
        Err(e) if e.to_string().contains("must be") && e.to_string().contains("constant") => {
            for (name, t) in input_names.iter().zip(&inputs).skip(1) {
                opts.input_shapes.remove(*name);
                opts.const_inputs.insert(name.to_string(), t.clone());
            }
            inputs.truncate(1);
            import_bytes(&bytes, &dir.display().to_string(), Some(dir), &opts)
        }
        r => r,
    }
    .map_err(|e| format!("import: {e}"))?;
    qcc_ir::verify(&imp.graph).map_err(|e| format!("verify: {e}"))?;
    if inputs.len() != imp.graph.inputs().len() {
        return Err(format!("{} inputs in the data, {} in the graph", inputs.len(), imp.graph.inputs().len()));
    }
    let outs = qcc_runtime::run(&imp.graph, inputs).map_err(|e| format!("run: {e}"))?;
    for (i, got) in outs.iter().enumerate() {
        let want = read_tensor(&set.join(format!("output_{i}.pb")))?;
        close(got, &want).map_err(|e| format!("output {i}: {e}"))?;
    }
    // The optimizing pipeline must not change results either.
    let mut g = imp.graph.clone();
    let mut pm = qcc_passes::PassManager::new(
        qcc_passes::pipeline(qcc_passes::OptLevel::O2),
        qcc_passes::Instrumentation { verify: true, ..Default::default() },
    );
    pm.run(&mut g, &mut Default::default(), &mut std::io::sink()).map_err(|f| format!("pipeline: {}", f.error))?;
    let inputs2: Vec<Tensor> = (0..g.inputs().len()).map(|i| read_tensor(&set.join(format!("input_{i}.pb")))).collect::<Result<_, _>>()?;
    if inputs2.len() != g.inputs().len() {
        return Err("input count changed".into());
    }
    let outs2 = qcc_runtime::run(&g, inputs2).map_err(|e| format!("run after -O2: {e}"))?;
    for (i, (a, b)) in outs2.iter().zip(&outs).enumerate() {
        close(a, b).map_err(|e| format!("output {i} after -O2: {e}"))?;
    }
    Ok(())
}

#[test]
fn onnx_node_conformance() {
    let dir = data_dir();
    if !dir.join(".complete").exists() {
        panic!(
            "ONNX node test data is absent from {}: run scripts/fetch-onnx-node-tests.sh (scripts/test.sh does) \
             or point QCC_ONNX_NODE_TESTS at it",
            dir.display()
        );
    }
    let manifest_text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx-node-manifest.txt")).expect("manifest");
    let manifest: Vec<&str> = manifest_text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let mut failed = Vec::new();
    for case in &manifest {
        if let Err(e) = run_case(&dir.join(case)) {
            failed.push(format!("{case}: {e}"));
        }
    }
    if std::env::var_os("QCC_CONFORMANCE_REPORT").is_some() {
        let mut all: Vec<String> =
            std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        all.sort();
        for case in all.iter().filter(|c| PREFIXES.iter().any(|p| c.starts_with(p)) && !manifest.contains(&c.as_str())) {
            match run_case(&dir.join(case)) {
                Ok(()) => println!("PASS-NOT-IN-MANIFEST {case}"),
                Err(e) => println!("FAIL {case}: {}", e.lines().next().unwrap_or("")),
            }
        }
    }
    println!("onnx node conformance: {} cases ran, {} passed, {} failed", manifest.len(), manifest.len() - failed.len(), failed.len());
    assert!(failed.is_empty(), "conformance failures:\n{}", failed.join("\n"));
}
