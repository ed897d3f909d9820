//! Lowering a graph to an execution plan. Integer 4-D activations are stored channels-last (NHWC), so a
//! 1x1 convolution is a GEMM over contiguous pixels and depthwise kernels vectorize across channels; float
//! values and graph inputs/outputs keep the logical row-major layout. Each node picks a kernel
//! (`choose`); anything without one becomes a host step (the interpreter, JIT only) with the reason kept.
//! Weights are packed for the target ISA once, here, with every constant zero-point term folded into the
//! bias (see runtime/src/kernels/gemm.rs).
use crate::host::{HostIn, HostStep};
use crate::memory::{self, Interval};
use crate::plan::{Blob, Io, Kernel, Plan, Step};
use crate::CodegenError;
use qcc_ir::{DType, Graph, NodeId, Op, QParams, QuantType, Type, ValueDef, ValueId};
use qcc_runtime::abi::*;
use qcc_runtime::kernels::dwconv::DwGeom;
use qcc_runtime::kernels::elementwise::IntElem;
use qcc_runtime::kernels::fgemm::pack_a;
use qcc_runtime::kernels::float::{BinOp, UnOp};
use qcc_runtime::kernels::gemm::{pack_b, packed_dims};
use qcc_runtime::kernels::Isa;
use qcc_runtime::qops::{per_channel, Requant};
use std::collections::HashMap;

#[derive(Clone, Debug)]
pub struct Options {
    pub isa: Isa,
    /// Allow host steps (the JIT can run them; object files cannot).
    pub allow_host: bool,
}

/// The kernel chosen for a node, with what lowering needs to know before memory planning.
enum Choice {
    Quantize,
    Dequantize,
    /// qconv as a GEMM; `im2col` = gather windows first (into a temporary of that many bytes);
    /// `implicit` = the VNNI kernel reads the windows straight from the input.
    ConvGemm {
        im2col: Option<usize>,
        implicit: bool,
    },
    DwConv,
    QGemm,
    QAdd,
    QGap,
    MaxPool,
    /// A reshape: plain copy, or a layout change between NHWC and the logical order.
    Copy {
        mode: usize,
    },
    Binary(BinOp),
    Unary(UnOp),
    Host(String),
    /// Float convolution as fgemm, after an f32 im2col into a temporary of that many bytes unless 1x1.
    FConv {
        im2col: Option<usize>,
    },
    FDwConv,
    /// Float Gemm with one row (the classifier of batch-1 models).
    FGemm,
    FGap,
    FMaxPool,
    /// Computed by an earlier step's fused kernel (qadd → dequantize → clamp → quantize).
    Absorbed,
}

/// Raw int8 weights in logical order, per-channel scales and zero points, bias.
type Weights = (Vec<i64>, Vec<f32>, Vec<i32>, Vec<i64>, Option<Vec<i32>>);

struct Ctx<'g> {
    g: &'g Graph,
    isa: Isa,
}

fn int_elem(d: DType) -> Option<IntElem> {
    match d {
        DType::U8 => Some(IntElem::U8),
        DType::I8 => Some(IntElem::I8),
        DType::I16 => Some(IntElem::I16),
        _ => None,
    }
}

/// (scale, zp, type) of a per-tensor quantized value with u8/i8/i16 storage.
fn per_tensor(t: &Type) -> Option<(f32, i32, &QuantType)> {
    let q = t.quant()?;
    int_elem(q.storage)?;
    match q.params {
        QParams::PerTensor { scale, zp } => Some((scale, zp, q)),
        _ => None,
    }
}

fn is_8bit(q: &QuantType) -> bool {
    matches!(q.storage, DType::U8 | DType::I8)
}

