//! The verifier: reports every broken invariant of a graph at once, each with the location it concerns.
use crate::graph::{ConstData, Graph, ValueDef, ValueId};
use crate::infer::infer_type;
use crate::types::{ElemType, QParams, Type};
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct VerifyError {
    /// The node (ONNX name) or value the problem is about.
    pub loc: String,
    pub msg: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct VerifierErrors(pub Vec<VerifyError>);

impl fmt::Display for VerifierErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "verifier found {n} problem{}", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  {}: {}", e.loc, e.msg)?;
        }
        Ok(())
    }
}

/// Checks a type's quantization parameters.
pub fn check_type(ty: &Type) -> Result<(), String> {
    let Type::Tensor { elem: ElemType::Q(q), shape } = ty else {
        return Ok(());
    };
    let (lo, hi) = q.storage.int_range().ok_or_else(|| format!("{} cannot store quantized values", q.storage))?;
    if q.qmin < lo || q.qmax > hi || q.qmin >= q.qmax {
        return Err(format!("range {}..{} does not fit {}", q.qmin, q.qmax, q.storage));
    }
    let check_scale = |s: f32| {
        if s.is_finite() && s > 0.0 {
            Ok(())
        } else {
            Err(format!("scale {s} must be finite and > 0"))
        }
    };
    let check_zp = |z: i32| {
        if (z as i64) < q.qmin || z as i64 > q.qmax {
            Err(format!("zero point {z} outside {}..{}", q.qmin, q.qmax))
        } else {
            Ok(())
        }
    };
    match &q.params {
        QParams::PerTensor { scale, zp } => {
            check_scale(*scale)?;
            check_zp(*zp)
        }
        QParams::PerAxis { axis, scales, zps } => {
            let dim = *shape.get(*axis).ok_or_else(|| format!("axis {axis} >= rank {}", shape.len()))?;
            if scales.len() != dim || zps.len() != dim {
                return Err(format!("axis {axis} has {dim} channels but {} scales and {} zero points", scales.len(), zps.len()));
            }
            scales.iter().try_for_each(|s| check_scale(*s))?;
            zps.iter().try_for_each(|z| check_zp(*z))
        }
        QParams::Calibrated { min, max } => {
            if min.is_finite() && max.is_finite() && min <= max {
                Ok(())
            } else {
                Err(format!("calibrated range {min}..{max} is invalid"))
            }
        }
    }
}

pub fn verify(g: &Graph) -> Result<(), VerifierErrors> {
    let mut errs = Vec::new();
    let mut push = |loc: String, msg: String| errs.push(VerifyError { loc, msg });
    let order = match g.topo_order() {
        Ok(o) => o,
        Err(n) => {
            push(format!("node \"{}\"", g.node(n).name()), "is on a cycle".into());
            return Err(VerifierErrors(errs));
        }
    };
    let alive = |v: ValueId| v.index() < g.num_values() && g.value(v).def != ValueDef::Dead;
    for v in g.value_ids() {
        let val = g.value(v);
        if let Err(e) = check_type(&val.ty) {
            push(g.describe_value(v), e);
        }
        if let ValueDef::Const(ConstData::Data(t)) = &val.def {
            if val.ty.dtype() != Some(t.dtype()) || val.ty.shape() != Some(t.shape()) {
                push(g.describe_value(v), format!("constant data {}{:?} does not match its type {}", t.dtype(), t.shape(), val.ty));
            }
        }
    }
    for n in order {
        let node = g.node(n);
        let loc = format!("node \"{}\" ({})", node.name(), node.op.name());
        if g.producer(node.output) != Some(n) {
            push(loc.clone(), "output value is not defined by this node".into());
        }
        if let Some(bad) = node.inputs.iter().find(|v| !alive(**v)) {
            push(loc, format!("reads removed value {bad}"));
            continue;
        }
        let tys: Vec<&Type> = node.inputs.iter().map(|v| g.ty(*v)).collect();
        if tys.iter().any(|t| **t == Type::Unknown) {
            continue;
        }
        let declared = g.ty(node.output);
        match infer_type(&node.op, &tys, declared) {
            Ok(t) if t == *declared => {}
            Ok(t) => push(loc, format!("declared type {declared} but the op produces {t}")),
            Err(e) => push(loc, e),
        }
    }
    for &o in g.outputs() {
        if !alive(o) {
            push("graph outputs".into(), format!("{o} was removed"));
        }
    }
    if g.outputs().is_empty() {
        push("graph".into(), "has no outputs".into());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(VerifierErrors(errs))
    }
}
