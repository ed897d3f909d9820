//! equalize with activation moments keeps a scaling only where it lowers the estimated quantization noise:
//! checked against the error of actually quantizing the pair (int8 weights, u8 activations, rounded in
//! this test) before and after, under per-tensor and per-channel weights.
use ndarray::{Array2, ArrayD, Axis};
use qcc_ir::{parse_graph, Graph, Op, Tensor, ValueId};
use qcc_passes::{Equalize, Pass, PassContext, QuantConfig, WeightScheme};
use std::collections::HashMap;

fn lcg(seed: &mut u32) -> f32 {
    *seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
    (*seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
}

fn inputs() -> Vec<Tensor> {
    let mut seed = 777u32;
    (0..8).map(|_| Tensor::from_f32(&[1, 4, 4, 4], (0..64).map(|_| lcg(&mut seed)).collect()).unwrap()).collect()
}

/// Two 1×1 convs through ReLU; the first's output channels differ in scale by up to 400×.
fn graph() -> Graph {
    let mut seed = 4242u32;
    let scale = [1.0, 0.02, 8.0, 0.5, 0.1, 3.0];
    let w1: Vec<String> = (0..24).map(|i| format!("{}", lcg(&mut seed) * scale[i / 4])).collect();
    let b1: Vec<String> = (0..6).map(|i| format!("{}", 0.5 * scale[i])).collect();
    let w2: Vec<String> = (0..18).map(|_| format!("{}", lcg(&mut seed))).collect();
    parse_graph(&format!(
        r#"graph @t(%x: f32[1,4,4,4]) -> (%y: f32[1,3,6,6]) {{
  const @w1: f32[6,4,1,1] = [{}]
  const @b1: f32[6] = [{}]
  const @w2: f32[3,6,1,1] = [{}]
  %a = conv %x, @w1, @b1 {{act="relu", dilations=[1, 1], group=1, pads=[1, 1, 1, 1], strides=[1, 1]}} : f32[1,6,6,6] loc("conv_a")
  %y = conv %a, @w2 {{dilations=[1, 1], group=1, pads=[0, 0, 0, 0], strides=[1, 1]}} : f32[1,3,6,6] loc("conv_b")
}}"#,
        w1.join(", "),
        b1.join(", "),
        w2.join(", ")
    ))
    .unwrap()
}

/// Per value of rank 4 seen on the inputs (graph input and conv outputs): channel ranges and moments.
type Stats = (HashMap<ValueId, Vec<(f32, f32)>>, HashMap<ValueId, Vec<(f32, f32)>>);

/// One channel's min, max, sum, sum of squares and count.
type Lane = (f32, f32, f64, f64, f64);

fn stats(g: &Graph) -> Stats {
    let mut acc: HashMap<ValueId, Vec<Lane>> = HashMap::new();
    let mut add = |v: ValueId, a: &ArrayD<f32>| {
        let e = acc.entry(v).or_insert_with(|| vec![(f32::INFINITY, f32::NEG_INFINITY, 0.0, 0.0, 0.0); a.shape()[1]]);
        for (c, lane) in a.axis_iter(Axis(1)).enumerate() {
            for x in lane.iter() {
                e[c] = (e[c].0.min(*x), e[c].1.max(*x), e[c].2 + *x as f64, e[c].3 + (*x as f64).powi(2), e[c].4 + 1.0);
            }
        }
    };
    for x in inputs() {
        add(g.inputs()[0], x.as_f32().unwrap());
        qcc_runtime::run_observed(g, vec![x], |n, t| add(g.node(n).output, t.as_f32().unwrap())).unwrap();
    }
    let ranges = acc.iter().map(|(v, e)| (*v, e.iter().map(|a| (a.0, a.1)).collect())).collect();
    let moments = acc.iter().map(|(v, e)| (*v, e.iter().map(|a| ((a.2 / a.4) as f32, (a.3 / a.4) as f32)).collect())).collect();
    (ranges, moments)
}

/// Rounds each row of `w` (or the whole matrix) to a symmetric int8 grid.
fn fake_quant_weights(w: &Array2<f32>, per_channel: bool) -> Array2<f32> {
    let tensor = w.iter().fold(0f32, |m, x| m.max(x.abs()));
    let mut q = w.clone();
    for mut row in q.axis_iter_mut(Axis(0)) {
        let top = if per_channel { row.iter().fold(0f32, |m, x| m.max(x.abs())) } else { tensor };
        let step = top.max(1e-12) / 127.0;
        row.mapv_inplace(|x| (x / step).round().clamp(-127.0, 127.0) * step);
    }
    q
}

