//! f32 elementwise steps generated as Cranelift code: the binary ops (add, sub, mul, div, max, min)
//! with broadcasting, and the unary ops that are plain IEEE arithmetic (clip and relu, leaky relu, hard
//! sigmoid, hard swish, neg, abs, sqrt, reciprocal, floor, ceil, identity). Each computes what
//! `BinOp::apply` and `UnOp::apply` (runtime/src/kernels/float.rs, the interpreter's functions) compute,
//! operation for operation, so results are bit-identical to the interpreter's: correctly rounded
//! arithmetic, and comparisons and selects where the runtime compares. Transcendental ops (exp, log, erf,
//! sigmoid, tanh, …) and operands read at other strides call the runtime's Rust kernel
//! (`binary_generated` and `unary_generated` say which).
use crate::elementwise::{define_tasks, element_loop, fconst, flags, select_if, vector_then_scalar, Elementwise, CHUNK};
use crate::plan::Blob;
use crate::CodegenError;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, Type, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Module};
use qcc_ir::Act;
use qcc_runtime::abi::{BinaryHdr, UnaryHdr};
use qcc_runtime::kernels::float::{BinOp, UnOp};
use qcc_runtime::kernels::Isa;

/// A binary step's loops after merging axes: output dims (row-major, contiguous) and each operand's
/// element strides. Axes of one element are dropped and neighbours that both operands walk as one run
/// are merged, so a same-shape op is one axis and a per-channel one two.
#[derive(Debug, PartialEq)]
struct Walk {
    dims: Vec<usize>,
    sa: Vec<usize>,
    sb: Vec<usize>,
}

fn walk(h: &BinaryHdr, blob: &Blob) -> Walk {
    let read = |a: qcc_runtime::abi::Arr| blob.words(a.off, a.len).into_iter().map(|w| w as usize).collect::<Vec<_>>();
    let (dims, sa, sb) = (read(h.dims), read(h.sa), read(h.sb));
    let mut w = Walk { dims: vec![], sa: vec![], sb: vec![] };
    for ((d, a), b) in dims.into_iter().zip(sa).zip(sb) {
        if d == 1 {
            continue;
        }
        match (w.dims.last_mut(), w.sa.last_mut(), w.sb.last_mut()) {
            (Some(pd), Some(pa), Some(pb)) if *pa == a * d && *pb == b * d => {
                *pd *= d;
                (*pa, *pb) = (a, b);
            }
            _ => {
                w.dims.push(d);
                w.sa.push(a);
                w.sb.push(b);
            }
        }
    }
    if w.dims.is_empty() {
        w = Walk { dims: vec![1], sa: vec![0], sb: vec![0] };
    }
    w
}

/// Whether the binary step `h` is generated: a target with SSE4.1 (as every generated elementwise step)
/// and each operand's innermost run contiguous or one element repeated.
pub fn binary_generated(isa: Isa, h: &BinaryHdr, blob: &Blob) -> bool {
    let w = walk(h, blob);
    let inner = |s: &[usize]| s.last().is_some_and(|&s| s <= 1);
    isa != Isa::Scalar && inner(&w.sa) && inner(&w.sb) && w.dims.iter().product::<usize>() * 4 <= i32::MAX as usize
}

/// Whether the unary step `h` is generated: the ops that are exact IEEE arithmetic, on a target with
/// SSE4.1 (floor and ceil are its roundps).
pub fn unary_generated(isa: Isa, h: &UnaryHdr) -> bool {
    let op = match h.op() {
        UnOp::Act(a) => matches!(a, Act::LeakyRelu { .. } | Act::HardSigmoid { .. } | Act::HardSwish),
        UnOp::Exp | UnOp::Erf | UnOp::Log => false,
        _ => true,
    };
    isa != Isa::Scalar && op
}

