//! The kernels' C entry points, `qcc_k_<kind>(hdr, blob, arena)`, each decoding its header (abi.rs) and
//! calling the kernel; plus the runtime calls generated entry functions make (`qcc_rt_*`) and
//! `qcc_set_threads` for applications. libqcc_runtime.a exports these symbols to object files; the JIT
//! resolves them through `symbols()`.
use crate::abi::*;
use crate::kernels::dwconv::{DwConv, DwGeom};
use crate::kernels::elementwise::{self, QAdd};
use crate::kernels::fconv;
use crate::kernels::fgemm::{FGemm, FSrc};
use crate::kernels::float::{self, BinOp, Binary, UnOp};
use crate::kernels::gemm::Gemm;
use crate::kernels::qpool::{self, RequantRows};
use crate::kernels::wideconv::WideConv;
use crate::kernels::Isa;

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
        elementwise::dequantize(arena.add(h.x), h.len, dims, h.scale, h.zp, h.elem, arena.add(h.out) as *mut f32);
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
            conv_rows: h.conv_rows,
            epi: h.epi.epilogue(blob, arena),
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
        let g = DwGeom { c: h.cin, ..h.g };
        crate::kernels::im2col::im2col_u8(arena.add(h.x), g, h.pad_byte as u8, h.kp, arena.add(h.out));
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
            pairs: h.pairs.slice(blob),
            vnni: h.vnni.slice(blob),
            bias: h.bias.slice(blob),
            bias_full: h.bias_full.slice(blob),
            sat: (h.sat.len > 0).then(|| h.sat.slice(blob)),
            epi: h.epi.epilogue(blob, arena),
            out: arena.add(h.out),
        };
        d.run();
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_wideconv(hdr: *const u64, blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = WideConvHdr::decode(words(hdr));
        WideConv {
            isa: h.isa,
            g: h.g,
            m: h.m,
            groups: h.groups,
            x: arena.add(h.x),
            ex: h.ex,
            zx: h.zx,
            w: h.w.slice(blob),
            bias: h.bias.slice(blob),
            epi: h.epi.epilogue(blob, arena),
            out: arena.add(h.out),
            eo: h.eo,
        }
        .run();
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
            mul: h.mul,
            bcast: h.bcast.then_some((h.dims, h.sta, h.stb)),
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
        qpool::qgap(arena.add(h.x), h.ex, h.n, h.hw, h.c, h.sx, h.zx, arena.add(h.out), h.eo, h.sy, h.zy, h.lo, h.hi);
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_maxpool(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = MaxPoolHdr::decode(words(hdr));
        qpool::qmaxpool(arena.add(h.x), h.elem, h.g, arena.add(h.out));
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_qavgpool(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = QAvgPoolHdr::decode(words(hdr));
        let out = (h.sy, h.zy, h.lo, h.hi);
        qpool::qavgpool(arena.add(h.x), h.ex, h.g, h.pe, h.include_pad, (h.sx, h.zx), arena.add(h.out), h.eo, out);
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_requant_rows(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = RequantRowsHdr::decode(words(hdr));
        RequantRows {
            copy: h.copy,
            rows: h.rows,
            len: h.len,
            src: (arena.add(h.src), h.es, h.ss, h.zs),
            dst: (arena.add(h.dst), h.ed, h.sd, h.zd),
            dst_stride: h.dst_stride,
            dst_off: h.dst_off,
            lo: h.lo,
            hi: h.hi,
        }
        .run();
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_copy(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = CopyHdr::decode(words(hdr));
        std::ptr::copy(arena.add(h.src), arena.add(h.dst), h.bytes);
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
pub unsafe extern "C" fn qcc_k_lut(hdr: *const u64, blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = LutHdr::decode(words(hdr));
        // SAFETY: the header's contract: 256 table bytes in the blob, len bytes at x and out (which may
        // coincide: each byte is read before it is written).
        let table = std::slice::from_raw_parts(blob.add(h.table), 256);
        for i in 0..h.len {
            *arena.add(h.out + i) = table[*arena.add(h.x + i) as usize];
        }
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_strided(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = StridedHdr::decode(words(hdr));
        elementwise::strided_copy(arena.add(h.src), arena.add(h.dst), h.esize, h.dims, h.ss, h.ds);
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_softmax(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = SoftmaxHdr::decode(words(hdr));
        let n = h.outer * h.len * h.inner;
        let out = arena.add(h.out) as *mut f32;
        // SAFETY: x and out are n floats each in the arena (the header's contract); they may coincide.
        std::ptr::copy(arena.add(h.x) as *const f32, out, n);
        // SAFETY: out holds the n floats of [outer, len, inner] row-major, and nothing else reads or
        // writes them while this step runs.
        let y = ndarray::ArrayViewMut3::from_shape_ptr((h.outer, h.len, h.inner), out);
        crate::nn::softmax_lanes(y);
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
            src: if h.conv_on {
                FSrc::Conv { x: arena.add(h.b) as *const f32, g: h.g }
            } else {
                FSrc::Matrix { b: arena.add(h.b) as *const f32, ldb: h.ldb }
            },
            bias: (h.bias.len > 0).then(|| h.bias.slice(blob)),
            act: h.act,
            res: h.res_on.then(|| arena.add(h.res) as *const f32),
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
        fconv::maxpool(h.isa, arena.add(h.x) as *const f32, h.g, arena.add(h.out) as *mut f32);
    }
}

/// # Safety
/// As qcc_k_quantize.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_favgpool(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    unsafe {
        let h = FAvgPoolHdr::decode(words(hdr));
        fconv::avgpool(arena.add(h.x) as *const f32, h.g, h.pe, h.include_pad, arena.add(h.out) as *mut f32);
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
        ("qcc_k_wideconv", qcc_k_wideconv as *const u8),
        ("qcc_k_qadd", qcc_k_qadd as *const u8),
        ("qcc_k_qgap", qcc_k_qgap as *const u8),
        ("qcc_k_maxpool", qcc_k_maxpool as *const u8),
        ("qcc_k_qavgpool", qcc_k_qavgpool as *const u8),
        ("qcc_k_requant_rows", qcc_k_requant_rows as *const u8),
        ("qcc_k_copy", qcc_k_copy as *const u8),
        ("qcc_k_binary", qcc_k_binary as *const u8),
        ("qcc_k_unary", qcc_k_unary as *const u8),
        ("qcc_k_softmax", qcc_k_softmax as *const u8),
        ("qcc_k_strided", qcc_k_strided as *const u8),
        ("qcc_k_lut", qcc_k_lut as *const u8),
        ("qcc_k_fgemm", qcc_k_fgemm as *const u8),
        ("qcc_k_fdwconv", qcc_k_fdwconv as *const u8),
        ("qcc_k_fgap", qcc_k_fgap as *const u8),
        ("qcc_k_fmaxpool", qcc_k_fmaxpool as *const u8),
        ("qcc_k_favgpool", qcc_k_favgpool as *const u8),
        ("qcc_k_host", crate::host::qcc_k_host as *const u8),
        ("qcc_rt_host_begin", crate::host::qcc_rt_host_begin as *const u8),
        ("qcc_rt_host_status", crate::host::qcc_rt_host_status as *const u8),
        ("qcc_rt_copy", qcc_rt_copy as *const u8),
        ("qcc_rt_check_cpu", qcc_rt_check_cpu as *const u8),
    ]
}
