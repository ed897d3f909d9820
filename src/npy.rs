//! .npy files <-> IR tensors (npyz does the format; this maps element types).
use anyhow::{bail, Context, Result};
use npyz::{DType as NDType, NpyFile, TypeChar, WriterBuilder};
use qcc_ir::{DType, Tensor};
use std::path::Path;

pub fn read_npy(path: &Path) -> Result<Tensor> {
    let what = || format!("cannot read {} as .npy", path.display());
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let npy = NpyFile::new(&bytes[..]).with_context(what)?;
    let shape: Vec<usize> = npy.shape().iter().map(|d| *d as usize).collect();
    if npy.order() == npyz::Order::Fortran {
        bail!("{}: Fortran-ordered arrays are not supported", path.display());
    }
    let NDType::Plain(ts) = npy.dtype() else { bail!("{}: structured arrays are not supported", path.display()) };
    let t = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 4) => Tensor::from_f32(&shape, npy.into_vec::<f32>().with_context(what)?),
        (TypeChar::Float, 8) => Tensor::from_f32(&shape, npy.into_vec::<f64>().with_context(what)?.into_iter().map(|x| x as f32).collect()),
        (TypeChar::Int, 8) => Tensor::from_i64(&shape, npy.into_vec::<i64>().with_context(what)?),
        (TypeChar::Int, 4) => Tensor::from_le_bytes(
            DType::I32,
            &shape,
            &npy.into_vec::<i32>().with_context(what)?.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
        ),
        (TypeChar::Int, 1) => {
            Tensor::from_le_bytes(DType::I8, &shape, &npy.into_vec::<i8>().with_context(what)?.iter().map(|x| *x as u8).collect::<Vec<_>>())
        }
        (TypeChar::Uint, 1) => Tensor::from_le_bytes(DType::U8, &shape, &npy.into_vec::<u8>().with_context(what)?),
        (TypeChar::Bool, 1) => Tensor::from_le_bytes(
            DType::Bool,
            &shape,
            &npy.into_vec::<bool>().with_context(what)?.iter().map(|b| *b as u8).collect::<Vec<_>>(),
        ),
        _ => bail!("{}: element type {} is not supported", path.display(), ts),
    };
    t.with_context(|| format!("{}: data does not fill shape {shape:?}", path.display()))
}

pub fn npy_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let shape: Vec<u64> = t.shape().iter().map(|d| *d as u64).collect();
    macro_rules! write {
        ($a:expr, $t:ty) => {{
            let mut w = npyz::WriteOptions::<$t>::new().default_dtype().shape(&shape).writer(&mut buf).begin_nd()?;
            w.extend($a.iter().copied())?;
            w.finish()?;
        }};
    }
    match t {
        Tensor::F32(a) => write!(a, f32),
        Tensor::I64(a) => write!(a, i64),
        Tensor::I32(a) => write!(a, i32),
        Tensor::I16(a) => write!(a, i16),
        Tensor::I8(a) => write!(a, i8),
        Tensor::U8(a) => write!(a, u8),
        Tensor::Bool(a) => write!(a, bool),
    }
    Ok(buf)
}

pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    crate::fsutil::write_atomic(path, &npy_bytes(t)?)
}
