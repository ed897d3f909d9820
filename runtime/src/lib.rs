//! qcc-runtime: the reference interpreter. It executes IR graphs op by op on ndarray and is the oracle
//! every later stage (passes, quantized paths, generated code) is checked against.
pub mod abi;
pub mod entry;
mod eval;
pub mod host;
mod interp;
pub mod kernels;
mod nn;
pub mod observe;
pub mod qops;
pub mod quant;
mod resize;

pub use eval::eval_op;
pub use interp::{run, run_all, run_observed, run_patched};
pub use nn::{conv_patches, softmax_dims};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("node \"{node}\" ({op}): {msg}")]
    Node { node: String, op: String, msg: String },
    #[error("input {index} (\"{name}\"): {msg}")]
    Input { index: usize, name: String, msg: String },
    #[error("{0}")]
    Graph(String),
}
