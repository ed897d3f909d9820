//! The `qcc` command line: compile (`qcc MODEL ...`), `qcc run`, `qcc eval`.
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use qcc::calib::{calibrate, CalibOptions, CalibSet, Calibrated};
use qcc::data::{fit_input, Dataset, Preprocess};
use qcc::driver::{compile, load_model, parse_input_shape};
use qcc::exec::{target_isa, Exec};
use qcc::fsutil::write_atomic;
use qcc::mixed::Metric;
use qcc::npy::{read_npy, write_npy};
use qcc_frontend::ImportOptions;
use qcc_ir::{print_graph, Graph, PrintOptions};
use qcc_passes::{Instrumentation, OptLevel};
use std::io::Write;
use std::path::PathBuf;

/// The --calib-method default.
const DEFAULT_METHOD: &str = "percentile:99.999";

/// Samples range search runs on at -O2 without --range-search.
const DEFAULT_RANGE_SEARCH: usize = 16;

/// qcc: an ahead-of-time quantizing compiler for ONNX models.
///
/// Compile: `qcc MODEL [-O0|-O1|-O2] [--emit qir] [-o OUT]` prints the optimized IR (to stdout without -o).
/// Run a model: `qcc run MODEL --input x.npy`. Measure accuracy: `qcc eval MODEL --npy DIR`.
#[derive(Parser)]
#[command(name = "qcc", version, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    compile: CompileCmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a model on .npy inputs and write or print its outputs.
    Run(RunCmd),
    /// Measure top-1/top-5 accuracy on a labeled data set.
    Eval(EvalCmd),
    /// Measure latency of the compiled model (median, p10, p90).
    Bench(BenchCmd),
    /// Per-layer quantization error of an --int8 model against its float form (needs --calib).
    Analyze(AnalyzeCmd),
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// qcc's textual IR (.qir), which `qcc` reads back.
    Qir,
    /// ONNX (opset 17); a quantized model is written in QDQ form (QuantizeLinear/DequantizeLinear around
    /// float ops), which ONNX Runtime loads.
    Onnx,
    /// An ELF object file with NAME_run and NAME_scratch_bytes, and NAME.h beside it (link with
    /// libqcc_runtime.a).
    Obj,
}

