//! Lowers one ONNX node to IR. Operand inputs that only carry shapes or parameters (Reshape's shape,
//! Clip's bounds, Slice's starts, ...) must be known at import time and become typed attributes, so every
//! IR type is static. Old attribute forms of each op (by opset) land on the same IR op.
use crate::onnx::{attribute_proto::AttributeType, AttributeProto, NodeProto};
use crate::tensor::{dtype_from_onnx, onnx_type_name, tensor_from_proto};
use crate::ImportError;
use qcc_ir::infer::norm_axis;
use qcc_ir::{
    AttrValue, ConstData, CoordTransform, DType, ElemType, Graph, NearestMode, Op, Opaque, PadMode, QParams, QuantType, ResizeMode, Tensor,
    Type, ValueId,
};
use std::collections::{HashMap, HashSet};

/// Import state: the graph being built, ONNX names in scope, and values computed at import time.
pub(crate) struct Ctx {
    pub g: Graph,
    pub env: HashMap<String, ValueId>,
    known: HashMap<ValueId, Tensor>,
    opset: i64,
    allow_unsupported: bool,
    /// DynamicQuantizeLinear nodes seen: their first output's name -> (input, scale and zero point names).
    dynamic: HashMap<String, (ValueId, String, String)>,
}

/// Results larger than this are not evaluated at import (shape arithmetic is tiny; weights are folded
/// later by canonicalize).
const KNOWN_LIMIT: usize = 1 << 16;

impl Ctx {
    pub fn new(name: &str, opset: i64, allow_unsupported: bool) -> Ctx {
        Ctx {
            g: Graph::new(if name.is_empty() { "main" } else { name }),
            env: HashMap::new(),
            known: HashMap::new(),
            opset,
            allow_unsupported,
            dynamic: HashMap::new(),
        }
    }

    pub fn define_const(&mut self, name: &str, t: Tensor) {
        let v = self.g.add_const(t, Some(name.to_string()));
        self.env.insert(name.to_string(), v);
    }

    fn known(&self, v: ValueId) -> Option<&Tensor> {
        self.g.const_tensor(v).or_else(|| self.known.get(&v))
    }
}

struct N<'a> {
    n: &'a NodeProto,
    name: &'a str,
    opset: i64,
}

type R<T> = Result<T, ImportError>;

impl<'a> N<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        Err(ImportError::Node { node: self.name.to_string(), op_type: self.n.op_type().to_string(), msg: msg.into() })
    }
    fn attr(&self, k: &str) -> Option<&'a AttributeProto> {
        self.n.attribute.iter().find(|a| a.name() == k)
    }
    fn int(&self, k: &str, d: i64) -> i64 {
        self.attr(k).map(|a| a.i()).unwrap_or(d)
    }
    fn float(&self, k: &str, d: f32) -> f32 {
        self.attr(k).map(|a| a.f()).unwrap_or(d)
    }
    fn ints(&self, k: &str) -> Option<Vec<i64>> {
        self.attr(k).map(|a| a.ints.clone())
    }
    fn floats(&self, k: &str) -> Option<Vec<f32>> {
        self.attr(k).map(|a| a.floats.clone())
    }
    fn string(&self, k: &str, d: &str) -> String {
        self.attr(k).map(|a| String::from_utf8_lossy(a.s()).into_owned()).unwrap_or_else(|| d.to_string())
    }
    /// Attributes qcc only supports at one value.
    fn require_int(&self, k: &str, default: i64, want: i64) -> R<()> {
        let v = self.int(k, default);
        if v != want {
            return self.err(format!("attribute {k}={v} is not supported (only {want})"));
        }
        Ok(())
    }
}

fn input(ctx: &Ctx, n: &N, i: usize) -> R<Option<ValueId>> {
    match n.n.input.get(i).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => match ctx.env.get(s) {
            Some(v) => Ok(Some(*v)),
            None if ctx.dynamic.iter().any(|(y, (_, sc, zp))| [y, sc, zp].contains(&s)) => n.err(format!(
                "reads \"{s}\", an output of DynamicQuantizeLinear: qcc imports those only as the inputs of one DequantizeLinear"
            )),
            None => Err(ImportError::Undefined { node: n.name.to_string(), input: s.clone() }),
        },
    }
}

fn req(ctx: &Ctx, n: &N, i: usize) -> R<ValueId> {
    match input(ctx, n, i)? {
        Some(v) => Ok(v),
        None => n.err(format!("input {i} is required")),
    }
}

fn shape(ctx: &Ctx, n: &N, v: ValueId) -> R<Vec<usize>> {
    match ctx.g.ty(v).shape() {
        Some(s) => Ok(s.to_vec()),
        None => n.err(format!("the shape of {} is unknown", ctx.g.describe_value(v))),
    }
}

/// An operand that must be known at import time, as integers.
fn known_ints(ctx: &Ctx, n: &N, i: usize, what: &str) -> R<Option<Vec<i64>>> {
    let Some(v) = input(ctx, n, i)? else {
        return Ok(None);
    };
    match ctx.known(v).and_then(|t| t.to_i64_vec()) {
        Some(x) => Ok(Some(x)),
        None => n.err(format!("{what} (input {i}) must be a constant integer tensor; fix dynamic input shapes with --input-shape")),
    }
}

fn known_floats(ctx: &Ctx, n: &N, i: usize, what: &str) -> R<Option<Vec<f32>>> {
    let Some(v) = input(ctx, n, i)? else {
        return Ok(None);
    };
    match ctx.known(v) {
        Some(t) => Ok(Some(t.to_f32_vec())),
        None => n.err(format!("{what} (input {i}) must be constant")),
    }
}

/// Resolves auto_pad into explicit pads (all begins, then all ends).
fn resolve_pads(n: &N, input: &[usize], kernel: &[i64], strides: &[i64], dil: &[i64]) -> R<Vec<i64>> {
    let nsp = kernel.len();
    let auto = n.string("auto_pad", "NOTSET");
    match auto.as_str() {
        "NOTSET" => {
            let p = n.ints("pads").unwrap_or_else(|| vec![0; 2 * nsp]);
            if p.len() != 2 * nsp {
                return n.err(format!("pads has {} entries, expected {}", p.len(), 2 * nsp));
            }
            Ok(p)
        }
        "VALID" => Ok(vec![0; 2 * nsp]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut p = vec![0; 2 * nsp];
            for i in 0..nsp {
                let inp = *input.get(i).ok_or(()).or_else(|_| n.err("input rank too small for kernel"))? as i64;
                let out = (inp + strides[i] - 1) / strides[i];
                let total = ((out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - inp).max(0);
                let small = total / 2;
                let (b, e) = if auto == "SAME_UPPER" { (small, total - small) } else { (total - small, small) };
                p[i] = b;
                p[nsp + i] = e;
            }
            Ok(p)
        }
        other => n.err(format!("unknown auto_pad {other:?}")),
    }
}

fn ones(k: usize) -> Vec<i64> {
    vec![1; k]
}

fn attr_value(a: &AttributeProto) -> Option<AttrValue> {
    Some(match a.r#type() {
        AttributeType::Int => AttrValue::Int(a.i()),
        AttributeType::Float => AttrValue::Float(a.f()),
        AttributeType::String => AttrValue::Str(String::from_utf8_lossy(a.s()).into_owned()),
        AttributeType::Ints => AttrValue::Ints(a.ints.clone()),
        AttributeType::Floats => AttrValue::Floats(a.floats.clone()),
        _ => return None,
    })
}

