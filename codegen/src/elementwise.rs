//! Elementwise steps generated as Cranelift code: the byte table lookup of `qact`, the integer add and
//! multiply (qadd, qmul, with a fused `dequantize → clip → quantize`), and quantize and dequantize of
//! 8-bit values, in place of layout or between planes and channels-last (4 × 4 blocks transposed by a
//! byte shuffle), integer global average pooling and the row copies and requantizations concatenation
//! is made of. Each step's task function
//! `tasks(blob, arena, task)` carries its buffers' offsets, scales and zero points as constants and
//! handles one chunk of elements; `qcc_rt_parallel` runs the tasks on the thread pool. The arithmetic is
//! the interpreter's, operation for operation (docs/semantics.md): integer minus zero point converted to
//! f32, one product per operand, their sum or product, division by the output scale, rounding to
//! nearest even, NaN to the zero point, clamp, plus the zero point. Four lanes per f32 vector (Cranelift
//! lowers 128-bit vectors), sixteen elements per iteration, the chunk's tail one element at a time.
//! A broadcasting add walks output rows, each operand's row contiguous or one element repeated (a
//! squeeze-and-excitation scale). Steps outside that set (16-bit values, other activations, CPUs
//! without SSE4.1's rounding, an image's three planes on AVX-512) call the runtime's Rust kernel
//! instead (`qadd_generated`, `quantize_generated`, `dequantize_generated`, `qgap_generated` and
//! `requant_rows_generated` say which).
use crate::felementwise::{binary_generated, unary_generated};
use crate::fpool::fgap_generated;
use crate::nest::{define_local, define_rt_step, ptr_signature};
use crate::plan::{Blob, Kernel};
use crate::CodegenError;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, ConstantData, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use qcc_ir::Act;
use qcc_runtime::abi::{BinaryHdr, DequantizeHdr, FGapHdr, FGapNhwcHdr, LutHdr, QAddHdr, QGapHdr, QuantizeHdr, RequantRowsHdr, UnaryHdr};
use qcc_runtime::kernels::elementwise::IntElem;
use qcc_runtime::kernels::Isa;

fn err(e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Cranelift(e.to_string())
}

/// Elements per task (as the runtime's elementwise kernels).
pub(crate) const CHUNK: usize = 1 << 14;

/// Whether the qadd step `h` compiled for `isa` is generated (else the runtime's kernel runs it): 8-bit
/// values, no activation or a clamping or leaky one, a target with SSE4.1.
pub fn qadd_generated(isa: Isa, h: &QAddHdr) -> bool {
    let bytes = |e: IntElem| e != IntElem::I16;
    let act = matches!(h.act, None | Some(Act::Relu | Act::Clip { .. } | Act::LeakyRelu { .. }));
    // Broadcasting reads each operand's rows at its strides: contiguous or one element repeated.
    let rows = !h.bcast || (h.sta[3] <= 1 && h.stb[3] <= 1);
    isa != Isa::Scalar && rows && act && bytes(h.ea) && bytes(h.eb) && bytes(h.eo)
}

/// Whether the quantize step `h` is generated: an 8-bit output, in the input's layout or from planes to
/// channels-last (except three channels on AVX-512, an image, which the runtime's kernel reads faster).
pub fn quantize_generated(isa: Isa, h: &QuantizeHdr) -> bool {
    let rgb = h.to_nhwc && h.dims[1] == 3 && isa == Isa::Avx512Vnni;
    // Plane offsets are 32-bit immediates.
    isa != Isa::Scalar && !rgb && h.elem != IntElem::I16 && h.len * 4 <= i32::MAX as usize
}

/// Whether the dequantize step `h` is generated: 8-bit values, in their layout or from channels-last to
/// the logical order.
pub fn dequantize_generated(isa: Isa, h: &DequantizeHdr) -> bool {
    // Plane offsets are 32-bit immediates.
    isa != Isa::Scalar && h.elem != IntElem::I16 && h.len * 4 <= i32::MAX as usize
}

/// Whether the global average pooling step `h` is generated: 8-bit values, and few enough pixels that
/// a channel's sum of (x − zx) fits in i32 (then its conversion to f32 is the interpreter's, from i64).
pub fn qgap_generated(isa: Isa, h: &QGapHdr) -> bool {
    isa != Isa::Scalar && h.ex != IntElem::I16 && h.eo != IntElem::I16 && h.hw.saturating_mul(255) <= i32::MAX as usize
}

/// Whether the concatenation rows step `h` is generated: a copy (any element size), or a requantization
/// between 8-bit types.
pub fn requant_rows_generated(isa: Isa, h: &RequantRowsHdr) -> bool {
    isa != Isa::Scalar && (h.copy > 0 || (h.es != IntElem::I16 && h.ed != IntElem::I16))
}

/// Pixels per task of a quantize or dequantize that changes the layout.
const PIXELS: usize = 1024;

/// Whether Cranelift may use SSE4.1 (`nearest` on f32 vectors is roundps) in `module`: true wherever
/// x86-64-v3 and v4 code runs.
pub(crate) fn has_sse41<M: Module>(module: &M) -> bool {
    module.isa().isa_flags().iter().any(|f| f.name == "has_sse41" && f.as_bool() == Some(true))
}

/// The generated elementwise steps' runtime function, declared when first used.
#[derive(Default)]
pub struct Elementwise {
    parallel: Option<FuncId>,
}