/// Options shared by every command that loads and compiles a model.
#[derive(Args, Clone)]
struct ModelArgs {
    /// The model: an ONNX file, or a .qir file in qcc's text form.
    model: Option<PathBuf>,
    /// Optimization level: 0 = the imported graph as is, 1 = canonicalize and fuse, 2 = also the
    /// quantization-oriented passes.
    #[arg(short = 'O', default_value = "1", value_parser = ["0", "1", "2"])]
    opt: String,
    /// Fix an input's shape (dynamic dimensions), e.g. --input-shape input=1,3,224,224. Repeatable.
    /// Without it, dynamic dimensions are set to 1 with a warning.
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    input_shape: Vec<String>,
    /// Freeze a graph input to a constant from a .npy file (shape operands fed as inputs), e.g.
    /// --const-input shape=shape.npy. Repeatable.
    #[arg(long = "const-input", value_name = "NAME=FILE")]
    const_input: Vec<String>,
    /// Keep ops qcc does not support as opaque nodes (the model can be dumped, not run).
    #[arg(long)]
    allow_unsupported: bool,
    /// Print the IR after every pass (to stderr).
    #[arg(long)]
    print_after_all: bool,
    /// Print the IR after the named passes, e.g. --print-after=fold-batchnorm,fuse-activation.
    #[arg(long, value_delimiter = ',', value_name = "PASS")]
    print_after: Vec<String>,
    /// Print the IR before the named passes.
    #[arg(long, value_delimiter = ',', value_name = "PASS")]
    print_before: Vec<String>,
    /// Print the IR after every pass that changed it.
    #[arg(long)]
    print_after_change: bool,
    /// Write the IR before the pipeline and after every pass to DIR/NN-pass.qir.
    #[arg(long, value_name = "DIR")]
    dump_dir: Option<PathBuf>,
    /// Stop the pipeline after this pass.
    #[arg(long, value_name = "PASS")]
    stop_after: Option<String>,
    /// Leave these passes out of the pipeline (e.g. --disable-pass fuse-residual,bias-correct), to see
    /// what each contributes.
    #[arg(long, value_delimiter = ',', value_name = "PASS")]
    disable_pass: Vec<String>,
    /// Print how long each pass took.
    #[arg(long)]
    time_passes: bool,
    /// Verify the IR after every pass (always on in debug builds).
    #[arg(long)]
    verify_each: bool,
    /// Quantize to integers (needs --calib).
    #[arg(long)]
    int8: bool,
    /// Dynamic quantization: int8 weights (per --weights), each conv/gemm input quantized to u8 at run
    /// time from its own range; no calibration. `qcc eval` with --int8 and --dynamic compares both.
    #[arg(long)]
    dynamic: bool,
    /// Calibration data: a folder of .npy samples (one subfolder per input for several inputs), or of
    /// images with --preprocess.
    #[arg(long, value_name = "PATH")]
    calib: Option<PathBuf>,
    /// Use at most N calibration samples (in file-name order).
    #[arg(long, value_name = "N")]
    calib_samples: Option<usize>,
    /// How activation ranges are chosen: minmax | meanstd[:k] | percentile[:p] | moving-average[:c] |
    /// entropy | mse | auto (per tensor, the lowest estimated error). `qcc eval` also takes `all`.
    #[arg(long, default_value = DEFAULT_METHOD, value_name = "METHOD")]
    calib_method: String,
    /// Choose the ranges of the activations that carry most of the error, among those the range methods
    /// give, by the error each alone causes in the float network's outputs on the first N calibration
    /// samples [default at -O2: 16; 0: off].
    #[arg(long, value_name = "N")]
    range_search: Option<usize>,
    /// Weight quantization: sym-per-channel | sym-per-tensor | asym-per-channel | asym-per-tensor.
    #[arg(long, default_value = "sym-per-channel", value_name = "SCHEME")]
    weights: String,
    /// Activation quantization: asym (zero point) or sym (zero point 0; needs a signed --act-type).
    #[arg(long, default_value = "asym", value_name = "KIND")]
    activations: String,
    /// Keep these ONNX nodes' weights float (comma-separated names; `qcc analyze` lists them).
    #[arg(long, value_name = "NODE,...", value_delimiter = ',')]
    keep_float: Vec<String>,
    /// Store these ONNX nodes' outputs as i16 instead of --act-type (comma-separated names).
    #[arg(long, value_name = "NODE,...", value_delimiter = ',')]
    int16: Vec<String>,
    /// `auto`: promote the most sensitive layers up a ladder (int16 output, then float weights for conv and
    /// gemm) until top-1 on --tune (or, without it, top-1 estimated on held-back calibration samples) is
    /// within --max-drop of float.
    #[arg(long, value_name = "auto", value_parser = ["auto"])]
    mixed_precision: Option<String>,
    /// Top-1 points auto mixed precision may lose against float.
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    max_drop: f64,
    /// Labeled tuning set for --mixed-precision auto: a folder with labels.csv (filename,label) and the
    /// samples (.npy, or images with --preprocess). Never the set you evaluate on.
    #[arg(long, value_name = "DIR")]
    tune: Option<PathBuf>,
    /// Added to --tune's labels (1 for 1001-class models).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    tune_label_offset: i64,
    /// Auto mixed precision without --tune: hold back the last N calibration samples (not calibrated
    /// on) to measure with [default: a quarter of them].
    #[arg(long, value_name = "N")]
    holdout: Option<usize>,
    /// Activation storage type: u8 | i8 | i16.
    #[arg(long, default_value = "u8", value_name = "TYPE")]
    act_type: String,
    /// Correct each conv/gemm bias for the mean shift its weight quantization causes (with --int8; on by
    /// default at -O2).
    #[arg(long, conflicts_with = "no_bias_correction")]
    bias_correction: bool,
    /// Do not run bias correction at -O2.
    #[arg(long)]
    no_bias_correction: bool,
    /// Round int8 weights to minimize each layer's output error on the calibration data (GPTQ), not
    /// to nearest: on by default with --int8 at -O2.
    #[arg(long, conflicts_with = "no_round_weights")]
    round_weights: bool,
    /// Round int8 weights to nearest at -O2.
    #[arg(long)]
    no_round_weights: bool,
    /// Cross-layer equalization with high-bias absorption: on by default with --int8 at -O2, where
    /// calibration samples let it keep only the scalings that lower the estimated quantization noise
    /// under the chosen scheme; with --dynamic (no samples: every pair is fully equalized) only if asked.
    #[arg(long, conflicts_with = "no_equalize")]
    equalize: bool,
    /// Do not run cross-layer equalization at -O2.
    #[arg(long)]
    no_equalize: bool,
    /// Image preprocessing for --calib and --images, e.g.
    /// resize=256,crop=224,scale=1/255,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,layout=nchw
    #[arg(long, value_name = "SPEC")]
    preprocess: Option<String>,
    /// Run with the reference interpreter instead of JIT-compiled code (run, eval, bench).
    #[arg(long)]
    interp: bool,
    /// Kernels to generate code for: native | x86-64-v4 (AVX-512 VNNI) | x86-64-v3 (AVX2) | x86-64.
    #[arg(long, default_value = "native", value_name = "CPU")]
    target_cpu: String,
    /// Threads the compiled kernels use (0 = all cores). Results are identical for every count.
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// Prefix of the object file's symbols and of its header's macros (default: the output's file stem).
    #[arg(long, value_name = "NAME")]
    symbol_prefix: Option<String>,
}

#[derive(Args)]
struct CompileCmd {
    #[command(flatten)]
    m: ModelArgs,
    /// What to emit. Default: qir.
    #[arg(long, value_enum)]
    emit: Option<Emit>,
    /// Output file (written atomically). Without it the IR goes to stdout.
    #[arg(short = 'o', value_name = "OUT")]
    output: Option<PathBuf>,
    /// Print large constants as `elided BYTES HASH` (readable, but the text cannot be run).
    #[arg(long)]
    elide_constants: bool,
    /// With --int8: compare every quantized tensor with float on this many calibration samples and print
    /// the 5 worst layers (0 = skip; `qcc analyze` prints them all).
    #[arg(long, default_value_t = 2, value_name = "N")]
    analysis_samples: usize,
}

