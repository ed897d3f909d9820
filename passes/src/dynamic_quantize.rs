//! dynamic-quantize: dynamic quantization (`--dynamic`). Every conv and gemm with an integer form (and not
//! kept float by `--keep-float`) gets int8 weights per the weight scheme, quantized once here, and becomes
//! dyn_qconv / dyn_qgemm: its f32 input is quantized to u8 at run time from that input's own range, so no
//! calibration is needed (docs/semantics.md). Everything else stays float. Runs after the float passes,
//! instead of the observer/calibration/QDQ passes of static quantization.
use crate::place_qdq::quantize_weights;
use crate::{Pass, PassContext, PassError};
use qcc_ir::{ConstData, ElemType, Graph, NodeId, Op, Type};

pub struct DynamicQuantize;

fn convert(g: &mut Graph, n: NodeId, cx: &PassContext) -> bool {
    let node = g.node(n).clone();
    let Some(scheme) = cx.quant.weights else { return false };
    let Some(op) = node.op.dynamic_integer_form() else { return false };
    // Dynamic ops take no residual (fuse-residual does not run in the dynamic pipeline).
    if node.inputs.len() > 3 {
        return false;
    }
    // The output channels' axis of the weights.
    let axis = match node.op {
        Op::Gemm { trans_b, .. } => usize::from(!trans_b),
        _ => 0,
    };
    let Some(w) = g.const_tensor(node.inputs[1]).and_then(|t| t.as_f32()).cloned() else { return false };
    // The bias must be a constant f32 vector (gemm's C may broadcast otherwise).
    let channels = w.shape()[if axis == 0 { 0 } else { 1 }];
    if let Some(b) = node.inputs.get(2) {
        if g.const_tensor(*b).and_then(|t| t.as_f32()).is_none_or(|t| t.shape() != [channels]) {
            return false;
        }
    }
    let (t, qt) = quantize_weights(&w, scheme, axis, None);
    let shape = t.shape().to_vec();
    let name = g.value(node.inputs[1]).name.clone();
    let wq = g.add_const_typed(ConstData::Data(t), Type::Tensor { elem: ElemType::Q(qt), shape }, name);
    let mut ins = node.inputs.clone();
    ins[1] = wq;
    let ty = g.ty(node.output).clone();
    let d = g.add_node(op, ins, ty, node.loc.clone());
    g.replace_all_uses(node.output, d);
    g.remove_node(n);
    true
}

impl Pass for DynamicQuantize {
    fn name(&self) -> &'static str {
        "dynamic-quantize"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError> {
        let targets: Vec<NodeId> = g.node_ids().filter(|n| cx.quant.quantizes_weights_of(g, *n)).collect();
        let mut changed = false;
        for n in targets {
            changed |= convert(g, n, cx);
        }
        if changed {
            g.dce();
        }
        Ok(changed)
    }
}