impl Elementwise {
    /// The generated function `step(hdr, blob, arena)` of a step of `kernel` (header `words`, arrays in
    /// `blob`) compiled for `isa`, or None where the runtime's kernel runs it (the `*_generated` rules
    /// here and in felementwise.rs; without SSE4.1 only table lookups are generated).
    pub fn define<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        (isa, kernel, words, blob): (Isa, Kernel, &[u64], &Blob),
        name: &str,
    ) -> Result<Option<FuncId>, CodegenError> {
        let on = has_sse41(module);
        Ok(match kernel {
            Kernel::Binary => match BinaryHdr::decode(words) {
                h if on && binary_generated(isa, &h, blob) => Some(self.define_binary(module, fctx, (&h, blob), name)?),
                _ => None,
            },
            Kernel::Unary => match UnaryHdr::decode(words) {
                h if on && unary_generated(isa, &h) => Some(self.define_unary(module, fctx, &h, name)?),
                _ => None,
            },
            Kernel::Lut => Some(self.define_lut(module, fctx, &LutHdr::decode(words), name)?),
            Kernel::QAdd => match QAddHdr::decode(words) {
                h if on && qadd_generated(isa, &h) => Some(self.define_qadd(module, fctx, &h, name)?),
                _ => None,
            },
            Kernel::Quantize => match QuantizeHdr::decode(words) {
                h if on && quantize_generated(isa, &h) => Some(self.define_quantize(module, fctx, &h, name)?),
                _ => None,
            },
            Kernel::Dequantize => match DequantizeHdr::decode(words) {
                h if on && dequantize_generated(isa, &h) => Some(self.define_dequantize(module, fctx, &h, name)?),
                _ => None,
            },
            Kernel::QGap => match QGapHdr::decode(words) {
                h if on && qgap_generated(isa, &h) => Some(self.define_qgap(module, fctx, &h, name)?),
                _ => None,
            },
            Kernel::FGap if fgap_generated(isa) => Some(self.define_fgap(module, fctx, &FGapHdr::decode(words), name)?),
            Kernel::FGapNhwc if fgap_generated(isa) => Some(self.define_fgap_nhwc(module, fctx, &FGapNhwcHdr::decode(words), name)?),
            Kernel::RequantRows => match RequantRowsHdr::decode(words) {
                h if on && requant_rows_generated(isa, &h) => Some(self.define_requant_rows(module, fctx, &h, name)?),
                _ => None,
            },
            _ => None,
        })
    }

    /// `step(hdr, blob, arena)` of a table lookup step: out[i] = table[x[i]].
    fn define_lut<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        h: &LutHdr,
        name: &str,
    ) -> Result<FuncId, CodegenError> {
        let tasks = define_tasks(module, fctx, &format!("{name}_tasks"), (h.len, CHUNK), |b, blob, arena, s, e| {
            let table = b.ins().iadd_imm_s(blob, h.table as i64);
            let x = b.ins().iadd_imm_s(arena, h.x as i64);
            let out = b.ins().iadd_imm_s(arena, h.out as i64);
            // x and out may be one buffer: each byte is read before it is written.
            element_loop(b, s, e, 1, |b, i| {
                let xi = b.ins().iadd(x, i);
                let byte = b.ins().uload8(types::I64, flags(), xi, 0);
                let at = b.ins().iadd(table, byte);
                let y = b.ins().uload8(types::I32, flags(), at, 0);
                let oi = b.ins().iadd(out, i);
                b.ins().istore8(flags(), y, oi, 0);
            });
        })?;
        self.define_step(module, fctx, tasks, h.len.div_ceil(CHUNK), name)
    }

    /// `step(hdr, blob, arena)` of a qadd or qmul step for which `qadd_generated` holds.
    fn define_qadd<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        h: &QAddHdr,
        name: &str,
    ) -> Result<FuncId, CodegenError> {
        let h = h.clone();
        if !h.bcast {
            let tasks = define_tasks(module, fctx, &format!("{name}_tasks"), (h.len, CHUNK), |b, _blob, arena, s, e| {
                let [a, bb, out] = [h.a, h.b, h.out].map(|o| b.ins().iadd_imm_s(arena, o as i64));
                qadd_run(b, &h, [(a, false), (bb, false)], out, s, e);
            })?;
            return self.define_step(module, fctx, tasks, h.len.div_ceil(CHUNK), name);
        }
        // Broadcasting: output rows of d[3] elements, each operand's row at its strides (its innermost
        // stride 1, or 0 for one element repeated); rows split into tasks of about CHUNK elements.
        let (d, sa, sb) = (h.dims, h.sta, h.stb);
        let rows = d[0] * d[1] * d[2];
        let per = (CHUNK / d[3].max(1)).max(1);
        let tasks = define_tasks(module, fctx, &format!("{name}_tasks"), (rows, per), |b, _blob, arena, r0, r1| {
            let ty = b.func.dfg.value_type(r0);
            let [a, bb, out] = [h.a, h.b, h.out].map(|o| b.ins().iadd_imm_s(arena, o as i64));
            let zero = b.ins().iconst(ty, 0);
            let row_len = b.ins().iconst(ty, d[3] as i64);
            element_loop(b, r0, r1, 1, |b, r| {
                let i0 = b.ins().udiv_imm_u(r, (d[1] * d[2]).max(1) as i64);
                let i12 = b.ins().urem_imm_u(r, (d[1] * d[2]).max(1) as i64);
                let i1 = b.ins().udiv_imm_u(i12, d[2].max(1) as i64);
                let i2 = b.ins().urem_imm_u(i12, d[2].max(1) as i64);
                let at = |b: &mut FunctionBuilder, base: Value, st: [usize; 4]| {
                    let mut p = base;
                    for (i, s) in [(i0, st[0]), (i1, st[1]), (i2, st[2])] {
                        let o = b.ins().imul_imm_s(i, s as i64);
                        p = b.ins().iadd(p, o);
                    }
                    (p, st[3] == 0)
                };
                let (pa, pb) = (at(b, a, sa), at(b, bb, sb));
                let o = b.ins().imul_imm_s(r, d[3] as i64);
                let po = b.ins().iadd(out, o);
                qadd_run(b, &h, [pa, pb], po, zero, row_len);
            });
        })?;
        self.define_step(module, fctx, tasks, rows.div_ceil(per), name)
    }

    /// `step(hdr, blob, arena)` of a quantize step for which `quantize_generated` holds.
    fn define_quantize<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        h: &QuantizeHdr,
        name: &str,
    ) -> Result<FuncId, CodegenError> {
        let h = h.clone();
        let k = (h.scale, h.zp, h.lo, h.hi);
        if h.to_nhwc {
            let [n, _, hh, ww] = h.dims;
            let tiles = (hh * ww).div_ceil(PIXELS).max(1);
            let tasks = define_tasks(module, fctx, &format!("{name}_tasks"), (n * tiles, 1), |b, _blob, arena, t, _| {
                quantize_to_channels_last(b, arena, &h, t, tiles);
            })?;
            return self.define_step(module, fctx, tasks, n * tiles, name);
        }
        let tasks = define_tasks(module, fctx, &format!("{name}_tasks"), (h.len, CHUNK), |b, _blob, arena, s, e| {
            let [x, out] = [h.x, h.out].map(|o| b.ins().iadd_imm_s(arena, o as i64));
            vector_then_scalar(
                b,
                (s, e),
                16,
                |b, i| {
                    let xi = b.ins().imul_imm_s(i, 4);
                    let xi = b.ins().iadd(x, xi);
                    // Any float may arrive here: NaN goes to the zero point.
                    let q: Vec<Value> = (0..4)
                        .map(|j| {
                            let v = b.ins().load(types::F32X4, flags(), xi, 16 * j);
                            quantize(b, types::F32X4, v, k, true)
                        })
                        .collect();
                    let v = narrow16(b, &q, h.elem);
                    let p = b.ins().iadd(out, i);
                    b.ins().store(flags(), v, p, 0);
                },
                |b, i| {
                    let xi = b.ins().imul_imm_s(i, 4);
                    let xi = b.ins().iadd(x, xi);
                    let v = b.ins().load(types::F32, flags(), xi, 0);
                    let q = quantize(b, types::F32, v, k, true);
                    let p = b.ins().iadd(out, i);
                    b.ins().istore8(flags(), q, p, 0);
                },
            );
        })?;
        self.define_step(module, fctx, tasks, h.len.div_ceil(CHUNK), name)
    }

    /// `step(hdr, blob, arena)` of a dequantize step for which `dequantize_generated` holds.
    fn define_dequantize<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        h: &DequantizeHdr,
        name: &str,
    ) -> Result<FuncId, CodegenError> {
        let h = h.clone();
        if h.from_nhwc {
            let [n, _, hh, ww] = h.dims;
            let tiles = (hh * ww).div_ceil(PIXELS).max(1);
            let tasks = define_tasks(module, fctx, &format!("{name}_tasks"), (n * tiles, 1), |b, _blob, arena, t, _| {
                dequantize_to_planes(b, arena, &h, t, tiles);
            })?;
            return self.define_step(module, fctx, tasks, n * tiles, name);
        }
        let tasks = define_tasks(module, fctx, &format!("{name}_tasks"), (h.len, CHUNK), |b, _blob, arena, s, e| {
            let [x, out] = [h.x, h.out].map(|o| b.ins().iadd_imm_s(arena, o as i64));
            vector_then_scalar(
                b,
                (s, e),
                16,
                |b, i| {
                    let p = b.ins().iadd(x, i);
                    let v = b.ins().load(types::I8X16, flags(), p, 0);
                    let o = b.ins().imul_imm_s(i, 4);
                    let o = b.ins().iadd(out, o);
                    for (j, w) in widen4(b, v, h.elem).into_iter().enumerate() {
                        let f = dequant(b, types::F32X4, w, h.scale, h.zp);
                        b.ins().store(flags(), f, o, 16 * j as i32);
                    }
                },
                |b, i| {
                    let p = b.ins().iadd(x, i);
                    let v = load_int(b, p, h.elem);
                    let f = dequant(b, types::F32, v, h.scale, h.zp);
                    let o = b.ins().imul_imm_s(i, 4);
                    let o = b.ins().iadd(out, o);
                    b.ins().store(flags(), f, o, 0);
                },
            );
        })?;
        self.define_step(module, fctx, tasks, h.len.div_ceil(CHUNK), name)
    }

    /// `step(hdr, blob, arena)` of a global average pooling step for which `qgap_generated` holds: one
    /// task per image; 16 channels at a time summed over the pixels in four i32x4 vectors, then
    /// `quantize((f32(Σ (x − zx)) · sx) / f32(hw))`; the channels past a multiple of 16 one at a time.
    fn define_qgap<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        h: &QGapHdr,
        name: &str,
    ) -> Result<FuncId, CodegenError> {
        let h = h.clone();
        let (c, hw) = (h.c, h.hw);
        let k = (h.sy, h.zy, h.lo, h.hi);
        let tasks = define_tasks(module, fctx, &format!("{name}_tasks"), (h.n, 1), |b, _blob, arena, t, _| {
            let ty = b.func.dfg.value_type(t);
            let x = b.ins().imul_imm_s(t, (hw * c) as i64);
            let x = b.ins().iadd_imm_s(x, h.x as i64);
            let x = b.ins().iadd(arena, x);
            let out = b.ins().imul_imm_s(t, c as i64);
            let out = b.ins().iadd_imm_s(out, h.out as i64);
            let out = b.ins().iadd(arena, out);
            let (zero, pixels) = (b.ins().iconst(ty, 0), b.ins().iconst(ty, hw as i64));
            // (f32(s − hw·zx) · sx) / hw for channel sums s of `fty`'s shape.
            let mean = |b: &mut FunctionBuilder, fty: Type, s: Value| {
                let v = dequant(b, fty, s, h.sx, (hw as i32).wrapping_mul(h.zx));
                let n = fconst(b, fty, hw as f32);
                b.ins().fdiv(v, n)
            };
            let all = b.ins().iconst(ty, c as i64);
            vector_then_scalar(
                b,
                (zero, all),
                16,
                |b, ch| {
                    let xc = b.ins().iadd(x, ch);
                    let init = b.ins().iconst(types::I32, 0);
                    let init = b.ins().splat(types::I32X4, init);
                    let sums = fold_loop(b, (zero, pixels), vec![init; 4], |b, p, acc| {
                        let at = b.ins().imul_imm_s(p, c as i64);
                        let at = b.ins().iadd(xc, at);
                        let v = b.ins().load(types::I8X16, flags(), at, 0);
                        widen4(b, v, h.ex).iter().zip(acc).map(|(w, a)| b.ins().iadd(*a, *w)).collect()
                    });
                    let q: Vec<Value> = sums
                        .into_iter()
                        .map(|s| {
                            let v = mean(b, types::F32X4, s);
                            quantize(b, types::F32X4, v, k, true)
                        })
                        .collect();
                    let v = narrow16(b, &q, h.eo);
                    let o = b.ins().iadd(out, ch);
                    b.ins().store(flags(), v, o, 0);
                },
                |b, ch| {
                    let xc = b.ins().iadd(x, ch);
                    let init = b.ins().iconst(types::I32, 0);
                    let sum = fold_loop(b, (zero, pixels), vec![init], |b, p, acc| {
                        let at = b.ins().imul_imm_s(p, c as i64);
                        let at = b.ins().iadd(xc, at);
                        let v = load_int(b, at, h.ex);
                        vec![b.ins().iadd(acc[0], v)]
                    });
                    let v = mean(b, types::F32, sum[0]);
                    let q = quantize(b, types::F32, v, k, true);
                    let o = b.ins().iadd(out, ch);
                    b.ins().istore8(flags(), q, o, 0);
                },
            );
        })?;
        self.define_step(module, fctx, tasks, h.n, name)
    }

    /// `step(hdr, blob, arena)` of one input's rows of a concatenation (`requant_rows_generated` holds):
    /// each row copied 16 bytes at a time, or requantized 16 elements at a time as
    /// `quantize((x − zs) · ss)` with the output's parameters; rows split into tasks of about CHUNK
    /// elements.
    fn define_requant_rows<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        h: &RequantRowsHdr,
        name: &str,
    ) -> Result<FuncId, CodegenError> {
        let h = h.clone();
        let per = (CHUNK / h.len.max(1)).max(1);
        // Scales are finite and positive (the verifier's rule), so no value can be NaN; checked anyway.
        let nan = !(h.ss.is_finite() && h.sd.is_finite() && h.sd > 0.0);
        let tasks = define_tasks(module, fctx, &format!("{name}_tasks"), (h.rows, per), |b, _blob, arena, r0, r1| {
            let ty = b.func.dfg.value_type(r0);
            let [src, dst] = [h.src, h.dst].map(|o| b.ins().iadd_imm_s(arena, o as i64));
            let zero = b.ins().iconst(ty, 0);
            element_loop(b, r0, r1, 1, |b, r| {
                let esize = h.copy.max(1);
                let from = b.ins().imul_imm_s(r, (h.len * esize) as i64);
                let from = b.ins().iadd(src, from);
                let to = b.ins().imul_imm_s(r, (h.dst_stride * esize) as i64);
                let to = b.ins().iadd_imm_s(to, (h.dst_off * esize) as i64);
                let to = b.ins().iadd(dst, to);
                let n = b.ins().iconst(ty, (h.len * esize) as i64);
                if h.copy > 0 {
                    vector_then_scalar(
                        b,
                        (zero, n),
                        16,
                        |b, i| {
                            let p = b.ins().iadd(from, i);
                            let v = b.ins().load(types::I8X16, flags(), p, 0);
                            let q = b.ins().iadd(to, i);
                            b.ins().store(flags(), v, q, 0);
                        },
                        |b, i| {
                            let p = b.ins().iadd(from, i);
                            let v = b.ins().uload8(types::I32, flags(), p, 0);
                            let q = b.ins().iadd(to, i);
                            b.ins().istore8(flags(), v, q, 0);
                        },
                    );
                    return;
                }
                let k = (h.sd, h.zd, h.lo, h.hi);
                vector_then_scalar(
                    b,
                    (zero, n),
                    16,
                    |b, i| {
                        let p = b.ins().iadd(from, i);
                        let v = b.ins().load(types::I8X16, flags(), p, 0);
                        let q: Vec<Value> = widen4(b, v, h.es)
                            .into_iter()
                            .map(|w| {
                                let f = dequant(b, types::F32X4, w, h.ss, h.zs);
                                quantize(b, types::F32X4, f, k, nan)
                            })
                            .collect();
                        let v = narrow16(b, &q, h.ed);
                        let o = b.ins().iadd(to, i);
                        b.ins().store(flags(), v, o, 0);
                    },
                    |b, i| {
                        let p = b.ins().iadd(from, i);
                        let v = load_int(b, p, h.es);
                        let f = dequant(b, types::F32, v, h.ss, h.zs);
                        let q = quantize(b, types::F32, f, k, nan);
                        let o = b.ins().iadd(to, i);
                        b.ins().istore8(flags(), q, o, 0);
                    },
                );
            });
        })?;
        self.define_step(module, fctx, tasks, h.rows.div_ceil(per), name)
    }

    /// `step(hdr, blob, arena)`: qcc_rt_parallel(hdr, blob, arena, tasks, ntasks).
    pub(crate) fn define_step<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        tasks: FuncId,
        ntasks: usize,
        name: &str,
    ) -> Result<FuncId, CodegenError> {
        let parallel = match self.parallel {
            Some(f) => f,
            None => {
                let f = module.declare_function("qcc_rt_parallel", Linkage::Import, &ptr_signature(module, 5)).map_err(err)?;
                *self.parallel.insert(f)
            }
        };
        define_rt_step(module, fctx, parallel, tasks, ntasks, name)
    }
}

