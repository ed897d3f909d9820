//! The optimization pipelines, as data: one list per level, read top to bottom.
use crate::{Canonicalize, FoldBatchnorm, FuseActivation, Pass};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OptLevel {
    O0,
    O1,
    O2,
}

/// Every pass name, for validating --print-after and friends.
pub const PASS_NAMES: &[&str] = &["canonicalize", "fold-batchnorm", "fuse-activation"];

pub fn pass_by_name(name: &str) -> Option<Box<dyn Pass>> {
    Some(match name {
        "canonicalize" => Box::new(Canonicalize),
        "fold-batchnorm" => Box::new(FoldBatchnorm),
        "fuse-activation" => Box::new(FuseActivation),
        _ => return None,
    })
}

/// -O0 changes nothing (the imported graph as is); -O1 cleans up and fuses; -O2 adds the
/// quantization-oriented passes as they arrive (equalization, ...).
pub fn pipeline(level: OptLevel) -> Vec<Box<dyn Pass>> {
    let names: &[&str] = match level {
        OptLevel::O0 => &[],
        OptLevel::O1 | OptLevel::O2 => &["canonicalize", "fold-batchnorm", "fuse-activation", "canonicalize"],
    };
    names.iter().map(|n| pass_by_name(n).expect("pipeline names are registered")).collect()
}
