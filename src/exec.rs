//! Running a compiled graph: JIT-compiled code by default, the reference interpreter with `--interp`.
use anyhow::{anyhow, Result};
use qcc_codegen::{Compiled, Isa};
use qcc_ir::{Graph, Tensor};

pub enum Exec {
    Interp(Graph),
    Jit(Box<Compiled>, Graph),
}

impl Exec {
    /// JIT-compiles `g` for `isa` unless `interp`.
    pub fn new(g: Graph, interp: bool, isa: Isa) -> Result<Exec> {
        if interp {
            return Ok(Exec::Interp(g));
        }
        let c = Compiled::new(&g, isa).map_err(|e| anyhow!("code generation: {e}"))?;
        Ok(Exec::Jit(Box::new(c), g))
    }

    pub fn graph(&self) -> &Graph {
        match self {
            Exec::Interp(g) | Exec::Jit(_, g) => g,
        }
    }

    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        match self {
            Exec::Interp(g) => Ok(qcc_runtime::run(g, inputs)?),
            Exec::Jit(c, _) => Ok(c.run(&inputs)?),
        }
    }

    pub fn compiled(&self) -> Option<&Compiled> {
        match self {
            Exec::Jit(c, _) => Some(c),
            Exec::Interp(_) => None,
        }
    }
}

/// Parses `--target-cpu` (the JIT checks that this CPU runs it; object files may target another).
pub fn target_isa(name: &str) -> Result<Isa> {
    Isa::from_target_cpu(name).ok_or_else(|| anyhow!("--target-cpu {name:?}: expected native, x86-64-v4, x86-64-v3 or x86-64"))
}
