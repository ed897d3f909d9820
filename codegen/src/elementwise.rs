//! Elementwise steps generated as Cranelift code: the byte table lookup of `qact` and the integer
//! add and multiply (qadd, qmul, with a fused `dequantize → clip → quantize`). Each step's task function
//! `tasks(blob, arena, task)` carries its buffers' offsets, scales and zero points as constants and
//! handles one chunk of elements; `qcc_rt_parallel` runs the tasks on the thread pool. The arithmetic is
//! the interpreter's, operation for operation (docs/semantics.md): integer minus zero point converted to
//! f32, one product per operand, their sum or product, division by the output scale, rounding to
//! nearest even, NaN to the zero point, clamp, plus the zero point. Four lanes per f32 vector (Cranelift
//! lowers 128-bit vectors), sixteen elements per iteration, the chunk's tail one element at a time.
//! A broadcasting add walks output rows, each operand's row contiguous or one element repeated (a
//! squeeze-and-excitation scale). Steps outside that set (16-bit values, other activations, CPUs
//! without SSE4.1's rounding) call the runtime's Rust kernel instead (`qadd_generated` says which).
use crate::nest::{define_local, define_rt_step, ptr_signature};
use crate::CodegenError;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use qcc_ir::Act;
use qcc_runtime::abi::{LutHdr, QAddHdr};
use qcc_runtime::kernels::elementwise::IntElem;
use qcc_runtime::kernels::Isa;

fn err(e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Cranelift(e.to_string())
}

/// Elements per task (as the runtime's elementwise kernels).
const CHUNK: usize = 1 << 14;

/// Whether the qadd step `h` compiled for `isa` is generated (else the runtime's kernel runs it): 8-bit
/// values, no activation or a clamping or leaky one, a target with SSE4.1.
pub fn qadd_generated(isa: Isa, h: &QAddHdr) -> bool {
    let bytes = |e: IntElem| e != IntElem::I16;
    let act = matches!(h.act, None | Some(Act::Relu | Act::Clip { .. } | Act::LeakyRelu { .. }));
    // Broadcasting reads each operand's rows at its strides: contiguous or one element repeated.
    let rows = !h.bcast || (h.sta[3] <= 1 && h.stb[3] <= 1);
    isa != Isa::Scalar && rows && act && bytes(h.ea) && bytes(h.eb) && bytes(h.eo)
}

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
    /// `step(hdr, blob, arena)` of a table lookup step: out[i] = table[x[i]].
    pub fn define_lut<M: Module>(
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
    pub fn define_qadd<M: Module>(
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

    /// `step(hdr, blob, arena)`: qcc_rt_parallel(hdr, blob, arena, tasks, ntasks).
    fn define_step<M: Module>(
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
    let scalar = |b: &mut FunctionBuilder, p: Value, e: IntElem| match e {
        IntElem::U8 => b.ins().uload8(types::I32, flags(), p, 0),
        _ => b.ins().sload8(types::I32, flags(), p, 0),
    };
    // A repeated operand is read once, before the loops.
    let fixed: Vec<Option<Value>> = (0..2).map(|k| ops[k].1.then(|| scalar(b, ops[k].0, elems[k]))).collect();
    let e16 = b.ins().iadd_imm_s(e, -15);
    let rest = element_loop(b, s, e16, 16, |b, i| {
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
        let lo = b.ins().snarrow(q[0], q[1]);
        let hi = b.ins().snarrow(q[2], q[3]);
        // Every value is inside the output type's range already, so the saturating narrow is exact.
        let v = if h.eo == IntElem::U8 { b.ins().unarrow(lo, hi) } else { b.ins().snarrow(lo, hi) };
        let p = b.ins().iadd(out, i);
        b.ins().store(flags(), v, p, 0);
    });
    element_loop(b, rest, e, 1, |b, i| {
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
    });
}

/// Arena and blob accesses: unaligned, never trapping (the plan keeps them inside their buffers).
fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Defines `tasks(blob, arena, task)`, whose `body(b, blob, arena, s, e)` handles items s..e: task t
/// takes items t·per .. (t + 1)·per of len.
fn define_tasks<M: Module>(
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

/// `for (i = s; i < e; i += step) body(i)`, returning the first index not handled. Vector loops pass
/// `e` lowered by step − 1 (compared signed: a chunk shorter than a vector makes it negative).
fn element_loop(b: &mut FunctionBuilder, s: Value, e: Value, step: i64, body: impl FnOnce(&mut FunctionBuilder, Value)) -> Value {
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

/// Sixteen bytes as four i32x4 vectors (elements 0–3, 4–7, 8–11, 12–15).
fn widen4(b: &mut FunctionBuilder, v: Value, e: IntElem) -> [Value; 4] {
    let (lo, hi) = match e {
        IntElem::U8 => (b.ins().uwiden_low(v), b.ins().uwiden_high(v)),
        _ => (b.ins().swiden_low(v), b.ins().swiden_high(v)),
    };
    [b.ins().swiden_low(lo), b.ins().swiden_high(lo), b.ins().swiden_low(hi), b.ins().swiden_high(hi)]
}

/// An f32 constant of type `ty` (scalar or splat).
fn fconst(b: &mut FunctionBuilder, ty: Type, v: f32) -> Value {
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
fn select_if(b: &mut FunctionBuilder, fty: Type, (cc, l, r): (FloatCC, Value, Value), yes: Value, no: Value) -> Value {
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
