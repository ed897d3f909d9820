//! Calibration: finding the samples, running them through the observed graph once, and producing
//! quantized graphs for any scheme or range method from that single pass.
use crate::data::{fit_calibration_input, Preprocess};
use anyhow::{anyhow, bail, Context, Result};
use qcc_ir::{Graph, Op, Tensor, ValueId};
use qcc_passes::{quant_pipeline, InputGram, Instrumentation, OptLevel, PassContext, PassManager, QuantConfig};
use qcc_runtime::observe::Observer;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const IMAGE_EXTS: &[&str] = &["jpg", "jpeg", "png"];

/// Calibration samples: per sample, one file per graph input.
pub struct CalibSet {
    pub samples: Vec<Vec<PathBuf>>,
    pub preprocess: Option<Preprocess>,
    /// Samples set aside by [`CalibSet::hold_back`]: never calibrated on, only measured with.
    pub held_back: Vec<Vec<PathBuf>>,
}

fn sorted_files(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read calibration folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e.to_ascii_lowercase().as_str())))
        .collect();
    v.sort();
    Ok(v)
}

impl CalibSet {
    /// `path` is a folder of .npy samples (or images, with `preprocess`); for several inputs, one
    /// subfolder per input name with the same number of files. At most `limit` samples, in name order.
    pub fn open(path: &Path, input_names: &[String], preprocess: Option<Preprocess>, limit: Option<usize>) -> Result<CalibSet> {
        let exts: &[&str] = if preprocess.is_some() { IMAGE_EXTS } else { &["npy"] };
        let kind = if preprocess.is_some() { "image" } else { ".npy" };
        let per_input: Vec<Vec<PathBuf>> = if input_names.len() > 1 {
            input_names
                .iter()
                .map(|n| {
                    let d = path.join(n);
                    if !d.is_dir() {
                        bail!("calibration for a model with several inputs needs one subfolder per input: {} is missing", d.display());
                    }
                    sorted_files(&d, exts)
                })
                .collect::<Result<_>>()?
        } else {
            vec![sorted_files(path, exts)?]
        };
        let n = per_input[0].len();
        if n == 0 {
            bail!("no {kind} calibration samples in {}", path.display());
        }
        if per_input.iter().any(|v| v.len() != n) {
            bail!("the input subfolders of {} hold different numbers of samples", path.display());
        }
        let n = limit.map_or(n, |l| l.min(n));
        let samples = (0..n).map(|i| per_input.iter().map(|v| v[i].clone()).collect()).collect();
        Ok(CalibSet { samples, preprocess, held_back: vec![] })
    }

    /// Moves the last `k` samples out of calibration into `held_back` (at least one stays).
    pub fn hold_back(&mut self, k: usize) -> Result<()> {
        if k == 0 || k >= self.samples.len() {
            bail!(
                "cannot hold back {k} of {} calibration samples: at least one must be held back and one calibrated on",
                self.samples.len()
            );
        }
        self.held_back = self.samples.split_off(self.samples.len() - k);
        Ok(())
    }

    pub fn load(&self, i: usize, g: &Graph) -> Result<Vec<Tensor>> {
        self.load_paths(&self.samples[i], g)
    }

    /// One sample's files (one per graph input) as `g`'s inputs.
    pub fn load_paths(&self, paths: &[PathBuf], g: &Graph) -> Result<Vec<Tensor>> {
        paths
            .iter()
            .zip(g.inputs())
            .map(|(p, v)| {
                let t = match &self.preprocess {
                    Some(pre) => pre.load(p)?,
                    None => crate::npy::read_npy(p)?,
                };
                if t.dtype() != qcc_ir::DType::F32 {
                    bail!("{}: calibration data must be float32, is {}", p.display(), t.dtype());
                }
                fit_calibration_input(t, g.ty(*v).shape().unwrap_or(&[]), &p.display().to_string())
            })
            .collect()
    }
}

/// A float graph with observers and the statistics they gathered: every quantized variant comes from it.
pub struct Calibrated {
    pub graph: Graph,
    pub observers: HashMap<ValueId, Observer>,
    /// Per observed value of rank >= 2, the mean of each channel (axis 1).
    pub channel_means: HashMap<ValueId, Vec<f32>>,
    pub level: OptLevel,
    /// Passes run so far (dump numbering continues from here).
    pub passes_run: usize,
    /// With equalization, the float graph just before it (the report compares weight ranges).
    pub before_equalize: Option<Graph>,
    /// Per conv and gemm output, sums over its input patches (round-weights), when asked for.
    pub input_grams: std::sync::Arc<HashMap<ValueId, InputGram>>,
    /// Activation ranges chosen by range search (`search_ranges`), for the scheme it was made for.
    pub searched: Option<crate::range_search::SearchedRanges>,
}