/// Result of lowering: an op with inputs (and, for quantize, the output type), or a value directly.
enum Lowered {
    Node(Op, Vec<ValueId>),
    Typed(Op, Vec<ValueId>, Type),
    Value(ValueId),
}

/// The attributes qcc understands, per supported op. Any other attribute is an error rather than
/// silently ignored (newer opsets add attributes that change semantics).
fn known_attrs(op_type: &str) -> Option<&'static [&'static str]> {
    const POOL: &[&str] = &["auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads", "storage_order", "strides"];
    const REDUCE: &[&str] = &["axes", "keepdims", "noop_with_empty_axes"];
    const NONE: &[&str] = &[];
    Some(match op_type {
        "Conv" => &["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"],
        "ConvTranspose" => &["auto_pad", "dilations", "group", "kernel_shape", "output_padding", "output_shape", "pads", "strides"],
        "Gemm" => &["alpha", "beta", "transA", "transB"],
        "Clip" => &["min", "max"],
        "LeakyRelu" => &["alpha"],
        "HardSigmoid" => &["alpha", "beta"],
        "BatchNormalization" => &["epsilon", "momentum", "spatial", "training_mode"],
        "MaxPool" | "AveragePool" => POOL,
        "Flatten" | "Concat" | "Gather" | "Softmax" => &["axis"],
        "Reshape" => &["allowzero"],
        "Transpose" => &["perm"],
        "Pad" => &["mode", "pads", "value"],
        "Squeeze" | "Unsqueeze" => &["axes"],
        "Constant" => &["value", "value_float", "value_floats", "value_int", "value_ints"],
        "Dropout" => &["ratio", "seed", "is_test"],
        "Resize" => &[
            "antialias",
            "axes",
            "coordinate_transformation_mode",
            "cubic_coeff_a",
            "exclude_outside",
            "extrapolation_value",
            "keep_aspect_ratio_policy",
            "mode",
            "nearest_mode",
        ],
        "Shape" => &["start", "end"],
        "Slice" => &["starts", "ends", "axes"],
        "Split" => &["axis", "split", "num_outputs"],
        "Cast" => &["to", "saturate", "round_mode"],
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceL1" | "ReduceL2" | "ReduceSumSquare" => REDUCE,
        "Elu" | "Celu" => &["alpha"],
        "Selu" => &["alpha", "gamma"],
        "Gelu" => &["approximate"],
        "ArgMax" | "ArgMin" => &["axis", "keepdims", "select_last_index"],
        "LRN" => &["size", "alpha", "beta", "bias"],
        "InstanceNormalization" => &["epsilon"],
        "DepthToSpace" => &["blocksize", "mode"],
        "SpaceToDepth" => &["blocksize"],
        "Upsample" => &["mode", "scales"],
        "LogSoftmax" => &["axis"],
        "CastLike" => &["saturate", "round_mode"],
        "Size" => NONE,
        "LayerNormalization" => &["axis", "epsilon", "stash_type"],
        "QuantizeLinear" => &["axis", "block_size", "output_dtype", "saturate", "precision"],
        "DequantizeLinear" => &["axis", "block_size", "output_dtype"],
        "MatMul" | "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Equal" | "Max" | "Min" | "Where" | "Relu" | "Sigmoid" | "HardSwish"
        | "Tanh" | "Erf" | "Sqrt" | "Exp" | "Identity" | "GlobalAveragePool" | "Expand" | "Softplus" | "Softsign" | "Mish" | "Neg"
        | "Abs" | "Reciprocal" | "Log" | "Floor" | "Ceil" | "GlobalMaxPool" | "Sum" | "Mean" | "PRelu" | "Less" | "Greater"
        | "LessOrEqual" | "GreaterOrEqual" | "Not" => NONE,
        "ConstantOfShape" => &["value"],
        _ => return None,
    })
}

pub(crate) fn lower_node(ctx: &mut Ctx, np: &NodeProto, name: &str, used: &HashSet<&str>) -> R<()> {
    let n = N { n: np, name, opset: ctx.opset };
    let op_type = np.op_type();
    let domain = np.domain();
    if domain.is_empty() || domain == "ai.onnx" {
        if let Some(a) = known_attrs(op_type).and_then(|known| np.attribute.iter().find(|a| !known.contains(&a.name()))) {
            return n.err(format!("attribute {} is not supported", a.name()));
        }
    }
    if (domain.is_empty() || domain == "ai.onnx") && op_type == "DynamicQuantizeLinear" {
        // Its three outputs (u8 values, scale, zero point) only mean something together: the consumer qcc
        // supports is a DequantizeLinear of all three, which becomes dynamic_qdq (see lower_qdq).
        let x = req(ctx, &n, 0)?;
        if ctx.g.ty(x).dtype() != Some(DType::F32) {
            return n.err(format!("input must be f32, is {}", ctx.g.ty(x)));
        }
        let [y, s, z] = np.output.as_slice() else { return n.err("needs three outputs") };
        ctx.dynamic.insert(y.clone(), (x, s.clone(), z.clone()));
        return Ok(());
    }
    if (domain.is_empty() || domain == "ai.onnx") && op_type == "Split" {
        return lower_split(ctx, &n);
    }
    let lowered = if domain.is_empty() || domain == "ai.onnx" { lower_op(ctx, &n, op_type)? } else { None };
    let lowered = match lowered {
        Some(l) => l,
        None if ctx.allow_unsupported => {
            let ins: Vec<ValueId> = (0..np.input.len()).filter_map(|i| input(ctx, &n, i).transpose()).collect::<R<_>>()?;
            let attrs = np.attribute.iter().filter_map(|a| attr_value(a).map(|v| (a.name().to_string(), v))).collect();
            let op = Op::Opaque(Opaque { op_type: op_type.to_string(), domain: domain.to_string(), attrs });
            Lowered::Typed(op, ins, Type::Unknown)
        }
        None => {
            return Err(ImportError::Unsupported {
                node: name.to_string(),
                op_type: op_type.to_string(),
                domain: domain.to_string(),
                opset: ctx.opset,
            })
        }
    };
    // Only the first output of any op is modelled; the others must be unused.
    for (i, o) in np.output.iter().enumerate().skip(1) {
        if !o.is_empty() && used.contains(o.as_str()) {
            return n.err(format!("output {i} (\"{o}\") is used, but qcc supports only the first output of {op_type}"));
        }
    }
    let out_name = np.output.first().cloned().unwrap_or_default();
    let v = match lowered {
        Lowered::Value(v) => v,
        Lowered::Node(op, ins) => add(ctx, &n, op, ins, Type::Unknown)?,
        Lowered::Typed(op, ins, ty) => add(ctx, &n, op, ins, ty)?,
    };
    if ctx.g.value(v).name.is_none() {
        ctx.g.value_mut(v).name = Some(out_name.clone());
    }
    ctx.env.insert(out_name, v);
    Ok(())
}

