//! Runs passes in order with verification after each and the instrumentation users debug with:
//! print before/after (all, named, on change), per-pass dumps to a folder, stop-after and timings.
//! On failure it keeps the last good graph so the error can be shown with the IR that led to it.
use crate::{Pass, PassContext, PassError};
use qcc_ir::{print_graph, verify, Graph, PrintOptions};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub struct Instrumentation {
    pub print_after_all: bool,
    pub print_after: BTreeSet<String>,
    pub print_before: BTreeSet<String>,
    pub print_after_change: bool,
    pub dump_dir: Option<PathBuf>,
    pub stop_after: Option<String>,
    pub time_passes: bool,
    /// Verify after every pass (always on in tests and debug builds).
    pub verify: bool,
    /// Passes left out of every pipeline (`--disable-pass`), to find which one hurts.
    pub disable: BTreeSet<String>,
}

#[derive(Clone, Debug)]
pub struct PassTiming {
    pub name: &'static str,
    pub time: Duration,
    pub changed: bool,
}

/// A failed pipeline: the error and the last graph that verified.
#[derive(Debug)]
pub struct PassFailure {
    pub error: PassError,
    pub last_good: Graph,
}

pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    pub inst: Instrumentation,
    /// Number of passes run before this manager's (a pipeline in parts continues the dump numbering);
    /// the input is dumped only when it is 0.
    pub first_index: usize,
    /// Set when --stop-after ended the run early.
    pub stopped: bool,
}

fn dump_opts() -> PrintOptions {
    PrintOptions { elide_constants: true }
}

impl PassManager {
    pub fn new(passes: Vec<Box<dyn Pass>>, inst: Instrumentation) -> PassManager {
        let passes = passes.into_iter().filter(|p| !inst.disable.contains(p.name())).collect();
        PassManager { passes, inst, first_index: 0, stopped: false }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    fn print(out: &mut dyn Write, when: &str, name: &str, g: &Graph) {
        let _ = writeln!(out, "// -----// IR Dump {when} {name} //----- //\n{}", print_graph(g, dump_opts()));
    }

    fn dump(&self, index: usize, name: &str, g: &Graph) -> Result<(), PassError> {
        if let Some(dir) = &self.inst.dump_dir {
            let path = dir.join(format!("{index:02}-{name}.qir"));
            std::fs::write(&path, print_graph(g, dump_opts()))
                .map_err(|e| PassError::Failed { pass: "dump", msg: format!("cannot write {}: {e}", path.display()) })?;
        }
        Ok(())
    }

    /// Runs the pipeline; diagnostics (prints, timings) go to `out`.
    pub fn run(&mut self, g: &mut Graph, cx: &mut PassContext, out: &mut dyn Write) -> Result<Vec<PassTiming>, Box<PassFailure>> {
        let fail = |error: PassError, last_good: Graph| Box::new(PassFailure { error, last_good });
        if let Some(dir) = &self.inst.dump_dir {
            if let Err(e) = std::fs::create_dir_all(dir) {
                let msg = format!("cannot create dump folder {}: {e}", dir.display());
                return Err(fail(PassError::Failed { pass: "dump", msg }, g.clone()));
            }
        }
        if self.first_index == 0 {
            self.dump(0, "input", g).map_err(|e| fail(e, g.clone()))?;
        }
        let mut timings = Vec::new();
        for i in 0..self.passes.len() {
            let name = self.passes[i].name();
            if self.inst.print_before.contains(name) {
                Self::print(out, "Before", name, g);
            }
            let before = g.clone();
            let t0 = Instant::now();
            let res = self.passes[i].run(g, cx);
            let time = t0.elapsed();
            let changed = match res {
                Ok(c) => c,
                Err(e) => {
                    *g = before.clone();
                    return Err(fail(e, before));
                }
            };
            if self.inst.verify {
                if let Err(errors) = verify(g) {
                    *g = before.clone();
                    return Err(fail(PassError::Verify { pass: name.to_string(), errors }, before));
                }
            }
            timings.push(PassTiming { name, time, changed });
            if self.inst.print_after_all || self.inst.print_after.contains(name) || (self.inst.print_after_change && changed) {
                Self::print(out, "After", name, g);
            }
            self.dump(self.first_index + i + 1, name, g).map_err(|e| fail(e, g.clone()))?;
            if self.inst.stop_after.as_deref() == Some(name) {
                self.stopped = true;
                break;
            }
        }
        if self.inst.time_passes {
            let total: Duration = timings.iter().map(|t| t.time).sum();
            let _ = writeln!(out, "===-------------------------------------------------------------------------===");
            let _ = writeln!(out, "                         pass execution timing report");
            let _ = writeln!(out, "===-------------------------------------------------------------------------===");
            for t in &timings {
                let pct = if total.as_nanos() > 0 { 100.0 * t.time.as_secs_f64() / total.as_secs_f64() } else { 0.0 };
                let _ = writeln!(
                    out,
                    "  {:>10.3} ms ({:>5.1}%)  {}{}",
                    t.time.as_secs_f64() * 1e3,
                    pct,
                    t.name,
                    if t.changed { "" } else { "  (no change)" }
                );
            }
            let _ = writeln!(out, "  {:>10.3} ms (100.0%)  total", total.as_secs_f64() * 1e3);
        }
        Ok(timings)
    }
}
