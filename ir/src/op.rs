//! The closed set of IR operations. One macro declares every op with its text name and typed attributes,
//! so the printer, parser and equality all come from one table.
use crate::attr::{Attr, AttrMap, AttrValue};
use crate::str_enum;
use crate::types::{fmt_f32, DType};

/// An activation fused into the op that produces its input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    Relu,
    Clip {
        min: f32,
        max: f32,
    },
    LeakyRelu {
        alpha: f32,
    },
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    Sigmoid,
    Tanh,
    Elu {
        alpha: f32,
    },
    /// gamma · (x > 0 ? x : alpha · (eˣ − 1)).
    Selu {
        alpha: f32,
        gamma: f32,
    },
    /// max(0, x) + min(0, alpha · (e^(x/alpha) − 1)).
    Celu {
        alpha: f32,
    },
    /// ln(1 + eˣ).
    Softplus,
    /// x / (1 + |x|).
    Softsign,
    /// x · Φ(x) (`tanh`: the tanh approximation ONNX's approximate="tanh" names).
    Gelu {
        tanh: bool,
    },
    /// x · tanh(softplus(x)).
    Mish,
}

/// ln(1 + eˣ) without overflow for large x.
#[inline]
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

impl Act {
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Act::Relu => x.max(0.0),
            Act::Clip { min, max } => x.max(min).min(max),
            Act::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            Act::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Act::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Tanh => x.tanh(),
            Act::Elu { alpha } => {
                if x < 0.0 {
                    alpha * x.exp_m1()
                } else {
                    x
                }
            }
            Act::Selu { alpha, gamma } => gamma * if x <= 0.0 { alpha * x.exp_m1() } else { x },
            Act::Celu { alpha } => x.max(0.0) + (alpha * (x / alpha).exp_m1()).min(0.0),
            Act::Softplus => softplus(x),
            Act::Softsign => x / (1.0 + x.abs()),
            Act::Gelu { tanh: false } => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
            Act::Gelu { tanh: true } => {
                let inner = (2.0 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + inner.tanh())
            }
            Act::Mish => x * softplus(x).tanh(),
        }
    }

    fn text(self) -> String {
        match self {
            Act::Relu => "relu".into(),
            Act::Clip { min, max } => format!("clip({},{})", fmt_f32(min), fmt_f32(max)),
            Act::LeakyRelu { alpha } => format!("leaky_relu({})", fmt_f32(alpha)),
            Act::HardSigmoid { alpha, beta } => {
                format!("hard_sigmoid({},{})", fmt_f32(alpha), fmt_f32(beta))
            }
            Act::HardSwish => "hard_swish".into(),
            Act::Sigmoid => "sigmoid".into(),
            Act::Tanh => "tanh".into(),
            Act::Elu { alpha } => format!("elu({})", fmt_f32(alpha)),
            Act::Selu { alpha, gamma } => format!("selu({},{})", fmt_f32(alpha), fmt_f32(gamma)),
            Act::Celu { alpha } => format!("celu({})", fmt_f32(alpha)),
            Act::Softplus => "softplus".into(),
            Act::Softsign => "softsign".into(),
            Act::Gelu { tanh: false } => "gelu".into(),
            Act::Gelu { tanh: true } => "gelu_tanh".into(),
            Act::Mish => "mish".into(),
        }
    }

    fn from_text(s: &str) -> Option<Act> {
        let (name, args) = match s.find('(') {
            Some(i) => (&s[..i], s[i + 1..].strip_suffix(')')?),
            None => (s, ""),
        };
        let nums: Vec<f32> =
            if args.is_empty() { vec![] } else { args.split(',').map(|a| a.trim().parse().ok()).collect::<Option<_>>()? };
        Some(match (name, nums.as_slice()) {
            ("relu", []) => Act::Relu,
            ("clip", [min, max]) => Act::Clip { min: *min, max: *max },
            ("leaky_relu", [alpha]) => Act::LeakyRelu { alpha: *alpha },
            ("hard_sigmoid", [alpha, beta]) => Act::HardSigmoid { alpha: *alpha, beta: *beta },
            ("hard_swish", []) => Act::HardSwish,
            ("sigmoid", []) => Act::Sigmoid,
            ("tanh", []) => Act::Tanh,
            ("elu", [alpha]) => Act::Elu { alpha: *alpha },
            ("selu", [alpha, gamma]) => Act::Selu { alpha: *alpha, gamma: *gamma },
            ("celu", [alpha]) => Act::Celu { alpha: *alpha },
            ("softplus", []) => Act::Softplus,
            ("softsign", []) => Act::Softsign,
            ("gelu", []) => Act::Gelu { tanh: false },
            ("gelu_tanh", []) => Act::Gelu { tanh: true },
            ("mish", []) => Act::Mish,
            _ => return None,
        })
    }
}