#[derive(Args)]
struct RunCmd {
    #[command(flatten)]
    m: ModelArgs,
    /// An input as [NAME=]FILE.npy; without names, inputs are taken in order. Repeatable.
    #[arg(long = "input", value_name = "[NAME=]FILE")]
    inputs: Vec<String>,
    /// Where to write an output, as [NAME=]FILE.npy. Without it, outputs are summarized on stdout.
    #[arg(long = "output", value_name = "[NAME=]FILE")]
    outputs: Vec<String>,
}

#[derive(Args)]
struct BenchCmd {
    #[command(flatten)]
    m: ModelArgs,
    /// Timed runs (after 5 warm-up runs).
    #[arg(long, default_value_t = 50)]
    iters: usize,
    /// An input .npy (default: deterministic pseudo-random values of the input's shape).
    #[arg(long = "input", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Also write the results as JSON.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// Print the time of each kernel and of the slowest steps (kernel calls) of the compiled model.
    #[arg(long)]
    profile: bool,
    /// How many steps --profile lists.
    #[arg(long, value_name = "N", default_value_t = 25)]
    profile_top: usize,
}

/// A statically quantized model: the calibrated float graph, its samples, the quantized graph and what
/// auto mixed precision decided (empty without it).
struct Quantized {
    cal: Calibrated,
    set: CalibSet,
    graph: Graph,
    log: Vec<String>,
}

#[derive(Args)]
struct AnalyzeCmd {
    #[command(flatten)]
    m: ModelArgs,
    /// Calibration samples to compare on (the first N of --calib).
    #[arg(long, default_value_t = 8)]
    samples: usize,
    /// Of those, measure each layer's sensitivity (network-output SQNR with only that layer quantized)
    /// on the first N: one partial network run per layer and sample (0 = skip).
    #[arg(long, default_value_t = 2, value_name = "N")]
    sensitivity_samples: usize,
    /// Also write the per-layer numbers as JSON.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report with charts.
    #[arg(long, value_name = "OUT.html")]
    report: Option<PathBuf>,
    /// The layer whose calibration histogram the report shows (default: the worst one).
    #[arg(long, value_name = "NAME")]
    report_layer: Option<String>,
}

#[derive(Args)]
struct EvalCmd {
    #[command(flatten)]
    m: ModelArgs,
    /// Folder of preprocessed .npy samples with labels.csv (filename,label).
    #[arg(long, value_name = "DIR", conflicts_with = "images")]
    npy: Option<PathBuf>,
    /// Folder of images (needs --labels and --preprocess).
    #[arg(long, value_name = "DIR", requires_all = ["labels", "preprocess"])]
    images: Option<PathBuf>,
    /// CSV of filename,label for --images.
    #[arg(long, value_name = "CSV")]
    labels: Option<PathBuf>,
    /// With --int8: evaluate every weight scheme (asym-per-tensor, sym-per-channel, asym-per-channel,
    /// activations only) from one calibration pass.
    #[arg(long, value_name = "all")]
    schemes: Option<String>,
    /// Added to every label (1 for 1001-class models whose class 0 is background).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    label_offset: i64,
    /// Skip the first N samples (e.g. those used for calibration).
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Evaluate at most N samples.
    #[arg(long)]
    limit: Option<usize>,
    /// Also write the results as JSON.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
}

impl ModelArgs {
    fn level(&self) -> OptLevel {
        match self.opt.as_str() {
            "0" => OptLevel::O0,
            "2" => OptLevel::O2,
            _ => OptLevel::O1,
        }
    }

    fn instrumentation(&self) -> Instrumentation {
        Instrumentation {
            print_after_all: self.print_after_all,
            print_after: self.print_after.iter().cloned().collect(),
            print_before: self.print_before.iter().cloned().collect(),
            print_after_change: self.print_after_change,
            dump_dir: self.dump_dir.clone(),
            stop_after: self.stop_after.clone(),
            time_passes: self.time_passes,
            verify: self.verify_each || cfg!(debug_assertions),
            disable: self.disable_pass.iter().cloned().collect(),
        }
    }

    fn load(&self) -> Result<Graph> {
        if self.range_search.is_some_and(|k| k > 0) && !self.int8 {
            bail!("--range-search chooses calibration ranges: it needs --int8 --calib");
        }
        let model = self.model.as_ref().ok_or_else(|| anyhow!("no model given (see qcc --help)"))?;
        let mut opts = ImportOptions { allow_unsupported: self.allow_unsupported, ..Default::default() };
        for s in &self.input_shape {
            let (n, d) = parse_input_shape(s)?;
            opts.input_shapes.insert(n, d);
        }
        for s in &self.const_input {
            let (n, f) = s.split_once('=').ok_or_else(|| anyhow!("--const-input {s:?}: expected NAME=FILE.npy"))?;
            opts.const_inputs.insert(n.to_string(), read_npy(std::path::Path::new(f))?);
        }
        let loaded = load_model(model, &opts)?;
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        Ok(loaded.graph)
    }

    fn preprocess(&self) -> Result<Option<Preprocess>> {
        self.preprocess.as_deref().map(Preprocess::parse).transpose()
    }

    fn quant_config(&self, method: &str) -> Result<qcc_passes::QuantConfig> {
        let mut cfg = qcc::calib::quant_config(&self.weights, &self.activations, &self.act_type, method)?;
        cfg.bias_correct = (self.bias_correction || self.level() == OptLevel::O2) && !self.no_bias_correction;
        cfg.round_weights = self.round_weights();
        cfg.keep_float = self.keep_float.clone();
        cfg.int16 = self.int16.clone();
        Ok(cfg)
    }

