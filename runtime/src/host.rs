//! Interpreted steps of compiled code: a node no kernel covers travels in the constant blob as the .qir
//! text of a one-node graph (constants in full), and `qcc_k_host` runs it through this interpreter,
//! reading its inputs from the arena and writing its output back. The JIT and object files share it, so
//! everything `qcc run` compiles can also be linked ahead of time. The parsed graph is cached by the
//! text's address, checked against the text's hash (computed at compile time, so a run compares one
//! word, not the text): a freed JIT module's address can come back with other contents.
use crate::abi::HostHdr;
use qcc_ir::{map_tensor, Graph, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::sync::{Arc, Mutex};

thread_local! {
    static ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

struct Cached {
    hash: u64,
    graph: Arc<Graph>,
}

/// FNV-1a over the step's text: what the header carries and the cache compares.
pub fn text_hash(text: &[u8]) -> u64 {
    text.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

static CACHE: Mutex<Option<HashMap<usize, Cached>>> = Mutex::new(None);
/// Entries kept before the cache starts over (a long-running process compiling many models).
const CACHE_MAX: usize = 4096;

/// Takes the error an interpreted step on this thread reported since the last call, if any.
pub fn take_error() -> Option<String> {
    ERROR.with(|e| e.borrow_mut().take()).map(|c| c.to_string_lossy().into_owned())
}

fn graph_for(text: &[u8], hash: u64) -> Result<Arc<Graph>, String> {
    let addr = text.as_ptr() as usize;
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = guard.get_or_insert_with(HashMap::new);
    if let Some(c) = cache.get(&addr).filter(|c| c.hash == hash) {
        return Ok(c.graph.clone());
    }
    let src = std::str::from_utf8(text).map_err(|_| "interpreted step: its graph text is not UTF-8".to_string())?;
    let g = qcc_ir::parse_graph(src).map_err(|e| format!("interpreted step: cannot read its graph: {e}"))?;
    if g.num_nodes() != 1 || g.outputs().len() != 1 {
        return Err("interpreted step: its graph is not one node with one output".into());
    }
    let graph = Arc::new(g);
    if cache.len() >= CACHE_MAX {
        cache.clear();
    }
    cache.insert(addr, Cached { hash, graph: graph.clone() });
    Ok(graph)
}

fn permute(t: Tensor, perm: [usize; 4]) -> Tensor {
    map_tensor!(t, a => a.permuted_axes(ndarray::IxDyn(&perm)).as_standard_layout().into_owned())
}

/// # Safety
/// `h` was decoded from a header the compiler wrote into `blob`, for a plan whose arena is `arena`.
unsafe fn run(h: &HostHdr, blob: *const u8, arena: *mut u8) -> Result<(), String> {
    // SAFETY: the compiler laid out the text and the input words in the blob.
    let (text, words) = unsafe { (h.text.slice::<u8>(blob), h.ins.slice::<u64>(blob)) };
    let g = graph_for(text, h.hash as u64)?;
    if words.len() != 2 * g.inputs().len() {
        return Err(format!("interpreted step: {} input words for {} inputs", words.len(), g.inputs().len()));
    }
    let mut inputs = Vec::with_capacity(g.inputs().len());
    for (&v, w) in g.inputs().iter().zip(words.chunks_exact(2)) {
        let ty = g.ty(v);
        let (dt, shape) = (ty.dtype().ok_or("unknown input type")?, ty.shape().ok_or("unknown input shape")?);
        let nhwc = w[1] != 0 && shape.len() == 4;
        let stored: Vec<usize> = if nhwc { vec![shape[0], shape[2], shape[3], shape[1]] } else { shape.to_vec() };
        let bytes = shape.iter().product::<usize>() * dt.size_bytes();
        // SAFETY: the plan placed a buffer of this type at this offset.
        let raw = unsafe { std::slice::from_raw_parts(arena.add(w[0] as usize), bytes) };
        let t = Tensor::from_le_bytes(dt, &stored, raw).ok_or("input buffer size")?;
        inputs.push(if nhwc { permute(t, [0, 3, 1, 2]) } else { t });
    }
    let out = crate::run(&g, inputs).map_err(|e| e.to_string())?.pop().ok_or("the step computed no output")?;
    let out = if h.out_nhwc && out.shape().len() == 4 { permute(out, [0, 2, 3, 1]) } else { out.into_standard() };
    let bytes = out.to_le_bytes();
    let ty = g.ty(g.outputs()[0]);
    if Some(bytes.len()) != ty.numel().zip(ty.dtype()).map(|(n, d)| n * d.size_bytes()) {
        return Err(format!("interpreted step: computed {} bytes for an output of type {ty}", bytes.len()));
    }
    // SAFETY: the plan sized the output buffer for the graph's output type, which `bytes` has.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), arena.add(h.out), bytes.len()) };
    Ok(())
}

/// Runs an interpreted step. After a failure on this thread, later steps do nothing until
/// `qcc_rt_host_begin` (the generated `_run` returns -4; `qcc_last_error` says why).
///
/// # Safety
/// Called by generated code with a header, blob and arena the compiler laid out for this step.
#[no_mangle]
pub unsafe extern "C" fn qcc_k_host(hdr: *const u64, blob: *const u8, arena: *mut u8) {
    if ERROR.with(|e| e.borrow().is_some()) {
        return;
    }
    // SAFETY: caller's contract; the blob is padded past the longest header.
    let h = HostHdr::decode(unsafe { std::slice::from_raw_parts(hdr, 8) });
    // SAFETY: caller's contract.
    if let Err(msg) = unsafe { run(&h, blob, arena) } {
        let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
        ERROR.with(|e| *e.borrow_mut() = Some(msg));
    }
}

/// Forgets the last interpreted step's error on this thread (generated `_run` calls it first).
#[no_mangle]
pub extern "C" fn qcc_rt_host_begin() {
    ERROR.with(|e| *e.borrow_mut() = None);
}

/// 0, or -4 if an interpreted step failed since `qcc_rt_host_begin` (generated `_run` calls it last).
#[no_mangle]
pub extern "C" fn qcc_rt_host_status() -> i32 {
    if ERROR.with(|e| e.borrow().is_some()) {
        -4
    } else {
        0
    }
}

/// Why the last `_run` on this thread returned -4 (NULL if it did not): valid until the next run.
#[no_mangle]
pub extern "C" fn qcc_last_error() -> *const c_char {
    ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
}