impl Attr for Act {
    fn to_attr(&self) -> Option<AttrValue> {
        Some(AttrValue::Str(self.text()))
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self, String> {
        let s = String::from_attr(v)?;
        Act::from_text(&s).ok_or_else(|| format!("unknown activation {s:?}"))
    }
}

str_enum!(PadMode { Constant = "constant", Reflect = "reflect", Edge = "edge", Wrap = "wrap" });
str_enum!(ResizeMode { Nearest = "nearest", Linear = "linear" });
str_enum!(CoordTransform {
    HalfPixel = "half_pixel",
    HalfPixelSymmetric = "half_pixel_symmetric",
    PytorchHalfPixel = "pytorch_half_pixel",
    AlignCorners = "align_corners",
    Asymmetric = "asymmetric",
});
str_enum!(NearestMode { RoundPreferFloor = "round_prefer_floor", RoundPreferCeil = "round_prefer_ceil", Floor = "floor", Ceil = "ceil" });

/// An op qcc does not support, kept (with `--allow-unsupported`) so the model can still be dumped.
#[derive(Clone, Debug, PartialEq)]
pub struct Opaque {
    pub op_type: String,
    pub domain: String,
    pub attrs: Vec<(String, AttrValue)>,
}

macro_rules! define_ops {
    ($( $(#[$m:meta])* $variant:ident $( { $($field:ident : $fty:ty),* $(,)? } )? = $name:literal ),* $(,)?) => {
        /// Every IR operation. Each produces exactly one value.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Op {
            $( $(#[$m])* $variant $( { $($field: $fty),* } )? , )*
            Opaque(Opaque),
        }

        impl Op {
            /// The op's name in the text form.
            pub fn name(&self) -> &str {
                match self {
                    $( Op::$variant { .. } => $name, )*
                    Op::Opaque(_) => "opaque",
                }
            }

            /// Attributes in declaration order; fields whose value is absent (None) are left out.
            pub fn attrs(&self) -> Vec<(String, AttrValue)> {
                match self {
                    $( Op::$variant $( { $($field),* } )? => {
                        #[allow(unused_mut)]
                        let mut v: Vec<(String, AttrValue)> = Vec::new();
                        $( $( if let Some(a) = Attr::to_attr($field) { v.push((stringify!($field).to_string(), a)); } )* )?
                        v
                    } )*
                    Op::Opaque(o) => {
                        let mut v = vec![
                            ("op_type".to_string(), AttrValue::Str(o.op_type.clone())),
                            ("domain".to_string(), AttrValue::Str(o.domain.clone())),
                        ];
                        v.extend(o.attrs.iter().map(|(k, a)| (format!("attr.{k}"), a.clone())));
                        v
                    }
                }
            }

            /// Builds an op from its text name and attributes.
            pub fn from_parts(name: &str, mut attrs: AttrMap) -> Result<Op, String> {
                let op = match name {
                    $( $name => Op::$variant $( { $($field: attrs.take(stringify!($field))?),* } )?, )*
                    "opaque" => {
                        let op_type = attrs.take("op_type")?;
                        let domain = attrs.take("domain")?;
                        let rest = std::mem::take(&mut attrs.0);
                        let mut extra = Vec::new();
                        for (k, v) in rest {
                            match k.strip_prefix("attr.") {
                                Some(k) => extra.push((k.to_string(), v)),
                                None => return Err(format!("opaque attribute `{k}` must start with `attr.`")),
                            }
                        }
                        Op::Opaque(Opaque { op_type, domain, attrs: extra })
                    }
                    _ => return Err(format!("unknown op `{name}`")),
                };
                attrs.finish(name)?;
                Ok(op)
            }
        }
    };
}

define_ops! {
    /// inputs: x, w, [bias], [residual]. pads: all begins then all ends. A residual (fuse-residual; it
    /// needs the bias slot filled) has the output's shape and is added before the activation.
    Conv { strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>, group: i64, act: Option<Act> } = "conv",
    /// inputs: x, w, [bias]. pads are the ones actually cropped from the full output.
    ConvTranspose { strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>, group: i64, output_padding: Vec<i64> } = "conv_transpose",
    /// inputs: a, b, [c]. y = alpha * op(a) @ op(b) + beta * c.
    Gemm { alpha: f32, beta: f32, trans_a: bool, trans_b: bool, act: Option<Act> } = "gemm",
    MatMul = "matmul",
    Add = "add",
    Sub = "sub",
    Mul = "mul",
    Div = "div",
    Pow = "pow",
    /// n-ary elementwise maximum with broadcasting.
    Max = "max",
    Min = "min",
    Equal = "equal",
    Less = "less",
    Greater = "greater",
    LessOrEqual = "less_or_equal",
    GreaterOrEqual = "greater_or_equal",
    /// Logical not of a bool tensor.
    Not = "not",
    /// inputs: condition, x, y.
    Where = "where",
    Relu = "relu",
    LeakyRelu { alpha: f32 } = "leaky_relu",
    Sigmoid = "sigmoid",
    HardSigmoid { alpha: f32, beta: f32 } = "hard_sigmoid",
    HardSwish = "hard_swish",
    Tanh = "tanh",
    Elu { alpha: f32 } = "elu",
    Selu { alpha: f32, gamma: f32 } = "selu",
    Celu { alpha: f32 } = "celu",
    Softplus = "softplus",
    Softsign = "softsign",
    /// tanh: ONNX's approximate="tanh".
    Gelu { tanh: bool } = "gelu",
    Mish = "mish",
    Erf = "erf",
    Sqrt = "sqrt",
    Exp = "exp",
    Neg = "neg",
    Abs = "abs",
    Reciprocal = "reciprocal",
    /// Natural logarithm.
    Log = "log",
    Floor = "floor",
    Ceil = "ceil",
    Clip { min: f32, max: f32 } = "clip",
    /// inputs: x, scale, bias, mean, var.
    BatchNorm { epsilon: f32 } = "batch_norm",
    MaxPool { kernel: Vec<i64>, strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>, ceil_mode: bool } = "max_pool",
    AveragePool { kernel: Vec<i64>, strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>, ceil_mode: bool, count_include_pad: bool } = "average_pool",
    GlobalAveragePool = "global_average_pool",
    Flatten { axis: i64 } = "flatten",
    /// The target shape, fully resolved (no 0 or -1).
    Reshape { shape: Vec<i64> } = "reshape",
    Transpose { perm: Vec<i64> } = "transpose",
    Concat { axis: i64 } = "concat",
    /// pads: all begins then all ends, one per axis.
    Pad { mode: PadMode, pads: Vec<i64>, value: f32 } = "pad",
    Squeeze { axes: Vec<i64> } = "squeeze",
    Unsqueeze { axes: Vec<i64> } = "unsqueeze",
    Identity = "identity",
    Dropout = "dropout",
    /// coerce_2d: opset < 13 semantics (softmax over all axes from `axis` on, flattened).
    Softmax { axis: i64, coerce_2d: bool } = "softmax",
    /// scales drive the coordinate transform; sizes is the output shape.
    Resize { mode: ResizeMode, coord: CoordTransform, nearest: NearestMode, scales: Vec<f32>, sizes: Vec<i64> } = "resize",
    Shape { start: i64, end: i64 } = "shape",
    /// inputs: data, indices.
    Gather { axis: i64 } = "gather",
    Slice { starts: Vec<i64>, ends: Vec<i64>, axes: Vec<i64>, steps: Vec<i64> } = "slice",
    Cast { to: DType } = "cast",
    ReduceMean { axes: Vec<i64>, keepdims: bool } = "reduce_mean",
    ReduceSum { axes: Vec<i64>, keepdims: bool } = "reduce_sum",
    ReduceMax { axes: Vec<i64>, keepdims: bool } = "reduce_max",
    ReduceMin { axes: Vec<i64>, keepdims: bool } = "reduce_min",
    /// Index (i64) of the largest value along `axis`; `last`: of its last occurrence (select_last_index).
    ArgMax { axis: i64, keepdims: bool, last: bool } = "arg_max",
    ArgMin { axis: i64, keepdims: bool, last: bool } = "arg_min",
    /// Local response normalization across channels (AlexNet, GoogLeNet):
    /// y = x / (bias + alpha / size · Σ x²)^beta over the `size` channels centred on each.
    Lrn { size: i64, alpha: f32, beta: f32, bias: f32 } = "lrn",
    /// inputs: x [N,C,...], scale [C], bias [C]; each (n, c) plane normalized over its own mean and variance.
    InstanceNorm { epsilon: f32 } = "instance_norm",
    Expand { shape: Vec<i64> } = "expand",
    /// inputs: x, scale, [bias].
    LayerNorm { axis: i64, epsilon: f32 } = "layer_norm",
    /// Identity that marks a value for calibration (insert-observers); gone after assign-qparams.
    Observe = "observe",
    /// Integer convolution. inputs: x (quantized per tensor), w (quantized per tensor or per output
    /// channel), [bias (i32, scale = sx * sw)], [residual (quantized per tensor, the output's shape)].
    /// Output quantized; see docs/semantics.md.
    QConv { strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>, group: i64, act: Option<Act> } = "qconv",
    /// Integer y = x @ op(w) + bias. inputs: x [M,K], w (trans_b: [N,K] else [K,N]), [bias i32 [N]].
    QGemm { trans_b: bool, act: Option<Act> } = "qgemm",
    /// Quantized elementwise add with broadcasting (dequantize, add in f32, quantize).
    QAdd { act: Option<Act> } = "qadd",
    /// Quantized global average pooling (exact integer sum, one f32 rescale).
    QGlobalAveragePool = "qglobal_average_pool",
    /// y = quantize(act(dequantize(x))) elementwise, 8-bit in and out: compiled as a 256-entry table.
    QAct { act: Act } = "qact",
    /// Quantized elementwise multiply with broadcasting (dequantize, multiply in f32, quantize).
    QMul { act: Option<Act> } = "qmul",
    /// Quantized concatenation: each input requantized to the output's parameters (a copy when equal).
    QConcat { axis: i64 } = "qconcat",
    /// Quantized average pooling (exact integer window sums, one f32 rescale per output).
    QAveragePool { kernel: Vec<i64>, strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>, ceil_mode: bool, count_include_pad: bool } = "qaverage_pool",
    /// Dynamically quantized convolution: f32 input quantized to u8 per call from its own range, integer
    /// weights, f32 bias and output. inputs: x, w (quantized), [bias f32]. See docs/semantics.md.
    DynQConv { strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>, group: i64, act: Option<Act> } = "dyn_qconv",
    /// Dynamically quantized y = x @ op(w) + bias, as dyn_qconv. inputs: x [M,K], w, [bias f32 [N]].
    DynQGemm { trans_b: bool, act: Option<Act> } = "dyn_qgemm",
    /// f32 -> f32: quantized to u8 with its own range (DynamicQuantizeLinear's rule) and dequantized, what
    /// an imported DynamicQuantizeLinear -> DequantizeLinear pair computes. fold-qdq makes the pair in
    /// front of a conv or gemm with integer weights that op's dyn_qconv/dyn_qgemm.
    DynamicQdq = "dynamic_qdq",
    /// f32 -> integer; the output type holds the quantization parameters.
    Quantize = "quantize",
    /// integer -> f32; the input type holds the quantization parameters.
    Dequantize = "dequantize",
}

impl Op {
    /// Elementwise ops with one input whose output has the input's shape and type.
    pub fn is_unary_elementwise(&self) -> bool {
        matches!(
            self,
            Op::Relu
                | Op::LeakyRelu { .. }
                | Op::Sigmoid
                | Op::HardSigmoid { .. }
                | Op::HardSwish
                | Op::Tanh
                | Op::Elu { .. }
                | Op::Selu { .. }
                | Op::Celu { .. }
                | Op::Softplus
                | Op::Softsign
                | Op::Gelu { .. }
                | Op::Mish
                | Op::Erf
                | Op::Sqrt
                | Op::Exp
                | Op::Neg
                | Op::Abs
                | Op::Reciprocal
                | Op::Log
                | Op::Floor
                | Op::Ceil
                | Op::Clip { .. }
                | Op::Identity
                | Op::Dropout
        )
    }

    /// For a dynamically quantized op: the float op (with its fused activation) it approximates.
    pub fn dynamic_form(&self) -> Option<Op> {
        Some(match self {
            Op::DynQConv { strides, pads, dilations, group, act } => {
                Op::Conv { strides: strides.clone(), pads: pads.clone(), dilations: dilations.clone(), group: *group, act: *act }
            }
            Op::DynQGemm { trans_b, act } => Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: *trans_b, act: *act },
            _ => return None,
        })
    }

    /// For a conv or gemm: its dynamically quantized op (the inverse of `dynamic_form`; gemm's alpha, beta
    /// and trans_a are the caller's to check).
    pub fn dynamic_integer_form(&self) -> Option<Op> {
        Some(match self {
            Op::Conv { strides, pads, dilations, group, act } => {
                Op::DynQConv { strides: strides.clone(), pads: pads.clone(), dilations: dilations.clone(), group: *group, act: *act }
            }
            Op::Gemm { trans_b, act, .. } => Op::DynQGemm { trans_b: *trans_b, act: *act },
            _ => return None,
        })
    }

    /// For a float op with an integer form: that integer op (the inverse of `float_form`; gemm's alpha,
    /// beta and trans_a are the caller's to check).
    pub fn integer_form(&self) -> Option<Op> {
        Some(match self {
            Op::Conv { strides, pads, dilations, group, act } => {
                Op::QConv { strides: strides.clone(), pads: pads.clone(), dilations: dilations.clone(), group: *group, act: *act }
            }
            Op::Gemm { trans_b, act, .. } => Op::QGemm { trans_b: *trans_b, act: *act },
            Op::Add => Op::QAdd { act: None },
            Op::Mul => Op::QMul { act: None },
            Op::Concat { axis } => Op::QConcat { axis: *axis },
            Op::AveragePool { kernel, strides, pads, dilations, ceil_mode, count_include_pad } => Op::QAveragePool {
                kernel: kernel.clone(),
                strides: strides.clone(),
                pads: pads.clone(),
                dilations: dilations.clone(),
                ceil_mode: *ceil_mode,
                count_include_pad: *count_include_pad,
            },
            Op::GlobalAveragePool => Op::QGlobalAveragePool,
            _ => return None,
        })
    }

    /// For an integer op: the float op it computes on dequantized inputs, and its fused activation.
    pub fn float_form(&self) -> Option<(Op, Option<Act>)> {
        Some(match self {
            Op::QConv { strides, pads, dilations, group, act } => {
                (Op::Conv { strides: strides.clone(), pads: pads.clone(), dilations: dilations.clone(), group: *group, act: None }, *act)
            }
            Op::QGemm { trans_b, act } => (Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: *trans_b, act: None }, *act),
            Op::QAdd { act } => (Op::Add, *act),
            Op::QMul { act } => (Op::Mul, *act),
            Op::QConcat { axis } => (Op::Concat { axis: *axis }, None),
            Op::QAveragePool { kernel, strides, pads, dilations, ceil_mode, count_include_pad } => (
                Op::AveragePool {
                    kernel: kernel.clone(),
                    strides: strides.clone(),
                    pads: pads.clone(),
                    dilations: dilations.clone(),
                    ceil_mode: *ceil_mode,
                    count_include_pad: *count_include_pad,
                },
                None,
            ),
            Op::QGlobalAveragePool => (Op::GlobalAveragePool, None),
            Op::QAct { act } => (Op::Identity, Some(*act)),
            _ => return None,
        })
    }

    /// The activation this op computes, if it is one that can be fused into a producer.
    pub fn as_act(&self) -> Option<Act> {
        Some(match *self {
            Op::Relu => Act::Relu,
            Op::Clip { min, max } => Act::Clip { min, max },
            Op::LeakyRelu { alpha } => Act::LeakyRelu { alpha },
            Op::HardSigmoid { alpha, beta } => Act::HardSigmoid { alpha, beta },
            Op::HardSwish => Act::HardSwish,
            Op::Sigmoid => Act::Sigmoid,
            Op::Tanh => Act::Tanh,
            Op::Elu { alpha } => Act::Elu { alpha },
            Op::Selu { alpha, gamma } => Act::Selu { alpha, gamma },
            Op::Celu { alpha } => Act::Celu { alpha },
            Op::Softplus => Act::Softplus,
            Op::Softsign => Act::Softsign,
            Op::Gelu { tanh } => Act::Gelu { tanh },
            Op::Mish => Act::Mish,
            _ => return None,
        })
    }
}
