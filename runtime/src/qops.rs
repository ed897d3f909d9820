//! The integer ops of quantized graphs, exactly as docs/semantics.md defines them. Sums of integer
//! products are formed exactly (in f64, exact below 2^53, which every i32 accumulator is); the result is
//! rescaled once in f32 and rounded half to even.
use crate::eval::R;
use crate::nn::conv_core;
use crate::quant::quantize_value;
use ndarray::{ArrayD, IxDyn};
use qcc_ir::{Act, DType, QParams, QuantType, Tensor, Type};

/// Scale and zero point of a per-tensor quantized type.
pub fn per_tensor(q: &QuantType) -> R<(f32, i32)> {
    match q.params {
        QParams::PerTensor { scale, zp } => Ok((scale, zp)),
        _ => Err("expected per-tensor quantization".into()),
    }
}

/// Per-channel scales and zero points of `n` channels (a per-tensor type repeats its one pair).
pub fn per_channel(q: &QuantType, n: usize) -> R<(Vec<f32>, Vec<i32>)> {
    match &q.params {
        QParams::PerTensor { scale, zp } => Ok((vec![*scale; n], vec![*zp; n])),
        QParams::PerAxis { scales, zps, .. } if scales.len() == n => Ok((scales.clone(), zps.clone())),
        _ => Err(format!("expected {n} channels of quantization parameters")),
    }
}

fn ints(t: &Tensor) -> R<Vec<i64>> {
    t.to_i64_vec().ok_or_else(|| "expected an integer tensor".into())
}

/// Stores quantized values (already clamped to the type's range) as the type's storage.
pub fn store(v: Vec<i64>, q: &QuantType, shape: &[usize]) -> R<Tensor> {
    let s = IxDyn(shape);
    let e = |e: ndarray::ShapeError| e.to_string();
    Ok(match q.storage {
        DType::U8 => Tensor::U8(ArrayD::from_shape_vec(s, v.into_iter().map(|x| x as u8).collect()).map_err(e)?),
        DType::I8 => Tensor::I8(ArrayD::from_shape_vec(s, v.into_iter().map(|x| x as i8).collect()).map_err(e)?),
        DType::I16 => Tensor::I16(ArrayD::from_shape_vec(s, v.into_iter().map(|x| x as i16).collect()).map_err(e)?),
        DType::I32 => Tensor::I32(ArrayD::from_shape_vec(s, v.into_iter().map(|x| x as i32).collect()).map_err(e)?),
        d => return Err(format!("cannot store quantized values as {d}")),
    })
}

/// How an accumulator becomes an output value: an integer clamp for no activation, ReLU and clip; the
/// general float path for the others.
pub struct Requant {
    /// Per channel: f32(sx * sw[c] / sy), computed in f64 and rounded once.
    pub mult: Vec<f32>,
    /// Per channel: f32(sx * sw[c]), the real value of one accumulator step.
    pub acc_scale: Vec<f32>,
    pub out_scale: f32,
    pub zp: i64,
    pub lo: i64,
    pub hi: i64,
    pub float_act: Option<Act>,
    /// A qconv's residual input (sr, zr): its term f32(r − zr) · f32(sr / sy) joins the product before
    /// rounding (f32(r − zr) · sr on the float path).
    pub residual: Option<Residual>,
}

/// The residual's parameters as the requantization uses them.
#[derive(Clone, Copy, Debug)]
pub struct Residual {
    /// f32(sr / sy), computed in f64.
    pub mult: f32,
    pub scale: f32,
    pub zp: i32,
}

impl Residual {
    pub fn new(sr: f32, zr: i32, sy: f32) -> Residual {
        Residual { mult: (sr as f64 / sy as f64) as f32, scale: sr, zp: zr }
    }
}

