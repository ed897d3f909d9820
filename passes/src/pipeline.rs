//! The optimization pipelines, as data: one list per level, read top to bottom.
use crate::{
    AssignQparams, BiasCorrect, Canonicalize, DynamicQuantize, Equalize, FoldBatchnorm, FoldQdq, FuseActivation, FuseEpilogue,
    FuseResidual, InsertObservers, Pass, PlaceQdq, RoundWeights,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OptLevel {
    O0,
    O1,
    O2,
}

/// Every pass name, for validating --print-after and friends.
pub const PASS_NAMES: &[&str] = &[
    "canonicalize",
    "fold-batchnorm",
    "fuse-activation",
    "equalize",
    "fuse-residual",
    "insert-observers",
    "assign-qparams",
    "round-weights",
    "bias-correct",
    "place-qdq",
    "fold-qdq",
    "fuse-epilogue",
    "dynamic-quantize",
];

pub fn pass_by_name(name: &str) -> Option<Box<dyn Pass>> {
    Some(match name {
        "canonicalize" => Box::new(Canonicalize),
        "fold-batchnorm" => Box::new(FoldBatchnorm),
        "fuse-activation" => Box::new(FuseActivation),
        "equalize" => Box::new(Equalize),
        "fuse-residual" => Box::new(FuseResidual),
        "insert-observers" => Box::new(InsertObservers),
        "assign-qparams" => Box::new(AssignQparams),
        "place-qdq" => Box::new(PlaceQdq),
        "round-weights" => Box::new(RoundWeights),
        "bias-correct" => Box::new(BiasCorrect),
        "fold-qdq" => Box::new(FoldQdq),
        "fuse-epilogue" => Box::new(FuseEpilogue),
        "dynamic-quantize" => Box::new(DynamicQuantize),
        _ => return None,
    })
}

fn passes(names: &[&str]) -> Vec<Box<dyn Pass>> {
    names.iter().map(|n| pass_by_name(n).expect("pipeline names are registered")).collect()
}

/// Pipelines without calibration. -O0 changes nothing (the imported graph as is); -O1 and -O2 clean up
/// and fuse, and compile the QDQ patterns of an already-quantized model (QDQ ONNX) into integer ops.
pub fn pipeline(level: OptLevel) -> Vec<Box<dyn Pass>> {
    match level {
        OptLevel::O0 => passes(&[]),
        OptLevel::O1 | OptLevel::O2 => {
            passes(&["canonicalize", "fold-batchnorm", "fuse-activation", "fuse-residual", "fold-qdq", "fuse-epilogue", "canonicalize"])
        }
    }
}

/// Dynamic quantization (no calibration): the float passes, then int8 weights and run-time input
/// quantization for every conv and gemm.
pub fn dynamic_pipeline(level: OptLevel, equalize: bool) -> Vec<Box<dyn Pass>> {
    let mut p = passes(&["canonicalize", "fold-batchnorm", "fuse-activation"]);
    if level == OptLevel::O2 && equalize {
        p.extend(passes(&["equalize"]));
    }
    p.extend(passes(&["dynamic-quantize", "canonicalize"]));
    p
}

/// The quantizing pipeline, in two parts: before calibration (ending with the observers the driver
/// feeds) and after it (from calibrated ranges to integer ops). With `equalize`, -O2 runs cross-layer
/// equalization first; with `round_weights`, round-weights quantizes the weights it has calibration
/// sums for, and with `bias_correct`, bias-correct runs before place-qdq quantizes the others.
pub fn quant_pipeline(
    level: OptLevel,
    equalize: bool,
    round_weights: bool,
    bias_correct: bool,
) -> (Vec<Box<dyn Pass>>, Vec<Box<dyn Pass>>) {
    let mut before = passes(&["canonicalize", "fold-batchnorm", "fuse-activation"]);
    if level == OptLevel::O2 && equalize {
        before.extend(passes(&["equalize"]));
    }
    before.extend(passes(&["fuse-residual", "canonicalize", "insert-observers"]));
    let mut after = passes(&["assign-qparams"]);
    if round_weights {
        after.extend(passes(&["round-weights"]));
    }
    if bias_correct {
        after.extend(passes(&["bias-correct"]));
    }
    after.extend(passes(&["place-qdq"]));
    if level != OptLevel::O0 {
        after.extend(passes(&["fold-qdq", "fuse-epilogue", "canonicalize"]));
    }
    (before, after)
}
