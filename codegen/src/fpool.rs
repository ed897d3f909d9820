//! f32 global average pooling generated as Cranelift code, in either layout: each mean is the sum
//! `pool_sum` (runtime/src/kernels/float.rs) defines divided by the pixel count, the interpreter's order
//! of additions, so results are bit-identical to it. Over planes (NCHW) a plane's groups of eight
//! elements feed two 4-lane running sums (lanes k and k + 4 of the definition); channels-last (NHWC),
//! four channels at a time, each of the eight running sums is one 4-lane vector over the channels.
use crate::elementwise::{define_tasks, fconst, flags, fold_loop, vector_then_scalar, Elementwise, CHUNK};
use crate::CodegenError;
use cranelift_codegen::ir::{types, InstBuilder, Type, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Module};
use qcc_runtime::abi::{FGapHdr, FGapNhwcHdr};
use qcc_runtime::kernels::Isa;

/// Whether a global average pooling step compiled for `isa` is generated: everywhere but the portable
/// target, whose steps run the runtime's Rust kernels (the same sums).
pub fn fgap_generated(isa: Isa) -> bool {
    isa != Isa::Scalar
}

impl Elementwise {
    /// `step(hdr, blob, arena)` of a global average pooling over planes: tasks of whole planes.
    pub(crate) fn define_fgap<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        h: &FGapHdr,
        name: &str,
    ) -> Result<FuncId, CodegenError> {
        let (hw, per) = (h.hw, (CHUNK / h.hw.max(1)).max(1));
        let (x0, out0) = (h.x, h.out);
        let tasks = define_tasks(module, fctx, &format!("{name}_tasks"), (h.planes, per), |b, _blob, arena, s, e| {
            let ty = b.func.dfg.value_type(s);
            crate::elementwise::element_loop(b, s, e, 1, |b, p| {
                let at = b.ins().imul_imm_s(p, 4 * hw as i64);
                let at = b.ins().iadd_imm_s(at, x0 as i64);
                let plane = b.ins().iadd(arena, at);
                let groups = b.ins().iconst(ty, (hw / 8) as i64);
                let zero = b.ins().iconst(ty, 0);
                let init = fconst(b, types::F32X4, 0.0);
                let sums = fold_loop(b, (zero, groups), vec![init; 2], |b, gi, acc| {
                    let at = b.ins().imul_imm_s(gi, 32);
                    let at = b.ins().iadd(plane, at);
                    (0..2)
                        .map(|j| {
                            let v = b.ins().load(types::F32X4, flags(), at, 16 * j);
                            b.ins().fadd(acc[j as usize], v)
                        })
                        .collect()
                });
                // Lane k holds s_k + s_{k+4}.
                let pairs = b.ins().fadd(sums[0], sums[1]);
                let mut acc = fconst(b, types::F32, 0.0);
                for k in 0..4 {
                    let v = b.ins().extractlane(pairs, k);
                    acc = b.ins().fadd(acc, v);
                }
                for i in hw - hw % 8..hw {
                    let v = load(b, types::F32, plane, 4 * i as i64);
                    acc = b.ins().fadd(acc, v);
                }
                let n = fconst(b, types::F32, hw as f32);
                let mean = b.ins().fdiv(acc, n);
                let at = b.ins().imul_imm_s(p, 4);
                let at = b.ins().iadd_imm_s(at, out0 as i64);
                let o = b.ins().iadd(arena, at);
                b.ins().store(flags(), mean, o, 0);
            });
        })?;
        self.define_step(module, fctx, tasks, h.planes.div_ceil(per), name)
    }

    /// `step(hdr, blob, arena)` of a global average pooling over channels-last images: one task per image.
    pub(crate) fn define_fgap_nhwc<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        h: &FGapNhwcHdr,
        name: &str,
    ) -> Result<FuncId, CodegenError> {
        let (pixels, c) = (h.pixels, h.c);
        let (x0, out0) = (h.x, h.out);
        let tasks = define_tasks(module, fctx, &format!("{name}_tasks"), (h.n, 1), |b, _blob, arena, img, _| {
            let ty = b.func.dfg.value_type(img);
            let at = b.ins().imul_imm_s(img, (4 * pixels * c) as i64);
            let at = b.ins().iadd_imm_s(at, x0 as i64);
            let x = b.ins().iadd(arena, at);
            let at = b.ins().imul_imm_s(img, 4 * c as i64);
            let at = b.ins().iadd_imm_s(at, out0 as i64);
            let out = b.ins().iadd(arena, at);
            let (zero, all) = (b.ins().iconst(ty, 0), b.ins().iconst(ty, c as i64));
            // The mean of the channels whose first is at `xc` (as many as `fty` has lanes) into `o`.
            let channels = |b: &mut FunctionBuilder, fty: Type, ch: Value| {
                let at = b.ins().ishl_imm_u(ch, 2);
                let xc = b.ins().iadd(x, at);
                let groups = b.ins().iconst(ty, (pixels / 8) as i64);
                let init = fconst(b, fty, 0.0);
                let row = 4 * c as i64;
                let sums = fold_loop(b, (zero, groups), vec![init; 8], |b, gi, acc| {
                    let at = b.ins().imul_imm_s(gi, 8 * row);
                    let at = b.ins().iadd(xc, at);
                    (0..8)
                        .map(|k| {
                            let v = load(b, fty, at, k * row);
                            b.ins().fadd(acc[k as usize], v)
                        })
                        .collect()
                });
                let mut acc = fconst(b, fty, 0.0);
                for k in 0..4 {
                    let pair = b.ins().fadd(sums[k], sums[k + 4]);
                    acc = b.ins().fadd(acc, pair);
                }
                for p in pixels - pixels % 8..pixels {
                    let v = load(b, fty, xc, p as i64 * row);
                    acc = b.ins().fadd(acc, v);
                }
                let n = fconst(b, fty, pixels as f32);
                let mean = b.ins().fdiv(acc, n);
                let o = b.ins().iadd(out, at);
                b.ins().store(flags(), mean, o, 0);
            };
            vector_then_scalar(b, (zero, all), 4, |b, ch| channels(b, types::F32X4, ch), |b, ch| channels(b, types::F32, ch));
        })?;
        self.define_step(module, fctx, tasks, h.n, name)
    }
}

/// A value of type `fty` at `base + offset` (offsets past 32 bits are added first).
fn load(b: &mut FunctionBuilder, fty: Type, base: Value, offset: i64) -> Value {
    match i32::try_from(offset) {
        Ok(o) => b.ins().load(fty, flags(), base, o),
        Err(_) => {
            let p = b.ins().iadd_imm_s(base, offset);
            b.ins().load(fty, flags(), p, 0)
        }
    }
}