impl Requant {
    pub fn new(sx: f32, sw: &[f32], out: &QuantType, act: Option<Act>) -> R<Requant> {
        let (sy, zy) = per_tensor(out)?;
        let mult = sw.iter().map(|s| ((sx as f64 * *s as f64) / sy as f64) as f32).collect();
        let acc_scale = sw.iter().map(|s| (sx as f64 * *s as f64) as f32).collect();
        let (mut lo, mut hi) = (out.qmin, out.qmax);
        let mut float_act = None;
        match act {
            None => {}
            Some(Act::Relu) => lo = lo.max(zy as i64),
            // quantize(clip(v, a, b)) == clamp(quantize(v), quantize(a), quantize(b)): quantize is monotonic.
            Some(Act::Clip { min, max }) => {
                lo = lo.max(quantize_value(min, sy, zy, out.qmin, out.qmax));
                hi = hi.min(quantize_value(max, sy, zy, out.qmin, out.qmax));
            }
            Some(a) => float_act = Some(a),
        }
        Ok(Requant { mult, acc_scale, out_scale: sy, zp: zy as i64, lo, hi, float_act, residual: None })
    }

    /// The output integer for accumulator `acc` of channel `c`.
    #[inline]
    pub fn apply(&self, acc: i64, c: usize) -> i64 {
        let a = acc.clamp(i32::MIN as i64, i32::MAX as i64) as f32;
        match self.float_act {
            None => (((a * self.mult[c]).round_ties_even() as i64) + self.zp).clamp(self.lo, self.hi),
            Some(act) => quantize_value(act.apply(a * self.acc_scale[c]), self.out_scale, self.zp as i32, self.lo, self.hi),
        }
    }

    /// The output integer for accumulator `acc` of channel `c` plus the stored residual `r`.
    #[inline]
    pub fn apply_residual(&self, acc: i64, c: usize, r: i64) -> i64 {
        let Some(res) = self.residual else { return self.apply(acc, c) };
        let a = acc.clamp(i32::MIN as i64, i32::MAX as i64) as f32;
        // r − zr fits 17 bits, so its f32 is exact.
        let d = (r - res.zp as i64) as f32;
        match self.float_act {
            None => (((a * self.mult[c] + d * res.mult).round_ties_even() as i64) + self.zp).clamp(self.lo, self.hi),
            Some(act) => quantize_value(act.apply(a * self.acc_scale[c] + d * res.scale), self.out_scale, self.zp as i32, self.lo, self.hi),
        }
    }
}

fn quant_of<'a>(t: &'a Type, what: &str) -> R<&'a QuantType> {
    t.quant().ok_or_else(|| format!("{what} is not quantized"))
}

/// Exact Σ (x − zx)(w − zw[c]) of a convolution over integer tensors, in NCHW output order.
#[allow(clippy::too_many_arguments)]
fn conv_sums(
    x: &Tensor,
    zx: i32,
    w: &Tensor,
    zw: &[i32],
    strides: &[i64],
    pads: &[i64],
    dil: &[i64],
    group: usize,
    out_shape: &[usize],
) -> R<Vec<f64>> {
    let xv: Vec<f64> = ints(x)?.into_iter().map(|v| (v - zx as i64) as f64).collect();
    let ws = w.shape();
    let per_m: usize = ws[1..].iter().product();
    let wv: Vec<f64> = ints(w)?.into_iter().enumerate().map(|(i, v)| (v - zw[i / per_m] as i64) as f64).collect();
    Ok(conv_core(&xv, x.shape(), &wv, ws, strides, pads, dil, group, out_shape)?.into_iter().collect())
}

/// Exact Σ_k (x − zx)(w − zw[n]) of a matrix product x [M, K] @ op(w) as [M, N].
fn gemm_sums(x: &Tensor, zx: i32, w: &Tensor, zw: &[i32], trans_b: bool, n: usize) -> R<ndarray::Array2<f64>> {
    let (mrows, k) = (x.shape()[0], x.shape()[1]);
    let xm = ndarray::Array2::from_shape_vec((mrows, k), ints(x)?.into_iter().map(|v| (v - zx as i64) as f64).collect())
        .map_err(|e| e.to_string())?;
    let wv = ints(w)?;
    // w as [K, N] with its per-column zero point removed.
    let wm = ndarray::Array2::from_shape_fn((k, n), |(kk, nn)| {
        let v = if trans_b { wv[nn * k + kk] } else { wv[kk * n + nn] };
        (v - zw[nn] as i64) as f64
    });
    Ok(xm.dot(&wm))
}

