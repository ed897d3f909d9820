//! Dense tensors of every storage type: constants in the IR and values in the interpreter.
use crate::types::DType;
use ndarray::{ArrayD, IxDyn};

#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
    I32(ArrayD<i32>),
    I16(ArrayD<i16>),
    I8(ArrayD<i8>),
    U8(ArrayD<u8>),
    Bool(ArrayD<bool>),
}

/// Applies the same expression to the array inside any variant.
#[macro_export]
macro_rules! map_tensor {
    ($t:expr, $a:ident => $e:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $crate::Tensor::F32($e),
            $crate::Tensor::I64($a) => $crate::Tensor::I64($e),
            $crate::Tensor::I32($a) => $crate::Tensor::I32($e),
            $crate::Tensor::I16($a) => $crate::Tensor::I16($e),
            $crate::Tensor::I8($a) => $crate::Tensor::I8($e),
            $crate::Tensor::U8($a) => $crate::Tensor::U8($e),
            $crate::Tensor::Bool($a) => $crate::Tensor::Bool($e),
        }
    };
}

/// Evaluates an expression on the array inside any variant (for results that are not tensors).
#[macro_export]
macro_rules! with_tensor {
    ($t:expr, $a:ident => $e:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $e,
            $crate::Tensor::I64($a) => $e,
            $crate::Tensor::I32($a) => $e,
            $crate::Tensor::I16($a) => $e,
            $crate::Tensor::I8($a) => $e,
            $crate::Tensor::U8($a) => $e,
            $crate::Tensor::Bool($a) => $e,
        }
    };
}

impl Tensor {
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::I64(_) => DType::I64,
            Tensor::I32(_) => DType::I32,
            Tensor::I16(_) => DType::I16,
            Tensor::I8(_) => DType::I8,
            Tensor::U8(_) => DType::U8,
            Tensor::Bool(_) => DType::Bool,
        }
    }

    pub fn shape(&self) -> &[usize] {
        with_tensor!(self, a => a.shape())
    }

    pub fn len(&self) -> usize {
        with_tensor!(self, a => a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        let s = IxDyn(shape);
        match dtype {
            DType::F32 => Tensor::F32(ArrayD::zeros(s)),
            DType::I64 => Tensor::I64(ArrayD::zeros(s)),
            DType::I32 => Tensor::I32(ArrayD::zeros(s)),
            DType::I16 => Tensor::I16(ArrayD::zeros(s)),
            DType::I8 => Tensor::I8(ArrayD::zeros(s)),
            DType::U8 => Tensor::U8(ArrayD::zeros(s)),
            DType::Bool => Tensor::Bool(ArrayD::from_elem(s, false)),
        }
    }

    pub fn from_f32(shape: &[usize], data: Vec<f32>) -> Option<Tensor> {
        ArrayD::from_shape_vec(IxDyn(shape), data).ok().map(Tensor::F32)
    }

    pub fn from_i64(shape: &[usize], data: Vec<i64>) -> Option<Tensor> {
        ArrayD::from_shape_vec(IxDyn(shape), data).ok().map(Tensor::I64)
    }

    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a),
            _ => None,
        }
    }

    /// Integer contents widened to i64 (shape arguments, indices), in logical order.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        match self {
            Tensor::I64(a) => Some(a.iter().copied().collect()),
            Tensor::I32(a) => Some(a.iter().map(|&x| x as i64).collect()),
            Tensor::I16(a) => Some(a.iter().map(|&x| x as i64).collect()),
            Tensor::I8(a) => Some(a.iter().map(|&x| x as i64).collect()),
            Tensor::U8(a) => Some(a.iter().map(|&x| x as i64).collect()),
            Tensor::Bool(a) => Some(a.iter().map(|&x| x as i64).collect()),
            Tensor::F32(_) => None,
        }
    }

    /// Contents as f32 in logical order (any numeric type).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            Tensor::F32(a) => a.iter().copied().collect(),
            other => other.to_i64_vec().unwrap_or_default().into_iter().map(|x| x as f32).collect(),
        }
    }

    /// Little-endian bytes in logical (row-major) order.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * self.dtype().size_bytes());
        match self {
            Tensor::F32(a) => a.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Tensor::I64(a) => a.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Tensor::I32(a) => a.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Tensor::I16(a) => a.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Tensor::I8(a) => a.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Tensor::U8(a) => out.extend(a.iter()),
            Tensor::Bool(a) => out.extend(a.iter().map(|&b| b as u8)),
        }
        out
    }

    /// Builds a tensor from little-endian bytes; None when the byte count does not match the shape.
    pub fn from_le_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Option<Tensor> {
        let n: usize = shape.iter().product();
        if bytes.len() != n * dtype.size_bytes() {
            return None;
        }
        let s = IxDyn(shape);
        macro_rules! conv {
            ($t:ty, $w:expr) => {
                bytes.chunks_exact($w).map(|c| <$t>::from_le_bytes(c.try_into().unwrap())).collect::<Vec<$t>>()
            };
        }
        Some(match dtype {
            DType::F32 => Tensor::F32(ArrayD::from_shape_vec(s, conv!(f32, 4)).ok()?),
            DType::I64 => Tensor::I64(ArrayD::from_shape_vec(s, conv!(i64, 8)).ok()?),
            DType::I32 => Tensor::I32(ArrayD::from_shape_vec(s, conv!(i32, 4)).ok()?),
            DType::I16 => Tensor::I16(ArrayD::from_shape_vec(s, conv!(i16, 2)).ok()?),
            DType::I8 => Tensor::I8(ArrayD::from_shape_vec(s, conv!(i8, 1)).ok()?),
            DType::U8 => Tensor::U8(ArrayD::from_shape_vec(s, bytes.to_vec()).ok()?),
            DType::Bool => Tensor::Bool(ArrayD::from_shape_vec(s, bytes.iter().map(|&b| b != 0).collect()).ok()?),
        })
    }

    /// FNV-1a over the little-endian bytes: identifies elided constants in printed IR.
    pub fn content_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h
    }

    /// Same contents in a standard (row-major contiguous) layout.
    pub fn into_standard(self) -> Tensor {
        map_tensor!(self, a => if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() })
    }
}
