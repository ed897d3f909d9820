//! Element and tensor types. Quantization parameters live only here, in the types (as in MLIR's quant
//! dialect), so every value says how its integers map back to reals.
use std::fmt;

/// Storage element types a tensor can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    pub const ALL: [DType; 7] = [DType::F32, DType::I64, DType::I32, DType::I16, DType::I8, DType::U8, DType::Bool];

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }

    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::I64 => 8,
            DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The full integer range of a storage type, for quantized values.
    pub fn int_range(self) -> Option<(i64, i64)> {
        match self {
            DType::I8 => Some((-128, 127)),
            DType::U8 => Some((0, 255)),
            DType::I16 => Some((-32768, 32767)),
            DType::I32 => Some((i32::MIN as i64, i32::MAX as i64)),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How stored integers map to reals: real = scale * (q - zp).
#[derive(Clone, Debug, PartialEq)]
pub enum QParams {
    PerTensor {
        scale: f32,
        zp: i32,
    },
    PerAxis {
        axis: usize,
        scales: Vec<f32>,
        zps: Vec<i32>,
    },
    /// A range measured by calibration, before scale and zero point are chosen.
    Calibrated {
        min: f32,
        max: f32,
    },
}

/// A quantized element type: integer storage, the integer range actually used, and the mapping to reals.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantType {
    pub storage: DType,
    pub qmin: i64,
    pub qmax: i64,
    pub params: QParams,
}

impl QuantType {
    pub fn new(storage: DType, params: QParams) -> QuantType {
        let (qmin, qmax) = storage.int_range().unwrap_or((0, 0));
        QuantType { storage, qmin, qmax, params }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ElemType {
    Plain(DType),
    Q(QuantType),
}

impl ElemType {
    /// The type of the stored elements.
    pub fn storage(&self) -> DType {
        match self {
            ElemType::Plain(d) => *d,
            ElemType::Q(q) => q.storage,
        }
    }
}

/// The type of a value: a statically shaped tensor, or unknown (only behind an opaque, unsupported op).
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    Tensor { elem: ElemType, shape: Vec<usize> },
    Unknown,
}

impl Type {
    pub fn plain(dtype: DType, shape: Vec<usize>) -> Type {
        Type::Tensor { elem: ElemType::Plain(dtype), shape }
    }
    pub fn f32(shape: Vec<usize>) -> Type {
        Type::plain(DType::F32, shape)
    }
    pub fn shape(&self) -> Option<&[usize]> {
        match self {
            Type::Tensor { shape, .. } => Some(shape),
            Type::Unknown => None,
        }
    }
    pub fn elem(&self) -> Option<&ElemType> {
        match self {
            Type::Tensor { elem, .. } => Some(elem),
            Type::Unknown => None,
        }
    }
    pub fn dtype(&self) -> Option<DType> {
        self.elem().map(|e| e.storage())
    }
    pub fn quant(&self) -> Option<&QuantType> {
        match self.elem() {
            Some(ElemType::Q(q)) => Some(q),
            _ => None,
        }
    }
    /// Element count; None for unknown types (valid types never overflow: see [`MAX_ELEMS`]).
    pub fn numel(&self) -> Option<usize> {
        self.shape().and_then(checked_numel)
    }
    pub fn with_shape(&self, shape: Vec<usize>) -> Type {
        match self {
            Type::Tensor { elem, .. } => Type::Tensor { elem: elem.clone(), shape },
            Type::Unknown => Type::Unknown,
        }
    }
}

/// The most elements a tensor may have (2^40): larger shapes are rejected, so element counts and byte
/// sizes never overflow.
pub const MAX_ELEMS: usize = 1 << 40;

/// The element count of a shape, or None when it exceeds [`MAX_ELEMS`].
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).filter(|n| *n <= MAX_ELEMS)
}

/// Shortest text that parses back to the same f32 (Rust's Debug formatting round-trips).
pub fn fmt_f32(x: f32) -> String {
    format!("{x:?}")
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("q<")?;
        match &self.params {
            QParams::PerTensor { scale, zp } => write!(f, "{}, {}", fmt_f32(*scale), zp)?,
            QParams::PerAxis { axis, scales, zps } => {
                let s: Vec<String> = scales.iter().map(|x| fmt_f32(*x)).collect();
                let z: Vec<String> = zps.iter().map(|x| x.to_string()).collect();
                write!(f, "axis {axis}, [{}], [{}]", s.join(", "), z.join(", "))?
            }
            QParams::Calibrated { min, max } => write!(f, "calibrated {}, {}", fmt_f32(*min), fmt_f32(*max))?,
        }
        if self.storage.int_range() != Some((self.qmin, self.qmax)) {
            write!(f, ", {}..{}", self.qmin, self.qmax)?;
        }
        f.write_str(">")
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Unknown => f.write_str("?"),
            Type::Tensor { elem, shape } => {
                let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
                write!(f, "{}[{}]", elem.storage(), dims.join(","))?;
                if let ElemType::Q(q) = elem {
                    write!(f, " {q}")?;
                }
                Ok(())
            }
        }
    }
}
