//! Cranelift loop nests. For each int8 GEMM step (1×1 and implicit convolutions, Gemm), a task function
//! `tasks(gemm, a, task)` specialised to the step's shapes (steps of the same shapes, such as the groups
//! of a grouped convolution, share one). It turns a task number into its rows and columns (the Split of
//! runtime/src/kernels/gemm.rs). A convolution reading its windows in place walks the rows in
//! micro-tiles, addresses every row's window (one inside the image as constant offsets from one pointer;
//! one crossing the image's edge through the runtime's `qcc_uk_gemm_row`) and calls the `qcc_uk_gemm`
//! microkernel for each tile; a plain GEMM (rows a + r·lda) hands its rows and panel to the
//! `qcc_uk_gemm_strip` microkernel in one call. For
//! each row kernel (depthwise and channels-last grouped convolution, max and average pooling:
//! runtime/src/kernels/rows.rs), a task
//! function `tasks(kernel, x, out, task)` that walks its task's output rows across images, addresses each
//! row's input image and output row and calls the row microkernel `qcc_uk_<kind>_row`. The step's own
//! function `step(hdr, blob, arena)`, with the signature of runtime kernels, hands the task function to
//! `qcc_rt_gemm` or `qcc_rt_<kind>`, which decodes the header once and runs it on the thread pool.
use crate::plan::Kernel;
use crate::CodegenError;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, AbiParam, Block, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind, UserFuncName, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use qcc_runtime::abi::{DwConvHdr, FAvgPoolHdr, FConvNhwcHdr, FDwNhwcHdr, FGroupNhwcHdr, FMaxPoolHdr, GemmHdr, MaxPoolHdr, QAvgPoolHdr};
use qcc_runtime::kernels::dwconv::DwGeom;
use qcc_runtime::kernels::fnhwc::R;
use qcc_runtime::kernels::fnhwc_tasks::FConvSchedule;
use qcc_runtime::kernels::gemm::{packed_dims, Split, MAX_SEGS, MR, PANEL, ROW_SEGS};
use qcc_runtime::kernels::rows::RowShape;
use std::collections::HashMap;

fn err(e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Cranelift(e.to_string())
}

/// The runtime functions generated steps call, and the task functions defined so far by shape.
pub struct Nests {
    gemm: FuncId,
    strip: FuncId,
    row: FuncId,
    rt: FuncId,
    tasks: HashMap<String, FuncId>,
    /// Per row kernel, its runtime function and row microkernel (declared when first used).
    row_kernels: HashMap<&'static str, (FuncId, FuncId)>,
    /// qcc_rt_fconv_nhwc, qcc_uk_fconv_nhwc and qcc_uk_fconv_nhwc_window (declared when first used).
    fconv: Option<[FuncId; 3]>,
}

impl Nests {
    pub fn declare<M: Module>(module: &mut M) -> Result<Nests, CodegenError> {
        let cc = module.isa().default_call_conv();
        let ptr = module.target_config().pointer_type();
        let sig = |params: &[types::Type]| {
            let mut s = Signature::new(cc);
            s.params.extend(params.iter().map(|t| AbiParam::new(*t)));
            s
        };
        let gemm = module.declare_function("qcc_uk_gemm", Linkage::Import, &sig(&[ptr, ptr, ptr, ptr, ptr, ptr])).map_err(err)?;
        let strip = module.declare_function("qcc_uk_gemm_strip", Linkage::Import, &sig(&[ptr, ptr, ptr, ptr, ptr])).map_err(err)?;
        let row = module.declare_function("qcc_uk_gemm_row", Linkage::Import, &sig(&[ptr, ptr, ptr, ptr])).map_err(err)?;
        let rt = module.declare_function("qcc_rt_gemm", Linkage::Import, &sig(&[ptr, ptr, ptr, ptr, ptr])).map_err(err)?;
        Ok(Nests { gemm, strip, row, rt, tasks: HashMap::new(), row_kernels: HashMap::new(), fconv: None })
    }

