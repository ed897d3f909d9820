//! One op on concrete tensors: elementwise, shape and data-movement ops here; neural-network kernels in
//! nn.rs and resize.rs. Used by the interpreter and by import-time evaluation and constant folding.
use crate::kernels::float::{self, BinOp, UnOp};
use crate::{nn, qops, quant, resize};
use ndarray::{ArrayD, Axis, IxDyn, Slice, Zip};
use qcc_ir::infer::{broadcast_shapes, norm_axis, slice_axis};
use qcc_ir::{map_tensor, DType, Op, PadMode, Tensor, Type};

pub(crate) type R<T> = Result<T, String>;

pub(crate) fn f32_in<'a>(t: &'a Tensor, what: &str) -> R<&'a ArrayD<f32>> {
    t.as_f32().ok_or_else(|| format!("{what} must be f32, is {}", t.dtype()))
}

fn binary_f32(a: &ArrayD<f32>, b: &ArrayD<f32>, f: impl Fn(f32, f32) -> f32) -> R<ArrayD<f32>> {
    let shape = broadcast_shapes(&[a.shape(), b.shape()])?;
    let mut out = ArrayD::<f32>::zeros(IxDyn(&shape));
    Zip::from(&mut out).and_broadcast(a).and_broadcast(b).for_each(|o, &x, &y| *o = f(x, y));
    Ok(out)
}

fn binary<T: Copy + Default>(a: &ArrayD<T>, b: &ArrayD<T>, f: impl Fn(T, T) -> R<T>) -> R<ArrayD<T>> {
    let shape = broadcast_shapes(&[a.shape(), b.shape()])?;
    let ab = a.broadcast(IxDyn(&shape)).ok_or("broadcast")?;
    let bb = b.broadcast(IxDyn(&shape)).ok_or("broadcast")?;
    let v: Vec<T> = ab.iter().zip(bb.iter()).map(|(x, y)| f(*x, *y)).collect::<R<_>>()?;
    ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| e.to_string())
}

macro_rules! int_arith {
    ($a:expr, $b:expr, $op:expr, $($v:ident),*) => {
        match ($a, $b) {
            $( (Tensor::$v(a), Tensor::$v(b)) => Tensor::$v(binary(a, b, |x, y| {
                let r = match $op {
                    Op::Add => x.checked_add(y),
                    Op::Sub => x.checked_sub(y),
                    Op::Mul => x.checked_mul(y),
                    Op::Div => if y == 0 { None } else { x.checked_div(y) },
                    Op::Max => Some(x.max(y)),
                    Op::Min => Some(x.min(y)),
                    _ => None,
                };
                r.ok_or_else(|| "integer overflow or division by zero".to_string())
            })?), )*
            (a, b) => return Err(format!("unsupported element types {} and {}", a.dtype(), b.dtype())),
        }
    };
}

fn arith(op: &Op, a: &Tensor, b: &Tensor) -> R<Tensor> {
    if let (Tensor::F32(x), Tensor::F32(y)) = (a, b) {
        if let Some(b) = BinOp::from_op(op) {
            return binary_f32(x, y, |x, y| b.apply(x, y)).map(Tensor::F32);
        }
        let f: fn(f32, f32) -> f32 = match op {
            Op::Pow => f32::powf,
            _ => unreachable!(),
        };
        return binary_f32(x, y, f).map(Tensor::F32);
    }
    if matches!(op, Op::Pow) {
        // The result has the base's type; integer bases are computed in f64 and truncated.
        let to_f64 = |t: &Tensor| -> R<ArrayD<f64>> {
            let v: Vec<f64> = match t {
                Tensor::F32(a) => a.iter().map(|x| *x as f64).collect(),
                t => t.to_i64_vec().ok_or("bad pow operand")?.into_iter().map(|x| x as f64).collect(),
            };
            ArrayD::from_shape_vec(IxDyn(t.shape()), v).map_err(|e| e.to_string())
        };
        let r = binary(&to_f64(a)?, &to_f64(b)?, |x, y| Ok(x.powf(y)))?;
        return Ok(match a.dtype() {
            DType::F32 => Tensor::F32(r.mapv(|x| x as f32)),
            DType::I64 => Tensor::I64(r.mapv(|x| x as i64)),
            DType::I32 => Tensor::I32(r.mapv(|x| x as i32)),
            DType::I16 => Tensor::I16(r.mapv(|x| x as i16)),
            DType::I8 => Tensor::I8(r.mapv(|x| x as i8)),
            DType::U8 => Tensor::U8(r.mapv(|x| x as u8)),
            d => return Err(format!("pow over {d} is not supported")),
        });
    }
    Ok(int_arith!(a, b, op, I64, I32, I16, I8, U8))
}