/// Elements s..e of a qadd: operand k's element i at ops[k].0 + i, or (ops[k].1, a repeated operand)
/// its one element at ops[k].0; the output's at out + i. Sixteen elements at a time while a whole
/// vector fits, then one at a time.
fn qadd_run(b: &mut FunctionBuilder, h: &QAddHdr, ops: [(Value, bool); 2], out: Value, s: Value, e: Value) {
    let elems = [h.ea, h.eb];
    let scalar = load_int;
    // A repeated operand is read once, before the loops.
    let fixed: Vec<Option<Value>> = (0..2).map(|k| ops[k].1.then(|| scalar(b, ops[k].0, elems[k]))).collect();
    vector_then_scalar(
        b,
        (s, e),
        16,
        |b, i| {
            let x: Vec<[Value; 4]> = (0..2)
                .map(|k| match fixed[k] {
                    Some(v) => [b.ins().splat(types::I32X4, v); 4],
                    None => {
                        let p = b.ins().iadd(ops[k].0, i);
                        let v = b.ins().load(types::I8X16, flags(), p, 0);
                        widen4(b, v, elems[k])
                    }
                })
                .collect();
            let q: Vec<Value> = (0..4).map(|j| qadd_lanes(b, types::F32X4, x[0][j], x[1][j], h)).collect();
            let v = narrow16(b, &q, h.eo);
            let p = b.ins().iadd(out, i);
            b.ins().store(flags(), v, p, 0);
        },
        |b, i| {
            let x: Vec<Value> = (0..2)
                .map(|k| match fixed[k] {
                    Some(v) => v,
                    None => {
                        let p = b.ins().iadd(ops[k].0, i);
                        scalar(b, p, elems[k])
                    }
                })
                .collect();
            let q = qadd_lanes(b, types::F32, x[0], x[1], h);
            let p = b.ins().iadd(out, i);
            b.ins().istore8(flags(), q, p, 0);
        },
    );
}