    /// Defines the function of the GEMM step whose header is `h`, named `name` (and its task function,
    /// unless one of the same shapes exists).
    pub fn define_step<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        h: &GemmHdr,
        name: &str,
    ) -> Result<FuncId, CodegenError> {
        // Everything the task function bakes in (the input's address comes from the Gemm).
        let key = format!("{} {} {} {} {} {:?}", h.m, h.n, h.lda, h.implicit, h.conv_rows, h.conv);
        let tasks = match self.tasks.get(&key) {
            Some(id) => *id,
            None => {
                let id = define_gemm_tasks(module, fctx, self, h, &format!("{name}_tasks"))?;
                self.tasks.insert(key, id);
                id
            }
        };
        define_rt_step(module, fctx, self.rt, tasks, Split::new(h.m, h.n).tasks(), name)
    }

    /// Defines the function of a row kernel's step (runtime/src/kernels/rows.rs): `kind` names its
    /// runtime entry points `qcc_rt_<kind>` and `qcc_uk_<kind>_row`; `shape` is its iteration space.
    pub fn define_row_step<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        kind: &'static str,
        shape: RowShape,
        name: &str,
    ) -> Result<FuncId, CodegenError> {
        let (rt, uk) = match self.row_kernels.get(kind) {
            Some(f) => *f,
            None => {
                let (rt_sig, uk_sig) = (ptr_signature(module, 5), ptr_signature(module, 4));
                let rt = module.declare_function(&format!("qcc_rt_{kind}"), Linkage::Import, &rt_sig).map_err(err)?;
                let uk = module.declare_function(&format!("qcc_uk_{kind}_row"), Linkage::Import, &uk_sig).map_err(err)?;
                self.row_kernels.insert(kind, (rt, uk));
                (rt, uk)
            }
        };
        let key = format!("{kind} {shape:?}");
        let tasks = match self.tasks.get(&key) {
            Some(id) => *id,
            None => {
                let id = define_row_tasks(module, fctx, uk, shape, &format!("{name}_tasks"))?;
                self.tasks.insert(key, id);
                id
            }
        };
        define_rt_step(module, fctx, rt, tasks, shape.tasks(), name)
    }

    /// Defines the function of the float convolution step whose header is `h` (fnhwc_tasks.rs), named
    /// `name` (and its task function, unless one of the same schedule exists).
    pub fn define_fconv_step<M: Module>(
        &mut self,
        module: &mut M,
        fctx: &mut FunctionBuilderContext,
        h: &FConvNhwcHdr,
        name: &str,
    ) -> Result<FuncId, CodegenError> {
        let fns = match self.fconv {
            Some(f) => f,
            None => {
                let mut fns = [FuncId::from_u32(0); 3];
                for (f, (sym, n)) in
                    fns.iter_mut().zip([("qcc_rt_fconv_nhwc", 5), ("qcc_uk_fconv_nhwc", 6), ("qcc_uk_fconv_nhwc_window", 4)])
                {
                    *f = module.declare_function(sym, Linkage::Import, &ptr_signature(module, n)).map_err(err)?;
                }
                *self.fconv.insert(fns)
            }
        };
        let s = FConvSchedule::of(h.isa, h.g, h.ldx, h.nchw, h.m, h.w.len, h.cso);
        let key = format!("fconv {s:?}");
        let tasks = match self.tasks.get(&key) {
            Some(id) => *id,
            None => {
                let id = define_fconv_tasks(module, fctx, (fns[1], fns[2]), &s, &format!("{name}_tasks"))?;
                self.tasks.insert(key, id);
                id
            }
        };
        // The task count follows the thread count at run time (FConvSchedule::chunks).
        define_rt_step(module, fctx, fns[0], tasks, 0, name)
    }
}

pub(crate) fn ptr_signature<M: Module>(module: &M, n: usize) -> Signature {
    let ptr = module.target_config().pointer_type();
    let mut s = Signature::new(module.isa().default_call_conv());
    s.params.extend((0..n).map(|_| AbiParam::new(ptr)));
    s
}

/// Declares and defines the local function `name(p0, .., p{nparams-1})` of pointer parameters and no
/// result: `body(module, b, params)` emits its code from the entry block on and leaves `b` in the block
/// that returns.
pub(crate) fn define_local<M: Module>(
    module: &mut M,
    fctx: &mut FunctionBuilderContext,
    name: &str,
    nparams: usize,
    body: impl FnOnce(&mut M, &mut FunctionBuilder, &[Value]),
) -> Result<FuncId, CodegenError> {
    let sig = ptr_signature(module, nparams);
    let id = module.declare_function(name, Linkage::Local, &sig).map_err(err)?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        body(module, &mut b, &params);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module.define_function(id, &mut ctx).map_err(err)?;
    Ok(id)
}

