//! qcc-ir: the typed graph IR every other qcc crate works on — ops, types carrying quantization
//! parameters, constants, the text form (.qir) with its parser, type inference and the verifier.
pub mod attr;
pub mod graph;
pub mod infer;
pub mod op;
pub mod parse;
pub mod print;
pub mod tensor;
pub mod types;
pub mod verify;

pub use attr::{AttrMap, AttrValue};
pub use graph::{ConstData, Graph, Node, NodeId, Value, ValueDef, ValueId};
pub use infer::infer_type;
pub use op::{Act, CoordTransform, NearestMode, Op, Opaque, PadMode, ResizeMode};
pub use parse::{parse_graph, ParseError};
pub use print::{print_graph, PrintOptions};
pub use tensor::Tensor;
pub use types::{DType, ElemType, QParams, QuantType, Type};
pub use verify::{verify, VerifierErrors, VerifyError};