/// Integer convolution: acc = Σ (x - zx)(w - zw[c]) + bias[c], padding contributes 0, then requantized.
#[allow(clippy::too_many_arguments)]
pub fn qconv(
    ins: &[&Tensor],
    tys: &[&Type],
    strides: &[i64],
    pads: &[i64],
    dil: &[i64],
    group: usize,
    act: Option<Act>,
    out: &Type,
) -> R<Tensor> {
    let (xq, wq, oq) = (quant_of(tys[0], "input")?, quant_of(tys[1], "weight")?, quant_of(out, "output")?);
    let (sx, zx) = per_tensor(xq)?;
    let m = ins[1].shape()[0];
    let (sw, zw) = per_channel(wq, m)?;
    let out_shape = out.shape().ok_or("unknown output shape")?;
    let acc = conv_sums(ins[0], zx, ins[1], &zw, strides, pads, dil, group, out_shape)?;
    let bias = match ins.get(2) {
        Some(b) => ints(b)?,
        None => vec![0; m],
    };
    let mut rq = Requant::new(sx, &sw, oq, act)?;
    let residual = match ins.get(3) {
        Some(r) => {
            let (sr, zr) = per_tensor(quant_of(tys[3], "residual")?)?;
            rq.residual = Some(Residual::new(sr, zr, rq.out_scale));
            let rv = ints(r)?;
            if rv.len() != acc.len() {
                return Err(format!("residual has {} elements, the output {}", rv.len(), acc.len()));
            }
            Some(rv)
        }
        None => None,
    };
    let sp: usize = out_shape[2..].iter().product();
    let v: Vec<i64> = acc
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let c = (i / sp.max(1)) % m;
            match &residual {
                Some(r) => rq.apply_residual(*a as i64 + bias[c], c, r[i]),
                None => rq.apply(*a as i64 + bias[c], c),
            }
        })
        .collect();
    store(v, oq, out_shape)
}

/// Integer matrix product y[m, n] = Σ_k (x - zx)(w - zw[n]) + bias[n], requantized per output column.
pub fn qgemm(ins: &[&Tensor], tys: &[&Type], trans_b: bool, act: Option<Act>, out: &Type) -> R<Tensor> {
    let (xq, wq, oq) = (quant_of(tys[0], "input")?, quant_of(tys[1], "weight")?, quant_of(out, "output")?);
    let (sx, zx) = per_tensor(xq)?;
    let ws = ins[1].shape();
    let n = if trans_b { ws[0] } else { ws[1] };
    let (sw, zw) = per_channel(wq, n)?;
    let acc = gemm_sums(ins[0], zx, ins[1], &zw, trans_b, n)?;
    let bias = match ins.get(2) {
        Some(b) => ints(b)?,
        None => vec![0; n],
    };
    let rq = Requant::new(sx, &sw, oq, act)?;
    let v: Vec<i64> = acc.indexed_iter().map(|((_, c), a)| rq.apply(*a as i64 + bias[c], c)).collect();
    store(v, oq, &[acc.nrows(), n])
}

