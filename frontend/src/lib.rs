//! qcc-frontend: reads ONNX models (the vendored onnx.proto of ONNX 1.19.0, compiled by protox +
//! prost-build) into qcc's IR, resolving every shape so later stages see static types.
mod export;
mod import;
mod lower;
mod tensor;

pub use export::{export_onnx, ExportError};
pub use import::{import_bytes, import_file, ImportOptions, Imported, MAX_IR, MAX_OPSET};
pub use tensor::{dtype_from_onnx, tensor_from_proto, tensor_to_proto};

/// The generated ONNX protobuf types.
#[allow(clippy::all)]
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// Why a model could not be imported. Every variant names the node, tensor or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a valid ONNX model: {msg}")]
    Decode { path: String, msg: String },
    #[error("unsupported ONNX IR version {0} (qcc reads IR versions 3 to 12)")]
    IrVersion(i64),
    #[error("unsupported default-domain opset {0} (qcc reads opsets 7 to 24)")]
    Opset(i64),
    #[error("node \"{node}\": unsupported op {op_type} (domain \"{domain}\", opset {opset}); use --allow-unsupported to keep it as an opaque node")]
    Unsupported { node: String, op_type: String, domain: String, opset: i64 },
    #[error("node \"{node}\" ({op_type}): {msg}")]
    Node { node: String, op_type: String, msg: String },
    #[error("tensor \"{name}\": {msg}")]
    Tensor { name: String, msg: String },
    #[error("graph input \"{name}\": {msg}")]
    Input { name: String, msg: String },
    #[error("node \"{node}\" reads \"{input}\", which no node, input or initializer defines")]
    Undefined { node: String, input: String },
    #[error("the graph has a cycle through node \"{node}\"")]
    Cycle { node: String },
    #[error("{0}")]
    Model(String),
}