/// An elementwise comparison with broadcasting; `holds` says which orderings make it true (NaN compares
/// as unordered: false for every comparison).
fn compare(a: &Tensor, b: &Tensor, holds: fn(std::cmp::Ordering) -> bool) -> R<Tensor> {
    macro_rules! eq {
        ($($v:ident),*) => {
            match (a, b) {
                $( (Tensor::$v(x), Tensor::$v(y)) => {
                    let shape = broadcast_shapes(&[x.shape(), y.shape()])?;
                    let xb = x.broadcast(IxDyn(&shape)).ok_or("broadcast")?;
                    let yb = y.broadcast(IxDyn(&shape)).ok_or("broadcast")?;
                    let v: Vec<bool> = xb.iter().zip(yb.iter()).map(|(p, q)| p.partial_cmp(q).is_some_and(holds)).collect();
                    ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| e.to_string())?
                } )*
                _ => return Err("inputs have different element types".into()),
            }
        };
    }
    Ok(Tensor::Bool(eq!(F32, I64, I32, I16, I8, U8, Bool)))
}

fn unary_f32(t: &Tensor, f: impl Fn(f32) -> f32) -> R<Tensor> {
    Ok(Tensor::F32(f32_in(t, "input")?.mapv(f)))
}

fn clip(t: &Tensor, min: f32, max: f32) -> R<Tensor> {
    macro_rules! clip_int {
        ($a:expr, $t:ty) => {{
            let lo = if min.is_finite() { min as $t } else { <$t>::MIN };
            let hi = if max.is_finite() { max as $t } else { <$t>::MAX };
            $a.mapv(|x| x.max(lo).min(hi))
        }};
    }
    Ok(match t {
        Tensor::F32(a) => Tensor::F32(a.mapv(|x| UnOp::Clip { min, max }.apply(x))),
        Tensor::I64(a) => Tensor::I64(clip_int!(a, i64)),
        Tensor::I32(a) => Tensor::I32(clip_int!(a, i32)),
        Tensor::I16(a) => Tensor::I16(clip_int!(a, i16)),
        Tensor::I8(a) => Tensor::I8(clip_int!(a, i8)),
        Tensor::U8(a) => Tensor::U8(clip_int!(a, u8)),
        Tensor::Bool(_) => return Err("cannot clip bool".into()),
    })
}

fn reshape(t: &Tensor, shape: &[usize]) -> R<Tensor> {
    let t = t.clone().into_standard();
    Ok(map_tensor!(t, a => a.into_shape_with_order(IxDyn(shape)).map_err(|e| e.to_string())?))
}

