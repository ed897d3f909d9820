//! equalize: cross-layer equalization (Nagel et al., "Data-Free Quantization"). For a conv whose value
//! only feeds another conv, through no activation or ReLU (both commute with positive per-channel
//! scaling), output channel c of the first is divided by s[c] and input channel c of the second multiplied
//! by it, with s[c] = sqrt(r1[c] / r2[c]) (r = per-channel weight range), so both ranges become
//! sqrt(r1 · r2). Exact in real arithmetic; it evens out channel ranges so per-tensor weight quantization
//! loses less. Repeated over the graph a few times, since a depthwise conv sits in two pairs. Runs at -O2
//! (unless --no-equalize), after fuse-activation (activations must already be attributes) and before
//! insert-observers.
//! Pairs through ReLU6/Clip are left alone: clipping at 6 does not commute with scaling.
//!
//! With per-channel activation ranges from calibration samples (PassContext::channel_ranges, gathered by
//! the driver when it calibrates), two more things happen. No channel is scaled beyond the tensor's
//! largest activation magnitude, so evening out the weights never widens the per-tensor activation range
//! (unbounded, it widened MobileNet-EdgeTPU's by 4× and cost 7 points). And high biases are absorbed
//! (DFQ's high-bias absorption): when the second conv has no padding, each channel of the first is
//! shifted down by d[c] (its bias minus d[c]) and the second's bias gains W2·d, with d[c] the channel's
//! smallest observed value when it is positive (through ReLU: exact while inputs stay above it, as on the
//! samples) or any value without activation (always exact). The per-tensor range then starts near 0.
//!
//! With per-channel moments as well (PassContext::channel_moments), a pair takes the scaling only as far
//! as it pays: among s^α (α = 0, ¼, ½, ¾, 1), with and without absorption, the one whose estimated
//! quantization noise under PassContext::quant's scheme is lowest (noise.rs). Full equalization raises
//! the noise where activation rounding dominates, and buys nothing for per-channel weights of a
//! depthwise pair.
use crate::{Pass, PassContext, PassError};
use ndarray::{ArrayD, Axis};
use qcc_ir::{Act, Graph, NodeId, Op, Tensor};

mod noise;

pub struct Equalize;

const ROUNDS: usize = 4;
/// The largest per-channel scaling one pair applies (either way).
const MAX_SCALE: f32 = 4.0;

fn weights(g: &Graph, v: qcc_ir::ValueId) -> Option<ArrayD<f32>> {
    g.const_tensor(v).and_then(|t| t.as_f32()).cloned()
}

