//! place-qdq: quantizes the constant weights of every conv and gemm that has an integer form, per the
//! weight scheme (int8; symmetric weights use the narrow range -127..127 so the most negative value never
//! appears), and reads them through `dequantize`. With activations placed by assign-qparams, every
//! integer-capable op now reads dequantized inputs and feeds a quantize: the QDQ form fold-qdq matches.
//! Ops without an integer form stay float, bracketed by the explicit dequantize/quantize around them, and
//! so do the nodes the configuration keeps float (`--keep-float`): their weights are left alone.
use crate::{Pass, PassContext, PassError, WeightScheme};
use ndarray::{ArrayD, Axis};
use qcc_ir::{ConstData, ElemType, Graph, NodeId, Op, QParams, QuantType, Tensor, Type};

pub struct PlaceQdq;

/// Scale and zero point for weights in [min, max], the scale at least `floor`.
fn weight_params(min: f32, max: f32, sym: bool, floor: f32) -> (f32, i32) {
    let (a, b) = (min.min(0.0) as f64, max.max(0.0) as f64);
    if sym {
        let m = a.abs().max(b);
        (if m > 0.0 { ((m / 127.0) as f32).max(floor) } else { 1.0 }, 0)
    } else {
        let span = b - a;
        let scale = if span > 0.0 { ((span / 255.0) as f32).max(floor) } else { 1.0 };
        (scale, (-128.0 - a / scale as f64).round_ties_even().clamp(-128.0, 127.0) as i32)
    }
}

/// How far from zero a bias quantized at input scale × weight scale may be (see min_weight_scales).
const BIAS_LIMIT: f64 = (1u32 << 29) as f64;

/// Per output channel of conv/gemm `n`, the least weight scale its bias allows. A channel whose weights
/// are tiny next to its bias (a dead channel: EfficientNet-Lite has channels of weights near 1e-8 and a
/// bias of -0.5) would get a scale that puts its i32 bias, at input scale × weight scale, beyond the i32
/// range: clamped there, and every compiled kernel on its saturating path for the layer. At this floor
/// the bias stays within ±2^29 and the accumulator in i32; the coarser grid costs the channel at most
/// K · 255 · |bias| / 2^30 of rounding error in all, lost next to the bias. None without a constant bias
/// or a per-tensor input scale (dynamic quantization's inputs are scaled at run time).
pub fn min_weight_scales(g: &Graph, n: NodeId) -> Option<Vec<f32>> {
    let node = g.node(n);
    let b = g.const_tensor(*node.inputs.get(2)?)?.as_f32()?;
    let src = crate::insert_observers::data_source(g, node.inputs[0]);
    let dq = g.producer(src).filter(|p| g.node(*p).op == Op::Dequantize)?;
    let sx = match &g.ty(g.node(dq).inputs[0]).quant()?.params {
        QParams::PerTensor { scale, .. } if *scale > 0.0 => *scale as f64,
        _ => return None,
    };
    Some(b.iter().map(|v| (v.abs() as f64 / (sx * BIAS_LIMIT)) as f32).collect())
}

/// Quantizes a weight tensor; `axis` is the output-channel axis for per-channel schemes, `min_scale` the
/// least scale of each output channel (min_weight_scales; ignored unless it has one per channel).
pub fn quantize_weights(w: &ArrayD<f32>, scheme: WeightScheme, axis: usize, min_scale: Option<&[f32]>) -> (Tensor, QuantType) {
    let range = |v: ndarray::ArrayViewD<f32>| v.iter().fold((0f32, 0f32), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    let (qmin, qmax) = if scheme.symmetric { (-127, 127) } else { (-128, 127) };
    let floors = min_scale.filter(|m| m.len() == w.shape()[axis]);
    let floor = |c: usize| floors.map_or(0.0, |m| m[c]);
    let (params, per) = if scheme.per_channel {
        let (s, z): (Vec<f32>, Vec<i32>) = w
            .axis_iter(Axis(axis))
            .enumerate()
            .map(|(i, c)| {
                let (lo, hi) = range(c);
                weight_params(lo, hi, scheme.symmetric, floor(i))
            })
            .unzip();
        (QParams::PerAxis { axis, scales: s.clone(), zps: z.clone() }, Some((s, z)))
    } else {
        let (lo, hi) = range(w.view());
        let (s, z) = weight_params(lo, hi, scheme.symmetric, floors.map_or(0.0, |m| m.iter().copied().fold(0.0, f32::max)));
        (QParams::PerTensor { scale: s, zp: z }, None)
    };
    let mut q = ArrayD::<i8>::zeros(w.raw_dim());
    for (idx, v) in w.indexed_iter() {
        let (s, z) = match &per {
            Some((s, z)) => (s[idx[axis]], z[idx[axis]]),
            None => match params {
                QParams::PerTensor { scale, zp } => (scale, zp),
                _ => unreachable!(),
            },
        };
        q[&idx] = qcc_runtime::quant::quantize_value(*v, s, z, qmin, qmax) as i8;
    }
    let mut qt = QuantType::new(qcc_ir::DType::I8, params);
    (qt.qmin, qt.qmax) = (qmin, qmax);
    (Tensor::I8(q), qt)
}

fn place(g: &mut Graph, n: NodeId, scheme: WeightScheme) -> bool {
    let node = g.node(n).clone();
    let axis = match node.op {
        Op::Conv { .. } => 0,
        Op::Gemm { trans_b, .. } => usize::from(!trans_b),
        _ => return false,
    };
    let Some(w) = g.const_tensor(node.inputs[1]).and_then(|t| t.as_f32()).cloned() else { return false };
    let (t, qt) = quantize_weights(&w, scheme, axis, min_weight_scales(g, n).as_deref());
    set_quantized_weights(g, n, t, qt);
    true
}

/// Makes node `n` read its weights as `dequantize(t)`, `t` holding integers of type `qt`.
pub(crate) fn set_quantized_weights(g: &mut Graph, n: NodeId, t: Tensor, qt: QuantType) {
    let node = g.node(n).clone();
    let shape = t.shape().to_vec();
    let name = g.value(node.inputs[1]).name.clone();
    let wq = g.add_const_typed(ConstData::Data(t), Type::Tensor { elem: ElemType::Q(qt), shape: shape.clone() }, name);
    let dq = g.add_node(Op::Dequantize, vec![wq], Type::f32(shape), node.loc.clone());
    g.set_input(n, 1, dq);
}

impl Pass for PlaceQdq {
    fn name(&self) -> &'static str {
        "place-qdq"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError> {
        let Some(scheme) = cx.quant.weights else { return Ok(false) };
        let targets: Vec<NodeId> = g.node_ids().filter(|n| cx.quant.quantizes_weights_of(g, *n)).collect();
        let mut changed = false;
        for n in targets {
            changed |= place(g, n, scheme);
        }
        if changed {
            g.dce();
        }
        Ok(changed)
    }
}
