//! Host steps: nodes no kernel covers (float layers, rare integer forms) run through the reference
//! interpreter's eval_op, reading and writing the arena. JIT only: an object file cannot call back into
//! the compiler, so `emit_object` refuses plans that contain them.
use qcc_ir::{map_tensor, Op, Tensor, Type};
use std::cell::RefCell;

/// Where a host step's input comes from.
#[derive(Debug)]
pub enum HostIn {
    /// An arena buffer; `nhwc` when it is a 4-D tensor stored channels-last.
    Arena {
        off: usize,
        ty: Type,
        nhwc: bool,
    },
    Const(Tensor),
}

#[derive(Debug)]
pub struct HostStep {
    pub node: String,
    pub op: Op,
    pub in_tys: Vec<Type>,
    pub out_ty: Type,
    pub inputs: Vec<HostIn>,
    pub out: usize,
    pub out_nhwc: bool,
}

thread_local! {
    static ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Takes the error the last host step on this thread reported, if any.
pub fn take_error() -> Option<String> {
    ERROR.with(|e| e.borrow_mut().take())
}

fn permute(t: Tensor, perm: [usize; 4]) -> Tensor {
    map_tensor!(t, a => a.permuted_axes(ndarray::IxDyn(&perm)).as_standard_layout().into_owned())
}

impl HostStep {
    /// Safety: `arena` is the arena this step's plan laid out.
    unsafe fn run(&self, arena: *mut u8) -> Result<(), String> {
        let mut owned: Vec<Tensor> = Vec::new();
        for i in &self.inputs {
            if let HostIn::Arena { off, ty, nhwc } = i {
                let (dt, shape) = (ty.dtype().ok_or("unknown type")?, ty.shape().ok_or("unknown shape")?);
                let stored: Vec<usize> = if *nhwc { vec![shape[0], shape[2], shape[3], shape[1]] } else { shape.to_vec() };
                let bytes = shape.iter().product::<usize>() * dt.size_bytes();
                // SAFETY: the plan placed a buffer of this type at `off`.
                let raw = unsafe { std::slice::from_raw_parts(arena.add(*off), bytes) };
                let t = Tensor::from_le_bytes(dt, &stored, raw).ok_or("buffer size")?;
                owned.push(if *nhwc { permute(t, [0, 3, 1, 2]) } else { t });
            }
        }
        let mut it = owned.iter();
        let args: Vec<&Tensor> = self
            .inputs
            .iter()
            .map(|i| match i {
                HostIn::Const(t) => Some(t),
                HostIn::Arena { .. } => it.next(),
            })
            .collect::<Option<_>>()
            .ok_or("input count")?;
        let tys: Vec<&Type> = self.in_tys.iter().collect();
        let out = qcc_runtime::eval_op(&self.op, &args, &tys, &self.out_ty)?;
        let out = if self.out_nhwc { permute(out, [0, 2, 3, 1]) } else { out.into_standard() };
        let bytes = out.to_le_bytes();
        // SAFETY: the plan sized the output buffer for this type.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), arena.add(self.out), bytes.len()) };
        Ok(())
    }
}

/// The kernel generated code calls for a host step: its header's first word is the HostStep's address.
///
/// # Safety
/// Called by JIT code with a header the plan wrote and the plan's arena.
pub unsafe extern "C" fn qcc_k_host(hdr: *const u64, _blob: *const u8, arena: *mut u8) {
    // SAFETY: the header holds the address of a HostStep the compiled model owns and outlives its code.
    let step = unsafe { &*(hdr.read() as *const HostStep) };
    if ERROR.with(|e| e.borrow().is_some()) {
        return;
    }
    // SAFETY: caller's contract.
    if let Err(msg) = unsafe { step.run(arena) } {
        ERROR.with(|e| *e.borrow_mut() = Some(format!("node \"{}\" ({}): {msg}", step.node, step.op.name())));
    }
}