impl Elementwise {
    /// `step(hdr, blob, arena)` of a binary step for which `binary_generated` holds.
    pub(crate) fn define_binary<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        (h, blob): (&BinaryHdr, &Blob),
        name: &str,
    ) -> Result<FuncId, CodegenError> {
        let w = walk(h, blob);
        let op = BinOp::from_code(h.op as u64);
        let (ia, ib) = (w.sa[w.sa.len() - 1] == 0, w.sb[w.sb.len() - 1] == 0);
        let r = w.dims.len();
        let inner = w.dims[r - 1];
        let rows: usize = w.dims[..r - 1].iter().product();
        // Tasks of about CHUNK elements: runs of elements of the one row, or whole rows.
        let (items, per) = if r == 1 { (inner, CHUNK) } else { (rows, (CHUNK / inner).max(1)) };
        let tasks = define_tasks(module, fctx, &format!("{name}_tasks"), (items, per), |b, blobv, arena, s, e| {
            let base = |b: &mut FunctionBuilder, is_const: bool, off: usize| {
                let at = if is_const { blobv } else { arena };
                b.ins().iadd_imm_s(at, off as i64)
            };
            let (a, bb, out) = (base(b, h.a_const, h.a), base(b, h.b_const, h.b), base(b, false, h.out));
            if r == 1 {
                binary_run(b, op, [(a, ia), (bb, ib)], out, (s, e));
                return;
            }
            let ty = b.func.dfg.value_type(s);
            let (zero, len) = (b.ins().iconst(ty, 0), b.ins().iconst(ty, inner as i64));
            element_loop(b, s, e, 1, |b, row| {
                // The row's offset in each operand: its index along each outer axis times the strides.
                let (mut pa, mut pb, mut rem) = (a, bb, row);
                for ax in (0..r - 1).rev() {
                    let i = b.ins().urem_imm_u(rem, w.dims[ax] as i64);
                    rem = b.ins().udiv_imm_u(rem, w.dims[ax] as i64);
                    for (p, st) in [(&mut pa, w.sa[ax]), (&mut pb, w.sb[ax])] {
                        if st != 0 {
                            let o = b.ins().imul_imm_s(i, 4 * st as i64);
                            *p = b.ins().iadd(*p, o);
                        }
                    }
                }
                let o = b.ins().imul_imm_s(row, 4 * inner as i64);
                let po = b.ins().iadd(out, o);
                binary_run(b, op, [(pa, ia), (pb, ib)], po, (zero, len));
            });
        })?;
        self.define_step(module, fctx, tasks, items.div_ceil(per), name)
    }

    /// `step(hdr, blob, arena)` of a unary step for which `unary_generated` holds.
    pub(crate) fn define_unary<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        h: &UnaryHdr,
        name: &str,
    ) -> Result<FuncId, CodegenError> {
        let f = h.op();
        let tasks = define_tasks(module, fctx, &format!("{name}_tasks"), (h.len, CHUNK), |b, _blob, arena, s, e| {
            let [x, out] = [h.x, h.out].map(|o| b.ins().iadd_imm_s(arena, o as i64));
            // x and out may be one buffer: each iteration loads its elements before storing them.
            vector_then_scalar(
                b,
                (s, e),
                16,
                |b, i| {
                    let px = at(b, x, i);
                    let v: Vec<Value> = (0..4).map(|j| b.ins().load(types::F32X4, flags(), px, 16 * j)).collect();
                    let y: Vec<Value> = v.into_iter().map(|v| unary_lanes(b, types::F32X4, f, v)).collect();
                    let po = at(b, out, i);
                    for (j, y) in y.into_iter().enumerate() {
                        b.ins().store(flags(), y, po, 16 * j as i32);
                    }
                },
                |b, i| {
                    let px = at(b, x, i);
                    let v = b.ins().load(types::F32, flags(), px, 0);
                    let y = unary_lanes(b, types::F32, f, v);
                    let po = at(b, out, i);
                    b.ins().store(flags(), y, po, 0);
                },
            );
        })?;
        self.define_step(module, fctx, tasks, h.len.div_ceil(CHUNK), name)
    }
}

