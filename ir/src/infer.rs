//! Type inference: each op's output type from its input types and attributes. The shape arithmetic helpers
//! here are also what the interpreter uses, so inference and execution cannot disagree.
use crate::op::Op;
use crate::types::{checked_numel, DType, ElemType, Type};

/// Numpy-style multidirectional broadcasting.
pub fn broadcast_shapes(shapes: &[&[usize]]) -> Result<Vec<usize>, String> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("shapes {:?} do not broadcast", shapes));
            }
        }
    }
    Ok(out)
}

/// Normalizes a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) && !(r == 0 && a == 0) {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Output length of one spatial axis of a convolution or pooling window.
pub fn window_out(input: usize, k: i64, stride: i64, dil: i64, pb: i64, pe: i64, ceil: bool) -> Result<usize, String> {
    let eff = (k - 1) * dil + 1;
    let span = input as i64 + pb + pe - eff;
    if span < 0 || stride <= 0 {
        return Err(format!("window {k} (dilation {dil}) larger than padded input {}", input as i64 + pb + pe));
    }
    let mut out = if ceil { (span + stride - 1) / stride + 1 } else { span / stride + 1 };
    // With ceil_mode the last window must start inside the input or its begin padding.
    if ceil && (out - 1) * stride >= input as i64 + pb {
        out -= 1;
    }
    Ok(out as usize)
}

/// Resolved slice of one axis: the first index, the step and the element count, per ONNX Slice clamping.
pub fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> Result<(i64, i64, usize), String> {
    if step == 0 || step == i64::MIN {
        return Err(format!("slice step {step} is not supported"));
    }
    // i128 so that no combination of extreme starts, ends and steps can overflow.
    let (d, start, end, step) = (dim as i128, start as i128, end as i128, step as i128);
    let norm = |x: i128| if x < 0 { x + d } else { x };
    let (s, e) =
        if step > 0 { (norm(start).clamp(0, d), norm(end).clamp(0, d)) } else { (norm(start).clamp(0, d - 1), norm(end).clamp(-1, d - 1)) };
    let len = if step > 0 { (e - s + step - 1).max(0) / step } else { (s - e - step - 1).max(0) / -step };
    Ok((s as i64, step as i64, len as usize))
}

fn shape_of<'a>(t: &'a Type, what: &str) -> Result<&'a [usize], String> {
    t.shape().ok_or_else(|| format!("{what} has an unknown type"))
}

fn want_inputs(inputs: &[&Type], lo: usize, hi: usize) -> Result<(), String> {
    if inputs.len() < lo || inputs.len() > hi {
        if lo == hi {
            return Err(format!("expects {lo} inputs, has {}", inputs.len()));
        }
        return Err(format!("expects {lo} to {hi} inputs, has {}", inputs.len()));
    }
    Ok(())
}

fn want_float(t: &Type, what: &str) -> Result<(), String> {
    match t.elem() {
        Some(ElemType::Plain(DType::F32)) => Ok(()),
        Some(e) => Err(format!("{what} must be f32, is {}", Type::Tensor { elem: e.clone(), shape: vec![] })),
        None => Err(format!("{what} has an unknown type")),
    }
}

fn spatial_check(name: &str, v: &[i64], n: usize) -> Result<(), String> {
    if v.len() != n {
        return Err(format!("`{name}` has {} entries, expected {n}", v.len()));
    }
    Ok(())
}

/// Infers the output type of `op`. `current` is the type the output has now: quantize and opaque ops keep
/// their element type from it, since nothing else determines it.
pub fn infer_type(op: &Op, inputs: &[&Type], current: &Type) -> Result<Type, String> {
    let t = infer_unchecked(op, inputs, current)?;
    if let Some(s) = t.shape() {
        if checked_numel(s).is_none() {
            return Err(format!("output shape {s:?} is too large"));
        }
    }
    Ok(t)
}