    /// Whether round-weights runs (and calibration gathers its input sums).
    fn round_weights(&self) -> bool {
        (self.round_weights || self.level() == OptLevel::O2) && !self.no_round_weights
    }

    /// The --calib-method range method.
    fn range_method(&self) -> Result<qcc_runtime::observe::RangeMethod> {
        qcc_runtime::observe::RangeMethod::parse(&self.calib_method).map_err(|e| anyhow!(e))
    }

    /// The calibration samples for `g`'s inputs.
    fn calib_set(&self, g: &Graph) -> Result<CalibSet> {
        let path = self.calib.as_ref().ok_or_else(|| anyhow!("--int8 needs calibration data: --calib PATH"))?;
        let names: Vec<String> = g.inputs().iter().map(|v| g.value(*v).name.clone().unwrap_or_default()).collect();
        let mut set = CalibSet::open(path, &names, self.preprocess()?, self.calib_samples)?;
        if self.mixed_precision.is_some() && self.tune.is_none() {
            let n = set.samples.len();
            set.hold_back(self.holdout.unwrap_or(n / 4))?;
            eprintln!(
                "mixed precision: {} calibration samples held back to measure with, {} calibrated on",
                n - set.samples.len(),
                set.samples.len()
            );
        } else if self.holdout.is_some() {
            bail!("--holdout is for --mixed-precision auto without --tune");
        }
        Ok(set)
    }

    /// Runs the float passes and the calibration pass over `set` (for --int8).
    fn calibrate(&self, g: Graph, set: &CalibSet) -> Result<Calibrated> {
        let ema = match qcc_runtime::observe::RangeMethod::parse(&self.calib_method) {
            Ok(qcc_runtime::observe::RangeMethod::MovingAverage(c)) => c,
            _ => 0.01,
        };
        // Equalization is weighed for the --weights/--activations scheme (with --schemes all too).
        let scheme = if self.no_equalize { None } else { Some(self.quant_config("minmax")?) };
        let opts = CalibOptions { equalize: scheme.as_ref(), input_grams: self.round_weights(), ema_c: ema };
        let mut cal = calibrate(g, self.level(), opts, set, &self.instrumentation(), &mut std::io::stderr())?;
        // With `qcc eval --calib-method all` the search is its own row (cmd_eval).
        if let (Some(k), false) = (self.range_search(), self.calib_method == "all") {
            self.search_ranges(&mut cal, &self.quant_config(&self.calib_method)?, set, k)?;
        }
        Ok(cal)
    }

    /// Calibration samples range search runs on, if it runs: --range-search, else 16 at -O2.
    fn range_search(&self) -> Option<usize> {
        match self.range_search {
            Some(0) => None,
            Some(k) => Some(k),
            None => (self.level() == OptLevel::O2).then_some(DEFAULT_RANGE_SEARCH),
        }
    }

    /// Range search from `cfg`'s method over the first `k` samples, summarized on stderr.
    fn search_ranges(&self, cal: &mut Calibrated, cfg: &qcc_passes::QuantConfig, set: &CalibSet, k: usize) -> Result<()> {
        cal.search_ranges(cfg, set, k)?;
        let s = cal.searched.as_ref().ok_or_else(|| anyhow!("internal: range search left no result"))?;
        if std::env::var_os("QCC_DEBUG_RANGES").is_some() {
            for line in &s.log {
                eprintln!("range search: {line}");
            }
        }
        eprintln!("{}", s.summary());
        Ok(())
    }

    /// An executor for `g`: compiled code, or the interpreter with --interp.
    fn exec(&self, g: Graph) -> Result<Exec> {
        qcc_runtime::kernels::pool::set_threads(self.threads);
        let x = Exec::new(g, self.interp, target_isa(&self.target_cpu)?)?;
        if let (true, Some(c)) = (self.time_passes, x.compiled()) {
            eprintln!("codegen: lower {:.3} ms, cranelift {:.3} ms ({})", ms(c.times.lower), ms(c.times.cranelift), c.plan.summary());
        }
        Ok(x)
    }

    /// Static quantization of `g` (with --mixed-precision auto, the promoted configuration).
    fn quantize(&self, g: Graph) -> Result<Quantized> {
        let set = self.calib_set(&g)?;
        let imported = self.mixed_precision.is_some().then(|| g.clone());
        let cal = self.calibrate(g, &set)?;
        let imported = imported.as_ref();
        let (graph, log, refit) = self.finish_int8(&cal, &set, imported, || {
            let mut f = imported.cloned().ok_or_else(|| anyhow!("internal: no float model for mixed precision"))?;
            compile(&mut f, self.level(), self.instrumentation(), &mut std::io::sink())?;
            Ok(f)
        })?;
        Ok(Quantized { cal: refit.unwrap_or(cal), set, graph, log })
    }