/// Split: one Slice per output along `axis` (its own node, named `NAME:i`), sized by the `split` input
/// (an attribute before opset 13), else equal parts (the last one smaller from opset 18, as
/// `num_outputs` allows).
fn lower_split(ctx: &mut Ctx, n: &N) -> R<()> {
    let xv = req(ctx, n, 0)?;
    let dims = shape(ctx, n, xv)?;
    let axis = norm_axis(n.int("axis", 0), dims.len()).or_else(|e| n.err(e))?;
    let outs = &n.n.output;
    let sizes = if n.opset >= 13 { known_ints(ctx, n, 1, "split")? } else { n.ints("split") };
    let sizes: Vec<i64> = match sizes {
        Some(s) => s,
        None => {
            let parts = if n.opset >= 18 { n.int("num_outputs", outs.len() as i64) } else { outs.len() as i64 };
            let d = dims[axis] as i64;
            if parts <= 0 || (n.opset < 18 && d % parts != 0) {
                return n.err(format!("cannot split {d} into {parts} equal parts"));
            }
            let each = (d + parts - 1) / parts;
            (0..parts).map(|i| each.min(d - i * each).max(0)).collect()
        }
    };
    if sizes.len() != outs.len() || sizes.iter().any(|s| *s < 0) || sizes.iter().sum::<i64>() != dims[axis] as i64 {
        return n.err(format!("split sizes {sizes:?} do not divide dimension {} ({}) into {} outputs", axis, dims[axis], outs.len()));
    }
    let mut start = 0;
    for (i, (o, size)) in outs.iter().zip(&sizes).enumerate() {
        let name = format!("{}:{i}", n.name);
        let part = N { n: n.n, name: &name, opset: n.opset };
        let op = Op::Slice { starts: vec![start], ends: vec![start + size], axes: vec![axis as i64], steps: vec![1] };
        start += size;
        if o.is_empty() {
            continue;
        }
        let v = add(ctx, &part, op, vec![xv], Type::Unknown)?;
        ctx.g.value_mut(v).name = Some(o.clone());
        ctx.env.insert(o.clone(), v);
    }
    Ok(())
}

fn add(ctx: &mut Ctx, n: &N, op: Op, ins: Vec<ValueId>, current: Type) -> R<ValueId> {
    let tys: Vec<Type> = ins.iter().map(|v| ctx.g.ty(*v).clone()).collect();
    let ty = if matches!(op, Op::Opaque(_)) || tys.contains(&Type::Unknown) {
        if !ctx.allow_unsupported && !matches!(op, Op::Opaque(_)) {
            return n.err("input type unknown");
        }
        if matches!(op, Op::Opaque(_)) {
            current
        } else {
            let refs: Vec<&Type> = tys.iter().collect();
            qcc_ir::infer_type(&op, &refs, &current).unwrap_or(Type::Unknown)
        }
    } else {
        let refs: Vec<&Type> = tys.iter().collect();
        match qcc_ir::infer_type(&op, &refs, &current) {
            Ok(t) => t,
            Err(e) => {
                let shown: Vec<String> = tys.iter().map(|t| t.to_string()).collect();
                return n.err(format!("{e} (inputs: {})", shown.join(", ")));
            }
        }
    };
    let small = ty.numel().is_some_and(|k| k <= KNOWN_LIMIT);
    let vals: Option<Vec<&Tensor>> = ins.iter().map(|v| ctx.known(*v)).collect();
    let value = match vals {
        Some(vals) if small && !matches!(op, Op::Opaque(_)) => {
            let refs: Vec<&Type> = tys.iter().collect();
            qcc_runtime::eval_op(&op, &vals, &refs, &ty).ok()
        }
        _ => None,
    };
    let v = ctx.g.add_node(op, ins, ty, vec![n.name.to_string()]);
    if let Some(t) = value {
        ctx.known.insert(v, t);
    }
    Ok(v)
}