fn infer_unchecked(op: &Op, inputs: &[&Type], current: &Type) -> Result<Type, String> {
    use Op::*;
    let in_shape = |i: usize| shape_of(inputs[i], &format!("input {i}"));
    let f32_of = |shape: Vec<usize>| Ok(Type::f32(shape));
    match op {
        Opaque(_) => Ok(current.clone()),
        Conv { strides, pads, dilations, group, .. } => {
            want_inputs(inputs, 2, 4)?;
            let (x, w) = (in_shape(0)?, in_shape(1)?);
            want_float(inputs[0], "input")?;
            let nsp = x.len().checked_sub(2).filter(|n| *n >= 1).ok_or("input must have rank >= 3")?;
            if w.len() != x.len() {
                return Err(format!("weight rank {} differs from input rank {}", w.len(), x.len()));
            }
            spatial_check("strides", strides, nsp)?;
            spatial_check("dilations", dilations, nsp)?;
            spatial_check("pads", pads, 2 * nsp)?;
            let g = *group as usize;
            if g == 0 || x[1] != w[1] * g || w[0] % g != 0 {
                return Err(format!("channels: input {} weight {:?} group {group} do not fit", x[1], w));
            }
            if inputs.len() >= 3 && in_shape(2)? != [w[0]] {
                return Err(format!("bias shape {:?} must be [{}]", in_shape(2)?, w[0]));
            }
            let mut out = vec![x[0], w[0]];
            for i in 0..nsp {
                out.push(window_out(x[2 + i], w[2 + i] as i64, strides[i], dilations[i], pads[i], pads[nsp + i], false)?);
            }
            // fuse-residual's form: the residual is added before the activation.
            if inputs.len() == 4 {
                want_float(inputs[3], "residual")?;
            }
            if inputs.len() == 4 && in_shape(3)? != out {
                return Err(format!("residual shape {:?} must be the output's {:?}", in_shape(3)?, out));
            }
            f32_of(out)
        }
        ConvTranspose { strides, pads, dilations, group, output_padding } => {
            want_inputs(inputs, 2, 3)?;
            let (x, w) = (in_shape(0)?, in_shape(1)?);
            let nsp = x.len().checked_sub(2).filter(|n| *n >= 1).ok_or("input must have rank >= 3")?;
            spatial_check("strides", strides, nsp)?;
            spatial_check("dilations", dilations, nsp)?;
            spatial_check("pads", pads, 2 * nsp)?;
            spatial_check("output_padding", output_padding, nsp)?;
            let g = *group as usize;
            if g == 0 || w.len() != x.len() || x[1] != w[0] || w[0] % g != 0 {
                return Err(format!("channels: input {} weight {:?} group {group} do not fit", x[1], w));
            }
            let m = w[1] * g;
            let mut out = vec![x[0], m];
            for i in 0..nsp {
                let o = strides[i] * (x[2 + i] as i64 - 1) + output_padding[i] + (w[2 + i] as i64 - 1) * dilations[i] + 1
                    - pads[i]
                    - pads[nsp + i];
                if o <= 0 {
                    return Err("non-positive output size".into());
                }
                out.push(o as usize);
            }
            f32_of(out)
        }
        Gemm { trans_a, trans_b, .. } => {
            want_inputs(inputs, 2, 3)?;
            let (a, b) = (in_shape(0)?, in_shape(1)?);
            if a.len() != 2 || b.len() != 2 {
                return Err("gemm inputs must be 2-D".into());
            }
            let (m, k) = if *trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
            let (k2, n) = if *trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
            if k != k2 {
                return Err(format!("inner dimensions {k} and {k2} differ"));
            }
            if inputs.len() == 3 {
                broadcast_shapes(&[in_shape(2)?, &[m, n]]).map_err(|e| format!("bias: {e}"))?;
            }
            f32_of(vec![m, n])
        }
        MatMul => {
            want_inputs(inputs, 2, 2)?;
            let (a, b) = (in_shape(0)?.to_vec(), in_shape(1)?.to_vec());
            if a.is_empty() || b.is_empty() {
                return Err("matmul inputs must have rank >= 1".into());
            }
            let a2 = if a.len() == 1 { vec![1, a[0]] } else { a.clone() };
            let b2 = if b.len() == 1 { vec![b[0], 1] } else { b.clone() };
            let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
            let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
            if k != k2 {
                return Err(format!("inner dimensions {k} and {k2} differ"));
            }
            let mut out = broadcast_shapes(&[&a2[..a2.len() - 2], &b2[..b2.len() - 2]])?;
            if a.len() > 1 {
                out.push(m);
            }
            if b.len() > 1 {
                out.push(n);
            }
            Ok(inputs[0].with_shape(out))
        }
        Add | Sub | Mul | Div | Pow | Max | Min | Equal | Less | Greater | LessOrEqual | GreaterOrEqual => {
            want_inputs(inputs, if matches!(op, Max | Min) { 1 } else { 2 }, if matches!(op, Max | Min) { usize::MAX } else { 2 })?;
            let shapes: Vec<&[usize]> = (0..inputs.len()).map(in_shape).collect::<Result<_, _>>()?;
            let out = broadcast_shapes(&shapes)?;
            let d0 = inputs[0].dtype();
            if !matches!(op, Pow) && inputs.iter().any(|t| t.dtype() != d0) {
                return Err("inputs have different element types".into());
            }
            if matches!(op, Equal | Less | Greater | LessOrEqual | GreaterOrEqual) {
                return Ok(Type::plain(DType::Bool, out));
            }
            Ok(Type::plain(d0.unwrap_or(DType::F32), out))
        }
        Where => {
            want_inputs(inputs, 3, 3)?;
            if inputs[0].dtype() != Some(DType::Bool) {
                return Err("condition must be bool".into());
            }
            if inputs[1].dtype() != inputs[2].dtype() {
                return Err("x and y have different element types".into());
            }
            let out = broadcast_shapes(&[in_shape(0)?, in_shape(1)?, in_shape(2)?])?;
            Ok(inputs[1].with_shape(out))
        }
        Relu
        | LeakyRelu { .. }
        | Sigmoid
        | HardSigmoid { .. }
        | HardSwish
        | Tanh
        | Erf
        | Sqrt
        | Exp
        | Clip { .. }
        | Elu { .. }
        | Selu { .. }
        | Celu { .. }
        | Softplus
        | Softsign
        | Gelu { .. }
        | Mish
        | Neg
        | Abs
        | Reciprocal
        | Log
        | Floor
        | Ceil => {
            want_inputs(inputs, 1, 1)?;
            let signed = matches!(inputs[0].dtype(), Some(DType::I64 | DType::I32 | DType::I16 | DType::I8));
            let any_type = matches!(op, Relu | Clip { .. }) || matches!(op, Neg | Abs) && signed;
            if !any_type {
                want_float(inputs[0], "input")?;
            }
            Ok(inputs[0].clone())
        }
        Not => {
            want_inputs(inputs, 1, 1)?;
            if inputs[0].dtype() != Some(DType::Bool) {
                return Err("input must be bool".into());
            }
            Ok(inputs[0].clone())
        }
        Identity | Dropout => {
            want_inputs(inputs, 1, 1)?;
            Ok(inputs[0].clone())
        }
        BatchNorm { .. } => {
            want_inputs(inputs, 5, 5)?;
            let x = in_shape(0)?;
            want_float(inputs[0], "input")?;
            if x.len() < 2 {
                return Err("input must have rank >= 2".into());
            }
            for i in 1..5 {
                if in_shape(i)? != [x[1]] {
                    return Err(format!("input {i} shape {:?} must be [{}]", in_shape(i)?, x[1]));
                }
            }
            Ok(inputs[0].clone())
        }
        MaxPool { kernel, strides, pads, dilations, ceil_mode } => {
            want_inputs(inputs, 1, 1)?;
            pool_type(inputs[0], kernel, strides, pads, dilations, *ceil_mode)
        }
        AveragePool { kernel, strides, pads, dilations, ceil_mode, .. } => {
            want_inputs(inputs, 1, 1)?;
            want_float(inputs[0], "input")?;
            pool_type(inputs[0], kernel, strides, pads, dilations, *ceil_mode)
        }
        GlobalAveragePool => {
            want_inputs(inputs, 1, 1)?;
            want_float(inputs[0], "input")?;
            let x = in_shape(0)?;
            if x.len() < 3 {
                return Err("input must have rank >= 3".into());
            }
            let mut out = x[..2].to_vec();
            out.extend(std::iter::repeat_n(1, x.len() - 2));
            f32_of(out)
        }
        Flatten { axis } => {
            want_inputs(inputs, 1, 1)?;
            let x = in_shape(0)?;
            let a = if *axis < 0 { *axis + x.len() as i64 } else { *axis };
            if a < 0 || a > x.len() as i64 {
                return Err(format!("axis {axis} out of range"));
            }
            let a = a as usize;
            Ok(inputs[0].with_shape(vec![x[..a].iter().product(), x[a..].iter().product()]))
            // (products of a valid shape's parts cannot exceed its element count)
        }
        Reshape { shape } => {
            want_inputs(inputs, 1, 1)?;
            let x = in_shape(0)?;
            if shape.iter().any(|d| *d < 0) {
                return Err(format!("target shape {shape:?} is not resolved"));
            }
            let out: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
            if checked_numel(&out).is_none() || checked_numel(&out) != checked_numel(x) {
                return Err(format!("cannot reshape {x:?} to {out:?}"));
            }
            Ok(inputs[0].with_shape(out))
        }
        Transpose { perm } => {
            want_inputs(inputs, 1, 1)?;
            let x = in_shape(0)?;
            let mut seen = vec![false; x.len()];
            if perm.len() != x.len()
                || perm.iter().any(|p| *p < 0 || *p as usize >= x.len() || std::mem::replace(&mut seen[*p as usize], true))
            {
                return Err(format!("perm {perm:?} is not a permutation of {} axes", x.len()));
            }
            Ok(inputs[0].with_shape(perm.iter().map(|p| x[*p as usize]).collect()))
        }
        Concat { axis } => {
            want_inputs(inputs, 1, usize::MAX)?;
            let x0 = in_shape(0)?.to_vec();
            let a = norm_axis(*axis, x0.len())?;
            let mut out = x0.clone();
            out[a] = 0;
            for i in 0..inputs.len() {
                let s = in_shape(i)?;
                if s.len() != x0.len() || (0..s.len()).any(|d| d != a && s[d] != x0[d]) || inputs[i].dtype() != inputs[0].dtype() {
                    return Err(format!("input {i} {} does not concatenate with {} on axis {a}", inputs[i], inputs[0]));
                }
                out[a] += s[a];
            }
            Ok(inputs[0].with_shape(out))
        }
        Pad { pads, .. } => {
            want_inputs(inputs, 1, 1)?;
            let x = in_shape(0)?;
            spatial_check("pads", pads, 2 * x.len())?;
            let mut out = Vec::new();
            for (i, d) in x.iter().enumerate() {
                let o = *d as i64 + pads[i] + pads[x.len() + i];
                if o < 0 {
                    return Err("negative output size".into());
                }
                out.push(o as usize);
            }
            Ok(inputs[0].with_shape(out))
        }
        Squeeze { axes } => {
            want_inputs(inputs, 1, 1)?;
            let x = in_shape(0)?;
            let ax: Vec<usize> = axes.iter().map(|a| norm_axis(*a, x.len())).collect::<Result<_, _>>()?;
            for a in &ax {
                if x[*a] != 1 {
                    return Err(format!("cannot squeeze axis {a} of size {}", x[*a]));
                }
            }
            Ok(inputs[0].with_shape(x.iter().enumerate().filter(|(i, _)| !ax.contains(i)).map(|(_, d)| *d).collect()))
        }
        Unsqueeze { axes } => {
            want_inputs(inputs, 1, 1)?;
            let x = in_shape(0)?;
            let r = x.len() + axes.len();
            let mut ax: Vec<usize> = axes.iter().map(|a| norm_axis(*a, r)).collect::<Result<_, _>>()?;
            ax.sort();
            let mut out = Vec::with_capacity(r);
            let mut it = x.iter();
            for i in 0..r {
                if ax.binary_search(&i).is_ok() {
                    out.push(1);
                } else {
                    out.push(*it.next().ok_or("duplicate axes")?);
                }
            }
            Ok(inputs[0].with_shape(out))
        }
        Softmax { axis, .. } => {
            want_inputs(inputs, 1, 1)?;
            want_float(inputs[0], "input")?;
            norm_axis(*axis, in_shape(0)?.len())?;
            Ok(inputs[0].clone())
        }
        Resize { scales, sizes, .. } => {
            want_inputs(inputs, 1, 1)?;
            let x = in_shape(0)?;
            spatial_check("scales", &scales.iter().map(|_| 0).collect::<Vec<_>>(), x.len())?;
            spatial_check("sizes", sizes, x.len())?;
            Ok(inputs[0].with_shape(sizes.iter().map(|d| *d as usize).collect()))
        }
        Shape { start, end } => {
            want_inputs(inputs, 1, 1)?;
            let r = in_shape(0)?.len() as i64;
            if *start < 0 || *end > r || start > end {
                return Err(format!("shape range {start}..{end} invalid for rank {r}"));
            }
            Ok(Type::plain(DType::I64, vec![(end - start) as usize]))
        }
        Gather { axis } => {
            want_inputs(inputs, 2, 2)?;
            let (d, i) = (in_shape(0)?, in_shape(1)?);
            let a = norm_axis(*axis, d.len())?;
            if !matches!(inputs[1].dtype(), Some(DType::I64 | DType::I32)) {
                return Err("indices must be i64 or i32".into());
            }
            let mut out = d[..a].to_vec();
            out.extend_from_slice(i);
            out.extend_from_slice(&d[a + 1..]);
            Ok(inputs[0].with_shape(out))
        }
        Slice { starts, ends, axes, steps } => {
            want_inputs(inputs, 1, 1)?;
            let x = in_shape(0)?;
            if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
                return Err("starts, ends, axes and steps must have equal lengths".into());
            }
            let mut out = x.to_vec();
            for i in 0..axes.len() {
                let a = norm_axis(axes[i], x.len())?;
                out[a] = slice_axis(x[a], starts[i], ends[i], steps[i])?.2;
            }
            Ok(inputs[0].with_shape(out))
        }
        Cast { to } => {
            want_inputs(inputs, 1, 1)?;
            Ok(Type::plain(*to, in_shape(0)?.to_vec()))
        }
        ReduceMean { axes, keepdims } | ReduceSum { axes, keepdims } | ReduceMax { axes, keepdims } | ReduceMin { axes, keepdims } => {
            want_inputs(inputs, 1, 1)?;
            let x = in_shape(0)?;
            let ax: Vec<usize> = if axes.is_empty() {
                (0..x.len()).collect()
            } else {
                axes.iter().map(|a| norm_axis(*a, x.len())).collect::<Result<_, _>>()?
            };
            let mut out = Vec::new();
            for (i, d) in x.iter().enumerate() {
                if ax.contains(&i) {
                    if *keepdims {
                        out.push(1);
                    }
                } else {
                    out.push(*d);
                }
            }
            Ok(inputs[0].with_shape(out))
        }
        Expand { shape } => {
            want_inputs(inputs, 1, 1)?;
            let s: Vec<usize> = shape.iter().map(|d| (*d).max(0) as usize).collect();
            Ok(inputs[0].with_shape(broadcast_shapes(&[in_shape(0)?, &s])?))
        }
        ArgMax { axis, keepdims, .. } | ArgMin { axis, keepdims, .. } => {
            want_inputs(inputs, 1, 1)?;
            let x = in_shape(0)?;
            let a = norm_axis(*axis, x.len())?;
            if x[a] == 0 {
                return Err("the reduced axis is empty".into());
            }
            let mut out = x.to_vec();
            if *keepdims {
                out[a] = 1;
            } else {
                out.remove(a);
            }
            Ok(Type::plain(DType::I64, out))
        }
        Lrn { size, .. } => {
            want_inputs(inputs, 1, 1)?;
            want_float(inputs[0], "input")?;
            if in_shape(0)?.len() < 3 || *size < 1 {
                return Err("needs an input of rank >= 3 and size >= 1".into());
            }
            Ok(inputs[0].clone())
        }
        InstanceNorm { .. } => {
            want_inputs(inputs, 3, 3)?;
            want_float(inputs[0], "input")?;
            let x = in_shape(0)?;
            if x.len() < 3 {
                return Err("input must have rank >= 3".into());
            }
            for i in 1..3 {
                if in_shape(i)? != [x[1]] {
                    return Err(format!("input {i} shape {:?} must be [{}]", in_shape(i)?, x[1]));
                }
            }
            Ok(inputs[0].clone())
        }
        LayerNorm { axis, .. } => {
            want_inputs(inputs, 2, 3)?;
            want_float(inputs[0], "input")?;
            let x = in_shape(0)?;
            let a = norm_axis(*axis, x.len())?;
            for i in 1..inputs.len() {
                broadcast_shapes(&[&x[a..], in_shape(i)?]).map_err(|e| format!("input {i}: {e}"))?;
            }
            Ok(inputs[0].clone())
        }
        Observe | DynamicQdq => {
            want_inputs(inputs, 1, 1)?;
            want_float(inputs[0], "input")?;
            Ok(inputs[0].clone())
        }
        DynQConv { .. } | DynQGemm { .. } => {
            want_inputs(inputs, 2, 3)?;
            want_float(inputs[0], "input")?;
            if inputs[1].quant().is_none() {
                return Err(format!("the weights must be quantized, are {}", inputs[1]));
            }
            if let Some(b) = inputs.get(2) {
                want_float(b, "bias")?;
            }
            let float_op = op.dynamic_form().ok_or("not a dynamic op")?;
            let as_f32: Vec<Type> = inputs.iter().map(|t| Type::f32(t.shape().unwrap_or(&[]).to_vec())).collect();
            let refs: Vec<&Type> = as_f32.iter().collect();
            infer_unchecked(&float_op, &refs, current)
        }
        QConv { .. }
        | QGemm { .. }
        | QAdd { .. }
        | QMul { .. }
        | QConcat { .. }
        | QAveragePool { .. }
        | QGlobalAveragePool
        | QAct { .. } => {
            for (i, t) in inputs.iter().enumerate() {
                if t.quant().is_none() {
                    return Err(format!("input {i} must be quantized, is {t}"));
                }
            }
            // Weights and bias may be per channel; every activation input (a qconv's residual too) is
            // per tensor.
            let activation = |i: usize| !matches!(op, QConv { .. } | QGemm { .. }) || i == 0 || i == 3;
            for (i, t) in inputs.iter().enumerate().filter(|(i, _)| activation(*i)) {
                if !matches!(t.quant().map(|q| &q.params), Some(crate::QParams::PerTensor { .. })) {
                    return Err(format!("input {i} must be quantized per tensor"));
                }
            }
            let (float_op, _) = op.float_form().ok_or("integer op without a float form")?;
            let as_f32: Vec<Type> = inputs.iter().map(|t| Type::f32(t.shape().unwrap_or(&[]).to_vec())).collect();
            let refs: Vec<&Type> = as_f32.iter().collect();
            let shape = infer_unchecked(&float_op, &refs, current)?.shape().unwrap_or(&[]).to_vec();
            match current.quant() {
                Some(q) if matches!(q.params, crate::QParams::PerTensor { .. }) => Ok(current.with_shape(shape)),
                _ => Err(format!("{} must produce a per-tensor quantized type, not {current}", op.name())),
            }
        }
        Quantize => {
            want_inputs(inputs, 1, 1)?;
            want_float(inputs[0], "input")?;
            match current {
                Type::Tensor { elem: ElemType::Q(q), .. } => {
                    Ok(Type::Tensor { elem: ElemType::Q(q.clone()), shape: in_shape(0)?.to_vec() })
                }
                _ => Err(format!("quantize must produce a quantized type, not {current}")),
            }
        }
        Dequantize => {
            want_inputs(inputs, 1, 1)?;
            if inputs[0].quant().is_none() {
                return Err(format!("dequantize needs a quantized input, not {}", inputs[0]));
            }
            f32_of(in_shape(0)?.to_vec())
        }
    }
}

fn pool_type(x: &Type, kernel: &[i64], strides: &[i64], pads: &[i64], dil: &[i64], ceil: bool) -> Result<Type, String> {
    let s = shape_of(x, "input")?;
    let nsp = s.len().checked_sub(2).filter(|n| *n >= 1).ok_or("input must have rank >= 3")?;
    spatial_check("kernel", kernel, nsp)?;
    spatial_check("strides", strides, nsp)?;
    spatial_check("pads", pads, 2 * nsp)?;
    spatial_check("dilations", dil, nsp)?;
    let mut out = s[..2].to_vec();
    for i in 0..nsp {
        out.push(window_out(s[2 + i], kernel[i], strides[i], dil[i], pads[i], pads[nsp + i], ceil)?);
    }
    Ok(x.with_shape(out))
}
