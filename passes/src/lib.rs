//! qcc-passes: named graph passes, the pass manager that runs, verifies and dumps them, and the
//! optimization pipelines (-O0/-O1/-O2) as plain data.
mod assign_qparams;
mod bias_correct;
mod canonicalize;
mod dynamic_quantize;
mod equalize;
mod fold_batchnorm;
mod fold_qdq;
mod fuse_activation;
mod fuse_epilogue;
mod fuse_residual;
mod insert_observers;
mod manager;
mod pipeline;
mod place_qdq;
mod round_weights;

pub use assign_qparams::{act_qtype, range_method, AssignQparams};
pub use bias_correct::BiasCorrect;
pub use canonicalize::Canonicalize;
pub use dynamic_quantize::DynamicQuantize;
pub use equalize::Equalize;
pub use fold_batchnorm::FoldBatchnorm;
pub use fold_qdq::FoldQdq;
pub use fuse_activation::FuseActivation;
pub use fuse_epilogue::FuseEpilogue;
pub use fuse_residual::FuseResidual;
pub use insert_observers::{is_layout_only, InsertObservers};
pub use manager::{Instrumentation, PassFailure, PassManager, PassTiming};
pub use pipeline::{dynamic_pipeline, pass_by_name, pipeline, quant_pipeline, OptLevel, PASS_NAMES};
pub use place_qdq::PlaceQdq;
pub use round_weights::{InputGram, RoundWeights};

use qcc_ir::Graph;

/// State the driver hands to passes: the quantization scheme and, after calibration, one observer per
/// `observe` node (keyed by the observe node's value).
#[derive(Debug, Default)]
pub struct PassContext {
    /// One line per notable decision a pass made, for --verbose output and reports.
    pub notes: Vec<String>,
    pub quant: QuantConfig,
    pub calib: std::collections::HashMap<qcc_ir::ValueId, qcc_runtime::observe::Observer>,
    /// Per observed value, a range chosen by range search (assign-qparams takes it over the method's).
    pub ranges: std::collections::HashMap<qcc_ir::ValueId, (f32, f32)>,
    /// Per observed value, the mean of each channel (axis 1) over the calibration data (bias-correct).
    pub channel_means: std::collections::HashMap<qcc_ir::ValueId, Vec<f32>>,
    /// Per conv output, each channel's (min, max) over a few calibration samples, gathered before
    /// equalize (which keeps activation ranges from growing and absorbs high biases with them).
    pub channel_ranges: std::collections::HashMap<qcc_ir::ValueId, Vec<(f32, f32)>>,
    /// Per conv output and data input, each channel's (mean, mean square) over the same samples: with
    /// them, equalize keeps a pair's scaling only where it lowers the estimated quantization noise.
    pub channel_moments: std::collections::HashMap<qcc_ir::ValueId, Vec<(f32, f32)>>,
    /// Per conv and gemm output, the sums over its input patches in calibration (round-weights);
    /// shared, as every scheme quantized from one calibration reads the same sums.
    pub input_grams: std::sync::Arc<std::collections::HashMap<qcc_ir::ValueId, InputGram>>,
}

/// How weights are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightScheme {
    pub symmetric: bool,
    pub per_channel: bool,
}

impl WeightScheme {
    pub fn parse(s: &str) -> Result<WeightScheme, String> {
        Ok(match s {
            "sym-per-channel" => WeightScheme { symmetric: true, per_channel: true },
            "sym-per-tensor" => WeightScheme { symmetric: true, per_channel: false },
            "asym-per-channel" => WeightScheme { symmetric: false, per_channel: true },
            "asym-per-tensor" => WeightScheme { symmetric: false, per_channel: false },
            _ => return Err(format!("unknown weight scheme {s:?} (sym-per-channel, sym-per-tensor, asym-per-channel, asym-per-tensor)")),
        })
    }
    pub fn name(&self) -> &'static str {
        match (self.symmetric, self.per_channel) {
            (true, true) => "sym-per-channel",
            (true, false) => "sym-per-tensor",
            (false, true) => "asym-per-channel",
            (false, false) => "asym-per-tensor",
        }
    }
}

/// The quantization scheme: weights, activations and how activation ranges are chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantConfig {
    /// None: weights stay float ("activations only").
    pub weights: Option<WeightScheme>,
    /// Storage of activations: u8 (asymmetric by default), i8 or i16.
    pub act_type: qcc_ir::DType,
    pub act_symmetric: bool,
    pub method: qcc_runtime::observe::RangeMethod,
    /// Correct biases for the mean shift weight quantization causes (the bias-correct pass).
    pub bias_correct: bool,
    /// Round weights to minimize each layer's output error on the calibration data (round-weights)
    /// rather than to nearest.
    pub round_weights: bool,
    /// ONNX node names whose weights stay float (the op then computes in float between its quantized
    /// neighbours' dequantize and quantize).
    pub keep_float: Vec<String>,
    /// ONNX node names whose outputs are stored as i16 whatever `act_type` says.
    pub int16: Vec<String>,
}

impl QuantConfig {
    /// Whether node `n` is one of `names` (any of its locs: fused nodes carry several ONNX names).
    pub fn names_node(names: &[String], g: &Graph, n: qcc_ir::NodeId) -> bool {
        g.node(n).loc.iter().any(|l| names.iter().any(|k| k == l))
    }

    /// An error naming the first --keep-float / --int16 name no node of `g` carries.
    pub fn check_names(&self, g: &Graph) -> Result<(), String> {
        for (flag, names) in [("--keep-float", &self.keep_float), ("--int16", &self.int16)] {
            for name in names {
                if !g.node_ids().any(|n| Self::names_node(std::slice::from_ref(name), g, n)) {
                    return Err(format!("{flag} {name:?}: the model has no node of that name"));
                }
            }
        }
        Ok(())
    }

    /// Whether node `n` gets int8 weights: a conv or gemm with an integer form that the configuration
    /// does not keep float. place-qdq, bias-correct and dynamic-quantize all go by this.
    pub fn quantizes_weights_of(&self, g: &Graph, n: qcc_ir::NodeId) -> bool {
        let node = g.node(n);
        matches!(node.op, qcc_ir::Op::Conv { .. } | qcc_ir::Op::Gemm { .. })
            && insert_observers::has_integer_form(g, &node.op, &node.inputs)
            && !Self::names_node(&self.keep_float, g, n)
    }
}

impl Default for QuantConfig {
    fn default() -> Self {
        QuantConfig {
            weights: Some(WeightScheme { symmetric: true, per_channel: true }),
            act_type: qcc_ir::DType::U8,
            act_symmetric: false,
            method: qcc_runtime::observe::RangeMethod::MinMax,
            bias_correct: false,
            round_weights: false,
            keep_float: vec![],
            int16: vec![],
        }
    }
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

/// Applies a local rewrite to every node still in the graph, in topological order (the loop of the fuse
/// passes); returns whether any call changed the graph.
pub(crate) fn rewrite_in_order(
    g: &mut Graph,
    pass: &'static str,
    mut rewrite: impl FnMut(&mut Graph, qcc_ir::NodeId) -> bool,
) -> Result<bool, PassError> {
    let order = g.topo_order().map_err(|_| PassError::Failed { pass, msg: "graph has a cycle".into() })?;
    let mut changed = false;
    for n in order {
        if g.contains_node(n) {
            changed |= rewrite(g, n);
        }
    }
    Ok(changed)
}
