//! equalize with per-channel activation ranges: high biases are absorbed into the next conv when it has no
//! padding (outputs unchanged on the samples, the shifted channel now starts at 0), never when it has
//! padding, and no channel's activations grow beyond the tensor's largest.
use qcc_ir::{parse_graph, Graph, Op, Tensor, ValueId};
use qcc_passes::{Equalize, Pass, PassContext};
use std::collections::HashMap;

fn inputs() -> Vec<Tensor> {
    let mut seed = 12345u32;
    (0..8)
        .map(|_| {
            let v = (0..32)
                .map(|_| {
                    seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
                })
                .collect();
            Tensor::from_f32(&[1, 2, 4, 4], v).unwrap()
        })
        .collect()
}

/// Per conv output, each channel's (min, max) over the inputs (what the driver gathers).
fn ranges(g: &Graph) -> HashMap<ValueId, Vec<(f32, f32)>> {
    let mut r: HashMap<ValueId, Vec<(f32, f32)>> = HashMap::new();
    for x in inputs() {
        qcc_runtime::run_observed(g, vec![x], |n, t| {
            if !matches!(g.node(n).op, Op::Conv { .. }) {
                return;
            }
            let a = t.as_f32().unwrap();
            let e = r.entry(g.node(n).output).or_insert_with(|| vec![(f32::INFINITY, f32::NEG_INFINITY); a.shape()[1]]);
            for (c, lane) in a.axis_iter(ndarray::Axis(1)).enumerate() {
                for v in lane.iter() {
                    e[c] = (e[c].0.min(*v), e[c].1.max(*v));
                }
            }
        })
        .unwrap();
    }
    r
}

/// The first conv's output ranges, the graph's outputs on every input.
fn run(g: &Graph) -> (Vec<(f32, f32)>, Vec<Vec<f32>>) {
    let first = g.node_ids().find(|n| g.node(*n).loc == ["conv_a"]).unwrap();
    let r = ranges(g).remove(&g.node(first).output).unwrap();
    (r, inputs().into_iter().map(|x| qcc_runtime::run(g, vec![x]).unwrap().remove(0).to_f32_vec()).collect())
}

fn graph(second_pads: &str) -> Graph {
    parse_graph(&format!(
        r#"graph @t(%x: f32[1,2,4,4]) -> (%y: f32[1,2,4,4]) {{
  const @w1: f32[3,2,1,1] = [0.5, -0.25, 4.0, 2.0, 0.125, 0.25]
  const @b1: f32[3] = [6.0, 0.5, 3.0]
  const @w2: f32[2,3,1,1] = [0.25, 1.0, -3.0, 2.0, 0.5, 8.0]
  %a = conv %x, @w1, @b1 {{act="relu", dilations=[1, 1], group=1, pads=[0, 0, 0, 0], strides=[1, 1]}} : f32[1,3,4,4] loc("conv_a")
  %y = conv %a, @w2 {{dilations=[1, 1], group=1, pads={second_pads}, strides=[1, 1]}} : f32[1,2,4,4] loc("conv_b")
}}"#
    ))
    .unwrap()
}

fn equalize(g: &mut Graph) {
    let mut cx = PassContext { channel_ranges: ranges(g), ..Default::default() };
    assert!(Equalize.run(g, &mut cx).unwrap());
}

#[test]
fn high_bias_is_absorbed_into_an_unpadded_conv() {
    let mut g = graph("[0, 0, 0, 0]");
    let (before, want) = run(&g);
    // Channel 0 (bias 6, small weights) never reaches 0 on these inputs.
    assert!(before[0].0 > 5.0, "{before:?}");
    equalize(&mut g);
    let (after, got) = run(&g);
    for (w, o) in want.iter().zip(&got) {
        for (a, b) in w.iter().zip(o) {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{want:?} vs {got:?}");
        }
    }
    // Each channel that was always positive now starts at 0; none exceeds the old largest magnitude.
    let top = before.iter().map(|(lo, hi)| lo.abs().max(hi.abs())).fold(0f32, f32::max);
    for (c, ((lo, hi), (lo0, _))) in after.iter().zip(&before).enumerate() {
        if *lo0 > 0.0 {
            assert!(lo.abs() < 1e-4, "channel {c}: {after:?}");
        }
        assert!(*hi <= top * 1.0001, "channel {c}: {after:?} (largest before {top})");
    }
}

#[test]
fn padded_conv_gets_no_absorption() {
    let mut g = graph("[1, 1, 1, 1]");
    let (before, want) = run(&g);
    equalize(&mut g);
    let (after, got) = run(&g);
    for (w, o) in want.iter().zip(&got) {
        for (a, b) in w.iter().zip(o) {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{want:?} vs {got:?}");
        }
    }
    // Scaled, not shifted: a padded border would see the shift as a missing constant.
    assert!(after[0].0 > 0.0 && (after[0].0 / after[0].1 - before[0].0 / before[0].1).abs() < 1e-4, "{before:?} {after:?}");
    // Channel 2 (weights 16× smaller than its reader's) would be scaled up 4×, past channel 0's range.
    let top = before.iter().map(|(lo, hi)| lo.abs().max(hi.abs())).fold(0f32, f32::max);
    assert!(after[2].1 > before[2].1 * 1.5 && after.iter().all(|(_, hi)| *hi <= top * 1.0001), "{before:?} {after:?}");
}