/// The pixels p0..p1 of task t (image t / tiles) of a step changing the layout of (n, c, h, w) values,
/// and the image's planes (f32) and channels-last pixels (bytes) at offsets `planes` and `pixels`.
struct Tile {
    p0: Value,
    p1: Value,
    planes: Value,
    pixels: Value,
}

fn tile(b: &mut FunctionBuilder, arena: Value, dims: [usize; 4], (planes, pixels): (usize, usize), t: Value, tiles: usize) -> Tile {
    let [_, c, hh, ww] = dims;
    let hw = hh * ww;
    let ty = b.func.dfg.value_type(t);
    let img = b.ins().udiv_imm_u(t, tiles as i64);
    let tile = b.ins().urem_imm_u(t, tiles as i64);
    let p0 = b.ins().imul_imm_s(tile, PIXELS as i64);
    let p1 = b.ins().iadd_imm_s(p0, PIXELS as i64);
    let hw_v = b.ins().iconst(ty, hw as i64);
    let p1 = b.ins().umin(p1, hw_v);
    let at = |b: &mut FunctionBuilder, bytes: usize, offset: usize| {
        let o = b.ins().imul_imm_s(img, bytes as i64);
        let o = b.ins().iadd_imm_s(o, offset as i64);
        b.ins().iadd(arena, o)
    };
    Tile { p0, p1, planes: at(b, c * hw * 4, planes), pixels: at(b, hw * c, pixels) }
}

