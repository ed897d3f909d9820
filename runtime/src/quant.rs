//! Quantize and dequantize, exactly as docs/semantics.md writes them down:
//! q = clamp(round_half_even(x / scale) + zp, qmin, qmax) and x = (q - zp) * scale, in f32.
use ndarray::{ArrayD, Axis, IxDyn};
use qcc_ir::{DType, QParams, QuantType, Tensor};

/// Quantizes one real value with one scale and zero point.
pub fn quantize_value(x: f32, scale: f32, zp: i32, qmin: i64, qmax: i64) -> i64 {
    let r = (x / scale).round_ties_even();
    // NaN maps to the zero point; the clamp also saturates infinities.
    let r = if r.is_nan() { 0.0 } else { r };
    ((r as f64) + zp as f64).clamp(qmin as f64, qmax as f64) as i64
}

fn per_channel(q: &QuantType, shape: &[usize]) -> Result<(Option<usize>, Vec<f32>, Vec<i32>), String> {
    match &q.params {
        QParams::PerTensor { scale, zp } => Ok((None, vec![*scale], vec![*zp])),
        QParams::PerAxis { axis, scales, zps } => {
            if shape.get(*axis) != Some(&scales.len()) {
                return Err(format!("axis {axis} of {shape:?} does not have {} channels", scales.len()));
            }
            Ok((Some(*axis), scales.clone(), zps.clone()))
        }
        QParams::Calibrated { .. } => Err("a calibrated range has no scale yet".into()),
    }
}

/// Integer values of `q` for each element of `x`, as i64 in logical order.
fn quantize_i64(x: &ArrayD<f32>, q: &QuantType) -> Result<ArrayD<i64>, String> {
    let (axis, scales, zps) = per_channel(q, x.shape())?;
    let mut out = ArrayD::<i64>::zeros(IxDyn(x.shape()));
    match axis {
        None => ndarray::Zip::from(&mut out).and(x).for_each(|o, &v| *o = quantize_value(v, scales[0], zps[0], q.qmin, q.qmax)),
        Some(a) => {
            for (c, (mut o, xs)) in out.axis_iter_mut(Axis(a)).zip(x.axis_iter(Axis(a))).enumerate() {
                ndarray::Zip::from(&mut o).and(&xs).for_each(|o, &v| *o = quantize_value(v, scales[c], zps[c], q.qmin, q.qmax));
            }
        }
    }
    Ok(out)
}

pub fn quantize(x: &ArrayD<f32>, q: &QuantType) -> Result<Tensor, String> {
    let v = quantize_i64(x, q)?;
    Ok(match q.storage {
        DType::I8 => Tensor::I8(v.mapv(|x| x as i8)),
        DType::U8 => Tensor::U8(v.mapv(|x| x as u8)),
        DType::I16 => Tensor::I16(v.mapv(|x| x as i16)),
        DType::I32 => Tensor::I32(v.mapv(|x| x as i32)),
        d => return Err(format!("cannot quantize to {d}")),
    })
}

pub fn dequantize(t: &Tensor, q: &QuantType) -> Result<ArrayD<f32>, String> {
    let vals = t.to_i64_vec().ok_or("dequantize needs an integer tensor")?;
    let shape = t.shape().to_vec();
    let (axis, scales, zps) = per_channel(q, &shape)?;
    let ints = ArrayD::from_shape_vec(IxDyn(&shape), vals).map_err(|e| e.to_string())?;
    let mut out = ArrayD::<f32>::zeros(IxDyn(&shape));
    match axis {
        None => ndarray::Zip::from(&mut out).and(&ints).for_each(|o, &v| *o = (v - zps[0] as i64) as f32 * scales[0]),
        Some(a) => {
            for (c, (mut o, xs)) in out.axis_iter_mut(Axis(a)).zip(ints.axis_iter(Axis(a))).enumerate() {
                ndarray::Zip::from(&mut o).and(&xs).for_each(|o, &v| *o = (v - zps[c] as i64) as f32 * scales[c]);
            }
        }
    }
    Ok(out)
}