    /// The int8 graph from a calibration: the configured scheme, or with --mixed-precision auto the
    /// promoted configuration, measured against `float()` (the float model, optimized), with auto's log.
    /// When auto measured on held-back samples, the chosen configuration is calibrated again on all
    /// samples (from `imported`, the model as loaded): that calibration comes back too.
    fn finish_int8(
        &self,
        cal: &Calibrated,
        set: &CalibSet,
        imported: Option<&Graph>,
        float: impl FnOnce() -> Result<Graph>,
    ) -> Result<(Graph, Vec<String>, Option<Calibrated>)> {
        let cfg = self.quant_config(&self.calib_method)?;
        if self.mixed_precision.is_none() {
            return Ok((cal.finish(&cfg, &self.instrumentation(), &mut std::io::stderr())?, vec![], None));
        }
        let fx = self.exec(float()?)?;
        let tune;
        let metric = match &self.tune {
            Some(dir) => {
                tune = match self.preprocess()? {
                    Some(pre) => Dataset::images(dir, &dir.join("labels.csv"), pre)?,
                    None => Dataset::npy_dir(dir)?,
                };
                Metric::Labeled { data: &tune, label_offset: self.tune_label_offset }
            }
            None => Metric::held_back(set, &fx)?,
        };
        let auto = qcc::mixed::auto(cal, &cfg, set, &fx, &metric, self.max_drop, |g| self.exec(g), &self.instrumentation())?;
        let (mut graph, mut log, mut refit) = (auto.graph, auto.log, None);
        if let (false, Some(g)) = (set.held_back.is_empty(), imported) {
            let all = CalibSet {
                samples: [set.samples.clone(), set.held_back.clone()].concat(),
                preprocess: set.preprocess.clone(),
                held_back: vec![],
            };
            let full = self.calibrate(g.clone(), &all)?;
            graph = full.finish(&auto.cfg, &self.instrumentation(), &mut std::io::sink())?;
            log.push(format!(
                "final model: these precisions, calibrated on all {} samples (the held-back ones included)",
                all.samples.len()
            ));
            refit = Some(full);
        }
        for line in &log {
            eprintln!("mixed precision: {line}");
        }
        Ok((graph, log, refit))
    }

    /// Loads the model and runs the pipeline (quantizing with --int8).
    fn build(&self) -> Result<Graph> {
        let mut g = self.load()?;
        if self.dynamic {
            if self.int8 {
                bail!("--int8 (static, calibrated) and --dynamic are two quantization modes: choose one");
            }
            let cfg = self.quant_config(&self.calib_method)?;
            qcc::driver::compile_dynamic(&mut g, self.level(), self.equalize, &cfg, self.instrumentation(), &mut std::io::stderr())?;
            return Ok(g);
        }
        if self.int8 {
            return Ok(self.quantize(g)?.graph);
        }
        compile(&mut g, self.level(), self.instrumentation(), &mut std::io::stderr())?;
        Ok(g)
    }
}

