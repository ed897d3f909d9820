//! Lowering a graph to an execution plan: kernel choice (choose.rs), memory planning, then one header per
//! step (built with emit.rs). Integer 4-D activations are stored channels-last (NHWC), so a 1x1
//! convolution is a GEMM over contiguous pixels and depthwise kernels vectorize across channels; float
//! values and graph inputs/outputs keep the logical row-major layout. A node without a kernel becomes a
//! host step (runtime/src/host.rs: the interpreter runs it, in the JIT and in object files alike) with
//! the reason kept. Weights are packed for the target ISA once, here, with every constant zero-point
//! term folded into the bias (see runtime/src/kernels/gemm.rs).
use crate::choose::{int_elem, per_tensor, Choice, Ctx};
use crate::emit::*;
use crate::memory::{self, Interval};
use crate::plan::{Blob, Io, Kernel, Plan, Step};
use crate::CodegenError;
use qcc_ir::{print_graph, ConstData, DType, Graph, NodeId, Op, PrintOptions, QuantType, ValueDef, ValueId};
use qcc_runtime::abi::*;
use qcc_runtime::kernels::dwconv::DwGeom;
use qcc_runtime::kernels::elementwise::IntElem;
use qcc_runtime::kernels::fgemm::pack_a;
use qcc_runtime::kernels::float::UnOp;
use qcc_runtime::kernels::fnhwc::pack_conv_weights;
use qcc_runtime::kernels::gemm::packed_dims;
use qcc_runtime::kernels::Isa;
use std::collections::HashMap;

