//! Runs a whole graph: nodes in topological order, each value freed after its last reader.
use crate::eval::eval_op;
use crate::RunError;
use qcc_ir::{Graph, NodeId, Tensor, Type, ValueDef};

/// Runs `g` on `inputs` (one per graph input, in order) and returns the outputs.
pub fn run(g: &Graph, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
    run_observed(g, inputs, |_, _| {})
}

/// Like [`run`], calling `observe` with every node's result as it is computed (calibration, analysis).
pub fn run_observed(g: &Graph, inputs: Vec<Tensor>, mut observe: impl FnMut(NodeId, &Tensor)) -> Result<Vec<Tensor>, RunError> {
    if inputs.len() != g.inputs().len() {
        return Err(RunError::Graph(format!("the graph takes {} inputs, {} given", g.inputs().len(), inputs.len())));
    }
    let order = g.topo_order().map_err(|n| RunError::Graph(format!("cycle through node \"{}\"", g.node(n).name())))?;
    let mut vals: Vec<Option<Tensor>> = vec![None; g.num_values()];
    let mut remaining = vec![0usize; g.num_values()];
    for &n in &order {
        for i in &g.node(n).inputs {
            remaining[i.index()] += 1;
        }
    }
    for o in g.outputs() {
        remaining[o.index()] += 1;
    }
    for (k, (&v, t)) in g.inputs().iter().zip(inputs).enumerate() {
        let ty = g.ty(v);
        let name = g.value(v).name.clone().unwrap_or_default();
        if ty.dtype() != Some(t.dtype()) || ty.shape() != Some(t.shape()) {
            return Err(RunError::Input { index: k, name, msg: format!("expected {ty}, got {}{:?}", t.dtype(), t.shape()) });
        }
        vals[v.index()] = Some(t);
    }
    for &n in &order {
        let node = g.node(n);
        let err = |msg: String| RunError::Node { node: node.name().to_string(), op: node.op.name().to_string(), msg };
        let mut args: Vec<&Tensor> = Vec::with_capacity(node.inputs.len());
        for &i in &node.inputs {
            let t = match &g.value(i).def {
                ValueDef::Const(_) => g.const_tensor(i).ok_or_else(|| err("a constant's data was elided; it cannot run".into()))?,
                _ => vals[i.index()].as_ref().ok_or_else(|| err(format!("input {i} was not computed")))?,
            };
            args.push(t);
        }
        let ty = g.ty(node.output);
        if *ty == Type::Unknown {
            return Err(err("cannot run an op whose type is unknown (unsupported op?)".into()));
        }
        let in_tys: Vec<&Type> = node.inputs.iter().map(|i| g.ty(*i)).collect();
        let out = eval_op(&node.op, &args, &in_tys, ty).map_err(err)?;
        observe(n, &out);
        for &i in &node.inputs {
            remaining[i.index()] -= 1;
            if remaining[i.index()] == 0 {
                vals[i.index()] = None;
            }
        }
        vals[node.output.index()] = Some(out);
    }
    g.outputs()
        .iter()
        .map(|&o| match &g.value(o).def {
            ValueDef::Const(_) => g.const_tensor(o).cloned().ok_or_else(|| RunError::Graph("output constant is elided".into())),
            _ => vals[o.index()].clone().ok_or_else(|| RunError::Graph(format!("output {o} was not computed"))),
        })
        .collect()
}