fn cmd_compile(c: CompileCmd) -> Result<()> {
    let emit = match (c.emit, &c.output) {
        (Some(e), _) => e,
        (None, Some(p)) if p.extension().is_some_and(|e| e == "onnx") => Emit::Onnx,
        (None, Some(p)) if p.extension().is_some_and(|e| e == "o") => Emit::Obj,
        _ => Emit::Qir,
    };
    let g = if c.m.int8 && !c.m.dynamic && c.analysis_samples > 0 {
        let Quantized { cal, set, graph: q, .. } = c.m.quantize(c.m.load()?)?;
        // The summary is advice: a failure to compute it does not fail the compile.
        match qcc::analyze::analyze(&cal, &q, &set, c.m.range_method()?, c.analysis_samples, 0) {
            Ok(layers) => {
                let n = c.analysis_samples.min(set.samples.len());
                eprintln!("the 5 layers with the lowest SQNR against float ({n} calibration samples; all of them: qcc analyze):");
                eprint!("{}", qcc::analyze::table(&layers, Some(5)));
            }
            Err(e) => eprintln!("warning: per-layer analysis skipped: {e:#}"),
        }
        q
    } else {
        c.m.build()?
    };
    if let Emit::Obj = emit {
        let out = c.output.as_ref().ok_or_else(|| anyhow!("--emit obj needs -o NAME.o"))?;
        return write_object(&c.m, &g, out);
    }
    let bytes = match emit {
        Emit::Qir => print_graph(&g, PrintOptions { elide_constants: c.elide_constants }).into_bytes(),
        Emit::Onnx => {
            if c.output.is_none() {
                bail!("--emit onnx needs -o OUT.onnx");
            }
            qcc_frontend::export_onnx(&g)?
        }
        Emit::Obj => unreachable!("handled above"),
    };
    match &c.output {
        Some(p) => write_atomic(p, &bytes),
        None => std::io::stdout().write_all(&bytes).context("writing to stdout"),
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Writes NAME.o and NAME.h (both atomically).
fn write_object(m: &ModelArgs, g: &Graph, out: &std::path::Path) -> Result<()> {
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_string();
    let prefix = m.symbol_prefix.clone().unwrap_or_else(|| stem.replace(['-', '.'], "_"));
    let t = std::time::Instant::now();
    let obj = qcc_codegen::object::emit_object(g, target_isa(&m.target_cpu)?, &prefix).map_err(|e| anyhow!("{e}"))?;
    if m.time_passes {
        eprintln!("codegen (object): {:.3} ms ({})", ms(t.elapsed()), obj.plan.summary());
    }
    let header = out.with_extension("h");
    write_atomic(out, &obj.bytes)?;
    write_atomic(&header, obj.header.as_bytes())?;
    eprintln!("wrote {} and {} ({})", out.display(), header.display(), obj.plan.summary());
    Ok(())
}

/// Splits `NAME=FILE` from a plain `FILE`.
fn named(s: &str) -> (Option<&str>, &str) {
    match s.split_once('=') {
        Some((n, f)) if !n.is_empty() && !n.contains('/') => (Some(n), f),
        _ => (None, s),
    }
}

fn value_names(g: &Graph, vs: &[qcc_ir::ValueId]) -> Vec<String> {
    vs.iter().map(|v| g.value(*v).name.clone().unwrap_or_default()).collect()
}

fn cmd_run(r: RunCmd) -> Result<()> {
    let g = r.m.build()?;
    let in_names = value_names(&g, g.inputs());
    let mut inputs: Vec<Option<qcc_ir::Tensor>> = vec![None; in_names.len()];
    for (k, spec) in r.inputs.iter().enumerate() {
        let (name, file) = named(spec);
        let idx = match name {
            Some(n) => in_names
                .iter()
                .position(|x| x == n)
                .ok_or_else(|| anyhow!("--input {n}: the model has no input named {n:?} (inputs: {})", in_names.join(", ")))?,
            None => k,
        };
        if idx >= inputs.len() {
            bail!("--input {spec}: the model has only {} inputs", inputs.len());
        }
        let want = g.ty(g.inputs()[idx]).shape().unwrap_or(&[]).to_vec();
        inputs[idx] = Some(fit_input(read_npy(std::path::Path::new(file))?, &want, file)?);
    }
    let inputs: Vec<qcc_ir::Tensor> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| anyhow!("no --input for model input {:?}", in_names[i])))
        .collect::<Result<_>>()?;
    let out_names = value_names(&g, g.outputs());
    let outs = r.m.exec(g)?.run(inputs)?;
    let mut written = vec![false; outs.len()];
    for (k, spec) in r.outputs.iter().enumerate() {
        let (name, file) = named(spec);
        let idx = match name {
            Some(n) => out_names
                .iter()
                .position(|x| x == n)
                .ok_or_else(|| anyhow!("--output {n}: the model has no output named {n:?} (outputs: {})", out_names.join(", ")))?,
            None => k,
        };
        let t = outs.get(idx).ok_or_else(|| anyhow!("--output {spec}: the model has only {} outputs", outs.len()))?;
        write_npy(std::path::Path::new(file), t)?;
        written[idx] = true;
    }
    if r.outputs.is_empty() {
        for (name, t) in out_names.iter().zip(&outs) {
            let v = t.to_f32_vec();
            let head: Vec<String> = v.iter().take(8).map(|x| format!("{x:.6}")).collect();
            let argmax = v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
            println!(
                "{name}: {}{:?} argmax={argmax} [{}{}]",
                t.dtype(),
                t.shape(),
                head.join(", "),
                if v.len() > 8 { ", ..." } else { "" }
            );
        }
    }
    Ok(())
}

fn pct(k: usize, n: usize) -> f64 {
    100.0 * k as f64 / n.max(1) as f64
}

