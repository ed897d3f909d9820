//! qcc-passes: named graph passes, the pass manager that runs, verifies and dumps them, and the
//! optimization pipelines (-O0/-O1/-O2) as plain data.
mod canonicalize;
mod fold_batchnorm;
mod fuse_activation;
mod manager;
mod pipeline;

pub use canonicalize::Canonicalize;
pub use fold_batchnorm::FoldBatchnorm;
pub use fuse_activation::FuseActivation;
pub use manager::{Instrumentation, PassFailure, PassManager, PassTiming};
pub use pipeline::{pass_by_name, pipeline, OptLevel, PASS_NAMES};

use qcc_ir::Graph;

/// State the driver hands to passes (calibration statistics arrive here in later stages).
#[derive(Debug, Default)]
pub struct PassContext {
    /// One line per notable decision a pass made, for --verbose output and reports.
    pub notes: Vec<String>,
}

/// A named transformation of a graph. Returns whether it changed anything.
pub trait Pass {
    fn name(&self) -> &'static str;
    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError>;
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("pass {pass}: node \"{node}\": {msg}")]
    Node { pass: &'static str, node: String, msg: String },
    #[error("pass {pass}: {msg}")]
    Failed { pass: &'static str, msg: String },
    #[error("the IR is invalid after pass {pass}: {errors}")]
    Verify { pass: String, errors: qcc_ir::VerifierErrors },
}
