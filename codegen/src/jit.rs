//! Compiling a graph into memory and running it: the plan's functions JIT-compiled by Cranelift, kernels
//! resolved to this process's runtime, one reusable 64-byte-aligned arena.
use crate::plan::Plan;
use crate::{clif, lower, CodegenError, Options};
use cranelift_jit::{JITBuilder, JITModule};
use qcc_ir::{Graph, Tensor};
use qcc_runtime::host;
use std::alloc::Layout;
use std::sync::Mutex;
use std::time::{Duration, Instant};

type RunFn = unsafe extern "C" fn(*const *const u8, *const *mut u8, *mut u8) -> i32;

struct Arena {
    ptr: *mut u8,
    layout: Layout,
}

impl Arena {
    fn new(bytes: usize) -> Result<Arena, CodegenError> {
        let too_big = || CodegenError::Run(format!("cannot allocate {bytes} bytes of working memory"));
        let layout = Layout::from_size_align(bytes.max(64), 64).map_err(|_| too_big())?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(too_big());
        }
        Ok(Arena { ptr, layout })
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in Arena::new with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Time spent in each codegen stage.
#[derive(Clone, Debug, Default)]
pub struct CodegenTimes {
    pub lower: Duration,
    pub cranelift: Duration,
}

/// A graph compiled to machine code in this process.
pub struct Compiled {
    module: Option<JITModule>,
    run: RunFn,
    /// Per step, the address of its generated function, if it has one (for profile()).
    step_fns: Vec<Option<usize>>,
    pub plan: Plan,
    arena: Mutex<Arena>,
    pub times: CodegenTimes,
}

impl Compiled {
    /// Lowers and JIT-compiles `g` (nodes without kernels become interpreted steps).
    pub fn new(g: &Graph, isa: crate::Isa) -> Result<Compiled, CodegenError> {
        if !isa.supported() {
            return Err(CodegenError::Run(format!("this CPU cannot run {} kernels", isa.name())));
        }
        let t0 = Instant::now();
        let plan = lower(g, &Options { isa })?;
        let t1 = Instant::now();
        let mut builder = JITBuilder::with_isa(clif::host_isa(false)?, cranelift_module::default_libcall_names());
        for (name, addr) in qcc_runtime::entry::symbols() {
            builder.symbol(name, addr);
        }
        let mut module = JITModule::new(builder);
        let entry = clif::define(&mut module, &plan, "qcc_model")?;
        module.finalize_definitions().map_err(|e| CodegenError::Cranelift(e.to_string()))?;
        let code = module.get_finalized_function(entry.run);
        // SAFETY: `code` is the finalized `<prefix>_run` function clif::define built with exactly this
        // signature (three pointers in, i32 out, the platform's default calling convention).
        let run = unsafe { std::mem::transmute::<*const u8, RunFn>(code) };
        let step_fns = entry.steps.iter().map(|f| f.map(|id| module.get_finalized_function(id) as usize)).collect();
        let arena = Mutex::new(Arena::new(plan.arena_bytes)?);
        let times = CodegenTimes { lower: t1 - t0, cranelift: t1.elapsed() };
        Ok(Compiled { module: Some(module), run, step_fns, plan, arena, times })
    }

