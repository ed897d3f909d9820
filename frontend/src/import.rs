//! Model-level import: versions, initializers, inputs with shapes fixed, nodes in dependency order,
//! outputs. Values that can be computed at import time (shape arithmetic) are evaluated on the side so
//! shape-like operands become static attributes; the nodes themselves stay for canonicalize to fold.
use crate::lower::{lower_node, Ctx};
use crate::onnx::{type_proto, ModelProto, ValueInfoProto};
use crate::tensor::{dtype_from_onnx, onnx_type_name, tensor_from_proto};
use crate::ImportError;
use prost::Message;
use qcc_ir::{Graph, Type};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Shapes for graph inputs by name; they fix dynamic dimensions.
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// Keep unsupported ops as opaque nodes instead of failing.
    pub allow_unsupported: bool,
    /// Graph inputs frozen to constants (shape operands, parameters fed as inputs).
    pub const_inputs: HashMap<String, qcc_ir::Tensor>,
}

/// Newest ONNX IR version read. Versions 11 and 12 only added element types and metadata.
pub const MAX_IR: i64 = 12;
/// Newest default-domain opset read. Opsets 22-24 changed the supported ops only by widening their
/// element types (and adding attributes that the attribute check in lower.rs rejects unless default).
pub const MAX_OPSET: i64 = 24;

pub struct Imported {
    pub graph: Graph,
    /// Things the user should know (dynamic dimensions fixed to 1, ...).
    pub warnings: Vec<String>,
    pub opset: i64,
}

pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io { path: path.display().to_string(), source })?;
    let base = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
    import_bytes(&bytes, &path.display().to_string(), base, opts)
}

fn value_info_type(vi: &ValueInfoProto) -> Result<(qcc_ir::DType, Vec<Option<usize>>, Vec<String>), String> {
    let tt = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t,
        Some(_) => return Err("is not a tensor".into()),
        None => return Err("has no type".into()),
    };
    let dt = dtype_from_onnx(tt.elem_type()).ok_or_else(|| format!("has unsupported element type {}", onnx_type_name(tt.elem_type())))?;
    let mut dims = Vec::new();
    let mut syms = Vec::new();
    let shape = tt.shape.as_ref().ok_or("has no shape")?;
    for d in &shape.dim {
        use crate::onnx::tensor_shape_proto::dimension::Value;
        match &d.value {
            Some(Value::DimValue(v)) if *v >= 0 => dims.push(Some(*v as usize)),
            Some(Value::DimParam(p)) => {
                dims.push(None);
                syms.push(p.clone());
            }
            _ => {
                dims.push(None);
                syms.push("?".into());
            }
        }
    }
    Ok((dt, dims, syms))
}

