//! Resize (nearest and linear) over any axes, with ONNX's coordinate transforms and nearest rounding.
use crate::eval::R;
use ndarray::{ArrayD, IxDyn};
use qcc_ir::{CoordTransform, NearestMode, ResizeMode};

/// Source coordinate of output index `y` on one axis.
fn source(coord: CoordTransform, y: usize, scale: f32, in_len: usize, out_len: usize) -> f32 {
    let y = y as f32;
    match coord {
        CoordTransform::HalfPixel => (y + 0.5) / scale - 0.5,
        CoordTransform::PytorchHalfPixel => {
            if out_len > 1 {
                (y + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
        // The resized length here is in_len * scale before flooring, as the ONNX reference computes it.
        CoordTransform::AlignCorners => {
            let resized = in_len as f32 * scale;
            if out_len == 1 || resized <= 1.0 {
                0.0
            } else {
                y * (in_len as f32 - 1.0) / (resized - 1.0)
            }
        }
        CoordTransform::Asymmetric => y / scale,
        CoordTransform::HalfPixelSymmetric => {
            let adjustment = out_len as f32 / (scale * in_len as f32);
            let center = in_len as f32 / 2.0;
            let offset = center * (1.0 - adjustment);
            offset + (y + 0.5) / scale - 0.5
        }
    }
}

fn nearest_index(x: f32, mode: NearestMode, in_len: usize) -> usize {
    let i = match mode {
        NearestMode::RoundPreferFloor => {
            if x.fract() == 0.5 {
                x.floor()
            } else {
                x.round()
            }
        }
        NearestMode::RoundPreferCeil => {
            if x.fract() == 0.5 {
                x.ceil()
            } else {
                x.round()
            }
        }
        NearestMode::Floor => x.floor(),
        NearestMode::Ceil => x.ceil(),
    };
    i.clamp(0.0, in_len as f32 - 1.0) as usize
}

/// Per axis and output index: the (source index, weight) taps.
fn taps(
    mode: ResizeMode,
    coord: CoordTransform,
    nearest: NearestMode,
    scale: f32,
    in_len: usize,
    out_len: usize,
) -> Vec<Vec<(usize, f32)>> {
    (0..out_len)
        .map(|y| {
            if in_len == out_len && scale == 1.0 && coord != CoordTransform::AlignCorners {
                return vec![(y, 1.0)];
            }
            let x = source(coord, y, scale, in_len, out_len);
            match mode {
                ResizeMode::Nearest => vec![(nearest_index(x, nearest, in_len), 1.0)],
                ResizeMode::Linear => {
                    let x = x.clamp(0.0, in_len as f32 - 1.0);
                    let i0 = x.floor() as usize;
                    let i1 = (i0 + 1).min(in_len - 1);
                    let w = x - i0 as f32;
                    if i1 == i0 || w == 0.0 {
                        vec![(i0, 1.0)]
                    } else {
                        vec![(i0, 1.0 - w), (i1, w)]
                    }
                }
            }
        })
        .collect()
}

pub fn resize(
    x: &ArrayD<f32>,
    mode: ResizeMode,
    coord: CoordTransform,
    nearest: NearestMode,
    scales: &[f32],
    out_shape: &[usize],
) -> R<ArrayD<f32>> {
    let ins = x.shape().to_vec();
    let r = ins.len();
    let all: Vec<Vec<Vec<(usize, f32)>>> = (0..r).map(|a| taps(mode, coord, nearest, scales[a], ins[a], out_shape[a])).collect();
    let mut out = ArrayD::<f32>::zeros(IxDyn(out_shape));
    let mut src = vec![0usize; r];
    for (idx, o) in out.indexed_iter_mut() {
        let per: Vec<&Vec<(usize, f32)>> = (0..r).map(|a| &all[a][idx[a]]).collect();
        let combos: usize = per.iter().map(|p| p.len()).product();
        let mut acc = 0f32;
        for c in 0..combos {
            let mut rem = c;
            let mut w = 1f32;
            for a in (0..r).rev() {
                let (i, wi) = per[a][rem % per[a].len()];
                rem /= per[a].len();
                src[a] = i;
                w *= wi;
            }
            acc += w * x[IxDyn(&src)];
        }
        *o = acc;
    }
    Ok(out)
}
