//! qcc-codegen: lowers graphs to execution plans (layouts, packed weights, memory plan) and turns them into
//! machine code with Cranelift, either in memory (JIT, `Compiled`) or as an ELF object plus C header.
mod choose;
pub mod clif;
pub mod elementwise;
mod emit;
pub mod felementwise;
pub mod fpool;
pub mod jit;
pub mod lower;
pub mod memory;
mod nest;
pub mod object;
pub mod plan;

pub use jit::Compiled;
pub use lower::{lower, Options};
pub use plan::Plan;
pub use qcc_runtime::kernels::Isa;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodegenError {
    #[error("node \"{node}\": {msg}")]
    Unsupported { node: String, msg: String },
    #[error("cranelift: {0}")]
    Cranelift(String),
    #[error("input {index} (\"{name}\"): {msg}")]
    Input { index: usize, name: String, msg: String },
    #[error("{0}")]
    Run(String),
}