/// The u8 parameters dynamic quantization gives a tensor (ONNX DynamicQuantizeLinear): the range
/// [min(0, min x), max(0, max x)] in f32, scale = (b − a) / 255, zero point = rne(−a / scale) clamped to
/// 0..255; an all-zero (or non-finite) range gets scale 1.
pub fn dynamic_qparams(x: &ArrayD<f32>) -> (f32, i32) {
    let (a, b) = x.iter().fold((0f32, 0f32), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let scale = (b - a) / 255.0;
    let scale = if scale > 0.0 && scale.is_finite() { scale } else { 1.0 };
    (scale, (-a / scale).round_ties_even().clamp(0.0, 255.0) as i32)
}

/// The f32 input of a dynamic op, quantized to u8 with its own parameters.
fn dynamic_input(t: &Tensor) -> R<(Tensor, f32, i32)> {
    let x = t.as_f32().ok_or("the input of a dynamic op must be f32")?;
    let (sx, zx) = dynamic_qparams(x);
    let q = QuantType::new(DType::U8, QParams::PerTensor { scale: sx, zp: zx });
    Ok((crate::quant::quantize(x, &q)?, sx, zx))
}

/// dynamic_qdq: x quantized with its own parameters and dequantized.
pub fn dynamic_qdq(x: &Tensor) -> R<Tensor> {
    let (q, sx, zx) = dynamic_input(x)?;
    let qt = QuantType::new(DType::U8, QParams::PerTensor { scale: sx, zp: zx });
    Ok(Tensor::F32(crate::quant::dequantize(&q, &qt)?))
}

/// y = act(f32(acc) · f32(sx · sw[c]) + bias[c]) for dynamic ops, the accumulator clamped to i32.
fn dynamic_output(acc: f64, sx: f32, sw: f32, bias: f32, act: Option<Act>) -> f32 {
    let v = acc.clamp(i32::MIN as f64, i32::MAX as f64) as f32 * (sx * sw) + bias;
    act.map_or(v, |f| f.apply(v))
}

fn f32_bias(b: Option<&&Tensor>, n: usize) -> R<Vec<f32>> {
    match b {
        Some(b) => Ok(b.as_f32().ok_or("the bias of a dynamic op must be f32")?.iter().copied().collect()),
        None => Ok(vec![0.0; n]),
    }
}

/// Dynamically quantized convolution (docs/semantics.md): x quantized to u8 from its own range, exact
/// integer sums with the int8 weights, one f32 rescale per output plus the f32 bias.
#[allow(clippy::too_many_arguments)]
pub fn dyn_qconv(
    ins: &[&Tensor],
    tys: &[&Type],
    strides: &[i64],
    pads: &[i64],
    dil: &[i64],
    group: usize,
    act: Option<Act>,
    out_shape: &[usize],
) -> R<Tensor> {
    let (x, sx, zx) = dynamic_input(ins[0])?;
    let m = ins[1].shape()[0];
    let (sw, zw) = per_channel(quant_of(tys[1], "weight")?, m)?;
    let acc = conv_sums(&x, zx, ins[1], &zw, strides, pads, dil, group, out_shape)?;
    let bias = f32_bias(ins.get(2), m)?;
    let sp: usize = out_shape[2..].iter().product::<usize>().max(1);
    let v = acc.iter().enumerate().map(|(i, a)| dynamic_output(*a, sx, sw[i / sp % m], bias[i / sp % m], act)).collect();
    Ok(Tensor::F32(ArrayD::from_shape_vec(IxDyn(out_shape), v).map_err(|e| e.to_string())?))
}

/// Dynamically quantized matrix product, as dyn_qconv.
pub fn dyn_qgemm(ins: &[&Tensor], tys: &[&Type], trans_b: bool, act: Option<Act>) -> R<Tensor> {
    let (x, sx, zx) = dynamic_input(ins[0])?;
    let ws = ins[1].shape();
    let n = if trans_b { ws[0] } else { ws[1] };
    let (sw, zw) = per_channel(quant_of(tys[1], "weight")?, n)?;
    let acc = gemm_sums(&x, zx, ins[1], &zw, trans_b, n)?;
    let bias = f32_bias(ins.get(2), n)?;
    let v: Vec<f32> = acc.indexed_iter().map(|((_, c), a)| dynamic_output(*a, sx, sw[c], bias[c], act)).collect();
    Ok(Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[acc.nrows(), n]), v).map_err(|e| e.to_string())?))
}

/// Quantized add or multiply: dequantize both inputs in f32, combine, activation, quantize (so it equals
/// its QDQ form).
pub fn qbinary(ins: &[&Tensor], tys: &[&Type], mul: bool, act: Option<Act>, out: &Type) -> R<Tensor> {
    let oq = quant_of(out, "output")?;
    let a = crate::quant::dequantize(ins[0], quant_of(tys[0], "input 0")?)?;
    let b = crate::quant::dequantize(ins[1], quant_of(tys[1], "input 1")?)?;
    let shape = out.shape().ok_or("unknown output shape")?;
    let mut y = ArrayD::<f32>::zeros(IxDyn(shape));
    ndarray::Zip::from(&mut y).and_broadcast(&a).and_broadcast(&b).for_each(|o, &x, &y| {
        let v = if mul { x * y } else { x + y };
        *o = act.map_or(v, |f| f.apply(v));
    });
    crate::quant::quantize(&y, oq)
}

