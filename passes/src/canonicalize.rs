//! canonicalize: constant folding (including Shape/Gather/Concat/Reshape chains, since every shape is
//! static), Identity/Dropout removal, collapsing of reshape chains, and the rewrites exporters make
//! necessary: zero padding folded into the convolution that reads it (TF's asymmetric "SAME" padding
//! written as a separate Pad), a spatial ReduceMean as the global average pool it is (Keras'
//! GlobalAveragePooling2D and squeeze-and-excitation blocks) and a spatial ReduceMax (GlobalMaxPool) as
//! a max pool over the whole image, a MatMul by constant weights as a Gemm
//! and a constant vector added to a Gemm without bias as its bias (TF's Dense layers); then dead-code
//! elimination. Runs to a fixed point. Needs nothing before it; afterwards no node has only constant
//! inputs, no Shape node remains, and every node's value is used.
use crate::{Pass, PassContext, PassError};
use qcc_ir::{ConstData, Graph, NodeId, Op, PadMode, Tensor, Type, ValueDef};

pub struct Canonicalize;

/// Folding results larger than this stay as nodes (an Expand could otherwise blow up the model).
const FOLD_LIMIT: usize = 1 << 24;

fn is_reshape_like(op: &Op) -> bool {
    matches!(op, Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. })
}

/// Removes a node whose value equals its first input, unless that would rename a graph input or
/// merge two graph outputs.
fn bypass(g: &mut Graph, n: NodeId) -> bool {
    let (inp, out) = (g.node(n).inputs[0], g.node(n).output);
    if g.is_output(out) && (g.is_output(inp) || matches!(g.value(inp).def, ValueDef::Input | ValueDef::Const(_))) {
        return false;
    }
    g.replace_all_uses(out, inp);
    g.remove_node(n);
    true
}

/// A float Conv reading a constant zero Pad of only its spatial dimensions takes the padding into its own
/// pads (a zero-padded position contributes nothing to the sum either way). The Pad stays for its other
/// readers, if any.
fn fold_pad(g: &mut Graph, n: NodeId) -> bool {
    let Op::Conv { pads, .. } = &g.node(n).op else { return false };
    let x = g.node(n).inputs[0];
    let Some(p) = g.producer(x) else { return false };
    let Op::Pad { mode: PadMode::Constant, pads: extra, value } = &g.node(p).op else { return false };
    // ONNX order: every dimension's begin, then every end; the batch and channel dimensions unpadded.
    let ok = *value == 0.0 && extra.len() == 8 && pads.len() == 4 && extra.iter().all(|v| *v >= 0);
    if !ok || extra[0] != 0 || extra[1] != 0 || extra[4] != 0 || extra[5] != 0 {
        return false;
    }
    let merged: Vec<i64> = pads.iter().zip([extra[2], extra[3], extra[6], extra[7]]).map(|(a, b)| a + b).collect();
    let src = g.node(p).inputs[0];
    let mut op = g.node(n).op.clone();
    if let Op::Conv { pads, .. } = &mut op {
        *pads = merged;
    }
    let mut ins = g.node(n).inputs.clone();
    ins[0] = src;
    g.set_op(n, op);
    g.set_inputs(n, ins);
    true
}

/// ReduceMean of a 4-D f32 tensor over its two spatial axes becomes GlobalAveragePool, and ReduceMax
/// (GlobalMaxPool's import) a max pool whose window is the whole image, followed by a reshape to [N, C]
/// without keepdims: both have integer and compiled forms.
fn reduce_to_global_pool(g: &mut Graph, n: NodeId) -> bool {
    let (Op::ReduceMean { axes, keepdims } | Op::ReduceMax { axes, keepdims }) = &g.node(n).op else { return false };
    let x = g.node(n).inputs[0];
    let Some(&[b, c, h, w]) = g.ty(x).shape() else { return false };
    let mut sorted = axes.clone();
    sorted.sort_unstable();
    if sorted != [2, 3] || g.ty(x).dtype() != Some(qcc_ir::DType::F32) {
        return false;
    }
    let pool = if matches!(g.node(n).op, Op::ReduceMean { .. }) {
        Op::GlobalAveragePool
    } else {
        let (ones, zeros) = (vec![1, 1], vec![0; 4]);
        Op::MaxPool { kernel: vec![h as i64, w as i64], strides: ones.clone(), pads: zeros, dilations: ones, ceil_mode: false }
    };
    if *keepdims {
        g.set_op(n, pool);
        return true;
    }
    let loc = g.node(n).loc.clone();
    let gap = g.add_node(pool, vec![x], Type::f32(vec![b, c, 1, 1]), loc);
    g.set_op(n, Op::Reshape { shape: vec![b as i64, c as i64] });
    g.set_inputs(n, vec![gap]);
    true
}

/// MatMul([M, K] f32, constant [K, N] f32) is Gemm(x, w) (which has integer and compiled forms).
fn matmul_to_gemm(g: &mut Graph, n: NodeId) -> bool {
    let node = g.node(n);
    if node.op != Op::MatMul {
        return false;
    }
    let (x, w) = (node.inputs[0], node.inputs[1]);
    let f32_rank2 = |v| g.ty(v).dtype() == Some(qcc_ir::DType::F32) && g.ty(v).shape().is_some_and(|s| s.len() == 2);
    if !f32_rank2(x) || !f32_rank2(w) || g.const_tensor(w).is_none() {
        return false;
    }
    g.set_op(n, Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false, act: None });
    true
}

