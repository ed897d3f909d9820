//! The C ABI between generated code and the kernels (the entry points are in entry.rs). Generated code
//! calls, per step,
//! `qcc_k_<kind>(hdr, blob, arena)`: `hdr` points at the step's header (u64 words in the constant blob),
//! `blob` at the blob (packed weights, per-channel parameters), `arena` at the scratch memory holding every
//! activation. Headers are written by the compiler (`encode`) and read here (`decode`), from one field list
//! per kernel, so the two sides cannot drift. Everything a header addresses was laid out by the compiler
//! for this plan; the kernels trust it as they trust their own code.
use crate::kernels::dwconv::DwGeom;
use crate::kernels::elementwise::IntElem;
use crate::kernels::epilogue::{Epilogue, FloatAct, ResidualIn};
use crate::kernels::float::UnOp;
use crate::kernels::Isa;
use qcc_ir::Act;

/// A header field: how it is written as u64 words and read back.
pub trait Field: Sized {
    fn put(&self, w: &mut Vec<u64>);
    fn take(r: &mut &[u64]) -> Self;
}

fn next(r: &mut &[u64]) -> u64 {
    let (v, rest) = r.split_first().map(|(v, rest)| (*v, rest)).unwrap_or((0, &[]));
    *r = rest;
    v
}

impl Field for usize {
    fn put(&self, w: &mut Vec<u64>) {
        w.push(*self as u64)
    }
    fn take(r: &mut &[u64]) -> Self {
        next(r) as usize
    }
}
impl Field for i32 {
    fn put(&self, w: &mut Vec<u64>) {
        w.push(*self as u32 as u64)
    }
    fn take(r: &mut &[u64]) -> Self {
        next(r) as u32 as i32
    }
}
impl Field for f32 {
    fn put(&self, w: &mut Vec<u64>) {
        w.push(self.to_bits() as u64)
    }
    fn take(r: &mut &[u64]) -> Self {
        f32::from_bits(next(r) as u32)
    }
}
impl Field for bool {
    fn put(&self, w: &mut Vec<u64>) {
        w.push(*self as u64)
    }
    fn take(r: &mut &[u64]) -> Self {
        next(r) != 0
    }
}
impl Field for Isa {
    fn put(&self, w: &mut Vec<u64>) {
        w.push(self.code())
    }
    fn take(r: &mut &[u64]) -> Self {
        Isa::from_code(next(r))
    }
}
impl Field for IntElem {
    fn put(&self, w: &mut Vec<u64>) {
        w.push(self.code())
    }
    fn take(r: &mut &[u64]) -> Self {
        IntElem::from_code(next(r))
    }
}
impl Field for Option<Act> {
    fn put(&self, w: &mut Vec<u64>) {
        let (k, a, b) = match *self {
            None => (0, 0.0, 0.0),
            Some(Act::Relu) => (1, 0.0, 0.0),
            Some(Act::Clip { min, max }) => (2, min, max),
            Some(Act::LeakyRelu { alpha }) => (3, alpha, 0.0),
            Some(Act::HardSigmoid { alpha, beta }) => (4, alpha, beta),
            Some(Act::HardSwish) => (5, 0.0, 0.0),
            Some(Act::Sigmoid) => (6, 0.0, 0.0),
            Some(Act::Tanh) => (7, 0.0, 0.0),
            Some(Act::Elu { alpha }) => (8, alpha, 0.0),
            Some(Act::Selu { alpha, gamma }) => (9, alpha, gamma),
            Some(Act::Celu { alpha }) => (10, alpha, 0.0),
            Some(Act::Softplus) => (11, 0.0, 0.0),
            Some(Act::Softsign) => (12, 0.0, 0.0),
            Some(Act::Gelu { tanh }) => (13, if tanh { 1.0 } else { 0.0 }, 0.0),
            Some(Act::Mish) => (14, 0.0, 0.0),
        };
        w.extend([k, a.to_bits() as u64, b.to_bits() as u64]);
    }
    fn take(r: &mut &[u64]) -> Self {
        let k = next(r);
        let (a, b) = (f32::take(r), f32::take(r));
        Some(match k {
            1 => Act::Relu,
            2 => Act::Clip { min: a, max: b },
            3 => Act::LeakyRelu { alpha: a },
            4 => Act::HardSigmoid { alpha: a, beta: b },
            5 => Act::HardSwish,
            6 => Act::Sigmoid,
            7 => Act::Tanh,
            8 => Act::Elu { alpha: a },
            9 => Act::Selu { alpha: a, gamma: b },
            10 => Act::Celu { alpha: a },
            11 => Act::Softplus,
            12 => Act::Softsign,
            13 => Act::Gelu { tanh: a != 0.0 },
            14 => Act::Mish,
            _ => return None,
        })
    }
}
impl Field for [usize; 2] {
    fn put(&self, w: &mut Vec<u64>) {
        self.iter().for_each(|v| v.put(w))
    }
    fn take(r: &mut &[u64]) -> Self {
        [usize::take(r), usize::take(r)]
    }
}
impl Field for [usize; 4] {
    fn put(&self, w: &mut Vec<u64>) {
        self.iter().for_each(|v| v.put(w))
    }
    fn take(r: &mut &[u64]) -> Self {
        [usize::take(r), usize::take(r), usize::take(r), usize::take(r)]
    }
}

