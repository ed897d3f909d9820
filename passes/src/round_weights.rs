//! round-weights: instead of rounding every int8 weight to nearest, rounds each conv's and gemm's
//! weights so that the layer's output on the calibration data moves least (GPTQ, `gptq.rs`), from the
//! second moments of the layer's input patches that calibration gathers ([`InputGram`]). Runs after
//! assign-qparams and before bias-correct and place-qdq, and does place-qdq's work for the layers it
//! rounds: the same scales and zero points (from the float weights' ranges), other integers. With
//! `bias_correct` it also removes the output mean shift the rounded weights leave, exactly, from the
//! mean input patch (padding included), so bias-correct leaves these layers alone.
mod gptq;

use crate::bias_correct::shift_bias;
use crate::place_qdq::{quantize_weights, set_quantized_weights};
use crate::{Pass, PassContext, PassError};
use gptq::Grid;
use ndarray::{ArrayD, ArrayView2};
use qcc_ir::{Graph, NodeId, Op, QParams, Tensor};

/// Inputs wider than this (patch length of one group) are rounded to nearest: their second-moment
/// matrix would take k² × 8 bytes (32 MiB at 2048) and k³ time to factor.
pub const MAX_PATCH: usize = 2048;

/// Added to the diagonal of the second-moment matrix, × its mean: a prior towards plain rounding
/// where the calibration data do not pin a direction down.
const DAMP: f64 = 0.01;

/// Sums over the input patches of one conv or gemm: per group, Σ p pᵀ and Σ p. One sample's sums
/// are kept in f32 (calibration holds several at once), the running total in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct InputGram<T = f64> {
    /// Patch length k (input channels per group × kernel taps).
    pub k: usize,
    /// Per group, Σ p pᵀ, [k, k] row-major.
    pub grams: Vec<Vec<T>>,
    /// Per group, Σ p.
    pub sums: Vec<Vec<f64>>,
    /// Patches summed (the same for every group).
    pub count: u64,
}

impl InputGram<f32> {
    /// One sample's sums for node `n` (a conv over 4-D tensors or a gemm the int8 path takes) whose data
    /// input is `x`. None for other nodes and patches longer than [`MAX_PATCH`].
    pub fn of(g: &Graph, n: NodeId, x: &ArrayD<f32>) -> Option<InputGram<f32>> {
        let node = g.node(n);
        let ws = g.ty(*node.inputs.get(1)?).shape()?.to_vec();
        let x = x.as_standard_layout();
        let xs = x.shape();
        let data = x.as_slice()?;
        match &node.op {
            Op::Conv { strides, pads, dilations, group, .. } if xs.len() == 4 && ws.len() == 4 => {
                let group = *group as usize;
                let k = ws[1] * ws[2] * ws[3];
                let out = g.ty(node.output).shape()?.to_vec();
                if k > MAX_PATCH || group == 0 || xs[1] != ws[1] * group {
                    return None;
                }
                let mut acc = InputGram::zero(k, group);
                for b in 0..xs[0] {
                    for gi in 0..group {
                        let col = qcc_runtime::conv_patches(data, xs, &ws, strides, pads, dilations, group, &out, b, gi).ok()?;
                        acc.add_patches(gi, ArrayView2::from_shape((k, col.len() / k), &col).ok()?);
                    }
                    acc.count += (out[2] * out[3]) as u64;
                }
                Some(acc)
            }
            Op::Gemm { trans_a: false, .. } if xs.len() == 2 && xs[1] <= MAX_PATCH => {
                let mut acc = InputGram::zero(xs[1], 1);
                acc.add_patches(0, ArrayView2::from_shape((xs[0], xs[1]), data).ok()?.reversed_axes());
                acc.count = xs[0] as u64;
                Some(acc)
            }
            _ => None,
        }
    }

    /// Adds the patches that are the columns of `cols` ([k, patches]) to group `gi`.
    fn add_patches(&mut self, gi: usize, cols: ArrayView2<f32>) {
        let k = self.k;
        let mut acc = ndarray::ArrayViewMut2::from_shape((k, k), &mut self.grams[gi]).expect("k x k");
        ndarray::linalg::general_mat_mul(1.0, &cols, &cols.t(), 1.0, &mut acc);
        for (s, row) in self.sums[gi].iter_mut().zip(cols.rows()) {
            *s += row.iter().map(|v| *v as f64).sum::<f64>();
        }
    }
}

impl<T: Clone + Default> InputGram<T> {
    fn zero(k: usize, groups: usize) -> InputGram<T> {
        InputGram { k, grams: vec![vec![T::default(); k * k]; groups], sums: vec![vec![0.0; k]; groups], count: 0 }
    }
}

impl InputGram {
    /// Adds one sample's sums (same node) to the running total `total`, which starts at zero.
    pub fn accumulate(total: &mut Option<InputGram>, o: &InputGram<f32>) {
        let t = total.get_or_insert_with(|| InputGram::zero(o.k, o.grams.len()));
        for (a, b) in t.grams.iter_mut().flatten().zip(o.grams.iter().flatten()) {
            *a += *b as f64;
        }
        for (a, b) in t.sums.iter_mut().flatten().zip(o.sums.iter().flatten()) {
            *a += b;
        }
        t.count += o.count;
    }
}

pub struct RoundWeights;

/// Node `n`'s rounded integer weights, their type and (with bias correction) the bias shift.
type Rounded = (Tensor, qcc_ir::QuantType, Option<Vec<f64>>);

