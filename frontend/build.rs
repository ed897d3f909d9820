//! Compiles the vendored onnx.proto with protox + prost-build, so building needs no `protoc`.
fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"]).expect("vendored onnx.proto must compile");
    prost_build::Config::new().compile_fds(fds).expect("prost-build code generation for onnx.proto");
}