/// Add(Gemm without bias, constant of [N] or [1, N]) becomes the Gemm's bias, when the Add is the
/// Gemm's only reader.
fn add_to_gemm_bias(g: &mut Graph, n: NodeId) -> bool {
    let node = g.node(n).clone();
    if node.op != Op::Add || node.inputs.len() != 2 {
        return false;
    }
    for (a, b) in [(node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])] {
        let Some(p) = g.producer(a) else { continue };
        let gemm = g.node(p);
        let Op::Gemm { alpha, beta, trans_a: false, act: None, .. } = gemm.op else { continue };
        let cols = g.ty(a).shape().and_then(|s| s.get(1).copied());
        let Some(t) = g.const_tensor(b).and_then(|t| t.as_f32()) else { continue };
        let vector = matches!(t.shape(), [c] | [1, c] if Some(*c) == cols);
        if gemm.inputs.len() != 2 || alpha != 1.0 || beta != 1.0 || !vector || g.uses(a).len() != 1 || g.is_output(a) {
            continue;
        }
        // Built from the elements, so a constant stored in any memory order works.
        let bias = Tensor::from_f32(&[t.len()], t.iter().copied().collect()).expect("one value per element");
        let name = g.value(b).name.clone();
        let bv = g.add_const(bias, name);
        let mut ins = g.node(p).inputs.clone();
        ins.push(bv);
        g.set_inputs(p, ins);
        g.loc_mut(p).extend(node.loc.clone());
        // A graph output keeps its name.
        if g.is_output(node.output) {
            g.value_mut(a).name = g.value(node.output).name.clone();
        }
        g.replace_all_uses(node.output, a);
        g.remove_node(n);
        return true;
    }
    false
}

fn try_fold(g: &mut Graph, n: NodeId) -> Result<bool, PassError> {
    let node = g.node(n);
    // Dequantize of a quantized constant is how quantized weights are read: folding it would lose them.
    if matches!(node.op, Op::Opaque(_) | Op::Dequantize) {
        return Ok(false);
    }
    let out_ty = g.ty(node.output).clone();
    if out_ty == Type::Unknown || out_ty.numel().is_none_or(|k| k > FOLD_LIMIT) {
        return Ok(false);
    }
    let value = if let Op::Shape { start, end } = node.op {
        let s = g.ty(node.inputs[0]).shape().map(|s| s[start as usize..end as usize].iter().map(|d| *d as i64).collect::<Vec<_>>());
        match s {
            Some(s) => Tensor::from_i64(&[s.len()], s).expect("vector"),
            None => return Ok(false),
        }
    } else {
        let args: Option<Vec<&Tensor>> = node.inputs.iter().map(|v| g.const_tensor(*v)).collect();
        let Some(args) = args else { return Ok(false) };
        let tys: Vec<&Type> = node.inputs.iter().map(|v| g.ty(*v)).collect();
        qcc_runtime::eval_op(&node.op, &args, &tys, &out_ty).map_err(|msg| PassError::Node {
            pass: "canonicalize",
            node: node.name().to_string(),
            msg,
        })?
    };
    let out = node.output;
    let name = g.value(out).name.clone().or_else(|| Some(node.name().to_string()));
    let c = g.add_const_typed(ConstData::Data(value), out_ty, name);
    g.replace_all_uses(out, c);
    g.remove_node(n);
    Ok(true)
}

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<bool, PassError> {
        let mut changed = false;
        loop {
            let mut round = false;
            let order = g.topo_order().map_err(|_| PassError::Failed { pass: "canonicalize", msg: "graph has a cycle".into() })?;
            for n in order {
                if !g.contains_node(n) {
                    continue;
                }
                if try_fold(g, n)? {
                    round = true;
                    continue;
                }
                let op = g.node(n).op.clone();
                let inp = g.node(n).inputs.first().copied();
                let out = g.node(n).output;
                if fold_pad(g, n) || reduce_to_global_pool(g, n) || matmul_to_gemm(g, n) || add_to_gemm_bias(g, n) {
                    round = true;
                    continue;
                }
                if matches!(op, Op::Identity | Op::Dropout) {
                    round |= bypass(g, n);
                    continue;
                }
                if is_reshape_like(&op) {
                    let inp = inp.expect("reshape has an input");
                    if g.ty(inp) == g.ty(out) {
                        round |= bypass(g, n);
                        continue;
                    }
                    let target: Vec<i64> = g.ty(out).shape().unwrap_or(&[]).iter().map(|d| *d as i64).collect();
                    if let Some(p) = g.producer(inp) {
                        if is_reshape_like(&g.node(p).op) {
                            let src = g.node(p).inputs[0];
                            g.set_inputs(n, vec![src]);
                            g.set_op(n, Op::Reshape { shape: target });
                            round = true;
                            continue;
                        }
                    }
                }
            }
            round |= g.dce() > 0;
            if !round {
                break;
            }
            changed = true;
        }
        Ok(changed)
    }
}