/// `step(hdr, blob, arena)`: rt(hdr, blob, arena, tasks, ntasks), with rt the step's runtime function
/// (qcc_rt_gemm, qcc_rt_<kind> for row kernels, qcc_rt_parallel for elementwise steps).
pub(crate) fn define_rt_step<M: Module>(
    module: &mut M,
    fctx: &mut FunctionBuilderContext,
    rt: FuncId,
    tasks: FuncId,
    ntasks: usize,
    name: &str,
) -> Result<FuncId, CodegenError> {
    define_local(module, fctx, name, 3, |module, b, params| {
        let ptr = module.target_config().pointer_type();
        let rt = module.declare_func_in_func(rt, b.func);
        let t = module.declare_func_in_func(tasks, b.func);
        let addr = b.ins().func_addr(ptr, t);
        let n = b.ins().iconst(ptr, ntasks as i64);
        b.ins().call(rt, &[params[0], params[1], params[2], addr, n]);
    })
}

/// How the rows of a GEMM step that reads convolution windows in place are addressed.
struct Window {
    g: DwGeom,
    /// Bytes between input pixels.
    stride: i64,
    /// Byte offset of each segment from the window's top-left tap.
    offsets: Vec<i64>,
    /// Largest top row and left column (input coordinates) of a window lying wholly inside the image;
    /// negative when none does.
    last_y: i64,
    last_x: i64,
}

impl Window {
    /// The window of geometry g over pixels `pixel` bytes apart (one image per g.h rows), read per
    /// kernel row (`rows`: runs of kw pixels, unit column dilation) or per tap.
    fn new(g: DwGeom, pixel: i64, rows: bool) -> Window {
        let w = g.w as i64;
        let (dy, dx) = (g.dil[0] as i64, g.dil[1] as i64);
        let offsets = if rows {
            (0..g.kh as i64).map(|ky| ky * dy * w * pixel).collect()
        } else {
            (0..g.kh as i64).flat_map(|ky| (0..g.kw as i64).map(move |kx| (ky * dy * w + kx * dx) * pixel)).collect()
        };
        let span_x = if rows { g.kw as i64 } else { (g.kw as i64 - 1) * dx + 1 };
        Window { g, stride: pixel, offsets, last_y: g.h as i64 - ((g.kh as i64 - 1) * dy + 1), last_x: g.w as i64 - span_x }
    }
}

/// The window of an implicit convolution's step; None for a plain GEMM (one pointer per row, the row).
/// Pixels are lda bytes apart (the input's channel count; a grouped convolution reads g.c of them); a
/// row segment reads kw·c contiguous bytes.
fn window(h: &GemmHdr) -> Option<Window> {
    h.implicit.then(|| Window::new(h.conv, h.lda as i64, h.conv_rows))
}

