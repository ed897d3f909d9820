//! Per-layer quantization analysis: runs the calibrated float graph and a quantized graph on the same
//! samples and compares every quantized tensor with the float tensor it stands for. Both carry the
//! user's ONNX node names (locs survive fusion), and each `observe` of the float graph has the loc of the
//! value it observes, which is also the loc of the integer op that computes that value after fold-qdq.
use crate::calib::{CalibSet, Calibrated};
use anyhow::{Context, Result};
use qcc_ir::{Graph, NodeId, Op, QParams, QuantType};
use qcc_runtime::observe::RangeMethod;
use std::collections::HashMap;

/// What one quantized tensor loses against its float counterpart, over all analysed samples.
#[derive(Clone, Debug)]
pub struct LayerStats {
    /// The ONNX node names the tensor comes from, joined with "+" (fused nodes).
    pub name: String,
    /// The integer op computing it (qconv, qadd, quantize, ...).
    pub op: String,
    /// Storage of the tensor: int8/uint8/int16.
    pub precision: String,
    pub scale: f32,
    pub zero_point: i32,
    /// The calibration range method that chose scale and zero point (auto's pick resolved).
    pub method: String,
    /// The float tensor's observed range over the analysed samples.
    pub range: (f32, f32),
    pub rmse: f64,
    /// RMSE in quantization steps: about 0.29 (1/√12) is pure rounding noise; well above means clipping
    /// or a range too wide for the values that matter.
    pub rmse_over_scale: f64,
    /// 10·log10(Σ f² / Σ (f − q)²), with the quantized graph run end to end (errors of earlier layers
    /// included).
    pub sqnr_db: f64,
    /// The same for this op alone: its inputs are the float values quantized with their parameters, so
    /// only the error this layer adds is measured. Sorting by it names the layers that hurt. NaN when
    /// an input has no float counterpart to start from.
    pub alone_sqnr_db: f64,
    /// Sensitivity: SQNR (dB) of the network's outputs when only this tensor is quantized (its error
    /// alone injected into the float network), so it counts how much the rest of the network amplifies
    /// or hides the error. Lower is more sensitive; NaN when not measured.
    pub sensitivity_db: f64,
    /// Fraction of float values outside the representable range (more than half a step beyond it).
    pub clipped: f64,
    /// Fraction of stored integers at the type's limits (the lower limit only when it is not the zero
    /// point, since ReLU outputs sit there legitimately).
    pub saturated: f64,
    /// For conv and gemm: per output channel, max |w| of the float weights as quantized (min and max over
    /// channels), showing how uneven channel ranges are.
    pub weight_absmax: Option<(f32, f32)>,
    /// The same per channel (for the report's box plots).
    pub weight_channels: Vec<f32>,
    /// The float graph's value this tensor stands for (its calibration observer is keyed by it).
    pub float_value: qcc_ir::ValueId,
}

#[derive(Default)]
struct Acc {
    sig: f64,
    err: f64,
    alone_err: f64,
    out_sig: f64,
    out_err: f64,
    n: u64,
    clipped: u64,
    saturated: u64,
    lo: f32,
    hi: f32,
}

impl Acc {
    fn merge(&mut self, o: &Acc) {
        self.sig += o.sig;
        self.err += o.err;
        self.alone_err += o.alone_err;
        self.out_sig += o.out_sig;
        self.out_err += o.out_err;
        self.n += o.n;
        self.clipped += o.clipped;
        self.saturated += o.saturated;
        self.lo = self.lo.min(o.lo);
        self.hi = self.hi.max(o.hi);
    }
}

fn per_tensor(q: &QuantType) -> Option<(f32, i32)> {
    match q.params {
        QParams::PerTensor { scale, zp } => Some((scale, zp)),
        _ => None,
    }
}

fn loc_key(g: &Graph, n: NodeId) -> String {
    g.node(n).loc.join("+")
}

/// Ops whose output only moves values computed elsewhere: their errors are their input's.
fn moves_only(op: &Op) -> bool {
    qcc_passes::is_layout_only(op) || matches!(op, Op::Dequantize)
}