/// What calibration does besides observing ranges.
#[derive(Clone, Copy, Default)]
pub struct CalibOptions<'a> {
    /// Equalize first (at -O2), weighed for this scheme.
    pub equalize: Option<&'a QuantConfig>,
    /// Gather the input sums round-weights rounds with.
    pub input_grams: bool,
    /// The moving-average observer's constant.
    pub ema_c: f32,
}

/// One sample's observed tensors, by the value each observe watches, and its input sums by conv output.
type Observed = (Vec<(ValueId, ndarray::ArrayD<f32>)>, Vec<(ValueId, InputGram<f32>)>);

/// Calibration samples equalize's per-channel activation statistics come from.
const RANGE_SAMPLES: usize = 32;

/// Per-channel ranges of conv outputs and moments of conv inputs and outputs (PassContext's
/// channel_ranges and channel_moments).
type ChannelStats = (HashMap<ValueId, Vec<(f32, f32)>>, HashMap<ValueId, Vec<(f32, f32)>>);

/// One channel's min, max, sum, sum of squares and count.
type Lane = (f32, f32, f64, f64, u64);

/// One tensor's per-channel (axis 1) statistics.
fn lane_stats(a: &ndarray::ArrayD<f32>) -> Vec<Lane> {
    a.axis_iter(ndarray::Axis(1))
        .map(|lane| {
            lane.iter().fold((f32::INFINITY, f32::NEG_INFINITY, 0.0, 0.0, 0), |(lo, hi, s, q, n), x| {
                (lo.min(*x), hi.max(*x), s + *x as f64, q + (*x as f64) * (*x as f64), n + 1)
            })
        })
        .collect()
}

/// Over the first `samples` calibration samples: per conv output of `g`, each channel's (min, max);
/// per conv output and data input, each channel's (mean, mean square).
fn channel_stats(g: &Graph, set: &CalibSet, samples: usize) -> Result<ChannelStats> {
    let convs: Vec<qcc_ir::NodeId> = g.node_ids().filter(|n| matches!(g.node(*n).op, Op::Conv { .. })).collect();
    let outputs: std::collections::HashSet<ValueId> = convs.iter().map(|n| g.node(*n).output).collect();
    let wanted: std::collections::HashSet<ValueId> = convs.iter().map(|n| g.node(*n).inputs[0]).chain(outputs.iter().copied()).collect();
    let mut acc: HashMap<ValueId, Vec<Lane>> = HashMap::new();
    // Per sample, each wanted value's lane statistics; merged in sample order.
    let sample = |i: usize| -> Result<Vec<(ValueId, Vec<Lane>)>> {
        let inputs = set.load(i, g)?;
        let mut seen: Vec<_> = g
            .inputs()
            .iter()
            .zip(&inputs)
            .filter_map(|(v, t)| t.as_f32().filter(|a| wanted.contains(v) && a.ndim() >= 2).map(|a| (*v, lane_stats(a))))
            .collect();
        qcc_runtime::run_observed(g, inputs, |n, t| {
            let v = g.node(n).output;
            if let (true, Some(a)) = (wanted.contains(&v), t.as_f32()) {
                if a.ndim() >= 2 {
                    seen.push((v, lane_stats(a)));
                }
            }
        })
        .with_context(|| format!("gathering activation ranges on {}", set.samples[i][0].display()))?;
        Ok(seen)
    };
    crate::in_order(samples.min(set.samples.len()), sample, |_, seen| {
        for (v, r) in seen {
            let e = acc.entry(v).or_insert_with(|| vec![(f32::INFINITY, f32::NEG_INFINITY, 0.0, 0.0, 0); r.len()]);
            for (a, b) in e.iter_mut().zip(r) {
                *a = (a.0.min(b.0), a.1.max(b.1), a.2 + b.2, a.3 + b.3, a.4 + b.4);
            }
        }
        Ok(())
    })?;
    let mut ranges = HashMap::new();
    let mut moments = HashMap::new();
    for (v, e) in acc {
        if outputs.contains(&v) {
            ranges.insert(v, e.iter().map(|a| (a.0, a.1)).collect());
        }
        moments.insert(v, e.iter().map(|a| ((a.2 / a.4.max(1) as f64) as f32, (a.3 / a.4.max(1) as f64) as f32)).collect());
    }
    Ok((ranges, moments))
}

