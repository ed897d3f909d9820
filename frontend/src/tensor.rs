//! TensorProto <-> IR tensors: typed fields, little-endian raw_data and external data files (which must
//! stay inside the model's folder).
use crate::onnx::{tensor_proto::DataType, TensorProto};
use crate::ImportError;
use qcc_ir::{DType, Tensor};
use std::path::{Component, Path};

/// The IR storage type of an ONNX element type code, or None for types qcc does not compute in.
pub fn dtype_from_onnx(code: i32) -> Option<DType> {
    Some(match DataType::try_from(code).ok()? {
        DataType::Float => DType::F32,
        DataType::Int64 => DType::I64,
        DataType::Int32 => DType::I32,
        DataType::Int16 => DType::I16,
        DataType::Int8 => DType::I8,
        DataType::Uint8 => DType::U8,
        DataType::Bool => DType::Bool,
        _ => return None,
    })
}

pub fn dtype_to_onnx(d: DType) -> i32 {
    (match d {
        DType::F32 => DataType::Float,
        DType::I64 => DataType::Int64,
        DType::I32 => DataType::Int32,
        DType::I16 => DataType::Int16,
        DType::I8 => DataType::Int8,
        DType::U8 => DataType::Uint8,
        DType::Bool => DataType::Bool,
    }) as i32
}

pub fn onnx_type_name(code: i32) -> String {
    DataType::try_from(code).map(|d| d.as_str_name().to_lowercase()).unwrap_or_else(|_| format!("type code {code}"))
}

fn read_external(t: &TensorProto, base: Option<&Path>, name: &str) -> Result<Vec<u8>, ImportError> {
    let err = |msg: String| ImportError::Tensor { name: name.to_string(), msg };
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for kv in &t.external_data {
        let v = kv.value();
        match kv.key() {
            "location" => location = Some(v.to_string()),
            "offset" => offset = v.parse().map_err(|_| err(format!("bad external data offset {v:?}")))?,
            "length" => length = Some(v.parse::<u64>().map_err(|_| err(format!("bad external data length {v:?}")))?),
            _ => {}
        }
    }
    let location = location.ok_or_else(|| err("external data without a location".into()))?;
    let rel = Path::new(&location);
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(err(format!("external data location {location:?} escapes the model's folder")));
    }
    let base = base.ok_or_else(|| err("external data needs the model's folder (load the model from a file)".into()))?;
    let path = base.join(rel);
    // A symlink could still lead outside: compare canonical paths.
    let (cbase, cpath) = (base.canonicalize(), path.canonicalize());
    match (cbase, cpath) {
        (Ok(b), Ok(p)) if p.starts_with(&b) => {}
        (_, Err(e)) => return Err(err(format!("cannot open external data {}: {e}", path.display()))),
        _ => return Err(err(format!("external data location {location:?} escapes the model's folder"))),
    }
    let data = std::fs::read(&path).map_err(|e| err(format!("cannot read external data {}: {e}", path.display())))?;
    let start = offset as usize;
    let end = match length {
        Some(l) => start.checked_add(l as usize),
        None => Some(data.len()),
    };
    match end {
        Some(end) if start <= end && end <= data.len() => Ok(data[start..end].to_vec()),
        _ => Err(err(format!("external data range {offset}+{length:?} exceeds {} ({} bytes)", path.display(), data.len()))),
    }
}

/// Converts a TensorProto; `base` is the model's folder, for external data.
pub fn tensor_from_proto(t: &TensorProto, base: Option<&Path>) -> Result<Tensor, ImportError> {
    let name = t.name().to_string();
    let err = |msg: String| ImportError::Tensor { name: name.clone(), msg };
    let code = t.data_type();
    let dt = dtype_from_onnx(code).ok_or_else(|| err(format!("unsupported element type {}", onnx_type_name(code))))?;
    if t.dims.iter().any(|d| *d < 0) {
        return Err(err(format!("negative dimension in {:?}", t.dims)));
    }
    let shape: Vec<usize> = t.dims.iter().map(|d| *d as usize).collect();
    let n = shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).ok_or_else(|| err("too many elements".into()))?;
    let external = t.data_location() == crate::onnx::tensor_proto::DataLocation::External;
    let raw = if external { Some(read_external(t, base, &name)?) } else { t.raw_data.clone() };
    let mismatch = |have: usize| err(format!("holds {have} elements but its shape {shape:?} needs {n}"));
    if let Some(raw) = raw {
        return Tensor::from_le_bytes(dt, &shape, &raw).ok_or_else(|| mismatch(raw.len() / dt.size_bytes()));
    }
    let t = match dt {
        DType::F32 => {
            if t.float_data.len() != n {
                return Err(mismatch(t.float_data.len()));
            }
            Tensor::from_f32(&shape, t.float_data.clone())
        }
        DType::I64 => {
            if t.int64_data.len() != n {
                return Err(mismatch(t.int64_data.len()));
            }
            Tensor::from_i64(&shape, t.int64_data.clone())
        }
        _ => {
            if t.int32_data.len() != n {
                return Err(mismatch(t.int32_data.len()));
            }
            // Narrow types are stored widened in int32_data, one element per entry.
            let mut bytes = Vec::with_capacity(n * dt.size_bytes());
            for &v in &t.int32_data {
                match dt {
                    DType::I32 => bytes.extend_from_slice(&v.to_le_bytes()),
                    DType::I16 => bytes.extend_from_slice(&(v as i16).to_le_bytes()),
                    _ => bytes.push(v as u8),
                }
            }
            Tensor::from_le_bytes(dt, &shape, &bytes)
        }
    };
    t.ok_or_else(|| err("inconsistent data".into()))
}

/// Converts an IR tensor to a TensorProto with raw_data.
pub fn tensor_to_proto(t: &Tensor, name: &str) -> TensorProto {
    TensorProto {
        dims: t.shape().iter().map(|d| *d as i64).collect(),
        data_type: Some(dtype_to_onnx(t.dtype())),
        name: Some(name.to_string()),
        raw_data: Some(t.to_le_bytes()),
        ..Default::default()
    }
}