/// The address of f32 element i from `base`.
fn at(b: &mut FunctionBuilder, base: Value, i: Value) -> Value {
    let o = b.ins().ishl_imm_u(i, 2);
    b.ins().iadd(base, o)
}

/// Elements s..e of a binary op: operand k's element i at ops[k].0 + 4i, or (ops[k].1, a repeated
/// operand) its one element at ops[k].0; the output's at out + 4i. Sixteen at a time, then one by one.
fn binary_run(b: &mut FunctionBuilder, op: BinOp, ops: [(Value, bool); 2], out: Value, (s, e): (Value, Value)) {
    let fixed: Vec<Option<Value>> = ops.iter().map(|&(p, rep)| rep.then(|| b.ins().load(types::F32, flags(), p, 0))).collect();
    vector_then_scalar(
        b,
        (s, e),
        16,
        |b, i| {
            let x: Vec<[Value; 4]> = (0..2)
                .map(|k| match fixed[k] {
                    Some(v) => [b.ins().splat(types::F32X4, v); 4],
                    None => {
                        let p = at(b, ops[k].0, i);
                        [0, 1, 2, 3].map(|j| b.ins().load(types::F32X4, flags(), p, 16 * j))
                    }
                })
                .collect();
            let y: Vec<Value> = (0..4).map(|j| binary_lanes(b, types::F32X4, op, x[0][j], x[1][j])).collect();
            let po = at(b, out, i);
            for (j, y) in y.into_iter().enumerate() {
                b.ins().store(flags(), y, po, 16 * j as i32);
            }
        },
        |b, i| {
            let x: Vec<Value> = (0..2)
                .map(|k| match fixed[k] {
                    Some(v) => v,
                    None => {
                        let p = at(b, ops[k].0, i);
                        b.ins().load(types::F32, flags(), p, 0)
                    }
                })
                .collect();
            let y = binary_lanes(b, types::F32, op, x[0], x[1]);
            let po = at(b, out, i);
            b.ins().store(flags(), y, po, 0);
        },
    );
}

/// BinOp::apply on lanes of `fty`.
fn binary_lanes(b: &mut FunctionBuilder, fty: Type, op: BinOp, x: Value, y: Value) -> Value {
    match op {
        BinOp::Add => b.ins().fadd(x, y),
        BinOp::Sub => b.ins().fsub(x, y),
        BinOp::Mul => b.ins().fmul(x, y),
        BinOp::Div => b.ins().fdiv(x, y),
        BinOp::Max | BinOp::Min => {
            // y > x ? y : x (max) or y < x ? y : x (min), then NaN wherever either operand is NaN.
            let cc = if op == BinOp::Max { FloatCC::GreaterThan } else { FloatCC::LessThan };
            let v = select_if(b, fty, (cc, y, x), y, x);
            let nan = fconst(b, fty, f32::NAN);
            select_if(b, fty, (FloatCC::Unordered, x, y), nan, v)
        }
    }
}