/// Runs the float passes and insert-observers, then every calibration sample through the graph. With
/// `equalize` (the scheme it is weighed for), -O2 equalizes first, from statistics of a few samples.
pub fn calibrate(
    mut g: Graph,
    level: OptLevel,
    opts: CalibOptions,
    set: &CalibSet,
    inst: &Instrumentation,
    diag: &mut dyn Write,
) -> Result<Calibrated> {
    let equalize = opts.equalize;
    crate::driver::check_pass_names(inst)?;
    let (mut before, _) = quant_pipeline(level, equalize.is_some(), false, false);
    // Disabled passes leave now, so the dump numbering counts the passes that run.
    before.retain(|p| !inst.disable.contains(p.name()));
    let n_before = before.len();
    // Run in two parts around equalize, to keep the graph it starts from.
    let split = before.iter().position(|p| p.name() == "equalize").unwrap_or(n_before);
    let rest = before.split_off(split);
    // Equalize weighs its scalings under the scheme the model will be quantized with.
    let mut cx = PassContext { quant: equalize.cloned().unwrap_or_default(), ..Default::default() };
    PassManager::new(before, inst.clone()).run(&mut g, &mut cx, diag).map_err(|f| crate::driver::pass_failure(&f))?;
    let before_equalize = (split < n_before).then(|| g.clone());
    if before_equalize.is_some() {
        (cx.channel_ranges, cx.channel_moments) = channel_stats(&g, set, RANGE_SAMPLES)?;
    }
    let mut pm = PassManager::new(rest, inst.clone());
    pm.first_index = split;
    pm.run(&mut g, &mut cx, diag).map_err(|f| crate::driver::pass_failure(&f))?;
    let observed: HashMap<qcc_ir::NodeId, ValueId> =
        g.node_ids().filter(|n| g.node(*n).op == Op::Observe).map(|n| (n, g.node(n).output)).collect();
    let mut observers: HashMap<ValueId, Observer> = observed.values().map(|v| (*v, Observer::with_ema(opts.ema_c))).collect();
    let mut sums: HashMap<ValueId, (Vec<f64>, u64)> = HashMap::new();
    let bar = progress_bar(set.samples.len(), "calibrating");
    // Per value, the convs and gemms that read it as data (their input sums come from it; merged in
    // sample order too).
    let mut readers: HashMap<ValueId, Vec<qcc_ir::NodeId>> = HashMap::new();
    if opts.input_grams {
        for n in g.node_ids().filter(|n| matches!(g.node(*n).op, Op::Conv { .. } | Op::Gemm { .. })) {
            readers.entry(g.node(n).inputs[0]).or_default().push(n);
        }
    }
    let grams_of = |v: ValueId, t: &Tensor, out: &mut Vec<(ValueId, InputGram<f32>)>| {
        if let (Some(ns), Some(a)) = (readers.get(&v), t.as_f32()) {
            out.extend(ns.iter().filter_map(|n| InputGram::of(&g, *n, a).map(|s| (g.node(*n).output, s))));
        }
    };
    // Samples run through the graph on every core; their observed tensors reach the observers in sample
    // order, so the statistics (the moving average above all) equal those of one sequential pass.
    let sample = |i: usize| -> Result<Observed> {
        let (mut seen, mut grams) = (Vec::new(), Vec::new());
        let inputs = set.load(i, &g)?;
        for (v, t) in g.inputs().iter().zip(&inputs) {
            grams_of(*v, t, &mut grams);
        }
        qcc_runtime::run_observed(&g, inputs, |node, t| {
            if let (Some(v), Some(a)) = (observed.get(&node), t.as_f32()) {
                seen.push((*v, a.clone()));
            }
            grams_of(g.node(node).output, t, &mut grams);
        })
        .with_context(|| format!("calibrating on {}", set.samples[i][0].display()))?;
        Ok((seen, grams))
    };
    let mut input_grams: HashMap<ValueId, Option<InputGram>> = HashMap::new();
    crate::in_order(set.samples.len(), sample, |_, (seen, grams)| {
        for (v, s) in grams {
            InputGram::accumulate(input_grams.entry(v).or_default(), &s);
        }
        for (v, a) in seen {
            if a.ndim() >= 2 {
                let c = a.shape()[1];
                let (s, k) = sums.entry(v).or_insert_with(|| (vec![0.0; c], 0));
                for (ch, lane) in a.axis_iter(ndarray::Axis(1)).enumerate() {
                    s[ch] += lane.iter().map(|x| *x as f64).sum::<f64>();
                }
                *k += (a.len() / c.max(1)) as u64;
            }
            if let Some(o) = observers.get_mut(&v) {
                match a.as_slice() {
                    Some(s) => o.observe(s),
                    None => o.observe(&a.iter().copied().collect::<Vec<_>>()),
                }
            }
        }
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();
    let channel_means = sums.into_iter().map(|(v, (s, n))| (v, s.iter().map(|x| (x / n.max(1) as f64) as f32).collect())).collect();
    let input_grams = std::sync::Arc::new(input_grams.into_iter().filter_map(|(v, t)| Some((v, t?))).collect());
    Ok(Calibrated { graph: g, observers, channel_means, level, passes_run: n_before, before_equalize, input_grams, searched: None })
}

/// A progress bar over `len` samples on a terminal's stderr (hidden otherwise), with samples/s.
pub(crate) fn progress_bar(len: usize, what: &str) -> indicatif::ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len as u64);
    let template = format!("{what} {{bar:30}} {{pos}}/{{len}} samples, {{per_sec}}, eta {{eta}}");
    // A label that does not make a template keeps indicatif's default style rather than failing.
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        b.set_style(style);
    }
    b
}

