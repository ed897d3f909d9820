//! insert-observers: puts an `observe` node on every float value whose range quantization will need —
//! the outputs of ops with integer forms (conv, gemm, add, mul, concat, average pools) and the values they
//! read (a conv's input and residual, not its constants); for an add or multiply read only by an
//! activation, the activation's output instead of the sum.
//! Reads through layout-only ops (reshape, flatten, transpose, max pool, ...) to the value that produces
//! the data, so one observer serves a whole chain. Runs after the float passes; the driver then calibrates
//! and assign-qparams turns each observe into quantize + dequantize.
use crate::{Pass, PassContext, PassError};
use qcc_ir::{DType, Graph, Op, ValueId};
use std::collections::{BTreeSet, HashMap};

pub struct InsertObservers;

/// Ops qcc has integer forms for (fold-qdq turns their QDQ pattern into them).
pub fn has_integer_form(g: &Graph, op: &Op, inputs: &[ValueId]) -> bool {
    match op {
        Op::Conv { .. } => inputs.len() >= 2 && g.is_const(inputs[1]),
        Op::Gemm { alpha, beta, trans_a: false, .. } => {
            *alpha == 1.0
                && (*beta == 1.0 || inputs.len() < 3)
                && g.is_const(inputs[1])
                && g.ty(inputs[0]).shape().is_some_and(|s| s.len() == 2)
        }
        Op::Add | Op::Mul | Op::Concat { .. } => inputs.iter().all(|v| !g.is_const(*v)),
        Op::AveragePool { kernel, .. } => kernel.len() <= 2,
        Op::GlobalAveragePool => true,
        _ => false,
    }
}

/// Ops that only move or select values: quantized values pass through them with unchanged parameters.
pub fn is_layout_only(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Transpose { .. }
            | Op::Slice { .. }
            | Op::MaxPool { .. }
            | Op::Identity
    )
}

/// The value whose data `v` is, looking through layout-only ops.
pub fn data_source(g: &Graph, mut v: ValueId) -> ValueId {
    while let Some(p) = g.producer(v) {
        let n = g.node(p);
        if is_layout_only(&n.op) && n.inputs.len() == 1 {
            v = n.inputs[0];
        } else {
            break;
        }
    }
    v
}

impl Pass for InsertObservers {
    fn name(&self) -> &'static str {
        "insert-observers"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<bool, PassError> {
        let order = g.topo_order().map_err(|_| PassError::Failed { pass: "insert-observers", msg: "graph has a cycle".into() })?;
        let mut wanted: BTreeSet<ValueId> = BTreeSet::new();
        // Observers that stand for an add or multiply as well carry its locations too (--int16 names it).
        let mut also: HashMap<ValueId, Vec<String>> = HashMap::new();
        for n in order {
            let node = g.node(n);
            if !has_integer_form(g, &node.op, &node.inputs) {
                continue;
            }
            // An add or multiply read only by an activation is quantized after the activation: fuse-epilogue
            // then makes the three one qadd/qmul with the activation (one rounding, not two).
            let act_after = match (&node.op, g.uses(node.output).as_slice()) {
                (Op::Add | Op::Mul, [(u, 0)]) if !g.is_output(node.output) && g.node(*u).op.as_act().is_some() => Some(g.node(*u).output),
                _ => None,
            };
            if let Some(a) = act_after {
                also.insert(a, node.loc.clone());
            }
            wanted.insert(act_after.unwrap_or(node.output));
            let data_inputs: Vec<ValueId> = match node.op {
                Op::Add | Op::Mul | Op::Concat { .. } => node.inputs.clone(),
                // A conv's residual (fuse-residual) is quantized like its input.
                _ => node.inputs.iter().enumerate().filter(|(i, _)| *i == 0 || *i == 3).map(|(_, v)| *v).collect(),
            };
            for i in data_inputs {
                wanted.insert(data_source(g, i));
            }
        }
        let mut changed = false;
        for v in wanted {
            if g.ty(v).dtype() != Some(DType::F32) || g.is_const(v) {
                continue;
            }
            let loc = match g.producer(v) {
                Some(p) => [also.remove(&v).unwrap_or_default(), g.node(p).loc.clone()].concat(),
                None => vec![g.value(v).name.clone().unwrap_or_else(|| "input".into())],
            };
            let ty = g.ty(v).clone();
            let obs = g.add_node(Op::Observe, vec![v], ty, loc);
            for (user, slot) in g.uses(v) {
                if g.node(user).output != obs {
                    g.set_input(user, slot, obs);
                }
            }
            if g.is_output(v) {
                g.replace_output(v, obs);
            }
            changed = true;
        }
        Ok(changed)
    }
}
