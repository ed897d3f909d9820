//! qcc: the library behind the `qcc` command — loading models (.onnx or .qir), running pipelines,
//! reading and writing .npy data, preprocessing images, and measuring accuracy.
pub mod analyze;
pub mod calib;
pub mod data;
pub mod driver;
pub mod eval;
pub mod exec;
pub mod fsutil;
pub mod fuzzing;
pub mod mixed;
pub mod npy;
pub mod report;

pub use qcc_codegen as codegen;
pub use qcc_frontend as frontend;
pub use qcc_ir as ir;
pub use qcc_passes as passes;
pub use qcc_runtime as runtime;

/// At most this many samples are in flight at once when calibrating or analysing: each holds a network's
/// activations (tens of MB for an ImageNet model), so memory stays bounded on many-core machines.
const MAX_WORKERS: usize = 8;

/// Worker threads for `n` independent samples: one per core, at most MAX_WORKERS.
pub(crate) fn workers(n: usize) -> usize {
    std::thread::available_parallelism().map_or(1, |p| p.get()).min(MAX_WORKERS).min(n).max(1)
}
