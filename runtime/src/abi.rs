//! The C ABI between generated code and the kernels. Generated code calls, per step,
//! `qcc_k_<kind>(hdr, blob, arena)`: `hdr` points at the step's header (u64 words in the constant blob),
//! `blob` at the blob (packed weights, per-channel parameters), `arena` at the scratch memory holding every
//! activation. Headers are written by the compiler (`encode`) and read here (`decode`), from one field list
//! per kernel, so the two sides cannot drift. Everything a header addresses was laid out by the compiler
//! for this plan; the kernels trust it as they trust their own code.
use crate::kernels::dwconv::{DwConv, DwGeom};
use crate::kernels::elementwise::{self, IntElem, QAdd};
use crate::kernels::epilogue::{Epilogue, FloatAct};
use crate::kernels::fconv;
use crate::kernels::fgemm::FGemm;
use crate::kernels::float::{self, BinOp, Binary, UnOp};
use crate::kernels::gemm::Gemm;
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
    unsafe fn slice<'a, T>(self, blob: *const u8) -> &'a [T] {
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
    /// Requantization parameters shared by gemm and dwconv (per-channel arrays padded like the weights).
    EpiHdr { mult: Arr, zy: i32, qlo: i32, qhi: i32, act: Option<Act>, acc_scale: Arr, out_scale: f32 }
);
impl EpiHdr {
    unsafe fn epilogue<'a>(&self, blob: *const u8) -> Epilogue<'a> {
        // SAFETY: the arrays were laid out by the compiler.
        unsafe {
            let float_act = match self.act {
                Some(Act::Relu) | Some(Act::Clip { .. }) | None => None,
                Some(act) => Some(FloatAct { act, acc_scale: self.acc_scale.slice(blob), out_scale: self.out_scale }),
            };
            Epilogue { mult: self.mult.slice(blob), zy: self.zy, qlo: self.qlo, qhi: self.qhi, float_act }
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
header!(DequantizeHdr {
    isa: Isa,
    x: usize,
    len: usize,
    from_nhwc: bool,
    dims: [usize; 4],
    scale: f32,
    zp: i32,
    elem: IntElem,
    out: usize
});
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
    conv: DwGeom,
    pad: Arr
});
header!(
    /// Gathers convolution windows of NHWC bytes into rows of kp bytes ((ky, kx, c) order); taps outside
    /// the input hold the input's zero point.
    Im2colHdr { g: DwGeom, cin: usize, pad_byte: usize, kp: usize, x: usize, out: usize }
);
header!(DwConvHdr {
    isa: Isa,
    g: DwGeom,
    zx: i32,
    xor: bool,
    wts: Arr,
    bias: Arr,
    bias_full: Arr,
    sat: Arr,
    epi: EpiHdr,
    x: usize,
    out: usize
});
header!(
    /// Quantized add; with `mid_on`, the add's output (mid_s, mid_z, mid_lo..mid_hi) is dequantized,
    /// clamped to mid_min..mid_max and quantized again to the out parameters, in one pass.
    QAddHdr {
        isa: Isa, len: usize, a: usize, sa: f32, za: i32, ea: IntElem, b: usize, sb: f32, zb: i32, eb: IntElem,
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
header!(MaxPoolHdr { elem: IntElem, g: DwGeom, x: usize, out: usize });
header!(
    /// f32 product out[m, p] (at out + m·rs + p·cs) = act(Σ_k a[m, k]·b[k·ldb + p] + bias[m]).
    FGemmHdr { isa: Isa, m: usize, k: usize, p: usize, a: Arr, b: usize, ldb: usize, bias: Arr, act: Option<Act>, out: usize, rs: usize, cs: usize }
);
header!(Im2colF32Hdr { g: DwGeom, x: usize, out: usize });
header!(FDwConvHdr { isa: Isa, g: DwGeom, x: usize, w: Arr, bias: Arr, act: Option<Act>, out: usize });
header!(FGapHdr { x: usize, planes: usize, hw: usize, out: usize });
header!(FMaxPoolHdr { g: DwGeom, x: usize, out: usize });
header!(
    /// Copies a buffer; `mode` 1 turns NHWC into NCHW order, 2 NCHW into NHWC (dims are [n, c, h, w]).
    CopyHdr { src: usize, dst: usize, bytes: usize, esize: usize, mode: usize, dims: [usize; 4] }
);
header!(
    /// f32 binary op with broadcasting; a constant operand lives in the blob (offset a or b).
    BinaryHdr { isa: Isa, op: usize, dims: Arr, a: usize, a_const: bool, sa: Arr, b: usize, b_const: bool, sb: Arr, out: usize }
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
        };
        UnaryHdr { isa, kind, p1, p2, act, len, x, out }
    }
    fn op(&self) -> UnOp {
        match (self.kind, self.act) {
            (0, _) => UnOp::Clip { min: self.p1, max: self.p2 },
            (1, Some(a)) => UnOp::Act(a),
            (2, _) => UnOp::Sqrt,
            (3, _) => UnOp::Exp,
            (4, _) => UnOp::Erf,
            _ => UnOp::Identity,
        }
    }
}

/// Reads a header: `hdr` points at its words inside the blob.
unsafe fn words<'a>(hdr: *const u64) -> &'a [u64] {
    // SAFETY: every header is followed by at least 64 words of blob (the compiler pads the blob), more than
    // the longest header; decode reads only its own fields.
    unsafe { std::slice::from_raw_parts(hdr, 64) }
}

/// # Safety
/// Called by generated code with a header, blob and arena the compiler laid out for this step.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_quantize(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    // SAFETY (all kernels below): the header's offsets address buffers of the arena the compiler sized
    // for exactly these shapes.
    unsafe {
        let h = QuantizeHdr::decode(words(hdr));
        let dims = h.to_nhwc.then_some(h.dims);
        elementwise::quantize(h.isa, arena.add(h.x) as *const f32, h.len, dims, h.scale, h.zp, h.lo, h.hi, h.elem, arena.add(h.out));
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_dequantize(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = DequantizeHdr::decode(words(hdr));
        let dims = h.from_nhwc.then_some(h.dims);
        elementwise::dequantize(h.isa, arena.add(h.x), h.len, dims, h.scale, h.zp, h.elem, arena.add(h.out) as *mut f32);
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_gemm(hdr: *const u64, blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = GemmHdr::decode(words(hdr));
        let g = Gemm {
            isa: h.isa,
            m: h.m,
            k: h.k,
            n: h.n,
            a: arena.add(h.a),
            lda: h.lda,
            xor: h.xor,
            b: h.b.slice(blob),
            bias: h.bias.slice(blob),
            zw: (h.zw.len > 0).then(|| h.zw.slice(blob)),
            sat: (h.sat.len > 0).then(|| h.sat.slice(blob)),
            conv: h.implicit.then(|| (h.conv, blob.add(h.pad.off))),
            epi: h.epi.epilogue(blob),
            out: arena.add(h.out),
            ldo: h.ldo,
        };
        g.run();
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_im2col(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = Im2colHdr::decode(words(hdr));
        let (g, c) = (h.g, h.cin);
        let x = elementwise::Ptr(arena.add(h.x));
        let out = elementwise::Ptr(arena.add(h.out));
        crate::kernels::pool::parallel_for(g.n * g.oh, &|t| {
            let (b, oy) = (t / g.oh, t % g.oh);
            for ox in 0..g.ow {
                let row = out.get().add(((b * g.oh + oy) * g.ow + ox) * h.kp);
                for ky in 0..g.kh {
                    let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
                    let ix0 = (ox * g.stride[1]) as isize - g.pad[1] as isize;
                    let dst = row.add(ky * g.kw * c);
                    let inside_row = iy >= 0 && iy < g.h as isize;
                    let last = ix0 + ((g.kw - 1) * g.dil[1]) as isize;
                    if inside_row && g.dil[1] == 1 && ix0 >= 0 && last < g.w as isize {
                        // The whole window row is inside: kw·c contiguous bytes.
                        let src = x.get().add(((b * g.h + iy as usize) * g.w + ix0 as usize) * c);
                        copy_small(src, dst, g.kw * c);
                        continue;
                    }
                    for kx in 0..g.kw {
                        let ix = ix0 + (kx * g.dil[1]) as isize;
                        let dst = dst.add(kx * c);
                        if !inside_row || ix < 0 || ix >= g.w as isize {
                            std::ptr::write_bytes(dst, h.pad_byte as u8, c);
                        } else {
                            copy_small(x.get().add(((b * g.h + iy as usize) * g.w + ix as usize) * c), dst, c);
                        }
                    }
                }
                // Bytes kh·kw·c..kp meet zero weights; keep them defined.
                let used = g.kh * g.kw * c;
                std::ptr::write_bytes(row.add(used), 0, h.kp - used);
            }
        });
    }
}

/// Copies n bytes; a byte loop beats a memcpy call for the few bytes of early layers (RGB windows).
unsafe fn copy_small(src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY: caller's contract: both valid for n bytes, not overlapping.
    unsafe {
        if n < 32 {
            for j in 0..n {
                *dst.add(j) = *src.add(j);
            }
        } else {
            std::ptr::copy_nonoverlapping(src, dst, n);
        }
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_dwconv(hdr: *const u64, blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = DwConvHdr::decode(words(hdr));
        let d = DwConv {
            isa: h.isa,
            g: h.g,
            x: arena.add(h.x),
            zx: h.zx,
            xor: h.xor,
            wts: h.wts.slice(blob),
            bias: h.bias.slice(blob),
            bias_full: h.bias_full.slice(blob),
            sat: (h.sat.len > 0).then(|| h.sat.slice(blob)),
            epi: h.epi.epilogue(blob),
            out: arena.add(h.out),
        };
        d.run();
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_qadd(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = QAddHdr::decode(words(hdr));
        QAdd {
            isa: h.isa,
            len: h.len,
            a: (arena.add(h.a), h.sa, h.za, h.ea),
            b: (arena.add(h.b), h.sb, h.zb, h.eb),
            out: (arena.add(h.out), h.so, h.zo, h.eo),
            lo: h.lo,
            hi: h.hi,
            act: h.act,
            mid: h.mid_on.then_some((h.mid_s, h.mid_z, h.mid_lo, h.mid_hi, UnOp::Clip { min: h.mid_min, max: h.mid_max })),
        }
        .run();
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_qgap(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = QGapHdr::decode(words(hdr));
        elementwise::qgap(arena.add(h.x), h.ex, h.n, h.hw, h.c, h.sx, h.zx, arena.add(h.out), h.eo, h.sy, h.zy, h.lo, h.hi);
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_maxpool(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = MaxPoolHdr::decode(words(hdr));
        elementwise::qmaxpool(arena.add(h.x), h.elem, h.g, arena.add(h.out));
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_copy(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = CopyHdr::decode(words(hdr));
        match h.mode {
            1 => elementwise::transpose4(arena.add(h.src), arena.add(h.dst), h.dims, h.esize, false),
            2 => elementwise::transpose4(arena.add(h.src), arena.add(h.dst), h.dims, h.esize, true),
            _ => std::ptr::copy(arena.add(h.src), arena.add(h.dst), h.bytes),
        }
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_binary(hdr: *const u64, blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = BinaryHdr::decode(words(hdr));
        let base = |is_const: bool| if is_const { blob as *mut u8 } else { arena };
        Binary {
            isa: h.isa,
            op: BinOp::from_code(h.op as u64),
            dims: h.dims.slice(blob),
            a: base(h.a_const).add(h.a) as *const f32,
            sa: h.sa.slice(blob),
            b: base(h.b_const).add(h.b) as *const f32,
            sb: h.sb.slice(blob),
            out: arena.add(h.out) as *mut f32,
        }
        .run();
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_unary(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = UnaryHdr::decode(words(hdr));
        float::unary(h.isa, h.op(), arena.add(h.x) as *const f32, h.len, arena.add(h.out) as *mut f32);
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_fgemm(hdr: *const u64, blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = FGemmHdr::decode(words(hdr));
        FGemm {
            isa: h.isa,
            m: h.m,
            k: h.k,
            p: h.p,
            a: h.a.slice(blob),
            b: arena.add(h.b) as *const f32,
            ldb: h.ldb,
            bias: (h.bias.len > 0).then(|| h.bias.slice(blob)),
            act: h.act,
            out: arena.add(h.out) as *mut f32,
            rs: h.rs,
            cs: h.cs,
        }
        .run();
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_im2col_f32(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = Im2colF32Hdr::decode(words(hdr));
        fconv::im2col(arena.add(h.x) as *const f32, h.g, arena.add(h.out) as *mut f32);
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_fdwconv(hdr: *const u64, blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = FDwConvHdr::decode(words(hdr));
        fconv::FDwConv {
            isa: h.isa,
            g: h.g,
            x: arena.add(h.x) as *const f32,
            w: h.w.slice(blob),
            bias: (h.bias.len > 0).then(|| h.bias.slice(blob)),
            act: h.act,
            out: arena.add(h.out) as *mut f32,
        }
        .run();
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_fgap(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = FGapHdr::decode(words(hdr));
        fconv::gap(arena.add(h.x) as *const f32, h.planes, h.hw, arena.add(h.out) as *mut f32);
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_fmaxpool(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = FMaxPoolHdr::decode(words(hdr));
        fconv::maxpool(arena.add(h.x) as *const f32, h.g, arena.add(h.out) as *mut f32);
    }
}

/// Copies `bytes` from `src` to `dst` (the entry point copies caller inputs into the arena and outputs
/// back out). Returns 0.
///
/// # Safety
/// Both pointers must be valid for `bytes` bytes.
#[no_mangle]
pub unsafe extern "C" fn qcc_rt_copy(dst: *mut u8, src: *const u8, bytes: usize) -> i32 {
    // SAFETY: caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, bytes) };
    0
}

/// Whether this CPU runs kernels of the given Isa code (0 = yes). Generated entry points call it first.
#[no_mangle]
pub extern "C" fn qcc_rt_check_cpu(isa: u64) -> i32 {
    if Isa::from_code(isa).supported() {
        0
    } else {
        -3
    }
}

/// The kernels' thread count for AOT users: 0 = all cores.
#[no_mangle]
pub extern "C" fn qcc_set_threads(n: usize) {
    crate::kernels::pool::set_threads(n);
}

/// Every kernel symbol generated code may call, with its address (the JIT resolves names through this).
pub fn symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        ("qcc_k_quantize", qcc_k_quantize as *const u8),
        ("qcc_k_dequantize", qcc_k_dequantize as *const u8),
        ("qcc_k_gemm", qcc_k_gemm as *const u8),
        ("qcc_k_im2col", qcc_k_im2col as *const u8),
        ("qcc_k_dwconv", qcc_k_dwconv as *const u8),
        ("qcc_k_qadd", qcc_k_qadd as *const u8),
        ("qcc_k_qgap", qcc_k_qgap as *const u8),
        ("qcc_k_maxpool", qcc_k_maxpool as *const u8),
        ("qcc_k_copy", qcc_k_copy as *const u8),
        ("qcc_k_binary", qcc_k_binary as *const u8),
        ("qcc_k_unary", qcc_k_unary as *const u8),
        ("qcc_k_fgemm", qcc_k_fgemm as *const u8),
        ("qcc_k_im2col_f32", qcc_k_im2col_f32 as *const u8),
        ("qcc_k_fdwconv", qcc_k_fdwconv as *const u8),
        ("qcc_k_fgap", qcc_k_fgap as *const u8),
        ("qcc_k_fmaxpool", qcc_k_fmaxpool as *const u8),
        ("qcc_rt_copy", qcc_rt_copy as *const u8),
        ("qcc_rt_check_cpu", qcc_rt_check_cpu as *const u8),
    ]
}
