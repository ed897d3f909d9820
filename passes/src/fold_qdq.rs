//! fold-qdq: turns QDQ patterns into integer ops. `quantize(conv(dequantize(x), dequantize(w), b,
//! [dequantize(r)]))` becomes `qconv x, w, b_i32, [r]` (the bias quantized with scale sx * sw), and
//! likewise gemm → qgemm, add → qadd, mul → qmul, concat → qconcat, average pool → qaverage_pool, global
//! average pool → qglobal_average_pool. Layout-only ops (reshape, flatten, transpose, max pool, ...)
//! move behind `dequantize` so they work on the integers, and `quantize(dequantize(q))` with unchanged
//! parameters disappears. A conv or gemm reading `dynamic_qdq(x)` with dequantized constant weights and a
//! constant f32 bias (an imported DynamicQuantizeLinear model) becomes `dyn_qconv`/`dyn_qgemm x, w, b`.
//! Needs assign-qparams and place-qdq before it; canonicalize after it removes the
//! dequantize nodes nothing reads any more. Whatever does not match stays float between explicit
//! dequantize and quantize.
use crate::insert_observers::is_layout_only;
use crate::{Pass, PassContext, PassError};
use qcc_ir::{Act, ConstData, DType, ElemType, Graph, NodeId, Op, QParams, QuantType, Tensor, Type, ValueId};

pub struct FoldQdq;

/// The quantized value `v` dequantizes, if `v` is a dequantize's output.
pub(crate) fn dq_source(g: &Graph, v: ValueId) -> Option<ValueId> {
    let p = g.producer(v)?;
    (g.node(p).op == Op::Dequantize).then(|| g.node(p).inputs[0])
}

fn per_tensor(t: &Type) -> Option<(f32, i32)> {
    match t.quant()?.params {
        QParams::PerTensor { scale, zp } => Some((scale, zp)),
        _ => None,
    }
}

/// conv/gemm(dynamic_qdq(x), dequantize(w const), [b const f32]) → dyn_qconv/dyn_qgemm(x, w, [b]).
fn fold_dynamic(g: &mut Graph, n: NodeId) -> bool {
    let node = g.node(n).clone();
    if matches!(node.op, Op::Gemm { alpha, beta, trans_a, .. } if alpha != 1.0 || beta != 1.0 || trans_a) {
        return false;
    }
    let Some(op) = node.op.dynamic_integer_form() else { return false };
    if node.inputs.len() > 3 {
        return false;
    }
    let Some(p) = g.producer(node.inputs[0]).filter(|p| g.node(*p).op == Op::DynamicQdq) else { return false };
    let Some(w) = dq_source(g, node.inputs[1]).filter(|w| g.is_const(*w) && g.ty(*w).quant().is_some()) else {
        return false;
    };
    // The bias is added in f32 after the integer sum, one value per output channel.
    let channels = g.ty(node.output).shape().map_or(0, |s| s[1]);
    if let Some(b) = node.inputs.get(2) {
        if g.const_tensor(*b).and_then(|t| t.as_f32()).is_none_or(|t| t.shape() != [channels]) {
            return false;
        }
    }
    let mut ins = vec![g.node(p).inputs[0], w];
    ins.extend(node.inputs.get(2));
    let ty = g.ty(node.output).clone();
    let d = g.add_node(op, ins, ty, node.loc.clone());
    g.replace_all_uses(node.output, d);
    g.remove_node(n);
    true
}

/// Moves a layout-only op from the dequantized value onto the integers.
fn sink_layout(g: &mut Graph, n: NodeId) -> bool {
    let node = g.node(n).clone();
    if !is_layout_only(&node.op) || node.inputs.len() != 1 {
        return false;
    }
    let Some(q) = dq_source(g, node.inputs[0]) else { return false };
    if per_tensor(g.ty(q)).is_none() {
        return false;
    }
    let shape = g.ty(node.output).shape().unwrap_or(&[]).to_vec();
    let qty = g.ty(q).with_shape(shape.clone());
    let moved = g.add_node(node.op.clone(), vec![q], qty, node.loc.clone());
    let dq = g.add_node(Op::Dequantize, vec![moved], Type::f32(shape), node.loc.clone());
    g.replace_all_uses(node.output, dq);
    g.remove_node(n);
    true
}

