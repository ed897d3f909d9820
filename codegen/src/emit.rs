//! Building kernel headers: geometry, per-channel requantization arrays, packed GEMM weights with the
//! zero-point terms folded into the bias, broadcast strides, constant vectors in the blob.
use crate::choose::{int_elem, per_tensor};
use crate::plan::Blob;
use crate::CodegenError;
use qcc_ir::{DType, Graph, Type, ValueId};
use qcc_runtime::abi::*;
use qcc_runtime::kernels::dwconv::DwGeom;
use qcc_runtime::kernels::elementwise::IntElem;
use qcc_runtime::kernels::gemm::{pack_b, packed_dims};
use qcc_runtime::kernels::Isa;
use qcc_runtime::qops::Requant;

pub(crate) fn internal(node: &str) -> CodegenError {
    CodegenError::Unsupported { node: node.into(), msg: "internal error: kernel choice and lowering disagree".into() }
}

pub(crate) fn node_err(node: &str, msg: String) -> CodegenError {
    CodegenError::Unsupported { node: node.into(), msg }
}

/// An optional constant f32 vector (a bias) in the blob; empty when absent.
pub(crate) fn f32_arr(g: &Graph, v: Option<&ValueId>, blob: &mut Blob) -> Arr {
    match v.and_then(|v| g.const_tensor(*v)) {
        Some(t) => {
            let d = t.to_f32_vec();
            Arr { off: blob.push_f32(&d), len: d.len() }
        }
        None => Arr::default(),
    }
}

/// Element strides of an operand of shape `s` broadcast to `out` (right-aligned; 0 on broadcast axes).
pub(crate) fn broadcast_strides(s: &[usize], out: &[usize]) -> Vec<usize> {
    let lead = out.len() - s.len().min(out.len());
    let mut strides = vec![0usize; out.len()];
    let mut acc = 1;
    for i in (0..s.len()).rev() {
        if s[i] != 1 {
            strides[lead + i] = acc;
        }
        acc *= s[i];
    }
    strides
}

pub(crate) fn shape(g: &Graph, v: ValueId) -> Vec<usize> {
    g.ty(v).shape().unwrap_or(&[]).to_vec()
}

pub(crate) fn dims4(t: &Type) -> [usize; 4] {
    let s = t.shape().unwrap_or(&[]);
    if s.len() == 4 {
        [s[0], s[1], s[2], s[3]]
    } else {
        [0; 4]
    }
}

pub(crate) fn geom(xs: &[usize], os: &[usize], kh: usize, kw: usize, strides: &[i64], pads: &[i64], dil: &[i64]) -> DwGeom {
    let two = |v: &[i64], d: usize| [v.first().map_or(d, |x| *x as usize), v.get(1).map_or(d, |x| *x as usize)];
    DwGeom {
        n: xs[0],
        h: xs[2],
        w: xs[3],
        c: xs[1],
        oh: os[2],
        ow: os[3],
        kh,
        kw,
        stride: two(strides, 1),
        pad: two(pads, 0),
        dil: two(dil, 1),
    }
}

/// Per-channel requantization arrays, padded to `np` channels.
pub(crate) fn epi_hdr(blob: &mut Blob, sx: f32, sw: &[f32], out: &Type, act: Option<qcc_ir::Act>, np: usize) -> Result<EpiHdr, String> {
    let oq = out.quant().ok_or("output is not quantized")?;
    let rq = Requant::new(sx, sw, oq, act)?;
    if rq.mult.iter().chain(&rq.acc_scale).any(|m| !m.is_finite()) {
        return Err("requantization multiplier overflows f32".into());
    }
    let pad = |v: &[f32]| {
        let mut v = v.to_vec();
        v.resize(np, 0.0);
        v
    };
    let mult = pad(&rq.mult);
    let acc_scale = pad(&rq.acc_scale);
    Ok(EpiHdr {
        mult: Arr { off: blob.push_f32(&mult), len: np },
        zy: rq.zp as i32,
        qlo: rq.lo as i32,
        qhi: rq.hi as i32,
        act,
        acc_scale: Arr { off: blob.push_f32(&acc_scale), len: np },
        out_scale: rq.out_scale,
        res_on: false,
        res: 0,
        res_elem: IntElem::U8,
        res_ld: 0,
        res_zp: 0,
        res_mult: 0.0,
        res_scale: 0.0,
    })
}

