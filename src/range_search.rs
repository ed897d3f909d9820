//! range-search (on at -O2; `--range-search N`): per observed activation that carries a noticeable share
//! of the quantization error, the calibration range — among those the range methods give from its one
//! streaming pass — whose quantization error, injected alone into the float network, disturbs the
//! network's outputs least on the first N calibration samples.
//!
//! The range methods judge a tensor by its own error; a network's output does not weigh every tensor's
//! error alike (a residual stream feeding twenty layers against a depthwise output feeding one), so the
//! choice is made where it is felt.
use crate::calib::CalibSet;
use anyhow::{Context, Result};
use qcc_ir::{DType, Graph, NodeId, Op, ValueId};
use qcc_passes::QuantConfig;
use qcc_runtime::observe::{Observer, RangeMethod};
use std::collections::HashMap;

/// The chosen ranges and the activation scheme they were chosen for (another scheme ignores them).
#[derive(Clone, Debug)]
pub struct SearchedRanges {
    method: RangeMethod,
    act_type: DType,
    act_symmetric: bool,
    /// Per searched value, the method whose range was chosen and the range.
    pub choices: HashMap<ValueId, (RangeMethod, (f32, f32))>,
    /// One line per searched value: its name, the candidates' output SQNRs, the choice.
    pub log: Vec<String>,
    /// How many values each method's range was chosen for, the configured method's first.
    chosen: Vec<(String, usize)>,
    samples: usize,
    /// Values with more than one candidate (those searched are `choices`).
    considered: usize,
}

impl SearchedRanges {
    /// Whether the search was made for `cfg`'s range method and activation type.
    pub fn applies(&self, cfg: &QuantConfig) -> bool {
        self.method == cfg.method && self.act_type == cfg.act_type && self.act_symmetric == cfg.act_symmetric
    }

    /// The chosen ranges (assign-qparams' input).
    pub fn ranges(&self) -> HashMap<ValueId, (f32, f32)> {
        self.choices.iter().map(|(v, (_, r))| (*v, *r)).collect()
    }

    /// The range method whose range value `v` got, when it was searched for `method` at 8 bits.
    pub fn chosen(&self, v: ValueId, method: RangeMethod, levels: u32) -> Option<RangeMethod> {
        (self.method == method && levels == 256).then(|| self.choices.get(&v).map(|c| c.0)).flatten()
    }

    /// One line: how many ranges each method gave.
    pub fn summary(&self) -> String {
        let counts: Vec<String> = self.chosen.iter().map(|(m, k)| format!("{m} {k}")).collect();
        format!(
            "range search on {} samples: {} of {} activations searched (the others carry under {}% of the output error each), ranges from {}",
            self.samples,
            self.choices.len(),
            self.considered,
            SHARE * 100.0,
            counts.join(", ")
        )
    }
}

/// The candidate ranges for one observed value, the configured method's first, each with the method
/// that gave it; duplicates (within float rounding of the range) removed.
fn candidates(o: &Observer, method: RangeMethod) -> Vec<(RangeMethod, (f32, f32))> {
    let mut out: Vec<(RangeMethod, (f32, f32))> = Vec::new();
    let methods = [method, RangeMethod::MovingAverage(o.ema_c), RangeMethod::Mse, RangeMethod::Percentile(99.99), RangeMethod::MinMax];
    for m in methods {
        let r = o.range(m, 256);
        let tol = 1e-6 * r.0.abs().max(r.1.abs()).max(1e-6);
        if !out.iter().any(|(_, c)| (c.0 - r.0).abs() <= tol && (c.1 - r.1).abs() <= tol) {
            out.push((m, r));
        }
    }
    out
}

/// One searched value: the observe node, the value it watches and its candidates.
type Target = (NodeId, ValueId, Vec<(RangeMethod, (f32, f32))>);

/// Samples of the pilot that picks the values worth searching.
const PILOT: usize = 2;

/// The share of the summed single-value output error below which a value is not searched.
const SHARE: f64 = 0.01;

