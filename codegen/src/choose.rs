//! Kernel choice: which kernel (or host step) each node gets, decided before memory planning because
//! some choices need temporaries (im2col) and some absorb their successors (qadd → dequantize → clamp →
//! quantize). Also the checks that make the integer kernels exact (accumulator bounds, saturation signs).
use qcc_ir::{DType, Graph, NodeId, Op, QParams, QuantType, Type, ValueId};
use qcc_runtime::kernels::elementwise::IntElem;
use qcc_runtime::kernels::float::{BinOp, UnOp};
use qcc_runtime::kernels::fnhwc::FGroupNhwc;
use qcc_runtime::kernels::gemm::{packed_dims, ROW_SEGS};
use qcc_runtime::kernels::Isa;
use qcc_runtime::qops::per_channel;

/// A float Gemm of up to this many rows runs as one matrix-vector product per row (each streams the
/// weights again; beyond, the interpreter's blocked product is the better choice).
pub(crate) const GEMV_ROWS: usize = 16;

/// The kernel chosen for a node, with what lowering needs to know before memory planning.
pub(crate) enum Choice {
    Quantize,
    Dequantize,
    /// qconv as a GEMM; `im2col` = gather windows first (into a temporary of that many bytes);
    /// `implicit` = the VNNI or AVX2 kernel reads the windows straight from the input, per tap or, with
    /// `rows`, per kernel row (channels not a multiple of 4).
    ConvGemm {
        im2col: Option<usize>,
        implicit: bool,
        rows: bool,
    },
    DwConv,
    /// qconv or qgemm with a 16-bit input or output.
    WideConv,
    QGemm,
    QAdd,
    QGap,
    MaxPool,
    QAvgPool,
    /// Integer or f32 concatenation: one row-copying step per input.
    Concat,
    /// A reshape that keeps the bytes' order: a plain copy.
    Copy,
    Binary(BinOp),
    Unary(UnOp),
    Softmax,
    /// Transpose or slice (positive steps).
    Strided,
    Lut,
    Host(String),
    /// Float convolution as fgemm; `gather`: its columns are the windows of the input (unless pointwise).
    FConv {
        gather: bool,
    },
    /// Float convolution over channels-last values; `nchw_in`: the input is in logical order (a graph
    /// input), which the kernel copies channels-last itself.
    FConvNhwc {
        nchw_in: bool,
    },
    FDwConv,
    /// Float depthwise convolution over channels-last values.
    FDwNhwc,
    /// Float grouped convolution with groups of fewer than 16 output channels, channels-last.
    FGroupNhwc,
    FGapNhwc,
    FMaxPoolNhwc,
    FAvgPoolNhwc,
    /// Float Gemm with one row (the classifier of batch-1 models).
    FGemm,
    FGap,
    FMaxPool,
    FAvgPool,
    /// Computed by an earlier step's fused kernel (qadd → dequantize → clamp → quantize).
    Absorbed,
}

/// Raw int8 weights in logical order, per-channel scales and zero points, bias.
pub(crate) type Weights = (Vec<i64>, Vec<f32>, Vec<i32>, Vec<i64>, Option<Vec<i32>>);

pub(crate) struct Ctx<'g> {
    pub g: &'g Graph,
    pub isa: Isa,
}

pub(crate) fn int_elem(d: DType) -> Option<IntElem> {
    match d {
        DType::U8 => Some(IntElem::U8),
        DType::I8 => Some(IntElem::I8),
        DType::I16 => Some(IntElem::I16),
        _ => None,
    }
}

/// (scale, zp, type) of a per-tensor quantized value with u8/i8/i16 storage.
pub(crate) fn per_tensor(t: &Type) -> Option<(f32, i32, &QuantType)> {
    let q = t.quant()?;
    int_elem(q.storage)?;
    match q.params {
        QParams::PerTensor { scale, zp } => Some((scale, zp, q)),
        _ => None,
    }
}

