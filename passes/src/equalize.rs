//! equalize: cross-layer equalization (Nagel et al., "Data-Free Quantization"). For a conv whose value
//! only feeds another conv, through no activation or ReLU (both commute with positive per-channel
//! scaling), output channel c of the first is divided by s[c] and input channel c of the second multiplied
//! by it, with s[c] = sqrt(r1[c] / r2[c]) (r = per-channel weight range), so both ranges become
//! sqrt(r1 · r2). Exact in real arithmetic; it evens out channel ranges so per-tensor weight quantization
//! loses less. Repeated over the graph a few times, since a depthwise conv sits in two pairs. Runs at -O2
//! with --equalize, after fuse-activation (activations must already be attributes) and before
//! insert-observers.
//! Pairs through ReLU6/Clip are left alone: clipping at 6 does not commute with scaling.
use crate::{Pass, PassContext, PassError};
use ndarray::{ArrayD, Axis};
use qcc_ir::{Act, Graph, NodeId, Op, Tensor};

pub struct Equalize;

const ROUNDS: usize = 4;
/// The largest per-channel scaling one pair applies (either way).
const MAX_SCALE: f32 = 4.0;

fn weights(g: &Graph, v: qcc_ir::ValueId) -> Option<ArrayD<f32>> {
    g.const_tensor(v).and_then(|t| t.as_f32()).cloned()
}

/// One pair: `a` feeds `b`. Returns whether anything changed.
fn equalize_pair(g: &mut Graph, a: NodeId, b: NodeId) -> bool {
    let (na, nb) = (g.node(a).clone(), g.node(b).clone());
    let (Op::Conv { act: act_a, group: ga, .. }, Op::Conv { group: gb, .. }) = (&na.op, &nb.op) else { return false };
    if !matches!(act_a, None | Some(Act::Relu)) || *ga != 1 && g.ty(na.inputs[1]).shape().map(|s| s[1]) != Some(1) {
        return false;
    }
    let (Some(mut w1), Some(mut w2)) = (weights(g, na.inputs[1]), weights(g, nb.inputs[1])) else { return false };
    let c = w1.shape()[0];
    let depthwise = *gb as usize == c && w2.shape()[0] == c && w2.shape()[1] == 1;
    if !(depthwise || (*gb == 1 && w2.shape()[1] == c)) {
        return false;
    }
    let b1 = match na.inputs.get(2) {
        Some(v) => match weights(g, *v) {
            Some(b) => Some(b),
            None => return false,
        },
        None => None,
    };
    let absmax = |v: ndarray::ArrayViewD<f32>| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let in_axis = if depthwise { 0 } else { 1 };
    let r1: Vec<f32> = (0..c).map(|ch| absmax(w1.index_axis(Axis(0), ch))).collect();
    let r2: Vec<f32> = (0..c).map(|ch| absmax(w2.index_axis(Axis(in_axis), ch))).collect();
    let (m1, m2) = (r1.iter().fold(0f32, |a, b| a.max(*b)), r2.iter().fold(0f32, |a, b| a.max(*b)));
    // Near-empty channels are left alone, and the scaling is bounded: dividing a channel whose weights are
    // almost zero by a tiny s would blow its bias (and so the layer's activation range) up. Absorbing such
    // biases into the next layer (DFQ's high-bias absorption) would lift this bound; it is not done yet.
    let s: Vec<f32> = (0..c)
        .map(|ch| {
            if r1[ch] <= 1e-3 * m1 || r2[ch] <= 1e-3 * m2 {
                return 1.0;
            }
            ((r1[ch] as f64 / r2[ch] as f64).sqrt() as f32).clamp(1.0 / MAX_SCALE, MAX_SCALE)
        })
        .collect();
    if s.iter().all(|x| (x - 1.0).abs() < 1e-3) {
        return false;
    }
    for (ch, mut slab) in w1.axis_iter_mut(Axis(0)).enumerate() {
        slab.mapv_inplace(|v| v / s[ch]);
    }
    for (ch, mut slab) in w2.axis_iter_mut(Axis(in_axis)).enumerate() {
        slab.mapv_inplace(|v| v * s[ch]);
    }
    let name1 = g.value(na.inputs[1]).name.clone();
    let name2 = g.value(nb.inputs[1]).name.clone();
    let mut ins_a = na.inputs.clone();
    ins_a[1] = g.add_const(Tensor::F32(w1), name1);
    if let Some(mut b1) = b1 {
        for (ch, v) in b1.iter_mut().enumerate() {
            *v /= s[ch];
        }
        let name = g.value(na.inputs[2]).name.clone();
        ins_a[2] = g.add_const(Tensor::F32(b1), name);
    }
    g.set_inputs(a, ins_a);
    let w2v = g.add_const(Tensor::F32(w2), name2);
    g.set_input(b, 1, w2v);
    true
}

impl Pass for Equalize {
    fn name(&self) -> &'static str {
        "equalize"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<bool, PassError> {
        let mut changed = false;
        for _ in 0..ROUNDS {
            let order = g.topo_order().map_err(|_| PassError::Failed { pass: "equalize", msg: "graph has a cycle".into() })?;
            let mut round = false;
            for a in order {
                let out = g.node(a).output;
                if g.use_count(out) != 1 {
                    continue;
                }
                let Some(&(b, 0)) = g.uses(out).first() else { continue };
                round |= equalize_pair(g, a, b);
            }
            g.dce();
            changed |= round;
            if !round {
                break;
            }
        }
        Ok(changed)
    }
}