fn cast(t: &Tensor, to: DType) -> R<Tensor> {
    if t.dtype() == to {
        return Ok(t.clone());
    }
    // Float to integer truncates toward zero and saturates (Rust `as`), matching ONNX Runtime on in-range values.
    macro_rules! from_f64 {
        ($v:expr) => {
            match to {
                DType::F32 => Tensor::F32($v.mapv(|x| x as f32)),
                DType::I64 => Tensor::I64($v.mapv(|x| x as i64)),
                DType::I32 => Tensor::I32($v.mapv(|x| x as i32)),
                DType::I16 => Tensor::I16($v.mapv(|x| x as i16)),
                DType::I8 => Tensor::I8($v.mapv(|x| x as i8)),
                DType::U8 => Tensor::U8($v.mapv(|x| x as u8)),
                DType::Bool => Tensor::Bool($v.mapv(|x| x != 0.0)),
            }
        };
    }
    macro_rules! from_int {
        ($v:expr) => {
            match to {
                DType::F32 => Tensor::F32($v.mapv(|x| x as f32)),
                DType::I64 => Tensor::I64($v.mapv(|x| x as i64)),
                DType::I32 => Tensor::I32($v.mapv(|x| x as i32)),
                DType::I16 => Tensor::I16($v.mapv(|x| x as i16)),
                DType::I8 => Tensor::I8($v.mapv(|x| x as i8)),
                DType::U8 => Tensor::U8($v.mapv(|x| x as u8)),
                DType::Bool => Tensor::Bool($v.mapv(|x| x != 0)),
            }
        };
    }
    Ok(match t {
        Tensor::F32(a) => from_f64!(a.mapv(|x| x as f64)),
        Tensor::Bool(a) => from_int!(a.mapv(|x| x as i64)),
        Tensor::I64(a) => from_int!(a),
        other => {
            from_int!(ArrayD::from_shape_vec(IxDyn(other.shape()), other.to_i64_vec().unwrap_or_default()).map_err(|e| e.to_string())?)
        }
    })
}

fn concat(ins: &[&Tensor], axis: usize) -> R<Tensor> {
    macro_rules! cat {
        ($v:ident) => {{
            let views: Vec<_> = ins
                .iter()
                .map(|t| match t {
                    Tensor::$v(a) => Ok(a.view()),
                    _ => Err("inputs have different element types".to_string()),
                })
                .collect::<R<_>>()?;
            Tensor::$v(ndarray::concatenate(Axis(axis), &views).map_err(|e| e.to_string())?)
        }};
    }
    Ok(match ins[0] {
        Tensor::F32(_) => cat!(F32),
        Tensor::I64(_) => cat!(I64),
        Tensor::I32(_) => cat!(I32),
        Tensor::I16(_) => cat!(I16),
        Tensor::I8(_) => cat!(I8),
        Tensor::U8(_) => cat!(U8),
        Tensor::Bool(_) => cat!(Bool),
    })
}

fn gather(data: &Tensor, idx: &Tensor, axis: usize) -> R<Tensor> {
    let dim = data.shape()[axis] as i64;
    let ids: Vec<usize> = idx
        .to_i64_vec()
        .ok_or("indices must be integers")?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + dim } else { i };
            if j < 0 || j >= dim {
                Err(format!("index {i} out of range for axis of size {dim}"))
            } else {
                Ok(j as usize)
            }
        })
        .collect::<R<_>>()?;
    let ishape = idx.shape().to_vec();
    Ok(map_tensor!(data, a => {
        let picked = a.select(Axis(axis), &ids);
        let mut shape = a.shape()[..axis].to_vec();
        shape.extend_from_slice(&ishape);
        shape.extend_from_slice(&a.shape()[axis + 1..]);
        picked.as_standard_layout().into_owned().into_shape_with_order(IxDyn(&shape)).map_err(|e| e.to_string())?
    }))
}