#[derive(Clone, Debug)]
pub struct Options {
    pub isa: Isa,
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
        if planes_step(&choices[i]) && cx.writes_planes(n) {
            temp_of.insert(i, bufs.len());
            bufs.push(Interval { bytes: bytes_of(out), first: i + 1, last: i + 1 });
        }
        if let Choice::ConvGemm { im2col: Some(b), .. } = choices[i] {
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
        // Into logical order from channels-last: the kernel writes channels-last into a temporary,
        // reordered after the match.
        let planes = (planes_step(choice) && cx.writes_planes(n)).then(|| offsets[temp_of[&i]]);
        let dst = planes.unwrap_or(off(out));
        match choice {
            Choice::Quantize => {
                let (scale, zp, q) = per_tensor(oty).ok_or_else(|| internal(&name))?;
                let h = QuantizeHdr {
                    isa,
                    x: off(ins[0]),
                    len: oty.numel().unwrap_or(0),
                    to_nhwc: cx.nhwc(out) && !cx.nhwc(ins[0]),
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
                    x: off(ins[0]),
                    len: oty.numel().unwrap_or(0),
                    from_nhwc: cx.nhwc(ins[0]) && !cx.nhwc(out),
                    dims: dims4(g.ty(ins[0])),
                    scale,
                    zp,
                    elem: int_elem(q.storage).ok_or_else(|| internal(&name))?,
                    out: off(out),
                };
                push(Kernel::Dequantize, h.encode(), 0, &mut blob);
            }
            Choice::ConvGemm { im2col, implicit, rows: row_segs } => {
                let Op::QConv { strides, pads, dilations, act, group } = &node.op else { return Err(internal(&name)) };
                let (xs, ws, os) = (shape(g, ins[0]), shape(g, ins[1]), shape(g, out));
                // A grouped convolution is one product per group, reading its cin channels of each input
                // pixel (xs[1] bytes apart) and writing its m channels of each output pixel.
                let groups = *group as usize;
                let (cin, m, kh, kw) = (ws[1], ws[0] / groups, ws[2], ws[3]);
                // Row segments: each kernel row's kw·cin bytes padded to a multiple of 4 (zero weights).
                let seg = (kw * cin).div_ceil(4) * 4;
                let k = if *row_segs { kh * seg } else { cin * kh * kw };
                let (kp, _) = packed_dims(k, m);
                let rows = os[0] * os[2] * os[3];
                let (wv, sw, zw, bias, sat) = cx.weights(n).ok_or_else(|| internal(&name))?;
                let (_, zx, xq) = per_tensor(g.ty(ins[0])).ok_or_else(|| internal(&name))?;
                let raw = if xq.storage == DType::I8 { zx as i8 as u8 } else { zx as u8 };
                for gi in 0..groups {
                    // Row k of the GEMM is (ky, kx, c), the order im2col writes (with row segments, each
                    // kernel row padded).
                    let at = |kk: usize, nn: usize| {
                        let (ky, j) = if *row_segs { (kk / seg, kk % seg) } else { (kk / (kw * cin), kk % (kw * cin)) };
                        if j >= kw * cin {
                            return 0;
                        }
                        let (kx, c) = (j / cin, j % cin);
                        wv[(((gi * m + nn) * cin + c) * kh + ky) * kw + kx] as i8
                    };
                    let x = off(ins[0]) + gi * cin;
                    let a = match im2col {
                        Some(_) => {
                            let temp = offsets[temp_of[&i]];
                            let h = Im2colHdr {
                                g: geom(&xs, &os, kh, kw, strides, pads, dilations),
                                cin,
                                pad_byte: raw as usize,
                                kp,
                                x,
                                out: temp,
                            };
                            push(Kernel::Im2col, h.encode(), 0, &mut blob);
                            (temp, kp)
                        }
                        None => (x, xs[1]),
                    };
                    let cols = gi * m..(gi + 1) * m;
                    let sat = sat.as_ref().map(|s| s[cols.clone()].to_vec());
                    let params = (&sw[cols.clone()], &zw[cols.clone()], &bias[cols], &sat);
                    let mut h = gemm_hdr(g, &mut blob, isa, (ins[0], out, off(out) + gi * m), (rows, k, m), a, &at, params, *act)?;
                    h.ldo = ws[0];
                    if let Some(&r) = ins.get(3) {
                        // The residual is stored like the output: this group's columns of its rows.
                        with_residual(&mut h.epi, g, r, off(r) + gi * m, ws[0]).map_err(|e| node_err(&name, e))?;
                    }
                    if *implicit {
                        h.implicit = true;
                        h.conv_rows = *row_segs;
                        h.conv = geom(&xs, &os, kh, kw, strides, pads, dilations);
                        h.conv.c = cin;
                        let pad_len = if *row_segs { seg } else { cin };
                        h.pad = Arr { off: blob.push_bytes(&vec![raw; pad_len]), len: pad_len };
                    }
                    push(Kernel::Gemm, h.encode(), (rows * k * m) as u64, &mut blob);
                }
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
                let geo = geom(&xs, &os, kh, kw, strides, pads, dilations);
                // AVX-512: the VNNI kernel's table, or (weights beyond i8) the vpmaddwd kernel's pairs.
                let (vnni, pairs) = match isa {
                    Isa::Avx512Vnni => {
                        let mult = blob.f32s(epi.mult);
                        match qcc_runtime::kernels::dwvnni::table(&wts, &geo, &bias_full, &mult, sat.as_deref()) {
                            Some(t) => (Arr { off: blob.push_i32(&t), len: t.len() }, Arr::default()),
                            None => {
                                let p = qcc_runtime::kernels::dwconv::pair_weights(&wts, kh * kw, c);
                                (Arr::default(), Arr { off: blob.push_i32(&p), len: p.len() })
                            }
                        }
                    }
                    _ => (Arr::default(), Arr::default()),
                };
                let h = DwConvHdr {
                    isa,
                    g: geo,
                    zx: zx + if xor { 128 } else { 0 },
                    xor,
                    wts: Arr { off: blob.push_i32(&wts), len: wts.len() },
                    pairs,
                    vnni,
                    bias: Arr { off: blob.push_i32(&bias32), len: c },
                    bias_full: Arr { off: blob.push_i32(&bias_full), len: c },
                    sat: sat.as_ref().map_or(Arr::default(), |s| Arr { off: blob.push_i32(s), len: c }),
                    epi,
                    x: off(ins[0]),
                    out: off(out),
                };
                push(Kernel::DwConv, h.encode(), (os[0] * os[2] * os[3] * c * kh * kw) as u64, &mut blob);
            }
            Choice::WideConv => {
                let (xs, ws, os) = (shape(g, ins[0]), shape(g, ins[1]), shape(g, out));
                let (sx, zx, xq) = per_tensor(g.ty(ins[0])).ok_or_else(|| internal(&name))?;
                let ex = int_elem(xq.storage).ok_or_else(|| internal(&name))?;
                let eo = int_elem(g.ty(out).quant().ok_or_else(|| internal(&name))?.storage).ok_or_else(|| internal(&name))?;
                let wv = g.const_tensor(ins[1]).and_then(|t| t.to_i64_vec()).ok_or_else(|| internal(&name))?;
                // Weights in [m][kh][kw][c / groups] order; a GEMM is a 1×1 convolution over [rows, 1, 1, k].
                let (geo, m, groups, act, ordered) = match &node.op {
                    Op::QConv { strides, pads, dilations, group, act } => {
                        let (m, cg, taps) = (ws[0], ws[1], ws[2] * ws[3]);
                        let w: Vec<i64> = (0..m * taps * cg).map(|i| wv[(i / (taps * cg) * cg + i % cg) * taps + i / cg % taps]).collect();
                        (geom(&xs, &os, ws[2], ws[3], strides, pads, dilations), m, *group as usize, *act, w)
                    }
                    Op::QGemm { trans_b, act } => {
                        let (rows, k) = (xs[0], xs[1]);
                        let m = if *trans_b { ws[0] } else { ws[1] };
                        let w: Vec<i64> = (0..m * k).map(|i| if *trans_b { wv[i] } else { wv[i % k * m + i / k] }).collect();
                        (geom(&[rows, k, 1, 1], &[rows, m, 1, 1], 1, 1, &[], &[], &[]), m, 1, *act, w)
                    }
                    _ => return Err(internal(&name)),
                };
                let wq = g.ty(ins[1]).quant().ok_or_else(|| internal(&name))?;
                let (sw, zw) = qcc_runtime::qops::per_channel(wq, m).map_err(|e| node_err(&name, e))?;
                let (taps, cg) = (geo.kh * geo.kw, geo.c / groups);
                let w: Vec<i32> =
                    ordered.chunks(taps * cg).zip(&zw).flat_map(|(ch, z)| ch.iter().map(move |v| (v - *z as i64) as i32)).collect();
                let bias: Vec<i32> = match ins.get(2) {
                    Some(b) => {
                        g.const_tensor(*b).and_then(|t| t.to_i64_vec()).ok_or_else(|| internal(&name))?.iter().map(|v| *v as i32).collect()
                    }
                    None => vec![0; m],
                };
                let mut h = WideConvHdr {
                    isa,
                    g: geo,
                    m,
                    groups,
                    x: off(ins[0]),
                    ex,
                    zx,
                    w: Arr { off: blob.push_i32(&w), len: w.len() },
                    bias: Arr { off: blob.push_i32(&bias), len: m },
                    epi: epi_hdr(&mut blob, sx, &sw, g.ty(out), act, m).map_err(|e| node_err(&name, e))?,
                    out: off(out),
                    eo,
                };
                if let Some(&r) = ins.get(3) {
                    with_residual(&mut h.epi, g, r, off(r), m).map_err(|e| node_err(&name, e))?;
                }
                push(Kernel::WideConv, h.encode(), (os.iter().product::<usize>() * taps * cg) as u64, &mut blob);
            }
            Choice::QAdd => {
                let (Op::QAdd { act } | Op::QMul { act }) = &node.op else { return Err(internal(&name)) };
                // Operands broadcast in storage order (both layouts are the output's), padded to 4 dims.
                let pad4 = |d: Vec<usize>| [vec![1; 4 - d.len()], d].concat();
                let od = pad4(cx.physical(out));
                let strides4 = |v: ValueId| -> [usize; 4] {
                    let st = broadcast_strides(&pad4(cx.physical(v)), &od);
                    [st[0], st[1], st[2], st[3]]
                };
                let bcast = ins.iter().any(|v| g.ty(*v).shape() != oty.shape());
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
                    mul: matches!(node.op, Op::QMul { .. }),
                    bcast,
                    dims: [od[0], od[1], od[2], od[3]],
                    sta: strides4(ins[0]),
                    stb: strides4(ins[1]),
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
            Choice::Copy => {
                let h = CopyHdr { src: off(ins[0]), dst: off(out), bytes: bytes_of(out) };
                push(Kernel::Copy, h.encode(), 0, &mut blob);
            }
            Choice::Binary(op) => {
                let os = shape(g, out);
                // The output is written in storage order; each operand is read through its strides per
                // logical dim (storage strides for channels-last ones), listed in that order.
                let order: Vec<usize> = if cx.nhwc(out) || planes.is_some() { vec![0, 2, 3, 1] } else { (0..os.len()).collect() };
                let operand = |v: ValueId, blob: &mut Blob| -> Result<(usize, bool, Arr), CodegenError> {
                    let s = shape(g, v);
                    let mut strides = broadcast_strides(&s, &os);
                    if cx.nhwc(v) {
                        let st = cx.storage_strides(v);
                        strides = (0..4).map(|d| if s[d] == 1 { 0 } else { st[d] }).collect();
                    }
                    let strides: Vec<usize> = order.iter().map(|&d| strides[d]).collect();
                    let st = Arr { off: blob.push_words(&strides.iter().map(|x| *x as u64).collect::<Vec<_>>()), len: os.len() };
                    match g.const_tensor(v) {
                        Some(t) if g.is_const(v) => Ok((blob.push_f32(&t.to_f32_vec()), true, st)),
                        _ => Ok((off(v), false, st)),
                    }
                };
                let (a, a_const, sa) = operand(ins[0], &mut blob)?;
                let (b, b_const, sb) = operand(ins[1], &mut blob)?;
                let dims = Arr { off: blob.push_words(&order.iter().map(|&d| os[d] as u64).collect::<Vec<_>>()), len: os.len() };
                let h = BinaryHdr { isa, op: op.code() as usize, dims, a, a_const, sa, b, b_const, sb, out: dst };
                push(Kernel::Binary, h.encode(), 0, &mut blob);
            }
            Choice::Unary(f) => {
                let mut x = off(ins[0]);
                if cx.nhwc(ins[0]) != cx.nhwc(out) && !(cx.logical_bytes(ins[0]) && cx.logical_bytes(out)) {
                    // Between channels-last and logical order: a strided copy into the output reorders
                    // the values, and the op runs there in place.
                    let strides = (&cx.storage_strides(ins[0])[..], &cx.storage_strides(out)[..]);
                    push(Kernel::Strided, reorder4(&shape(g, out), strides, (x, off(out))).encode(), 0, &mut blob);
                    x = off(out);
                }
                let h = UnaryHdr::new(isa, *f, oty.numel().unwrap_or(0), x, off(out));
                push(Kernel::Unary, h.encode(), 0, &mut blob);
            }
            Choice::Absorbed => {}
            Choice::FConv { gather } => {
                let Op::Conv { strides, pads, dilations, act, group } = &node.op else { return Err(internal(&name)) };
                let (xs, ws, os) = (shape(g, ins[0]), shape(g, ins[1]), shape(g, out));
                // A grouped convolution is one product per group: its input channels and output channels
                // are contiguous planes of the NCHW tensors.
                let groups = *group as usize;
                let (m, k, p) = (ws[0] / groups, ws[1] * ws[2] * ws[3], os[2] * os[3]);
                let w = g.const_tensor(ins[1]).ok_or_else(|| internal(&name))?.to_f32_vec();
                let bias = f32_arr(g, ins.get(2), &mut blob);
                let (x_img, out_img, x_group) = (4 * xs[1] * xs[2] * xs[3], 4 * ws[0] * p, 4 * ws[1] * xs[2] * xs[3]);
                let mut g1 = geom(&xs, &os, ws[2], ws[3], strides, pads, dilations);
                (g1.n, g1.c) = (1, ws[1]);
                for gi in 0..groups {
                    let packed = pack_a(m, k, |r, kk| w[(gi * m + r) * k + kk]);
                    let a = Arr { off: blob.push_f32(&packed), len: packed.len() };
                    let bias = if bias.len > 0 { Arr { off: bias.off + 4 * gi * m, len: m } } else { bias };
                    // One step per image of the batch (the kernel's geometry is one image's).
                    for img in 0..xs[0] {
                        let at = img * out_img + gi * 4 * m * p;
                        let (res_on, res) = ins.get(3).map_or((false, 0), |r| (true, off(*r) + at));
                        let h = FGemmHdr {
                            isa,
                            m,
                            k,
                            p,
                            a,
                            b: off(ins[0]) + img * x_img + gi * x_group,
                            ldb: p,
                            conv_on: *gather,
                            g: if *gather { g1 } else { DwGeom::default() },
                            bias,
                            act: *act,
                            res_on,
                            res,
                            out: off(out) + at,
                            rs: p,
                            cs: 1,
                        };
                        push(Kernel::FGemm, h.encode(), (m * k * p) as u64, &mut blob);
                    }
                }
            }
            Choice::FConvNhwc { nchw_in } => {
                let Op::Conv { strides, pads, dilations, act, group } = &node.op else { return Err(internal(&name)) };
                let (xs, ws, os) = (shape(g, ins[0]), shape(g, ins[1]), shape(g, out));
                // A grouped convolution is one product per group, reading its channels of each pixel (or,
                // from an NCHW input, its planes) and writing its channels of each output pixel in place.
                let groups = *group as usize;
                let (m, cin) = (ws[0] / groups, ws[1]);
                let wt = g.const_tensor(ins[1]).ok_or_else(|| internal(&name))?.to_f32_vec();
                let bias = f32_arr(g, ins.get(2), &mut blob);
                let mut g1 = geom(&xs, &os, ws[2], ws[3], strides, pads, dilations);
                (g1.n, g1.c) = (1, cin);
                let (x_img, out_img) = (4 * xs[1] * xs[2] * xs[3], 4 * ws[0] * os[2] * os[3]);
                // Pixel and channel strides of the output: NHWC, or NCHW for a graph output.
                let (ldo, cso) = if cx.nhwc(out) { (ws[0], 1) } else { (1, os[2] * os[3]) };
                for gi in 0..groups {
                    let packed =
                        pack_conv_weights(m, cin, ws[2], ws[3], |o, c, ky, kx| wt[(((gi * m + o) * cin + c) * ws[2] + ky) * ws[3] + kx]);
                    let w = Arr { off: blob.push_f32(&packed), len: packed.len() };
                    let bias = if bias.len > 0 { Arr { off: bias.off + 4 * gi * m, len: m } } else { bias };
                    for img in 0..xs[0] {
                        let at = img * out_img + 4 * gi * m * cso;
                        let (res_on, res) = ins.get(3).map_or((false, 0), |r| (true, off(*r) + at));
                        let h = FConvNhwcHdr {
                            isa,
                            g: g1,
                            x: off(ins[0]) + img * x_img + 4 * gi * cin * if *nchw_in { xs[2] * xs[3] } else { 1 },
                            ldx: xs[1],
                            nchw: *nchw_in,
                            m,
                            w,
                            bias,
                            act: *act,
                            res_on,
                            res,
                            out: off(out) + at,
                            ldo,
                            cso,
                        };
                        push(Kernel::FConvNhwc, h.encode(), (m * cin * ws[2] * ws[3] * os[2] * os[3]) as u64, &mut blob);
                    }
                }
            }
            Choice::FDwNhwc => {
                let Op::Conv { strides, pads, dilations, act, .. } = &node.op else { return Err(internal(&name)) };
                let (xs, ws, os) = (shape(g, ins[0]), shape(g, ins[1]), shape(g, out));
                let wt = g.const_tensor(ins[1]).ok_or_else(|| internal(&name))?.to_f32_vec();
                // [c][taps] → [taps][c]: a tap's weights for consecutive channels are one vector.
                let taps = ws[2] * ws[3];
                let w: Vec<f32> = (0..taps * xs[1]).map(|i| wt[(i % xs[1]) * taps + i / xs[1]]).collect();
                let h = FDwNhwcHdr {
                    isa,
                    g: geom(&xs, &os, ws[2], ws[3], strides, pads, dilations),
                    x: off(ins[0]),
                    w: Arr { off: blob.push_f32(&w), len: w.len() },
                    bias: f32_arr(g, ins.get(2), &mut blob),
                    act: *act,
                    max: false,
                    out: dst,
                };
                push(Kernel::FDwNhwc, h.encode(), 0, &mut blob);
            }
            Choice::FGroupNhwc => {
                let Op::Conv { strides, pads, dilations, act, group } = &node.op else { return Err(internal(&name)) };
                let (xs, ws, os) = (shape(g, ins[0]), shape(g, ins[1]), shape(g, out));
                let wt = g.const_tensor(ins[1]).ok_or_else(|| internal(&name))?.to_f32_vec();
                // [m][cg][kh][kw] → [tap][cg][m]: one vector load gives a tap's weights for 16 outputs.
                let (m, cg, taps) = (ws[0], ws[1], ws[2] * ws[3]);
                let w: Vec<f32> = (0..taps * cg * m).map(|i| wt[((i % m) * cg + i / m % cg) * taps + i / (m * cg)]).collect();
                let h = FGroupNhwcHdr {
                    isa,
                    g: geom(&xs, &os, ws[2], ws[3], strides, pads, dilations),
                    x: off(ins[0]),
                    m,
                    mg: m / *group as usize,
                    w: Arr { off: blob.push_f32(&w), len: w.len() },
                    bias: f32_arr(g, ins.get(2), &mut blob),
                    act: *act,
                    out: off(out),
                };
                push(Kernel::FGroupNhwc, h.encode(), (m * cg * taps * os[0] * os[2] * os[3]) as u64, &mut blob);
            }
            Choice::FMaxPoolNhwc => {
                let Op::MaxPool { kernel, strides, pads, dilations, .. } = &node.op else { return Err(internal(&name)) };
                let (xs, os) = (shape(g, ins[0]), shape(g, out));
                let h = FDwNhwcHdr {
                    isa,
                    g: geom(&xs, &os, kernel[0] as usize, kernel[1] as usize, strides, pads, dilations),
                    x: off(ins[0]),
                    w: Arr::default(),
                    bias: Arr::default(),
                    act: None,
                    max: true,
                    out: dst,
                };
                push(Kernel::FDwNhwc, h.encode(), 0, &mut blob);
            }
            Choice::FGapNhwc => {
                let xs = shape(g, ins[0]);
                let h = FGapNhwcHdr { x: off(ins[0]), n: xs[0], pixels: xs[2] * xs[3], c: xs[1], out: off(out) };
                push(Kernel::FGapNhwc, h.encode(), 0, &mut blob);
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
                // One step per input row: column p = 0 of b is the row itself (k at stride 1), out[n] at
                // stride 1.
                for row in 0..xs[0] {
                    let h = FGemmHdr {
                        isa,
                        m: nn,
                        k,
                        p: 1,
                        a,
                        b: off(ins[0]) + 4 * row * k,
                        ldb: 1,
                        conv_on: false,
                        g: DwGeom::default(),
                        bias,
                        act: *act,
                        res_on: false,
                        res: 0,
                        out: off(out) + 4 * row * nn,
                        rs: 1,
                        cs: nn,
                    };
                    push(Kernel::FGemm, h.encode(), (nn * k) as u64, &mut blob);
                }
            }
            Choice::FGap => {
                let xs = shape(g, ins[0]);
                let h = FGapHdr { x: off(ins[0]), planes: xs[0] * xs[1], hw: xs[2] * xs[3], out: off(out) };
                push(Kernel::FGap, h.encode(), 0, &mut blob);
            }
            Choice::QAvgPool => {
                let Op::QAveragePool { kernel, strides, pads, dilations, count_include_pad, .. } = &node.op else {
                    return Err(internal(&name));
                };
                let (xs, os) = (shape(g, ins[0]), shape(g, out));
                let (sx, zx, xq) = per_tensor(g.ty(ins[0])).ok_or_else(|| internal(&name))?;
                let (sy, zy, oq) = per_tensor(oty).ok_or_else(|| internal(&name))?;
                let h = QAvgPoolHdr {
                    ex: int_elem(xq.storage).unwrap_or(IntElem::U8),
                    g: geom(&xs, &os, kernel[0] as usize, kernel[1] as usize, strides, pads, dilations),
                    pe: [pads.get(2).map_or(0, |p| *p as usize), pads.get(3).map_or(0, |p| *p as usize)],
                    include_pad: *count_include_pad,
                    sx,
                    zx,
                    x: off(ins[0]),
                    eo: int_elem(oq.storage).unwrap_or(IntElem::U8),
                    sy,
                    zy,
                    lo: oq.qmin as i32,
                    hi: oq.qmax as i32,
                    out: off(out),
                };
                push(Kernel::QAvgPool, h.encode(), 0, &mut blob);
            }
            Choice::Concat => {
                let (Op::QConcat { axis } | Op::Concat { axis }) = &node.op else { return Err(internal(&name)) };
                let os = shape(g, out);
                let logical = if *axis < 0 { *axis + os.len() as i64 } else { *axis } as usize;
                // The concatenation axis in storage order.
                let pa = if cx.nhwc(out) { [0, 3, 1, 2][logical] } else { logical };
                let od = cx.physical(out);
                // f32 values have no parameters: (1, 0, none) marks them, and they are always copied.
                fn params(t: &qcc_ir::Type) -> (f32, i32, Option<&QuantType>) {
                    per_tensor(t).map(|(s, z, q)| (s, z, Some(q))).unwrap_or((1.0, 0, None))
                }
                let (sy, zy, oq) = params(oty);
                let mut dst_off = 0;
                for &v in ins {
                    let d = cx.physical(v);
                    let (ss, zs, sq) = params(g.ty(v));
                    let len: usize = d[pa..].iter().product();
                    let elem = |q: Option<&QuantType>| q.and_then(|q| int_elem(q.storage)).unwrap_or(IntElem::U8);
                    let h = RequantRowsHdr {
                        copy: match (sq, oq) {
                            (None, _) => 4,
                            (Some(a), Some(b)) if (ss, zs, a.storage) == (sy, zy, b.storage) => a.storage.size_bytes(),
                            _ => 0,
                        },
                        rows: d[..pa].iter().product(),
                        len,
                        src: off(v),
                        es: elem(sq),
                        ss,
                        zs,
                        dst: off(out),
                        ed: elem(oq),
                        sd: sy,
                        zd: zy,
                        dst_stride: od[pa..].iter().product(),
                        dst_off,
                        lo: oq.map_or(0, |q| q.qmin as i32),
                        hi: oq.map_or(0, |q| q.qmax as i32),
                    };
                    push(Kernel::RequantRows, h.encode(), 0, &mut blob);
                    dst_off += len;
                }
            }
            Choice::Strided => {
                let (is, os, od, xs) = (cx.storage_strides(ins[0]), cx.storage_strides(out), shape(g, out), shape(g, ins[0]));
                let lead = 6 - od.len();
                let (mut dims, mut ss, mut ds) = ([1usize; 6], [0usize; 6], [0usize; 6]);
                let esize = oty.dtype().map_or(4, |d| d.size_bytes());
                let mut src = off(ins[0]);
                match &node.op {
                    Op::Transpose { perm } => {
                        for (d, &p) in perm.iter().enumerate() {
                            (dims[lead + d], ss[lead + d], ds[lead + d]) = (od[d], is[p as usize], os[d]);
                        }
                    }
                    Op::Slice { starts, ends, axes, steps } => {
                        let mut step = vec![1usize; xs.len()];
                        for (i, &a) in axes.iter().enumerate() {
                            let (s, st, _) =
                                qcc_ir::infer::slice_axis(xs[a as usize], starts[i], ends[i], steps[i]).map_err(|_| internal(&name))?;
                            // Positive steps only (choose's rule).
                            step[a as usize] = st as usize;
                            src += s as usize * is[a as usize] * esize;
                        }
                        for d in 0..od.len() {
                            (dims[lead + d], ss[lead + d], ds[lead + d]) = (od[d], is[d] * step[d], os[d]);
                        }
                    }
                    // A reshape between channels-last and logical storage: the 4-D side's logical
                    // dims, its storage strides against the other side's row-major ones.
                    Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Identity | Op::Dropout => {
                        let four = if cx.nhwc(ins[0]) { ins[0] } else { out };
                        let (d4, s4) = (shape(g, four), cx.storage_strides(four));
                        let row = crate::choose::contiguous(&d4);
                        let (from, to) = if four == ins[0] { (s4, row) } else { (row, s4) };
                        for d in 0..4 {
                            (dims[2 + d], ss[2 + d], ds[2 + d]) = (d4[d], from[d], to[d]);
                        }
                    }
                    _ => return Err(internal(&name)),
                }
                push(Kernel::Strided, StridedHdr { esize, dims, ss, ds, src, dst: off(out) }.encode(), 0, &mut blob);
            }
            Choice::Lut => {
                let Op::QAct { act } = &node.op else { return Err(internal(&name)) };
                let (sx, zx, xq) = per_tensor(g.ty(ins[0])).ok_or_else(|| internal(&name))?;
                let (sy, zy, oq) = per_tensor(oty).ok_or_else(|| internal(&name))?;
                // Entry b: the input whose stored byte is b (i8 values by their two's complement byte).
                let signed = xq.storage == DType::I8;
                let table: Vec<u8> = (0..256i64)
                    .map(|b| {
                        let q = if signed { b as u8 as i8 as i64 } else { b };
                        qcc_runtime::qops::qact_value(*act, q, (sx, zx), (sy, zy), oq.qmin, oq.qmax) as u8
                    })
                    .collect();
                let table = blob.push_bytes(&table);
                let len = oty.numel().unwrap_or(0);
                push(Kernel::Lut, LutHdr { len, x: off(ins[0]), table, out: off(out) }.encode(), 0, &mut blob);
            }
            Choice::Softmax => {
                let Op::Softmax { axis, coerce_2d } = &node.op else { return Err(internal(&name)) };
                let xs = shape(g, ins[0]);
                let a = qcc_ir::infer::norm_axis(*axis, xs.len()).map_err(|_| internal(&name))?;
                let (outer, len, inner) = qcc_runtime::softmax_dims(&xs, a, *coerce_2d);
                push(Kernel::Softmax, SoftmaxHdr { outer, len, inner, x: off(ins[0]), out: off(out) }.encode(), 0, &mut blob);
            }
            Choice::FAvgPool | Choice::FAvgPoolNhwc => {
                let Op::AveragePool { kernel, strides, pads, dilations, count_include_pad, .. } = &node.op else {
                    return Err(internal(&name));
                };
                let (xs, os) = (shape(g, ins[0]), shape(g, out));
                let h = FAvgPoolHdr {
                    g: geom(&xs, &os, kernel[0] as usize, kernel[1] as usize, strides, pads, dilations),
                    pe: [pads.get(2).map_or(0, |p| *p as usize), pads.get(3).map_or(0, |p| *p as usize)],
                    include_pad: *count_include_pad,
                    x: off(ins[0]),
                    out: dst,
                };
                // The same header for either layout: the kernels differ in how they walk the pixels.
                let kernel = if matches!(choice, Choice::FAvgPoolNhwc) { Kernel::FAvgPoolNhwc } else { Kernel::FAvgPool };
                push(kernel, h.encode(), 0, &mut blob);
            }
            Choice::FMaxPool => {
                let Op::MaxPool { kernel, strides, pads, dilations, .. } = &node.op else { return Err(internal(&name)) };
                let (xs, os) = (shape(g, ins[0]), shape(g, out));
                let h = FMaxPoolHdr {
                    isa,
                    g: geom(&xs, &os, kernel[0] as usize, kernel[1] as usize, strides, pads, dilations),
                    x: off(ins[0]),
                    out: off(out),
                };
                push(Kernel::FMaxPool, h.encode(), 0, &mut blob);
            }
            Choice::Host(_) => {
                let (text, arena_ins) = host_graph(g, n)?;
                let words: Vec<u64> = arena_ins.iter().flat_map(|&v| [off(v) as u64, cx.nhwc(v) as u64]).collect();
                let h = HostHdr {
                    text: Arr { off: blob.push_bytes(text.as_bytes()), len: text.len() },
                    hash: qcc_runtime::host::text_hash(text.as_bytes()) as usize,
                    ins: Arr { off: blob.push_words(&words), len: words.len() },
                    out: off(out),
                    out_nhwc: cx.nhwc(out),
                };
                push(Kernel::Host, h.encode(), 0, &mut blob);
            }
        }
        if let Some(t) = planes {
            let os = shape(g, out);
            let (c, hh, ww) = (os[1], os[2], os[3]);
            let from = [hh * ww * c, 1, ww * c, c];
            let h = reorder4(&os, (&from, &crate::choose::contiguous(&os)), (t, off(out)));
            let why = None;
            steps.push(Step { kernel: Kernel::Strided, hdr: blob.push_words(&h.encode()), node: name.clone(), macs: 0, why });
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
    })
}

/// The steps whose channels-last kernel can write a logical-order output through a temporary
/// (`Ctx::writes_planes`).
fn planes_step(c: &Choice) -> bool {
    matches!(c, Choice::Binary(_) | Choice::FMaxPoolNhwc | Choice::FAvgPoolNhwc | Choice::FDwNhwc)
}

/// The strided copy of f32 values of 4-D shape `d` from byte offset `src` (element strides `from`, per
/// logical dim) to `dst` (strides `to`): a reorder between channels-last and logical order.
fn reorder4(d: &[usize], (from, to): (&[usize], &[usize]), (src, dst): (usize, usize)) -> StridedHdr {
    let (mut dims, mut ss, mut ds) = ([1usize; 6], [0usize; 6], [0usize; 6]);
    for a in 0..4 {
        (dims[2 + a], ss[2 + a], ds[2 + a]) = (d[a], from[a], to[a]);
    }
    StridedHdr { esize: 4, dims, ss, ds, src, dst }
}

/// The one-node graph an interpreted step runs, as .qir text with its constants in full, and per graph
/// input the value of `g` it reads.
fn host_graph(g: &Graph, n: NodeId) -> Result<(String, Vec<ValueId>), CodegenError> {
    let node = g.node(n);
    let mut sg = Graph::new("step");
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    let mut arena_ins = Vec::new();
    for &v in &node.inputs {
        if map.contains_key(&v) {
            continue;
        }
        let val = g.value(v);
        let nv = match &val.def {
            ValueDef::Const(_) => {
                let t = g.const_tensor(v).ok_or_else(|| node_err(node.name(), "a constant's data was elided".into()))?;
                sg.add_const_typed(ConstData::Data(t.clone()), val.ty.clone(), val.name.clone())
            }
            _ => {
                arena_ins.push(v);
                sg.add_input(val.ty.clone(), val.name.clone())
            }
        };
        map.insert(v, nv);
    }
    let ins = node.inputs.iter().map(|v| map[v]).collect();
    let o = sg.add_node(node.op.clone(), ins, g.ty(node.output).clone(), node.loc.clone());
    sg.set_outputs(vec![o]);
    Ok((print_graph(&sg, PrintOptions { elide_constants: false }), arena_ins))
}
