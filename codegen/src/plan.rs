//! The execution plan: what generated code runs. A list of kernel calls (each with its header in the
//! constant blob), the blob itself (headers, packed weights, per-channel parameters), the arena size and
//! where the graph's inputs and outputs live in it. Lowering builds it; the JIT and the object writer turn
//! it into machine code.
use qcc_ir::DType;
use qcc_runtime::kernels::Isa;

/// What a step runs: a runtime kernel `qcc_k_<name>(hdr, blob, arena)`, or a function codegen generates
/// with the same signature: for GEMMs and row kernels (depthwise and channels-last grouped convolution,
/// pooling) a loop nest (codegen/src/nest.rs), for table lookups and most qadd/qmul steps the whole
/// computation (codegen/src/elementwise.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Quantize,
    Dequantize,
    Gemm,
    Im2col,
    DwConv,
    /// Convolution or GEMM with 16-bit activations.
    WideConv,
    QAdd,
    QGap,
    MaxPool,
    QAvgPool,
    /// One input of an integer concatenation.
    RequantRows,
    Copy,
    Binary,
    Unary,
    Softmax,
    /// A strided copy: transpose or slice.
    Strided,
    /// A byte table lookup per element (qact).
    Lut,
    FGemm,
    FDwConv,
    FGap,
    FMaxPool,
    FAvgPool,
    /// f32 convolution over channels-last values (fnhwc.rs): a generated loop nest (nest.rs) around its
    /// micro-tiles.
    FConvNhwc,
    /// f32 depthwise convolution or max pooling over channels-last values.
    FDwNhwc,
    FGapNhwc,
    FAvgPoolNhwc,
    /// f32 grouped convolution with small groups over channels-last values.
    FGroupNhwc,
    /// The interpreter runs the node (runtime/src/host.rs).
    Host,
}

impl Kernel {
    /// The runtime kernel's symbol; None for steps whose function is always generated (qadd keeps its
    /// kernel for the steps elementwise.rs does not generate).
    pub fn symbol(self) -> Option<&'static str> {
        Some(match self {
            Kernel::Gemm
            | Kernel::DwConv
            | Kernel::MaxPool
            | Kernel::QAvgPool
            | Kernel::FDwNhwc
            | Kernel::FGroupNhwc
            | Kernel::FAvgPoolNhwc
            | Kernel::FMaxPool
            | Kernel::FAvgPool
            | Kernel::FConvNhwc
            | Kernel::Lut => return None,
            Kernel::Quantize => "qcc_k_quantize",
            Kernel::Dequantize => "qcc_k_dequantize",
            Kernel::Im2col => "qcc_k_im2col",
            Kernel::WideConv => "qcc_k_wideconv",
            Kernel::QAdd => "qcc_k_qadd",
            Kernel::QGap => "qcc_k_qgap",
            Kernel::RequantRows => "qcc_k_requant_rows",
            Kernel::Copy => "qcc_k_copy",
            Kernel::Binary => "qcc_k_binary",
            Kernel::Unary => "qcc_k_unary",
            Kernel::Softmax => "qcc_k_softmax",
            Kernel::Strided => "qcc_k_strided",
            Kernel::FGemm => "qcc_k_fgemm",
            Kernel::FDwConv => "qcc_k_fdwconv",
            Kernel::FGap => "qcc_k_fgap",
            Kernel::FGapNhwc => "qcc_k_fgap_nhwc",
            Kernel::Host => "qcc_k_host",
        })
    }

    /// Whether the step computes in f32 (reports count its multiply-accumulates as float).
    pub fn is_float(self) -> bool {
        matches!(self, Kernel::FGemm | Kernel::FDwConv | Kernel::FConvNhwc | Kernel::FDwNhwc | Kernel::FGroupNhwc)
    }

    /// A row kernel's name: its generated loop nest calls `qcc_rt_<name>` and `qcc_uk_<name>_row`.
    pub fn row_kernel(self) -> Option<&'static str> {
        Some(match self {
            Kernel::DwConv => "dwconv",
            Kernel::MaxPool => "maxpool",
            Kernel::QAvgPool => "qavgpool",
            Kernel::FDwNhwc => "fdw_nhwc",
            Kernel::FGroupNhwc => "fgroup_nhwc",
            Kernel::FAvgPoolNhwc => "favgpool_nhwc",
            Kernel::FMaxPool => "fmaxpool",
            Kernel::FAvgPool => "favgpool",
            _ => return None,
        })
    }

    /// The short name reports use.
    pub fn name(self) -> &'static str {
        match (self.symbol(), self.row_kernel()) {
            (Some(s), _) => &s["qcc_k_".len()..],
            (None, Some(r)) => r,
            (None, None) if self == Kernel::Lut => "lut",
            (None, None) if self == Kernel::FConvNhwc => "fconv_nhwc",
            (None, None) => "gemm",
        }
    }
}