/// Per target and candidate (only the first with `first_only`), (Σ output², Σ output error²) over the
/// first `samples` samples of `set`, each candidate's quantization injected alone.
fn measure(
    g: &Graph,
    cfg: &QuantConfig,
    set: &CalibSet,
    targets: &[Target],
    samples: usize,
    first_only: bool,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<Vec<(f64, f64)>>> {
    let one = |s: usize| -> Result<Vec<Vec<(f64, f64)>>> {
        let inputs = set.load(s, g)?;
        let on = || format!("range search on {}", set.samples[s][0].display());
        let table = qcc_runtime::run_all(g, inputs).with_context(on)?;
        let outputs: Vec<qcc_ir::Tensor> = g.outputs().iter().filter_map(|v| table[v.index()].clone()).collect();
        let mut errs = Vec::with_capacity(targets.len());
        for (_, v, cands) in targets {
            let f = table[v.index()].as_ref().and_then(|t| t.as_f32()).context("range search: an observed value is not f32")?;
            let mut e = Vec::with_capacity(cands.len());
            for (_, (a, b)) in cands.iter().take(if first_only { 1 } else { cands.len() }) {
                let q = qcc_passes::act_qtype(cfg, *a, *b);
                let d =
                    qcc_runtime::quant::quantize(f, &q).and_then(|t| qcc_runtime::quant::dequantize(&t, &q)).map_err(anyhow::Error::msg)?;
                let p = qcc_runtime::run_patched(g, &table, *v, qcc_ir::Tensor::F32(d)).with_context(on)?;
                e.push(crate::analyze::output_error(&outputs, &p));
            }
            errs.push(e);
        }
        Ok(errs)
    };
    let mut total: Vec<Vec<(f64, f64)>> = targets.iter().map(|t| vec![(0.0, 0.0); if first_only { 1 } else { t.2.len() }]).collect();
    crate::in_order(samples, one, |_, part| {
        for (t, p) in total.iter_mut().zip(part) {
            for (a, e) in t.iter_mut().zip(p) {
                a.0 += e.0;
                a.1 += e.1;
            }
        }
        bar.inc(1);
        Ok(())
    })?;
    Ok(total)
}

/// Searches the range of every observed 8-bit activation of `g` (the calibrated float graph, observers
/// in place) for `cfg` on the first `samples` samples of `set`. Values whose range `cfg` does not choose
/// by its method (the network's outputs keep min/max), values with a single candidate and values the
/// pilot finds carrying under SHARE of the error are left alone.
pub fn search(
    g: &Graph,
    observers: &HashMap<ValueId, Observer>,
    cfg: &QuantConfig,
    set: &CalibSet,
    samples: usize,
) -> Result<SearchedRanges> {
    let targets: Vec<Target> = g
        .node_ids()
        .filter(|n| g.node(*n).op == Op::Observe)
        .filter_map(|n| {
            let v = g.node(n).output;
            let o = observers.get(&v).filter(|o| o.count > 0)?;
            let forced = qcc_passes::range_method(g, n, cfg.method) != cfg.method;
            if forced || cfg.act_type == DType::I16 || QuantConfig::names_node(&cfg.int16, g, n) {
                return None;
            }
            let c = candidates(o, cfg.method);
            (c.len() > 1).then_some((n, v, c))
        })
        .collect();
    let samples = samples.min(set.samples.len());
    // A pilot on the first samples measures each value's error with the configured range alone. No
    // range can take more than that error away, so values carrying under SHARE of the summed error
    // (nearly the whole network's, as the errors of separate layers add up) keep the configured range
    // without a search: in MobileNetV2 three quarters of them.
    let considered = targets.len();
    let pilot = measure(g, cfg, set, &targets, samples.min(PILOT), true, &indicatif::ProgressBar::hidden())?;
    let sum: f64 = pilot.iter().map(|p| p[0].1).sum();
    let targets: Vec<Target> = targets.into_iter().zip(&pilot).filter(|(_, p)| p[0].1 >= SHARE * sum).map(|(t, _)| t).collect();
    let bar = crate::calib::progress_bar(samples, "searching ranges");
    let total = measure(g, cfg, set, &targets, samples, false, &bar)?;
    bar.finish_and_clear();
    let mut choices = HashMap::new();
    let mut log = Vec::new();
    let mut chosen: Vec<(String, usize)> = vec![(cfg.method.name(), 0)];
    for ((n, v, cands), errs) in targets.iter().zip(&total) {
        // Ties keep the configured method (the first candidate).
        let best = (0..cands.len()).min_by(|i, j| errs[*i].1.total_cmp(&errs[*j].1)).unwrap_or(0);
        let sqnr: Vec<String> =
            cands.iter().zip(errs).map(|((m, _), (s, e))| format!("{} {:.2} dB", m.name(), 10.0 * (s / e.max(1e-30)).log10())).collect();
        log.push(format!("{}: {} -> {}", g.node(*n).name(), sqnr.join(", "), cands[best].0.name()));
        choices.insert(*v, cands[best]);
        let name = cands[best].0.name();
        match chosen.iter_mut().find(|(m, _)| *m == name) {
            Some(c) => c.1 += 1,
            None => chosen.push((name, 1)),
        }
    }
    Ok(SearchedRanges {
        method: cfg.method,
        act_type: cfg.act_type,
        act_symmetric: cfg.act_symmetric,
        choices,
        log,
        chosen,
        samples,
        considered,
    })
}
