//! fuse-epilogue: an activation after an integer op becomes the op's own epilogue (qconv and qgemm
//! already carry their bias and requantization; this brings the activations that fuse-activation could
//! not attach at the float level). Two patterns, both exactly equal to what they replace:
//!
//! - `quantize(act(add|mul(dequantize(a), dequantize(b))))`: the add (or multiply) of quantized values
//!   followed by any activation, as insert-observers leaves it (it quantizes the activation's output, not
//!   the sum's), becomes `qadd|qmul{act} a, b` — by definition quantize(act(dq(a) ∘ dq(b))).
//! - `quantize(relu|clip(dequantize(op)))` after a qconv, qgemm, qadd or qmul without an activation,
//!   where the quantize has the op's own type (a QDQ model may put a ReLU between two identical
//!   quantize/dequantize pairs): a clamp of values already on the grid, so the op takes the activation
//!   and the pair disappears.
//!
//! Runs after fold-qdq. An activation between two different quantizations stays as it is: fusing it
//! would drop one rounding, which changes results.
use crate::fold_qdq::dq_source;
use crate::{Pass, PassContext, PassError};
use qcc_ir::{Act, Graph, NodeId, Op, QParams, ValueId};

pub struct FuseEpilogue;

/// The single-use producer of `v`.
fn only_producer(g: &Graph, v: ValueId) -> Option<NodeId> {
    g.producer(v).filter(|_| g.use_count(v) == 1)
}

fn with_act(op: &Op, act: Act) -> Option<Op> {
    Some(match op {
        Op::QConv { strides, pads, dilations, group, act: None } => {
            Op::QConv { strides: strides.clone(), pads: pads.clone(), dilations: dilations.clone(), group: *group, act: Some(act) }
        }
        Op::QGemm { trans_b, act: None } => Op::QGemm { trans_b: *trans_b, act: Some(act) },
        Op::QAdd { act: None } => Op::QAdd { act: Some(act) },
        Op::QMul { act: None } => Op::QMul { act: Some(act) },
        _ => return None,
    })
}

fn fuse_one(g: &mut Graph, q: NodeId) -> bool {
    let qnode = g.node(q).clone();
    if qnode.op != Op::Quantize || !matches!(g.ty(qnode.output).quant().map(|t| &t.params), Some(QParams::PerTensor { .. })) {
        return false;
    }
    let Some(a) = only_producer(g, qnode.inputs[0]) else { return false };
    let Some(act) = g.node(a).op.as_act() else { return false };
    let Some(p) = only_producer(g, g.node(a).inputs[0]) else { return false };
    let pnode = g.node(p).clone();
    let fused = match &pnode.op {
        // add/mul of dequantized per-tensor values.
        Op::Add | Op::Mul => {
            let Some(ins) = pnode
                .inputs
                .iter()
                .map(|v| dq_source(g, *v).filter(|s| matches!(g.ty(*s).quant().map(|t| &t.params), Some(QParams::PerTensor { .. }))))
                .collect::<Option<Vec<_>>>()
            else {
                return false;
            };
            let op = if pnode.op == Op::Add { Op::QAdd { act: Some(act) } } else { Op::QMul { act: Some(act) } };
            let loc = [pnode.loc.clone(), g.node(a).loc.clone()].concat();
            g.add_node(op, ins, g.ty(qnode.output).clone(), loc)
        }
        // relu/clip between two identical quantizations of an integer op's output.
        Op::Dequantize => {
            let src = pnode.inputs[0];
            let Some(op_node) = only_producer(g, src) else { return false };
            if !matches!(act, Act::Relu | Act::Clip { .. }) || g.ty(src) != g.ty(qnode.output) {
                return false;
            }
            let Some(op) = with_act(&g.node(op_node).op, act) else { return false };
            g.set_op(op_node, op);
            let loc = g.node(a).loc.clone();
            g.loc_mut(op_node).extend(loc);
            src
        }
        _ => return false,
    };
    g.replace_all_uses(qnode.output, fused);
    g.remove_node(q);
    g.remove_node(a);
    g.remove_node(p);
    true
}

impl Pass for FuseEpilogue {
    fn name(&self) -> &'static str {
        "fuse-epilogue"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<bool, PassError> {
        let changed = crate::rewrite_in_order(g, self.name(), fuse_one)?;
        if changed {
            g.dce();
        }
        Ok(changed)
    }
}