    /// Runs the compiled graph on `inputs` (one per graph input, in order).
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, CodegenError> {
        let p = &self.plan;
        if inputs.len() != p.inputs.len() {
            return Err(CodegenError::Run(format!("the graph takes {} inputs, {} given", p.inputs.len(), inputs.len())));
        }
        let mut bytes = Vec::with_capacity(inputs.len());
        for (index, (t, io)) in inputs.iter().zip(&p.inputs).enumerate() {
            if t.dtype() != io.dtype || t.shape() != io.shape.as_slice() {
                return Err(CodegenError::Input {
                    index,
                    name: io.name.clone(),
                    msg: format!("expected {}{:?}, got {}{:?}", io.dtype, io.shape, t.dtype(), t.shape()),
                });
            }
            // f32 tensors in standard layout are passed in place; others as little-endian copies.
            bytes.push(match t {
                Tensor::F32(a) if a.as_slice().is_some() => None,
                t => Some(t.to_le_bytes()),
            });
        }
        let mut outs: Vec<Vec<f32>> = p.outputs.iter().map(|o| vec![0f32; o.bytes.div_ceil(4)]).collect();
        let in_ptrs: Vec<*const u8> = inputs
            .iter()
            .zip(&bytes)
            .map(|(t, b)| match (t, b) {
                (_, Some(b)) => b.as_ptr(),
                (Tensor::F32(a), None) => a.as_ptr() as *const u8,
                _ => std::ptr::null(),
            })
            .collect();
        let out_ptrs: Vec<*mut u8> = outs.iter_mut().map(|b| b.as_mut_ptr() as *mut u8).collect();
        let arena = self.arena.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the pointer arrays hold one buffer of the plan's byte size per input and output, the
        // arena is plan.arena_bytes long and 64-byte aligned, and the code stays alive with self.module.
        let rc = unsafe { (self.run)(in_ptrs.as_ptr(), out_ptrs.as_ptr(), arena.ptr) };
        drop(arena);
        if let Some(e) = host::take_error() {
            return Err(CodegenError::Run(e));
        }
        if rc != 0 {
            return Err(CodegenError::Run(format!("compiled model returned {rc}")));
        }
        outs.into_iter()
            .zip(&p.outputs)
            .map(|(v, io)| {
                let t = if io.dtype == qcc_ir::DType::F32 {
                    Tensor::from_f32(&io.shape, v)
                } else {
                    let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Tensor::from_le_bytes(io.dtype, &io.shape, &b[..io.bytes])
                };
                t.ok_or_else(|| CodegenError::Run("output size".into()))
            })
            .collect()
    }
}

impl Compiled {
    /// Runs the steps one by one from Rust, timing each: the fastest of `iters` runs of each step, in
    /// seconds (the minimum resists the noise of shared machines). The profile `qcc bench --profile` prints.
    pub fn profile(&self, inputs: &[Tensor], iters: usize) -> Result<Vec<f64>, CodegenError> {
        self.run(inputs)?;
        let p = &self.plan;
        let table: std::collections::HashMap<&str, *const u8> = qcc_runtime::entry::symbols().into_iter().collect();
        let mut fns = Vec::new();
        for (s, generated) in p.steps.iter().zip(&self.step_fns) {
            let addr = match (generated, s.kernel.symbol()) {
                (Some(a), _) => *a as *const u8,
                (None, Some(sym)) => table[sym],
                (None, None) => return Err(CodegenError::Run(format!("step \"{}\" has no function", s.node))),
            };
            // SAFETY: every kernel symbol and generated step function has the (hdr, blob, arena)
            // signature; generated ones live as long as self.module.
            fns.push(unsafe { std::mem::transmute::<*const u8, unsafe extern "C" fn(*const u64, *const u8, *mut u8)>(addr) });
        }
        // The blob the JIT copied is private to the module; the plan's own copy has the same contents, but
        // must be 64-byte aligned for the kernels.
        let blob = Arena::new(p.blob.len())?;
        // SAFETY: blob was allocated with p.blob.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(p.blob.as_bytes().as_ptr(), blob.ptr, p.blob.len()) };
        // The inputs go back into the arena before every pass (untimed): later steps reuse their space, and
        // stale bytes read as floats (denormals above all) would time the first steps on garbage.
        let input_bytes: Vec<Vec<u8>> = inputs.iter().map(|t| t.to_le_bytes()).collect();
        let arena = self.arena.lock().unwrap_or_else(|e| e.into_inner());
        let mut times = vec![f64::INFINITY; p.steps.len()];
        for _ in 0..iters {
            for (io, b) in p.inputs.iter().zip(&input_bytes) {
                // SAFETY: the input's bytes fit its arena buffer (run() above checked dtype and shape).
                unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), arena.ptr.add(io.offset), b.len().min(io.bytes)) };
            }
            for (i, (s, f)) in p.steps.iter().zip(&fns).enumerate() {
                let t = Instant::now();
                // SAFETY: the same calls the generated code makes, in order, on an arena holding this
                // pass's inputs; every buffer is in bounds.
                unsafe { f(blob.ptr.add(s.hdr) as *const u64, blob.ptr, arena.ptr) };
                times[i] = times[i].min(t.elapsed().as_secs_f64());
            }
        }
        Ok(times)
    }
}

impl Drop for Compiled {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: nothing calls into the module's code after this (self.run is dropped with self).
            unsafe { m.free_memory() };
        }
    }
}