/// quantize(dequantize(q)) with the same type is q.
fn drop_requantize(g: &mut Graph, n: NodeId) -> bool {
    let node = g.node(n);
    if node.op != Op::Quantize {
        return false;
    }
    let Some(q) = dq_source(g, node.inputs[0]) else { return false };
    if g.ty(q) != g.ty(node.output) {
        return false;
    }
    let out = node.output;
    g.replace_all_uses(out, q);
    g.remove_node(n);
    true
}

/// Bias in i32 with scale sx * sw[c] and zero point 0.
fn quantize_bias(b: &Tensor, sx: f32, sw: &[f32]) -> Option<(Tensor, QuantType)> {
    let bf = b.as_f32()?;
    let n = bf.len();
    let scales: Vec<f32> = (0..n).map(|c| (sx as f64 * sw[if sw.len() == 1 { 0 } else { c }] as f64) as f32).collect();
    if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return None;
    }
    let v: Vec<i32> = bf
        .iter()
        .zip(&scales)
        .map(|(x, s)| ((*x as f64) / *s as f64).round_ties_even().clamp(i32::MIN as f64, i32::MAX as f64) as i32)
        .collect();
    let t = Tensor::from_le_bytes(DType::I32, &[n], &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())?;
    Some((t, QuantType::new(DType::I32, QParams::PerAxis { axis: 0, scales, zps: vec![0; n] })))
}

/// An i32 bias type whose scales are sx * sw[c] (to f32 rounding) and zero points 0.
fn bias_fits(t: &Type, sx: f32, sw: &[f32]) -> bool {
    let Some(q) = t.quant() else { return false };
    if q.storage != DType::I32 {
        return false;
    }
    let close = |s: f32, c: usize| {
        let want = sx as f64 * sw[if sw.len() == 1 { 0 } else { c }] as f64;
        ((s as f64 - want) / want).abs() < 1e-5
    };
    match &q.params {
        QParams::PerTensor { scale, zp } => *zp == 0 && sw.len() == 1 && close(*scale, 0),
        QParams::PerAxis { scales, zps, .. } => zps.iter().all(|z| *z == 0) && scales.iter().enumerate().all(|(c, s)| close(*s, c)),
        QParams::Calibrated { .. } => false,
    }
}