/// One pair: `a` feeds `b`. `cx` holds the scheme and the per-channel activation statistics, updated as
/// `a`'s output changes. Returns whether anything changed.
fn equalize_pair(g: &mut Graph, a: NodeId, b: NodeId, cx: &mut PassContext) -> bool {
    let (na, nb) = (g.node(a).clone(), g.node(b).clone());
    let (Op::Conv { act: act_a, group: ga, .. }, Op::Conv { group: gb, pads: pads_b, .. }) = (&na.op, &nb.op) else { return false };
    // Scaling a's output channels would scale a residual added to them as well.
    if na.inputs.len() > 3 || !matches!(act_a, None | Some(Act::Relu)) || *ga != 1 && g.ty(na.inputs[1]).shape().map(|s| s[1]) != Some(1) {
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
    let b2 = match nb.inputs.get(2) {
        Some(v) => match weights(g, *v) {
            Some(b) => Some(b),
            None => return false,
        },
        None => None,
    };
    let act_range = cx.channel_ranges.get(&na.output).filter(|r| r.len() == c).cloned();
    let absmax = |v: ndarray::ArrayViewD<f32>| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let in_axis = if depthwise { 0 } else { 1 };
    let r1: Vec<f32> = (0..c).map(|ch| absmax(w1.index_axis(Axis(0), ch))).collect();
    let r2: Vec<f32> = (0..c).map(|ch| absmax(w2.index_axis(Axis(in_axis), ch))).collect();
    let (m1, m2) = (r1.iter().fold(0f32, |a, b| a.max(*b)), r2.iter().fold(0f32, |a, b| a.max(*b)));
    // Near-empty channels are left alone, and the scaling is bounded: dividing a channel whose weights are
    // almost zero by a tiny s would blow its bias (and so the layer's activation range) up. Without
    // activation ranges (no calibration data) this bound is the only guard.
    let amax: Vec<f32> = act_range.as_ref().map_or(vec![0.0; c], |r| r.iter().map(|(lo, hi)| lo.abs().max(hi.abs())).collect());
    let top = amax.iter().fold(0f32, |m, x| m.max(*x));
    let s: Vec<f32> = (0..c)
        .map(|ch| {
            if r1[ch] <= 1e-3 * m1 || r2[ch] <= 1e-3 * m2 {
                return 1.0;
            }
            let s = ((r1[ch] as f64 / r2[ch] as f64).sqrt() as f32).clamp(1.0 / MAX_SCALE, MAX_SCALE);
            // Dividing by s multiplies the channel's activations by 1/s: keep them within the tensor's range.
            if top > 0.0 {
                s.max(amax[ch] / top)
            } else {
                s
            }
        })
        .collect();
    // Shifts to absorb into the second conv (exact only where it has no padding), for scaling s.
    let no_pad = pads_b.iter().all(|p| *p == 0);
    let shifts_for = |s: &[f32]| -> Vec<f32> {
        match (&act_range, no_pad) {
            (Some(r), true) => r
                .iter()
                .zip(s)
                .map(|((lo, _), s)| if act_a.is_none() || *lo > 0.0 { *lo / s } else { 0.0 })
                .map(|x| if x.is_finite() { x } else { 0.0 })
                .collect(),
            _ => vec![0.0; c],
        }
    };
    // With moments of both activations, keep the candidate (a power of the full scaling, with or without
    // absorption) whose estimated quantization noise is lowest: doing nothing is a candidate.
    let moments =
        (cx.channel_moments.get(&na.inputs[0]).filter(|m| !m.is_empty()), cx.channel_moments.get(&na.output).filter(|m| m.len() == c));
    let (s, d) = match (&act_range, moments) {
        (Some(r), (Some(xm), Some(am))) => {
            let pair = noise::Pair::new(&cx.quant, &w1, &w2, depthwise, xm, r, am);
            let mut best = (f64::INFINITY, vec![1.0; c], vec![0.0; c]);
            for alpha in [0.0f32, 0.25, 0.5, 0.75, 1.0] {
                let sa: Vec<f32> = s.iter().map(|x| x.powf(alpha)).collect();
                for absorb in [false, true] {
                    let d = if absorb { shifts_for(&sa) } else { vec![0.0; c] };
                    let n = pair.noise(&sa, &d);
                    if n < best.0 * (1.0 - 1e-6) {
                        best = (n, sa.clone(), d);
                    }
                }
            }
            (best.1, best.2)
        }
        _ => {
            let d = shifts_for(&s);
            (s, d)
        }
    };
    let shifts = d.iter().any(|x| *x != 0.0);
    if s.iter().all(|x| (x - 1.0).abs() < 1e-3) && !shifts {
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
    if b1.is_some() || shifts {
        let mut b1 = b1.unwrap_or_else(|| ArrayD::zeros(vec![c]));
        for (ch, v) in b1.iter_mut().enumerate() {
            *v = *v / s[ch] - d[ch];
        }
        let name = na.inputs.get(2).and_then(|v| g.value(*v).name.clone());
        ins_a.truncate(2);
        ins_a.push(g.add_const(Tensor::F32(b1), name));
    }
    g.set_inputs(a, ins_a);
    let mut ins_b = nb.inputs.clone();
    if b2.is_some() || shifts {
        // Output o of the second conv reads channel c through Σ_taps w2; the shift d[c] adds that sum · d[c].
        let m = w2.shape()[0];
        let mut b2 = b2.unwrap_or_else(|| ArrayD::zeros(vec![m]));
        for (o, slab) in w2.axis_iter(Axis(0)).enumerate() {
            b2[o] += if depthwise { slab.sum() * d[o] } else { slab.axis_iter(Axis(0)).zip(&d).map(|(w, dc)| w.sum() * dc).sum::<f32>() };
        }
        let name = nb.inputs.get(2).and_then(|v| g.value(*v).name.clone());
        ins_b.truncate(2);
        ins_b.push(g.add_const(Tensor::F32(b2), name));
    }
    ins_b[1] = g.add_const(Tensor::F32(w2), name2);
    g.set_inputs(b, ins_b);
    if let Some(mut r) = act_range {
        for (ch, (lo, hi)) in r.iter_mut().enumerate() {
            (*lo, *hi) = (*lo / s[ch] - d[ch], *hi / s[ch] - d[ch]);
        }
        cx.channel_ranges.insert(na.output, r);
    }
    if let Some(m) = cx.channel_moments.get_mut(&na.output).filter(|m| m.len() == c) {
        for (ch, (mean, sq)) in m.iter_mut().enumerate() {
            let (mu, dd) = (*mean / s[ch], d[ch]);
            (*mean, *sq) = (mu - dd, (*sq / (s[ch] * s[ch]) - 2.0 * dd * mu + dd * dd).max(0.0));
        }
    }
    true
}

impl Pass for Equalize {
    fn name(&self) -> &'static str {
        "equalize"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError> {
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
                round |= equalize_pair(g, a, b, cx);
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