/// The float value `v` of the quantized graph stands for: an integer op's or quantize's output is the
/// float graph's observe with the same loc; a layout op's, the float layout op with the same loc.
fn float_counterpart(quant: &Graph, float: &Graph, by_loc: &HashMap<String, Vec<NodeId>>, v: qcc_ir::ValueId) -> Option<NodeId> {
    let p = quant.producer(v)?;
    let op = &quant.node(p).op;
    let layout = qcc_passes::is_layout_only(op);
    by_loc
        .get(&loc_key(quant, p))?
        .iter()
        .copied()
        .find(|n| if layout { float.node(*n).op == *op } else { float.node(*n).op == Op::Observe })
}

/// The op at `n` run alone on the float values of its inputs, quantized with their parameters.
fn run_alone(quant: &Graph, n: NodeId, floats: &HashMap<NodeId, qcc_ir::Tensor>, ins: &[Option<NodeId>]) -> Option<qcc_ir::Tensor> {
    let node = quant.node(n);
    let mut owned = Vec::new();
    for (&v, f) in node.inputs.iter().zip(ins) {
        let t = match (quant.const_tensor(v), quant.ty(v).quant()) {
            (Some(t), _) => t.clone(),
            (None, Some(q)) => qcc_runtime::quant::quantize(floats.get(&(*f)?)?.as_f32()?, q).ok()?,
            (None, None) => floats.get(&(*f)?)?.clone(),
        };
        owned.push(t);
    }
    let refs: Vec<&qcc_ir::Tensor> = owned.iter().collect();
    let tys: Vec<&qcc_ir::Type> = node.inputs.iter().map(|v| quant.ty(*v)).collect();
    qcc_runtime::eval_op(&node.op, &refs, &tys, quant.ty(node.output)).ok()
}

