//! equalize's estimate of the quantization noise a conv pair adds to the second conv's output, so that a
//! scaling is kept only where it lowers it under the scheme actually used. Three sources, as variances
//! (a uniform step Δ adds Δ²/12), carried to the second conv's output, whose signal the exact rescaling
//! leaves unchanged: the first conv's weight rounding (through the second's weights), the activation
//! rounding between them (likewise), and the second conv's weight rounding (through its input's energy).
//! Ignores clipping by the range method and the ReLU zeroing part of the noise: the estimate ranks
//! candidate scalings, it does not predict accuracy.
use crate::QuantConfig;
use ndarray::{ArrayD, Axis};
use qcc_ir::DType;

/// The statistics of one pair that do not depend on the scaling.
pub(super) struct Pair<'a> {
    quant: &'a QuantConfig,
    /// The first conv's output channels' weight (min, max).
    w1: Vec<(f32, f32)>,
    /// Per channel c, the energy of the input window it reads: taps × Σ E[x²] over its input channels.
    x_energy: Vec<f64>,
    /// The second conv's weights as (min, max) over taps: [out][in] (one entry per output if depthwise).
    w2: Vec<Vec<(f32, f32)>>,
    /// Per channel of the activation, Σ of the second conv's squared weights reading it.
    n2: Vec<f64>,
    taps2: f64,
    depthwise: bool,
    range: &'a [(f32, f32)],
    moments: &'a [(f32, f32)],
}

fn min_max(v: ndarray::ArrayViewD<f32>) -> (f32, f32) {
    v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

/// One int8 weight step for values in [lo, hi].
fn weight_step(lo: f32, hi: f32, symmetric: bool) -> f64 {
    let (lo, hi) = (lo.min(0.0) as f64, hi.max(0.0) as f64);
    if symmetric {
        lo.abs().max(hi) / 127.0
    } else {
        (hi - lo) / 255.0
    }
}

impl<'a> Pair<'a> {
    /// `x_moments`: the first conv's input channels' (mean, mean square).
    pub fn new(
        quant: &'a QuantConfig,
        w1: &ArrayD<f32>,
        w2: &ArrayD<f32>,
        depthwise: bool,
        x_moments: &[(f32, f32)],
        range: &'a [(f32, f32)],
        moments: &'a [(f32, f32)],
    ) -> Pair<'a> {
        let c = w1.shape()[0];
        let taps1 = (w1.len() / (c * w1.shape()[1]).max(1)) as f64;
        let cin = x_moments.len();
        let x_energy = if w1.shape()[1] == 1 && cin != 1 {
            // Depthwise: channel ch reads input channel ch / (channel multiplier).
            (0..c).map(|ch| taps1 * x_moments[(ch * cin / c).min(cin - 1)].1 as f64).collect()
        } else {
            vec![taps1 * x_moments.iter().map(|m| m.1 as f64).sum::<f64>(); c]
        };
        let m = w2.shape()[0];
        let taps2 = (w2.len() / (m * w2.shape()[1]).max(1)) as f64;
        let mut n2 = vec![0f64; c];
        let w2s: Vec<Vec<(f32, f32)>> = w2
            .axis_iter(Axis(0))
            .enumerate()
            .map(|(o, slab)| {
                if depthwise {
                    n2[o] += slab.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
                    vec![min_max(slab)]
                } else {
                    slab.axis_iter(Axis(0))
                        .enumerate()
                        .map(|(ch, taps)| {
                            n2[ch] += taps.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
                            min_max(taps)
                        })
                        .collect()
                }
            })
            .collect();
        Pair { quant, w1: w1.axis_iter(Axis(0)).map(min_max).collect(), x_energy, w2: w2s, n2, taps2, depthwise, range, moments }
    }

    /// The activation's quantization step once its range is [lo, hi].
    fn act_step(&self, lo: f32, hi: f32) -> f64 {
        let (lo, hi) = (lo.min(0.0) as f64, hi.max(0.0) as f64);
        let (half, full) = match self.quant.act_type {
            DType::I16 => (32767.0, 65535.0),
            _ => (127.0, 255.0),
        };
        if self.quant.act_symmetric {
            lo.abs().max(hi) / half
        } else {
            (hi - lo) / full
        }
    }

    /// The noise variance at the second conv's output after dividing channel c by s[c] and shifting it
    /// down by d[c].
    pub fn noise(&self, s: &[f32], d: &[f32]) -> f64 {
        let c = s.len();
        let sq = |ch: usize| (s[ch] as f64).powi(2);
        // Activation: one per-tensor step over the rescaled, shifted channels.
        let (lo, hi) = (0..c).fold((0f32, 0f32), |(lo, hi), ch| {
            let (l, h) = self.range[ch];
            (lo.min(l / s[ch] - d[ch]), hi.max(h / s[ch] - d[ch]))
        });
        let da = self.act_step(lo, hi);
        let mut total: f64 = (0..c).map(|ch| self.n2[ch] * sq(ch) * da * da / 12.0).sum();
        let Some(ws) = self.quant.weights else { return total };
        // First conv's weights: channel ch's step (per channel or the tensor's), through the second conv.
        let tensor1 = (0..c).fold((0f32, 0f32), |(lo, hi), ch| (lo.min(self.w1[ch].0 / s[ch]), hi.max(self.w1[ch].1 / s[ch])));
        total += (0..c)
            .map(|ch| {
                let (l, h) = if ws.per_channel { (self.w1[ch].0 / s[ch], self.w1[ch].1 / s[ch]) } else { tensor1 };
                let step = weight_step(l, h, ws.symmetric);
                self.n2[ch] * sq(ch) * step * step / 12.0 * self.x_energy[ch]
            })
            .sum::<f64>();
        // Second conv's weights, through the energy of its (rescaled, shifted) input.
        let energy: Vec<f64> = (0..c)
            .map(|ch| {
                let (mean, m2) = (self.moments[ch].0 as f64 / s[ch] as f64, self.moments[ch].1 as f64 / sq(ch));
                let d = d[ch] as f64;
                (m2 - 2.0 * d * mean + d * d).max(0.0)
            })
            .collect();
        let all: f64 = energy.iter().sum();
        let out_range = |o: usize, row: &[(f32, f32)]| {
            row.iter().enumerate().fold((0f32, 0f32), |(lo, hi), (k, (l, h))| {
                let ch = if self.depthwise { o } else { k };
                (lo.min(l * s[ch]), hi.max(h * s[ch]))
            })
        };
        let ranges: Vec<(f32, f32)> = self.w2.iter().enumerate().map(|(o, row)| out_range(o, row)).collect();
        let tensor2 = ranges.iter().fold((0f32, 0f32), |(lo, hi), (l, h)| (lo.min(*l), hi.max(*h)));
        for (o, r) in ranges.iter().enumerate() {
            let (l, h) = if ws.per_channel { *r } else { tensor2 };
            let step = weight_step(l, h, ws.symmetric);
            total += step * step / 12.0 * self.taps2 * if self.depthwise { energy[o] } else { all };
        }
        total
    }
}