/// The two convs' weights as matrices and the first's bias.
fn params(g: &Graph) -> (Array2<f32>, Vec<f32>, Array2<f32>, Vec<f32>) {
    let convs: Vec<_> = g.topo_order().unwrap().into_iter().filter(|n| matches!(g.node(*n).op, Op::Conv { .. })).collect();
    let mat = |n| {
        let w = g.const_tensor(g.node(n).inputs[1]).unwrap().as_f32().unwrap();
        w.to_shape((w.shape()[0], w.shape()[1])).unwrap().to_owned()
    };
    let bias = |n, len| g.node(n).inputs.get(2).map_or(vec![0.0; len], |b| g.const_tensor(*b).unwrap().to_f32_vec());
    (mat(convs[0]), bias(convs[0], 6), mat(convs[1]), bias(convs[1], 3))
}

/// Squared error of the quantized pair against float, over every pixel of every input (padding included).
fn quantization_error(g: &Graph, per_channel: bool) -> f64 {
    let (w1, b1, w2, b2) = params(g);
    let (q1, q2) = (fake_quant_weights(&w1, per_channel), fake_quant_weights(&w2, per_channel));
    let pixels: Vec<Vec<f32>> = inputs()
        .iter()
        .flat_map(|x| {
            let a = x.as_f32().unwrap().to_shape((4, 16)).unwrap().to_owned();
            (0..16).map(move |p| a.column(p).to_vec()).chain(std::iter::once(vec![0.0; 4]))
        })
        .collect();
    let layer = |w: &Array2<f32>, b: &[f32], x: &[f32], relu: bool| -> Vec<f32> {
        w.rows()
            .into_iter()
            .zip(b)
            .map(|(r, b)| r.iter().zip(x).map(|(w, x)| w * x).sum::<f32>() + b)
            .map(|v| if relu { v.max(0.0) } else { v })
            .collect()
    };
    let hidden: Vec<Vec<f32>> = pixels.iter().map(|x| layer(&q1, &b1, x, true)).collect();
    let top = hidden.iter().flatten().fold(0f32, |m, x| m.max(*x));
    let step = top / 255.0;
    pixels
        .iter()
        .zip(&hidden)
        .map(|(x, h)| {
            let want = layer(&w2, &b2, &layer(&w1, &b1, x, true), false);
            let hq: Vec<f32> = h.iter().map(|v| (v / step).round() * step).collect();
            let got = layer(&q2, &b2, &hq, false);
            want.iter().zip(&got).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>()
        })
        .sum()
}

fn equalized(per_channel: bool) -> (Graph, bool) {
    let mut g = graph();
    let (channel_ranges, channel_moments) = stats(&g);
    let quant = QuantConfig { weights: Some(WeightScheme { symmetric: true, per_channel }), ..Default::default() };
    let mut cx = PassContext { channel_ranges, channel_moments, quant, ..Default::default() };
    let changed = Equalize.run(&mut g, &mut cx).unwrap();
    (g, changed)
}

#[test]
fn equalization_lowers_the_quantization_error_under_either_weight_scheme() {
    // Per-channel weights gain too: the small channels' activations grow into the shared u8 range.
    for per_channel in [false, true] {
        let before = quantization_error(&graph(), per_channel);
        let (g, changed) = equalized(per_channel);
        let after = quantization_error(&g, per_channel);
        assert!(changed && after < 0.5 * before, "per-channel {per_channel}: error {before} before equalization, {after} after");
    }
}

#[test]
fn equalized_pair_computes_the_same_function() {
    for per_channel in [false, true] {
        let (g, _) = equalized(per_channel);
        for x in inputs() {
            let want = qcc_runtime::run(&graph(), vec![x.clone()]).unwrap().remove(0).to_f32_vec();
            let got = qcc_runtime::run(&g, vec![x]).unwrap().remove(0).to_f32_vec();
            for (a, b) in want.iter().zip(&got) {
                assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{a} vs {b}");
            }
        }
    }
}