/// Defines the task function of the GEMM step whose header is `h`, named `name`.
fn define_gemm_tasks<M: Module>(
    module: &mut M,
    fctx: &mut FunctionBuilderContext,
    nests: &Nests,
    h: &GemmHdr,
    name: &str,
) -> Result<FuncId, CodegenError> {
    let split = Split::new(h.m, h.n);
    let win = window(h);
    let segs = win.as_ref().map_or(1, |w| w.offsets.len());
    if segs > MAX_SEGS {
        return Err(CodegenError::Cranelift(format!("{name}: {segs} window segments (at most {MAX_SEGS})")));
    }
    debug_assert_eq!(packed_dims(h.k, h.n).1.div_ceil(PANEL), split.panels);
    define_local(module, fctx, name, 3, |module, b, params| {
        let ptr = module.target_config().pointer_type();
        let [gemm, a, task] = [params[0], params[1], params[2]];

        // The task's rows r0..rend and columns c0..c0 + cols (no task runs when m = 0).
        let panels = split.panels.max(1) as i64;
        let rb = b.ins().udiv_imm_u(task, panels);
        let panel = b.ins().urem_imm_u(task, panels);
        let r0 = b.ins().imul_imm_s(rb, split.block as i64);
        let block_end = b.ins().iadd_imm_s(r0, split.block as i64);
        let m = b.ins().iconst(ptr, h.m as i64);
        let rend = b.ins().umin(block_end, m);
        let c0 = b.ins().imul_imm_s(panel, PANEL as i64);
        let n = b.ins().iconst(ptr, h.n as i64);
        let left = b.ins().isub(n, c0);
        let panel_w = b.ins().iconst(ptr, PANEL as i64);
        let cols = b.ins().umin(left, panel_w);
        let Some(w) = &win else {
            // A plain GEMM's rows are a + r·lda: the strip microkernel walks them, choosing the tile
            // shape once (one call per task instead of one per 4-row tile made MobileNetV2's 1×1 steps
            // with K = 16–24 15% faster).
            let uk_strip = module.declare_func_in_func(nests.strip, b.func);
            b.ins().call(uk_strip, &[gemm, r0, rend, c0, cols]);
            return;
        };
        let uk_gemm = module.declare_func_in_func(nests.gemm, b.func);
        let uk_row = module.declare_func_in_func(nests.row, b.func);
        let ptrs_slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (MR * segs * 8) as u32, 3));
        let ptrs = b.ins().stack_addr(ptr, ptrs_slot, 0);
        // Scratch rows for windows that qcc_uk_gemm_row assembles (row segments at the edge).
        let edge_slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (MR * ROW_SEGS * 64) as u32, 6));
        let edge = b.ins().stack_addr(ptr, edge_slot, 0);

        // Loop state: the tile's first row and its output pixel (image, y, x).
        let head = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        for blk in [head, body] {
            for _ in 0..4 {
                b.append_block_param(blk, ptr);
            }
        }
        let plane = (w.g.oh * w.g.ow) as i64;
        let img = b.ins().udiv_imm_u(r0, plane);
        let rem = b.ins().urem_imm_u(r0, plane);
        let oy = b.ins().udiv_imm_u(rem, w.g.ow as i64);
        let ox = b.ins().urem_imm_u(rem, w.g.ow as i64);
        b.ins().jump(head, &[r0.into(), img.into(), oy.into(), ox.into()]);

        b.switch_to_block(head);
        let state: Vec<Value> = b.block_params(head).to_vec();
        let more = b.ins().icmp(IntCC::UnsignedLessThan, state[0], rend);
        let args: Vec<_> = state.iter().map(|v| (*v).into()).collect();
        b.ins().brif(more, body, &args, exit, &[]);

        b.switch_to_block(body);
        let [r, img, oy, ox] = [0, 1, 2, 3].map(|i| b.block_params(body)[i]);
        let rows_left = b.ins().isub(rend, r);
        let four = b.ins().iconst(ptr, MR as i64);
        let mr = b.ins().umin(rows_left, four);
        let tile = b.create_block();
        // Every row's pixel, and the next tile's, computed before the rows branch.
        let mut px = vec![[img, oy, ox]];
        while px.len() <= MR {
            let p = advance(b, w, px[px.len() - 1]);
            px.push(p);
        }
        for (i, &pixel) in px.iter().take(MR).enumerate() {
            let row_done = if i + 1 < MR { b.create_block() } else { tile };
            let fill = b.create_block();
            if i > 0 {
                // Rows past the task's end have no pixel to address.
                let live = b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, mr, i as i64);
                b.ins().brif(live, fill, &[], tile, &[]);
            } else {
                b.ins().jump(fill, &[]);
            }
            b.switch_to_block(fill);
            let row_ptrs = b.ins().iadd_imm_s(ptrs, (8 * i * segs) as i64);
            let edge_call = |b: &mut FunctionBuilder| {
                let row = b.ins().iadd_imm_s(r, i as i64);
                let scratch = b.ins().iadd_imm_s(edge, (i * ROW_SEGS * 64) as i64);
                b.ins().call(uk_row, &[gemm, row, row_ptrs, scratch]);
            };
            window_row(b, w, (a, pixel, row_ptrs, 8), edge_call, row_done);
            if i + 1 < MR {
                b.switch_to_block(row_done);
            }
        }
        let next = px[MR];
        b.switch_to_block(tile);
        b.ins().call(uk_gemm, &[gemm, ptrs, r, mr, c0, cols]);
        let r_next = b.ins().iadd_imm_s(r, MR as i64);
        b.ins().jump(head, &[r_next.into(), next[0].into(), next[1].into(), next[2].into()]);

        b.switch_to_block(exit);
    })
}