/// The byte shuffle transposing 4 × 4 bytes: byte k·4 + j goes to j·4 + k (its own inverse).
fn transpose4x4(b: &mut FunctionBuilder) -> cranelift_codegen::ir::Immediate {
    let order: Vec<u8> = (0..16).map(|i| ((i % 4) * 4 + i / 4) as u8).collect();
    b.func.dfg.immediates.push(ConstantData::from(&order[..]))
}

/// Task t of a quantize from planes (n, c, h, w) to channels-last (n, h, w, c), as
/// dequantize_to_planes backwards: 4 pixels of 4 planes quantized, narrowed to 16 bytes, transposed and
/// stored as four 4-byte pixels.
fn quantize_to_channels_last(b: &mut FunctionBuilder, arena: Value, h: &QuantizeHdr, t: Value, tiles: usize) {
    let [_, c, hh, ww] = h.dims;
    let hw = hh * ww;
    let k = (h.scale, h.zp, h.lo, h.hi);
    let ty = b.func.dfg.value_type(t);
    let Tile { p0, p1, planes: x, pixels: out } = tile(b, arena, h.dims, (h.x, h.out), t, tiles);
    let c4 = c / 4 * 4;
    let order = transpose4x4(b);
    vector_then_scalar(
        b,
        (p0, p1),
        4,
        |b, p| {
            let xp = b.ins().imul_imm_s(p, 4);
            let xp = b.ins().iadd(x, xp);
            let op = b.ins().imul_imm_s(p, c as i64);
            let op = b.ins().iadd(out, op);
            let zero = b.ins().iconst(ty, 0);
            let c4_v = b.ins().iconst(ty, c4 as i64);
            element_loop(b, zero, c4_v, 4, |b, ch| {
                let plane = b.ins().imul_imm_s(ch, (hw * 4) as i64);
                let at = b.ins().iadd(xp, plane);
                let q: Vec<Value> = (0..4)
                    .map(|j| {
                        let v = b.ins().load(types::F32X4, flags(), at, (j * hw * 4) as i32);
                        quantize(b, types::F32X4, v, k, true)
                    })
                    .collect();
                let v = narrow16(b, &q, h.elem);
                let v = b.ins().shuffle(v, v, order);
                let v = b.ins().bitcast(types::I32X4, little(), v);
                let o = b.ins().iadd(op, ch);
                for k in 0..4 {
                    let word = b.ins().extractlane(v, k as u8);
                    b.ins().store(flags(), word, o, (k * c) as i32);
                }
            });
            for ch in c4..c {
                let v = b.ins().load(types::F32X4, flags(), xp, (ch * hw * 4) as i32);
                let q = quantize(b, types::F32X4, v, k, true);
                for k in 0..4 {
                    let byte = b.ins().extractlane(q, k as u8);
                    b.ins().istore8(flags(), byte, op, (k * c + ch) as i32);
                }
            }
        },
        |b, p| {
            let xp = b.ins().imul_imm_s(p, 4);
            let xp = b.ins().iadd(x, xp);
            let op = b.ins().imul_imm_s(p, c as i64);
            let op = b.ins().iadd(out, op);
            let zero = b.ins().iconst(ty, 0);
            let c_v = b.ins().iconst(ty, c as i64);
            element_loop(b, zero, c_v, 1, |b, ch| {
                let plane = b.ins().imul_imm_s(ch, (hw * 4) as i64);
                let at = b.ins().iadd(xp, plane);
                let v = b.ins().load(types::F32, flags(), at, 0);
                let q = quantize(b, types::F32, v, k, true);
                let o = b.ins().iadd(op, ch);
                b.ins().istore8(flags(), q, o, 0);
            });
        },
    );
}

