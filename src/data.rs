//! Evaluation and calibration data: folders of preprocessed .npy samples, or images preprocessed the way
//! the model was trained (resize short side, center crop, scale, mean/std, layout).
use crate::npy::read_npy;
use anyhow::{anyhow, bail, Context, Result};
use ndarray::{ArrayD, IxDyn};
use qcc_ir::Tensor;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub resize: Option<u32>,
    pub crop: Option<u32>,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub nchw: bool,
}

fn parse_num(s: &str) -> Result<f32> {
    match s.split_once('/') {
        Some((a, b)) => Ok(a.trim().parse::<f32>()? / b.trim().parse::<f32>()?),
        None => Ok(s.trim().parse()?),
    }
}

fn parse3(s: &str) -> Result<[f32; 3]> {
    let v: Vec<f32> = s.split(':').map(parse_num).collect::<Result<_>>()?;
    match v.as_slice() {
        [x] => Ok([*x; 3]),
        [a, b, c] => Ok([*a, *b, *c]),
        _ => bail!("expected one value or three separated by ':'"),
    }
}

impl Preprocess {
    /// Parses `resize=256,crop=224,scale=1/255,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,layout=nchw`.
    pub fn parse(spec: &str) -> Result<Preprocess> {
        let mut p = Preprocess { resize: None, crop: None, scale: 1.0 / 255.0, mean: [0.0; 3], std: [1.0; 3], nchw: true };
        for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| anyhow!("--preprocess: `{part}` is not KEY=VALUE"))?;
            let ctx = || format!("--preprocess: bad value in `{part}`");
            match k {
                "resize" => p.resize = Some(v.parse().with_context(ctx)?),
                "crop" => p.crop = Some(v.parse().with_context(ctx)?),
                "scale" => p.scale = parse_num(v).with_context(ctx)?,
                "mean" => p.mean = parse3(v).with_context(ctx)?,
                "std" => p.std = parse3(v).with_context(ctx)?,
                "layout" => {
                    p.nchw = match v {
                        "nchw" => true,
                        "nhwc" => false,
                        _ => bail!("--preprocess: layout must be nchw or nhwc"),
                    }
                }
                _ => bail!("--preprocess: unknown key `{k}` (resize, crop, scale, mean, std, layout)"),
            }
        }
        if p.std.contains(&0.0) {
            bail!("--preprocess: std must not be 0");
        }
        Ok(p)
    }

    /// Loads and preprocesses one image into a [1, 3, H, W] (or [1, H, W, 3]) f32 tensor.
    pub fn load(&self, path: &Path) -> Result<Tensor> {
        let img = image::open(path).with_context(|| format!("cannot read image {}", path.display()))?.to_rgb8();
        let img = match self.resize {
            Some(short) => {
                let (w, h) = img.dimensions();
                // Short side to `short`, long side truncated, as torchvision's Resize does.
                let (nw, nh) = if w <= h {
                    (short, (h as u64 * short as u64 / w as u64) as u32)
                } else {
                    ((w as u64 * short as u64 / h as u64) as u32, short)
                };
                image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle)
            }
            None => img,
        };
        let img = match self.crop {
            Some(c) => {
                let (w, h) = img.dimensions();
                if c > w || c > h {
                    bail!("{}: crop {c} is larger than the resized image {w}x{h}", path.display());
                }
                let (x, y) = (((w - c) as f32 / 2.0).round() as u32, ((h - c) as f32 / 2.0).round() as u32);
                image::imageops::crop_imm(&img, x, y, c, c).to_image()
            }
            None => img,
        };
        let (w, h) = (img.width() as usize, img.height() as usize);
        let shape = if self.nchw { vec![1, 3, h, w] } else { vec![1, h, w, 3] };
        let mut out = ArrayD::<f32>::zeros(IxDyn(&shape));
        for (x, y, px) in img.enumerate_pixels() {
            for c in 0..3 {
                let v = (px[c] as f32 * self.scale - self.mean[c]) / self.std[c];
                let idx = if self.nchw { [0, c, y as usize, x as usize] } else { [0, y as usize, x as usize, c] };
                out[IxDyn(&idx)] = v;
            }
        }
        Ok(Tensor::F32(out))
    }
}