/// The pixel after (img, oy, ox) in row order.
fn advance(b: &mut FunctionBuilder, w: &Window, [img, oy, ox]: [Value; 3]) -> [Value; 3] {
    let ptr = b.func.dfg.value_type(img);
    let x1 = b.ins().iadd_imm_s(ox, 1);
    let wrap_x = b.ins().icmp_imm_u(IntCC::Equal, x1, w.g.ow as i64);
    let zero = b.ins().iconst(ptr, 0);
    let ox = b.ins().select(wrap_x, zero, x1);
    let carry = b.ins().uextend(ptr, wrap_x);
    let y1 = b.ins().iadd(oy, carry);
    let wrap_y = b.ins().icmp_imm_u(IntCC::Equal, y1, w.g.oh as i64);
    let oy = b.ins().select(wrap_y, zero, y1);
    let carry = b.ins().uextend(ptr, wrap_y);
    let img = b.ins().iadd(img, carry);
    [img, oy, ox]
}

/// Fills one row's segment pointers (`seg_bytes` apart from `row_ptrs`) and jumps to `done`: a window
/// inside the image is one pointer plus constant offsets; `edge` emits the call that fills any other
/// (padding, edge rows) through the runtime.
fn window_row(
    b: &mut FunctionBuilder,
    w: &Window,
    (a, [img, oy, ox], row_ptrs, seg_bytes): (Value, [Value; 3], Value, usize),
    edge: impl FnOnce(&mut FunctionBuilder),
    done: Block,
) {
    let g = &w.g;
    let iy = b.ins().imul_imm_s(oy, g.stride[0] as i64);
    let iy = b.ins().iadd_imm_s(iy, -(g.pad[0] as i64));
    let ix = b.ins().imul_imm_s(ox, g.stride[1] as i64);
    let ix = b.ins().iadd_imm_s(ix, -(g.pad[1] as i64));
    let inside = b.create_block();
    let edge_row = b.create_block();
    if w.last_y >= 0 && w.last_x >= 0 {
        // Unsigned comparisons also reject negative coordinates.
        let in_y = b.ins().icmp_imm_u(IntCC::UnsignedLessThanOrEqual, iy, w.last_y);
        let in_x = b.ins().icmp_imm_u(IntCC::UnsignedLessThanOrEqual, ix, w.last_x);
        let both = b.ins().band(in_y, in_x);
        b.ins().brif(both, inside, &[], edge_row, &[]);
    } else {
        b.ins().jump(edge_row, &[]);
    }

    b.switch_to_block(inside);
    let y = b.ins().imul_imm_s(img, g.h as i64);
    let y = b.ins().iadd(y, iy);
    let pix = b.ins().imul_imm_s(y, g.w as i64);
    let pix = b.ins().iadd(pix, ix);
    let at = b.ins().imul_imm_s(pix, w.stride);
    let base = b.ins().iadd(a, at);
    for (s, off) in w.offsets.iter().enumerate() {
        let p = b.ins().iadd_imm_s(base, *off);
        b.ins().store(MemFlagsData::trusted(), p, row_ptrs, (seg_bytes * s) as i32);
    }
    b.ins().jump(done, &[]);

    b.switch_to_block(edge_row);
    edge(b);
    b.ins().jump(done, &[]);
}

/// The iteration space of a row kernel's step from its header words.
pub fn row_shape(kernel: Kernel, words: &[u64]) -> RowShape {
    match kernel {
        Kernel::MaxPool => {
            let h = MaxPoolHdr::decode(words);
            RowShape::of(&h.g, h.elem.size(), h.elem.size())
        }
        Kernel::QAvgPool => {
            let h = QAvgPoolHdr::decode(words);
            RowShape::of(&h.g, h.ex.size(), h.eo.size())
        }
        Kernel::FDwNhwc => RowShape::of(&FDwNhwcHdr::decode(words).g, 4, 4),
        Kernel::FAvgPoolNhwc => RowShape::of(&FAvgPoolHdr::decode(words).g, 4, 4),
        // Over planes: each plane an image of one channel.
        Kernel::FAvgPool | Kernel::FMaxPool => {
            let g = if kernel == Kernel::FAvgPool { FAvgPoolHdr::decode(words).g } else { FMaxPoolHdr::decode(words).g };
            RowShape::of(&qcc_runtime::kernels::fpool::planes(&g), 4, 4)
        }
        Kernel::FGroupNhwc => {
            let h = FGroupNhwcHdr::decode(words);
            RowShape { n: h.g.n, oh: h.g.oh, image_bytes: h.g.h * h.g.w * h.g.c * 4, row_bytes: h.g.ow * h.m * 4 }
        }
        _ => RowShape::of(&DwConvHdr::decode(words).g, 1, 1),
    }
}