impl Calibrated {
    /// Chooses each 8-bit activation's range for `cfg` by range search on the first `samples`
    /// calibration samples (`finish` then uses them for configurations with the same activation scheme).
    pub fn search_ranges(&mut self, cfg: &QuantConfig, set: &CalibSet, samples: usize) -> Result<()> {
        self.searched = Some(crate::range_search::search(&self.graph, &self.observers, cfg, set, samples)?);
        Ok(())
    }

    /// The quantized graph for one scheme: assign-qparams, place-qdq, fold-qdq, canonicalize.
    pub fn finish(&self, cfg: &QuantConfig, inst: &Instrumentation, diag: &mut dyn Write) -> Result<Graph> {
        cfg.check_names(&self.graph).map_err(|e| anyhow!(e))?;
        let (_, after) = quant_pipeline(self.level, false, cfg.round_weights, cfg.bias_correct);
        let mut pm = PassManager::new(after, inst.clone());
        pm.first_index = self.passes_run;
        let mut cx = PassContext {
            quant: cfg.clone(),
            calib: self.observers.clone(),
            channel_means: self.channel_means.clone(),
            input_grams: self.input_grams.clone(),
            ranges: self.searched.as_ref().filter(|s| s.applies(cfg)).map(|s| s.ranges()).unwrap_or_default(),
            ..Default::default()
        };
        let mut g = self.graph.clone();
        pm.run(&mut g, &mut cx, diag).map_err(|f| crate::driver::pass_failure(&f))?;
        Ok(g)
    }
}

/// Parses the scheme flags into a configuration.
pub fn quant_config(weights: &str, activations: &str, act_type: &str, method: &str) -> Result<QuantConfig> {
    let weights = Some(qcc_passes::WeightScheme::parse(weights).map_err(|e| anyhow!("--weights: {e}"))?);
    let act_symmetric = match activations {
        "asym" => false,
        "sym" => true,
        _ => bail!("--activations must be asym or sym"),
    };
    let act_type = match act_type {
        "u8" => qcc_ir::DType::U8,
        "i8" => qcc_ir::DType::I8,
        "i16" => qcc_ir::DType::I16,
        _ => bail!("--act-type must be u8, i8 or i16"),
    };
    if act_symmetric && act_type == qcc_ir::DType::U8 {
        bail!("--activations sym needs a signed --act-type (i8 or i16)");
    }
    let method = qcc_runtime::observe::RangeMethod::parse(method).map_err(|e| anyhow!("--calib-method: {e}"))?;
    Ok(QuantConfig {
        weights,
        act_type,
        act_symmetric,
        method,
        bias_correct: false,
        round_weights: false,
        keep_float: vec![],
        int16: vec![],
    })
}