/// Vector bitcasts that change the lane count name their byte order.
fn little() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

/// Task t of a dequantize from channels-last (n, h, w, c) to planes (n, c, h, w): pixels
/// (t % tiles)·PIXELS.. of image t / tiles. Blocks of 4 pixels × 4 channels are read as four 4-byte
/// loads, transposed by one byte shuffle and stored as 4 pixels of each of 4 planes; the channels past
/// a multiple of 4 and the pixels past a multiple of 4 go one at a time.
fn dequantize_to_planes(b: &mut FunctionBuilder, arena: Value, h: &DequantizeHdr, t: Value, tiles: usize) {
    let [_, c, hh, ww] = h.dims;
    let hw = hh * ww;
    let ty = b.func.dfg.value_type(t);
    let Tile { p0, p1, planes: out, pixels: x } = tile(b, arena, h.dims, (h.out, h.x), t, tiles);
    let c4 = c / 4 * 4;
    let order = transpose4x4(b);
    vector_then_scalar(
        b,
        (p0, p1),
        4,
        |b, p| {
            let xp = b.ins().imul_imm_s(p, c as i64);
            let xp = b.ins().iadd(x, xp);
            let op = b.ins().imul_imm_s(p, 4);
            let op = b.ins().iadd(out, op);
            let zero = b.ins().iconst(ty, 0);
            let c4_v = b.ins().iconst(ty, c4 as i64);
            element_loop(b, zero, c4_v, 4, |b, ch| {
                let at = b.ins().iadd(xp, ch);
                let words: Vec<Value> = (0..4).map(|k| b.ins().load(types::I32, flags(), at, (k * c) as i32)).collect();
                let mut v = b.ins().scalar_to_vector(types::I32X4, words[0]);
                for (k, w) in words.iter().enumerate().skip(1) {
                    v = b.ins().insertlane(v, *w, k as u8);
                }
                let v = b.ins().bitcast(types::I8X16, little(), v);
                let v = b.ins().shuffle(v, v, order);
                let plane = b.ins().imul_imm_s(ch, (hw * 4) as i64);
                let o = b.ins().iadd(op, plane);
                for (j, w) in widen4(b, v, h.elem).into_iter().enumerate() {
                    let f = dequant(b, types::F32X4, w, h.scale, h.zp);
                    b.ins().store(flags(), f, o, (j * hw * 4) as i32);
                }
            });
            for ch in c4..c {
                let vals: Vec<Value> = (0..4).map(|k| load_int_at(b, xp, (k * c + ch) as i32, h.elem)).collect();
                let mut v = b.ins().scalar_to_vector(types::I32X4, vals[0]);
                for (k, w) in vals.iter().enumerate().skip(1) {
                    v = b.ins().insertlane(v, *w, k as u8);
                }
                let f = dequant(b, types::F32X4, v, h.scale, h.zp);
                b.ins().store(flags(), f, op, (ch * hw * 4) as i32);
            }
        },
        |b, p| {
            let xp = b.ins().imul_imm_s(p, c as i64);
            let xp = b.ins().iadd(x, xp);
            let op = b.ins().imul_imm_s(p, 4);
            let op = b.ins().iadd(out, op);
            let zero = b.ins().iconst(ty, 0);
            let c_v = b.ins().iconst(ty, c as i64);
            element_loop(b, zero, c_v, 1, |b, ch| {
                let at = b.ins().iadd(xp, ch);
                let v = load_int(b, at, h.elem);
                let f = dequant(b, types::F32, v, h.scale, h.zp);
                let plane = b.ins().imul_imm_s(ch, (hw * 4) as i64);
                let o = b.ins().iadd(op, plane);
                b.ins().store(flags(), f, o, 0);
            });
        },
    );
}

/// One 8-bit element at `p` as an i32.
fn load_int(b: &mut FunctionBuilder, p: Value, e: IntElem) -> Value {
    load_int_at(b, p, 0, e)
}

/// One 8-bit element at `p + offset` as an i32.
fn load_int_at(b: &mut FunctionBuilder, p: Value, offset: i32, e: IntElem) -> Value {
    match e {
        IntElem::U8 => b.ins().uload8(types::I32, flags(), p, offset),
        _ => b.ins().sload8(types::I32, flags(), p, offset),
    }
}

/// Four i32x4 vectors of values inside `e`'s range as sixteen bytes (the saturating narrows are exact).
fn narrow16(b: &mut FunctionBuilder, q: &[Value], e: IntElem) -> Value {
    let lo = b.ins().snarrow(q[0], q[1]);
    let hi = b.ins().snarrow(q[2], q[3]);
    if e == IntElem::U8 {
        b.ins().unarrow(lo, hi)
    } else {
        b.ins().snarrow(lo, hi)
    }
}