/// Adds a qconv's residual `r` (per-tensor quantized, channels-last at arena offset `off`, `ld` elements
/// per row) to its epilogue.
pub(crate) fn with_residual(h: &mut EpiHdr, g: &Graph, r: ValueId, off: usize, ld: usize) -> Result<(), String> {
    let (sr, zr, q) = per_tensor(g.ty(r)).ok_or("the residual is not quantized per tensor")?;
    let elem = int_elem(q.storage).ok_or("the residual is not 8- or 16-bit")?;
    let res = qcc_runtime::qops::Residual::new(sr, zr, h.out_scale);
    if !res.mult.is_finite() {
        return Err("residual multiplier overflows f32".into());
    }
    (h.res_on, h.res, h.res_elem, h.res_ld, h.res_zp, h.res_mult, h.res_scale) = (true, off, elem, ld, zr, res.mult, res.scale);
    Ok(())
}

/// Packs a GEMM's weights and folds the zero-point terms into its bias (see kernels/gemm.rs).
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(crate) fn gemm_hdr(
    g: &Graph,
    blob: &mut Blob,
    isa: Isa,
    (x, out, out_off): (ValueId, ValueId, usize),
    (rows, k, m): (usize, usize, usize),
    (a, lda): (usize, usize),
    at: &dyn Fn(usize, usize) -> i8,
    (sw, zw, bias, sat): (&[f32], &[i32], &[i64], &Option<Vec<i32>>),
    act: Option<qcc_ir::Act>,
) -> Result<GemmHdr, CodegenError> {
    let (sx, zx, xq) = per_tensor(g.ty(x)).ok_or_else(|| internal("gemm"))?;
    let xor = xq.storage == DType::I8;
    let zxu = zx as i64 + if xor { 128 } else { 0 };
    let (_, np) = packed_dims(k, m);
    let packed = pack_b(isa, k, m, at);
    let mut eff = vec![0i32; np];
    for (c, e) in eff.iter_mut().enumerate().take(m) {
        let colsum: i64 = (0..k).map(|kk| at(kk, c) as i64).sum();
        // Wrapping to i32 is exact modulo 2^32, which is all the kernel's ring arithmetic needs.
        *e = (bias[c] - zxu * colsum + k as i64 * zxu * zw[c] as i64) as i32;
    }
    let mut zwp: Vec<i32> = zw.to_vec();
    zwp.resize(np, 0);
    let any_zw = zw.iter().any(|z| *z != 0);
    let epi = epi_hdr(blob, sx, sw, g.ty(out), act, np).map_err(|e| node_err("gemm", e))?;
    Ok(GemmHdr {
        isa,
        m: rows,
        k,
        n: m,
        a,
        lda,
        xor,
        b: Arr { off: blob.push_i8(&packed), len: packed.len() },
        bias: Arr { off: blob.push_i32(&eff), len: np },
        zw: if any_zw { Arr { off: blob.push_i32(&zwp), len: np } } else { Arr::default() },
        sat: match sat {
            Some(s) => {
                let mut s = s.clone();
                s.resize(np, 0);
                Arr { off: blob.push_i32(&s), len: np }
            }
            None => Arr::default(),
        },
        epi,
        out: out_off,
        ldo: m,
        implicit: false,
        conv_rows: false,
        conv: DwGeom { n: 0, h: 0, w: 0, c: 0, oh: 0, ow: 0, kh: 0, kw: 0, stride: [1, 1], pad: [0, 0], dil: [1, 1] },
        pad: Arr::default(),
    })
}
