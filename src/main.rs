//! The `qcc` command line: compile (`qcc MODEL ...`), `qcc run`, `qcc eval`.
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use qcc::data::{fit_input, Dataset, Preprocess};
use qcc::driver::{compile, load_model, parse_input_shape};
use qcc::fsutil::write_atomic;
use qcc::npy::{read_npy, write_npy};
use qcc_frontend::ImportOptions;
use qcc_ir::{print_graph, Graph, PrintOptions};
use qcc_passes::{Instrumentation, OptLevel};
use std::io::Write;
use std::path::PathBuf;

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
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// qcc's textual IR (.qir), which `qcc` reads back.
    Qir,
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
    /// Print how long each pass took.
    #[arg(long)]
    time_passes: bool,
    /// Verify the IR after every pass (always on in debug builds).
    #[arg(long)]
    verify_each: bool,
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
    /// Image preprocessing, e.g.
    /// resize=256,crop=224,scale=1/255,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,layout=nchw
    #[arg(long, value_name = "SPEC")]
    preprocess: Option<String>,
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
        }
    }

    /// Loads the model and runs the pipeline.
    fn build(&self) -> Result<Graph> {
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
        let mut g = loaded.graph;
        compile(&mut g, self.level(), self.instrumentation(), &mut std::io::stderr())?;
        Ok(g)
    }
}

fn cmd_compile(c: CompileCmd) -> Result<()> {
    let g = c.m.build()?;
    let Emit::Qir = c.emit.unwrap_or(Emit::Qir);
    let text = print_graph(&g, PrintOptions { elide_constants: c.elide_constants });
    match &c.output {
        Some(p) => write_atomic(p, text.as_bytes()),
        None => std::io::stdout().write_all(text.as_bytes()).context("writing to stdout"),
    }
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
    let outs = qcc_runtime::run(&g, inputs)?;
    let out_names = value_names(&g, g.outputs());
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

fn cmd_eval(e: EvalCmd) -> Result<()> {
    let g = e.m.build()?;
    let data = match (&e.npy, &e.images) {
        (Some(dir), _) => Dataset::npy_dir(dir)?,
        (None, Some(dir)) => {
            let pre = Preprocess::parse(e.preprocess.as_deref().unwrap_or_default())?;
            Dataset::images(dir, e.labels.as_ref().expect("clap requires --labels"), pre)?
        }
        (None, None) => bail!("give --npy DIR, or --images DIR --labels CSV --preprocess SPEC"),
    };
    let data = data.window(e.offset, e.limit);
    if data.items.is_empty() {
        bail!("no samples to evaluate (check --offset and --limit)");
    }
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let acc = qcc::eval::evaluate(&g, &data, e.label_offset, |i, n| {
        if tty {
            eprint!("\r{i}/{n}{}", if i == n { "\n" } else { "" });
        }
    })?;
    println!("n={} float top-1 {:.2}% top-5 {:.2}%", acc.n, acc.top1_pct(), acc.top5_pct());
    if let Some(p) = &e.json {
        let json = format!("{{\"n\": {}, \"float\": {{\"top1\": {:.4}, \"top5\": {:.4}}}}}\n", acc.n, acc.top1_pct(), acc.top5_pct());
        write_atomic(p, json.as_bytes())?;
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Some(Cmd::Run(r)) => cmd_run(r),
        Some(Cmd::Eval(e)) => cmd_eval(e),
        None => cmd_compile(cli.compile),
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