/// Defines the task function `tasks(k, x, out, task)` of a row kernel: task t covers output rows
/// t·per .. (t + 1)·per (of all images, in order); for each it addresses the image's input and the row's
/// output and calls the row microkernel `uk(k, image, row, oy)`.
fn define_row_tasks<M: Module>(
    module: &mut M,
    fctx: &mut FunctionBuilderContext,
    uk: FuncId,
    shape: RowShape,
    name: &str,
) -> Result<FuncId, CodegenError> {
    let per = shape.rows_per_task() as i64;
    define_local(module, fctx, name, 4, |module, b, params| {
        let ptr = module.target_config().pointer_type();
        let uk = module.declare_func_in_func(uk, b.func);
        let [k, x, out, task] = [0, 1, 2, 3].map(|i| params[i]);
        let r0 = b.ins().imul_imm_s(task, per);
        let end = b.ins().iadd_imm_s(r0, per);
        let rows = b.ins().iconst(ptr, shape.rows() as i64);
        let rend = b.ins().umin(end, rows);
        let oh = shape.oh.max(1) as i64;
        let img = b.ins().udiv_imm_u(r0, oh);
        let oy = b.ins().urem_imm_u(r0, oh);

        // Loop state: the row, its image's input and its output row, and the row within the image.
        let head = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        for blk in [head, body] {
            for _ in 0..4 {
                b.append_block_param(blk, ptr);
            }
        }
        let at = b.ins().imul_imm_s(img, shape.image_bytes as i64);
        let xi = b.ins().iadd(x, at);
        let at = b.ins().imul_imm_s(r0, shape.row_bytes as i64);
        let orow = b.ins().iadd(out, at);
        b.ins().jump(head, &[r0.into(), xi.into(), orow.into(), oy.into()]);

        b.switch_to_block(head);
        let state: Vec<Value> = b.block_params(head).to_vec();
        let more = b.ins().icmp(IntCC::UnsignedLessThan, state[0], rend);
        let args: Vec<_> = state.iter().map(|v| (*v).into()).collect();
        b.ins().brif(more, body, &args, exit, &[]);

        b.switch_to_block(body);
        let [r, xi, orow, oy] = [0, 1, 2, 3].map(|i| b.block_params(body)[i]);
        b.ins().call(uk, &[k, xi, orow, oy]);
        let r1 = b.ins().iadd_imm_s(r, 1);
        let orow1 = b.ins().iadd_imm_s(orow, shape.row_bytes as i64);
        // The next row: oy + 1, or row 0 of the next image (its input one image further).
        let oy1 = b.ins().iadd_imm_s(oy, 1);
        let wrap = b.ins().icmp_imm_u(IntCC::Equal, oy1, oh);
        let zero = b.ins().iconst(ptr, 0);
        let oy2 = b.ins().select(wrap, zero, oy1);
        let next_image = b.ins().iadd_imm_s(xi, shape.image_bytes as i64);
        let xi1 = b.ins().select(wrap, next_image, xi);
        b.ins().jump(head, &[r1.into(), xi1.into(), orow1.into(), oy2.into()]);

        b.switch_to_block(exit);
    })
}