fn lower_op(ctx: &mut Ctx, n: &N, op_type: &str) -> R<Option<Lowered>> {
    use Lowered::Node as L;
    let x = |ctx: &Ctx| req(ctx, n, 0);
    let all_inputs = |ctx: &Ctx| -> R<Vec<ValueId>> { (0..n.n.input.len()).filter_map(|i| input(ctx, n, i).transpose()).collect() };
    let unary = |ctx: &Ctx, op: Op| -> R<Option<Lowered>> { Ok(Some(L(op, vec![req(ctx, n, 0)?]))) };
    Ok(Some(match op_type {
        "Conv" | "ConvTranspose" => {
            let (xv, w) = (x(ctx)?, req(ctx, n, 1)?);
            let xs = shape(ctx, n, xv)?;
            let ws = shape(ctx, n, w)?;
            if ws.len() < 3 || xs.len() != ws.len() {
                return n.err(format!("weight shape {ws:?} does not fit input shape {xs:?}"));
            }
            let nsp = ws.len() - 2;
            let kernel: Vec<i64> = ws[2..].iter().map(|d| *d as i64).collect();
            if let Some(k) = n.ints("kernel_shape") {
                if k != kernel {
                    return n.err(format!("kernel_shape {k:?} differs from the weight's {kernel:?}"));
                }
            }
            let strides = n.ints("strides").unwrap_or_else(|| ones(nsp));
            let dilations = n.ints("dilations").unwrap_or_else(|| ones(nsp));
            if strides.len() != nsp || dilations.len() != nsp || strides.iter().chain(&dilations).any(|v| *v < 1) {
                return n.err("strides and dilations need one positive entry per spatial axis");
            }
            let group = n.int("group", 1);
            let mut ins = vec![xv, w];
            ins.extend(input(ctx, n, 2)?);
            if op_type == "Conv" {
                let pads = resolve_pads(n, &xs[2..], &kernel, &strides, &dilations)?;
                L(Op::Conv { strides, pads, dilations, group, act: None }, ins)
            } else {
                let output_padding = n.ints("output_padding").unwrap_or_else(|| vec![0; nsp]);
                if output_padding.len() != nsp {
                    return n.err("output_padding needs one entry per spatial axis");
                }
                let auto = n.string("auto_pad", "NOTSET");
                let out_shape = n.ints("output_shape").map(|o| o[o.len().saturating_sub(nsp)..].to_vec()).or_else(|| {
                    (auto == "SAME_UPPER" || auto == "SAME_LOWER").then(|| (0..nsp).map(|i| xs[2 + i] as i64 * strides[i]).collect())
                });
                let pads = match out_shape {
                    Some(os) if os.len() == nsp => {
                        let mut p = vec![0; 2 * nsp];
                        for i in 0..nsp {
                            let total =
                                strides[i] * (xs[2 + i] as i64 - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1 - os[i];
                            // The spec's integer division floors (a negative total extends the output).
                            let half = total.div_euclid(2);
                            let (b, e) = if auto == "SAME_UPPER" { (half, total - half) } else { (total - half, half) };
                            p[i] = b;
                            p[nsp + i] = e;
                        }
                        p
                    }
                    Some(_) => return n.err("output_shape needs one entry per spatial axis"),
                    None if auto == "VALID" => vec![0; 2 * nsp],
                    None => n.ints("pads").unwrap_or_else(|| vec![0; 2 * nsp]),
                };
                L(Op::ConvTranspose { strides, pads, dilations, group, output_padding }, ins)
            }
        }
        "Gemm" => {
            let mut ins = vec![x(ctx)?, req(ctx, n, 1)?];
            ins.extend(input(ctx, n, 2)?);
            L(
                Op::Gemm {
                    alpha: n.float("alpha", 1.0),
                    beta: n.float("beta", 1.0),
                    trans_a: n.int("transA", 0) != 0,
                    trans_b: n.int("transB", 0) != 0,
                    act: None,
                },
                ins,
            )
        }
        "MatMul" => L(Op::MatMul, vec![x(ctx)?, req(ctx, n, 1)?]),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" => {
            let op = match op_type {
                "Less" => Op::Less,
                "Greater" => Op::Greater,
                "LessOrEqual" => Op::LessOrEqual,
                "GreaterOrEqual" => Op::GreaterOrEqual,
                "Add" => Op::Add,
                "Sub" => Op::Sub,
                "Mul" => Op::Mul,
                "Div" => Op::Div,
                "Pow" => Op::Pow,
                _ => Op::Equal,
            };
            L(op, vec![x(ctx)?, req(ctx, n, 1)?])
        }
        "Max" | "Min" => {
            let ins = all_inputs(ctx)?;
            if ins.is_empty() {
                return n.err("needs at least one input");
            }
            L(if op_type == "Max" { Op::Max } else { Op::Min }, ins)
        }
        "Where" => L(Op::Where, vec![x(ctx)?, req(ctx, n, 1)?, req(ctx, n, 2)?]),
        "Relu" => return unary(ctx, Op::Relu),
        "LeakyRelu" => return unary(ctx, Op::LeakyRelu { alpha: n.float("alpha", 0.01) }),
        "Sigmoid" => return unary(ctx, Op::Sigmoid),
        "HardSigmoid" => return unary(ctx, Op::HardSigmoid { alpha: n.float("alpha", 0.2), beta: n.float("beta", 0.5) }),
        "HardSwish" => return unary(ctx, Op::HardSwish),
        "Tanh" => return unary(ctx, Op::Tanh),
        "Erf" => return unary(ctx, Op::Erf),
        "Sqrt" => return unary(ctx, Op::Sqrt),
        "Exp" => return unary(ctx, Op::Exp),
        "Identity" => return unary(ctx, Op::Identity),
        "Elu" => return unary(ctx, Op::Elu { alpha: n.float("alpha", 1.0) }),
        "Selu" => {
            return unary(ctx, Op::Selu { alpha: n.float("alpha", 1.673_263_2), gamma: n.float("gamma", 1.050_701) });
        }
        "Celu" => return unary(ctx, Op::Celu { alpha: n.float("alpha", 1.0) }),
        "Softplus" => return unary(ctx, Op::Softplus),
        "Softsign" => return unary(ctx, Op::Softsign),
        "Mish" => return unary(ctx, Op::Mish),
        "Gelu" => {
            let tanh = match n.string("approximate", "none").as_str() {
                "none" => false,
                "tanh" => true,
                other => return n.err(format!("approximate={other:?} is not supported (none, tanh)")),
            };
            return unary(ctx, Op::Gelu { tanh });
        }
        "Neg" => return unary(ctx, Op::Neg),
        "Not" => return unary(ctx, Op::Not),
        "ConstantOfShape" => {
            let dims = known_ints(ctx, n, 0, "shape")?.ok_or(()).or_else(|_| n.err("the shape must be known at compile time"))?;
            if dims.iter().any(|d| *d < 0) {
                return n.err(format!("shape {dims:?} has a negative dimension"));
            }
            let fill = match n.attr("value").and_then(|a| a.t.as_ref()) {
                Some(t) => tensor_from_proto(t, None).or_else(|e| n.err(e.to_string()))?,
                None => Tensor::from_f32(&[1], vec![0.0]).expect("one value"),
            };
            if fill.len() != 1 {
                return n.err("value must hold one element");
            }
            // The one value broadcast to the shape: canonicalize folds it into a constant.
            let c = ctx.g.add_const(fill, None);
            if dims.is_empty() {
                L(Op::Reshape { shape: vec![] }, vec![c])
            } else {
                L(Op::Expand { shape: dims }, vec![c])
            }
        }
        "Abs" => return unary(ctx, Op::Abs),
        "Reciprocal" => return unary(ctx, Op::Reciprocal),
        "Log" => return unary(ctx, Op::Log),
        "Floor" => return unary(ctx, Op::Floor),
        "Ceil" => return unary(ctx, Op::Ceil),
        "Sum" | "Mean" => {
            let ins = all_inputs(ctx)?;
            let Some((&first, rest)) = ins.split_first() else { return n.err("needs at least one input") };
            if rest.is_empty() {
                return unary(ctx, Op::Identity);
            }
            let mut acc = first;
            for &v in rest {
                acc = add(ctx, n, Op::Add, vec![acc, v], Type::Unknown)?;
            }
            if op_type == "Sum" {
                return Ok(Some(Lowered::Value(acc)));
            }
            let count = ctx.g.add_const(Tensor::from_f32(&[], vec![ins.len() as f32]).expect("scalar"), None);
            L(Op::Div, vec![acc, count])
        }
        "PRelu" => {
            let (xv, slope) = (x(ctx)?, req(ctx, n, 1)?);
            // One slope for every channel (PyTorch's nn.PReLU() default) is a LeakyRelu, which fuses
            // into the convolution before it.
            let fits = |s: &[usize]| {
                qcc_ir::infer::broadcast_shapes(&[ctx.g.ty(xv).shape().unwrap_or(&[]), s]).ok().as_deref() == ctx.g.ty(xv).shape()
            };
            if let Some(v) = ctx.known(slope).filter(|t| t.dtype() == DType::F32 && fits(t.shape())).map(|t| t.to_f32_vec()) {
                if v.first().is_some_and(|a| v.iter().all(|b| b.to_bits() == a.to_bits())) {
                    return unary(ctx, Op::LeakyRelu { alpha: v[0] });
                }
            }
            // Otherwise max(x, 0) + slope · min(x, 0): exactly x or slope · x for every x.
            let zero = ctx.g.add_const(Tensor::from_f32(&[], vec![0.0]).expect("scalar"), None);
            let pos = add(ctx, n, Op::Max, vec![xv, zero], Type::Unknown)?;
            let neg = add(ctx, n, Op::Min, vec![xv, zero], Type::Unknown)?;
            let scaled = add(ctx, n, Op::Mul, vec![slope, neg], Type::Unknown)?;
            if ctx.g.ty(scaled).shape() != ctx.g.ty(xv).shape() {
                return n.err("slope must broadcast to the input's shape");
            }
            L(Op::Add, vec![pos, scaled])
        }
        "GlobalMaxPool" => {
            let xv = x(ctx)?;
            let r = shape(ctx, n, xv)?.len();
            if r < 3 {
                return n.err("input must have rank >= 3");
            }
            L(Op::ReduceMax { axes: (2..r as i64).collect(), keepdims: true }, vec![xv])
        }
        "ArgMax" | "ArgMin" => {
            let (axis, keepdims, last) = (n.int("axis", 0), n.int("keepdims", 1) != 0, n.int("select_last_index", 0) != 0);
            L(if op_type == "ArgMax" { Op::ArgMax { axis, keepdims, last } } else { Op::ArgMin { axis, keepdims, last } }, vec![x(ctx)?])
        }
        "LRN" => {
            let size = n.int("size", 0);
            if size < 1 {
                return n.err("size must be a positive integer");
            }
            L(Op::Lrn { size, alpha: n.float("alpha", 1e-4), beta: n.float("beta", 0.75), bias: n.float("bias", 1.0) }, vec![x(ctx)?])
        }
        "InstanceNormalization" => {
            L(Op::InstanceNorm { epsilon: n.float("epsilon", 1e-5) }, vec![x(ctx)?, req(ctx, n, 1)?, req(ctx, n, 2)?])
        }
        "LogSoftmax" => {
            // x − max − log(Σ exp(x − max)) over the axis (before opset 13: over every axis from it on).
            let xv = x(ctx)?;
            let r = shape(ctx, n, xv)?.len();
            let axis = norm_axis(n.int("axis", if n.opset < 13 { 1 } else { -1 }), r).or_else(|e| n.err(e))? as i64;
            let axes: Vec<i64> = if n.opset < 13 { (axis..r as i64).collect() } else { vec![axis] };
            let m = add(ctx, n, Op::ReduceMax { axes: axes.clone(), keepdims: true }, vec![xv], Type::Unknown)?;
            let t = add(ctx, n, Op::Sub, vec![xv, m], Type::Unknown)?;
            let e = add(ctx, n, Op::Exp, vec![t], Type::Unknown)?;
            let s = add(ctx, n, Op::ReduceSum { axes, keepdims: true }, vec![e], Type::Unknown)?;
            let l = add(ctx, n, Op::Log, vec![s], Type::Unknown)?;
            L(Op::Sub, vec![t, l])
        }
        "CastLike" => {
            let (xv, like) = (x(ctx)?, req(ctx, n, 1)?);
            let to = ctx.g.ty(like).dtype().ok_or(()).or_else(|_| n.err("the target's type is unknown"))?;
            L(Op::Cast { to }, vec![xv])
        }
        "Size" => {
            let xv = x(ctx)?;
            let numel = shape(ctx, n, xv)?.iter().product::<usize>() as i64;
            return Ok(Some(Lowered::Value(ctx.g.add_const(Tensor::from_i64(&[], vec![numel]).expect("scalar"), None))));
        }
        "DepthToSpace" | "SpaceToDepth" => return lower_depth_space(ctx, n, op_type == "DepthToSpace").map(Some),
        "Upsample" => {
            let xv = x(ctx)?;
            let xs = shape(ctx, n, xv)?;
            let scales = if n.opset < 9 { n.floats("scales") } else { known_floats(ctx, n, 1, "scales")? };
            let scales = scales.ok_or(()).or_else(|_| n.err("scales are required"))?;
            if scales.len() != xs.len() || scales.iter().any(|s| *s <= 0.0) {
                return n.err(format!("scales {scales:?} need one positive entry per axis of {xs:?}"));
            }
            let m = n.string("mode", "nearest");
            let mode = match m.as_str() {
                "nearest" => ResizeMode::Nearest,
                "linear" | "bilinear" => ResizeMode::Linear,
                _ => return n.err(format!("mode {m:?} is not supported (nearest, linear)")),
            };
            let sizes: Vec<i64> = xs.iter().zip(&scales).map(|(d, s)| (*d as f32 * s).floor() as i64).collect();
            if sizes.iter().any(|s| *s <= 0) {
                return n.err(format!("output size {sizes:?} is empty"));
            }
            // Upsample is Resize with asymmetric coordinates and floor rounding (its opset-10 replacement).
            L(Op::Resize { mode, coord: CoordTransform::Asymmetric, nearest: NearestMode::Floor, scales, sizes }, vec![xv])
        }
        "Clip" => {
            let (min, max) = if n.opset < 11 {
                (n.float("min", f32::NEG_INFINITY), n.float("max", f32::INFINITY))
            } else {
                let one = |i: usize, what: &str, d: f32| -> R<f32> {
                    match known_floats(ctx, n, i, what)? {
                        None => Ok(d),
                        Some(v) if v.len() == 1 => Ok(v[0]),
                        Some(_) => n.err(format!("{what} must be a scalar")),
                    }
                };
                (one(1, "min", f32::NEG_INFINITY)?, one(2, "max", f32::INFINITY)?)
            };
            L(Op::Clip { min, max }, vec![x(ctx)?])
        }
        "BatchNormalization" => {
            n.require_int("training_mode", 0, 0)?;
            n.require_int("spatial", 1, 1)?;
            let ins = (0..5).map(|i| req(ctx, n, i)).collect::<R<Vec<_>>>()?;
            L(Op::BatchNorm { epsilon: n.float("epsilon", 1e-5) }, ins)
        }
        "MaxPool" | "AveragePool" => {
            let xv = x(ctx)?;
            let xs = shape(ctx, n, xv)?;
            let Some(kernel) = n.ints("kernel_shape") else {
                return n.err("kernel_shape is required");
            };
            let nsp = kernel.len();
            if xs.len() != nsp + 2 {
                return n.err(format!("kernel_shape {kernel:?} does not fit input shape {xs:?}"));
            }
            let strides = n.ints("strides").unwrap_or_else(|| ones(nsp));
            let dilations = n.ints("dilations").unwrap_or_else(|| ones(nsp));
            if strides.len() != nsp || dilations.len() != nsp || strides.iter().chain(&dilations).chain(&kernel).any(|v| *v < 1) {
                return n.err("kernel_shape, strides and dilations need one positive entry per spatial axis");
            }
            let pads = resolve_pads(n, &xs[2..], &kernel, &strides, &dilations)?;
            let ceil_mode = n.int("ceil_mode", 0) != 0;
            if op_type == "MaxPool" {
                n.require_int("storage_order", 0, 0)?;
                L(Op::MaxPool { kernel, strides, pads, dilations, ceil_mode }, vec![xv])
            } else {
                L(
                    Op::AveragePool { kernel, strides, pads, dilations, ceil_mode, count_include_pad: n.int("count_include_pad", 0) != 0 },
                    vec![xv],
                )
            }
        }
        "GlobalAveragePool" => return unary(ctx, Op::GlobalAveragePool),
        "Flatten" => return unary(ctx, Op::Flatten { axis: n.int("axis", 1) }),
        "Reshape" => {
            let xv = x(ctx)?;
            let xs = shape(ctx, n, xv)?;
            let target = known_ints(ctx, n, 1, "shape")?.ok_or(()).or_else(|_| n.err("shape input is required"))?;
            let allowzero = n.int("allowzero", 0) != 0;
            let mut out: Vec<i64> = Vec::new();
            let mut infer_at = None;
            for (i, &d) in target.iter().enumerate() {
                match d {
                    0 if !allowzero => {
                        out.push(*xs.get(i).ok_or(()).or_else(|_| n.err(format!("shape {target:?}: 0 copies a missing dimension")))? as i64)
                    }
                    -1 if infer_at.is_none() => {
                        infer_at = Some(i);
                        out.push(1);
                    }
                    d if d >= 0 => out.push(d),
                    _ => return n.err(format!("invalid shape {target:?}")),
                }
            }
            let total: i64 = xs.iter().product::<usize>() as i64;
            if let Some(i) = infer_at {
                let rest: i64 = out.iter().product();
                if rest == 0 || total % rest != 0 {
                    return n.err(format!("cannot reshape {xs:?} to {target:?}"));
                }
                out[i] = total / rest;
            }
            L(Op::Reshape { shape: out }, vec![xv])
        }
        "Transpose" => {
            let xv = x(ctx)?;
            let r = shape(ctx, n, xv)?.len() as i64;
            let perm = n.ints("perm").unwrap_or_else(|| (0..r).rev().collect());
            L(Op::Transpose { perm }, vec![xv])
        }
        "Concat" => {
            let ins = all_inputs(ctx)?;
            let Some(&first) = ins.first() else {
                return n.err("needs at least one input");
            };
            let Some(a) = n.attr("axis") else {
                return n.err("axis is required");
            };
            let axis = norm_axis(a.i(), shape(ctx, n, first)?.len()).or_else(|e| n.err(e))? as i64;
            L(Op::Concat { axis }, ins)
        }
        "Pad" => {
            let xv = x(ctx)?;
            let r = shape(ctx, n, xv)?.len();
            let mode = n.string("mode", "constant");
            let mode = PadMode::parse(&mode).ok_or(()).or_else(|_| n.err(format!("unknown pad mode {mode:?}")))?;
            let (pads, value) = if n.opset < 11 {
                (n.ints("pads").unwrap_or_default(), n.float("value", 0.0))
            } else {
                let p = known_ints(ctx, n, 1, "pads")?.unwrap_or_default();
                let v = match known_floats(ctx, n, 2, "constant_value")? {
                    Some(v) if v.len() == 1 => v[0],
                    Some(_) => return n.err("constant_value must be a scalar"),
                    None => 0.0,
                };
                let p = match known_ints(ctx, n, 3, "axes")? {
                    None => p,
                    Some(axes) => {
                        if p.len() != 2 * axes.len() {
                            return n.err("pads must have two entries per axis");
                        }
                        let mut full = vec![0; 2 * r];
                        for (i, a) in axes.iter().enumerate() {
                            let a = norm_axis(*a, r).or_else(|e| n.err(e))?;
                            full[a] = p[i];
                            full[r + a] = p[axes.len() + i];
                        }
                        full
                    }
                };
                (p, v)
            };
            if pads.len() != 2 * r {
                return n.err(format!("pads has {} entries, expected {}", pads.len(), 2 * r));
            }
            L(Op::Pad { mode, pads, value }, vec![xv])
        }
        "Squeeze" | "Unsqueeze" => {
            let xv = x(ctx)?;
            let xs = shape(ctx, n, xv)?;
            let axes = if n.opset < 13 { n.ints("axes") } else { known_ints(ctx, n, 1, "axes")? };
            if op_type == "Squeeze" {
                let axes = match axes {
                    Some(a) => {
                        a.iter().map(|a| norm_axis(*a, xs.len()).map(|a| a as i64)).collect::<Result<Vec<_>, _>>().or_else(|e| n.err(e))?
                    }
                    None => (0..xs.len()).filter(|i| xs[*i] == 1).map(|i| i as i64).collect(),
                };
                L(Op::Squeeze { axes }, vec![xv])
            } else {
                let Some(axes) = axes else {
                    return n.err("axes are required");
                };
                let r = xs.len() + axes.len();
                let axes = axes.iter().map(|a| norm_axis(*a, r).map(|a| a as i64)).collect::<Result<Vec<_>, _>>().or_else(|e| n.err(e))?;
                L(Op::Unsqueeze { axes }, vec![xv])
            }
        }
        "Constant" => {
            let a = n.n.attribute.first().ok_or(()).or_else(|_| n.err("has no value"))?;
            let t = match a.name() {
                "value" => tensor_from_proto(a.t.as_ref().ok_or(()).or_else(|_| n.err("value is not a tensor"))?, None)
                    .or_else(|e| n.err(e.to_string()))?,
                "value_float" => Tensor::from_f32(&[], vec![a.f()]).expect("scalar"),
                "value_floats" => Tensor::from_f32(&[a.floats.len()], a.floats.clone()).expect("vector"),
                "value_int" => Tensor::from_i64(&[], vec![a.i()]).expect("scalar"),
                "value_ints" => Tensor::from_i64(&[a.ints.len()], a.ints.clone()).expect("vector"),
                other => return n.err(format!("constant attribute {other} is not supported")),
            };
            let name = n.n.output.first().cloned().unwrap_or_default();
            return Ok(Some(Lowered::Value(ctx.g.add_const(t, Some(name)))));
        }
        "Dropout" => {
            if let Some(t) = known_ints(ctx, n, 2, "training_mode")? {
                if t.iter().any(|v| *v != 0) {
                    return n.err("training_mode=true is not supported (inference only)");
                }
            } else if input(ctx, n, 2)?.is_some() {
                return n.err("training_mode must be constant");
            }
            L(Op::Dropout, vec![x(ctx)?])
        }
        "Softmax" => {
            let coerce_2d = n.opset < 13;
            L(Op::Softmax { axis: n.int("axis", if coerce_2d { 1 } else { -1 }), coerce_2d }, vec![x(ctx)?])
        }
        "Resize" => return lower_resize(ctx, n).map(Some),
        "Shape" => {
            let xv = x(ctx)?;
            let r = shape(ctx, n, xv)?.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r);
            let start = clampi(n.int("start", 0));
            let end = clampi(n.int("end", r)).max(start);
            L(Op::Shape { start, end }, vec![xv])
        }
        "Gather" => L(Op::Gather { axis: n.int("axis", 0) }, vec![x(ctx)?, req(ctx, n, 1)?]),
        "Slice" => {
            let xv = x(ctx)?;
            let r = shape(ctx, n, xv)?.len();
            let (starts, ends, axes, steps) = if n.opset < 10 {
                (n.ints("starts").unwrap_or_default(), n.ints("ends").unwrap_or_default(), n.ints("axes"), None)
            } else {
                (
                    known_ints(ctx, n, 1, "starts")?.unwrap_or_default(),
                    known_ints(ctx, n, 2, "ends")?.unwrap_or_default(),
                    known_ints(ctx, n, 3, "axes")?,
                    known_ints(ctx, n, 4, "steps")?,
                )
            };
            let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let axes = axes.iter().map(|a| norm_axis(*a, r).map(|a| a as i64)).collect::<Result<Vec<_>, _>>().or_else(|e| n.err(e))?;
            let steps = steps.unwrap_or_else(|| ones(starts.len()));
            L(Op::Slice { starts, ends, axes, steps }, vec![xv])
        }
        "Cast" => {
            let code = n.int("to", 0) as i32;
            let to = dtype_from_onnx(code).ok_or(()).or_else(|_| n.err(format!("cast to {} is not supported", onnx_type_name(code))))?;
            L(Op::Cast { to }, vec![x(ctx)?])
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceL1" | "ReduceL2" | "ReduceSumSquare" => {
            let mut xv = x(ctx)?;
            let r = shape(ctx, n, xv)?.len();
            let axes_as_input = if op_type == "ReduceSum" { n.opset >= 13 } else { n.opset >= 18 };
            let axes = if axes_as_input { known_ints(ctx, n, 1, "axes")? } else { n.ints("axes") }.unwrap_or_default();
            if axes.is_empty() && n.int("noop_with_empty_axes", 0) != 0 {
                return unary(ctx, Op::Identity);
            }
            let axes = axes.iter().map(|a| norm_axis(*a, r).map(|a| a as i64)).collect::<Result<Vec<_>, _>>().or_else(|e| n.err(e))?;
            let keepdims = n.int("keepdims", 1) != 0;
            // The norms are sums of |x| or x²; ReduceL2 takes the square root of the sum of squares.
            match op_type {
                "ReduceL1" => xv = add(ctx, n, Op::Abs, vec![xv], Type::Unknown)?,
                "ReduceL2" | "ReduceSumSquare" => xv = add(ctx, n, Op::Mul, vec![xv, xv], Type::Unknown)?,
                _ => {}
            }
            let op = match op_type {
                "ReduceMean" => Op::ReduceMean { axes, keepdims },
                "ReduceMax" => Op::ReduceMax { axes, keepdims },
                "ReduceMin" => Op::ReduceMin { axes, keepdims },
                _ => Op::ReduceSum { axes, keepdims },
            };
            if op_type == "ReduceL2" {
                let sum = add(ctx, n, op, vec![xv], Type::Unknown)?;
                return Ok(Some(L(Op::Sqrt, vec![sum])));
            }
            L(op, vec![xv])
        }
        "Expand" => {
            let xv = x(ctx)?;
            let s = known_ints(ctx, n, 1, "shape")?.ok_or(()).or_else(|_| n.err("shape input is required"))?;
            L(Op::Expand { shape: s }, vec![xv])
        }
        "LayerNormalization" => {
            let mut ins = vec![x(ctx)?, req(ctx, n, 1)?];
            ins.extend(input(ctx, n, 2)?);
            L(Op::LayerNorm { axis: n.int("axis", -1), epsilon: n.float("epsilon", 1e-5) }, ins)
        }
        "QuantizeLinear" | "DequantizeLinear" => return lower_qdq(ctx, n, op_type == "QuantizeLinear").map(Some),
        _ => return Ok(None),
    }))
}

