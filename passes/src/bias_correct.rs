//! bias-correct: weight quantization shifts each output channel's mean by E[(W_q − W) · x]. With the
//! per-channel input means gathered during calibration, that shift is computed for every conv and gemm
//! whose weights place-qdq will quantize, and subtracted from the bias (one is added if there is none).
//! Runs after assign-qparams (inputs read `dequantize(quantize(..))`, possibly through layout-only ops; the
//! quantize value keys the means; a channel count that does not match the weights skips the op)
//! and before place-qdq, which then quantizes the same weights. Border effects of zero padding are ignored.
use crate::place_qdq::quantize_weights;
use crate::{Pass, PassContext, PassError};
use ndarray::{ArrayD, IxDyn};
use qcc_ir::{Graph, NodeId, Op, Tensor};

pub struct BiasCorrect;

fn correct(g: &mut Graph, n: NodeId, cx: &PassContext) -> bool {
    let Some(scheme) = cx.quant.weights else { return false };
    let node = g.node(n).clone();
    if !matches!(node.op, Op::Conv { .. } | Op::Gemm { .. }) {
        return false;
    }
    // The input's per-channel means, found through its dequantize(quantize(..)).
    let src = crate::insert_observers::data_source(g, node.inputs[0]);
    let Some(dq) = g.producer(src).filter(|p| g.node(*p).op == Op::Dequantize) else { return false };
    let Some(means) = cx.channel_means.get(&g.node(dq).inputs[0]) else { return false };
    let Some(w) = g.const_tensor(node.inputs[1]).and_then(|t| t.as_f32()).cloned() else { return false };
    let (axis, group) = match &node.op {
        Op::Conv { group, .. } => (0, *group as usize),
        Op::Gemm { trans_b, .. } => (usize::from(!trans_b), 1),
        _ => return false,
    };
    let (wq, qt) = quantize_weights(&w, scheme, axis, crate::place_qdq::min_weight_scales(g, n).as_deref());
    let Ok(wd) = qcc_runtime::quant::dequantize(&wq, &qt) else { return false };
    let err = &wd - &w;
    let out_ch = w.shape()[axis];
    let mut shift = vec![0f64; out_ch];
    match &node.op {
        Op::Conv { .. } => {
            let (cg, mg) = (w.shape()[1], out_ch / group);
            if means.len() != cg * group {
                return false;
            }
            for (idx, e) in err.indexed_iter() {
                let (m, c) = (idx[0], idx[1]);
                shift[m] += *e as f64 * means[(m / mg) * cg + c] as f64;
            }
        }
        _ => {
            // Gemm: input [M, K]; the means are over K (axis 1 of the input).
            let k = if axis == 0 { w.shape()[1] } else { w.shape()[0] };
            if means.len() != k {
                return false;
            }
            for (idx, e) in err.indexed_iter() {
                let (o, kk) = if axis == 0 { (idx[0], idx[1]) } else { (idx[1], idx[0]) };
                shift[o] += *e as f64 * means[kk] as f64;
            }
        }
    }
    shift_bias(g, n, &shift)
}

/// Subtracts `shift` (one value per output channel) from node `n`'s bias, adding a bias if it has
/// none. False if the bias is not a float constant of that length.
pub(crate) fn shift_bias(g: &mut Graph, n: NodeId, shift: &[f64]) -> bool {
    let node = g.node(n).clone();
    let out_ch = shift.len();
    let old: Vec<f32> = match node.inputs.get(2) {
        Some(b) => match g.const_tensor(*b).and_then(|t| t.as_f32()) {
            Some(b) if b.len() == out_ch => b.iter().copied().collect(),
            _ => return false,
        },
        None => vec![0.0; out_ch],
    };
    let new: Vec<f32> = old.iter().zip(shift).map(|(b, s)| (*b as f64 - s) as f32).collect();
    let name = node.inputs.get(2).and_then(|b| g.value(*b).name.clone()).or_else(|| Some(format!("{}.bias", node.name())));
    let bv = g.add_const(Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[out_ch]), new).expect("vector")), name);
    let mut ins = node.inputs.clone();
    if ins.len() > 2 {
        ins[2] = bv;
    } else {
        ins.push(bv);
    }
    g.set_inputs(n, ins);
    true
}

impl Pass for BiasCorrect {
    fn name(&self) -> &'static str {
        "bias-correct"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError> {
        // Nodes kept float have no weight quantization error to correct.
        let targets: Vec<NodeId> = g.node_ids().filter(|n| cx.quant.quantizes_weights_of(g, *n)).collect();
        let mut changed = false;
        for n in targets {
            changed |= correct(g, n, cx);
        }
        if changed {
            g.dce();
        }
        Ok(changed)
    }
}