/// Arena and blob accesses: unaligned, never trapping (the plan keeps them inside their buffers).
pub(crate) fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Defines `tasks(blob, arena, task)`, whose `body(b, blob, arena, s, e)` handles items s..e: task t
/// takes items t·per .. (t + 1)·per of len.
pub(crate) fn define_tasks<M: Module>(
    module: &mut M,
    fctx: &mut FunctionBuilderContext,
    name: &str,
    (len, per): (usize, usize),
    body: impl FnOnce(&mut FunctionBuilder, Value, Value, Value, Value),
) -> Result<FuncId, CodegenError> {
    define_local(module, fctx, name, 3, |module, b, params| {
        let ptr = module.target_config().pointer_type();
        let [blob, arena, task] = [params[0], params[1], params[2]];
        let s = b.ins().imul_imm_s(task, per as i64);
        let e = b.ins().iadd_imm_s(s, per as i64);
        let len = b.ins().iconst(ptr, len as i64);
        let e = b.ins().umin(e, len);
        body(b, blob, arena, s, e);
    })
}

/// `for (i = s; i + step <= e; i += step) vector(i)`, then the elements left one at a time: `scalar(i)`.
pub(crate) fn vector_then_scalar(
    b: &mut FunctionBuilder,
    (s, e): (Value, Value),
    step: i64,
    vector: impl FnOnce(&mut FunctionBuilder, Value),
    scalar: impl FnOnce(&mut FunctionBuilder, Value),
) {
    let last = b.ins().iadd_imm_s(e, 1 - step);
    let rest = element_loop(b, s, last, step, vector);
    element_loop(b, rest, e, 1, scalar);
}

/// `for (i = s; i < e; i += step) body(i)`, returning the first index not handled. Vector loops pass
/// `e` lowered by step − 1 (compared signed: a chunk shorter than a vector makes it negative).
pub(crate) fn element_loop(
    b: &mut FunctionBuilder,
    s: Value,
    e: Value,
    step: i64,
    body: impl FnOnce(&mut FunctionBuilder, Value),
) -> Value {
    let ty = b.func.dfg.value_type(s);
    let head = b.create_block();
    let inner = b.create_block();
    let exit = b.create_block();
    b.append_block_param(head, ty);
    b.append_block_param(inner, ty);
    b.append_block_param(exit, ty);
    b.ins().jump(head, &[s.into()]);
    b.switch_to_block(head);
    let i = b.block_params(head)[0];
    let more = b.ins().icmp(IntCC::SignedLessThan, i, e);
    b.ins().brif(more, inner, &[i.into()], exit, &[i.into()]);
    b.switch_to_block(inner);
    let i = b.block_params(inner)[0];
    body(b, i);
    let next = b.ins().iadd_imm_s(i, step);
    b.ins().jump(head, &[next.into()]);
    b.switch_to_block(exit);
    b.block_params(exit)[0]
}

/// `for (i = s; i < e; i++) acc = body(i, acc)` with the accumulators carried in block parameters;
/// returns their final values.
pub(crate) fn fold_loop(
    b: &mut FunctionBuilder,
    (s, e): (Value, Value),
    init: Vec<Value>,
    body: impl FnOnce(&mut FunctionBuilder, Value, &[Value]) -> Vec<Value>,
) -> Vec<Value> {
    let ty = b.func.dfg.value_type(s);
    let types: Vec<Type> = init.iter().map(|v| b.func.dfg.value_type(*v)).collect();
    let (head, inner, exit) = (b.create_block(), b.create_block(), b.create_block());
    for blk in [head, inner] {
        b.append_block_param(blk, ty);
        for t in &types {
            b.append_block_param(blk, *t);
        }
    }
    for t in &types {
        b.append_block_param(exit, *t);
    }
    let args = |i: Value, acc: &[Value]| -> Vec<cranelift_codegen::ir::BlockArg> {
        std::iter::once(i).chain(acc.iter().copied()).map(|v| v.into()).collect()
    };
    b.ins().jump(head, &args(s, &init));
    b.switch_to_block(head);
    let params = b.block_params(head).to_vec();
    let more = b.ins().icmp(IntCC::SignedLessThan, params[0], e);
    let acc_args: Vec<cranelift_codegen::ir::BlockArg> = params[1..].iter().map(|v| (*v).into()).collect();
    b.ins().brif(more, inner, &args(params[0], &params[1..]), exit, &acc_args);
    b.switch_to_block(inner);
    let params = b.block_params(inner).to_vec();
    let acc = body(b, params[0], &params[1..]);
    let next = b.ins().iadd_imm_s(params[0], 1);
    b.ins().jump(head, &args(next, &acc));
    b.switch_to_block(exit);
    b.block_params(exit).to_vec()
}

/// Sixteen bytes as four i32x4 vectors (elements 0–3, 4–7, 8–11, 12–15).
fn widen4(b: &mut FunctionBuilder, v: Value, e: IntElem) -> [Value; 4] {
    let (lo, hi) = match e {
        IntElem::U8 => (b.ins().uwiden_low(v), b.ins().uwiden_high(v)),
        _ => (b.ins().swiden_low(v), b.ins().swiden_high(v)),
    };
    [b.ins().swiden_low(lo), b.ins().swiden_high(lo), b.ins().swiden_low(hi), b.ins().swiden_high(hi)]
}

/// An f32 constant of type `ty` (scalar or splat).
pub(crate) fn fconst(b: &mut FunctionBuilder, ty: Type, v: f32) -> Value {
    let c = b.ins().f32const(v);
    if ty.is_vector() {
        b.ins().splat(ty, c)
    } else {
        c
    }
}

/// An i32 constant as wide as `ty`'s lanes.
fn iconst(b: &mut FunctionBuilder, ty: Type, v: i32) -> Value {
    let c = b.ins().iconst(types::I32, v as i64);
    if ty.is_vector() {
        b.ins().splat(types::I32X4, c)
    } else {
        c
    }
}

/// (x − z) · s in f32, for x an i32 of `fty`'s shape.
fn dequant(b: &mut FunctionBuilder, fty: Type, x: Value, s: f32, z: i32) -> Value {
    let zc = iconst(b, fty, z);
    let d = b.ins().isub(x, zc);
    let f = b.ins().fcvt_from_sint(fty, d);
    let sc = fconst(b, fty, s);
    b.ins().fmul(f, sc)
}