/// DepthToSpace (DCR or CRD order) and SpaceToDepth on [N, C, H, W]: a reshape to six dims, a transpose
/// and a reshape back.
fn lower_depth_space(ctx: &mut Ctx, n: &N, to_space: bool) -> R<Lowered> {
    let xv = req(ctx, n, 0)?;
    let xs = shape(ctx, n, xv)?;
    let b = n.int("blocksize", 0);
    let [bn, c, h, w] = xs.iter().map(|d| *d as i64).collect::<Vec<_>>()[..] else { return n.err("input must be 4-D") };
    // A block larger than every dimension fits nothing (and keeps b² and the products below in range).
    if b < 1 || b > c.max(h).max(w) {
        return n.err(format!("blocksize {b} does not fit input shape {xs:?}"));
    }
    let (six, perm, out) = if to_space {
        if c % (b * b) != 0 {
            return n.err(format!("channels ({c}) are not a multiple of blocksize² ({})", b * b));
        }
        let cb = c / (b * b);
        match n.string("mode", "DCR").as_str() {
            "DCR" => (vec![bn, b, b, cb, h, w], vec![0, 3, 4, 1, 5, 2], vec![bn, cb, h * b, w * b]),
            "CRD" => (vec![bn, cb, b, b, h, w], vec![0, 1, 4, 2, 5, 3], vec![bn, cb, h * b, w * b]),
            m => return n.err(format!("mode {m:?} is not supported (DCR, CRD)")),
        }
    } else {
        if h % b != 0 || w % b != 0 {
            return n.err(format!("height and width ({h}, {w}) are not multiples of blocksize ({b})"));
        }
        (vec![bn, c, h / b, b, w / b, b], vec![0, 3, 5, 1, 2, 4], vec![bn, c * b * b, h / b, w / b])
    };
    let r = add(ctx, n, Op::Reshape { shape: six }, vec![xv], Type::Unknown)?;
    let t = add(ctx, n, Op::Transpose { perm }, vec![r], Type::Unknown)?;
    Ok(Lowered::Node(Op::Reshape { shape: out }, vec![t]))
}

