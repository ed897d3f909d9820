//! Runs a whole graph: nodes in topological order, each value freed after its last reader.
use crate::eval::eval_op;
use crate::RunError;
use qcc_ir::{Graph, NodeId, Tensor, Type, ValueDef, ValueId};

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
        let out = eval_node(g, n, |i| vals[i.index()].as_ref())?;
        observe(n, &out);
        for &i in &node.inputs {
            remaining[i.index()] -= 1;
            if remaining[i.index()] == 0 {
                vals[i.index()] = None;
            }
        }
        vals[node.output.index()] = Some(out);
    }
    outputs(g, |o| vals[o.index()].as_ref())
}

/// The graph's outputs, read from computed values through `get`.
fn outputs<'a>(g: &'a Graph, get: impl Fn(ValueId) -> Option<&'a Tensor>) -> Result<Vec<Tensor>, RunError> {
    g.outputs()
        .iter()
        .map(|&o| match &g.value(o).def {
            ValueDef::Const(_) => g.const_tensor(o).cloned().ok_or_else(|| RunError::Graph("output constant is elided".into())),
            _ => get(o).cloned().ok_or_else(|| RunError::Graph(format!("output {o} was not computed"))),
        })
        .collect()
}

/// Evaluates node `n` on its inputs (constants from the graph, the others through `get`).
fn eval_node<'a>(g: &'a Graph, n: NodeId, get: impl Fn(ValueId) -> Option<&'a Tensor>) -> Result<Tensor, RunError> {
    let node = g.node(n);
    let err = |msg: String| RunError::Node { node: node.name().to_string(), op: node.op.name().to_string(), msg };
    let mut args: Vec<&Tensor> = Vec::with_capacity(node.inputs.len());
    for &i in &node.inputs {
        let t = match &g.value(i).def {
            ValueDef::Const(_) => g.const_tensor(i).ok_or_else(|| err("a constant's data was elided; it cannot run".into()))?,
            _ => get(i).ok_or_else(|| err(format!("input {i} was not computed")))?,
        };
        args.push(t);
    }
    let ty = g.ty(node.output);
    if *ty == Type::Unknown {
        return Err(err("cannot run an op whose type is unknown (unsupported op?)".into()));
    }
    let in_tys: Vec<&Type> = node.inputs.iter().map(|i| g.ty(*i)).collect();
    eval_op(&node.op, &args, &in_tys, ty).map_err(err)
}

/// Every value of one run of `g`, indexed by value (None for constants and unused values), for
/// [`run_patched`].
pub fn run_all(g: &Graph, inputs: Vec<Tensor>) -> Result<Vec<Option<Tensor>>, RunError> {
    let mut vals: Vec<Option<Tensor>> = vec![None; g.num_values()];
    for (&v, t) in g.inputs().iter().zip(&inputs) {
        vals[v.index()] = Some(t.clone());
    }
    run_observed(g, inputs, |n, t| vals[g.node(n).output.index()] = Some(t.clone()))?;
    Ok(vals)
}

/// The outputs of `g` when value `v` of the run `base` (from [`run_all`]) is replaced by `t`: only the
/// nodes downstream of `v` are recomputed (sensitivity analysis injects one layer's error this way).
pub fn run_patched(g: &Graph, base: &[Option<Tensor>], v: ValueId, t: Tensor) -> Result<Vec<Tensor>, RunError> {
    let order = g.topo_order().map_err(|n| RunError::Graph(format!("cycle through node \"{}\"", g.node(n).name())))?;
    let mut new: Vec<Option<Tensor>> = vec![None; g.num_values()];
    new[v.index()] = Some(t);
    for n in order {
        let node = g.node(n);
        if node.output != v && node.inputs.iter().any(|i| new[i.index()].is_some()) {
            let out = eval_node(g, n, |i| new[i.index()].as_ref().or(base[i.index()].as_ref()))?;
            new[node.output.index()] = Some(out);
        }
    }
    outputs(g, |o| new[o.index()].as_ref().or(base[o.index()].as_ref()))
}