/// Rounds node `n`'s weights with its input sums; None (left to place-qdq) where it cannot.
fn round(g: &Graph, n: NodeId, gram: &InputGram, cx: &PassContext) -> Option<Rounded> {
    let scheme = cx.quant.weights?;
    let node = g.node(n);
    let w = g.const_tensor(node.inputs[1]).and_then(|t| t.as_f32())?;
    let (axis, groups) = match &node.op {
        Op::Conv { group, .. } => (0, *group as usize),
        Op::Gemm { trans_b, .. } => (usize::from(!trans_b), 1),
        _ => return None,
    };
    let rows = w.shape()[axis];
    if groups != gram.grams.len() || rows % groups != 0 || w.len() != rows * gram.k || gram.count == 0 {
        return None;
    }
    // Weights as [rows, k], rows the output channels.
    let w2: Vec<f64> = match &node.op {
        Op::Gemm { trans_b: false, .. } => w.t().iter().map(|v| *v as f64).collect(),
        _ => w.iter().map(|v| *v as f64).collect(),
    };
    let (Tensor::I8(mut q), qt) = quantize_weights(w, scheme, axis, crate::place_qdq::min_weight_scales(g, n).as_deref()) else {
        return None;
    };
    let grid = |r: usize| {
        let (scale, zp) = match &qt.params {
            QParams::PerAxis { scales, zps, .. } => (scales[r], zps[r]),
            QParams::PerTensor { scale, zp } => (*scale, *zp),
            _ => return None,
        };
        Some(Grid { scale: scale as f64, zp, qmin: qt.qmin as i32, qmax: qt.qmax as i32 })
    };
    let grids = (0..rows).map(grid).collect::<Option<Vec<Grid>>>()?;
    let (k, per) = (gram.k, rows / groups);
    let mut rounded = w2.clone();
    let mut qs = vec![0i32; rows * k];
    for gi in 0..groups {
        let span = gi * per * k..(gi + 1) * per * k;
        let qg = gptq::round_rows(&mut rounded[span.clone()], per, k, &gram.grams[gi], &grids[gi * per..(gi + 1) * per], DAMP)?;
        qs[span].copy_from_slice(&qg);
    }
    let flat: Vec<i8> = match &node.op {
        // Back to [k, rows] for a gemm that is not transposed.
        Op::Gemm { trans_b: false, .. } => (0..rows * k).map(|i| qs[(i % rows) * k + i / rows] as i8).collect(),
        _ => qs.iter().map(|v| *v as i8).collect(),
    };
    q.iter_mut().zip(flat).for_each(|(a, b)| *a = b);
    let shift = cx.quant.bias_correct.then(|| {
        (0..rows)
            .map(|r| {
                let sums = &gram.sums[r / per];
                (0..k).map(|i| (rounded[r * k + i] - w2[r * k + i]) * sums[i]).sum::<f64>() / gram.count as f64
            })
            .collect()
    });
    Some((Tensor::I8(q), qt, shift))
}

/// Whether the weights of `nodes` are those of an already quantized model: every tensor of more than
/// 512 weights holds at most 256 distinct values (quantization-aware training, or a dequantized int8
/// export), and there is one. Their rounding is what training or another tool settled on, so they are
/// rounded to nearest, as they are: minimizing the calibration error would move them off the trained
/// values (MobileNetV1 0.25 QAT with per-tensor weights lost a point on both halves of the dev set).
fn already_quantized(g: &Graph, nodes: &[NodeId]) -> bool {
    let large: Vec<&ArrayD<f32>> =
        nodes.iter().filter_map(|n| g.const_tensor(g.node(*n).inputs[1]).and_then(|t| t.as_f32())).filter(|w| w.len() > 2 * 256).collect();
    !large.is_empty()
        && large.iter().all(|w| {
            let mut bits: Vec<u32> = w.iter().map(|v| v.to_bits()).collect();
            bits.sort_unstable();
            bits.dedup();
            bits.len() <= 256
        })
}

impl Pass for RoundWeights {
    fn name(&self) -> &'static str {
        "round-weights"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError> {
        let targets: Vec<(NodeId, &InputGram)> = g
            .node_ids()
            .filter(|n| cx.quant.quantizes_weights_of(g, *n))
            .filter_map(|n| Some((n, cx.input_grams.get(&g.node(n).output)?)))
            .collect();
        if already_quantized(g, &targets.iter().map(|(n, _)| *n).collect::<Vec<_>>()) {
            cx.notes.push("round-weights: the weights are already on an int8 grid (a quantized model): rounded to nearest".into());
            return Ok(false);
        }
        // Layers round independently: one thread per core, each taking every `workers`-th layer.
        let workers = std::thread::available_parallelism().map_or(1, |p| p.get()).min(targets.len()).max(1);
        let (graph, cx_ref, targets_ref) = (&*g, &*cx, &targets);
        let mut results: Vec<Option<Rounded>> = vec![None; targets.len()];
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    s.spawn(move || {
                        targets_ref
                            .iter()
                            .enumerate()
                            .skip(w)
                            .step_by(workers)
                            .map(|(i, (n, gram))| (i, round(graph, *n, gram, cx_ref)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                for (i, r) in h.join().expect("round-weights worker") {
                    results[i] = r;
                }
            }
        });
        let nodes: Vec<NodeId> = targets.iter().map(|(n, _)| *n).collect();
        let mut changed = false;
        for (n, r) in nodes.into_iter().zip(results) {
            let Some((q, qt, shift)) = r else { continue };
            if shift.is_some_and(|s| !shift_bias(g, n, &s)) {
                continue;
            }
            set_quantized_weights(g, n, q, qt);
            changed = true;
        }
        if changed {
            g.dce();
        }
        Ok(changed)
    }
}