fn lower_resize(ctx: &mut Ctx, n: &N) -> R<Lowered> {
    let xv = req(ctx, n, 0)?;
    let xs = shape(ctx, n, xv)?;
    let r = xs.len();
    let mode = n.string("mode", "nearest");
    let mode = ResizeMode::parse(&mode).ok_or(()).or_else(|_| n.err(format!("mode {mode:?} is not supported (nearest, linear)")))?;
    if n.int("antialias", 0) != 0 || n.int("exclude_outside", 0) != 0 {
        return n.err("antialias and exclude_outside are not supported");
    }
    if n.string("keep_aspect_ratio_policy", "stretch") != "stretch" {
        return n.err("keep_aspect_ratio_policy other than stretch is not supported");
    }
    let (coord, nearest, scales_in, sizes_in) = if n.opset < 11 {
        (CoordTransform::Asymmetric, NearestMode::Floor, known_floats(ctx, n, 1, "scales")?, None)
    } else {
        let c = n.string("coordinate_transformation_mode", "half_pixel");
        let coord =
            CoordTransform::parse(&c).ok_or(()).or_else(|_| n.err(format!("coordinate_transformation_mode {c:?} is not supported")))?;
        let nm = n.string("nearest_mode", "round_prefer_floor");
        let nearest = NearestMode::parse(&nm).ok_or(()).or_else(|_| n.err(format!("nearest_mode {nm:?} is not supported")))?;
        let scales = known_floats(ctx, n, 2, "scales")?.filter(|s| !s.is_empty());
        let sizes = known_ints(ctx, n, 3, "sizes")?.filter(|s| !s.is_empty());
        (coord, nearest, scales, sizes)
    };
    let axes: Vec<usize> = match n.ints("axes") {
        Some(a) => a.iter().map(|a| norm_axis(*a, r)).collect::<Result<_, _>>().or_else(|e| n.err(e))?,
        None => (0..r).collect(),
    };
    let mut scales = vec![1.0f32; r];
    let mut sizes: Vec<i64> = xs.iter().map(|d| *d as i64).collect();
    match (scales_in, sizes_in) {
        (Some(s), None) if s.len() == axes.len() => {
            for (i, a) in axes.iter().enumerate() {
                if s[i] <= 0.0 {
                    return n.err("scales must be positive");
                }
                scales[*a] = s[i];
                sizes[*a] = (xs[*a] as f32 * s[i]).floor() as i64;
            }
        }
        (None, Some(z)) if z.len() == axes.len() => {
            for (i, a) in axes.iter().enumerate() {
                sizes[*a] = z[i];
                scales[*a] = z[i] as f32 / xs[*a] as f32;
            }
        }
        _ => return n.err("exactly one of scales and sizes must be given, with one entry per axis"),
    }
    if sizes.iter().any(|s| *s <= 0) {
        return n.err(format!("output size {sizes:?} is empty"));
    }
    Ok(Lowered::Node(Op::Resize { mode, coord, nearest, scales, sizes }, vec![xv]))
}