impl Field for [usize; 6] {
    fn put(&self, w: &mut Vec<u64>) {
        self.iter().for_each(|v| v.put(w))
    }
    fn take(r: &mut &[u64]) -> Self {
        std::array::from_fn(|_| usize::take(r))
    }
}

/// An array in the blob: byte offset and element count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Arr {
    pub off: usize,
    pub len: usize,
}
impl Field for Arr {
    fn put(&self, w: &mut Vec<u64>) {
        w.extend([self.off as u64, self.len as u64])
    }
    fn take(r: &mut &[u64]) -> Self {
        Arr { off: usize::take(r), len: usize::take(r) }
    }
}
impl Arr {
    ///
    /// # Safety
    /// The blob holds `len` aligned elements of T at `off` (the compiler laid it out so).
    pub(crate) unsafe fn slice<'a, T>(self, blob: *const u8) -> &'a [T] {
        // SAFETY: caller's contract.
        unsafe { std::slice::from_raw_parts(blob.add(self.off) as *const T, self.len) }
    }
}

macro_rules! header {
    ($(#[$m:meta])* $name:ident { $($f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name { $(pub $f: $t),* }
        impl $name {
            pub fn encode(&self) -> Vec<u64> {
                let mut w = Vec::new();
                $( self.$f.put(&mut w); )*
                w
            }
            pub fn decode(mut r: &[u64]) -> Self {
                <$name as Field>::take(&mut r)
            }
        }
        impl Field for $name {
            fn put(&self, w: &mut Vec<u64>) {
                w.extend(self.encode())
            }
            fn take(r: &mut &[u64]) -> Self {
                $( let $f = <$t as Field>::take(r); )*
                $name { $($f),* }
            }
        }
    };
}

header!(
    /// Requantization parameters shared by gemm, dwconv and wideconv (per-channel arrays padded like the
    /// weights); with `res_on`, a residual at arena offset `res` (see epilogue::ResidualIn).
    EpiHdr {
        mult: Arr, zy: i32, qlo: i32, qhi: i32, act: Option<Act>, acc_scale: Arr, out_scale: f32,
        res_on: bool, res: usize, res_elem: IntElem, res_ld: usize, res_zp: i32, res_mult: f32, res_scale: f32,
    }
);
impl EpiHdr {
    pub(crate) unsafe fn epilogue<'a>(&self, blob: *const u8, arena: *const u8) -> Epilogue<'a> {
        // SAFETY: the arrays were laid out by the compiler, and so was the residual in the arena.
        unsafe {
            let float_act = match self.act {
                Some(Act::Relu) | Some(Act::Clip { .. }) | None => None,
                Some(act) => Some(FloatAct { act, acc_scale: self.acc_scale.slice(blob), out_scale: self.out_scale }),
            };
            let residual = self.res_on.then(|| ResidualIn {
                ptr: arena.add(self.res),
                elem: self.res_elem,
                ld: self.res_ld,
                zp: self.res_zp,
                mult: self.res_mult,
                scale: self.res_scale,
            });
            Epilogue { mult: self.mult.slice(blob), zy: self.zy, qlo: self.qlo, qhi: self.qhi, float_act, residual }
        }
    }
}
impl Field for DwGeom {
    fn put(&self, w: &mut Vec<u64>) {
        for v in [self.n, self.h, self.w, self.c, self.oh, self.ow, self.kh, self.kw] {
            v.put(w);
        }
        for v in [self.stride, self.pad, self.dil] {
            v.put(w);
        }
    }
    fn take(r: &mut &[u64]) -> Self {
        let mut d = [0usize; 8];
        d.iter_mut().for_each(|v| *v = usize::take(r));
        let (stride, pad, dil) = (<[usize; 2]>::take(r), <[usize; 2]>::take(r), <[usize; 2]>::take(r));
        DwGeom { n: d[0], h: d[1], w: d[2], c: d[3], oh: d[4], ow: d[5], kh: d[6], kw: d[7], stride, pad, dil }
    }
}

header!(QuantizeHdr {
    isa: Isa,
    x: usize,
    len: usize,
    to_nhwc: bool,
    dims: [usize; 4],
    scale: f32,
    zp: i32,
    lo: i32,
    hi: i32,
    elem: IntElem,
    out: usize
});
header!(DequantizeHdr { x: usize, len: usize, from_nhwc: bool, dims: [usize; 4], scale: f32, zp: i32, elem: IntElem, out: usize });
header!(GemmHdr {
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: usize,
    lda: usize,
    xor: bool,
    b: Arr,
    bias: Arr,
    zw: Arr,
    sat: Arr,
    epi: EpiHdr,
    out: usize,
    ldo: usize,
    implicit: bool,
    conv_rows: bool,
    conv: DwGeom,
    pad: Arr
});
header!(
    /// Gathers convolution windows of NHWC bytes into rows of kp bytes ((ky, kx, c) order); taps outside
    /// the input hold the input's zero point. `g.c` is the input's channel count, `cin` the channels
    /// a window reads from `x` on (one group's, for a grouped convolution).
    Im2colHdr { g: DwGeom, cin: usize, pad_byte: usize, kp: usize, x: usize, out: usize }
);
header!(DwConvHdr {
    isa: Isa,
    g: DwGeom,
    zx: i32,
    xor: bool,
    wts: Arr,
    pairs: Arr,
    vnni: Arr,
    bias: Arr,
    bias_full: Arr,
    sat: Arr,
    epi: EpiHdr,
    x: usize,
    out: usize
});
header!(
    /// Quantized add (or multiply); with `mid_on`, the add's output (mid_s, mid_z, mid_lo..mid_hi) is
    /// dequantized, clamped to mid_min..mid_max and quantized again to the out parameters, in one pass.
    /// With `bcast`, operands broadcast over the physical dims `dims` with element strides sta and stb.
    QAddHdr {
        isa: Isa, len: usize, mul: bool, bcast: bool, dims: [usize; 4], sta: [usize; 4], stb: [usize; 4], a: usize, sa: f32, za: i32, ea: IntElem, b: usize, sb: f32, zb: i32, eb: IntElem,
        out: usize, so: f32, zo: i32, eo: IntElem, lo: i32, hi: i32, act: Option<Act>,
        mid_on: bool, mid_s: f32, mid_z: i32, mid_lo: i32, mid_hi: i32, mid_min: f32, mid_max: f32,
    }
);
header!(QGapHdr {
    x: usize,
    ex: IntElem,
    n: usize,
    hw: usize,
    c: usize,
    sx: f32,
    zx: i32,
    out: usize,
    eo: IntElem,
    sy: f32,
    zy: i32,
    lo: i32,
    hi: i32
});
header!(
    /// Convolution (or GEMM as 1×1 over [rows, 1, 1, k]) with 16-bit activations: `w` is
    /// [m][kh][kw][c / groups] of weights minus zero point, as i32.
    WideConvHdr { isa: Isa, g: DwGeom, m: usize, groups: usize, x: usize, ex: IntElem, zx: i32, w: Arr, bias: Arr, epi: EpiHdr, out: usize, eo: IntElem }
);
header!(MaxPoolHdr { elem: IntElem, g: DwGeom, x: usize, out: usize });
header!(
    /// Integer average pooling; `pe` = end pads.
    QAvgPoolHdr {
        ex: IntElem, g: DwGeom, pe: [usize; 2], include_pad: bool, sx: f32, zx: i32, x: usize,
        eo: IntElem, sy: f32, zy: i32, lo: i32, hi: i32, out: usize,
    }
);
header!(
    /// One input of a concatenation: `rows` rows of `len` elements, requantized (or, with `copy` = the
    /// element size, copied) into the output (row stride `dst_stride`, first element `dst_off`).
    RequantRowsHdr {
        copy: usize, rows: usize, len: usize, src: usize, es: IntElem, ss: f32, zs: i32,
        dst: usize, ed: IntElem, sd: f32, zd: i32, dst_stride: usize, dst_off: usize, lo: i32, hi: i32,
    }
);
header!(
    /// f32 product out[m, p] (at out + m·rs + p·cs) = act(Σ_k a[m, k]·b[k·ldb + p] + bias[m]).
    /// With `res_on`, plus a residual at arena offset `res` laid out like out, before the activation.
    /// With `conv_on`, b is an NCHW image whose convolution windows (geometry g) are the columns; else a
    /// matrix of rows ldb floats apart.
    FGemmHdr {
        isa: Isa, m: usize, k: usize, p: usize, a: Arr, b: usize, ldb: usize, conv_on: bool, g: DwGeom, bias: Arr, act: Option<Act>,
        res_on: bool, res: usize, out: usize, rs: usize, cs: usize,
    }
);
header!(FDwConvHdr { isa: Isa, g: DwGeom, x: usize, w: Arr, bias: Arr, act: Option<Act>, out: usize });
header!(FGapHdr { x: usize, planes: usize, hw: usize, out: usize });
header!(
    /// f32 convolution of one image (one group) (fnhwc::FConvNhwc): channels-last input pixels ldx floats
    /// apart (or, with `nchw`, planes), output (and residual) pixels ldo apart and channels cso apart,
    /// weights packed in panels.
    FConvNhwcHdr {
        isa: Isa, g: DwGeom, x: usize, ldx: usize, nchw: bool, m: usize, w: Arr, bias: Arr, act: Option<Act>, res_on: bool,
        res: usize, out: usize, ldo: usize, cso: usize,
    }
);
header!(
    /// f32 depthwise convolution (weights [taps][c]) or, with `max`, max pooling of NHWC images.
    FDwNhwcHdr { isa: Isa, g: DwGeom, x: usize, w: Arr, bias: Arr, act: Option<Act>, max: bool, out: usize }
);
header!(
    /// f32 grouped convolution with groups of mg < 16 output channels, NHWC (fnhwc::FGroupNhwc).
    FGroupNhwcHdr { isa: Isa, g: DwGeom, x: usize, m: usize, mg: usize, w: Arr, bias: Arr, act: Option<Act>, out: usize }
);
header!(FGapNhwcHdr { x: usize, n: usize, pixels: usize, c: usize, out: usize });
header!(FMaxPoolHdr { isa: Isa, g: DwGeom, x: usize, out: usize });
header!(FAvgPoolHdr { g: DwGeom, pe: [usize; 2], include_pad: bool, x: usize, out: usize });
header!(
    /// Copies `bytes` bytes (a reshape that keeps their order; the others are strided copies).
    CopyHdr { src: usize, dst: usize, bytes: usize }
);
header!(
    /// f32 binary op with broadcasting; a constant operand lives in the blob (offset a or b).
    BinaryHdr { isa: Isa, op: usize, dims: Arr, a: usize, a_const: bool, sa: Arr, b: usize, b_const: bool, sb: Arr, out: usize }
);
header!(
    /// A transpose or slice as a strided copy: for each output element (index i over `dims`, up to 6 dims,
    /// leading ones padded), element Σ i·ss of the source (from byte offset `src`) goes to element Σ i·ds
    /// of the destination; the strides carry each value's storage order (channels-last or logical), so
    /// any layout pair is one copy.
    StridedHdr { esize: usize, dims: [usize; 6], ss: [usize; 6], ds: [usize; 6], src: usize, dst: usize }
);
header!(
    /// An elementwise map of `len` bytes through the 256-byte table at blob offset `table` (indexed by
    /// the byte's unsigned value): qact.
    LutHdr { len: usize, x: usize, table: usize, out: usize }
);
header!(
    /// Softmax of a row-major f32 tensor seen as [outer, len, inner], over the middle axis.
    SoftmaxHdr { outer: usize, len: usize, inner: usize, x: usize, out: usize }
);
header!(UnaryHdr { isa: Isa, kind: usize, p1: f32, p2: f32, act: Option<Act>, len: usize, x: usize, out: usize });

impl UnaryHdr {
    pub fn new(isa: Isa, f: UnOp, len: usize, x: usize, out: usize) -> UnaryHdr {
        let (kind, p1, p2, act) = match f {
            UnOp::Clip { min, max } => (0, min, max, None),
            UnOp::Act(a) => (1, 0.0, 0.0, Some(a)),
            UnOp::Sqrt => (2, 0.0, 0.0, None),
            UnOp::Exp => (3, 0.0, 0.0, None),
            UnOp::Erf => (4, 0.0, 0.0, None),
            UnOp::Identity => (5, 0.0, 0.0, None),
            UnOp::Neg => (6, 0.0, 0.0, None),
            UnOp::Abs => (7, 0.0, 0.0, None),
            UnOp::Reciprocal => (8, 0.0, 0.0, None),
            UnOp::Log => (9, 0.0, 0.0, None),
            UnOp::Floor => (10, 0.0, 0.0, None),
            UnOp::Ceil => (11, 0.0, 0.0, None),
        };
        UnaryHdr { isa, kind, p1, p2, act, len, x, out }
    }
    pub fn op(&self) -> UnOp {
        match (self.kind, self.act) {
            (0, _) => UnOp::Clip { min: self.p1, max: self.p2 },
            (1, Some(a)) => UnOp::Act(a),
            (2, _) => UnOp::Sqrt,
            (3, _) => UnOp::Exp,
            (4, _) => UnOp::Erf,
            (6, _) => UnOp::Neg,
            (7, _) => UnOp::Abs,
            (8, _) => UnOp::Reciprocal,
            (9, _) => UnOp::Log,
            (10, _) => UnOp::Floor,
            (11, _) => UnOp::Ceil,
            _ => UnOp::Identity,
        }
    }
}
header!(
    /// An interpreted step (host.rs): `text` is the .qir of a one-node graph, its constants in full, and
    /// `hash` its host::text_hash; `ins` holds, per graph input, two words (arena offset, 1 if stored
    /// channels-last); `out` is the output's arena offset.
    HostHdr { text: Arr, hash: usize, ins: Arr, out: usize, out_nhwc: bool }
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every activation and unary op survives its header words (a missing code would silently run
    /// another function in compiled code).
    #[test]
    fn activations_and_unary_ops_round_trip() {
        let acts = [
            Act::Relu,
            Act::Clip { min: -1.5, max: 6.0 },
            Act::LeakyRelu { alpha: 0.1 },
            Act::HardSigmoid { alpha: 0.2, beta: 0.5 },
            Act::HardSwish,
            Act::Sigmoid,
            Act::Tanh,
            Act::Elu { alpha: 0.7 },
            Act::Selu { alpha: 1.6, gamma: 1.05 },
            Act::Celu { alpha: 2.0 },
            Act::Softplus,
            Act::Softsign,
            Act::Gelu { tanh: false },
            Act::Gelu { tanh: true },
            Act::Mish,
        ];
        for a in acts {
            let mut w = Vec::new();
            Some(a).put(&mut w);
            let mut r: &[u64] = &w;
            assert_eq!(<Option<Act> as Field>::take(&mut r), Some(a));
        }
        let ops = acts.map(UnOp::Act).into_iter().chain([
            UnOp::Clip { min: 0.0, max: 1.0 },
            UnOp::Sqrt,
            UnOp::Exp,
            UnOp::Erf,
            UnOp::Identity,
            UnOp::Neg,
            UnOp::Abs,
            UnOp::Reciprocal,
            UnOp::Log,
            UnOp::Floor,
            UnOp::Ceil,
        ]);
        for f in ops {
            let h = UnaryHdr::new(Isa::Scalar, f, 4, 0, 64);
            assert_eq!(UnaryHdr::decode(&h.encode()).op(), f);
        }
    }
}
