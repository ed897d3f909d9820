//! The compile driver: load a model (.onnx or .qir), run a pipeline with instrumentation, print IR.
use anyhow::{anyhow, bail, Context, Result};
use qcc_frontend::{import_file, ImportOptions};
use qcc_ir::{parse_graph, Graph};
use qcc_passes::{dynamic_pipeline, pipeline, Instrumentation, OptLevel, PassContext, PassManager, QuantConfig, PASS_NAMES};
use std::io::Write;
use std::path::Path;

pub struct Loaded {
    pub graph: Graph,
    pub warnings: Vec<String>,
}

/// Loads `.qir` text or an ONNX model (by extension; anything but `.qir` is read as ONNX).
pub fn load_model(path: &Path, opts: &ImportOptions) -> Result<Loaded> {
    if path.extension().is_some_and(|e| e == "qir") {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let graph = parse_graph(&text).map_err(|e| anyhow!("{}:{}", path.display(), e))?;
        qcc_ir::verify(&graph).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        return Ok(Loaded { graph, warnings: vec![] });
    }
    let imp = import_file(path, opts).map_err(|e| anyhow!(e))?;
    qcc_ir::verify(&imp.graph).map_err(|e| anyhow!("{}: imported graph is invalid: {e}", path.display()))?;
    Ok(Loaded { graph: imp.graph, warnings: imp.warnings })
}

/// Every pass the instrumentation names (--print-after, --print-before, --stop-after, --disable-pass)
/// must exist.
pub fn check_pass_names(inst: &Instrumentation) -> Result<()> {
    for n in inst.print_after.iter().chain(&inst.print_before).chain(inst.stop_after.iter()).chain(&inst.disable) {
        if !PASS_NAMES.contains(&n.as_str()) {
            bail!("unknown pass `{n}` (passes: {})", PASS_NAMES.join(", "));
        }
    }
    Ok(())
}

/// Runs the pipeline of `level`. On a pass failure the error carries the last good IR.
pub fn compile(g: &mut Graph, level: OptLevel, inst: Instrumentation, diag: &mut dyn Write) -> Result<()> {
    check_pass_names(&inst)?;
    let mut pm = PassManager::new(pipeline(level), inst);
    let mut cx = PassContext::default();
    pm.run(g, &mut cx, diag).map_err(|f| pass_failure(&f))?;
    Ok(())
}

/// Dynamic quantization (`--dynamic`): the float passes, then int8 weights per `cfg` and run-time
/// quantization of every conv and gemm input.
pub fn compile_dynamic(
    g: &mut Graph,
    level: OptLevel,
    equalize: bool,
    cfg: &QuantConfig,
    inst: Instrumentation,
    diag: &mut dyn Write,
) -> Result<()> {
    check_pass_names(&inst)?;
    let mut pm = PassManager::new(dynamic_pipeline(level, equalize), inst);
    cfg.check_names(g).map_err(|e| anyhow!(e))?;
    let mut cx = PassContext { quant: cfg.clone(), ..Default::default() };
    pm.run(g, &mut cx, diag).map_err(|f| pass_failure(&f))?;
    Ok(())
}

/// The error for a failed pass, followed by the last IR that verified.
pub fn pass_failure(f: &qcc_passes::PassFailure) -> anyhow::Error {
    let ir = qcc_ir::print_graph(&f.last_good, qcc_ir::PrintOptions { elide_constants: true });
    anyhow!("{}\n// last good IR:\n{ir}", f.error)
}

/// Parses `NAME=1,3,224,224`.
pub fn parse_input_shape(s: &str) -> Result<(String, Vec<usize>)> {
    let (name, dims) = s.rsplit_once('=').ok_or_else(|| anyhow!("--input-shape {s:?}: expected NAME=D1,D2,..."))?;
    let dims = dims
        .split(',')
        .map(|d| d.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| anyhow!("--input-shape {s:?}: dimensions must be non-negative integers"))?;
    Ok((name.to_string(), dims))
}
