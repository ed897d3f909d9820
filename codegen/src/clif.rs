//! Cranelift IR for a plan: `<prefix>_steps(blob, arena)` calls each step's kernel in order;
//! `<prefix>_run(inputs, outputs, scratch)` checks the CPU and the scratch alignment, copies the inputs into
//! the arena, runs the steps and copies the outputs out (0 = ok, -2 = misaligned scratch, -3 = the CPU
//! lacks the kernels' instruction set, -4 = an interpreted step failed); `<prefix>_scratch_bytes()`
//! returns the arena size. The same functions go into the JIT and into object files, so `qcc run`
//! exercises exactly what applications link.
use crate::elementwise::Elementwise;
use crate::nest;
use crate::plan::{Kernel, Plan};
use crate::CodegenError;
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Signature, UserFuncName};
use cranelift_codegen::isa::CallConv;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, FuncId, Linkage, Module};
use qcc_runtime::abi::{FConvNhwcHdr, GemmHdr};
use std::collections::HashMap;

pub struct Entry {
    pub run: FuncId,
    pub scratch_bytes: FuncId,
    /// Per step, the generated function it calls (None: the runtime kernel of its Kernel).
    pub steps: Vec<Option<FuncId>>,
}

fn err(e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Cranelift(e.to_string())
}

/// The host's target ISA with qcc's flags (`pic` for object files).
pub fn host_isa(pic: bool) -> Result<cranelift_codegen::isa::OwnedTargetIsa, CodegenError> {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").map_err(err)?;
    flags.set("is_pic", if pic { "true" } else { "false" }).map_err(err)?;
    let isa = cranelift_native::builder().map_err(err)?;
    isa.finish(settings::Flags::new(flags)).map_err(err)
}

fn sig(cc: CallConv, params: &[types::Type], ret: Option<types::Type>) -> Signature {
    let mut s = Signature::new(cc);
    s.params.extend(params.iter().map(|t| AbiParam::new(*t)));
    s.returns.extend(ret.map(AbiParam::new));
    s
}