/// Imports a serialized model. `what` names it in errors; `base` is its folder, for external data.
pub fn import_bytes(bytes: &[u8], what: &str, base: Option<&Path>, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let model = ModelProto::decode(bytes).map_err(|e| ImportError::Decode { path: what.to_string(), msg: e.to_string() })?;
    let ir = model.ir_version();
    if !(3..=MAX_IR).contains(&ir) {
        return Err(ImportError::IrVersion(ir));
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .map(|o| o.version())
        .ok_or_else(|| ImportError::Model("the model imports no default-domain opset".into()))?;
    if !(7..=MAX_OPSET).contains(&opset) {
        return Err(ImportError::Opset(opset));
    }
    let gp = model.graph.as_ref().ok_or_else(|| ImportError::Decode { path: what.to_string(), msg: "no graph".into() })?;
    let mut ctx = Ctx::new(gp.name(), opset, opts.allow_unsupported);
    let mut warnings = Vec::new();

    for init in &gp.initializer {
        let t = tensor_from_proto(init, base)?;
        ctx.define_const(init.name(), t);
    }
    let mut unused_consts: HashSet<&String> = opts.const_inputs.keys().collect();
    for (name, t) in &opts.const_inputs {
        if gp.input.iter().any(|i| i.name() == name) && !ctx.env.contains_key(name) {
            ctx.define_const(name, t.clone());
            unused_consts.remove(name);
        }
    }
    if let Some(n) = unused_consts.into_iter().next() {
        return Err(ImportError::Input { name: n.clone(), msg: "--const-input names no graph input".into() });
    }
    let mut unused_shapes: HashSet<&String> = opts.input_shapes.keys().collect();
    for vi in &gp.input {
        let name = vi.name().to_string();
        if ctx.env.contains_key(&name) {
            continue; // IR < 4 lists initializers among the inputs; frozen inputs are constants
        }
        let (dt, dims, syms) = value_info_type(vi).map_err(|msg| ImportError::Input { name: name.clone(), msg })?;
        let shape = match opts.input_shapes.get(&name) {
            Some(s) => {
                unused_shapes.remove(&name);
                let fits = s.len() == dims.len() && dims.iter().zip(s).all(|(d, v)| d.is_none_or(|d| d == *v));
                if !fits {
                    return Err(ImportError::Input { name, msg: format!("--input-shape {s:?} does not fit the model's shape {dims:?}") });
                }
                s.clone()
            }
            None => {
                if !syms.is_empty() {
                    warnings.push(format!(
                        "input \"{name}\": dynamic dimension(s) {} fixed to 1 (use --input-shape {name}=... to choose)",
                        syms.join(", ")
                    ));
                }
                dims.iter().map(|d| d.unwrap_or(1)).collect()
            }
        };
        if qcc_ir::types::checked_numel(&shape).is_none() {
            return Err(ImportError::Input { name, msg: format!("shape {shape:?} has too many elements") });
        }
        let v = ctx.g.add_input(Type::plain(dt, shape), Some(name.clone()));
        ctx.env.insert(name, v);
    }
    if let Some(n) = unused_shapes.into_iter().next() {
        return Err(ImportError::Input { name: n.clone(), msg: "--input-shape names no graph input".into() });
    }

    // ONNX requires topological order, but exporters sometimes break it: sort by name dependencies.
    let produced: HashMap<&str, usize> =
        gp.node.iter().enumerate().flat_map(|(i, n)| n.output.iter().filter(|o| !o.is_empty()).map(move |o| (o.as_str(), i))).collect();
    let mut indeg = vec![0usize; gp.node.len()];
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); gp.node.len()];
    for (i, n) in gp.node.iter().enumerate() {
        for inp in n.input.iter().filter(|s| !s.is_empty()) {
            if let Some(&p) = produced.get(inp.as_str()) {
                indeg[i] += 1;
                succ[p].push(i);
            } else if !ctx.env.contains_key(inp) {
                return Err(ImportError::Undefined { node: node_name(n, i), input: inp.clone() });
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..gp.node.len()).filter(|i| indeg[*i] == 0).collect();
    let mut order = Vec::new();
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &s in &succ[i] {
            indeg[s] -= 1;
            if indeg[s] == 0 {
                ready.push_back(s);
            }
        }
    }
    if order.len() != gp.node.len() {
        let i = (0..gp.node.len()).find(|i| indeg[*i] > 0).unwrap_or(0);
        return Err(ImportError::Cycle { node: node_name(&gp.node[i], i) });
    }
    let used: HashSet<&str> =
        gp.node.iter().flat_map(|n| n.input.iter().map(String::as_str)).chain(gp.output.iter().map(|o| o.name())).collect();
    for i in order {
        let n = &gp.node[i];
        lower_node(&mut ctx, n, &node_name(n, i), &used)?;
    }
    let mut outs = Vec::new();
    for o in &gp.output {
        let v = *ctx.env.get(o.name()).ok_or_else(|| ImportError::Model(format!("graph output \"{}\" is never computed", o.name())))?;
        // An output that is also an input or another output keeps its own name through an identity.
        let v = if ctx.g.value(v).name.as_deref() != Some(o.name()) || outs.contains(&v) {
            let ty = ctx.g.ty(v).clone();
            let id = ctx.g.add_node(qcc_ir::Op::Identity, vec![v], ty, vec![o.name().to_string()]);
            ctx.g.value_mut(id).name = Some(o.name().to_string());
            id
        } else {
            v
        };
        outs.push(v);
    }
    if outs.is_empty() {
        return Err(ImportError::Model("the graph has no outputs".into()));
    }
    ctx.g.set_outputs(outs);
    Ok(Imported { graph: ctx.g, warnings, opset })
}

/// The node's name, or a made-up one from its op type and position when the model gives none.
pub(crate) fn node_name(n: &crate::onnx::NodeProto, i: usize) -> String {
    if n.name().is_empty() {
        format!("{}_{i}", n.op_type())
    } else {
        n.name().to_string()
    }
}