/// Compares `quant` with the calibrated float graph on the first `samples` calibration samples, and on the
/// first `sensitivity_samples` of them also measures each layer's sensitivity (one partial network run
/// per layer and sample, so it costs far more than the rest).
pub fn analyze(
    cal: &Calibrated,
    quant: &Graph,
    set: &CalibSet,
    method: RangeMethod,
    samples: usize,
    sensitivity_samples: usize,
) -> Result<Vec<LayerStats>> {
    let float = &cal.graph;
    let observes: HashMap<String, NodeId> =
        float.node_ids().filter(|n| float.node(*n).op == Op::Observe).map(|n| (loc_key(float, n), n)).collect();
    // Quantized tensors with a float counterpart, in graph order.
    let order = quant.topo_order().map_err(|_| anyhow::anyhow!("the quantized graph has a cycle"))?;
    let targets: Vec<(NodeId, NodeId, QuantType)> = order
        .into_iter()
        .filter(|n| !moves_only(&quant.node(*n).op))
        .filter_map(|n| {
            let q = quant.ty(quant.node(n).output).quant()?.clone();
            per_tensor(&q)?;
            Some((n, *observes.get(&loc_key(quant, n))?, q))
        })
        .collect();
    let mut by_loc: HashMap<String, Vec<NodeId>> = HashMap::new();
    for n in float.node_ids() {
        by_loc.entry(loc_key(float, n)).or_default().push(n);
    }
    // Per target, the float nodes standing for its inputs (None for constants and graph inputs).
    let alone_inputs: Vec<Vec<Option<NodeId>>> = targets
        .iter()
        .map(|(qn, _, _)| quant.node(*qn).inputs.iter().map(|v| float_counterpart(quant, float, &by_loc, *v)).collect())
        .collect();
    let needed: std::collections::HashSet<NodeId> = alone_inputs.iter().flatten().flatten().copied().collect();
    let fresh = || -> Vec<Acc> { targets.iter().map(|_| Acc { lo: f32::INFINITY, hi: f32::NEG_INFINITY, ..Default::default() }).collect() };
    let want_f: HashMap<NodeId, usize> = targets.iter().enumerate().map(|(i, t)| (t.1, i)).collect();
    let want_q: HashMap<NodeId, usize> = targets.iter().enumerate().map(|(i, t)| (t.0, i)).collect();
    // One sample's sums.
    let one = |s: usize| -> Result<Vec<Acc>> {
        let mut acc = fresh();
        let inputs = set.load(s, float)?;
        let mut floats: Vec<Option<ndarray::ArrayD<f32>>> = vec![None; targets.len()];
        let mut all: HashMap<NodeId, qcc_ir::Tensor> = HashMap::new();
        let sens = s < sensitivity_samples;
        // With sensitivity, every value of the float run is kept to restart the network from any layer.
        let mut table: Vec<Option<qcc_ir::Tensor>> = vec![None; if sens { float.num_values() } else { 0 }];
        if sens {
            for (&v, t) in float.inputs().iter().zip(&inputs) {
                table[v.index()] = Some(t.clone());
            }
        }
        let outputs = qcc_runtime::run_observed(float, inputs.clone(), |n, t| {
            if let (Some(i), Some(a)) = (want_f.get(&n), t.as_f32()) {
                floats[*i] = Some(a.clone());
            }
            if needed.contains(&n) {
                all.insert(n, t.clone());
            }
            if sens {
                table[float.node(n).output.index()] = Some(t.clone());
            }
        })
        .with_context(|| format!("analysis: running the float graph on {}", set.samples[s][0].display()))?;
        let mut failed = None;
        qcc_runtime::run_observed(quant, inputs, |n, t| {
            let Some(&i) = want_q.get(&n) else { return };
            let (Some(f), q) = (&floats[i], &targets[i].2) else { return };
            let Ok(d) = qcc_runtime::quant::dequantize(t, q) else {
                failed = Some(quant.node(n).name().to_string());
                return;
            };
            let (scale, zp) = per_tensor(q).unwrap_or((1.0, 0));
            let (lo, hi) = ((q.qmin - zp as i64) as f32 * scale - scale / 2.0, (q.qmax - zp as i64) as f32 * scale + scale / 2.0);
            let a = &mut acc[i];
            for (x, y) in f.iter().zip(d.iter()) {
                a.sig += (*x as f64).powi(2);
                a.err += (*x as f64 - *y as f64).powi(2);
                a.clipped += u64::from(*x < lo || *x > hi);
                a.lo = a.lo.min(*x);
                a.hi = a.hi.max(*x);
            }
            let at_limit = |v: i64| v == q.qmax || (v == q.qmin && q.qmin != zp as i64);
            a.saturated += t.to_i64_vec().map_or(0, |v| v.into_iter().filter(|v| at_limit(*v)).count() as u64);
            a.n += f.len() as u64;
        })
        .with_context(|| format!("analysis: running the quantized graph on {}", set.samples[s][0].display()))?;
        if let Some(node) = failed {
            anyhow::bail!("analysis: cannot dequantize the output of {node}");
        }
        // Quantize ops take float inputs the float graph does not hold under their loc; alone, their
        // error is their end-to-end error on exact inputs, which is what the float value quantized gives.
        for (i, (qn, fnode, q)) in targets.iter().enumerate() {
            let Some(f) = &floats[i] else { continue };
            let alone = if quant.node(*qn).op == Op::Quantize {
                qcc_runtime::quant::quantize(f, q).ok()
            } else {
                run_alone(quant, *qn, &all, &alone_inputs[i])
            };
            // An op whose inputs have no float counterpart cannot be run alone: its SQNR alone is unknown
            // (NaN, null in JSON) rather than an error, so the rest of the analysis still stands.
            let alone = alone.and_then(|t| qcc_runtime::quant::dequantize(&t, q).ok());
            acc[i].alone_err += match &alone {
                Some(d) => f.iter().zip(d.iter()).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>(),
                None => f64::NAN,
            };
            if sens {
                let patched = alone.and_then(|d| d.into_shape_with_order(f.shape()).ok()).map(|d| {
                    qcc_runtime::run_patched(float, &table, float.node(*fnode).output, qcc_ir::Tensor::F32(d))
                        .with_context(|| format!("sensitivity of {}", loc_key(quant, *qn)))
                });
                let (sig, err) = match patched.transpose()? {
                    Some(p) => output_error(&outputs, &p),
                    None => (0.0, f64::NAN),
                };
                acc[i].out_sig += sig;
                acc[i].out_err += err;
            }
        }
        Ok(acc)
    };
    // Samples run on every core; their sums are merged in sample order (the same for any core count).
    let mut acc = fresh();
    crate::in_order(samples.min(set.samples.len()), one, |_, part| {
        for (a, b) in acc.iter_mut().zip(&part) {
            a.merge(b);
        }
        Ok(())
    })?;
    Ok(targets
        .iter()
        .zip(acc)
        .filter(|(_, a)| a.n > 0)
        .map(|((qn, fnode, q), a)| {
            let node = quant.node(*qn);
            let channels = weight_channels(quant, *qn);
            let (scale, zero_point) = per_tensor(q).unwrap_or((1.0, 0));
            let rmse = (a.err / a.n as f64).sqrt();
            let levels = if q.storage == qcc_ir::DType::I16 { 65536 } else { 256 };
            let fv = float.node(*fnode).output;
            let searched = cal.searched.as_ref().and_then(|s| s.chosen(fv, method, levels));
            let method = match searched {
                Some(m) => format!("search: {}", m.name()),
                None => {
                    cal.observers.get(&fv).map_or(method, |o| o.resolve(qcc_passes::range_method(float, *fnode, method), levels)).name()
                }
            };
            LayerStats {
                name: loc_key(quant, *qn),
                op: node.op.name().to_string(),
                precision: match q.storage {
                    qcc_ir::DType::U8 => "uint8",
                    qcc_ir::DType::I8 => "int8",
                    qcc_ir::DType::I16 => "int16",
                    _ => "other",
                }
                .into(),
                scale,
                zero_point,
                method,
                range: (a.lo, a.hi),
                rmse,
                rmse_over_scale: rmse / scale as f64,
                sqnr_db: sqnr(a.sig, a.err),
                alone_sqnr_db: sqnr(a.sig, a.alone_err),
                sensitivity_db: if a.out_sig > 0.0 || a.out_err > 0.0 { sqnr(a.out_sig, a.out_err) } else { f64::NAN },
                clipped: a.clipped as f64 / a.n as f64,
                saturated: a.saturated as f64 / a.n as f64,
                weight_absmax: (!channels.is_empty())
                    .then(|| (channels.iter().copied().fold(f32::INFINITY, f32::min), channels.iter().copied().fold(0f32, f32::max))),
                weight_channels: channels,
                float_value: float.node(*fnode).output,
            }
        })
        .collect())
}