/// Defines the task function `tasks(run, x, chunks, task)` of a float convolution with schedule `s`:
/// task t is band t % bands over the tiles of chunk t / bands (FConvSchedule::task); K part by K part,
/// per tile it addresses its R pixels' windows (inside the image: constant offsets from one pointer;
/// else through `uk_window`) and calls the micro-tile `uk_tile(run, ptrs, chunks, task, tile, s0)`.
fn define_fconv_tasks<M: Module>(
    module: &mut M,
    fctx: &mut FunctionBuilderContext,
    (uk_tile, uk_window): (FuncId, FuncId),
    s: &FConvSchedule,
    name: &str,
) -> Result<FuncId, CodegenError> {
    let win = Window::new(s.g, 4 * s.ldx as i64, s.rows);
    debug_assert_eq!(win.offsets.len(), s.segs);
    define_local(module, fctx, name, 4, |module, b, params| {
        let ptr = module.target_config().pointer_type();
        let uk_tile = module.declare_func_in_func(uk_tile, b.func);
        let uk_window = module.declare_func_in_func(uk_window, b.func);
        let [run, x, chunks, task] = [0, 1, 2, 3].map(|i| params[i]);
        // Pixel r's pointer to segment k lives at ptrs + 8·(k·R + r): FConvRun's [[ptr; R]; segs].
        let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (8 * R * s.segs) as u32, 3));
        let ptrs = b.ins().stack_addr(ptr, slot, 0);

        // The task's tiles t0..t1: chunk·tiles / chunks .. (chunk + 1)·tiles / chunks.
        // (Steps without output pixels or channels never run a task: max(1) only keeps the division legal.)
        let chunk = b.ins().udiv_imm_u(task, s.bands.max(1) as i64);
        let tiles = s.tiles as i64;
        let at = b.ins().imul_imm_s(chunk, tiles);
        let t0 = b.ins().udiv(at, chunks);
        let at = b.ins().iadd_imm_s(at, tiles);
        let t1 = b.ins().udiv(at, chunks);

        let (parts, parts_body, tiles_head, tiles_body, next_part, exit) =
            (b.create_block(), b.create_block(), b.create_block(), b.create_block(), b.create_block(), b.create_block());
        for blk in [parts, parts_body, tiles_head, tiles_body, next_part] {
            b.append_block_param(blk, ptr);
        }
        b.append_block_param(tiles_head, ptr);
        b.append_block_param(tiles_body, ptr);
        let zero = b.ins().iconst(ptr, 0);
        b.ins().jump(parts, &[zero.into()]);

        // for s0 in (0..segs).step_by(span)
        b.switch_to_block(parts);
        let s0 = b.block_params(parts)[0];
        let more = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, s0, s.segs as i64);
        b.ins().brif(more, parts_body, &[s0.into()], exit, &[]);
        b.switch_to_block(parts_body);
        let s0 = b.block_params(parts_body)[0];
        b.ins().jump(tiles_head, &[s0.into(), t0.into()]);

        // for tile in t0..t1
        b.switch_to_block(tiles_head);
        let [s0, tile] = [0, 1].map(|i| b.block_params(tiles_head)[i]);
        let more = b.ins().icmp(IntCC::UnsignedLessThan, tile, t1);
        b.ins().brif(more, tiles_body, &[s0.into(), tile.into()], next_part, &[s0.into()]);

        b.switch_to_block(tiles_body);
        let [s0, tile] = [0, 1].map(|i| b.block_params(tiles_body)[i]);
        let p0 = b.ins().imul_imm_s(tile, R as i64);
        let pixels = b.ins().iconst(ptr, s.pixels as i64);
        let left = b.ins().isub(pixels, p0);
        // Pixels past the last (n of R live) repeat it: computed, never stored.
        let oy = b.ins().udiv_imm_u(p0, s.g.ow.max(1) as i64);
        let ox = b.ins().urem_imm_u(p0, s.g.ow.max(1) as i64);
        let mut pixel = [zero, oy, ox];
        for r in 0..R {
            let done = b.create_block();
            let row_ptrs = b.ins().iadd_imm_s(ptrs, (8 * r) as i64);
            let [_, oy, ox] = pixel;
            let edge = |b: &mut FunctionBuilder| {
                b.ins().call(uk_window, &[run, oy, ox, row_ptrs]);
            };
            window_row(b, &win, (x, pixel, row_ptrs, 8 * R), edge, done);
            b.switch_to_block(done);
            if r + 1 < R {
                let next = advance(b, &win, pixel);
                let live = b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, left, r as i64 + 1);
                pixel = [zero, b.ins().select(live, next[1], oy), b.ins().select(live, next[2], ox)];
            }
        }
        b.ins().call(uk_tile, &[run, ptrs, chunks, task, tile, s0]);
        let tile1 = b.ins().iadd_imm_s(tile, 1);
        b.ins().jump(tiles_head, &[s0.into(), tile1.into()]);

        b.switch_to_block(next_part);
        let s0 = b.block_params(next_part)[0];
        let s1 = b.ins().iadd_imm_s(s0, s.span as i64);
        b.ins().jump(parts, &[s1.into()]);

        b.switch_to_block(exit);
    })
}
