//! Automatic mixed precision (`--mixed-precision auto`): starting from plain int8, the layers that add the
//! most error on their own (analyze's SQNR alone) are promoted one at a time — conv and gemm to float
//! weights, other ops to int16 outputs — until top-1 on a labeled tuning set is within the budget of
//! float. The tuning set is the user's, never the set being evaluated.
use crate::analyze::analyze;
use crate::calib::{CalibSet, Calibrated};
use crate::data::Dataset;
use crate::eval::evaluate_many;
use crate::exec::Exec;
use anyhow::Result;
use qcc_ir::Graph;
use qcc_passes::{Instrumentation, QuantConfig};

/// At most this many layers are promoted.
const MAX_PROMOTIONS: usize = 16;

/// What auto mode chose and why.
pub struct Auto {
    pub cfg: QuantConfig,
    pub graph: Graph,
    /// One line per decision, with the tuning top-1 after it.
    pub log: Vec<String>,
}

/// Top-1 (%) of each executor on the tuning set.
fn top1(execs: &[&Exec], tune: &Dataset, label_offset: i64) -> Result<Vec<f64>> {
    let r = evaluate_many(execs, tune, label_offset, |_, _| {})?;
    Ok(r.top1.iter().map(|k| 100.0 * *k as f64 / r.n.max(1) as f64).collect())
}

/// Runs auto mode. `exec` compiles a graph for evaluation; `float` is the float model.
#[allow(clippy::too_many_arguments)]
pub fn auto(
    cal: &Calibrated,
    base: &QuantConfig,
    set: &CalibSet,
    float: &Exec,
    tune: &Dataset,
    label_offset: i64,
    max_drop: f64,
    exec: impl Fn(Graph) -> Result<Exec>,
    inst: &Instrumentation,
) -> Result<Auto> {
    let mut sink = std::io::sink();
    let mut cfg = base.clone();
    let mut graph = cal.finish(&cfg, inst, &mut sink)?;
    let first = exec(graph.clone())?;
    let t = top1(&[float, &first], tune, label_offset)?;
    let (f, mut q) = (t[0], t[1]);
    let mut log =
        vec![format!("tuning set: {} samples, float top-1 {f:.2}, int8 top-1 {q:.2} (budget: drop <= {max_drop})", tune.items.len())];
    if f - q <= max_drop {
        log.push("within budget: nothing promoted".into());
        return Ok(Auto { cfg, graph, log });
    }
    let mut layers = analyze(cal, &graph, set, 4)?;
    layers.sort_by(|a, b| a.alone_sqnr_db.total_cmp(&b.alone_sqnr_db));
    for l in layers.iter().filter(|l| l.op != "quantize").take(MAX_PROMOTIONS) {
        // The first ONNX name is the op itself (the others are activations fused into it).
        let name = l.name.split('+').next().unwrap_or(&l.name).to_string();
        let to_float = matches!(l.op.as_str(), "qconv" | "qgemm");
        if to_float {
            cfg.keep_float.push(name.clone());
        } else {
            cfg.int16.push(name.clone());
        }
        graph = cal.finish(&cfg, inst, &mut sink)?;
        q = top1(&[&exec(graph.clone())?], tune, label_offset)?[0];
        log.push(format!(
            "{name} ({}, {:.1} dB alone) -> {}: top-1 {q:.2}",
            l.op,
            l.alone_sqnr_db,
            if to_float { "float" } else { "int16" }
        ));
        if f - q <= max_drop {
            break;
        }
    }
    let n = cfg.keep_float.len() + cfg.int16.len();
    log.push(if f - q <= max_drop {
        format!("within budget after promoting {n} layer(s): {} to float, {} to int16", cfg.keep_float.len(), cfg.int16.len())
    } else {
        format!("budget not reached after {n} promotions (drop {:.2}); keeping them", f - q)
    });
    Ok(Auto { cfg, graph, log })
}