fn slice(t: &Tensor, starts: &[i64], ends: &[i64], axes: &[i64], steps: &[i64]) -> R<Tensor> {
    let shape = t.shape().to_vec();
    let mut specs = Vec::new();
    for i in 0..axes.len() {
        let a = norm_axis(axes[i], shape.len())?;
        let (s, step, len) = slice_axis(shape[a], starts[i], ends[i], steps[i])?;
        specs.push((a, s, step, len));
    }
    Ok(map_tensor!(t, a => {
        let mut v = a.view();
        for &(ax, s, step, len) in &specs {
            let sl = if len == 0 {
                Slice::new(0, Some(0), 1)
            } else if step > 0 {
                Slice::new(s as isize, Some((s + step * (len as i64 - 1) + 1) as isize), step as isize)
            } else {
                // ndarray steps negative slices from the end of the range: give it [last, s] reversed.
                let last = s + step * (len as i64 - 1);
                Slice::new(last as isize, Some(s as isize + 1), step as isize)
            };
            v.slice_axis_inplace(Axis(ax), sl);
        }
        v.to_owned()
    }))
}

fn pad(t: &Tensor, mode: PadMode, pads: &[i64], value: f32) -> R<Tensor> {
    let shape = t.shape().to_vec();
    let r = shape.len();
    let out_shape: Vec<usize> = (0..r).map(|i| (shape[i] as i64 + pads[i] + pads[r + i]) as usize).collect();
    if mode != PadMode::Constant && shape.iter().zip(&out_shape).any(|(d, o)| *d == 0 && *o > 0) {
        return Err("cannot pad an empty axis in this mode".into());
    }
    let src_index = |o: usize, i: usize| -> Option<usize> {
        let d = shape[i] as i64;
        let x = o as i64 - pads[i];
        if (0..d).contains(&x) {
            return Some(x as usize);
        }
        match mode {
            PadMode::Constant => None,
            PadMode::Edge => Some(x.clamp(0, d - 1) as usize),
            PadMode::Wrap => Some(x.rem_euclid(d) as usize),
            PadMode::Reflect => {
                if d == 1 {
                    return Some(0);
                }
                let period = 2 * (d - 1);
                let m = x.rem_euclid(period);
                Some(if m < d { m } else { period - m } as usize)
            }
        }
    };
    macro_rules! do_pad {
        ($a:expr, $fill:expr) => {{
            let a = $a;
            let mut out = ArrayD::from_elem(IxDyn(&out_shape), $fill);
            let mut src = vec![0usize; r];
            for (idx, o) in out.indexed_iter_mut() {
                let mut ok = true;
                for i in 0..r {
                    match src_index(idx[i], i) {
                        Some(s) => src[i] = s,
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if ok {
                    *o = a[IxDyn(&src)];
                }
            }
            out
        }};
    }
    Ok(match t {
        Tensor::F32(a) => Tensor::F32(do_pad!(a, value)),
        Tensor::I64(a) => Tensor::I64(do_pad!(a, value as i64)),
        Tensor::I32(a) => Tensor::I32(do_pad!(a, value as i32)),
        Tensor::I16(a) => Tensor::I16(do_pad!(a, value as i16)),
        Tensor::I8(a) => Tensor::I8(do_pad!(a, value as i8)),
        Tensor::U8(a) => Tensor::U8(do_pad!(a, value as u8)),
        Tensor::Bool(a) => Tensor::Bool(do_pad!(a, value != 0.0)),
    })
}

fn reduce(op: &Op, t: &Tensor, axes: &[i64], keepdims: bool, out_ty: &Type) -> R<Tensor> {
    let r = t.shape().len();
    let mut ax: Vec<usize> = if axes.is_empty() { (0..r).collect() } else { axes.iter().map(|a| norm_axis(*a, r)).collect::<R<_>>()? };
    ax.sort_unstable();
    ax.dedup();
    let out_shape = out_ty.shape().ok_or("unknown output shape")?.to_vec();
    macro_rules! red {
        ($a:expr, $init:expr, $f:expr, $fin:expr) => {{
            let mut acc = $a.clone();
            for &a in ax.iter().rev() {
                acc = acc.fold_axis(Axis(a), $init, |x, y| $f(*x, *y));
            }
            let count: usize = ax.iter().map(|a| t.shape()[*a]).product();
            let acc = acc.mapv(|v| $fin(v, count));
            let _ = keepdims;
            acc.into_shape_with_order(IxDyn(&out_shape)).map_err(|e| e.to_string())?
        }};
    }
    Ok(match (op, t) {
        (Op::ReduceMean { .. }, Tensor::F32(a)) => Tensor::F32(red!(a, 0.0f32, |x: f32, y: f32| x + y, |v: f32, c: usize| v / c as f32)),
        (Op::ReduceSum { .. }, Tensor::F32(a)) => Tensor::F32(red!(a, 0.0f32, |x: f32, y: f32| x + y, |v: f32, _| v)),
        (Op::ReduceMax { .. }, Tensor::F32(a)) => Tensor::F32(red!(
            a,
            f32::NEG_INFINITY,
            |x: f32, y: f32| if y.is_nan() || x.is_nan() { f32::NAN } else { x.max(y) },
            |v: f32, _| v
        )),
        (Op::ReduceSum { .. }, Tensor::I64(a)) => Tensor::I64(red!(a, 0i64, |x: i64, y: i64| x.wrapping_add(y), |v: i64, _| v)),
        (Op::ReduceMin { .. }, Tensor::F32(a)) => {
            Tensor::F32(red!(a, f32::INFINITY, |x: f32, y: f32| if y.is_nan() || x.is_nan() { f32::NAN } else { x.min(y) }, |v: f32, _| v))
        }
        (Op::ReduceMax { .. }, Tensor::I64(a)) => Tensor::I64(red!(a, i64::MIN, |x: i64, y: i64| x.max(y), |v: i64, _| v)),
        (Op::ReduceMin { .. }, Tensor::I64(a)) => Tensor::I64(red!(a, i64::MAX, |x: i64, y: i64| x.min(y), |v: i64, _| v)),
        (Op::ReduceMean { .. }, Tensor::I64(a)) => {
            Tensor::I64(red!(a, 0i64, |x: i64, y: i64| x.wrapping_add(y), |v: i64, c: usize| v / c.max(1) as i64))
        }
        (Op::ReduceMax { .. }, Tensor::I32(a)) => Tensor::I32(red!(a, i32::MIN, |x: i32, y: i32| x.max(y), |v: i32, _| v)),
        (Op::ReduceSum { .. }, Tensor::I32(a)) => Tensor::I32(red!(a, 0i32, |x: i32, y: i32| x.wrapping_add(y), |v: i32, _| v)),
        (Op::ReduceMax { .. }, Tensor::Bool(a)) => Tensor::Bool(red!(a, false, |x: bool, y: bool| x || y, |v: bool, _| v)),
        (_, t) => return Err(format!("reduction over {} is not supported", t.dtype())),
    })
}

fn where_op(c: &Tensor, x: &Tensor, y: &Tensor) -> R<Tensor> {
    let Tensor::Bool(c) = c else {
        return Err("condition must be bool".into());
    };
    macro_rules! w {
        ($($v:ident),*) => {
            match (x, y) {
                $( (Tensor::$v(a), Tensor::$v(b)) => {
                    let shape = broadcast_shapes(&[c.shape(), a.shape(), b.shape()])?;
                    let (cb, ab, bb) = (c.broadcast(IxDyn(&shape)).ok_or("broadcast")?, a.broadcast(IxDyn(&shape)).ok_or("broadcast")?, b.broadcast(IxDyn(&shape)).ok_or("broadcast")?);
                    let v: Vec<_> = cb.iter().zip(ab.iter()).zip(bb.iter()).map(|((c, a), b)| if *c { *a } else { *b }).collect();
                    Tensor::$v(ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| e.to_string())?)
                } )*
                _ => return Err("x and y have different element types".into()),
            }
        };
    }
    Ok(w!(F32, I64, I32, I16, I8, U8, Bool))
}

/// Evaluates one op. `out_ty` is the inferred output type (its shape and, for quantize, its parameters).
/// `in_tys` are the inputs' IR types (dequantize reads its parameters from them).
pub fn eval_op(op: &Op, ins: &[&Tensor], in_tys: &[&Type], out_ty: &Type) -> Result<Tensor, String> {
    let out_shape = || out_ty.shape().map(|s| s.to_vec()).ok_or_else(|| "unknown output type".to_string());
    let need = |n: usize| {
        if ins.len() < n {
            Err(format!("expects {n} inputs, has {}", ins.len()))
        } else {
            Ok(())
        }
    };
    need(1)?;
    match op {
        Op::Conv { strides, pads, dilations, group, act } => {
            need(2)?;
            nn::conv(
                f32_in(ins[0], "input")?,
                f32_in(ins[1], "weight")?,
                ins.get(2).map(|b| f32_in(b, "bias")).transpose()?,
                strides,
                pads,
                dilations,
                *group as usize,
                *act,
                ins.get(3).map(|r| f32_in(r, "residual")).transpose()?,
                &out_shape()?,
            )
            .map(Tensor::F32)
        }
        Op::ConvTranspose { strides, pads, dilations, group, .. } => {
            need(2)?;
            nn::conv_transpose(
                f32_in(ins[0], "input")?,
                f32_in(ins[1], "weight")?,
                ins.get(2).map(|b| f32_in(b, "bias")).transpose()?,
                strides,
                pads,
                dilations,
                *group as usize,
                &out_shape()?,
            )
            .map(Tensor::F32)
        }
        Op::Gemm { alpha, beta, trans_a, trans_b, act } => {
            need(2)?;
            nn::gemm(
                f32_in(ins[0], "a")?,
                f32_in(ins[1], "b")?,
                ins.get(2).map(|c| f32_in(c, "c")).transpose()?,
                *alpha,
                *beta,
                *trans_a,
                *trans_b,
                *act,
            )
            .map(Tensor::F32)
        }
        Op::MatMul => {
            need(2)?;
            nn::matmul(ins[0], ins[1], &out_shape()?)
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pow => {
            need(2)?;
            arith(op, ins[0], ins[1])
        }
        Op::Max | Op::Min => {
            let mut acc = ins[0].clone();
            for t in &ins[1..] {
                acc = arith(op, &acc, t)?;
            }
            Ok(acc)
        }
        Op::Equal | Op::Less | Op::Greater | Op::LessOrEqual | Op::GreaterOrEqual => {
            need(2)?;
            use std::cmp::Ordering;
            let holds: fn(Ordering) -> bool = match op {
                Op::Equal => |o| o == Ordering::Equal,
                Op::Less => |o| o == Ordering::Less,
                Op::Greater => |o| o == Ordering::Greater,
                Op::LessOrEqual => |o| o != Ordering::Greater,
                _ => |o| o != Ordering::Less,
            };
            compare(ins[0], ins[1], holds)
        }
        Op::Not => match ins[0] {
            Tensor::Bool(a) => Ok(Tensor::Bool(a.mapv(|v| !v))),
            t => Err(format!("not of {} (needs bool)", t.dtype())),
        },
        Op::Where => {
            need(3)?;
            where_op(ins[0], ins[1], ins[2])
        }
        Op::Relu => clip(ins[0], 0.0, f32::INFINITY),
        Op::Clip { min, max } => clip(ins[0], *min, *max),
        Op::LeakyRelu { .. }
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
        | Op::Mish => {
            let f = UnOp::from_op(op).ok_or("not an activation")?;
            unary_f32(ins[0], |x| f.apply(x))
        }
        // Shape arithmetic negates and takes absolute values of integers too (wrapping, as two's complement).
        Op::Neg | Op::Abs if ins[0].dtype() != DType::F32 => {
            let neg = matches!(op, Op::Neg);
            Ok(match ins[0] {
                Tensor::I64(a) => Tensor::I64(a.mapv(|v| if neg { v.wrapping_neg() } else { v.wrapping_abs() })),
                Tensor::I32(a) => Tensor::I32(a.mapv(|v| if neg { v.wrapping_neg() } else { v.wrapping_abs() })),
                Tensor::I16(a) => Tensor::I16(a.mapv(|v| if neg { v.wrapping_neg() } else { v.wrapping_abs() })),
                Tensor::I8(a) => Tensor::I8(a.mapv(|v| if neg { v.wrapping_neg() } else { v.wrapping_abs() })),
                t => return Err(format!("{} of {} is not supported", op.name(), t.dtype())),
            })
        }
        Op::Erf | Op::Sqrt | Op::Exp | Op::Neg | Op::Abs | Op::Reciprocal | Op::Log | Op::Floor | Op::Ceil => {
            let f = UnOp::from_op(op).ok_or("not a unary op")?;
            unary_f32(ins[0], |x| f.apply(x))
        }
        Op::Identity | Op::Dropout => Ok(ins[0].clone()),
        Op::BatchNorm { epsilon } => {
            need(5)?;
            let p: Vec<&ArrayD<f32>> = ins[1..5].iter().map(|t| f32_in(t, "parameter")).collect::<R<_>>()?;
            nn::batch_norm(f32_in(ins[0], "input")?, p[0], p[1], p[2], p[3], *epsilon).map(Tensor::F32)
        }
        Op::MaxPool { kernel, strides, pads, dilations, .. } => nn::max_pool(ins[0], kernel, strides, pads, dilations, &out_shape()?),
        Op::AveragePool { kernel, strides, pads, dilations, count_include_pad, .. } => {
            nn::avg_pool(f32_in(ins[0], "input")?, kernel, strides, pads, dilations, *count_include_pad, &out_shape()?).map(Tensor::F32)
        }
        Op::GlobalAveragePool => {
            let x = f32_in(ins[0], "input")?;
            let s = x.shape();
            let (n, c) = (s[0], s[1]);
            let sp: usize = s[2..].iter().product();
            let x = x.as_standard_layout();
            let flat = x.view().into_shape_with_order((n * c, sp)).map_err(|e| e.to_string())?;
            let m: Vec<f32> = flat.rows().into_iter().map(|r| float::pool_sum(sp, |i| r[i]) / sp as f32).collect();
            Ok(Tensor::F32(ArrayD::from_shape_vec(IxDyn(&out_shape()?), m).map_err(|e| e.to_string())?))
        }
        Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => reshape(ins[0], &out_shape()?),
        Op::Transpose { perm } => {
            let p: Vec<usize> = perm.iter().map(|p| *p as usize).collect();
            Ok(map_tensor!(ins[0].clone(), a => a.permuted_axes(IxDyn(&p)).as_standard_layout().into_owned()))
        }
        Op::Concat { axis } => concat(ins, norm_axis(*axis, ins[0].shape().len())?),
        Op::Pad { mode, pads, value } => pad(ins[0], *mode, pads, *value),
        Op::Softmax { axis, coerce_2d } => nn::softmax(f32_in(ins[0], "input")?, *axis, *coerce_2d).map(Tensor::F32),
        Op::Resize { mode, coord, nearest, scales, .. } => {
            resize::resize(f32_in(ins[0], "input")?, *mode, *coord, *nearest, scales, &out_shape()?).map(Tensor::F32)
        }
        Op::Shape { start, end } => {
            let s: Vec<i64> = ins[0].shape()[*start as usize..*end as usize].iter().map(|d| *d as i64).collect();
            Ok(Tensor::from_i64(&[s.len()], s).expect("vector"))
        }
        Op::Gather { axis } => {
            need(2)?;
            gather(ins[0], ins[1], norm_axis(*axis, ins[0].shape().len())?)
        }
        Op::Slice { starts, ends, axes, steps } => slice(ins[0], starts, ends, axes, steps),
        Op::Cast { to } => cast(ins[0], *to),
        Op::ReduceMean { axes, keepdims }
        | Op::ReduceSum { axes, keepdims }
        | Op::ReduceMax { axes, keepdims }
        | Op::ReduceMin { axes, keepdims } => reduce(op, ins[0], axes, *keepdims, out_ty),
        Op::ArgMax { axis, last, .. } | Op::ArgMin { axis, last, .. } => {
            nn::arg_extreme(ins[0], norm_axis(*axis, ins[0].shape().len())?, matches!(op, Op::ArgMax { .. }), *last, &out_shape()?)
        }
        Op::Lrn { size, alpha, beta, bias } => nn::lrn(f32_in(ins[0], "input")?, *size as usize, *alpha, *beta, *bias).map(Tensor::F32),
        Op::InstanceNorm { epsilon } => {
            need(3)?;
            nn::instance_norm(f32_in(ins[0], "input")?, f32_in(ins[1], "scale")?, f32_in(ins[2], "bias")?, *epsilon).map(Tensor::F32)
        }
        Op::Expand { .. } => {
            let s = out_shape()?;
            Ok(map_tensor!(ins[0], a => a.broadcast(IxDyn(&s)).ok_or("cannot expand")?.to_owned()))
        }
        Op::LayerNorm { axis, epsilon } => {
            need(2)?;
            nn::layer_norm(
                f32_in(ins[0], "input")?,
                f32_in(ins[1], "scale")?,
                ins.get(2).map(|b| f32_in(b, "bias")).transpose()?,
                *axis,
                *epsilon,
            )
            .map(Tensor::F32)
        }
        Op::Observe => Ok(ins[0].clone()),
        Op::DynamicQdq => qops::dynamic_qdq(ins[0]),
        Op::QConv { strides, pads, dilations, group, act } => {
            need(2)?;
            qops::qconv(ins, in_tys, strides, pads, dilations, *group as usize, *act, out_ty)
        }
        Op::QGemm { trans_b, act } => {
            need(2)?;
            qops::qgemm(ins, in_tys, *trans_b, *act, out_ty)
        }
        Op::DynQConv { strides, pads, dilations, group, act } => {
            need(2)?;
            qops::dyn_qconv(ins, in_tys, strides, pads, dilations, *group as usize, *act, &out_shape()?)
        }
        Op::DynQGemm { trans_b, act } => {
            need(2)?;
            qops::dyn_qgemm(ins, in_tys, *trans_b, *act)
        }
        Op::QAdd { act } => {
            need(2)?;
            qops::qbinary(ins, in_tys, false, *act, out_ty)
        }
        Op::QMul { act } => {
            need(2)?;
            qops::qbinary(ins, in_tys, true, *act, out_ty)
        }
        Op::QConcat { axis } => {
            need(1)?;
            qops::qconcat(ins, in_tys, norm_axis(*axis, ins[0].shape().len())?, out_ty)
        }
        Op::QAveragePool { kernel, strides, pads, dilations, count_include_pad, .. } => {
            need(1)?;
            qops::qavg_pool(ins, in_tys, kernel, strides, pads, dilations, *count_include_pad, out_ty)
        }
        Op::QGlobalAveragePool => qops::qglobal_avg_pool(ins, in_tys, out_ty),
        Op::QAct { act } => qops::qact(ins, in_tys, *act, out_ty),
        Op::Quantize => quant::quantize(f32_in(ins[0], "input")?, out_ty.quant().ok_or("output type is not quantized")?),
        Op::Dequantize => {
            let q = in_tys.first().and_then(|t| t.quant()).ok_or("input type is not quantized")?;
            quant::dequantize(ins[0], q).map(Tensor::F32)
        }
        Op::Opaque(o) => Err(format!("cannot run unsupported op {}", o.op_type)),
    }
}