/// Σ x² and Σ (x − y)² over the float outputs of two runs.
pub(crate) fn output_error(reference: &[qcc_ir::Tensor], other: &[qcc_ir::Tensor]) -> (f64, f64) {
    let (mut sig, mut err) = (0.0, 0.0);
    for (a, b) in reference.iter().zip(other) {
        if let (Some(a), Some(b)) = (a.as_f32(), b.as_f32()) {
            for (x, y) in a.iter().zip(b.iter()) {
                sig += (*x as f64).powi(2);
                err += (*x as f64 - *y as f64).powi(2);
            }
        }
    }
    (sig, err)
}

/// Per output channel max |w| of a qconv/qgemm's dequantized weights (empty for other ops).
fn weight_channels(g: &Graph, n: NodeId) -> Vec<f32> {
    let node = g.node(n);
    let axis = match node.op {
        Op::QConv { .. } => 0,
        Op::QGemm { trans_b, .. } => usize::from(!trans_b),
        _ => return vec![],
    };
    let w = node.inputs[1];
    let (Some(t), Some(q)) = (g.const_tensor(w), g.ty(w).quant()) else { return vec![] };
    let Ok(d) = qcc_runtime::quant::dequantize(t, q) else { return vec![] };
    d.axis_iter(ndarray::Axis(axis)).map(|c| c.iter().fold(0f32, |m, v| m.max(v.abs()))).collect()
}