/// Quantized concatenation: quantize(concat(dequantize(x_i))). An input whose parameters equal the
/// output's comes through unchanged (f32(f32(n·s) / s) rounds back to n for every 16-bit n).
pub fn qconcat(ins: &[&Tensor], tys: &[&Type], axis: usize, out: &Type) -> R<Tensor> {
    let oq = quant_of(out, "output")?;
    let parts = ins
        .iter()
        .zip(tys)
        .enumerate()
        .map(|(i, (t, ty))| crate::quant::dequantize(t, quant_of(ty, &format!("input {i}"))?))
        .collect::<R<Vec<_>>>()?;
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    let y = ndarray::concatenate(ndarray::Axis(axis), &views).map_err(|e| e.to_string())?;
    crate::quant::quantize(&y, oq)
}

/// Quantized average pooling: per window the exact integer sum of (x - zx) over the taps inside the
/// input (padding is a real 0, i.e. the zero point), v = (f32(sum) * sx) / f32(divisor), quantized.
#[allow(clippy::too_many_arguments)]
pub fn qavg_pool(
    ins: &[&Tensor],
    tys: &[&Type],
    kernel: &[i64],
    strides: &[i64],
    pads: &[i64],
    dil: &[i64],
    include_pad: bool,
    out: &Type,
) -> R<Tensor> {
    let (xq, oq) = (quant_of(tys[0], "input")?, quant_of(out, "output")?);
    let ((sx, zx), (sy, zy)) = (per_tensor(xq)?, per_tensor(oq)?);
    let out_shape = out.shape().ok_or("unknown output shape")?;
    let x = ints(ins[0])?;
    let hw: usize = ins[0].shape()[2..].iter().product();
    let mut v = Vec::with_capacity(out_shape.iter().product());
    crate::nn::avg_pool_windows(ins[0].shape(), kernel, strides, pads, dil, include_pad, out_shape, |plane, taps, count| {
        let sum: i64 = taps.iter().map(|t| x[plane * hw + t] - zx as i64).sum();
        let r = if count > 0 { (sum as f32 * sx) / count as f32 } else { 0.0 };
        v.push(quantize_value(r, sy, zy, oq.qmin, oq.qmax));
    })?;
    store(v, oq, out_shape)
}

/// One element of qact: quantize(act(dequantize(q))), with the interpreter's own dequantize, activation
/// and quantize, so the compiled table and the QDQ form it replaces give the same integers.
pub fn qact_value(act: Act, q: i64, (sx, zx): (f32, i32), (sy, zy): (f32, i32), qmin: i64, qmax: i64) -> i64 {
    let x = (q - zx as i64) as f32 * sx;
    quantize_value(crate::kernels::float::UnOp::Act(act).apply(x), sy, zy, qmin, qmax)
}

/// Quantized activation, elementwise (see qact_value).
pub fn qact(ins: &[&Tensor], tys: &[&Type], act: Act, out: &Type) -> R<Tensor> {
    let (xq, oq) = (quant_of(tys[0], "input")?, quant_of(out, "output")?);
    let (px, py) = (per_tensor(xq)?, per_tensor(oq)?);
    let v: Vec<i64> = ints(ins[0])?.iter().map(|q| qact_value(act, *q, px, py, oq.qmin, oq.qmax)).collect();
    store(v, oq, out.shape().ok_or("unknown output shape")?)
}

/// Quantized global average pooling: the exact integer sum of (x - zx) per channel, v = f32(sum) * sx / n,
/// then quantized.
pub fn qglobal_avg_pool(ins: &[&Tensor], tys: &[&Type], out: &Type) -> R<Tensor> {
    let (xq, oq) = (quant_of(tys[0], "input")?, quant_of(out, "output")?);
    let (sx, zx) = per_tensor(xq)?;
    let (sy, zy) = per_tensor(oq)?;
    let s = ins[0].shape();
    let sp: usize = s[2..].iter().product();
    let x = ints(ins[0])?;
    let v: Vec<i64> = x
        .chunks(sp.max(1))
        .take(s[0] * s[1])
        .map(|plane| {
            let sum: i64 = plane.iter().map(|v| v - zx as i64).sum();
            quantize_value((sum as f32 * sx) / sp as f32, sy, zy, oq.qmin, oq.qmax)
        })
        .collect();
    store(v, oq, out.shape().ok_or("unknown output shape")?)
}