impl Ctx<'_> {
    fn is_io(&self, v: ValueId) -> bool {
        self.g.inputs().contains(&v) || self.g.outputs().contains(&v)
    }

    /// Integer 4-D activations inside the graph are NHWC.
    fn nhwc(&self, v: ValueId) -> bool {
        let t = self.g.ty(v);
        t.quant().is_some() && t.shape().is_some_and(|s| s.len() == 4) && !self.is_io(v) && !self.g.is_const(v)
    }

    /// Whether the stored bytes equal the logical row-major bytes.
    fn logical_bytes(&self, v: ValueId) -> bool {
        !self.nhwc(v) || self.g.ty(v).shape().is_some_and(|s| s[1] == 1 || s[2] * s[3] == 1)
    }

    fn choose(&self, n: NodeId) -> Choice {
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
                match per_tensor(oty) {
                    Some(_) => Choice::Quantize,
                    None => host("per-axis or i32 quantize"),
                }
            }
            Op::Dequantize => match (act_in(0), per_tensor(g.ty(ins[0]))) {
                (true, Some(_)) => Choice::Dequantize,
                _ => host("dequantize of a constant or per-axis value"),
            },
            Op::QConv { strides, pads, dilations, group, .. } => {
                if let Err(why) = self.conv_ok(n) {
                    return Choice::Host(why);
                }
                let xs = g.ty(ins[0]).shape().unwrap_or(&[]);
                let ws = g.ty(ins[1]).shape().unwrap_or(&[]);
                let (cin, m) = (xs[1], ws[0]);
                if *group == 1 {
                    let pointwise = ws[2] == 1 && ws[3] == 1 && strides.iter().all(|s| *s == 1) && pads.iter().all(|p| *p == 0);
                    if pointwise {
                        return Choice::ConvGemm { im2col: None, implicit: false };
                    }
                    if self.isa == Isa::Avx512Vnni && cin % 4 == 0 && ws[2] * ws[3] <= 64 {
                        return Choice::ConvGemm { im2col: None, implicit: true };
                    }
                    let os = oty.shape().unwrap_or(&[]);
                    let (kp, _) = packed_dims(ws[1] * ws[2] * ws[3], m);
                    return Choice::ConvGemm { im2col: Some(os[0] * os[2] * os[3] * kp), implicit: false };
                }
                if *group as usize == cin && m == cin && ws[1] == 1 && dilations.len() == 2 {
                    return Choice::DwConv;
                }
                host("grouped convolution that is not depthwise")
            }
            Op::QGemm { .. } => {
                let (Some((_, _, xq)), Some((_, _, oq))) = (per_tensor(g.ty(ins[0])), per_tensor(oty)) else {
                    return host("input or output is not per-tensor quantized");
                };
                if !act_in(0) || !is_8bit(xq) || !is_8bit(oq) || self.is_weights_ok(n).is_err() {
                    return Choice::Host(self.is_weights_ok(n).err().unwrap_or_else(|| "needs 8-bit activations".into()));
                }
                Choice::QGemm
            }
            Op::QAdd { .. } => {
                let same = ins.len() == 2 && ins.iter().all(|v| g.ty(*v).shape() == oty.shape() && !g.is_const(*v));
                let quant = ins.iter().all(|v| per_tensor(g.ty(*v)).is_some()) && per_tensor(oty).is_some();
                let layout = ins.iter().all(|v| self.nhwc(*v) == self.nhwc(out));
                if same && quant && layout {
                    Choice::QAdd
                } else {
                    host("qadd with broadcasting, constants or mixed layouts")
                }
            }
            Op::QGlobalAveragePool => {
                if act_in(0) && self.nhwc(ins[0]) && per_tensor(g.ty(ins[0])).is_some() && per_tensor(oty).is_some() {
                    Choice::QGap
                } else {
                    host("global average pool outside the NHWC integer path")
                }
            }
            Op::MaxPool { kernel, .. } => {
                if act_in(0) && kernel.len() == 2 && self.nhwc(ins[0]) && self.nhwc(out) && per_tensor(oty).is_some() {
                    Choice::MaxPool
                } else if act_in(0) && kernel.len() == 2 && self.f32_value(ins[0]) {
                    Choice::FMaxPool
                } else {
                    host("max pooling that is not 2-D over f32 or channels-last integers")
                }
            }
            Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Identity | Op::Dropout => {
                if !act_in(0) {
                    return host("reshape of a constant");
                }
                match (self.logical_bytes(ins[0]), self.logical_bytes(out)) {
                    (true, true) => Choice::Copy { mode: 0 },
                    (false, true) => Choice::Copy { mode: 1 },
                    (true, false) => Choice::Copy { mode: 2 },
                    (false, false) => host("reshape between two channels-last shapes"),
                }
            }
            op if BinOp::from_op(op).is_some() => {
                let f32s = ins.iter().chain([&out]).all(|v| g.ty(*v).elem() == Some(&qcc_ir::ElemType::Plain(DType::F32)));
                let consts_known = ins.iter().all(|v| !g.is_const(*v) || g.const_tensor(*v).is_some());
                match (ins.len() == 2 && f32s && consts_known && !ins.iter().all(|v| g.is_const(*v)), BinOp::from_op(op)) {
                    (true, Some(b)) => Choice::Binary(b),
                    _ => host("binary op on non-f32 values or with more than two inputs"),
                }
            }
            op if UnOp::from_op(op).is_some() => {
                let f32s = g.ty(ins[0]).elem() == Some(&qcc_ir::ElemType::Plain(DType::F32)) && oty.dtype() == Some(DType::F32);
                match (act_in(0) && f32s && oty.quant().is_none(), UnOp::from_op(op)) {
                    (true, Some(u)) => Choice::Unary(u),
                    _ => host("unary op on a constant or a non-f32 value"),
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
                    && xs.first() == Some(&1)
                    && self.f32_value(ins[0])
                    && g.const_tensor(ins[1]).is_some_and(|t| t.dtype() == DType::F32)
                    && bias_ok;
                if ok {
                    Choice::FGemm
                } else {
                    host("float Gemm other than one row times constant weights (alpha = beta = 1)")
                }
            }
            Op::GlobalAveragePool if act_in(0) && self.f32_value(ins[0]) && g.ty(ins[0]).shape().is_some_and(|s| s.len() == 4) => {
                Choice::FGap
            }
            op => Choice::Host(format!("no compiled kernel for {}", op.name())),
        }
    }

    fn f32_value(&self, v: ValueId) -> bool {
        self.g.ty(v).elem() == Some(&qcc_ir::ElemType::Plain(DType::F32))
    }

    /// A float convolution's kernel: fgemm (with im2col unless pointwise) or depthwise; batch 1, 2-D,
    /// constant f32 weights and bias.
    fn choose_fconv(&self, n: NodeId, strides: &[i64], pads: &[i64], group: i64) -> Result<Choice, String> {
        let g = self.g;
        let ins = &g.node(n).inputs;
        let (xs, ws) = (g.ty(ins[0]).shape().unwrap_or(&[]), g.ty(ins[1]).shape().unwrap_or(&[]));
        let consts = g.const_tensor(ins[1]).is_some() && ins.get(2).is_none_or(|b| g.const_tensor(*b).is_some());
        if g.is_const(ins[0]) || !self.f32_value(ins[0]) || xs.len() != 4 || ws.len() != 4 || xs[0] != 1 || !consts {
            return Err("float convolution other than 2-D, batch 1, constant weights".into());
        }
        if group == 1 {
            if ws[2] == 1 && ws[3] == 1 && strides.iter().all(|s| *s == 1) && pads.iter().all(|p| *p == 0) {
                return Ok(Choice::FConv { im2col: None });
            }
            let os = g.ty(g.node(n).output).shape().unwrap_or(&[]);
            return Ok(Choice::FConv { im2col: Some(ws[1] * ws[2] * ws[3] * os[2] * os[3] * 4) });
        }
        if group as usize == xs[1] && ws[0] == xs[1] && ws[1] == 1 {
            return Ok(Choice::FDwConv);
        }
        Err("grouped float convolution that is not depthwise".into())
    }

    /// The nodes dequantize → relu/clip → quantize that follow qadd `n` and only feed each other, with
    /// the final quantize per tensor in the same layout as the add.
    fn clamp_chain(&self, n: NodeId) -> Option<[NodeId; 3]> {
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

    fn is_weights_ok(&self, n: NodeId) -> Result<(), String> {
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
        if self.weights(n).is_none() {
            return Err("products could exceed 2^30 in an accumulator".into());
        }
        Ok(())
    }

    fn conv_ok(&self, n: NodeId) -> Result<(), String> {
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
    fn weights(&self, n: NodeId) -> Option<Weights> {
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

/// Lowers a verified graph with static shapes.
pub fn lower(g: &Graph, opts: &Options) -> Result<Plan, CodegenError> {
    let cx = Ctx { g, isa: opts.isa };
    let order = g.topo_order().map_err(|n| CodegenError::Unsupported { node: g.node(n).name().into(), msg: "cycle".into() })?;
    let mut choices: Vec<Choice> = order.iter().map(|&n| cx.choose(n)).collect();
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    // qadd → dequantize → relu/clip → quantize runs as one pass (the add's kernel applies the chain
    // exactly); `fused` maps the qadd's position to the final quantize node.
    let mut fused: HashMap<usize, NodeId> = HashMap::new();
    for i in 0..order.len() {
        if let (Choice::QAdd, Some(chain)) = (&choices[i], cx.clamp_chain(order[i])) {
            for n in &chain {
                choices[pos[n]] = Choice::Absorbed;
            }
            fused.insert(i, chain[2]);
        }
    }
    if !opts.allow_host {
        for (&n, c) in order.iter().zip(&choices) {
            if let Choice::Host(why) = c {
                let node = g.node(n);
                return Err(CodegenError::Unsupported {
                    node: node.name().into(),
                    msg: format!("{} cannot be compiled to an object file: {why}", node.op.name()),
                });
            }
        }
    }
    for &v in g.outputs() {
        if g.is_const(v) {
            return Err(CodegenError::Unsupported { node: g.describe_value(v), msg: "a graph output that is a constant".into() });
        }
    }
    for &v in g.inputs().iter().chain(g.outputs()) {
        if g.ty(v).numel().is_none() {
            return Err(CodegenError::Unsupported { node: g.describe_value(v), msg: "unknown shape".into() });
        }
    }

    // Buffers: positions are 0 for graph inputs, i + 1 for node i, order.len() + 1 for the outputs.
    let end = order.len() + 1;
    let bytes_of = |v: ValueId| g.ty(v).numel().unwrap_or(0) * g.ty(v).dtype().map_or(0, |d| d.size_bytes());
    let mut bufs: Vec<Interval> = Vec::new();
    let mut buf_of: HashMap<ValueId, usize> = HashMap::new();
    for &v in g.inputs() {
        buf_of.insert(v, bufs.len());
        bufs.push(Interval { bytes: bytes_of(v), first: 0, last: 0 });
    }
    let mut temp_of: HashMap<usize, usize> = HashMap::new();
    for (i, &n) in order.iter().enumerate() {
        if let Choice::Absorbed = choices[i] {
            continue;
        }
        let out = fused.get(&i).map_or(g.node(n).output, |q| g.node(*q).output);
        buf_of.insert(out, bufs.len());
        bufs.push(Interval { bytes: bytes_of(out), first: i + 1, last: i + 1 });
        if let Choice::ConvGemm { im2col: Some(b), .. } | Choice::FConv { im2col: Some(b) } = choices[i] {
            temp_of.insert(i, bufs.len());
            bufs.push(Interval { bytes: b, first: i + 1, last: i + 1 });
        }
    }
    for (i, &n) in order.iter().enumerate() {
        for v in &g.node(n).inputs {
            if let Some(&b) = buf_of.get(v) {
                bufs[b].last = bufs[b].last.max(i + 1);
            }
        }
    }
    for v in g.outputs() {
        if let Some(&b) = buf_of.get(v) {
            bufs[b].last = end;
        }
    }
    let (offsets, arena_bytes) = memory::assign(&bufs);
    let off = |v: ValueId| buf_of.get(&v).map(|b| offsets[*b]).unwrap_or(0);

    let mut blob = Blob::default();
    let mut steps = Vec::new();
    let mut hosts = Vec::new();
    let isa = opts.isa;
    for (i, (&n, choice)) in order.iter().zip(&choices).enumerate() {
        let node = g.node(n);
        let name = node.name().to_string();
        let ins = &node.inputs;
        let out = node.output;
        let oty = g.ty(out);
        let mut push = |kernel: Kernel, words: Vec<u64>, macs: u64, blob: &mut Blob| {
            let hdr = blob.push_words(&words);
            let why = if let Choice::Host(w) = choice { Some(w.clone()) } else { None };
            steps.push(Step { kernel, hdr, node: name.clone(), macs, why });
        };
        match choice {
            Choice::Quantize => {
                let (scale, zp, q) = per_tensor(oty).ok_or_else(|| internal(&name))?;
                let h = QuantizeHdr {
                    isa,
                    x: off(ins[0]),
                    len: oty.numel().unwrap_or(0),
                    to_nhwc: cx.nhwc(out),
                    dims: dims4(oty),
                    scale,
                    zp,
                    lo: q.qmin as i32,
                    hi: q.qmax as i32,
                    elem: int_elem(q.storage).ok_or_else(|| internal(&name))?,
                    out: off(out),
                };
                push(Kernel::Quantize, h.encode(), 0, &mut blob);
            }
            Choice::Dequantize => {
                let (scale, zp, q) = per_tensor(g.ty(ins[0])).ok_or_else(|| internal(&name))?;
                let h = DequantizeHdr {
                    isa,
                    x: off(ins[0]),
                    len: oty.numel().unwrap_or(0),
                    from_nhwc: cx.nhwc(ins[0]),
                    dims: dims4(g.ty(ins[0])),
                    scale,
                    zp,
                    elem: int_elem(q.storage).ok_or_else(|| internal(&name))?,
                    out: off(out),
                };
                push(Kernel::Dequantize, h.encode(), 0, &mut blob);
            }
            Choice::ConvGemm { im2col, implicit } => {
                let Op::QConv { strides, pads, dilations, act, .. } = &node.op else { return Err(internal(&name)) };
                let (xs, ws, os) = (shape(g, ins[0]), shape(g, ins[1]), shape(g, out));
                let (cin, m, kh, kw) = (xs[1], ws[0], ws[2], ws[3]);
                let k = cin * kh * kw;
                let (kp, _) = packed_dims(k, m);
                let rows = os[0] * os[2] * os[3];
                let (wv, sw, zw, bias, sat) = cx.weights(n).ok_or_else(|| internal(&name))?;
                // Row k of the GEMM is (ky, kx, c), the order im2col writes.
                let at = |kk: usize, nn: usize| {
                    let (tap, c) = (kk / cin, kk % cin);
                    wv[((nn * cin + c) * kh + tap / kw) * kw + tap % kw] as i8
                };
                let a = match im2col {
                    Some(_) => {
                        let temp = offsets[temp_of[&i]];
                        let (_, zx, xq) = per_tensor(g.ty(ins[0])).ok_or_else(|| internal(&name))?;
                        let h = Im2colHdr {
                            g: geom(&xs, &os, kh, kw, strides, pads, dilations),
                            cin,
                            pad_byte: if xq.storage == DType::I8 { zx as i8 as u8 as usize } else { zx as u8 as usize },
                            kp,
                            x: off(ins[0]),
                            out: temp,
                        };
                        push(Kernel::Im2col, h.encode(), 0, &mut blob);
                        (temp, kp)
                    }
                    None => (off(ins[0]), cin),
                };
                let mut h = gemm_hdr(g, &mut blob, isa, (ins[0], out, off(out)), (rows, k, m), a, &at, (&sw, &zw, &bias, &sat), *act)?;
                if *implicit {
                    let (_, zx, xq) = per_tensor(g.ty(ins[0])).ok_or_else(|| internal(&name))?;
                    let raw = if xq.storage == DType::I8 { zx as i8 as u8 } else { zx as u8 };
                    h.implicit = true;
                    h.conv = geom(&xs, &os, kh, kw, strides, pads, dilations);
                    h.pad = Arr { off: blob.push_bytes(&vec![raw; cin]), len: cin };
                }
                push(Kernel::Gemm, h.encode(), (rows * k * m) as u64, &mut blob);
            }
            Choice::QGemm => {
                let Op::QGemm { trans_b, act } = &node.op else { return Err(internal(&name)) };
                let (xs, ws) = (shape(g, ins[0]), shape(g, ins[1]));
                let (rows, k) = (xs[0], xs[1]);
                let m = if *trans_b { ws[0] } else { ws[1] };
                let (wv, sw, zw, bias, sat) = cx.weights(n).ok_or_else(|| internal(&name))?;
                let tb = *trans_b;
                let at = |kk: usize, nn: usize| (if tb { wv[nn * k + kk] } else { wv[kk * m + nn] }) as i8;
                let h = gemm_hdr(
                    g,
                    &mut blob,
                    isa,
                    (ins[0], out, off(out)),
                    (rows, k, m),
                    (off(ins[0]), k),
                    &at,
                    (&sw, &zw, &bias, &sat),
                    *act,
                )?;
                push(Kernel::Gemm, h.encode(), (rows * k * m) as u64, &mut blob);
            }
            Choice::DwConv => {
                let Op::QConv { strides, pads, dilations, act, .. } = &node.op else { return Err(internal(&name)) };
                let (xs, ws, os) = (shape(g, ins[0]), shape(g, ins[1]), shape(g, out));
                let (c, kh, kw) = (xs[1], ws[2], ws[3]);
                let (wv, sw, zw, bias, sat) = cx.weights(n).ok_or_else(|| internal(&name))?;
                let (sx, zx, xq) = per_tensor(g.ty(ins[0])).ok_or_else(|| internal(&name))?;
                let xor = xq.storage == DType::I8;
                let mut wts = vec![0i32; kh * kw * c];
                for ch in 0..c {
                    for tap in 0..kh * kw {
                        // i16 in the low half, 0 above: what the vpmaddwd kernel multiplies.
                        wts[tap * c + ch] = ((wv[ch * kh * kw + tap] - zw[ch] as i64) as i16 as u16) as i32;
                    }
                }
                let bias32: Vec<i32> = bias.iter().map(|b| *b as i32).collect();
                let zxu = zx as i64 + if xor { 128 } else { 0 };
                // Wrapping to i32 is exact modulo 2^32 (the kernel's sums are; the true value fits).
                let bias_full: Vec<i32> = (0..c)
                    .map(|ch| (bias[ch] - zxu * (0..kh * kw).map(|t| wv[ch * kh * kw + t] - zw[ch] as i64).sum::<i64>()) as i32)
                    .collect();
                let epi = epi_hdr(&mut blob, sx, &sw, g.ty(out), *act, c).map_err(|e| node_err(&name, e))?;
                let h = DwConvHdr {
                    isa,
                    g: geom(&xs, &os, kh, kw, strides, pads, dilations),
                    zx: zx + if xor { 128 } else { 0 },
                    xor,
                    wts: Arr { off: blob.push_i32(&wts), len: wts.len() },
                    bias: Arr { off: blob.push_i32(&bias32), len: c },
                    bias_full: Arr { off: blob.push_i32(&bias_full), len: c },
                    sat: sat.as_ref().map_or(Arr::default(), |s| Arr { off: blob.push_i32(s), len: c }),
                    epi,
                    x: off(ins[0]),
                    out: off(out),
                };
                push(Kernel::DwConv, h.encode(), (os[0] * os[2] * os[3] * c * kh * kw) as u64, &mut blob);
            }
            Choice::QAdd => {
                let Op::QAdd { act } = &node.op else { return Err(internal(&name)) };
                let pa = per_tensor(g.ty(ins[0])).ok_or_else(|| internal(&name))?;
                let pb = per_tensor(g.ty(ins[1])).ok_or_else(|| internal(&name))?;
                let pm = per_tensor(oty).ok_or_else(|| internal(&name))?;
                let (out, mid) = match fused.get(&i) {
                    Some(q) => {
                        let u = g.producer(g.node(*q).inputs[0]).ok_or_else(|| internal(&name))?;
                        let Some(UnOp::Clip { min, max }) = UnOp::from_op(&g.node(u).op) else { return Err(internal(&name)) };
                        (g.node(*q).output, Some((min, max)))
                    }
                    None => (out, None),
                };
                let po = per_tensor(g.ty(out)).ok_or_else(|| internal(&name))?;
                let e = |q: &QuantType| int_elem(q.storage).unwrap_or(IntElem::U8);
                let h = QAddHdr {
                    isa,
                    len: oty.numel().unwrap_or(0),
                    a: off(ins[0]),
                    sa: pa.0,
                    za: pa.1,
                    ea: e(pa.2),
                    b: off(ins[1]),
                    sb: pb.0,
                    zb: pb.1,
                    eb: e(pb.2),
                    out: off(out),
                    so: po.0,
                    zo: po.1,
                    eo: e(po.2),
                    lo: po.2.qmin as i32,
                    hi: po.2.qmax as i32,
                    act: *act,
                    mid_on: mid.is_some(),
                    mid_s: pm.0,
                    mid_z: pm.1,
                    mid_lo: pm.2.qmin as i32,
                    mid_hi: pm.2.qmax as i32,
                    mid_min: mid.map_or(0.0, |m| m.0),
                    mid_max: mid.map_or(0.0, |m| m.1),
                };
                push(Kernel::QAdd, h.encode(), 0, &mut blob);
            }
            Choice::QGap => {
                let xs = shape(g, ins[0]);
                let (sx, zx, xq) = per_tensor(g.ty(ins[0])).ok_or_else(|| internal(&name))?;
                let (sy, zy, oq) = per_tensor(oty).ok_or_else(|| internal(&name))?;
                let h = QGapHdr {
                    x: off(ins[0]),
                    ex: int_elem(xq.storage).unwrap_or(IntElem::U8),
                    n: xs[0],
                    hw: xs[2] * xs[3],
                    c: xs[1],
                    sx,
                    zx,
                    out: off(out),
                    eo: int_elem(oq.storage).unwrap_or(IntElem::U8),
                    sy,
                    zy,
                    lo: oq.qmin as i32,
                    hi: oq.qmax as i32,
                };
                push(Kernel::QGap, h.encode(), 0, &mut blob);
            }
            Choice::MaxPool => {
                let Op::MaxPool { kernel, strides, pads, dilations, .. } = &node.op else { return Err(internal(&name)) };
                let (xs, os) = (shape(g, ins[0]), shape(g, out));
                let (_, _, q) = per_tensor(oty).ok_or_else(|| internal(&name))?;
                let h = MaxPoolHdr {
                    elem: int_elem(q.storage).unwrap_or(IntElem::U8),
                    g: geom(&xs, &os, kernel[0] as usize, kernel[1] as usize, strides, pads, dilations),
                    x: off(ins[0]),
                    out: off(out),
                };
                push(Kernel::MaxPool, h.encode(), 0, &mut blob);
            }
            Choice::Copy { mode } => {
                let esize = oty.dtype().map_or(1, |d| d.size_bytes());
                let dims = if *mode == 1 { dims4(g.ty(ins[0])) } else { dims4(oty) };
                let h = CopyHdr { src: off(ins[0]), dst: off(out), bytes: bytes_of(out), esize, mode: *mode, dims };
                push(Kernel::Copy, h.encode(), 0, &mut blob);
            }
            Choice::Binary(op) => {
                let os = shape(g, out);
                let operand = |v: ValueId, blob: &mut Blob| -> Result<(usize, bool, Arr), CodegenError> {
                    let s = shape(g, v);
                    let strides = broadcast_strides(&s, &os);
                    let st = Arr { off: blob.push_words(&strides.iter().map(|x| *x as u64).collect::<Vec<_>>()), len: os.len() };
                    match g.const_tensor(v) {
                        Some(t) if g.is_const(v) => Ok((blob.push_f32(&t.to_f32_vec()), true, st)),
                        _ => Ok((off(v), false, st)),
                    }
                };
                let (a, a_const, sa) = operand(ins[0], &mut blob)?;
                let (b, b_const, sb) = operand(ins[1], &mut blob)?;
                let dims = Arr { off: blob.push_words(&os.iter().map(|x| *x as u64).collect::<Vec<_>>()), len: os.len() };
                let h = BinaryHdr { isa, op: op.code() as usize, dims, a, a_const, sa, b, b_const, sb, out: off(out) };
                push(Kernel::Binary, h.encode(), 0, &mut blob);
            }
            Choice::Unary(f) => {
                let h = UnaryHdr::new(isa, *f, oty.numel().unwrap_or(0), off(ins[0]), off(out));
                push(Kernel::Unary, h.encode(), 0, &mut blob);
            }
            Choice::Absorbed => {}
            Choice::FConv { im2col } => {
                let Op::Conv { strides, pads, dilations, act, .. } = &node.op else { return Err(internal(&name)) };
                let (xs, ws, os) = (shape(g, ins[0]), shape(g, ins[1]), shape(g, out));
                let (m, k, p) = (ws[0], ws[1] * ws[2] * ws[3], os[2] * os[3]);
                let w = g.const_tensor(ins[1]).ok_or_else(|| internal(&name))?.to_f32_vec();
                let packed = pack_a(m, k, |r, kk| w[r * k + kk]);
                let b = match im2col {
                    Some(_) => {
                        let temp = offsets[temp_of[&i]];
                        let h = Im2colF32Hdr { g: geom(&xs, &os, ws[2], ws[3], strides, pads, dilations), x: off(ins[0]), out: temp };
                        push(Kernel::Im2colF32, h.encode(), 0, &mut blob);
                        temp
                    }
                    None => off(ins[0]),
                };
                let bias = f32_arr(g, ins.get(2), &mut blob);
                let a = Arr { off: blob.push_f32(&packed), len: packed.len() };
                let h = FGemmHdr { isa, m, k, p, a, b, ldb: p, bias, act: *act, out: off(out), rs: p, cs: 1 };
                push(Kernel::FGemm, h.encode(), (m * k * p) as u64, &mut blob);
            }
            Choice::FDwConv => {
                let Op::Conv { strides, pads, dilations, act, .. } = &node.op else { return Err(internal(&name)) };
                let (xs, ws, os) = (shape(g, ins[0]), shape(g, ins[1]), shape(g, out));
                let w = g.const_tensor(ins[1]).ok_or_else(|| internal(&name))?.to_f32_vec();
                let bias = f32_arr(g, ins.get(2), &mut blob);
                let h = FDwConvHdr {
                    isa,
                    g: geom(&xs, &os, ws[2], ws[3], strides, pads, dilations),
                    x: off(ins[0]),
                    w: Arr { off: blob.push_f32(&w), len: w.len() },
                    bias,
                    act: *act,
                    out: off(out),
                };
                push(Kernel::FDwConv, h.encode(), 0, &mut blob);
            }
            Choice::FGemm => {
                let Op::Gemm { trans_b, act, .. } = &node.op else { return Err(internal(&name)) };
                let (xs, os) = (shape(g, ins[0]), shape(g, out));
                let (k, nn) = (xs[1], os[1]);
                let w = g.const_tensor(ins[1]).ok_or_else(|| internal(&name))?.to_f32_vec();
                let tb = *trans_b;
                let packed = pack_a(nn, k, |r, kk| if tb { w[r * k + kk] } else { w[kk * nn + r] });
                let bias = f32_arr(g, ins.get(2), &mut blob);
                let a = Arr { off: blob.push_f32(&packed), len: packed.len() };
                // One input row: column p = 0 of b is the row itself (k at stride 1), out[n] at stride 1.
                let h = FGemmHdr { isa, m: nn, k, p: 1, a, b: off(ins[0]), ldb: 1, bias, act: *act, out: off(out), rs: 1, cs: nn };
                push(Kernel::FGemm, h.encode(), (nn * k) as u64, &mut blob);
            }
            Choice::FGap => {
                let xs = shape(g, ins[0]);
                let h = FGapHdr { x: off(ins[0]), planes: xs[0] * xs[1], hw: xs[2] * xs[3], out: off(out) };
                push(Kernel::FGap, h.encode(), 0, &mut blob);
            }
            Choice::FMaxPool => {
                let Op::MaxPool { kernel, strides, pads, dilations, .. } = &node.op else { return Err(internal(&name)) };
                let (xs, os) = (shape(g, ins[0]), shape(g, out));
                let h = FMaxPoolHdr {
                    g: geom(&xs, &os, kernel[0] as usize, kernel[1] as usize, strides, pads, dilations),
                    x: off(ins[0]),
                    out: off(out),
                };
                push(Kernel::FMaxPool, h.encode(), 0, &mut blob);
            }
            Choice::Host(_) => {
                let inputs =
                    ins.iter()
                        .map(|&v| match &g.value(v).def {
                            ValueDef::Const(_) => g.const_tensor(v).cloned().map(HostIn::Const).ok_or_else(|| CodegenError::Unsupported {
                                node: name.clone(),
                                msg: "a constant's data was elided".into(),
                            }),
                            _ => Ok(HostIn::Arena { off: off(v), ty: g.ty(v).clone(), nhwc: cx.nhwc(v) }),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                let step = Box::new(HostStep {
                    node: name.clone(),
                    op: node.op.clone(),
                    in_tys: ins.iter().map(|v| g.ty(*v).clone()).collect(),
                    out_ty: oty.clone(),
                    inputs,
                    out: off(out),
                    out_nhwc: cx.nhwc(out),
                });
                let addr = &*step as *const HostStep as u64;
                hosts.push(step);
                push(Kernel::Host, vec![addr], 0, &mut blob);
            }
        }
    }
    blob.finish();
    let io = |v: ValueId| -> Io {
        let t = g.ty(v);
        Io {
            name: g.value(v).name.clone().unwrap_or_else(|| v.to_string()),
            dtype: t.dtype().unwrap_or(DType::F32),
            shape: t.shape().unwrap_or(&[]).to_vec(),
            offset: off(v),
            bytes: bytes_of(v),
        }
    };
    Ok(Plan {
        isa,
        blob,
        steps,
        arena_bytes,
        inputs: g.inputs().iter().map(|&v| io(v)).collect(),
        outputs: g.outputs().iter().map(|&v| io(v)).collect(),
        hosts,
    })
}

fn internal(node: &str) -> CodegenError {
    CodegenError::Unsupported { node: node.into(), msg: "internal error: kernel choice and lowering disagree".into() }
}

fn node_err(node: &str, msg: String) -> CodegenError {
    CodegenError::Unsupported { node: node.into(), msg }
}

/// An optional constant f32 vector (a bias) in the blob; empty when absent.
fn f32_arr(g: &Graph, v: Option<&ValueId>, blob: &mut Blob) -> Arr {
    match v.and_then(|v| g.const_tensor(*v)) {
        Some(t) => {
            let d = t.to_f32_vec();
            Arr { off: blob.push_f32(&d), len: d.len() }
        }
        None => Arr::default(),
    }
}

/// Element strides of an operand of shape `s` broadcast to `out` (right-aligned; 0 on broadcast axes).
fn broadcast_strides(s: &[usize], out: &[usize]) -> Vec<usize> {
    let lead = out.len() - s.len().min(out.len());
    let mut strides = vec![0usize; out.len()];
    let mut acc = 1;
    for i in (0..s.len()).rev() {
        if s[i] != 1 {
            strides[lead + i] = acc;
        }
        acc *= s[i];
    }
    strides
}

fn shape(g: &Graph, v: ValueId) -> Vec<usize> {
    g.ty(v).shape().unwrap_or(&[]).to_vec()
}

fn dims4(t: &Type) -> [usize; 4] {
    let s = t.shape().unwrap_or(&[]);
    if s.len() == 4 {
        [s[0], s[1], s[2], s[3]]
    } else {
        [0; 4]
    }
}

fn geom(xs: &[usize], os: &[usize], kh: usize, kw: usize, strides: &[i64], pads: &[i64], dil: &[i64]) -> DwGeom {
    let two = |v: &[i64], d: usize| [v.first().map_or(d, |x| *x as usize), v.get(1).map_or(d, |x| *x as usize)];
    DwGeom {
        n: xs[0],
        h: xs[2],
        w: xs[3],
        c: xs[1],
        oh: os[2],
        ow: os[3],
        kh,
        kw,
        stride: two(strides, 1),
        pad: two(pads, 0),
        dil: two(dil, 1),
    }
}

/// Per-channel requantization arrays, padded to `np` channels.
fn epi_hdr(blob: &mut Blob, sx: f32, sw: &[f32], out: &Type, act: Option<qcc_ir::Act>, np: usize) -> Result<EpiHdr, String> {
    let oq = out.quant().ok_or("output is not quantized")?;
    let rq = Requant::new(sx, sw, oq, act)?;
    if rq.mult.iter().chain(&rq.acc_scale).any(|m| !m.is_finite()) {
        return Err("requantization multiplier overflows f32".into());
    }
    let pad = |v: &[f32]| {
        let mut v = v.to_vec();
        v.resize(np, 0.0);
        v
    };
    let mult = pad(&rq.mult);
    let acc_scale = pad(&rq.acc_scale);
    Ok(EpiHdr {
        mult: Arr { off: blob.push_f32(&mult), len: np },
        zy: rq.zp as i32,
        qlo: rq.lo as i32,
        qhi: rq.hi as i32,
        act,
        acc_scale: Arr { off: blob.push_f32(&acc_scale), len: np },
        out_scale: rq.out_scale,
    })
}

/// Packs a GEMM's weights and folds the zero-point terms into its bias (see kernels/gemm.rs).
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn gemm_hdr(
    g: &Graph,
    blob: &mut Blob,
    isa: Isa,
    (x, out, out_off): (ValueId, ValueId, usize),
    (rows, k, m): (usize, usize, usize),
    (a, lda): (usize, usize),
    at: &dyn Fn(usize, usize) -> i8,
    (sw, zw, bias, sat): (&[f32], &[i32], &[i64], &Option<Vec<i32>>),
    act: Option<qcc_ir::Act>,
) -> Result<GemmHdr, CodegenError> {
    let (sx, zx, xq) = per_tensor(g.ty(x)).ok_or_else(|| internal("gemm"))?;
    let xor = xq.storage == DType::I8;
    let zxu = zx as i64 + if xor { 128 } else { 0 };
    let (_, np) = packed_dims(k, m);
    let packed = pack_b(isa, k, m, at);
    let mut eff = vec![0i32; np];
    for (c, e) in eff.iter_mut().enumerate().take(m) {
        let colsum: i64 = (0..k).map(|kk| at(kk, c) as i64).sum();
        // Wrapping to i32 is exact modulo 2^32, which is all the kernel's ring arithmetic needs.
        *e = (bias[c] - zxu * colsum + k as i64 * zxu * zw[c] as i64) as i32;
    }
    let mut zwp: Vec<i32> = zw.to_vec();
    zwp.resize(np, 0);
    let any_zw = zw.iter().any(|z| *z != 0);
    let epi = epi_hdr(blob, sx, sw, g.ty(out), act, np).map_err(|e| node_err("gemm", e))?;
    Ok(GemmHdr {
        isa,
        m: rows,
        k,
        n: m,
        a,
        lda,
        xor,
        b: Arr { off: blob.push_i8(&packed), len: packed.len() },
        bias: Arr { off: blob.push_i32(&eff), len: np },
        zw: if any_zw { Arr { off: blob.push_i32(&zwp), len: np } } else { Arr::default() },
        sat: match sat {
            Some(s) => {
                let mut s = s.clone();
                s.resize(np, 0);
                Arr { off: blob.push_i32(&s), len: np }
            }
            None => Arr::default(),
        },
        epi,
        out: out_off,
        ldo: m,
        implicit: false,
        conv: DwGeom { n: 0, h: 0, w: 0, c: 0, oh: 0, ow: 0, kh: 0, kw: 0, stride: [1, 1], pad: [0, 0], dil: [1, 1] },
        pad: Arr::default(),
    })
}