/// Declares and defines the plan's functions and blob in `module`.
pub fn define<M: Module>(module: &mut M, plan: &Plan, prefix: &str) -> Result<Entry, CodegenError> {
    let cc = module.isa().default_call_conv();
    let ptr = module.target_config().pointer_type();
    let i32t = types::I32;
    let tcfg = module.target_config();

    let blob = module.declare_data(&format!("{prefix}_blob"), Linkage::Local, false, false).map_err(err)?;
    let mut desc = DataDescription::new();
    desc.define(plan.blob.as_bytes().to_vec().into_boxed_slice());
    desc.set_align(64);
    module.define_data(blob, &desc).map_err(err)?;

    let ksig = sig(cc, &[ptr, ptr, ptr], None);
    let mut kernels: HashMap<&'static str, FuncId> = HashMap::new();
    for name in plan.steps.iter().filter_map(|s| s.kernel.symbol()) {
        if !kernels.contains_key(name) {
            kernels.insert(name, module.declare_function(name, Linkage::Import, &ksig).map_err(err)?);
        }
    }
    let copy = module.declare_function("qcc_rt_copy", Linkage::Import, &sig(cc, &[ptr, ptr, ptr], Some(i32t))).map_err(err)?;
    let check = module.declare_function("qcc_rt_check_cpu", Linkage::Import, &sig(cc, &[types::I64], Some(i32t))).map_err(err)?;
    // Interpreted steps report failures through the runtime; only plans with such steps ask it.
    let hosted = plan.steps.iter().any(|s| s.kernel == Kernel::Host);
    let host_fns = if hosted {
        let begin = module.declare_function("qcc_rt_host_begin", Linkage::Import, &sig(cc, &[], None)).map_err(err)?;
        let status = module.declare_function("qcc_rt_host_status", Linkage::Import, &sig(cc, &[], Some(i32t))).map_err(err)?;
        Some((begin, status))
    } else {
        None
    };

    let mut fctx = FunctionBuilderContext::new();
    // Steps whose function is generated: GEMMs, float convolutions and row kernels (loop nests around runtime
    // microkernels, nest.rs), and the elementwise steps Elementwise::define generates.
    let mut step_fns = vec![None; plan.steps.len()];
    let mut nests = None;
    let mut ew = Elementwise::default();
    for (i, s) in plan.steps.iter().enumerate() {
        let words = plan.blob.words(s.hdr, 64);
        let name = format!("{prefix}_step{i}");
        step_fns[i] = match (s.kernel, s.kernel.row_kernel()) {
            (Kernel::Gemm | Kernel::FConvNhwc, _) | (_, Some(_)) => {
                let n = match &mut nests {
                    Some(n) => n,
                    None => nests.insert(nest::Nests::declare(module)?),
                };
                Some(match (s.kernel, s.kernel.row_kernel()) {
                    (_, Some(kind)) => n.define_row_step(module, &mut fctx, kind, nest::row_shape(s.kernel, &words), &name)?,
                    (Kernel::FConvNhwc, _) => n.define_fconv_step(module, &mut fctx, &FConvNhwcHdr::decode(&words), &name)?,
                    _ => n.define_step(module, &mut fctx, &GemmHdr::decode(&words), &name)?,
                })
            }
            _ => ew.define(module, &mut fctx, (plan.isa, s.kernel, &words, &plan.blob), &name)?,
        };
    }
    let mut ctx = module.make_context();

    // <prefix>_steps(blob, arena)
    let steps_sig = sig(cc, &[ptr, ptr], None);
    let steps = module.declare_function(&format!("{prefix}_steps"), Linkage::Local, &steps_sig).map_err(err)?;
    ctx.func.signature = steps_sig;
    ctx.func.name = UserFuncName::user(0, steps.as_u32());
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let block = b.create_block();
        b.append_block_params_for_function_params(block);
        b.switch_to_block(block);
        let (blob_v, arena) = (b.block_params(block)[0], b.block_params(block)[1]);
        for (s, generated) in plan.steps.iter().zip(&step_fns) {
            let id = match (generated, s.kernel.symbol()) {
                (Some(id), _) => *id,
                (None, Some(sym)) => kernels[sym],
                (None, None) => return Err(CodegenError::Cranelift(format!("step \"{}\" has no function", s.node))),
            };
            let f = module.declare_func_in_func(id, b.func);
            let hdr = b.ins().iadd_imm_s(blob_v, s.hdr as i64);
            b.ins().call(f, &[hdr, blob_v, arena]);
        }
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(tcfg);
    }
    module.define_function(steps, &mut ctx).map_err(err)?;
    module.clear_context(&mut ctx);

    // <prefix>_run(inputs, outputs, scratch) -> i32
    let run_sig = sig(cc, &[ptr, ptr, ptr], Some(i32t));
    let run = module.declare_function(&format!("{prefix}_run"), Linkage::Export, &run_sig).map_err(err)?;
    ctx.func.signature = run_sig;
    ctx.func.name = UserFuncName::user(0, run.as_u32());
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        let aligned = b.create_block();
        let body = b.create_block();
        let fail = b.create_block();
        b.append_block_param(fail, i32t);
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let (inputs, outputs, scratch) = (b.block_params(entry)[0], b.block_params(entry)[1], b.block_params(entry)[2]);
        let check_f = module.declare_func_in_func(check, b.func);
        let isa_code = b.ins().iconst(types::I64, plan.isa.code() as i64);
        let call = b.ins().call(check_f, &[isa_code]);
        let rc = b.inst_results(call)[0];
        b.ins().brif(rc, fail, &[rc.into()], aligned, &[]);

        b.switch_to_block(aligned);
        let low = b.ins().band_imm_s(scratch, 63);
        let minus2 = b.ins().iconst(i32t, -2);
        b.ins().brif(low, fail, &[minus2.into()], body, &[]);

        b.switch_to_block(body);
        let copy_f = module.declare_func_in_func(copy, b.func);
        let gv = module.declare_data_in_func(blob, b.func);
        let blob_v = b.ins().symbol_value(ptr, gv);
        for (i, io) in plan.inputs.iter().enumerate() {
            let src = b.ins().load(ptr, MemFlagsData::trusted(), inputs, (8 * i) as i32);
            let dst = b.ins().iadd_imm_s(scratch, io.offset as i64);
            let n = b.ins().iconst(ptr, io.bytes as i64);
            b.ins().call(copy_f, &[dst, src, n]);
        }
        let steps_f = module.declare_func_in_func(steps, b.func);
        if let Some((begin, _)) = host_fns {
            let f = module.declare_func_in_func(begin, b.func);
            b.ins().call(f, &[]);
        }
        b.ins().call(steps_f, &[blob_v, scratch]);
        if let Some((_, status)) = host_fns {
            let f = module.declare_func_in_func(status, b.func);
            let call = b.ins().call(f, &[]);
            let rc = b.inst_results(call)[0];
            let outs = b.create_block();
            b.ins().brif(rc, fail, &[rc.into()], outs, &[]);
            b.switch_to_block(outs);
        }
        for (i, io) in plan.outputs.iter().enumerate() {
            let dst = b.ins().load(ptr, MemFlagsData::trusted(), outputs, (8 * i) as i32);
            let src = b.ins().iadd_imm_s(scratch, io.offset as i64);
            let n = b.ins().iconst(ptr, io.bytes as i64);
            b.ins().call(copy_f, &[dst, src, n]);
        }
        let zero = b.ins().iconst(i32t, 0);
        b.ins().return_(&[zero]);

        b.switch_to_block(fail);
        let code = b.block_params(fail)[0];
        b.ins().return_(&[code]);
        b.seal_all_blocks();
        b.finalize(tcfg);
    }
    module.define_function(run, &mut ctx).map_err(err)?;
    module.clear_context(&mut ctx);

    // <prefix>_scratch_bytes() -> size_t
    let sb_sig = sig(cc, &[], Some(ptr));
    let scratch_bytes = module.declare_function(&format!("{prefix}_scratch_bytes"), Linkage::Export, &sb_sig).map_err(err)?;
    ctx.func.signature = sb_sig;
    ctx.func.name = UserFuncName::user(0, scratch_bytes.as_u32());
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let block = b.create_block();
        b.switch_to_block(block);
        let v = b.ins().iconst(ptr, plan.arena_bytes as i64);
        b.ins().return_(&[v]);
        b.seal_all_blocks();
        b.finalize(tcfg);
    }
    module.define_function(scratch_bytes, &mut ctx).map_err(err)?;
    module.clear_context(&mut ctx);
    Ok(Entry { run, scratch_bytes, steps: step_fns })
}