/// `cc(x, k) ? x : k` lane by lane: with GreaterThan, Rust's `x.max(k)`, with LessThan `x.min(k)`, for
/// k not NaN (a NaN x gives k, as Rust's max and min; Cranelift's fmax and fmin would keep the NaN).
fn pick(b: &mut FunctionBuilder, fty: Type, cc: FloatCC, x: Value, k: Value) -> Value {
    select_if(b, fty, (cc, x, k), x, k)
}

/// `cc(l, r) ? yes : no` lane by lane (on vectors the comparison's mask selects bits).
pub(crate) fn select_if(b: &mut FunctionBuilder, fty: Type, (cc, l, r): (FloatCC, Value, Value), yes: Value, no: Value) -> Value {
    let c = b.ins().fcmp(cc, l, r);
    if fty.is_vector() {
        let mask = b.ins().bitcast(fty, MemFlagsData::new(), c);
        b.ins().bitselect(mask, yes, no)
    } else {
        b.ins().select(c, yes, no)
    }
}

/// quantize_one (runtime/src/kernels/elementwise.rs): clamp(rne(v / s), lo − zp, hi − zp) + zp, NaN to zp.
fn quantize(b: &mut FunctionBuilder, fty: Type, v: Value, (s, zp, lo, hi): (f32, i32, i32, i32), nan: bool) -> Value {
    let ity = if fty.is_vector() { types::I32X4 } else { types::I32 };
    let sc = fconst(b, fty, s);
    let r = b.ins().fdiv(v, sc);
    let r = b.ins().nearest(r);
    // NaN to 0: r == r keeps r. Skipped where no value can be NaN (`may_be_nan`).
    let r = if nan {
        let zero = fconst(b, fty, 0.0);
        select_if(b, fty, (FloatCC::Equal, r, r), r, zero)
    } else {
        r
    };
    let (lo, hi) = (fconst(b, fty, (lo - zp) as f32), fconst(b, fty, (hi - zp) as f32));
    let r = pick(b, fty, FloatCC::GreaterThan, r, lo);
    let r = pick(b, fty, FloatCC::LessThan, r, hi);
    // r is an integer inside i32 by now: the plain conversion (cvttps2dq) is exact, and cheaper on
    // vectors than the saturating one's NaN and range fix-ups.
    let q = if fty.is_vector() { b.ins().x86_cvtt2dq(ity, r) } else { b.ins().fcvt_to_sint_sat(ity, r) };
    let zc = iconst(b, fty, zp);
    b.ins().iadd(q, zc)
}

/// A fused activation as Act::apply computes it (the ones qadd_generated accepts).
fn activation(b: &mut FunctionBuilder, fty: Type, v: Value, act: Option<Act>) -> Value {
    match act {
        None => v,
        Some(Act::Relu) => {
            let zero = fconst(b, fty, 0.0);
            pick(b, fty, FloatCC::GreaterThan, v, zero)
        }
        Some(Act::Clip { min, max }) => clip(b, fty, v, min, max),
        Some(Act::LeakyRelu { alpha }) => {
            // x < 0 ? alpha · x : x, as x >= 0 || NaN ? x : alpha · x.
            let a = fconst(b, fty, alpha);
            let ax = b.ins().fmul(v, a);
            let zero = fconst(b, fty, 0.0);
            select_if(b, fty, (FloatCC::UnorderedOrGreaterThanOrEqual, v, zero), v, ax)
        }
        Some(other) => unreachable!("qadd_generated refuses {other:?}"),
    }
}

/// `v.max(min).min(max)`.
fn clip(b: &mut FunctionBuilder, fty: Type, v: Value, min: f32, max: f32) -> Value {
    let (lo, hi) = (fconst(b, fty, min), fconst(b, fty, max));
    let v = pick(b, fty, FloatCC::GreaterThan, v, lo);
    pick(b, fty, FloatCC::LessThan, v, hi)
}

/// The qadd arithmetic (QAdd::run's `combine`) on i32 inputs of `fty`'s shape; returns i32 outputs.
fn qadd_lanes(b: &mut FunctionBuilder, fty: Type, xa: Value, xb: Value, h: &QAddHdr) -> Value {
    let nan = may_be_nan(h);
    let fa = dequant(b, fty, xa, h.sa, h.za);
    let fb = dequant(b, fty, xb, h.sb, h.zb);
    let v = if h.mul { b.ins().fmul(fa, fb) } else { b.ins().fadd(fa, fb) };
    let v = activation(b, fty, v, h.act);
    let v = if h.mid_on {
        let q1 = quantize(b, fty, v, (h.mid_s, h.mid_z, h.mid_lo, h.mid_hi), nan);
        let f = dequant(b, fty, q1, h.mid_s, h.mid_z);
        clip(b, fty, f, h.mid_min, h.mid_max)
    } else {
        v
    };
    quantize(b, fty, v, (h.so, h.zo, h.lo, h.hi), nan)
}

/// Whether a qadd step may see a NaN before its rounding, so `quantize` must map it to the zero point.
/// Operands are integers of at most 17 bits times their scale; with every scale finite and inside
/// [2^-100, 2^40], finite leaky slope and clip bounds, no step meets 0 · ∞, ∞ − ∞, 0 / 0 or ∞ / ∞ (a
/// value may overflow to ±∞, which the clamp handles), so none is NaN.
fn may_be_nan(h: &QAddHdr) -> bool {
    let ok = |s: f32| s.is_finite() && (2f32.powi(-100)..=2f32.powi(40)).contains(&s);
    let scales = [h.sa, h.sb, h.so].into_iter().chain(h.mid_on.then_some(h.mid_s));
    let act = match h.act {
        Some(Act::LeakyRelu { alpha }) => alpha.is_finite(),
        Some(Act::Clip { min, max }) => !min.is_nan() && !max.is_nan(),
        _ => true,
    };
    let mid = !h.mid_on || (!h.mid_min.is_nan() && !h.mid_max.is_nan());
    !(scales.into_iter().all(ok) && act && mid)
}