pub(crate) fn is_8bit(q: &QuantType) -> bool {
    matches!(q.storage, DType::U8 | DType::I8)
}

impl Ctx<'_> {
    pub(crate) fn is_io(&self, v: ValueId) -> bool {
        self.g.inputs().contains(&v) || self.g.outputs().contains(&v)
    }

    /// Integer 4-D activations inside the graph are NHWC, and so are f32 ones on AVX-512 CPUs, where
    /// the float kernels vectorise over channels (fnhwc.rs); elsewhere f32 values keep logical order, and
    /// so does an f32 value that a layout-keeping op (`keeps_layout`) computes from one in logical order
    /// (a graph input): those ops have kernels for either layout but not between them, while the
    /// convolutions after them read logical-order inputs themselves.
    pub(crate) fn nhwc(&self, v: ValueId) -> bool {
        let t = self.g.ty(v);
        let inner = t.shape().is_some_and(|s| s.len() == 4) && !self.is_io(v) && !self.g.is_const(v);
        if !inner {
            return false;
        }
        if t.quant().is_some() {
            return true;
        }
        if self.isa != Isa::Avx512Vnni || !self.f32_value(v) {
            return false;
        }
        let Some(n) = self.g.producer(v) else { return true };
        let x = self.g.node(n).inputs.first().copied();
        !(self.keeps_layout(n) && x.is_some_and(|x| !self.g.is_const(x) && self.f32_value(x) && !self.nhwc(x)))
    }

    /// Ops whose f32 kernels take their input and output in the same layout: unary ops, max and average
    /// pooling, depthwise convolution.
    fn keeps_layout(&self, n: NodeId) -> bool {
        let node = self.g.node(n);
        match &node.op {
            Op::MaxPool { .. } | Op::AveragePool { .. } => true,
            Op::Conv { group, .. } => {
                let ws = node.inputs.get(1).and_then(|w| self.g.ty(*w).shape());
                let xs = self.g.ty(node.inputs[0]).shape();
                let depthwise = |x: &[usize], w: &[usize]| {
                    x.len() == 4 && w.len() == 4 && *group != 1 && x[1] as i64 == *group && w[0] as i64 == *group && w[1] == 1
                };
                node.inputs.len() < 4 && matches!((xs, ws), (Some(x), Some(w)) if depthwise(x, w))
            }
            op => UnOp::from_op(op).is_some(),
        }
    }

    /// The dims in storage order: NHWC for channels-last values, else the logical shape.
    pub(crate) fn physical(&self, v: ValueId) -> Vec<usize> {
        let s = self.g.ty(v).shape().unwrap_or(&[]).to_vec();
        if self.nhwc(v) {
            vec![s[0], s[2], s[3], s[1]]
        } else {
            s
        }
    }

    /// Element strides of each logical dim of `v` in its storage (the row-major strides of `physical`,
    /// in logical order).
    pub(crate) fn storage_strides(&self, v: ValueId) -> Vec<usize> {
        let st = contiguous(&self.physical(v));
        if self.nhwc(v) {
            vec![st[0], st[3], st[1], st[2]]
        } else {
            st
        }
    }

    /// Whether the stored bytes equal the logical row-major bytes.
    pub(crate) fn logical_bytes(&self, v: ValueId) -> bool {
        !self.nhwc(v) || self.g.ty(v).shape().is_some_and(|s| s[1] == 1 || s[2] * s[3] == 1)
    }

    /// Whether node `n` writes a 4-D logical-order value (a graph output) from a channels-last f32
    /// input: a binary op with an operand that has pixels and channels, or pooling or a depthwise
    /// convolution. Lowering runs the channels-last kernel into a temporary and reorders it after
    /// (reading across channels would take each cache line once per element it holds).
    pub(crate) fn writes_planes(&self, n: NodeId) -> bool {
        let node = self.g.node(n);
        let four = self.g.ty(node.output).shape().is_some_and(|s| s.len() == 4);
        if !four || self.nhwc(node.output) {
            return false;
        }
        if BinOp::from_op(&node.op).is_some() {
            return node.inputs.iter().any(|v| !self.logical_bytes(*v));
        }
        let x = node.inputs[0];
        let f32_in = !self.g.is_const(x) && self.f32_value(x) && self.nhwc(x);
        f32_in && UnOp::from_op(&node.op).is_none() && self.keeps_layout(n)
    }

    pub(crate) fn choose(&self, n: NodeId) -> Choice {
        let g = self.g;
        let node = g.node(n);
        let ins = &node.inputs;
        let out = node.output;
        let oty = g.ty(out);
        let act_in = |i: usize| ins.get(i).is_some_and(|v| !g.is_const(*v));
        let host = |why: &str| Choice::Host(why.to_string());
        match &node.op {
            Op::Quantize => {
                if !act_in(0) || g.ty(ins[0]).dtype() != Some(DType::F32) {
                    return host("quantize of a constant or non-f32 value");
                }
                if self.nhwc(ins[0]) && !self.nhwc(out) {
                    return host("quantize of a channels-last value into logical order");
                }
                match per_tensor(oty) {
                    Some(_) => Choice::Quantize,
                    None => host("per-axis or i32 quantize"),
                }
            }
            Op::Dequantize => match (act_in(0), per_tensor(g.ty(ins[0]))) {
                (true, Some(_)) if !self.nhwc(ins[0]) && self.nhwc(out) => host("dequantize of a logical value into channels-last order"),
                (true, Some(_)) => Choice::Dequantize,
                _ => host("dequantize of a constant or per-axis value"),
            },
            Op::QConv { strides, pads, dilations, group, .. } => {
                // A residual is read in the output's layout: channels-last, per tensor.
                let residual = ins.get(3).map(|r| (self.nhwc(*r), per_tensor(g.ty(*r)).is_some_and(|(_, _, q)| is_8bit(q))));
                if residual.is_some_and(|(nhwc, _)| !nhwc) {
                    return host("residual that is not a channels-last quantized value");
                }
                if *group != 1 && residual.is_some() {
                    return host("grouped convolution with a residual");
                }
                if let Err(why) = self.conv_ok(n) {
                    return if self.wide_ok(n) { Choice::WideConv } else { Choice::Host(why) };
                }
                let xs = g.ty(ins[0]).shape().unwrap_or(&[]);
                let ws = g.ty(ins[1]).shape().unwrap_or(&[]);
                let (cin, m) = (xs[1], ws[0]);
                if residual.is_some_and(|(_, eight)| !eight) {
                    return if self.wide_ok(n) { Choice::WideConv } else { host("8-bit convolution with a 16-bit residual") };
                }
                if *group != 1 && *group as usize == cin && m == cin && ws[1] == 1 && dilations.len() == 2 {
                    return Choice::DwConv;
                }
                // Other convolutions are GEMMs, one per group for grouped ones (ResNeXt, RegNet,
                // ShuffleNet), each reading its group's ws[1] channels of every input pixel.
                let groups = *group as usize;
                if groups == 0 || cin != groups * ws[1] || m % groups != 0 {
                    return host("grouped convolution whose channels do not divide into its groups");
                }
                let pointwise = ws[2] == 1 && ws[3] == 1 && strides.iter().all(|s| *s == 1) && pads.iter().all(|p| *p == 0);
                if pointwise {
                    return Choice::ConvGemm { im2col: None, implicit: false, rows: false };
                }
                // A strided 1x1 (ResNet's downsampling shortcut) gathers its pixels and runs the plain
                // GEMM: ResNet-50's three took 0.54-0.57 ms read in place, 0.49-0.55 ms gathered (the
                // gather is 2% of that).
                let os = oty.shape().unwrap_or(&[]);
                let (kp, _) = packed_dims(ws[1] * ws[2] * ws[3], m / groups);
                let gathered = Choice::ConvGemm { im2col: Some(os[0] * os[2] * os[3] * kp), implicit: false, rows: false };
                if ws[2] == 1 && ws[3] == 1 && pads.iter().all(|p| *p == 0) {
                    return gathered;
                }
                if self.isa != Isa::Scalar && ws[1].is_multiple_of(4) && ws[2] * ws[3] <= 64 {
                    return Choice::ConvGemm { im2col: None, implicit: true, rows: false };
                }
                // Row segments need no row sums: symmetric weights only (the zero-point term would
                // count the padding bytes); they read whole kernel rows of pixels, so ungrouped inputs only.
                let symmetric = g.ty(ins[1]).quant().and_then(|q| per_channel(q, m).ok()).is_some_and(|(_, zw)| zw.iter().all(|z| *z == 0));
                let row_ok = groups == 1 && ws[3] * cin <= 64 && ws[2] <= ROW_SEGS && dilations.get(1).is_none_or(|d| *d == 1);
                if self.isa != Isa::Scalar && symmetric && row_ok {
                    return Choice::ConvGemm { im2col: None, implicit: true, rows: true };
                }
                gathered
            }
            Op::QGemm { .. } => {
                if self.wide_ok(n) {
                    return Choice::WideConv;
                }
                let (Some((_, _, xq)), Some((_, _, oq))) = (per_tensor(g.ty(ins[0])), per_tensor(oty)) else {
                    return host("input or output is not per-tensor quantized");
                };
                if !act_in(0) || !is_8bit(xq) || !is_8bit(oq) || self.is_weights_ok(n).is_err() {
                    return Choice::Host(self.is_weights_ok(n).err().unwrap_or_else(|| "needs 8-bit activations".into()));
                }
                Choice::QGemm
            }
            Op::QAdd { .. } | Op::QMul { .. } => {
                let rank = oty.shape().map_or(0, |s| s.len());
                let operands = ins.len() == 2 && ins.iter().all(|v| !g.is_const(*v) && g.ty(*v).shape().is_some_and(|s| s.len() <= rank));
                let quant = ins.iter().all(|v| per_tensor(g.ty(*v)).is_some()) && per_tensor(oty).is_some();
                let layout = ins.iter().all(|v| self.nhwc(*v) == self.nhwc(out));
                if operands && quant && layout && rank <= 4 {
                    Choice::QAdd
                } else {
                    host("integer add/mul with constants, mixed layouts or more than 4 dims")
                }
            }
            Op::QGlobalAveragePool => {
                if act_in(0) && self.nhwc(ins[0]) && per_tensor(g.ty(ins[0])).is_some() && per_tensor(oty).is_some() {
                    Choice::QGap
                } else {
                    host("global average pool outside the NHWC integer path")
                }
            }
            Op::QAveragePool { kernel, .. } => {
                // i32 window sums of 16-bit values stay exact below 2^15 taps.
                let small = kernel.iter().product::<i64>() < 1 << 15;
                if act_in(0) && kernel.len() == 2 && small && self.nhwc(ins[0]) && self.nhwc(out) && per_tensor(oty).is_some() {
                    Choice::QAvgPool
                } else {
                    host("average pooling that is not 2-D over channels-last integers")
                }
            }
            Op::QConcat { .. } | Op::Concat { .. } => {
                let layout = ins.iter().all(|v| self.nhwc(*v) == self.nhwc(out));
                let kind =
                    |v: ValueId| if matches!(node.op, Op::Concat { .. }) { self.f32_value(v) } else { per_tensor(g.ty(v)).is_some() };
                if ins.iter().all(|v| !g.is_const(*v) && kind(*v)) && kind(out) && layout {
                    Choice::Concat
                } else {
                    host("concatenation of constants, non-f32 plain values or mixed layouts")
                }
            }
            Op::MaxPool { kernel, .. } => {
                let same = self.nhwc(ins[0]) == self.nhwc(out);
                if act_in(0) && kernel.len() == 2 && self.nhwc(ins[0]) && self.nhwc(out) && per_tensor(oty).is_some() {
                    Choice::MaxPool
                } else if act_in(0) && kernel.len() == 2 && self.f32_value(ins[0]) && (same || self.writes_planes(n)) {
                    if self.nhwc(ins[0]) {
                        Choice::FMaxPoolNhwc
                    } else {
                        Choice::FMaxPool
                    }
                } else {
                    host("max pooling that is not 2-D over f32 or channels-last integers")
                }
            }
            Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Identity | Op::Dropout => {
                if !act_in(0) {
                    return host("reshape of a constant");
                }
                // Between channels-last and logical order, a strided copy reorders the bytes.
                match (self.logical_bytes(ins[0]), self.logical_bytes(out)) {
                    (true, true) => Choice::Copy,
                    (false, true) | (true, false) => Choice::Strided,
                    (false, false) => host("reshape between two channels-last shapes"),
                }
            }
            op if BinOp::from_op(op).is_some() => {
                let f32s = ins.iter().chain([&out]).all(|v| g.ty(*v).elem() == Some(&qcc_ir::ElemType::Plain(DType::F32)));
                let consts_known = ins.iter().all(|v| !g.is_const(*v) || g.const_tensor(*v).is_some());
                // Channels-last operands are read through their storage strides, into a 4-D output.
                let rank = oty.shape().map_or(0, |s| s.len());
                let layouts = ins.iter().all(|v| !self.nhwc(*v) || rank == 4);
                match (ins.len() == 2 && f32s && consts_known && layouts && !ins.iter().all(|v| g.is_const(*v)), BinOp::from_op(op)) {
                    (true, Some(b)) => Choice::Binary(b),
                    _ => host("binary op on non-f32 values or with more than two inputs"),
                }
            }
            op if UnOp::from_op(op).is_some() => {
                let f32s = g.ty(ins[0]).elem() == Some(&qcc_ir::ElemType::Plain(DType::F32)) && oty.dtype() == Some(DType::F32);
                // Between channels-last and logical order, lowering reorders first (a strided copy).
                match (act_in(0) && f32s && oty.quant().is_none(), UnOp::from_op(op)) {
                    (true, Some(u)) => Choice::Unary(u),
                    _ => host("unary op on a constant or a non-f32 value"),
                }
            }
            Op::Transpose { .. } | Op::Slice { .. } => {
                // Integer values keep their element type and parameters (fold-qdq moves these onto them
                // unchanged).
                let same = g.ty(ins[0]).elem() == oty.elem() && oty.dtype().is_some_and(|d| matches!(d.size_bytes(), 1 | 2 | 4));
                let forward = match &node.op {
                    Op::Slice { steps, .. } => steps.iter().all(|s| *s > 0),
                    _ => true,
                };
                if act_in(0) && same && forward && oty.shape().is_some_and(|s| s.len() <= 6) {
                    Choice::Strided
                } else {
                    host("transpose or slice of a constant, changing its element type, with negative steps or of more than 6 dims")
                }
            }
            Op::QAct { .. } => {
                let eight = |v: ValueId| per_tensor(g.ty(v)).is_some_and(|(_, _, q)| matches!(q.storage, DType::U8 | DType::I8));
                if act_in(0) && eight(ins[0]) && eight(out) && self.nhwc(ins[0]) == self.nhwc(out) {
                    Choice::Lut
                } else {
                    host("quantized activation that is not 8-bit per tensor in and out, or changes layout")
                }
            }
            Op::Softmax { .. } => {
                if act_in(0) && self.f32_value(ins[0]) && self.f32_value(out) && self.logical_bytes(ins[0]) && self.logical_bytes(out) {
                    Choice::Softmax
                } else {
                    host("softmax of a constant or a non-f32 value")
                }
            }
            Op::Conv { strides, pads, group, .. } => self.choose_fconv(n, strides, pads, *group).unwrap_or_else(Choice::Host),
            Op::Gemm { alpha, beta, trans_a, .. } => {
                let xs = g.ty(ins[0]).shape().unwrap_or(&[]);
                let bias_ok = ins.get(2).is_none_or(|c| g.const_tensor(*c).is_some_and(|t| t.len() == oty.shape().map_or(0, |s| s[1])));
                let ok = act_in(0)
                    && *alpha == 1.0
                    && (*beta == 1.0 || ins.len() == 2)
                    && !trans_a
                    && xs.first().is_some_and(|rows| *rows <= GEMV_ROWS)
                    && self.f32_value(ins[0])
                    && g.const_tensor(ins[1]).is_some_and(|t| t.dtype() == DType::F32)
                    && bias_ok;
                if ok {
                    Choice::FGemm
                } else {
                    Choice::Host(format!("float Gemm other than up to {GEMV_ROWS} rows times constant weights (alpha = beta = 1)"))
                }
            }
            Op::GlobalAveragePool if act_in(0) && self.f32_value(ins[0]) && g.ty(ins[0]).shape().is_some_and(|s| s.len() == 4) => {
                // The output has one pixel: its bytes are the same in either layout.
                if self.nhwc(ins[0]) {
                    Choice::FGapNhwc
                } else {
                    Choice::FGap
                }
            }
            Op::AveragePool { kernel, .. } if act_in(0) && self.f32_value(ins[0]) && kernel.len() == 2 => {
                match (self.nhwc(ins[0]), self.nhwc(out) || self.writes_planes(n)) {
                    (true, true) => Choice::FAvgPoolNhwc,
                    (false, false) => Choice::FAvgPool,
                    _ => host("average pooling from logical order into channels-last"),
                }
            }
            op => Choice::Host(format!("no compiled kernel for {}", op.name())),
        }
    }

    pub(crate) fn f32_value(&self, v: ValueId) -> bool {
        self.g.ty(v).elem() == Some(&qcc_ir::ElemType::Plain(DType::F32))
    }

    /// A float convolution's kernel: fgemm (with im2col unless pointwise) or depthwise; batch 1, 2-D,
    /// constant f32 weights and bias.
    pub(crate) fn choose_fconv(&self, n: NodeId, strides: &[i64], pads: &[i64], group: i64) -> Result<Choice, String> {
        let g = self.g;
        let (ins, out) = (&g.node(n).inputs, g.node(n).output);
        let (xs, ws) = (g.ty(ins[0]).shape().unwrap_or(&[]), g.ty(ins[1]).shape().unwrap_or(&[]));
        let consts = g.const_tensor(ins[1]).is_some() && ins.get(2).is_none_or(|b| g.const_tensor(*b).is_some());
        if g.is_const(ins[0]) || !self.f32_value(ins[0]) || xs.len() != 4 || ws.len() != 4 || !consts {
            return Err("float convolution other than 2-D with constant weights".into());
        }
        // A residual is read in the output's layout.
        if ins.get(3).is_some_and(|r| g.is_const(*r) || !self.f32_value(*r) || self.nhwc(*r) != self.nhwc(out)) {
            return Err("float convolution with a constant or non-f32 residual, or one in another layout".into());
        }
        // The channels-last kernel reads channels-last inputs (a logical one is copied channels-last
        // first) and writes either layout; the NCHW kernels read and write logical order.
        let (nhwc_in, nhwc_out) = (self.nhwc(ins[0]), self.nhwc(out));
        if group != 1 && group as usize == xs[1] && ws[0] == xs[1] && ws[1] == 1 && ins.len() < 4 {
            return match (nhwc_in, nhwc_out || self.writes_planes(n)) {
                (true, true) => Ok(Choice::FDwNhwc),
                (false, false) => Ok(Choice::FDwConv),
                _ => Err("float depthwise convolution from logical order into channels-last".into()),
            };
        }
        // Other grouped convolutions run one product per group.
        let groups = group.max(1) as usize;
        if xs[1] != groups * ws[1] || ws[0] % groups != 0 {
            return Err("grouped float convolution whose channels do not divide into its groups".into());
        }
        let small = FGroupNhwc::fits(ws[0] / groups, ws[1]) && groups > 1 && ins.len() < 4;
        if nhwc_in && nhwc_out && small {
            return Ok(Choice::FGroupNhwc);
        }
        if nhwc_in || nhwc_out {
            return Ok(Choice::FConvNhwc { nchw_in: !nhwc_in });
        }
        let pointwise = ws[2] == 1 && ws[3] == 1 && strides.iter().all(|s| *s == 1) && pads.iter().all(|p| *p == 0);
        Ok(Choice::FConv { gather: !pointwise })
    }

    /// The nodes dequantize → relu/clip → quantize that follow qadd `n` and only feed each other, with
    /// the final quantize per tensor in the same layout as the add.
    pub(crate) fn clamp_chain(&self, n: NodeId) -> Option<[NodeId; 3]> {
        let g = self.g;
        let only_use = |v: ValueId| -> Option<NodeId> {
            match g.uses(v).as_slice() {
                [(u, 0)] if !g.is_output(v) => Some(*u),
                _ => None,
            }
        };
        let dq = only_use(g.node(n).output)?;
        let u = only_use(g.node(dq).output)?;
        let q = only_use(g.node(u).output)?;
        let ok = g.node(dq).op == Op::Dequantize
            && matches!(UnOp::from_op(&g.node(u).op), Some(UnOp::Clip { .. }))
            && g.node(q).op == Op::Quantize
            && per_tensor(g.ty(g.node(q).output)).is_some()
            && self.nhwc(g.node(q).output) == self.nhwc(g.node(n).output)
            && g.ty(g.node(q).output).shape() == g.ty(g.node(n).output).shape();
        ok.then_some([dq, u, q])
    }

    /// Weights an 8-bit kernel takes: constant int8 (with a constant i32 bias) whose sums stay in i32.
    pub(crate) fn is_weights_ok(&self, n: NodeId) -> Result<(), String> {
        self.constant_weights(n)?;
        if self.weights(n).is_none() {
            return Err("products could exceed 2^30 in an accumulator".into());
        }
        Ok(())
    }

    /// Constant int8 weights and, if any, a constant i32 bias.
    pub(crate) fn constant_weights(&self, n: NodeId) -> Result<(), String> {
        let g = self.g;
        let ins = &g.node(n).inputs;
        let w = ins[1];
        let wq = g.ty(w).quant().ok_or("weights are not quantized")?;
        if !g.is_const(w) || wq.storage != DType::I8 {
            return Err("weights must be constant int8".into());
        }
        if let Some(b) = ins.get(2) {
            if !g.is_const(*b) || g.ty(*b).dtype() != Some(DType::I32) {
                return Err("bias must be a constant i32".into());
            }
        }
        Ok(())
    }

    /// A qconv (2-D, NHWC) or qgemm (2-D input) with a 16-bit input or output, which the 8-bit kernels
    /// do not take: the wide kernel computes it.
    pub(crate) fn wide_ok(&self, n: NodeId) -> bool {
        let g = self.g;
        let node = g.node(n);
        let (x, out) = (node.inputs[0], node.output);
        let (Some((_, _, xq)), Some((_, _, oq))) = (per_tensor(g.ty(x)), per_tensor(g.ty(out))) else { return false };
        // Its sums are exact at any size (i32 blocks summed in i64): no accumulator bound (weights()) applies.
        if (is_8bit(xq) && is_8bit(oq)) || g.is_const(x) || self.constant_weights(n).is_err() {
            return false;
        }
        let (xs, ws) = (g.ty(x).shape().unwrap_or(&[]), g.ty(node.inputs[1]).shape().unwrap_or(&[]));
        match &node.op {
            Op::QConv { group, .. } => {
                let groups = *group as usize;
                self.nhwc(x) && self.nhwc(out) && ws.len() == 4 && groups > 0 && ws[1] * groups == xs[1] && ws[0] % groups == 0
            }
            Op::QGemm { .. } => xs.len() == 2 && ws.len() == 2,
            _ => false,
        }
    }

    pub(crate) fn conv_ok(&self, n: NodeId) -> Result<(), String> {
        let g = self.g;
        let node = g.node(n);
        let (x, out) = (node.inputs[0], node.output);
        let (Some((_, _, xq)), Some((_, _, oq))) = (per_tensor(g.ty(x)), per_tensor(g.ty(out))) else {
            return Err("input or output is not per-tensor quantized".into());
        };
        if !is_8bit(xq) || !is_8bit(oq) {
            return Err("16-bit activations run in the interpreter".into());
        }
        if !self.nhwc(x) || !self.nhwc(out) || g.ty(node.inputs[1]).shape().map(|s| s.len()) != Some(4) {
            return Err("only 2-D convolutions on internal values are compiled".into());
        }
        self.is_weights_ok(n)
    }

    /// Weights of a qconv/qgemm as (raw int8 in logical order, per-channel scales, zero points, bias),
    /// or None when an accumulator could leave i32 (then the kernel's wrapping sum would not be exact).
    pub(crate) fn weights(&self, n: NodeId) -> Option<Weights> {
        let g = self.g;
        let node = g.node(n);
        let (x, w) = (node.inputs[0], node.inputs[1]);
        let (_, zx, xq) = per_tensor(g.ty(x))?;
        let wq = g.ty(w).quant()?;
        let ws = g.ty(w).shape()?;
        let m = match &node.op {
            Op::QGemm { trans_b: false, .. } => ws[1],
            _ => ws[0],
        };
        let (sw, zw) = per_channel(wq, m).ok()?;
        let wv = g.const_tensor(w)?.to_i64_vec()?;
        let bias = match node.inputs.get(2) {
            Some(b) => g.const_tensor(*b)?.to_i64_vec()?,
            None => vec![0; m],
        };
        let dx = (xq.qmin - zx as i64).abs().max((xq.qmax - zx as i64).abs());
        let k = wv.len() / m;
        let mut sumabs = vec![0i64; m];
        for (i, v) in wv.iter().enumerate() {
            let c = match &node.op {
                Op::QGemm { trans_b: false, .. } => i % m,
                _ => i / k,
            };
            sumabs[c] += (v - zw[c] as i64).abs();
        }
        // The products' sum S is at most dx·Σ|w − zw| in magnitude. A channel whose S + bias may leave i32
        // gets a saturation sign: with |S| < 2^30 the bias (then beyond ±2^30) fixes the true sum's sign, so
        // the kernel can tell a wrapped i32 from a true one and saturate as the interpreter's clamp does.
        if (0..m).any(|c| dx * sumabs[c] >= 1 << 30) {
            return None;
        }
        let sat: Vec<i32> = (0..m)
            .map(|c| match dx * sumabs[c] + bias[c].abs() <= i32::MAX as i64 {
                true => 0,
                false => bias[c].signum() as i32,
            })
            .collect();
        let sat = sat.iter().any(|s| *s != 0).then_some(sat);
        Some((wv, sw, zw, bias, sat))
    }
}

/// Row-major element strides of shape `s`.
pub(crate) fn contiguous(s: &[usize]) -> Vec<usize> {
    let mut st = vec![1; s.len()];
    for d in (0..s.len().saturating_sub(1)).rev() {
        st[d] = st[d + 1] * s[d + 1];
    }
    st
}
