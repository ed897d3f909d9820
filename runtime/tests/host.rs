//! Interpreted steps (runtime/src/host.rs) called the way generated code calls them: a header and the
//! graph text in a blob, values in an arena. Failures reach the caller through the status and message
//! calls, and the parsed-graph cache never serves a graph for text that changed at the same address.
use qcc_runtime::abi::{Arr, HostHdr};
use qcc_runtime::host::{qcc_k_host, qcc_last_error, qcc_rt_host_begin, qcc_rt_host_status, take_error, text_hash};

/// A zeroed buffer of `n` words (8-byte aligned, enough for the f32 and u64 values used here).
fn words(n: usize) -> Vec<u64> {
    vec![0u64; n]
}

/// Lays out `text` and the input words in a blob and returns (blob, header words).
fn blob_for(text: &str, ins: &[(usize, bool)], out: usize, out_nhwc: bool) -> (Vec<u64>, Vec<u64>) {
    let mut blob = words(text.len().div_ceil(8) + 2 * ins.len() + 64);
    let bytes = unsafe_bytes(&mut blob);
    bytes[..text.len()].copy_from_slice(text.as_bytes());
    let at = text.len().div_ceil(8) * 8;
    for (i, &(o, nhwc)) in ins.iter().enumerate() {
        bytes[at + 16 * i..at + 16 * i + 8].copy_from_slice(&(o as u64).to_le_bytes());
        bytes[at + 16 * i + 8..at + 16 * i + 16].copy_from_slice(&(nhwc as u64).to_le_bytes());
    }
    let mut hdr = HostHdr {
        text: Arr { off: 0, len: text.len() },
        hash: text_hash(text.as_bytes()) as usize,
        ins: Arr { off: at, len: 2 * ins.len() },
        out,
        out_nhwc,
    }
    .encode();
    hdr.resize(16, 0);
    (blob, hdr)
}

fn unsafe_bytes(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: u64 has no invalid bit patterns and u8 alignment is 1; the view covers exactly `v`.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 8) }
}

fn f32s(arena: &mut [u64], at: usize, n: usize) -> Vec<f32> {
    unsafe_bytes(arena)[at..at + 4 * n].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn put_f32s(arena: &mut [u64], at: usize, v: &[f32]) {
    for (i, x) in v.iter().enumerate() {
        unsafe_bytes(arena)[at + 4 * i..at + 4 * i + 4].copy_from_slice(&x.to_le_bytes());
    }
}

fn call(blob: &mut [u64], hdr: &[u64], arena: &mut [u64]) -> i32 {
    qcc_rt_host_begin();
    // SAFETY: the header, blob and arena were laid out above for this step.
    unsafe { qcc_k_host(hdr.as_ptr(), blob.as_ptr() as *const u8, arena.as_mut_ptr() as *mut u8) };
    qcc_rt_host_status()
}

#[test]
fn runs_the_graph_and_rereads_changed_text() {
    let relu = "graph @s(%0: f32[4] \"x\") -> (%1: f32[4]) {\n  %1 = relu %0 : f32[4] loc(\"r\")\n}\n";
    let tanh = "graph @s(%0: f32[4] \"x\") -> (%1: f32[4]) {\n  %1 = tanh %0 : f32[4] loc(\"t\")\n}\n";
    assert_eq!(relu.len(), tanh.len(), "the two texts must fit the same blob");
    let mut arena = words(32);
    put_f32s(&mut arena, 0, &[-1.0, 0.5, -2.0, 3.0]);
    let (mut blob, hdr) = blob_for(relu, &[(0, false)], 64, false);
    assert_eq!(call(&mut blob, &hdr, &mut arena), 0);
    assert_eq!(f32s(&mut arena, 64, 4), vec![0.0, 0.5, 0.0, 3.0]);
    // Same address, other text and its hash (as when a freed JIT module's memory is reused): the new
    // graph runs.
    unsafe_bytes(&mut blob)[..tanh.len()].copy_from_slice(tanh.as_bytes());
    let (_, hdr) = blob_for(tanh, &[(0, false)], 64, false);
    assert_eq!(call(&mut blob, &hdr, &mut arena), 0);
    assert_eq!(f32s(&mut arena, 64, 4), [-1.0f32, 0.5, -2.0, 3.0].map(f32::tanh).to_vec());
}

#[test]
fn reads_and_writes_channels_last_values() {
    // A [1,2,1,2] tensor stored NHWC at 0, transposed into NCHW-independent form by a relu, written NHWC.
    let text = "graph @s(%0: f32[1,2,1,2] \"x\") -> (%1: f32[1,2,1,2]) {\n  %1 = relu %0 : f32[1,2,1,2] loc(\"r\")\n}\n";
    let mut arena = words(32);
    // Logical x = [[a0,a1],[b0,b1]] (channel, width); NHWC storage = a0 b0 a1 b1.
    put_f32s(&mut arena, 0, &[1.0, -2.0, 3.0, 4.0]);
    let (mut blob, hdr) = blob_for(text, &[(0, true)], 64, false);
    assert_eq!(call(&mut blob, &hdr, &mut arena), 0);
    assert_eq!(f32s(&mut arena, 64, 4), vec![1.0, 3.0, 0.0, 4.0], "read as NHWC, written row-major");
    let (mut blob, hdr) = blob_for(text, &[(0, false)], 128, true);
    assert_eq!(call(&mut blob, &hdr, &mut arena), 0);
    assert_eq!(f32s(&mut arena, 128, 4), vec![1.0, 3.0, 0.0, 4.0], "read row-major, written NHWC");
}

#[test]
fn failures_reach_the_caller_and_clear_on_the_next_run() {
    let mut arena = words(32);
    let (mut blob, hdr) = blob_for("graph @s(%0: f32[4]) -> (%1: f32[4]) {\n  %1 = frobnicate %0 : f32[4]\n}\n", &[(0, false)], 64, false);
    assert_eq!(call(&mut blob, &hdr, &mut arena), -4);
    let p = qcc_last_error();
    assert!(!p.is_null());
    // SAFETY: a NUL-terminated string that stays valid until the next run on this thread.
    let msg = unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned();
    assert!(msg.contains("cannot read its graph") && msg.contains("frobnicate"), "{msg}");
    assert_eq!(take_error().as_deref(), Some(msg.as_str()));
    assert!(qcc_last_error().is_null() && qcc_rt_host_status() == 0, "take_error clears the error");

    // The input words must match the graph's inputs.
    let (mut blob, hdr) = blob_for("graph @s(%0: f32[4]) -> (%1: f32[4]) {\n  %1 = relu %0 : f32[4]\n}\n", &[], 64, false);
    assert_eq!(call(&mut blob, &hdr, &mut arena), -4);
    assert!(take_error().unwrap().contains("0 input words for 1 inputs"));
    let (mut blob, hdr) = blob_for("graph @s(%0: f32[4]) -> (%1: f32[4]) {\n  %1 = relu %0 : f32[4]\n}\n", &[(0, false)], 64, false);
    assert_eq!(call(&mut blob, &hdr, &mut arena), 0, "begin clears an earlier failure");
}
