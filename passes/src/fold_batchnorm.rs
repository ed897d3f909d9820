//! fold-batchnorm: Conv → BatchNormalization (and Gemm → BatchNormalization on [N, C]) becomes one
//! Conv/Gemm with scaled weights and a new bias. Matches only when the conv's value has no other reader,
//! has no fused activation, and weights, bias and BN parameters are constants. The BN's location is
//! appended to the conv's, so reports keep both names. A BN of a 4-D value that no conv takes in (after
//! a concatenation, as in DenseNet and pre-activation ResNets) becomes a 1x1 depthwise conv: the same
//! per-channel affine map, with integer and compiled forms and a ReLU fused into it.
use crate::{Pass, PassContext, PassError};
use ndarray::{ArrayD, Axis, IxDyn};
use qcc_ir::{Graph, NodeId, Op, Tensor};

pub struct FoldBatchnorm;

fn f32c(g: &Graph, v: qcc_ir::ValueId) -> Option<ArrayD<f32>> {
    g.const_tensor(v).and_then(|t| t.as_f32()).cloned()
}

/// Per-channel factor k = scale / sqrt(var + eps) and shift (beta - mean * k).
fn bn_affine(g: &Graph, bn: NodeId, eps: f32) -> Option<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let ins = &g.node(bn).inputs;
    let p: Vec<ArrayD<f32>> = ins[1..5].iter().map(|v| f32c(g, *v)).collect::<Option<_>>()?;
    let c = p[0].len();
    let k: Vec<f32> = (0..c).map(|i| p[0][[i]] / (p[3][[i]] + eps).sqrt()).collect();
    Some((k, p[1].iter().copied().collect(), p[2].iter().copied().collect()))
}

fn fold_one(g: &mut Graph, bn: NodeId) -> bool {
    let Op::BatchNorm { epsilon } = g.node(bn).op else {
        return false;
    };
    let x = g.node(bn).inputs[0];
    let Some(p) = g.producer(x) else { return false };
    if g.use_count(x) != 1 {
        return false;
    }
    let Some((k, beta, mean)) = bn_affine(g, bn, epsilon) else {
        return false;
    };
    let pnode = g.node(p).clone();
    let channels = k.len();
    let (new_w, new_b, new_op) = match &pnode.op {
        // A residual input (fuse-residual) would need scaling too.
        Op::Conv { act: None, .. } if pnode.inputs.len() <= 3 => {
            let Some(mut w) = f32c(g, pnode.inputs[1]) else {
                return false;
            };
            let b = match pnode.inputs.get(2) {
                Some(v) => match f32c(g, *v) {
                    Some(b) => b.iter().copied().collect(),
                    None => return false,
                },
                None => vec![0.0; channels],
            };
            if w.shape()[0] != channels {
                return false;
            }
            for (m, mut slab) in w.axis_iter_mut(Axis(0)).enumerate() {
                slab.mapv_inplace(|v| v * k[m]);
            }
            let nb: Vec<f32> = (0..channels).map(|m| (b[m] - mean[m]) * k[m] + beta[m]).collect();
            (w, nb, pnode.op.clone())
        }
        Op::Gemm { alpha, beta: gbeta, trans_a, trans_b, act: None } => {
            if g.ty(x).shape().map(|s| s.len()) != Some(2) {
                return false;
            }
            let Some(mut w) = f32c(g, pnode.inputs[1]) else {
                return false;
            };
            let n_axis = if *trans_b { 0 } else { 1 };
            if w.shape()[n_axis] != channels {
                return false;
            }
            for (m, mut slab) in w.axis_iter_mut(Axis(n_axis)).enumerate() {
                slab.mapv_inplace(|v| v * k[m]);
            }
            let c: Vec<f32> = match pnode.inputs.get(2) {
                Some(v) => match f32c(g, *v).and_then(|c| c.broadcast(IxDyn(&[channels])).map(|b| b.iter().copied().collect())) {
                    Some(c) => c,
                    None => return false,
                },
                None => vec![0.0; channels],
            };
            let nb: Vec<f32> = (0..channels).map(|m| (gbeta * c[m] - mean[m]) * k[m] + beta[m]).collect();
            (w, nb, Op::Gemm { alpha: *alpha, beta: 1.0, trans_a: *trans_a, trans_b: *trans_b, act: None })
        }
        _ => return false,
    };
    let wname = g.value(pnode.inputs[1]).name.clone();
    let wv = g.add_const(Tensor::F32(new_w), wname);
    let bname = pnode.inputs.get(2).and_then(|b| g.value(*b).name.clone()).or_else(|| Some(format!("{}.bias", pnode.name())));
    let bv = g.add_const(Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[channels]), new_b).expect("vector")), bname);
    g.set_inputs(p, vec![pnode.inputs[0], wv, bv]);
    g.set_op(p, new_op);
    let bn_loc = g.node(bn).loc.clone();
    g.loc_mut(p).extend(bn_loc);
    let out = g.node(bn).output;
    g.replace_all_uses(out, x);
    g.remove_node(bn);
    true
}

/// The BN at `bn` as a 1x1 depthwise Conv with weights k and bias beta − mean · k.
fn to_depthwise(g: &mut Graph, bn: NodeId) -> bool {
    let Op::BatchNorm { epsilon } = g.node(bn).op else { return false };
    let x = g.node(bn).inputs[0];
    let Some(&[_, c, _, _]) = g.ty(x).shape() else { return false };
    let Some((k, beta, mean)) = bn_affine(g, bn, epsilon) else { return false };
    if k.len() != c || beta.len() != c || mean.len() != c || g.ty(x).dtype() != Some(qcc_ir::DType::F32) {
        return false;
    }
    let bias: Vec<f32> = (0..c).map(|m| beta[m] - mean[m] * k[m]).collect();
    let name = g.node(bn).name().to_string();
    let wv = g.add_const(Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[c, 1, 1, 1]), k).expect("weights")), Some(format!("{name}.scale")));
    let bv = g.add_const(Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[c]), bias).expect("vector")), Some(format!("{name}.shift")));
    let op = Op::Conv { strides: vec![1, 1], pads: vec![0; 4], dilations: vec![1, 1], group: c as i64, act: None };
    g.set_op(bn, op);
    g.set_inputs(bn, vec![x, wv, bv]);
    true
}

impl Pass for FoldBatchnorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<bool, PassError> {
        let bns: Vec<NodeId> = g.node_ids().filter(|n| matches!(g.node(*n).op, Op::BatchNorm { .. })).collect();
        let mut changed = false;
        for bn in bns {
            changed |= fold_one(g, bn) || to_depthwise(g, bn);
        }
        if changed {
            g.dce();
        }
        Ok(changed)
    }
}
