//! IR → ONNX (opset 17). Float ops map back to their ONNX op; integer ops expand to the QDQ form ONNX
//! Runtime and other tools read: DequantizeLinear of each input, the float op (and its fused activation),
//! QuantizeLinear of the result. Scales and zero points become initializers.
use crate::onnx::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::tensor::{dtype_to_onnx, tensor_to_proto};
use prost::Message;
use qcc_ir::{Act, DType, Graph, NodeId, Op, QParams, QuantType, Tensor, Type, ValueId};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
#[error("cannot export node \"{node}\" ({op}) to ONNX: {msg}")]
pub struct ExportError {
    pub node: String,
    pub op: String,
    pub msg: String,
}

const OPSET: i64 = 17;

struct Ex<'g> {
    g: &'g Graph,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    names: HashMap<ValueId, String>,
    /// Float (dequantized) names of quantized values, made once per value.
    dq: HashMap<ValueId, String>,
    counter: usize,
}

fn attr_i(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Int as i32), i: Some(v), ..Default::default() }
}
fn attr_f(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Float as i32), f: Some(v), ..Default::default() }
}
fn attr_is(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Ints as i32), ints: v.to_vec(), ..Default::default() }
}
fn attr_s(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn value_info(name: &str, t: &Type) -> ValueInfoProto {
    let (dt, shape) = (t.dtype().unwrap_or(DType::F32), t.shape().unwrap_or(&[]).to_vec());
    let dim = shape
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(*d as i64)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype_to_onnx(dt)),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl<'g> Ex<'g> {
    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}__{}", self.counter)
    }

    fn init(&mut self, hint: &str, t: &Tensor) -> String {
        let name = self.fresh(hint);
        self.inits.push(tensor_to_proto(t, &name));
        name
    }

    fn node(&mut self, op: &str, name: &str, ins: Vec<String>, out: String, attrs: Vec<AttributeProto>) -> String {
        let node_name = self.fresh(name);
        self.nodes.push(NodeProto {
            op_type: Some(op.into()),
            name: Some(node_name),
            input: ins,
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    /// Scale and zero-point initializers (and the axis attribute) of a quantized type.
    fn qparams(&mut self, q: &QuantType, hint: &str) -> (String, String, Vec<AttributeProto>) {
        let zp_tensor = |v: Vec<i64>, shape: &[usize]| -> Tensor {
            let bytes: Vec<u8> = match q.storage {
                DType::U8 => v.iter().map(|x| *x as u8).collect(),
                DType::I8 => v.iter().map(|x| *x as i8 as u8).collect(),
                DType::I16 => v.iter().flat_map(|x| (*x as i16).to_le_bytes()).collect(),
                _ => v.iter().flat_map(|x| (*x as i32).to_le_bytes()).collect(),
            };
            Tensor::from_le_bytes(q.storage, shape, &bytes).expect("zero point tensor")
        };
        match &q.params {
            QParams::PerTensor { scale, zp } => {
                let s = self.init(&format!("{hint}_scale"), &Tensor::from_f32(&[], vec![*scale]).expect("scalar"));
                let z = self.init(&format!("{hint}_zp"), &zp_tensor(vec![*zp as i64], &[]));
                (s, z, vec![])
            }
            QParams::PerAxis { axis, scales, zps } => {
                let s = self.init(&format!("{hint}_scale"), &Tensor::from_f32(&[scales.len()], scales.clone()).expect("vector"));
                let z = self.init(&format!("{hint}_zp"), &zp_tensor(zps.iter().map(|z| *z as i64).collect(), &[zps.len()]));
                (s, z, vec![attr_i("axis", *axis as i64)])
            }
            QParams::Calibrated { .. } => unreachable!("checked by the caller"),
        }
    }

    fn name_of(&mut self, v: ValueId) -> String {
        if let Some(n) = self.names.get(&v) {
            return n.clone();
        }
        let n = match self.g.const_tensor(v) {
            Some(t) => {
                let hint = self.g.value(v).name.clone().unwrap_or_else(|| "const".into());
                self.init(&hint, t)
            }
            None => self.fresh("v"),
        };
        self.names.insert(v, n.clone());
        n
    }

    /// The float version of value `v`: itself, or a DequantizeLinear of it.
    fn float_of(&mut self, v: ValueId) -> Result<String, String> {
        let Some(q) = self.g.ty(v).quant().cloned() else { return Ok(self.name_of(v)) };
        if let Some(n) = self.dq.get(&v) {
            return Ok(n.clone());
        }
        if matches!(q.params, QParams::Calibrated { .. }) {
            return Err("a calibrated range has no scale yet".into());
        }
        let src = self.name_of(v);
        let (s, z, attrs) = self.qparams(&q, &src);
        let out = self.fresh(&format!("{src}_dq"));
        self.node("DequantizeLinear", "dq", vec![src, s, z], out.clone(), attrs);
        self.dq.insert(v, out.clone());
        Ok(out)
    }

    fn act(&mut self, x: String, act: Option<Act>) -> String {
        let Some(a) = act else { return x };
        let out = self.fresh("act");
        self.act_to(x, a, out)
    }

    /// A node `op` without attributes writing a fresh value (named after `hint`), returned.
    fn tmp(&mut self, op: &str, hint: &str, ins: Vec<String>) -> String {
        let out = self.fresh(hint);
        self.node(op, hint, ins, out, vec![])
    }

    fn f32_scalar(&mut self, hint: &str, v: f32) -> String {
        self.init(hint, &Tensor::from_f32(&[], vec![v]).expect("scalar"))
    }

    /// Activation `a` of `x` into `out`; Gelu and Mish (opset 18 and 20 ops) as their opset-17 formulas.
    fn act_to(&mut self, x: String, a: Act, out: String) -> String {
        match a {
            Act::Relu => self.node("Relu", "relu", vec![x], out, vec![]),
            Act::Clip { min, max } => {
                let lo = self.init("clip_min", &Tensor::from_f32(&[], vec![min]).expect("scalar"));
                let hi = self.init("clip_max", &Tensor::from_f32(&[], vec![max]).expect("scalar"));
                self.node("Clip", "clip", vec![x, lo, hi], out, vec![])
            }
            Act::LeakyRelu { alpha } => self.node("LeakyRelu", "leaky", vec![x], out, vec![attr_f("alpha", alpha)]),
            Act::HardSigmoid { alpha, beta } => {
                self.node("HardSigmoid", "hsig", vec![x], out, vec![attr_f("alpha", alpha), attr_f("beta", beta)])
            }
            Act::HardSwish => self.node("HardSwish", "hswish", vec![x], out, vec![]),
            Act::Sigmoid => self.node("Sigmoid", "sigmoid", vec![x], out, vec![]),
            Act::Tanh => self.node("Tanh", "tanh", vec![x], out, vec![]),
            Act::Elu { alpha } => self.node("Elu", "elu", vec![x], out, vec![attr_f("alpha", alpha)]),
            Act::Selu { alpha, gamma } => self.node("Selu", "selu", vec![x], out, vec![attr_f("alpha", alpha), attr_f("gamma", gamma)]),
            Act::Celu { alpha } => self.node("Celu", "celu", vec![x], out, vec![attr_f("alpha", alpha)]),
            Act::Softplus => self.node("Softplus", "softplus", vec![x], out, vec![]),
            Act::Softsign => self.node("Softsign", "softsign", vec![x], out, vec![]),
            Act::Mish => {
                let sp = self.tmp("Softplus", "mish", vec![x.clone()]);
                let th = self.tmp("Tanh", "mish", vec![sp]);
                self.node("Mul", "mish", vec![x, th], out, vec![])
            }
            Act::Gelu { tanh } => {
                // 0.5 · x · (1 + erf(x / √2)), or with tanh(√(2/π) · (x + 0.044715 x³)).
                let inner = if tanh {
                    let x2 = self.tmp("Mul", "gelu", vec![x.clone(), x.clone()]);
                    let x3 = self.tmp("Mul", "gelu", vec![x2, x.clone()]);
                    let c = self.f32_scalar("gelu_c", 0.044715);
                    let t = self.tmp("Mul", "gelu", vec![x3, c]);
                    let u = self.tmp("Add", "gelu", vec![x.clone(), t]);
                    let k = self.f32_scalar("gelu_k", (2.0 / std::f32::consts::PI).sqrt());
                    let v = self.tmp("Mul", "gelu", vec![u, k]);
                    self.tmp("Tanh", "gelu", vec![v])
                } else {
                    let k = self.f32_scalar("gelu_k", std::f32::consts::FRAC_1_SQRT_2);
                    let v = self.tmp("Mul", "gelu", vec![x.clone(), k]);
                    self.tmp("Erf", "gelu", vec![v])
                };
                let one = self.f32_scalar("gelu_one", 1.0);
                let p = self.tmp("Add", "gelu", vec![inner, one]);
                let half = self.f32_scalar("gelu_half", 0.5);
                let h = self.tmp("Mul", "gelu", vec![x, half]);
                self.node("Mul", "gelu", vec![h, p], out, vec![])
            }
        }
    }

    fn i64_init(&mut self, hint: &str, v: &[i64]) -> String {
        self.init(hint, &Tensor::from_i64(&[v.len()], v.to_vec()).expect("vector"))
    }

    /// DynamicQuantizeLinear of `x` and DequantizeLinear of its three outputs into `out`.
    fn dynamic_qdq(&mut self, x: String, loc: &str, out: String) {
        let (q, s, z) = (self.fresh("xq"), self.fresh("xq_scale"), self.fresh("xq_zp"));
        let name = self.fresh("dynq");
        self.nodes.push(NodeProto {
            op_type: Some("DynamicQuantizeLinear".into()),
            name: Some(name),
            input: vec![x],
            output: vec![q.clone(), s.clone(), z.clone()],
            ..Default::default()
        });
        self.node("DequantizeLinear", loc, vec![q, s, z], out, vec![]);
    }

    fn export_node(&mut self, n: NodeId) -> Result<(), String> {
        let node = self.g.node(n).clone();
        let out_name = self.name_of(node.output);
        let out_ty = self.g.ty(node.output).clone();
        let loc = node.name().to_string();
        let kernel = |g: &Graph| -> Vec<i64> { g.ty(node.inputs[1]).shape().unwrap_or(&[])[2..].iter().map(|d| *d as i64).collect() };
        let quantize_to = |ex: &mut Ex, y: String| -> Result<(), String> {
            let q = out_ty.quant().cloned().ok_or("integer op without quantized output")?;
            let (s, z, attrs) = ex.qparams(&q, &out_name);
            ex.node("QuantizeLinear", &loc, vec![y, s, z], out_name.clone(), attrs);
            Ok(())
        };
        match &node.op {
            Op::Quantize => {
                let x = self.float_of(node.inputs[0])?;
                return quantize_to(self, x);
            }
            Op::Dequantize => {
                let q = self.g.ty(node.inputs[0]).quant().cloned().ok_or("dequantize of a float value")?;
                let src = self.name_of(node.inputs[0]);
                let (s, z, attrs) = self.qparams(&q, &src);
                self.node("DequantizeLinear", &loc, vec![src, s, z], out_name, attrs);
                return Ok(());
            }
            Op::DynamicQdq => {
                let x = self.name_of(node.inputs[0]);
                self.dynamic_qdq(x, &loc, out_name);
                return Ok(());
            }
            _ => {}
        }
        // Everything else maps to one ONNX op (plus a fused activation), on the values as they are; an
        // integer op becomes its float form on dequantized inputs, then a quantize.
        let (this_op, mut ins, target, quantized) = match (node.op.float_form(), node.op.dynamic_form()) {
            (Some((f, act)), _) => {
                let ins = node.inputs.iter().map(|v| self.float_of(*v)).collect::<Result<Vec<_>, _>>()?;
                (f, ins, self.fresh(node.op.name()), Some(act))
            }
            // A dynamic op reads its input through DynamicQuantizeLinear and DequantizeLinear.
            (None, Some(f)) => {
                let x = self.name_of(node.inputs[0]);
                let xd = self.fresh("xq_dq");
                self.dynamic_qdq(x, &loc, xd.clone());
                let mut ins = vec![xd, self.float_of(node.inputs[1])?];
                ins.extend(node.inputs.get(2).map(|b| self.name_of(*b)));
                (f, ins, out_name.clone(), None)
            }
            (None, None) => (node.op.clone(), node.inputs.iter().map(|v| self.name_of(*v)).collect(), out_name.clone(), None),
        };
        let (op, attrs, act): (&str, Vec<AttributeProto>, Option<Act>) = match &this_op {
            Op::Conv { strides, pads, dilations, group, act } => (
                "Conv",
                vec![
                    attr_is("strides", strides),
                    attr_is("pads", pads),
                    attr_is("dilations", dilations),
                    attr_i("group", *group),
                    attr_is("kernel_shape", &kernel(self.g)),
                ],
                *act,
            ),
            Op::ConvTranspose { strides, pads, dilations, group, output_padding } => (
                "ConvTranspose",
                vec![
                    attr_is("strides", strides),
                    attr_is("pads", pads),
                    attr_is("dilations", dilations),
                    attr_i("group", *group),
                    attr_is("output_padding", output_padding),
                ],
                None,
            ),
            Op::Gemm { alpha, beta, trans_a, trans_b, act } => (
                "Gemm",
                vec![attr_f("alpha", *alpha), attr_f("beta", *beta), attr_i("transA", *trans_a as i64), attr_i("transB", *trans_b as i64)],
                *act,
            ),
            Op::MatMul => ("MatMul", vec![], None),
            Op::Add => ("Add", vec![], None),
            Op::Sub => ("Sub", vec![], None),
            Op::Mul => ("Mul", vec![], None),
            Op::Div => ("Div", vec![], None),
            Op::Pow => ("Pow", vec![], None),
            Op::Max => ("Max", vec![], None),
            Op::Min => ("Min", vec![], None),
            Op::Equal => ("Equal", vec![], None),
            Op::Less => ("Less", vec![], None),
            Op::Greater => ("Greater", vec![], None),
            Op::LessOrEqual => ("LessOrEqual", vec![], None),
            Op::GreaterOrEqual => ("GreaterOrEqual", vec![], None),
            Op::Not => ("Not", vec![], None),
            Op::Where => ("Where", vec![], None),
            Op::Relu => ("Relu", vec![], None),
            Op::LeakyRelu { alpha } => ("LeakyRelu", vec![attr_f("alpha", *alpha)], None),
            Op::Sigmoid => ("Sigmoid", vec![], None),
            Op::HardSigmoid { alpha, beta } => ("HardSigmoid", vec![attr_f("alpha", *alpha), attr_f("beta", *beta)], None),
            Op::HardSwish => ("HardSwish", vec![], None),
            Op::Tanh => ("Tanh", vec![], None),
            Op::Erf => ("Erf", vec![], None),
            Op::Elu { .. } | Op::Selu { .. } | Op::Celu { .. } | Op::Softplus | Op::Softsign | Op::Gelu { .. } | Op::Mish => {
                let a = this_op.as_act().expect("an activation op");
                self.act_to(ins[0].clone(), a, out_name);
                return Ok(());
            }
            Op::Neg => ("Neg", vec![], None),
            Op::Abs => ("Abs", vec![], None),
            Op::Reciprocal => ("Reciprocal", vec![], None),
            Op::Log => ("Log", vec![], None),
            Op::Floor => ("Floor", vec![], None),
            Op::Ceil => ("Ceil", vec![], None),
            Op::Sqrt => ("Sqrt", vec![], None),
            Op::Exp => ("Exp", vec![], None),
            Op::Clip { min, max } => {
                let lo = self.init("clip_min", &Tensor::from_f32(&[], vec![*min]).expect("scalar"));
                let hi = self.init("clip_max", &Tensor::from_f32(&[], vec![*max]).expect("scalar"));
                ins.extend([lo, hi]);
                ("Clip", vec![], None)
            }
            Op::BatchNorm { epsilon } => ("BatchNormalization", vec![attr_f("epsilon", *epsilon)], None),
            Op::MaxPool { kernel, strides, pads, dilations, ceil_mode } => (
                "MaxPool",
                vec![
                    attr_is("kernel_shape", kernel),
                    attr_is("strides", strides),
                    attr_is("pads", pads),
                    attr_is("dilations", dilations),
                    attr_i("ceil_mode", *ceil_mode as i64),
                ],
                None,
            ),
            Op::AveragePool { kernel, strides, pads, dilations, ceil_mode, count_include_pad } => {
                if dilations.iter().any(|d| *d != 1) {
                    return Err("dilated average pooling needs opset 19".into());
                }
                (
                    "AveragePool",
                    vec![
                        attr_is("kernel_shape", kernel),
                        attr_is("strides", strides),
                        attr_is("pads", pads),
                        attr_i("ceil_mode", *ceil_mode as i64),
                        attr_i("count_include_pad", *count_include_pad as i64),
                    ],
                    None,
                )
            }
            Op::GlobalAveragePool => ("GlobalAveragePool", vec![], None),
            Op::Flatten { axis } => ("Flatten", vec![attr_i("axis", *axis)], None),
            Op::Reshape { shape } => {
                ins.push(self.i64_init("shape", shape));
                ("Reshape", vec![], None)
            }
            Op::Transpose { perm } => ("Transpose", vec![attr_is("perm", perm)], None),
            Op::Concat { axis } => ("Concat", vec![attr_i("axis", *axis)], None),
            Op::Pad { mode, pads, value } => {
                ins.push(self.i64_init("pads", pads));
                if *mode == qcc_ir::PadMode::Wrap {
                    return Err("wrap padding needs opset 19".into());
                }
                if *value != 0.0 {
                    let dt = self.g.ty(node.inputs[0]).dtype().unwrap_or(DType::F32);
                    let t = Tensor::from_f32(&[], vec![*value]).expect("scalar");
                    let t = if dt == DType::F32 {
                        t
                    } else {
                        qcc_runtime::eval_op(&Op::Cast { to: dt }, &[&t], &[&Type::f32(vec![])], &Type::plain(dt, vec![]))
                            .map_err(|e| e.to_string())?
                    };
                    ins.push(self.init("pad_value", &t));
                }
                ("Pad", vec![attr_s("mode", mode.as_str())], None)
            }
            Op::Squeeze { axes } => {
                ins.push(self.i64_init("axes", axes));
                ("Squeeze", vec![], None)
            }
            Op::Unsqueeze { axes } => {
                ins.push(self.i64_init("axes", axes));
                ("Unsqueeze", vec![], None)
            }
            Op::Identity | Op::Dropout | Op::Observe => ("Identity", vec![], None),
            Op::Softmax { axis, coerce_2d } => {
                let rank = self.g.ty(node.inputs[0]).shape().map_or(0, |s| s.len()) as i64;
                if *coerce_2d && *axis != rank - 1 && *axis != -1 {
                    return Err("opset < 13 softmax over several axes".into());
                }
                ("Softmax", vec![attr_i("axis", *axis)], None)
            }
            Op::Resize { mode, coord, nearest, scales, .. } => {
                ins.push(String::new());
                ins.push(self.init("scales", &Tensor::from_f32(&[scales.len()], scales.clone()).expect("vector")));
                (
                    "Resize",
                    vec![
                        attr_s("mode", mode.as_str()),
                        attr_s("coordinate_transformation_mode", coord.as_str()),
                        attr_s("nearest_mode", nearest.as_str()),
                    ],
                    None,
                )
            }
            Op::Shape { start, end } => ("Shape", vec![attr_i("start", *start), attr_i("end", *end)], None),
            Op::Gather { axis } => ("Gather", vec![attr_i("axis", *axis)], None),
            Op::Slice { starts, ends, axes, steps } => {
                for (h, v) in [("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps)] {
                    let n = self.i64_init(h, v);
                    ins.push(n);
                }
                ("Slice", vec![], None)
            }
            Op::Cast { to } => ("Cast", vec![attr_i("to", dtype_to_onnx(*to) as i64)], None),
            Op::ReduceMean { axes, keepdims } => ("ReduceMean", vec![attr_is("axes", axes), attr_i("keepdims", *keepdims as i64)], None),
            Op::ReduceMax { axes, keepdims } => ("ReduceMax", vec![attr_is("axes", axes), attr_i("keepdims", *keepdims as i64)], None),
            Op::ReduceMin { axes, keepdims } => ("ReduceMin", vec![attr_is("axes", axes), attr_i("keepdims", *keepdims as i64)], None),
            Op::ArgMax { axis, keepdims, last } | Op::ArgMin { axis, keepdims, last } => (
                if matches!(this_op, Op::ArgMax { .. }) { "ArgMax" } else { "ArgMin" },
                vec![attr_i("axis", *axis), attr_i("keepdims", *keepdims as i64), attr_i("select_last_index", *last as i64)],
                None,
            ),
            Op::Lrn { size, alpha, beta, bias } => {
                ("LRN", vec![attr_i("size", *size), attr_f("alpha", *alpha), attr_f("beta", *beta), attr_f("bias", *bias)], None)
            }
            Op::InstanceNorm { epsilon } => ("InstanceNormalization", vec![attr_f("epsilon", *epsilon)], None),
            Op::ReduceSum { axes, keepdims } => {
                ins.push(self.i64_init("axes", axes));
                ("ReduceSum", vec![attr_i("keepdims", *keepdims as i64)], None)
            }
            Op::Expand { shape } => {
                ins.push(self.i64_init("shape", shape));
                ("Expand", vec![], None)
            }
            Op::LayerNorm { axis, epsilon } => ("LayerNormalization", vec![attr_i("axis", *axis), attr_f("epsilon", *epsilon)], None),
            Op::Opaque(o) => return Err(format!("unsupported op {} cannot be exported", o.op_type)),
            Op::QConv { .. }
            | Op::QGemm { .. }
            | Op::QAdd { .. }
            | Op::QMul { .. }
            | Op::QConcat { .. }
            | Op::QAveragePool { .. }
            | Op::QGlobalAveragePool
            | Op::QAct { .. }
            | Op::DynQConv { .. }
            | Op::DynQGemm { .. }
            | Op::DynamicQdq
            | Op::Quantize
            | Op::Dequantize => unreachable!(),
        };
        // A conv's residual (fuse-residual) is an Add after it, before the activation.
        let residual = if matches!(this_op, Op::Conv { .. }) && ins.len() == 4 { ins.pop() } else { None };
        let add_residual = |ex: &mut Ex, y: String| match &residual {
            Some(r) => {
                let sum = ex.fresh("residual_add");
                ex.node("Add", &loc, vec![y, r.clone()], sum, vec![])
            }
            None => y,
        };
        if let Some(qact) = quantized {
            let y = self.node(op, &loc, ins, target, attrs);
            let y = add_residual(self, y);
            let y = self.act(y, qact);
            return quantize_to(self, y);
        }
        if act.is_some() || residual.is_some() {
            let y = self.fresh(op);
            let y = self.node(op, &loc, ins, y, attrs);
            let y = add_residual(self, y);
            let out = self.act(y, act);
            self.node("Identity", &loc, vec![out], out_name, vec![]);
        } else {
            self.node(op, &loc, ins, out_name, attrs);
        }
        Ok(())
    }
}

/// Serializes `g` as an ONNX model (opset 17).
pub fn export_onnx(g: &Graph) -> Result<Vec<u8>, ExportError> {
    let mut ex = Ex { g, nodes: vec![], inits: vec![], names: HashMap::new(), dq: HashMap::new(), counter: 0 };
    let mut inputs = Vec::new();
    for (i, v) in g.inputs().iter().enumerate() {
        let name = g.value(*v).name.clone().unwrap_or_else(|| format!("input_{i}"));
        ex.names.insert(*v, name.clone());
        inputs.push(value_info(&name, g.ty(*v)));
    }
    let mut outputs = Vec::new();
    for (i, v) in g.outputs().iter().enumerate() {
        let name = g.value(*v).name.clone().unwrap_or_else(|| format!("output_{i}"));
        if !ex.names.contains_key(v) {
            ex.names.insert(*v, name.clone());
        }
        outputs.push(value_info(&ex.names[v], g.ty(*v)));
    }
    let order =
        g.topo_order().map_err(|n| ExportError { node: g.node(n).name().into(), op: g.node(n).op.name().into(), msg: "cycle".into() })?;
    for n in order {
        ex.export_node(n).map_err(|msg| ExportError { node: g.node(n).name().into(), op: g.node(n).op.name().into(), msg })?;
    }
    let model = ModelProto {
        ir_version: Some(8),
        producer_name: Some("qcc".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        graph: Some(GraphProto {
            name: Some(g.name.clone()),
            node: ex.nodes,
            initializer: ex.inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}
