//! The graph: nodes in a private petgraph `StableGraph`, values in a table. Every node produces exactly one
//! value; constants and graph inputs are values without a node. Ids are stable across removals.
use crate::op::Op;
use crate::tensor::Tensor;
use crate::types::Type;
use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};
use petgraph::Direction;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(NodeIndex<u32>);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%v{}", self.0)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
    /// The ONNX node names this node stands for (several after fusion), for reports in the user's words.
    pub loc: Vec<String>,
}

impl Node {
    /// The first location, or a placeholder: what error messages name.
    pub fn name(&self) -> &str {
        self.loc.first().map(String::as_str).unwrap_or("<unnamed>")
    }
}

/// Constant contents: the data, or (in printed dumps read back) only its size and hash.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstData {
    Data(Tensor),
    Elided { bytes: usize, hash: u64 },
}

#[derive(Clone, Debug, PartialEq)]
pub enum ValueDef {
    Input,
    Const(ConstData),
    Node(NodeId),
    /// Removed; kept only so ids stay stable.
    Dead,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub ty: Type,
    pub def: ValueDef,
    /// The ONNX tensor name, where one is known.
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    g: StableGraph<Node, u32>,
    values: Vec<Value>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), ..Default::default() }
    }

    fn push_value(&mut self, v: Value) -> ValueId {
        self.values.push(v);
        ValueId((self.values.len() - 1) as u32)
    }

    pub fn add_input(&mut self, ty: Type, name: Option<String>) -> ValueId {
        let v = self.push_value(Value { ty, def: ValueDef::Input, name });
        self.inputs.push(v);
        v
    }

    /// Adds a constant whose type is the tensor's plain type.
    pub fn add_const(&mut self, t: Tensor, name: Option<String>) -> ValueId {
        let ty = Type::plain(t.dtype(), t.shape().to_vec());
        self.add_const_typed(ConstData::Data(t), ty, name)
    }

    pub fn add_const_typed(&mut self, data: ConstData, ty: Type, name: Option<String>) -> ValueId {
        self.push_value(Value { ty, def: ValueDef::Const(data), name })
    }

    /// Adds a node and its output value; returns the output.
    pub fn add_node(&mut self, op: Op, inputs: Vec<ValueId>, ty: Type, loc: Vec<String>) -> ValueId {
        let out = self.push_value(Value { ty, def: ValueDef::Dead, name: None });
        let idx = self.g.add_node(Node { op, inputs: inputs.clone(), output: out, loc });
        self.values[out.index()].def = ValueDef::Node(NodeId(idx));
        self.connect(idx, &inputs);
        out
    }

    fn connect(&mut self, idx: NodeIndex<u32>, inputs: &[ValueId]) {
        for (slot, v) in inputs.iter().enumerate() {
            if let ValueDef::Node(p) = self.values[v.index()].def {
                self.g.add_edge(p.0, idx, slot as u32);
            }
        }
    }

    pub fn set_outputs(&mut self, outs: Vec<ValueId>) {
        self.outputs = outs;
    }

    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    pub fn value(&self, v: ValueId) -> &Value {
        &self.values[v.index()]
    }

    pub fn value_mut(&mut self, v: ValueId) -> &mut Value {
        &mut self.values[v.index()]
    }

    pub fn ty(&self, v: ValueId) -> &Type {
        &self.values[v.index()].ty
    }

    pub fn num_values(&self) -> usize {
        self.values.len()
    }

    /// Every live value id, in creation order.
    pub fn value_ids(&self) -> impl Iterator<Item = ValueId> + '_ {
        (0..self.values.len() as u32).map(ValueId).filter(|v| self.values[v.index()].def != ValueDef::Dead)
    }

    pub fn node(&self, n: NodeId) -> &Node {
        &self.g[n.0]
    }

    /// Mutable access to a node's op and locations. Inputs change only through `set_input(s)`.
    pub fn set_op(&mut self, n: NodeId, op: Op) {
        self.g[n.0].op = op;
    }

    pub fn loc_mut(&mut self, n: NodeId) -> &mut Vec<String> {
        &mut self.g[n.0].loc
    }

    pub fn contains_node(&self, n: NodeId) -> bool {
        self.g.contains_node(n.0)
    }

    pub fn num_nodes(&self) -> usize {
        self.g.node_count()
    }

    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices().map(NodeId)
    }

    pub fn producer(&self, v: ValueId) -> Option<NodeId> {
        match self.values[v.index()].def {
            ValueDef::Node(n) => Some(n),
            _ => None,
        }
    }

    pub fn const_data(&self, v: ValueId) -> Option<&ConstData> {
        match &self.values[v.index()].def {
            ValueDef::Const(c) => Some(c),
            _ => None,
        }
    }

    /// The tensor of a constant value (None for non-constants and elided constants).
    pub fn const_tensor(&self, v: ValueId) -> Option<&Tensor> {
        match self.const_data(v) {
            Some(ConstData::Data(t)) => Some(t),
            _ => None,
        }
    }

    pub fn is_const(&self, v: ValueId) -> bool {
        self.const_data(v).is_some()
    }

    /// The nodes that read `v`, with the input slot, in node order.
    pub fn uses(&self, v: ValueId) -> Vec<(NodeId, usize)> {
        let mut out = Vec::new();
        for n in self.g.node_indices() {
            for (slot, i) in self.g[n].inputs.iter().enumerate() {
                if *i == v {
                    out.push((NodeId(n), slot));
                }
            }
        }
        out
    }

    pub fn is_output(&self, v: ValueId) -> bool {
        self.outputs.contains(&v)
    }

    /// Number of readers of `v`, counting graph outputs as readers.
    pub fn use_count(&self, v: ValueId) -> usize {
        self.uses(v).len() + self.outputs.iter().filter(|o| **o == v).count()
    }

    pub fn set_inputs(&mut self, n: NodeId, inputs: Vec<ValueId>) {
        let old: Vec<_> = self.g.edges_directed(n.0, Direction::Incoming).map(|e| e.id()).collect();
        for e in old {
            self.g.remove_edge(e);
        }
        self.g[n.0].inputs = inputs.clone();
        self.connect(n.0, &inputs);
    }

    pub fn set_input(&mut self, n: NodeId, slot: usize, v: ValueId) {
        let mut ins = self.g[n.0].inputs.clone();
        ins[slot] = v;
        self.set_inputs(n, ins);
    }

    /// Redirects every reader of `old` (nodes and graph outputs) to `new`. A graph output keeps its
    /// ONNX name: `new` takes it over.
    pub fn replace_all_uses(&mut self, old: ValueId, new: ValueId) {
        for (n, _) in self.uses(old) {
            let ins = self.g[n.0].inputs.iter().map(|i| if *i == old { new } else { *i }).collect();
            self.set_inputs(n, ins);
        }
        if self.outputs.contains(&old) {
            for o in self.outputs.iter_mut() {
                if *o == old {
                    *o = new;
                }
            }
            if self.values[old.index()].name.is_some() {
                self.values[new.index()].name = self.values[old.index()].name.clone();
            }
        }
    }

    /// Makes graph output `old` read `new` instead (`new` takes over the output's name).
    pub fn replace_output(&mut self, old: ValueId, new: ValueId) {
        for o in self.outputs.iter_mut() {
            if *o == old {
                *o = new;
            }
        }
        if self.values[old.index()].name.is_some() {
            self.values[new.index()].name = self.values[old.index()].name.take();
        }
    }

    /// Removes a node; its output value becomes dead. The caller makes sure nothing reads it.
    pub fn remove_node(&mut self, n: NodeId) -> Node {
        let node = self.g.remove_node(n.0).expect("remove_node: node exists");
        self.values[node.output.index()].def = ValueDef::Dead;
        node
    }

    /// A deterministic topological order: among ready nodes the lowest id goes first, so a graph whose
    /// creation order is already topological keeps it. Err names a node on a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, NodeId> {
        let mut indeg: Vec<usize> = vec![0; self.g.node_bound()];
        for n in self.g.node_indices() {
            indeg[n.index()] = self.g.edges_directed(n, Direction::Incoming).count();
        }
        let mut ready: BinaryHeap<Reverse<NodeIndex<u32>>> = self.g.node_indices().filter(|n| indeg[n.index()] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(Reverse(n)) = ready.pop() {
            order.push(NodeId(n));
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let t = e.target();
                indeg[t.index()] -= 1;
                if indeg[t.index()] == 0 {
                    ready.push(Reverse(t));
                }
            }
        }
        if order.len() != self.g.node_count() {
            let stuck = self.g.node_indices().find(|n| indeg[n.index()] > 0).expect("a node on the cycle");
            return Err(NodeId(stuck));
        }
        Ok(order)
    }

    /// Removes nodes whose value nobody reads and constants nobody reads. Returns how many were removed.
    pub fn dce(&mut self) -> usize {
        let mut removed = 0;
        loop {
            let dead: Vec<NodeId> = self
                .node_ids()
                .filter(|n| {
                    let out = self.node(*n).output;
                    !self.is_output(out) && self.g.edges_directed(n.0, Direction::Outgoing).next().is_none()
                })
                .collect();
            if dead.is_empty() {
                break;
            }
            for n in dead {
                self.remove_node(n);
                removed += 1;
            }
        }
        let mut used = vec![false; self.values.len()];
        for n in self.g.node_indices() {
            for i in &self.g[n].inputs {
                used[i.index()] = true;
            }
        }
        for o in &self.outputs {
            used[o.index()] = true;
        }
        for (i, v) in self.values.iter_mut().enumerate() {
            if matches!(v.def, ValueDef::Const(_)) && !used[i] {
                v.def = ValueDef::Dead;
                removed += 1;
            }
        }
        removed
    }

    /// The location an error about value `v` should name.
    pub fn describe_value(&self, v: ValueId) -> String {
        let val = &self.values[v.index()];
        match (&val.def, &val.name) {
            (ValueDef::Node(n), _) => format!("output of node \"{}\"", self.node(*n).name()),
            (_, Some(name)) => format!("\"{name}\""),
            _ => v.to_string(),
        }
    }
}
