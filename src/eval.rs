//! Accuracy measurement: top-1/top-5 of a classifier over a labeled data set.
use crate::data::{fit_input, stack_samples, Dataset};
use crate::exec::Exec;
use anyhow::{bail, Context, Result};
use qcc_ir::Tensor;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Accuracy {
    pub n: usize,
    pub top1: usize,
    pub top5: usize,
}

impl Accuracy {
    pub fn top1_pct(&self) -> f64 {
        100.0 * self.top1 as f64 / self.n.max(1) as f64
    }
    pub fn top5_pct(&self) -> f64 {
        100.0 * self.top5 as f64 / self.n.max(1) as f64
    }
}

/// Rank of `label` among the scores (0 = best); ties count against the label.
pub fn rank_of(scores: &[f32], label: usize) -> usize {
    let s = scores[label];
    scores.iter().enumerate().filter(|(i, v)| *i != label && (**v > s || (**v == s && *i < label))).count()
}

/// Index of the largest score (the first on ties).
pub fn argmax(s: &[f32]) -> usize {
    (0..s.len()).max_by(|a, b| s[*a].total_cmp(&s[*b]).then(b.cmp(a))).unwrap_or(0)
}

pub fn scores(out: &Tensor) -> Result<Vec<f32>> {
    match out {
        Tensor::F32(a) => Ok(a.iter().copied().collect()),
        t => bail!("classifier output must be f32, is {}", t.dtype()),
    }
}

/// Results of several graphs on the same samples: top-1/top-5 counts, top-1 agreement with graph 0
/// and the output's signal-to-noise ratio against graph 0's, summed over samples in dB.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    pub n: usize,
    pub top1: Vec<usize>,
    pub top5: Vec<usize>,
    pub agree: Vec<usize>,
    pub sqnr_db: Vec<f64>,
}

/// Highest SQNR one sample counts with (an output equal to the reference's).
const SQNR_CAP_DB: f64 = 100.0;

/// 10·log10(Σ r² / Σ (s − r)²) of scores `s` against reference `r`, at most [`SQNR_CAP_DB`].
pub fn sqnr_db(s: &[f32], r: &[f32]) -> f64 {
    let sig: f64 = r.iter().map(|x| (*x as f64).powi(2)).sum();
    let noise: f64 = s.iter().zip(r).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
    if noise <= sig * 10f64.powf(-SQNR_CAP_DB / 10.0) {
        SQNR_CAP_DB
    } else {
        10.0 * (sig / noise).log10()
    }
}

impl Comparison {
    /// Graph `k`'s output SQNR against graph 0, averaged over the samples in dB.
    pub fn mean_sqnr_db(&self, k: usize) -> f64 {
        self.sqnr_db[k] / self.n.max(1) as f64
    }
}

/// Samples `start..` as one input of the model's shape `want`: a model compiled for a batch of B takes B
/// samples at once (the last batch padded with copies of its last sample). Returns the input and how
/// many samples it really holds.
fn batch_input(data: &Dataset, start: usize, want: &[usize]) -> Result<(Tensor, usize)> {
    let path = |i: usize| data.items[i].0.display().to_string();
    let batch = want.first().copied().unwrap_or(1);
    if batch <= 1 {
        return Ok((fit_input(data.load(start)?, want, &path(start))?, 1));
    }
    let real = batch.min(data.items.len() - start);
    let samples = (0..batch).map(|j| start + j.min(real - 1)).map(|i| Ok((data.load(i)?, path(i)))).collect::<Result<_>>()?;
    Ok((stack_samples(samples, want)?, real))
}

/// Runs every graph on every sample (graph 0 is the reference for agreement), a batch at a time when the
/// model was compiled for one.
pub fn evaluate_many(graphs: &[&Exec], data: &Dataset, label_offset: i64, mut progress: impl FnMut(usize, usize)) -> Result<Comparison> {
    let g0 = graphs.first().context("no graphs")?.graph();
    let input = g0.inputs().first().copied().context("the model has no inputs")?;
    let want = g0.ty(input).shape().context("input shape unknown")?.to_vec();
    let k = graphs.len();
    let mut c = Comparison { n: 0, top1: vec![0; k], top5: vec![0; k], agree: vec![0; k], sqnr_db: vec![0.0; k] };
    let rows = want.first().copied().unwrap_or(1).max(1);
    let mut start = 0;
    while start < data.items.len() {
        let (x, real) = batch_input(data, start, &want)?;
        let (mut ref_tops, mut ref_scores) = (vec![0; real], vec![vec![]; real]);
        for (j, g) in graphs.iter().enumerate() {
            let out = g.run(vec![x.clone()]).with_context(|| format!("running on {}", data.items[start].0.display()))?;
            let all = scores(&out[0])?;
            if all.len() % rows != 0 {
                bail!("the output's {} scores do not split into the batch's {rows} samples", all.len());
            }
            for (r, s) in all.chunks(all.len() / rows).take(real).enumerate() {
                let (path, label) = &data.items[start + r];
                let l = label + label_offset;
                if l < 0 || l as usize >= s.len() {
                    bail!("{}: label {l} is outside the model's {} classes", path.display(), s.len());
                }
                let rank = rank_of(s, l as usize);
                c.top1[j] += (rank == 0) as usize;
                c.top5[j] += (rank < 5) as usize;
                let top = argmax(s);
                if j == 0 {
                    ref_tops[r] = top;
                    ref_scores[r] = s.to_vec();
                }
                c.agree[j] += (top == ref_tops[r]) as usize;
                c.sqnr_db[j] += sqnr_db(s, &ref_scores[r]);
            }
        }
        c.n += real;
        start += real;
        progress(start, data.items.len());
    }
    Ok(c)
}