/// One kernel call.
#[derive(Clone, Debug)]
pub struct Step {
    pub kernel: Kernel,
    /// Byte offset of the header in the blob.
    pub hdr: usize,
    /// The node's name (ONNX names survive fusion), for reports and errors.
    pub node: String,
    /// Multiply-accumulates this step performs (for GOPS reports).
    pub macs: u64,
    /// For host steps: why no kernel covers the node.
    pub why: Option<String>,
}

/// A graph input or output: where it sits in the arena (logical layout, row-major).
#[derive(Clone, Debug)]
pub struct Io {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub bytes: usize,
}

#[derive(Debug)]
pub struct Plan {
    pub isa: Isa,
    pub blob: Blob,
    pub steps: Vec<Step>,
    pub arena_bytes: usize,
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
}

impl Plan {
    /// Counts of steps per kernel, for `--time-passes` style reports.
    pub fn summary(&self) -> String {
        let mut counts: Vec<(Kernel, usize)> = Vec::new();
        for s in &self.steps {
            match counts.iter_mut().find(|(k, _)| *k == s.kernel) {
                Some((_, n)) => *n += 1,
                None => counts.push((s.kernel, 1)),
            }
        }
        let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{} {n}", k.name())).collect();
        format!(
            "{} steps ({}), arena {:.1} KiB, constants {:.1} KiB, kernels {}{}",
            self.steps.len(),
            parts.join(", "),
            self.arena_bytes as f64 / 1024.0,
            self.blob.len() as f64 / 1024.0,
            self.isa.name(),
            self.steps.iter().filter_map(|s| s.why.as_ref().map(|w| format!("\n  interpreted: \"{}\": {w}", s.node))).collect::<String>()
        )
    }

    pub fn macs(&self) -> u64 {
        self.steps.iter().map(|s| s.macs).sum()
    }
}

/// The constant blob under construction: every entry 64-byte aligned (the blob's base is too, in the JIT
/// and in object files), and 512 zero bytes at the end so header reads never run past it.
#[derive(Debug, Default)]
pub struct Blob {
    bytes: Vec<u8>,
}

impl Blob {
    fn align(&mut self) -> usize {
        let at = self.bytes.len().div_ceil(64) * 64;
        self.bytes.resize(at, 0);
        at
    }
    pub fn push_bytes(&mut self, b: &[u8]) -> usize {
        let at = self.align();
        self.bytes.extend_from_slice(b);
        at
    }
    pub fn push_words(&mut self, w: &[u64]) -> usize {
        let b: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_bytes(&b)
    }
    pub fn push_i32(&mut self, v: &[i32]) -> usize {
        let b: Vec<u8> = v.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_bytes(&b)
    }
    pub fn push_f32(&mut self, v: &[f32]) -> usize {
        let b: Vec<u8> = v.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_bytes(&b)
    }
    pub fn push_i8(&mut self, v: &[i8]) -> usize {
        let b: Vec<u8> = v.iter().map(|v| *v as u8).collect();
        self.push_bytes(&b)
    }
    /// `n` 64-bit words from byte offset `off` (a header), zero past the end.
    pub fn words(&self, off: usize, n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| {
                let mut w = [0u8; 8];
                let at = (off + 8 * i).min(self.bytes.len());
                let bytes = &self.bytes[at..(at + 8).min(self.bytes.len())];
                w[..bytes.len()].copy_from_slice(bytes);
                u64::from_le_bytes(w)
            })
            .collect()
    }
    /// The f32 values of an array pushed before.
    pub fn f32s(&self, a: qcc_runtime::abi::Arr) -> Vec<f32> {
        self.bytes[a.off..a.off + 4 * a.len].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }
    pub fn finish(&mut self) {
        self.align();
        self.bytes.resize(self.bytes.len() + 512, 0);
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}
