//! Automatic mixed precision (`--mixed-precision auto`): starting from plain int8, the most sensitive layers
//! (analyze's sensitivity: network-output SQNR with only that layer quantized) are promoted one rung at a
//! time — int16 outputs, then for conv and gemm float weights too — until the tuning metric is within the
//! budget of float. The metric is top-1 on the user's labeled tuning set, or without one an estimate of
//! top-1 on calibration samples held back from calibration; never the set being evaluated.
use crate::analyze::analyze;
use crate::calib::{CalibSet, Calibrated};
use crate::data::Dataset;
use crate::eval::{argmax, evaluate_many, scores};
use crate::exec::Exec;
use anyhow::{bail, Context, Result};
use qcc_ir::{Graph, Tensor};
use qcc_passes::{Instrumentation, QuantConfig};

/// At most this many layers are promoted.
const MAX_PROMOTIONS: usize = 16;

/// What a configuration is judged by: top-1 (%) on a labeled set, or estimated on unlabeled samples.
pub enum Metric<'a> {
    Labeled {
        data: &'a Dataset,
        label_offset: i64,
    },
    /// Held-back calibration samples and the float model's class probabilities on them. The float model's
    /// probabilities stand in for labels: a prediction of class c counts as correct with probability
    /// p_float(c), so the estimated top-1 drop is the mean of p_float(float's top class) − p_float(quantized
    /// model's top class): zero where both agree, small where float itself was unsure.
    HeldBack {
        inputs: Vec<Vec<Tensor>>,
        float_probs: Vec<Vec<f32>>,
    },
}

/// Class probabilities from a classifier output: kept if it already is a distribution, else softmax.
fn probabilities(s: &[f32]) -> Vec<f32> {
    let sum: f32 = s.iter().sum();
    if s.iter().all(|p| (0.0..=1.0).contains(p)) && (sum - 1.0).abs() < 1e-3 {
        return s.to_vec();
    }
    let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
    let z: f32 = e.iter().sum();
    e.iter().map(|x| x / z).collect()
}

impl<'a> Metric<'a> {
    /// The held-back samples of `set`, run once through the float model.
    pub fn held_back(set: &CalibSet, float: &Exec) -> Result<Metric<'a>> {
        if set.held_back.is_empty() {
            bail!("auto mixed precision without --tune needs held-back calibration samples (--holdout N)");
        }
        let mut inputs = Vec::new();
        let mut float_probs = Vec::new();
        for paths in &set.held_back {
            let x = set.load_paths(paths, float.graph())?;
            let out = float.run(x.clone()).with_context(|| format!("running the float model on {}", paths[0].display()))?;
            let s = scores(out.first().context("the model has no outputs")?)?;
            if s.len() < 2 {
                bail!("auto mixed precision without labels estimates top-1 from a classifier's output; this model's first output has {} value(s): give a labeled --tune set", s.len());
            }
            float_probs.push(probabilities(&s));
            inputs.push(x);
        }
        Ok(Metric::HeldBack { inputs, float_probs })
    }

    fn describe(&self) -> String {
        match self {
            Metric::Labeled { data, .. } => format!("top-1 on the tuning set ({} labeled samples)", data.items.len()),
            Metric::HeldBack { inputs, .. } => {
                format!("top-1 estimated from float's probabilities on {} held-back calibration samples (no labels)", inputs.len())
            }
        }
    }

    /// Top-1 (%) of each executor; the first is the float model.
    fn top1(&self, execs: &[&Exec]) -> Result<Vec<f64>> {
        match self {
            Metric::Labeled { data, label_offset } => {
                let r = evaluate_many(execs, data, *label_offset, |_, _| {})?;
                Ok(r.top1.iter().map(|k| 100.0 * *k as f64 / r.n.max(1) as f64).collect())
            }
            Metric::HeldBack { inputs, float_probs } => execs
                .iter()
                .map(|e| {
                    let mut sum = 0.0;
                    for (x, p) in inputs.iter().zip(float_probs) {
                        let out = e.run(x.clone())?;
                        let s = scores(out.first().context("the model has no outputs")?)?;
                        sum += p.get(argmax(&s)).copied().unwrap_or(0.0) as f64;
                    }
                    Ok(100.0 * sum / inputs.len().max(1) as f64)
                })
                .collect(),
        }
    }

    /// One input of `g` to time configurations on.
    fn probe(&self, g: &Graph) -> Result<Vec<Tensor>> {
        match self {
            Metric::Labeled { data, .. } => {
                let want = g.inputs().first().and_then(|v| g.ty(*v).shape()).context("input shape unknown")?.to_vec();
                let (path, _) = data.items.first().context("the tuning set is empty")?;
                Ok(vec![crate::data::fit_input(data.load(0)?, &want, &path.display().to_string())?])
            }
            Metric::HeldBack { inputs, .. } => inputs.first().cloned().context("no held-back samples"),
        }
    }
}

