//! fuse-activation: an activation (Relu, Clip, LeakyRelu, HardSigmoid, HardSwish, Sigmoid, Tanh) whose
//! input is a Conv or Gemm with no other reader becomes that op's `act` attribute. Best after
//! fold-batchnorm, so Conv→BN→Relu fuses completely. The activation's location joins the conv's.
use crate::{Pass, PassContext, PassError};
use qcc_ir::{Graph, NodeId, Op};

pub struct FuseActivation;

fn with_act(op: &Op, a: qcc_ir::Act) -> Option<Op> {
    match op {
        Op::Conv { strides, pads, dilations, group, act: None } => {
            Some(Op::Conv { strides: strides.clone(), pads: pads.clone(), dilations: dilations.clone(), group: *group, act: Some(a) })
        }
        Op::Gemm { alpha, beta, trans_a, trans_b, act: None } => {
            Some(Op::Gemm { alpha: *alpha, beta: *beta, trans_a: *trans_a, trans_b: *trans_b, act: Some(a) })
        }
        _ => None,
    }
}

/// Fuses activation node `n` into its producer, if legal.
pub(crate) fn fuse_one(g: &mut Graph, n: NodeId) -> bool {
    let Some(act) = g.node(n).op.as_act() else {
        return false;
    };
    let x = g.node(n).inputs[0];
    let Some(p) = g.producer(x) else { return false };
    if g.use_count(x) != 1 || g.ty(x).dtype() != Some(qcc_ir::DType::F32) {
        return false;
    }
    let Some(op) = with_act(&g.node(p).op, act) else {
        return false;
    };
    g.set_op(p, op);
    let loc = g.node(n).loc.clone();
    g.loc_mut(p).extend(loc);
    let out = g.node(n).output;
    g.replace_all_uses(out, x);
    g.remove_node(n);
    true
}

impl Pass for FuseActivation {
    fn name(&self) -> &'static str {
        "fuse-activation"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<bool, PassError> {
        crate::rewrite_in_order(g, self.name(), fuse_one)
    }
}