/// `filename,label` rows (a header line and further columns are allowed).
pub fn read_labels(path: &Path) -> Result<Vec<(String, i64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read labels {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut cols = line.splitn(3, ',');
        let (Some(f), Some(l)) = (cols.next(), cols.next()) else { bail!("{}:{}: expected filename,label", path.display(), i + 1) };
        match l.trim().parse::<i64>() {
            Ok(l) => rows.push((f.trim().to_string(), l)),
            Err(_) if i == 0 => continue,
            Err(_) => bail!("{}:{}: label `{l}` is not an integer", path.display(), i + 1),
        }
    }
    if rows.is_empty() {
        bail!("{}: no labeled samples", path.display());
    }
    Ok(rows)
}

/// A labeled data set: sample files and how to turn one into the model's input.
pub struct Dataset {
    pub items: Vec<(PathBuf, i64)>,
    pub preprocess: Option<Preprocess>,
}

impl Dataset {
    /// A folder of .npy samples with `labels.csv` inside.
    pub fn npy_dir(dir: &Path) -> Result<Dataset> {
        let labels = read_labels(&dir.join("labels.csv"))?;
        Ok(Dataset { items: labels.into_iter().map(|(f, l)| (dir.join(f), l)).collect(), preprocess: None })
    }

    pub fn images(dir: &Path, labels: &Path, pre: Preprocess) -> Result<Dataset> {
        let labels = read_labels(labels)?;
        Ok(Dataset { items: labels.into_iter().map(|(f, l)| (dir.join(f), l)).collect(), preprocess: Some(pre) })
    }

    /// Keeps samples `offset .. offset + limit`.
    pub fn window(mut self, offset: usize, limit: Option<usize>) -> Dataset {
        let end = limit.map_or(self.items.len(), |l| (offset + l).min(self.items.len()));
        self.items = self.items.get(offset.min(end)..end).map(|s| s.to_vec()).unwrap_or_default();
        self
    }

    pub fn load(&self, i: usize) -> Result<Tensor> {
        let path = &self.items[i].0;
        match &self.preprocess {
            Some(p) => p.load(path),
            None => read_npy(path),
        }
    }
}

/// Fits a sample to the input shape: a sample without the leading batch axis of 1 gets one.
pub fn fit_input(t: Tensor, want: &[usize], what: &str) -> Result<Tensor> {
    if t.shape() == want {
        return Ok(t);
    }
    if want.first() == Some(&1) && t.shape() == &want[1..] {
        return Ok(qcc_ir::map_tensor!(t, a => a.insert_axis(ndarray::Axis(0))));
    }
    bail!("{what}: shape {:?} does not match the model input {:?}", t.shape(), want)
}

/// The shape of one item of a batch of shape `want`: [1, want[1..]].
fn one_item(want: &[usize]) -> Vec<usize> {
    std::iter::once(1).chain(want.iter().skip(1).copied()).collect()
}

/// Single samples (each with the path it came from, fitted to one item) stacked into one input of shape
/// `want` (a model compiled for a batch).
pub fn stack_samples(samples: Vec<(Tensor, String)>, want: &[usize]) -> Result<Tensor> {
    let one = one_item(want);
    let mut dtype = None;
    let mut bytes = Vec::new();
    for (t, what) in samples {
        let t = fit_input(t, &one, &what)?;
        if *dtype.get_or_insert(t.dtype()) != t.dtype() {
            bail!("{what}: the samples of one batch have different element types");
        }
        bytes.extend(t.to_le_bytes());
    }
    Tensor::from_le_bytes(dtype.unwrap_or(qcc_ir::DType::F32), want, &bytes)
        .ok_or_else(|| anyhow!("the samples do not fill a batch of {want:?}"))
}

/// For calibration: like [`fit_input`], and a single sample for a model compiled for a batch of B is
/// repeated B times. Every statistic calibration gathers (ranges, histograms, means, input sums) is then
/// the batch-1 one, only counted B times.
pub fn fit_calibration_input(t: Tensor, want: &[usize], what: &str) -> Result<Tensor> {
    let batch = want.first().copied().unwrap_or(1);
    if batch > 1 && fit_input(t.clone(), &one_item(want), what).is_ok() {
        return stack_samples(vec![(t, what.to_string()); batch], want);
    }
    fit_input(t, want, what)
}