/// Median latencies (ms) of `a` and `b` on `x`, run alternately so that both see the same machine load:
/// the cost of a choice, measured with the executor the model runs on.
fn latency_ms(a: &Exec, b: &Exec, x: &[Tensor]) -> Result<(f64, f64)> {
    let time = |e: &Exec| -> Result<f64> {
        let s = std::time::Instant::now();
        e.run(x.to_vec())?;
        Ok(s.elapsed().as_secs_f64() * 1e3)
    };
    time(a)?;
    time(b)?;
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        ta.push(time(a)?);
        tb.push(time(b)?);
    }
    ta.sort_by(f64::total_cmp);
    tb.sort_by(f64::total_cmp);
    Ok((ta[ta.len() / 2], tb[tb.len() / 2]))
}

/// What auto mode chose and why.
pub struct Auto {
    pub cfg: QuantConfig,
    pub graph: Graph,
    /// One line per decision, with the metric and latency after it.
    pub log: Vec<String>,
}

/// Runs auto mode. `exec` compiles a graph for evaluation; `float` is the float model.
#[allow(clippy::too_many_arguments)]
pub fn auto(
    cal: &Calibrated,
    base: &QuantConfig,
    set: &CalibSet,
    float: &Exec,
    metric: &Metric,
    max_drop: f64,
    exec: impl Fn(Graph) -> Result<Exec>,
    inst: &Instrumentation,
) -> Result<Auto> {
    let mut sink = std::io::sink();
    let mut cfg = base.clone();
    let mut graph = cal.finish(&cfg, inst, &mut sink)?;
    let first = exec(graph.clone())?;
    let t = metric.top1(&[float, &first])?;
    let (f, mut q) = (t[0], t[1]);
    let probe = metric.probe(first.graph())?;
    let (lat_float, lat_int8) = latency_ms(float, &first, &probe)?;
    let mut log = vec![
        format!("metric: {}; budget: drop <= {max_drop}", metric.describe()),
        format!("float {f:.2}, int8 {q:.2}; latency float {lat_float:.2} ms, int8 {lat_int8:.2} ms (measured here, median of 9)"),
    ];
    if f - q <= max_drop {
        log.push("within budget: nothing promoted".into());
        return Ok(Auto { cfg, graph, log });
    }
    let mut layers = analyze(cal, &graph, set, cfg.method, 4, 2)?;
    layers.sort_by(|a, b| a.sensitivity_db.total_cmp(&b.sensitivity_db));
    let (mut lat, mut lat_base) = (lat_int8, lat_int8);
    let mut promoted: Vec<String> = Vec::new();
    'layers: for l in layers.iter().filter(|l| l.op != "quantize").take(MAX_PROMOTIONS) {
        // The first ONNX name is the op itself (the others are activations fused into it).
        let name = l.name.split('+').next().unwrap_or(&l.name).to_string();
        // The ladder: int16 output first; a conv or gemm then also gets float weights. A rung that does not
        // raise the metric is undone: it would only cost time.
        let rungs: &[&str] = if matches!(l.op.as_str(), "qconv" | "qgemm") { &["int16", "float"] } else { &["int16"] };
        for rung in rungs {
            let mut next = cfg.clone();
            if *rung == "int16" {
                next.int16.push(name.clone());
            } else {
                next.keep_float.push(name.clone());
            }
            let g = cal.finish(&next, inst, &mut sink)?;
            let e = exec(g.clone())?;
            let q2 = metric.top1(&[&e])?[0];
            let (lb, l2) = latency_ms(&first, &e, &probe)?;
            let keep = q2 > q;
            log.push(format!(
                "{name} ({}, sensitivity {:.1} dB, {:.1} dB alone) -> {rung}: {q2:.2}, latency {l2:.2} ms (int8 {lb:.2} ms){}",
                l.op,
                l.sensitivity_db,
                l.alone_sqnr_db,
                if keep { "" } else { "; no gain, undone" }
            ));
            if keep {
                (cfg, graph, q, lat, lat_base) = (next, g, q2, l2, lb);
                if !promoted.contains(&name) {
                    promoted.push(name.clone());
                }
            }
            if f - q <= max_drop {
                break 'layers;
            }
        }
    }
    let count = |v: &[String]| promoted.iter().filter(|p| v.contains(p)).count();
    let (n, nf, n16) = (promoted.len(), count(&cfg.keep_float), count(&cfg.int16));
    let cost = format!("latency {lat:.2} ms vs int8 {lat_base:.2} ms ({:+.0}%)", 100.0 * (lat / lat_base - 1.0));
    log.push(if f - q <= max_drop {
        format!("within budget after promoting {n} layer(s): {nf} with float weights, {n16} with int16 outputs; {cost}")
    } else {
        format!("budget not reached after promoting {n} layer(s) (drop {:.2}); keeping them; {cost}", f - q)
    });
    Ok(Auto { cfg, graph, log })
}
