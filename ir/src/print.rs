//! The deterministic text form (.qir). Values are renumbered in topological order, constants by first use,
//! attributes sorted, floats in shortest round-trip form; parse then print gives back the same text.
use crate::attr::quote;
use crate::graph::{ConstData, Graph, ValueId};
use crate::tensor::Tensor;
use crate::types::fmt_f32;
use crate::with_tensor;
use std::collections::HashMap;
use std::fmt::Write;

/// Constants with at most this many elements are printed as a literal list.
pub const INLINE_ELEMS: usize = 16;

#[derive(Clone, Copy, Debug, Default)]
pub struct PrintOptions {
    /// Print large constants as `elided BYTES HASH` instead of their bytes (dumps stay readable;
    /// such text parses back but cannot be run).
    pub elide_constants: bool,
}

/// Names for printing: `%N` for inputs and node outputs, `@cN` for constants.
pub struct Names {
    map: HashMap<ValueId, String>,
}

impl Names {
    pub fn get(&self, v: ValueId) -> String {
        self.map.get(&v).cloned().unwrap_or_else(|| format!("%<dead {}>", v.index()))
    }
}

fn ident_ok(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

/// Computes the printed names and the node order; None when the graph has a cycle.
pub fn number(g: &Graph) -> (Names, Vec<ValueId>, Vec<crate::graph::NodeId>) {
    let order = g.topo_order().unwrap_or_else(|_| g.node_ids().collect());
    let mut map = HashMap::new();
    let mut next = 0usize;
    for &i in g.inputs() {
        map.insert(i, format!("%{next}"));
        next += 1;
    }
    let mut consts = Vec::new();
    let note_const = |v: ValueId, map: &mut HashMap<ValueId, String>, consts: &mut Vec<ValueId>| {
        if g.is_const(v) && !map.contains_key(&v) {
            map.insert(v, format!("@c{}", consts.len()));
            consts.push(v);
        }
    };
    for &n in &order {
        let node = g.node(n);
        for &i in &node.inputs {
            note_const(i, &mut map, &mut consts);
        }
        map.insert(node.output, format!("%{next}"));
        next += 1;
    }
    for &o in g.outputs() {
        note_const(o, &mut map, &mut consts);
    }
    for v in g.value_ids() {
        note_const(v, &mut map, &mut consts);
    }
    (Names { map }, consts, order)
}

fn literal(t: &Tensor) -> String {
    let items: Vec<String> = match t {
        Tensor::F32(a) => a.iter().map(|x| fmt_f32(*x)).collect(),
        other => with_tensor!(other, a => a.iter().map(|x| format!("{x}")).collect()),
    };
    format!("[{}]", items.join(", "))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn loc_text(loc: &[String]) -> String {
    if loc.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = loc.iter().map(|l| quote(l)).collect();
    format!(" loc({})", parts.join(", "))
}

fn name_suffix(g: &Graph, v: ValueId) -> String {
    match &g.value(v).name {
        Some(n) => format!(" {}", quote(n)),
        None => String::new(),
    }
}

pub fn print_graph(g: &Graph, opts: PrintOptions) -> String {
    let (names, consts, order) = number(g);
    let mut s = String::new();
    let gname = if ident_ok(&g.name) { g.name.clone() } else { quote(&g.name) };
    let params: Vec<String> = g.inputs().iter().map(|&i| format!("{}: {}{}", names.get(i), g.ty(i), name_suffix(g, i))).collect();
    let outs: Vec<String> = g.outputs().iter().map(|&o| format!("{}: {}{}", names.get(o), g.ty(o), name_suffix(g, o))).collect();
    let _ = writeln!(s, "graph @{gname}({}) -> ({}) {{", params.join(", "), outs.join(", "));
    for c in consts {
        let ty = g.ty(c);
        let body = match g.const_data(c) {
            Some(ConstData::Data(t)) if t.len() <= INLINE_ELEMS => literal(t),
            Some(ConstData::Data(t)) if opts.elide_constants => {
                format!("elided {} {:#018x}", t.len() * t.dtype().size_bytes(), t.content_hash())
            }
            Some(ConstData::Data(t)) => format!("dense \"{}\"", hex(&t.to_le_bytes())),
            Some(ConstData::Elided { bytes, hash }) => format!("elided {bytes} {hash:#018x}"),
            None => unreachable!("numbered constants are constants"),
        };
        let loc = g.value(c).name.as_ref().map(|n| loc_text(std::slice::from_ref(n))).unwrap_or_default();
        let _ = writeln!(s, "  const {}: {} = {}{}", names.get(c), ty, body, loc);
    }
    for n in order {
        let node = g.node(n);
        let ins: Vec<String> = node.inputs.iter().map(|&i| names.get(i)).collect();
        let mut attrs = node.op.attrs();
        attrs.sort_by(|a, b| a.0.cmp(&b.0));
        let attr_text = if attrs.is_empty() {
            String::new()
        } else {
            let a: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(" {{{}}}", a.join(", "))
        };
        let sep = if ins.is_empty() { "" } else { " " };
        let _ = writeln!(
            s,
            "  {} = {}{}{}{} : {}{}",
            names.get(node.output),
            node.op.name(),
            sep,
            ins.join(", "),
            attr_text,
            g.ty(node.output),
            loc_text(&node.loc)
        );
    }
    s.push_str("}\n");
    s
}

impl std::fmt::Display for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&print_graph(self, PrintOptions { elide_constants: true }))
    }
}
