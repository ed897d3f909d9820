//! Builds small ONNX models in Rust for the tests, so the core suite needs no files from outside.
#![allow(dead_code)]
use prost::Message;
use qcc_frontend::onnx::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

pub struct Builder {
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    pub inputs: Vec<ValueInfoProto>,
    pub outputs: Vec<ValueInfoProto>,
    pub opset: i64,
    pub ir_version: i64,
}

pub fn vi(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(if *d < 0 {
                tensor_shape_proto::dimension::Value::DimParam("N".into())
            } else {
                tensor_shape_proto::dimension::Value::DimValue(*d)
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Ints as i32), ints: v.to_vec(), ..Default::default() }
}

pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Int as i32), i: Some(v), ..Default::default() }
}

pub fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Float as i32), f: Some(v), ..Default::default() }
}

pub fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// Deterministic values in [-1, 1).
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

impl Builder {
    pub fn new() -> Builder {
        Builder { nodes: vec![], inits: vec![], inputs: vec![], outputs: vec![], opset: 13, ir_version: 7 }
    }

    pub fn input(&mut self, name: &str, dims: &[i64]) -> &mut Self {
        self.inputs.push(vi(name, dims));
        self
    }

    pub fn output(&mut self, name: &str, dims: &[i64]) -> &mut Self {
        self.outputs.push(vi(name, dims));
        self
    }

    pub fn init(&mut self, name: &str, dims: &[i64], data: Vec<f32>) -> &mut Self {
        self.inits.push(TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            float_data: data,
            ..Default::default()
        });
        self
    }

    pub fn init_i64(&mut self, name: &str, dims: &[i64], data: Vec<i64>) -> &mut Self {
        self.inits.push(TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Int64 as i32),
            int64_data: data,
            ..Default::default()
        });
        self
    }

    pub fn node(&mut self, op: &str, name: &str, ins: &[&str], outs: &[&str], attrs: Vec<AttributeProto>) -> &mut Self {
        self.nodes.push(NodeProto {
            op_type: Some(op.into()),
            name: Some(name.into()),
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: outs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        });
        self
    }

    pub fn model(&self) -> ModelProto {
        ModelProto {
            ir_version: Some(self.ir_version),
            opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(self.opset) }],
            graph: Some(GraphProto {
                name: Some("test".into()),
                node: self.nodes.clone(),
                initializer: self.inits.clone(),
                input: self.inputs.clone(),
                output: self.outputs.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.model().encode_to_vec()
    }
}

/// A small CNN with BatchNormalization, ReLU6, a residual Add, pooling and a classifier head:
/// the shapes of the MobileNets in miniature.
pub fn small_cnn() -> Builder {
    let mut b = Builder::new();
    b.input("image", &[1, 3, 8, 8]).output("logits", &[1, 5]);
    b.init("w0", &[4, 3, 3, 3], values(108, 1)).init("b0", &[4], values(4, 2));
    b.init("bn_s", &[4], values(4, 3).iter().map(|v| 1.0 + 0.5 * v).collect());
    b.init("bn_b", &[4], values(4, 4)).init("bn_m", &[4], values(4, 5));
    b.init("bn_v", &[4], values(4, 6).iter().map(|v| 1.0 + v.abs()).collect());
    b.init("wdw", &[4, 1, 3, 3], values(36, 7)).init("bdw", &[4], values(4, 8));
    b.init("wfc", &[5, 4], values(20, 9)).init("bfc", &[5], values(5, 10));
    b.init("shape", &[2], vec![]).inits.pop();
    b.init_i64("shape", &[2], vec![1, -1]);
    b.node("Conv", "conv0", &["image", "w0", "b0"], &["c0"], vec![ints("pads", &[1, 1, 1, 1]), ints("kernel_shape", &[3, 3])]);
    b.node("BatchNormalization", "bn0", &["c0", "bn_s", "bn_b", "bn_m", "bn_v"], &["n0"], vec![float("epsilon", 1e-5)]);
    b.node("Clip", "relu6_0", &["n0", "lo", "hi"], &["r0"], vec![]);
    b.init("lo", &[], vec![0.0]).init("hi", &[], vec![6.0]);
    b.node("Conv", "dw1", &["r0", "wdw", "bdw"], &["c1"], vec![ints("pads", &[1, 1, 1, 1]), int("group", 4)]);
    b.node("Relu", "relu1", &["c1"], &["r1"], vec![]);
    b.node("Add", "add1", &["r0", "r1"], &["s1"], vec![]);
    b.node("GlobalAveragePool", "gap", &["s1"], &["p"], vec![]);
    b.node("Reshape", "flatten", &["p", "shape"], &["f"], vec![]);
    b.node("Gemm", "fc", &["f", "wfc", "bfc"], &["logits"], vec![int("transB", 1)]);
    b
}