/// Folds quantize(op(dequantize(..))) at the quantize node `n`.
fn fold_compute(g: &mut Graph, n: NodeId) -> bool {
    let qnode = g.node(n).clone();
    if qnode.op != Op::Quantize || per_tensor(g.ty(qnode.output)).is_none() {
        return false;
    }
    let y = qnode.inputs[0];
    let Some(p) = g.producer(y) else { return false };
    if g.use_count(y) != 1 {
        return false;
    }
    let pnode = g.node(p).clone();
    let out_ty = g.ty(qnode.output).clone();
    let (op, inputs) = match &pnode.op {
        Op::Conv { .. } | Op::Gemm { .. } => {
            if matches!(pnode.op, Op::Gemm { alpha, beta, trans_a, .. } if alpha != 1.0 || trans_a || (beta != 1.0 && pnode.inputs.len() > 2))
            {
                return false;
            }
            let (Some(x), Some(w)) = (dq_source(g, pnode.inputs[0]), dq_source(g, pnode.inputs[1])) else { return false };
            let Some((sx, _)) = per_tensor(g.ty(x)) else { return false };
            if !g.is_const(w) || g.ty(w).dtype() != Some(DType::I8) {
                return false;
            }
            let sw: Vec<f32> = match &g.ty(w).quant().expect("dequantize input is quantized").params {
                QParams::PerTensor { scale, .. } => vec![*scale],
                QParams::PerAxis { scales, .. } => scales.clone(),
                QParams::Calibrated { .. } => return false,
            };
            // A residual (fuse-residual) reads a per-tensor quantized value like the input.
            let residual = match pnode.inputs.get(3) {
                Some(r) => match dq_source(g, *r).filter(|q| per_tensor(g.ty(*q)).is_some()) {
                    Some(q) => Some(q),
                    None => return false,
                },
                None => None,
            };
            let mut ins = vec![x, w];
            if let Some(&b) = pnode.inputs.get(2) {
                // A bias already quantized to i32 at scale sx * sw (as QDQ exporters write it) is used as is.
                if let Some(bq) = dq_source(g, b).filter(|bq| g.is_const(*bq) && bias_fits(g.ty(*bq), sx, &sw)) {
                    ins.push(bq);
                    ins.extend(residual);
                    let Some(op) = pnode.op.integer_form() else { return false };
                    let q = g.add_node(op, ins, out_ty, pnode.loc.clone());
                    g.replace_all_uses(qnode.output, q);
                    g.remove_node(n);
                    g.remove_node(p);
                    return true;
                }
                // Otherwise the bias, float or quantized at another scale, is requantized at sx * sw.
                let bt = match (g.const_tensor(b), dq_source(g, b)) {
                    (Some(t), _) => t.clone(),
                    (None, Some(bq)) => {
                        let (Some(t), Some(q)) = (g.const_tensor(bq), g.ty(bq).quant()) else { return false };
                        match qcc_runtime::quant::dequantize(t, q) {
                            Ok(f) => Tensor::F32(f),
                            Err(_) => return false,
                        }
                    }
                    _ => return false,
                };
                // Conv and gemm outputs both have their channels on axis 1.
                if bt.shape() != [g.ty(pnode.output).shape().map_or(0, |s| s[1])] {
                    return false;
                }
                let Some((bq, bqt)) = quantize_bias(&bt, sx, &sw) else { return false };
                let name = g.value(b).name.clone();
                ins.push(g.add_const_typed(ConstData::Data(bq), Type::Tensor { elem: ElemType::Q(bqt), shape: bt.shape().to_vec() }, name));
                ins.extend(residual);
            }
            let Some(op) = pnode.op.integer_form() else { return false };
            (op, ins)
        }
        // An activation between 8-bit values that nothing fused (its input has other readers, or comes from
        // no conv): a table. ReLU and clip are left to fuse-epilogue, which makes them the producer's clamp.
        op if op.as_act().is_some_and(|a| !matches!(a, Act::Relu | Act::Clip { .. })) => {
            let eight = |t: &Type| t.dtype().is_some_and(|d| matches!(d, DType::U8 | DType::I8));
            let Some(x) = dq_source(g, pnode.inputs[0]).filter(|q| per_tensor(g.ty(*q)).is_some() && eight(g.ty(*q))) else {
                return false;
            };
            if !eight(&out_ty) {
                return false;
            }
            (Op::QAct { act: op.as_act().expect("activation") }, vec![x])
        }
        op @ (Op::Add | Op::Mul | Op::Concat { .. } | Op::AveragePool { .. } | Op::GlobalAveragePool) => {
            let Some(ins) = pnode.inputs.iter().map(|v| dq_source(g, *v).filter(|q| per_tensor(g.ty(*q)).is_some())).collect() else {
                return false;
            };
            let Some(op) = op.integer_form() else { return false };
            (op, ins)
        }
        _ => return false,
    };
    let q = g.add_node(op, inputs, out_ty, pnode.loc.clone());
    g.replace_all_uses(qnode.output, q);
    g.remove_node(n);
    g.remove_node(p);
    true
}

impl Pass for FoldQdq {
    fn name(&self) -> &'static str {
        "fold-qdq"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<bool, PassError> {
        let mut changed = false;
        loop {
            let order = g.topo_order().map_err(|_| PassError::Failed { pass: "fold-qdq", msg: "graph has a cycle".into() })?;
            let mut round = false;
            for n in order {
                if g.contains_node(n) {
                    round |= sink_layout(g, n) || drop_requantize(g, n) || fold_compute(g, n) || fold_dynamic(g, n);
                }
            }
            if !round {
                break;
            }
            changed = true;
            g.dce();
        }
        Ok(changed)
    }
}
