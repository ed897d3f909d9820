//! assign-qparams: turns each `observe` into `quantize` (its type carrying the scale and zero point chosen
//! from the calibration statistics by the configured range method) followed by `dequantize`. Needs
//! insert-observers and the driver's calibration before it; afterwards no `observe` remains.
use crate::{Pass, PassContext, PassError, QuantConfig};
use qcc_ir::{DType, ElemType, Graph, NodeId, Op, QParams, QuantType, Type};

pub struct AssignQparams;

/// The range method for the value the observe `n` watches: `method`, except that the network's outputs
/// keep their whole range (min/max): clipping them (logits above all) is never wanted.
pub fn range_method(g: &Graph, n: NodeId, method: qcc_runtime::observe::RangeMethod) -> qcc_runtime::observe::RangeMethod {
    let out = g.node(n).output;
    let feeds_output =
        g.uses(out).iter().any(|(u, _)| g.node(*u).op == Op::Dequantize && g.is_output(g.node(*u).output)) || g.is_output(out);
    if feeds_output {
        qcc_runtime::observe::RangeMethod::MinMax
    } else {
        method
    }
}

/// The activation type for a calibrated range [a, b]: the range is widened to contain 0 (so zero pads and
/// ReLU outputs are exact); asymmetric types map it onto the whole storage range, symmetric ones use
/// max(|a|, |b|) with zero point 0.
pub fn act_qtype(cfg: &QuantConfig, a: f32, b: f32) -> QuantType {
    let storage = cfg.act_type;
    let (qmin, qmax) = storage.int_range().unwrap_or((0, 255));
    let (a, b) = ((a.min(0.0)) as f64, (b.max(0.0)) as f64);
    let params = if cfg.act_symmetric {
        let m = a.abs().max(b.abs());
        let scale = if m > 0.0 { (m / qmax as f64) as f32 } else { 1.0 };
        QParams::PerTensor { scale, zp: 0 }
    } else {
        let span = b - a;
        let scale = if span > 0.0 { (span / (qmax - qmin) as f64) as f32 } else { 1.0 };
        let zp = (qmin as f64 - a / scale as f64).round_ties_even().clamp(qmin as f64, qmax as f64) as i32;
        QParams::PerTensor { scale, zp }
    };
    QuantType::new(storage, params)
}

fn assign(g: &mut Graph, n: NodeId, cx: &PassContext) -> Result<(), PassError> {
    let out = g.node(n).output;
    let obs = cx.calib.get(&out).filter(|o| o.count > 0).ok_or_else(|| PassError::Node {
        pass: "assign-qparams",
        node: g.node(n).name().to_string(),
        msg: "no calibration data reached this value".into(),
    })?;
    // A node named by --int16 stores its output as i16 (the observe carries its producer's locs).
    let cfg = if QuantConfig::names_node(&cx.quant.int16, g, n) {
        QuantConfig { act_type: DType::I16, ..cx.quant.clone() }
    } else {
        cx.quant.clone()
    };
    let levels = match cfg.act_type {
        DType::I16 => 65536,
        _ => 256,
    };
    let method = range_method(g, n, cfg.method);
    // Ranges chosen by range search replace the method's (they were searched for 8-bit storage).
    let searched = cx.ranges.get(&out).filter(|_| levels == 256);
    let (a, b) = searched.copied().unwrap_or_else(|| obs.range(method, levels));
    if std::env::var_os("QCC_DEBUG_RANGES").is_some() {
        let from = if searched.is_some() { "range search".to_string() } else { method.name() };
        eprintln!("{:<40} min {:>10.4} max {:>10.4} -> {:>10.4}..{:<10.4} ({from})", g.node(n).name(), obs.min, obs.max, a, b);
    }
    let q = act_qtype(&cfg, a, b);
    let shape = g.ty(out).shape().unwrap_or(&[]).to_vec();
    g.set_op(n, Op::Quantize);
    g.value_mut(out).ty = Type::Tensor { elem: ElemType::Q(q), shape: shape.clone() };
    let loc = g.node(n).loc.clone();
    let dq = g.add_node(Op::Dequantize, vec![out], Type::f32(shape), loc);
    for (user, slot) in g.uses(out) {
        if g.node(user).output != dq {
            g.set_input(user, slot, dq);
        }
    }
    if g.is_output(out) {
        g.replace_output(out, dq);
    }
    Ok(())
}

impl Pass for AssignQparams {
    fn name(&self) -> &'static str {
        "assign-qparams"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError> {
        if cx.quant.act_symmetric && cx.quant.act_type == DType::U8 {
            return Err(PassError::Failed {
                pass: "assign-qparams",
                msg: "symmetric activations need a signed type (--act-type i8 or i16)".into(),
            });
        }
        let observes: Vec<NodeId> = g.node_ids().filter(|n| g.node(*n).op == Op::Observe).collect();
        for n in &observes {
            assign(g, *n, cx)?;
        }
        Ok(!observes.is_empty())
    }
}