fn sqnr(sig: f64, err: f64) -> f64 {
    if err.is_nan() {
        f64::NAN
    } else if err > 0.0 {
        10.0 * (sig / err).log10()
    } else {
        f64::INFINITY
    }
}

fn json_f(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6}")
    } else {
        "null".into()
    }
}

/// The layers as JSON: `{"samples": n, "layers": [{"name", "op", "precision", "scale", "zero_point",
/// "method", "range", "rmse", "rmse_over_scale", "sqnr_db", "alone_sqnr_db", "sensitivity", "clipped", "saturated",
/// "weight_absmax"}]}`; `sensitivity` is [`LayerStats::sensitivity_db`]
/// (an infinite SQNR, i.e. no error at all, is null).
pub fn to_json(layers: &[LayerStats], samples: usize) -> String {
    let rows: Vec<String> = layers
        .iter()
        .map(|l| {
            format!(
                "    {{\"name\": {:?}, \"op\": {:?}, \"precision\": {:?}, \"scale\": {}, \"zero_point\": {}, \"method\": {:?}, \"range\": [{}, {}], \
                 \"rmse\": {}, \"rmse_over_scale\": {}, \"sqnr_db\": {}, \"alone_sqnr_db\": {}, \"sensitivity\": {}, \"clipped\": {}, \"saturated\": {}, \"weight_absmax\": {}}}",
                l.name,
                l.op,
                l.precision,
                l.scale,
                l.zero_point,
                l.method,
                json_f(l.range.0 as f64),
                json_f(l.range.1 as f64),
                json_f(l.rmse),
                json_f(l.rmse_over_scale),
                json_f(l.sqnr_db),
                json_f(l.alone_sqnr_db),
                json_f(l.sensitivity_db),
                json_f(l.clipped),
                json_f(l.saturated),
                l.weight_absmax.map_or("null".into(), |(a, b)| format!("[{}, {}]", json_f(a as f64), json_f(b as f64))),
            )
        })
        .collect();
    format!("{{\n  \"samples\": {samples},\n  \"layers\": [\n{}\n  ]\n}}\n", rows.join(",\n"))
}

/// A table of the layers (all, or the `worst` with the lowest SQNR alone, worst first).
pub fn table(layers: &[LayerStats], worst: Option<usize>) -> String {
    let mut rows: Vec<&LayerStats> = layers.iter().collect();
    if let Some(k) = worst {
        rows.sort_by(|a, b| a.alone_sqnr_db.total_cmp(&b.alone_sqnr_db));
        rows.truncate(k);
    }
    let mut s = format!(
        "{:<44} {:<20} {:>6} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7} {:>7}  {}\n",
        "layer", "op", "type", "alone dB", "sens dB", "SQNR dB", "RMSE", "RMSE/s", "range", "clip%", "sat%", "method"
    );
    for l in rows {
        // Unmeasured sensitivity (the summary after compiling skips it) prints as "-", not NaN.
        let sens = if l.sensitivity_db.is_nan() { "-".to_string() } else { format!("{:.2}", l.sensitivity_db) };
        let n = l.name.chars().count();
        let name = if n > 44 { format!("…{}", l.name.chars().skip(n - 43).collect::<String>()) } else { l.name.clone() };
        s.push_str(&format!(
            "{:<44} {:<20} {:>6} {:>8.2} {:>9} {:>9.2} {:>9.4} {:>8.3} {:>8.2} {:>7.3} {:>7.3}  {}\n",
            name,
            l.op,
            l.precision,
            l.alone_sqnr_db,
            sens,
            l.sqnr_db,
            l.rmse,
            l.rmse_over_scale,
            l.range.1 - l.range.0,
            100.0 * l.clipped,
            100.0 * l.saturated,
            l.method
        ));
    }
    s
}