/// QuantizeLinear and DequantizeLinear: scale and zero point must be constants; they move into types.
fn lower_qdq(ctx: &mut Ctx, n: &N, quantize: bool) -> R<Lowered> {
    if let Some((x, s, z)) = n.n.input.first().and_then(|y| ctx.dynamic.get(y)).cloned() {
        if quantize || n.n.input.get(1) != Some(&s) || n.n.input.get(2) != Some(&z) {
            return n.err("reads a DynamicQuantizeLinear output other than as DequantizeLinear with its own scale and zero point");
        }
        return Ok(Lowered::Node(Op::DynamicQdq, vec![x]));
    }
    let xv = req(ctx, n, 0)?;
    let xs = shape(ctx, n, xv)?;
    if n.int("block_size", 0) != 0 {
        return n.err("blocked quantization is not supported");
    }
    let scales = known_floats(ctx, n, 1, "scale")?.ok_or(()).or_else(|_| n.err("scale is required"))?;
    let zp_v = input(ctx, n, 2)?;
    let (storage, zps) = match zp_v {
        Some(v) => {
            let t = ctx.known(v).ok_or(()).or_else(|_| n.err("zero point must be constant"))?;
            (t.dtype(), t.to_i64_vec().unwrap_or_default())
        }
        None if quantize => {
            let code = n.int("output_dtype", 0) as i32;
            let d = if code == 0 { DType::U8 } else { dtype_from_onnx(code).ok_or(()).or_else(|_| n.err("unsupported output_dtype"))? };
            (d, vec![0; scales.len()])
        }
        None => (ctx.g.ty(xv).dtype().unwrap_or(DType::U8), vec![0; scales.len()]),
    };
    if !matches!(storage, DType::U8 | DType::I8 | DType::I16 | DType::I32) {
        return n.err(format!("quantized type {storage} is not supported"));
    }
    if zps.len() != scales.len() {
        return n.err("scale and zero point have different lengths");
    }
    let params = if scales.len() == 1 {
        QParams::PerTensor { scale: scales[0], zp: zps[0] as i32 }
    } else {
        let axis = norm_axis(n.int("axis", 1), xs.len()).or_else(|e| n.err(e))?;
        QParams::PerAxis { axis, scales, zps: zps.iter().map(|z| *z as i32).collect() }
    };
    let q = QuantType::new(storage, params);
    let qty = Type::Tensor { elem: ElemType::Q(q), shape: xs.clone() };
    if let Err(e) = qcc_ir::verify::check_type(&qty) {
        return n.err(e);
    }
    if quantize {
        return Ok(Lowered::Typed(Op::Quantize, vec![xv], qty));
    }
    // Dequantize: the input must carry these parameters. A constant is retyped; a quantize output must match.
    let xt = ctx.g.ty(xv).clone();
    let src = if let Some(t) = ctx.g.const_tensor(xv) {
        if t.dtype() != storage {
            return n.err(format!("input is {} but the zero point is {storage}", t.dtype()));
        }
        let t = t.clone();
        let name = ctx.g.value(xv).name.clone();
        ctx.g.add_const_typed(ConstData::Data(t), qty, name)
    } else if xt == qty {
        xv
    } else if matches!(ctx.g.value(xv).def, qcc_ir::ValueDef::Input) && xt.dtype() == Some(storage) && xt.quant().is_none() {
        // A graph input of plain integers: it is this quantized type.
        ctx.g.value_mut(xv).ty = qty;
        xv
    } else {
        return n.err(format!("input type {xt} does not carry this node's scale and zero point"));
    };
    Ok(Lowered::Node(Op::Dequantize, vec![src]))
}