fn cmd_eval(e: EvalCmd) -> Result<()> {
    let imported = e.m.load()?;
    let mut float = imported.clone();
    compile(&mut float, e.m.level(), e.m.instrumentation(), &mut std::io::stderr())?;
    // The quantized variants to compare: one, every weight scheme, or every range method.
    let mut variants: Vec<(String, Graph)> = Vec::new();
    if e.m.int8 {
        let set = e.m.calib_set(&imported)?;
        let cal = e.m.calibrate(imported.clone(), &set)?;
        let inst = e.m.instrumentation();
        let mut sink = std::io::sink();
        let all_methods = e.m.calib_method == "all";
        if all_methods && e.schemes.is_some() {
            bail!("--schemes all and --calib-method all are separate tables: give one");
        }
        if (all_methods || e.schemes.is_some()) && e.m.mixed_precision.is_some() {
            bail!("--mixed-precision auto evaluates one configuration: drop --schemes all / --calib-method all");
        }
        if let Some(s) = &e.schemes {
            if s != "all" {
                bail!("--schemes takes `all` (choose one scheme with --weights)");
            }
            for w in ["asym-per-tensor", "sym-per-channel", "asym-per-channel"] {
                let mut cfg = e.m.quant_config(&e.m.calib_method)?;
                cfg.weights = Some(qcc_passes::WeightScheme::parse(w).map_err(|x| anyhow!(x))?);
                variants.push((w.to_string(), cal.finish(&cfg, &inst, &mut sink)?));
            }
            let mut cfg = e.m.quant_config(&e.m.calib_method)?;
            cfg.weights = None;
            variants.push(("activations only".to_string(), cal.finish(&cfg, &inst, &mut sink)?));
        } else if all_methods {
            for m in qcc_runtime::observe::RangeMethod::all() {
                let cfg = e.m.quant_config(&m.name())?;
                variants.push((m.name(), cal.finish(&cfg, &inst, &mut sink)?));
            }
            if let Some(k) = e.m.range_search() {
                // From the default method (the table's rows above ignore the search: another method each).
                let cfg = e.m.quant_config(DEFAULT_METHOD)?;
                let mut cal = cal;
                e.m.search_ranges(&mut cal, &cfg, &set, k)?;
                variants.push((format!("range-search:{k}"), cal.finish(&cfg, &inst, &mut sink)?));
            }
        } else if e.m.mixed_precision.is_some() {
            // The tuning set is --tune, not the data evaluated here.
            variants.push(("int8 mixed".to_string(), e.m.finish_int8(&cal, &set, Some(&imported), || Ok(float.clone()))?.0));
        } else {
            let cfg = e.m.quant_config(&e.m.calib_method)?;
            variants.push(("int8".to_string(), cal.finish(&cfg, &inst, &mut std::io::stderr())?));
        }
    }
    if e.m.dynamic {
        let mut g = imported.clone();
        let cfg = e.m.quant_config(&e.m.calib_method)?;
        qcc::driver::compile_dynamic(&mut g, e.m.level(), e.m.equalize, &cfg, e.m.instrumentation(), &mut std::io::stderr())?;
        variants.push(("dynamic".to_string(), g));
    }
    let data = match (&e.npy, &e.images) {
        (Some(dir), _) => Dataset::npy_dir(dir)?,
        (None, Some(dir)) => {
            let pre = e.m.preprocess()?.ok_or_else(|| anyhow!("--images needs --preprocess"))?;
            Dataset::images(dir, e.labels.as_ref().expect("clap requires --labels"), pre)?
        }
        (None, None) => bail!("give --npy DIR, or --images DIR --labels CSV --preprocess SPEC"),
    };
    let data = data.window(e.offset, e.limit);
    if data.items.is_empty() {
        bail!("no samples to evaluate (check --offset and --limit)");
    }
    let mut execs = vec![e.m.exec(float)?];
    for (_, g) in &variants {
        execs.push(e.m.exec(g.clone())?);
    }
    let graphs: Vec<&Exec> = execs.iter().collect();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let res = qcc::eval::evaluate_many(&graphs, &data, e.label_offset, |i, n| {
        if tty {
            eprint!("\r{i}/{n}{}", if i == n { "\n" } else { "" });
        }
    })?;
    let n = res.n;
    println!("n={n} (samples {}..{})", e.offset, e.offset + n);
    println!("{:<22} {:>7} {:>7} {:>10} {:>12}", "", "top-1", "top-5", "agreement", "output SQNR");
    println!("{:<22} {:>6.2}% {:>6.2}% {:>10}", "float", pct(res.top1[0], n), pct(res.top5[0], n), "");
    for (i, (name, _)) in variants.iter().enumerate() {
        let k = i + 1;
        println!(
            "{:<22} {:>6.2}% {:>6.2}% {:>9.2}% {:>9.2} dB",
            name,
            pct(res.top1[k], n),
            pct(res.top5[k], n),
            pct(res.agree[k], n),
            res.mean_sqnr_db(k)
        );
    }
    if let Some(p) = &e.json {
        let f = format!("{{\"top1\": {:.4}, \"top5\": {:.4}}}", pct(res.top1[0], n), pct(res.top5[0], n));
        let q = |k: usize| {
            format!(
                "{{\"top1\": {:.4}, \"top5\": {:.4}, \"agreement\": {:.4}, \"sqnr_db\": {:.4}}}",
                pct(res.top1[k], n),
                pct(res.top5[k], n),
                pct(res.agree[k], n),
                res.mean_sqnr_db(k)
            )
        };
        let mut json = format!("{{\"n\": {n}, \"float\": {f}");
        if variants.len() == 1 {
            json.push_str(&format!(", \"quantized\": {}", q(1)));
        } else if !variants.is_empty() {
            let rows: Vec<String> = variants.iter().enumerate().map(|(i, (name, _))| format!("{:?}: {}", name, q(i + 1))).collect();
            json.push_str(&format!(", \"variants\": {{{}}}", rows.join(", ")));
        }
        json.push_str("}\n");
        write_atomic(p, json.as_bytes())?;
    }
    Ok(())
}

