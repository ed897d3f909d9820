//! fuse-residual: `add(conv(x), r)` becomes `conv(x, w, b, r)`, and an activation reading the sum
//! (ResNet's add → relu) joins it as the conv's activation, applied after the residual. Legal when the
//! conv has no activation of its own, its output has no other reader, and `r` is computed (not a
//! constant) with the output's shape (no broadcasting). Only ordinary convs (group 1) take a residual:
//! the compiled depthwise kernels have no residual epilogue. A conv without a bias gets a zero one, since
//! the residual takes the fourth slot.
//!
//! Once quantized, the sum is requantized once instead of twice (no rounding of the conv's output on
//! its own grid), and the generated code writes the block's output in the convolution's epilogue instead
//! of a separate pass over memory. Runs after equalize (which must not rescale the output channels of a
//! conv whose output is summed with something else) and before insert-observers.
use crate::{Pass, PassContext, PassError};
use ndarray::{ArrayD, IxDyn};
use qcc_ir::{DType, Graph, NodeId, Op, Tensor, ValueId};

pub struct FuseResidual;

/// The add's operand that a conv could absorb: (conv node, the other operand).
fn candidate(g: &Graph, a: ValueId, r: ValueId) -> Option<(NodeId, ValueId)> {
    let p = g.producer(a)?;
    let node = g.node(p);
    let ok = matches!(node.op, Op::Conv { group: 1, act: None, .. })
        && node.inputs.len() <= 3
        && g.use_count(a) == 1
        && !g.is_const(r)
        && g.ty(r).dtype() == Some(DType::F32)
        && g.ty(a).shape().is_some()
        && g.ty(r).shape() == g.ty(a).shape();
    ok.then_some((p, r))
}

fn fuse_one(g: &mut Graph, n: NodeId) -> bool {
    let node = g.node(n);
    if node.op != Op::Add || node.inputs.len() != 2 || node.inputs[0] == node.inputs[1] {
        return false;
    }
    let (a, b) = (node.inputs[0], node.inputs[1]);
    let Some((conv, r)) = candidate(g, a, b).or_else(|| candidate(g, b, a)) else { return false };
    let mut ins = g.node(conv).inputs.clone();
    if ins.len() == 2 {
        let m = g.ty(ins[1]).shape().map_or(0, |s| s[0]);
        let name = Some(format!("{}.bias", g.node(conv).name()));
        ins.push(g.add_const(Tensor::F32(ArrayD::zeros(IxDyn(&[m]))), name));
    }
    ins.push(r);
    g.set_inputs(conv, ins);
    let loc = g.node(n).loc.clone();
    g.loc_mut(conv).extend(loc);
    let out = g.node(n).output;
    let conv_out = g.node(conv).output;
    g.replace_all_uses(out, conv_out);
    g.remove_node(n);
    // The activation after the add (ResNet's add → relu) joins the conv too.
    if let [(user, 0)] = g.uses(conv_out)[..] {
        crate::fuse_activation::fuse_one(g, user);
    }
    true
}

impl Pass for FuseResidual {
    fn name(&self) -> &'static str {
        "fuse-residual"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<bool, PassError> {
        crate::rewrite_in_order(g, self.name(), fuse_one)
    }
}