/// UnOp::apply on lanes of `fty`, for the ops `unary_generated` accepts.
fn unary_lanes(b: &mut FunctionBuilder, fty: Type, f: UnOp, x: Value) -> Value {
    match f {
        UnOp::Clip { min, max } => clamp(b, fty, x, min, max),
        UnOp::Act(Act::LeakyRelu { alpha }) => {
            let a = fconst(b, fty, alpha);
            let ax = b.ins().fmul(a, x);
            let zero = fconst(b, fty, 0.0);
            select_if(b, fty, (FloatCC::LessThan, x, zero), ax, x)
        }
        UnOp::Act(Act::HardSigmoid { alpha, beta }) => {
            let (a, c) = (fconst(b, fty, alpha), fconst(b, fty, beta));
            let t = b.ins().fmul(a, x);
            let t = b.ins().fadd(t, c);
            clamp(b, fty, t, 0.0, 1.0)
        }
        UnOp::Act(Act::HardSwish) => {
            let (six, half) = (fconst(b, fty, 6.0), fconst(b, fty, 0.5));
            let t = b.ins().fdiv(x, six);
            let t = b.ins().fadd(t, half);
            let t = clamp(b, fty, t, 0.0, 1.0);
            b.ins().fmul(x, t)
        }
        UnOp::Sqrt => b.ins().sqrt(x),
        UnOp::Neg => b.ins().fneg(x),
        UnOp::Abs => b.ins().fabs(x),
        UnOp::Reciprocal => {
            let one = fconst(b, fty, 1.0);
            b.ins().fdiv(one, x)
        }
        UnOp::Floor => b.ins().floor(x),
        UnOp::Ceil => b.ins().ceil(x),
        UnOp::Identity => x,
        other => unreachable!("unary_generated refuses {other:?}"),
    }
}

/// f32::clamp's steps: x < min ? min : x, then > max ? max; a NaN passes through. Bounds at ±∞ need
/// no comparison (none is true).
fn clamp(b: &mut FunctionBuilder, fty: Type, x: Value, min: f32, max: f32) -> Value {
    let mut v = x;
    if min != f32::NEG_INFINITY {
        let lo = fconst(b, fty, min);
        v = select_if(b, fty, (FloatCC::LessThan, v, lo), lo, v);
    }
    if max != f32::INFINITY {
        let hi = fconst(b, fty, max);
        v = select_if(b, fty, (FloatCC::GreaterThan, v, hi), hi, v);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use qcc_runtime::abi::Arr;

    fn hdr(blob: &mut Blob, dims: &[u64], sa: &[u64], sb: &[u64]) -> BinaryHdr {
        let mut arr = |v: &[u64]| Arr { off: blob.push_words(v), len: v.len() };
        let (dims, sa, sb) = (arr(dims), arr(sa), arr(sb));
        BinaryHdr { isa: Isa::Avx2, op: 0, dims, a: 0, a_const: false, sa, b: 0, b_const: false, sb, out: 0 }
    }

    #[test]
    fn axes_merge_where_both_operands_run_on() {
        let mut blob = Blob::default();
        // Same shape: one run.
        let h = hdr(&mut blob, &[1, 8, 5, 7], &[280, 35, 7, 1], &[280, 35, 7, 1]);
        assert_eq!(walk(&h, &blob), Walk { dims: vec![280], sa: vec![1], sb: vec![1] });
        // A per-channel operand: channels × pixels.
        let h = hdr(&mut blob, &[1, 8, 5, 7], &[280, 35, 7, 1], &[0, 1, 0, 0]);
        assert_eq!(walk(&h, &blob), Walk { dims: vec![8, 35], sa: vec![35, 1], sb: vec![1, 0] });
        // A per-pixel operand over a batch: three axes stay.
        let h = hdr(&mut blob, &[2, 8, 5, 7], &[280, 35, 7, 1], &[35, 0, 7, 1]);
        assert_eq!(walk(&h, &blob), Walk { dims: vec![2, 8, 35], sa: vec![280, 35, 1], sb: vec![35, 0, 1] });
        // A scalar output.
        let h = hdr(&mut blob, &[1, 1], &[0, 0], &[0, 0]);
        assert_eq!(walk(&h, &blob), Walk { dims: vec![1], sa: vec![0], sb: vec![0] });
        // A transposed operand (innermost stride 5) is left to the runtime.
        let h = hdr(&mut blob, &[4, 5], &[5, 1], &[1, 4]);
        assert!(!binary_generated(Isa::Avx2, &h, &blob));
        assert!(binary_generated(Isa::Avx2, &hdr(&mut blob, &[4, 5], &[5, 1], &[0, 1]), &blob));
    }
}