fn cmd_analyze(a: AnalyzeCmd) -> Result<()> {
    if a.m.dynamic {
        bail!("qcc analyze compares a statically quantized model with its float form: use --int8, not --dynamic");
    }
    let Quantized { cal, set, graph: q, log } = a.m.quantize(a.m.load()?)?;
    let layers = qcc::analyze::analyze(&cal, &q, &set, a.m.range_method()?, a.samples, a.sensitivity_samples)?;
    let n = a.samples.min(set.samples.len());
    println!("{} quantized tensors compared with float on {n} calibration samples", layers.len());
    print!("{}", qcc::analyze::table(&layers, None));
    println!("\nthe 5 worst by SQNR alone (the error the layer adds by itself):");
    print!("{}", qcc::analyze::table(&layers, Some(5)));
    if let Some(p) = &a.json {
        write_atomic(p, qcc::analyze::to_json(&layers, n).as_bytes())?;
    }
    if let Some(p) = &a.report {
        let model = a.m.model.as_ref().map_or(String::new(), |m| m.display().to_string());
        let scheme = format!("weights {}, activations {} {}, ranges {}", a.m.weights, a.m.activations, a.m.act_type, a.m.calib_method);
        let html = qcc::report::html(&model, &scheme, &cal, &q, &layers, n, a.report_layer.as_deref(), &log)?;
        write_atomic(p, html.as_bytes())?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn cmd_bench(b: BenchCmd) -> Result<()> {
    let g = b.m.build()?;
    let inputs: Vec<qcc_ir::Tensor> = match &b.input {
        Some(f) => {
            let want = g.ty(g.inputs()[0]).shape().unwrap_or(&[]).to_vec();
            vec![fit_input(read_npy(f)?, &want, &f.display().to_string())?]
        }
        None => g
            .inputs()
            .iter()
            .map(|&v| {
                let shape = g.ty(v).shape().unwrap_or(&[]).to_vec();
                let n: usize = shape.iter().product();
                let data = (0..n).map(|i| ((i as u64 * 2654435761) % 1000) as f32 / 500.0 - 1.0).collect();
                qcc_ir::Tensor::from_f32(&shape, data).ok_or_else(|| anyhow!("input shape"))
            })
            .collect::<Result<_>>()?,
    };
    let x = b.m.exec(g)?;
    for _ in 0..5 {
        x.run(inputs.clone())?;
    }
    let mut times = Vec::with_capacity(b.iters);
    for _ in 0..b.iters.max(1) {
        let t = std::time::Instant::now();
        x.run(inputs.clone())?;
        times.push(ms(t.elapsed()));
    }
    times.sort_by(f64::total_cmp);
    if let (true, Some(c)) = (b.profile, x.compiled()) {
        let t = c.profile(&inputs, b.iters.max(1))?;
        let total: f64 = t.iter().sum();
        let mut idx: Vec<usize> = (0..t.len()).collect();
        idx.sort_by(|a, b| t[*b].total_cmp(&t[*a]));
        println!("{:>9} {:>6} {:>8}  {:<10} node", "ms", "%", "GOPS", "kernel");
        let mut per_kernel: Vec<(&str, f64, u64)> = Vec::new();
        for (s, t) in c.plan.steps.iter().zip(&t) {
            let k = s.kernel.name();
            match per_kernel.iter_mut().find(|e| e.0 == k) {
                Some(e) => (e.1, e.2) = (e.1 + t, e.2 + s.macs),
                None => per_kernel.push((k, *t, s.macs)),
            }
        }
        per_kernel.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (k, t, macs) in &per_kernel {
            let per = *t;
            let gops = if *macs > 0 { format!("{:.1}", 2.0 * *macs as f64 / per / 1e9) } else { String::new() };
            println!("{:>9.4} {:>5.1}% {:>8}  {:<10} (all)", per * 1e3, 100.0 * t / total, gops, k);
        }
        for i in idx.into_iter().take(b.profile_top) {
            let s = &c.plan.steps[i];
            let per = t[i];
            let gops = if s.macs > 0 { format!("{:.1}", 2.0 * s.macs as f64 / per / 1e9) } else { String::new() };
            println!("{:>9.4} {:>5.1}% {:>8}  {:<10} {}", per * 1e3, 100.0 * t[i] / total, gops, s.kernel.name(), s.node);
        }
    }
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let threads = qcc_runtime::kernels::pool::threads();
    let macs = x.compiled().map_or(0, |c| c.plan.macs());
    // Float GEMM/conv steps count in GFLOPS, apart from the integer ones the VNNI peak applies to.
    let fmacs: u64 = x.compiled().map_or(0, |c| c.plan.steps.iter().filter(|s| s.kernel.is_float()).map(|s| s.macs).sum());
    let gops = 2.0 * (macs - fmacs) as f64 / (q(0.5) * 1e6);
    let gflops = 2.0 * fmacs as f64 / (q(0.5) * 1e6);
    println!(
        "median {:.3} ms  p10 {:.3} ms  p90 {:.3} ms  ({} runs, {threads} threads, {}{})",
        q(0.5),
        q(0.1),
        q(0.9),
        times.len(),
        if b.m.interp { "interpreter".to_string() } else { format!("jit {}", target_isa(&b.m.target_cpu)?.name()) },
        if macs > fmacs { format!(", {:.1} int8 GOPS in GEMM/conv", gops) } else { String::new() }
            + &if fmacs > 0 { format!(", {gflops:.1} f32 GFLOPS in GEMM/conv") } else { String::new() }
    );
    // Measured here, so GOPS figures compare with this CPU's limit, not another's.
    let peak = qcc_runtime::kernels::gemm::vnni_peak_gops();
    if let Some(p) = peak.filter(|_| macs > fmacs) {
        println!(
            "vpdpbusd peak of one core (measured): {p:.1} GOPS; this model's GEMM/conv at {:.0}% of the peak of its threads",
            100.0 * gops / (p * threads as f64)
        );
    }
    if let Some(p) = &b.json {
        let json = format!(
            "{{\"median_ms\": {:.4}, \"p10_ms\": {:.4}, \"p90_ms\": {:.4}, \"threads\": {threads}, \"macs\": {macs}, \"vnni_peak_gops\": {}}}\n",
            q(0.5),
            q(0.1),
            q(0.9),
            peak.map_or("null".to_string(), |p| format!("{p:.1}"))
        );
        write_atomic(p, json.as_bytes())?;
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Some(Cmd::Run(r)) => cmd_run(r),
        Some(Cmd::Eval(e)) => cmd_eval(e),
        Some(Cmd::Bench(b)) => cmd_bench(b),
        Some(Cmd::Analyze(a)) => cmd_analyze(a),
        None => cmd_compile(cli.compile),
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
