//! Compiled code equals the reference interpreter byte for byte: generated quantized networks covering
//! every kernel (strided and dilated convolutions through im2col, pointwise GEMMs, depthwise convolutions,
//! channel counts that are not multiples of 16, residuals fused into convolutions, residual adds, multiplies with and without broadcasting, a sigmoid table,
//! concatenation, pooling, the classifier GEMM) under every
//! weight scheme and activation type, for every instruction-set variant this CPU runs and several thread
//! counts; and the bundled MNIST model.
mod common;
use common::{int, ints, string, values, Builder};
use qcc::calib::{calibrate, quant_config, CalibOptions, CalibSet};
use qcc::codegen::plan::Kernel;
use qcc::codegen::{Compiled, Isa};
use qcc::exec::Exec;
use qcc_ir::{Graph, Tensor};
use qcc_passes::{Instrumentation, OptLevel};
use qcc_runtime::kernels::fnhwc_tasks::FConvSchedule;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qcc-codegen-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A MobileNet-like block stack with awkward channel counts (c1 = 20, c2 = 35).
fn net(h: usize) -> Builder {
    net_batch(h, 1)
}

/// `net` for a batch of `n` images.
fn net_batch(h: usize, n: i64) -> Builder {
    let (c1, c2) = (20usize, 35usize);
    let mut b = Builder::new();
    b.input("x", &[n, 3, h as i64, h as i64]).output("y", &[n, 10]);
    let w = |n: usize, seed: u32, s: f32| values(n, seed).iter().map(|v| v * s).collect::<Vec<f32>>();
    b.init("w0", &[c1 as i64, 3, 3, 3], w(c1 * 27, 1, 0.5)).init("b0", &[c1 as i64], w(c1, 2, 0.2));
    b.init("wdw", &[c1 as i64, 1, 3, 3], w(c1 * 9, 3, 0.8)).init("bdw", &[c1 as i64], w(c1, 4, 0.2));
    b.init("wpw", &[c1 as i64, c1 as i64, 1, 1], w(c1 * c1, 5, 0.3));
    b.init("w4", &[c2 as i64, 2 * c1 as i64, 3, 3], w(c2 * 2 * c1 * 9, 6, 0.15)).init("b4", &[c2 as i64], w(c2, 7, 0.1));
    b.init("w4b", &[c2 as i64, c2 as i64, 3, 3], w(c2 * c2 * 9, 12, 0.1)).init("b4b", &[c2 as i64], w(c2, 13, 0.1));
    b.init("wdw5", &[c2 as i64, 1, 5, 5], w(c2 * 25, 8, 0.3)).init("bdw5", &[c2 as i64], w(c2, 9, 0.1));
    b.init("wfc", &[10, c2 as i64], w(10 * c2, 10, 0.4)).init("bfc", &[10], w(10, 11, 0.1));
    b.init("lo", &[], vec![0.0]).init("hi", &[], vec![6.0]);
    b.init_i64("shape", &[2], vec![n, -1]);
    b.node("Conv", "conv0", &["x", "w0", "b0"], &["c0"], vec![ints("pads", &[1, 1, 1, 1]), ints("strides", &[2, 2])]);
    b.node("Relu", "relu0", &["c0"], &["r0"], vec![]);
    b.node("Conv", "dw1", &["r0", "wdw", "bdw"], &["c1"], vec![ints("pads", &[1, 1, 1, 1]), int("group", c1 as i64)]);
    b.node("Clip", "relu6_1", &["c1", "lo", "hi"], &["r1"], vec![]);
    b.node("Conv", "pw2", &["r1", "wpw"], &["c2"], vec![]);
    b.node("Add", "add3", &["r1", "c2"], &["s3"], vec![]);
    b.node("Relu", "relu3", &["s3"], &["rs3"], vec![]);
    // Squeeze-and-excitation (a broadcasting mul), a same-shape mul and a channel concatenation.
    b.node("GlobalAveragePool", "se_gap", &["rs3"], &["se0"], vec![]);
    b.node("Sigmoid", "se_sig", &["se0"], &["se1"], vec![]);
    b.node("Mul", "se_mul", &["rs3", "se1"], &["m3"], vec![]);
    // An add of two computed values that no conv absorbs (pw2's add becomes its residual), and a
    // multiply, each followed by an activation that fuse-epilogue makes theirs (a clamp, a float one).
    b.node("Add", "addm3", &["m3", "r1"], &["am3"], vec![]);
    b.node("Relu", "reluam3", &["am3"], &["ram3"], vec![]);
    b.node("Mul", "mul3", &["ram3", "r1"], &["mm3"], vec![]);
    b.node("LeakyRelu", "leakymm3", &["mm3"], &["lmm3"], vec![]);
    b.node("Concat", "cat3", &["lmm3", "r1"], &["cat3"], vec![int("axis", 1)]);
    b.node("Conv", "conv4", &["cat3", "w4", "b4"], &["c4"], vec![ints("pads", &[2, 2, 2, 2]), ints("dilations", &[2, 2])]);
    b.node("Relu", "relu4", &["c4"], &["r4"], vec![]);
    // A 3x3 conv (im2col) taking r4 as its residual, with an activation requantized on the float path.
    b.node("Conv", "conv4b", &["r4", "w4b", "b4b"], &["c4b"], vec![ints("pads", &[1, 1, 1, 1])]);
    b.node("Add", "add4b", &["r4", "c4b"], &["s4b"], vec![]);
    b.node("LeakyRelu", "leaky4b", &["s4b"], &["r4b"], vec![]);
    b.node(
        "Conv",
        "dw5",
        &["r4b", "wdw5", "bdw5"],
        &["c5"],
        vec![ints("pads", &[2, 2, 2, 2]), ints("strides", &[2, 2]), int("group", c2 as i64)],
    );
    b.node("Relu", "relu5", &["c5"], &["r5"], vec![]);
    b.node(
        "MaxPool",
        "pool6",
        &["r5"],
        &["p6"],
        vec![ints("kernel_shape", &[3, 3]), ints("strides", &[2, 2]), ints("pads", &[1, 1, 1, 1])],
    );
    b.node(
        "AveragePool",
        "avg7",
        &["p6"],
        &["a7"],
        vec![ints("kernel_shape", &[2, 2]), ints("pads", &[0, 0, 1, 1]), int("count_include_pad", 1)],
    );
    b.node("GlobalAveragePool", "gap", &["a7"], &["g"], vec![]);
    b.node("Reshape", "flatten", &["g", "shape"], &["f"], vec![]);
    b.node("Gemm", "fc", &["f", "wfc", "bfc"], &["y"], vec![int("transB", 1)]);
    b
}

fn input(h: usize, seed: u32) -> Tensor {
    Tensor::from_f32(&[1, 3, h, h], values(3 * h * h, seed).iter().map(|v| v * 2.0).collect()).unwrap()
}

/// Quantized variants of `net` for each scheme (weights, activations, act type).
fn quantized(h: usize, configs: &[(&str, &str, &str)]) -> Vec<(String, Graph)> {
    quantized_with(h, configs, &[])
}

/// The same with the outputs of the `int16` nodes stored as i16 (mixed precision).
fn quantized_with(h: usize, configs: &[(&str, &str, &str)], int16: &[&str]) -> Vec<(String, Graph)> {
    // Tests run in parallel and several quantize the same net: each call gets its own folder.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let d = tmp(&format!("net{h}-{}", CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let model = d.join("net.onnx");
    std::fs::write(&model, net(h).bytes()).unwrap();
    let cal = d.join("calib");
    std::fs::create_dir_all(&cal).unwrap();
    for i in 0..8 {
        qcc::npy::write_npy(&cal.join(format!("s{i}.npy")), &input(h, 100 + i)).unwrap();
    }
    let g = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
    let set = CalibSet::open(&cal, &["x".to_string()], None, None).unwrap();
    let inst = Instrumentation { verify: true, ..Default::default() };
    let c = calibrate(g, OptLevel::O2, CalibOptions { ema_c: 0.01, ..Default::default() }, &set, &inst, &mut std::io::sink()).unwrap();
    configs
        .iter()
        .map(|(w, a, t)| {
            let mut cfg = quant_config(w, a, t, "minmax").unwrap();
            cfg.bias_correct = true;
            cfg.int16 = int16.iter().map(|n| n.to_string()).collect();
            (
                format!("{w}/{a}/{t}{}", if int16.is_empty() { String::new() } else { format!("+i16:{int16:?}") }),
                c.finish(&cfg, &inst, &mut std::io::sink()).unwrap(),
            )
        })
        .collect()
}

fn isas() -> Vec<Isa> {
    let all = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni];
    let v: Vec<Isa> = all.into_iter().filter(|i| i.supported()).collect();
    if v.len() < all.len() {
        eprintln!("NOTE: this CPU runs only {v:?}; the other kernel variants are not tested here");
    }
    v
}

/// The model `b` (written to `d`), calibrated at -O2 on `samples` and quantized with symmetric per-channel
/// weights, u8 asymmetric activations and minmax ranges.
fn quantize_builder(b: &Builder, d: &std::path::Path, samples: &[Tensor]) -> Graph {
    quantize_builder_with(b, d, samples, "sym-per-channel")
}

/// `quantize_builder` with the weight scheme `weights`.
fn quantize_builder_with(b: &Builder, d: &std::path::Path, samples: &[Tensor], weights: &str) -> Graph {
    let model = d.join("net.onnx");
    std::fs::write(&model, b.bytes()).unwrap();
    let cal = d.join("calib");
    std::fs::create_dir_all(&cal).unwrap();
    for (i, t) in samples.iter().enumerate() {
        qcc::npy::write_npy(&cal.join(format!("s{i}.npy")), t).unwrap();
    }
    let g = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
    let input = g.value(g.inputs()[0]).name.clone().unwrap();
    let set = CalibSet::open(&cal, &[input], None, None).unwrap();
    let inst = Instrumentation { verify: true, ..Default::default() };
    let c = calibrate(g, OptLevel::O2, CalibOptions { ema_c: 0.01, ..Default::default() }, &set, &inst, &mut std::io::sink()).unwrap();
    c.finish(&quant_config(weights, "asym", "u8", "minmax").unwrap(), &inst, &mut std::io::sink()).unwrap()
}

#[test]
fn compiled_networks_equal_the_interpreter_byte_for_byte() {
    let configs = [
        ("sym-per-channel", "asym", "u8"),
        ("asym-per-tensor", "asym", "u8"),
        ("asym-per-channel", "sym", "i8"),
        ("sym-per-tensor", "asym", "i8"),
        ("sym-per-channel", "asym", "i16"),
    ];
    // 8-bit layers next to 16-bit ones: a conv reading i16, a depthwise conv and the classifier writing
    // i16, an add, pw2 with its residual (named by its fused add3) and a concatenation in between.
    let mixed = ["dw1", "add3", "addm3", "conv4", "dw5", "fc"];
    for h in [17, 32] {
        let nets = quantized(h, &configs).into_iter().chain(quantized_with(h, &configs[..2], &mixed));
        for (name, g) in nets {
            let ops: Vec<&str> = g.node_ids().map(|n| g.node(n).op.name()).collect();
            for op in ["qconv", "qgemm", "qadd", "qmul", "qconcat", "qaverage_pool", "qglobal_average_pool", "max_pool"] {
                assert!(ops.contains(&op), "{name}: no {op} in {ops:?}");
            }
            // fuse-epilogue gave the add and the multiply their activations.
            use qcc_ir::{Act, Op};
            let qadd_relu = g.node_ids().find(|n| matches!(g.node(*n).op, Op::QAdd { act: Some(Act::Relu) }));
            let qadd_relu = qadd_relu.unwrap_or_else(|| panic!("{name}: no qadd with relu"));
            // --int16 names the add (addm3) although its observer sits after the relu.
            let i16_out = g.ty(g.node(qadd_relu).output).dtype() == Some(qcc_ir::DType::I16);
            assert_eq!(i16_out, name.contains("i16:") || name.contains("/i16"), "{name}: qadd output type");
            assert!(
                g.node_ids().any(|n| matches!(g.node(n).op, Op::QMul { act: Some(Act::LeakyRelu { .. }) })),
                "{name}: no qmul with leaky"
            );
            // fuse-residual gave pw2 (pointwise, relu) and conv4b (3x3, leaky relu) their residuals.
            let residuals = g.node_ids().filter(|n| matches!(g.node(*n).op, qcc_ir::Op::QConv { .. }) && g.node(*n).inputs.len() == 4);
            assert_eq!(residuals.count(), 2, "{name}");
            let want: Vec<Vec<Tensor>> = (0..3).map(|s| qcc_runtime::run(&g, vec![input(h, s)]).unwrap()).collect();
            for isa in isas() {
                let c = Compiled::new(&g, isa).unwrap();
                // Every node has a kernel: the comparison tests kernels, not the interpreter.
                let hosts = c.plan.steps.iter().filter(|s| s.kernel == Kernel::Host).count();
                assert_eq!(hosts, 0, "{name}: {}", c.plan.summary());
                if name.contains("i16") {
                    assert!(c.plan.steps.iter().any(|s| s.kernel == Kernel::WideConv), "{name}: {}", c.plan.summary());
                }
                // Squeeze-and-excitation's sigmoid between 8-bit values is a table (qact).
                if name.contains("/u8") || name.contains("/i8") {
                    assert!(c.plan.steps.iter().any(|s| s.kernel == Kernel::Lut), "{name}: {}", c.plan.summary());
                }
                for threads in [1, 3] {
                    qcc_runtime::kernels::pool::set_threads(threads);
                    for (s, w) in want.iter().enumerate() {
                        let got = c.run(&[input(h, s as u32)]).unwrap();
                        assert_eq!(&got, w, "{name}, {isa:?}, {threads} threads, h {h}, input {s}");
                    }
                }
            }
        }
    }
}

#[test]
fn compiled_mnist_equals_the_interpreter() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let digits = root.join("examples/mnist/digits");
    let g = qcc::driver::load_model(&root.join("examples/mnist/mnist_cnn.onnx"), &Default::default()).unwrap().graph;
    let set = CalibSet::open(&digits, &["input".to_string()], None, Some(50)).unwrap();
    let inst = Instrumentation::default();
    let c = calibrate(g, OptLevel::O2, CalibOptions { ema_c: 0.01, ..Default::default() }, &set, &inst, &mut std::io::sink()).unwrap();
    let q = c.finish(&quant_config("sym-per-channel", "asym", "u8", "percentile:99.999").unwrap(), &inst, &mut std::io::sink()).unwrap();
    let x = Exec::new(q.clone(), false, Isa::detect()).unwrap();
    for i in (0..200).step_by(13) {
        let t = qcc::npy::read_npy(&digits.join(format!("digit_{i:03}.npy"))).unwrap();
        let t = qcc::data::fit_input(t, &[1, 1, 28, 28], "digit").unwrap();
        assert_eq!(x.run(vec![t.clone()]).unwrap(), qcc_runtime::run(&q, vec![t]).unwrap(), "digit {i}");
    }
}

#[test]
fn wrong_inputs_are_errors() {
    let (_, g) = quantized(17, &[("sym-per-channel", "asym", "u8")]).remove(0);
    let c = Compiled::new(&g, Isa::Scalar).unwrap();
    let e = c.run(&[input(16, 0)]).unwrap_err().to_string();
    assert!(e.contains("input 0 (\"x\")") && e.contains("expected f32[1, 3, 17, 17]"), "{e}");
    let e = c.run(&[]).unwrap_err().to_string();
    assert!(e.contains("takes 1 inputs"), "{e}");
}

/// Biases at the edge of i32 make the interpreter's accumulator clamp act; the kernels must saturate the
/// same way (their sums wrap, so they detect it from the bias's sign).
#[test]
fn saturating_accumulators_match_the_interpreter() {
    for (name, mut g) in quantized(17, &[("sym-per-channel", "asym", "u8"), ("asym-per-tensor", "asym", "i8")]) {
        let convs: Vec<_> =
            g.node_ids().filter(|n| matches!(g.node(*n).op, qcc_ir::Op::QConv { .. }) && g.node(*n).inputs.len() >= 3).collect();
        assert!(convs.len() >= 5, "{name}");
        for n in convs {
            let b = g.node(n).inputs[2];
            let mut v: Vec<i64> = g.const_tensor(b).unwrap().to_i64_vec().unwrap();
            v[0] = i32::MAX as i64 - 3;
            v[1] = i32::MIN as i64 + 3;
            let len = v.len();
            let t = Tensor::I32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[len]), v.iter().map(|x| *x as i32).collect()).unwrap());
            let nb = g.add_const_typed(qcc_ir::ConstData::Data(t), g.ty(b).clone(), None);
            g.set_input(n, 2, nb);
        }
        for isa in isas() {
            let c = Compiled::new(&g, isa).unwrap();
            assert_eq!(c.plan.steps.iter().filter(|s| s.kernel == Kernel::Host).count(), 0, "{name}: {}", c.plan.summary());
            for s in 0..3 {
                let want = qcc_runtime::run(&g, vec![input(17, s)]).unwrap();
                assert_eq!(c.run(&[input(17, s)]).unwrap(), want, "{name}, {isa:?}, input {s}");
            }
        }
    }
}

/// Float layers run compiled f32 kernels (convolution as GEMM, depthwise with strides, Gemm, pooling,
/// elementwise) and agree with the interpreter within float rounding.
#[test]
fn compiled_float_networks_match_the_interpreter() {
    // 45: rows wider than one 16-column block of the depthwise kernel, with a partial last block.
    for h in [17, 32, 45] {
        let d = tmp(&format!("float{h}"));
        let model = d.join("net.onnx");
        std::fs::write(&model, net(h).bytes()).unwrap();
        let mut g = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
        qcc::driver::compile(&mut g, OptLevel::O2, Instrumentation::default(), &mut std::io::sink()).unwrap();
        for isa in isas() {
            let c = Compiled::new(&g, isa).unwrap();
            assert_eq!(c.plan.steps.iter().filter(|s| s.kernel == Kernel::Host).count(), 0, "{}", c.plan.summary());
            for s in 0..3 {
                let want = qcc_runtime::run(&g, vec![input(h, s)]).unwrap()[0].to_f32_vec();
                let got = c.run(&[input(h, s)]).unwrap()[0].to_f32_vec();
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                let err = want.iter().zip(&got).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
                assert!(err < 1e-4, "{isa:?}, h {h}, input {s}: relative error {err}");
            }
        }
    }
}

/// Float batches compile too: each convolution and the classifier run per image (one step each), and
/// equal the interpreter within float rounding.
#[test]
fn compiled_float_batches_match_the_interpreter() {
    let (h, n) = (17usize, 3usize);
    let d = tmp("float-batch");
    let model = d.join("net.onnx");
    std::fs::write(&model, net_batch(h, n as i64).bytes()).unwrap();
    let mut g = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
    qcc::driver::compile(&mut g, OptLevel::O2, Instrumentation::default(), &mut std::io::sink()).unwrap();
    let x = |s: u32| Tensor::from_f32(&[n, 3, h, h], values(n * 3 * h * h, s).iter().map(|v| v * 2.0).collect()).unwrap();
    for isa in isas() {
        let c = Compiled::new(&g, isa).unwrap();
        assert_eq!(c.plan.steps.iter().filter(|s| s.kernel == Kernel::Host).count(), 0, "{}", c.plan.summary());
        for s in 0..2 {
            let want = qcc_runtime::run(&g, vec![x(s)]).unwrap()[0].to_f32_vec();
            let got = c.run(&[x(s)]).unwrap()[0].to_f32_vec();
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            let err = want.iter().zip(&got).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            assert!(err < 1e-4, "{isa:?}, input {s}: relative error {err}");
            // Each image's logits depend on that image only.
            let one = Tensor::from_f32(&[1, 3, h, h], x(s).to_f32_vec()[3 * h * h..6 * h * h].to_vec()).unwrap();
            let single = net(h);
            let m1 = d.join("one.onnx");
            std::fs::write(&m1, single.bytes()).unwrap();
            let mut g1 = qcc::driver::load_model(&m1, &Default::default()).unwrap().graph;
            qcc::driver::compile(&mut g1, OptLevel::O2, Instrumentation::default(), &mut std::io::sink()).unwrap();
            let y1 = qcc_runtime::run(&g1, vec![one]).unwrap()[0].to_f32_vec();
            let err1 = y1.iter().zip(&got[10..20]).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            assert!(err1 < 1e-4, "{isa:?}, input {s}: image 1 differs from its own run by {err1}");
        }
    }
}

/// A model compiled for a batch of 3 calibrates on single samples (each repeated across the batch): its
/// activations get the batch-1 model's quantization parameters, and its int8 code equals the interpreter.
#[test]
fn batched_models_calibrate_on_single_samples() {
    let h = 17usize;
    let d = tmp("int8-batch");
    let cal = d.join("calib");
    std::fs::create_dir_all(&cal).unwrap();
    for i in 0..6 {
        qcc::npy::write_npy(&cal.join(format!("s{i}.npy")), &input(h, 200 + i)).unwrap();
    }
    let inst = Instrumentation { verify: true, ..Default::default() };
    let quantize = |n: i64| {
        let model = d.join(format!("net{n}.onnx"));
        std::fs::write(&model, net_batch(h, n).bytes()).unwrap();
        let g = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
        let set = CalibSet::open(&cal, &["x".to_string()], None, None).unwrap();
        let c = calibrate(g, OptLevel::O2, CalibOptions::default(), &set, &inst, &mut std::io::sink()).unwrap();
        c.finish(&quant_config("sym-per-channel", "asym", "u8", "percentile:99.9").unwrap(), &inst, &mut std::io::sink()).unwrap()
    };
    let act_params = |g: &Graph| {
        let mut v: Vec<String> =
            g.value_ids().filter(|v| !g.is_const(*v)).filter_map(|v| g.ty(v).quant().map(|q| format!("{:?}", q.params))).collect();
        v.sort();
        v
    };
    let (q1, q3) = (quantize(1), quantize(3));
    assert!(!act_params(&q1).is_empty());
    assert_eq!(act_params(&q3), act_params(&q1));
    let x = Tensor::from_f32(&[3, 3, h, h], values(9 * h * h, 77).iter().map(|v| v * 2.0).collect()).unwrap();
    for isa in isas() {
        let c = Compiled::new(&q3, isa).unwrap();
        assert_eq!(c.run(std::slice::from_ref(&x)).unwrap(), qcc_runtime::run(&q3, vec![x.clone()]).unwrap(), "{isa:?}");
    }
}

/// A 1x1 convolution with a stride and no padding (ResNet's downsampling shortcut) gathers its pixels
/// first and runs as a plain GEMM (measured faster than reading the strided windows in place); a padded
/// one keeps the implicit path. Both byte-identical to the interpreter, odd sizes included.
#[test]
fn strided_pointwise_convolutions_equal_the_interpreter() {
    let mut b = Builder::new();
    b.input("x", &[1, 8, 11, 11]).output("y", &[1, 12, 4, 4]);
    b.init("w0", &[16, 8, 1, 1], values(128, 81).iter().map(|v| v * 0.5).collect());
    b.init("w1", &[12, 16, 1, 1], values(192, 82).iter().map(|v| v * 0.4).collect());
    b.node("Conv", "down0", &["x", "w0"], &["c0"], vec![ints("strides", &[2, 2])]);
    b.node("Relu", "relu0", &["c0"], &["r0"], vec![]);
    b.node("Conv", "down1", &["r0", "w1"], &["y"], vec![ints("strides", &[2, 2]), ints("pads", &[1, 1, 1, 1])]);
    let sample = |s: u32| Tensor::from_f32(&[1, 8, 11, 11], values(968, s).iter().map(|v| v * 2.0).collect()).unwrap();
    let q = quantize_builder(&b, &tmp("strided-pointwise"), &(90..94).map(sample).collect::<Vec<_>>());
    for isa in isas() {
        let comp = Compiled::new(&q, isa).unwrap();
        assert_eq!(comp.plan.steps.iter().filter(|s| s.kernel == Kernel::Host).count(), 0, "{}", comp.plan.summary());
        assert!(comp.plan.steps.iter().any(|s| s.kernel == Kernel::Im2col && s.node == "down0"), "{}", comp.plan.summary());
        for s in 0..3 {
            assert_eq!(comp.run(&[sample(s)]).unwrap(), qcc_runtime::run(&q, vec![sample(s)]).unwrap(), "{isa:?}, sample {s}");
        }
    }
}

/// The generated loop nests of convolutions read in place (codegen/src/nest.rs) address every window as
/// the interpreter does: taps of 4k channels and kernel rows of RGB inputs, strides, dilations,
/// asymmetric pads, windows that never lie inside the image, tiles that cross output rows and images
/// (batch 2), one and two column panels, weights with and without zero points; at 1 and 3 threads.
#[test]
fn gemm_loop_nests_address_every_window() {
    // (cin, cout, input h × w, kernel h × w, strides, pads (top, left, bottom, right), dilations)
    type Case = (i64, i64, [i64; 2], [i64; 2], [i64; 2], [i64; 4], [i64; 2]);
    let cases: [Case; 7] = [
        (8, 20, [9, 7], [3, 3], [1, 1], [1, 1, 1, 1], [1, 1]),
        (8, 70, [9, 11], [3, 3], [2, 2], [0, 1, 1, 0], [1, 1]),
        (4, 16, [10, 9], [3, 3], [1, 1], [2, 2, 2, 2], [2, 2]),
        (3, 20, [15, 13], [7, 7], [2, 2], [3, 3, 3, 3], [1, 1]),
        (3, 24, [6, 5], [3, 3], [1, 1], [1, 1, 1, 1], [1, 1]),
        (8, 12, [3, 3], [5, 5], [1, 1], [2, 2, 2, 2], [1, 1]),
        (8, 20, [5, 9], [1, 3], [1, 2], [0, 1, 0, 1], [1, 1]),
    ];
    for (i, (cin, cout, [h, w], [kh, kw], st, pads, dil)) in cases.into_iter().enumerate() {
        let oh = (h + pads[0] + pads[2] - dil[0] * (kh - 1) - 1) / st[0] + 1;
        let ow = (w + pads[1] + pads[3] - dil[1] * (kw - 1) - 1) / st[1] + 1;
        let mut b = Builder::new();
        b.input("x", &[2, cin, h, w]).output("y", &[2, cout, oh, ow]);
        let nw = (cout * cin * kh * kw) as usize;
        b.init("w", &[cout, cin, kh, kw], values(nw, 60 + i as u32).iter().map(|v| v * 0.5).collect());
        b.init("b", &[cout], values(cout as usize, 70 + i as u32));
        let attrs = vec![ints("strides", &st), ints("pads", &pads), ints("dilations", &dil)];
        b.node("Conv", "conv", &["x", "w", "b"], &["c"], attrs);
        b.node("Relu", "relu", &["c"], &["y"], vec![]);
        let shape = [2usize, cin as usize, h as usize, w as usize];
        let n: usize = shape.iter().product();
        let sample = |s: u32| Tensor::from_f32(&shape, values(n, s).iter().map(|v| v * 2.0).collect()).unwrap();
        let samples: Vec<Tensor> = (80..84).map(sample).collect();
        for weights in ["sym-per-channel", "asym-per-channel"] {
            let q = quantize_builder_with(&b, &tmp(&format!("nest{i}{weights}")), &samples, weights);
            let want: Vec<_> = (0..2).map(|s| qcc_runtime::run(&q, vec![sample(s)]).unwrap()).collect();
            for isa in isas() {
                let comp = Compiled::new(&q, isa).unwrap();
                let gemm = comp.plan.steps.iter().filter(|s| s.kernel == Kernel::Gemm).count();
                assert_eq!(gemm, 1, "case {i}, {weights}: {}", comp.plan.summary());
                // Symmetric weights are read in place on VNNI (asymmetric ones too, but for RGB inputs).
                if isa == Isa::Avx512Vnni && weights.starts_with("sym") {
                    assert!(!comp.plan.steps.iter().any(|s| s.kernel == Kernel::Im2col), "case {i}: {}", comp.plan.summary());
                }
                for threads in [1, 3] {
                    qcc_runtime::kernels::pool::set_threads(threads);
                    for (s, w) in want.iter().enumerate() {
                        assert_eq!(&comp.run(&[sample(s as u32)]).unwrap(), w, "case {i}, {weights}, {isa:?}, {threads} threads");
                    }
                }
            }
        }
    }
}

/// The row kernels' generated loop nests (depthwise convolution, max and average pooling) address every
/// row: a batch of 3 with 15 output rows per image, so tasks of two rows cross from one image into the
/// next; int8 equals the interpreter byte for byte and float (channels-last depthwise and max pooling on
/// AVX-512) within rounding, at 1 and 3 threads.
#[test]
fn row_loop_nests_address_every_row() {
    let (n, c, h) = (3usize, 24usize, 15usize);
    let mut b = Builder::new();
    b.input("x", &[n as i64, c as i64, h as i64, h as i64]).output("y", &[n as i64, c as i64, h as i64, h as i64]);
    b.init("w", &[c as i64, 1, 3, 3], values(c * 9, 90).iter().map(|v| v * 0.8).collect());
    b.init("b", &[c as i64], values(c, 91));
    b.init("p0", &[c as i64, c as i64, 1, 1], values(c * c, 92).iter().map(|v| v * 0.3).collect());
    b.init("p1", &[c as i64, c as i64, 1, 1], values(c * c, 93).iter().map(|v| v * 0.3).collect());
    // Pointwise convolutions around them, so the float values between are channels-last on AVX-512.
    b.node("Conv", "pw0", &["x", "p0"], &["x0"], vec![]);
    b.node("Conv", "dw", &["x0", "w", "b"], &["d"], vec![ints("pads", &[1, 1, 1, 1]), int("group", c as i64)]);
    b.node("Relu", "relu", &["d"], &["r"], vec![]);
    b.node("MaxPool", "max", &["r"], &["m"], vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])]);
    let avg = vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1]), int("count_include_pad", 0)];
    b.node("AveragePool", "avg", &["m"], &["a"], avg);
    b.node("Conv", "pw1", &["a", "p1"], &["y"], vec![]);
    let shape = [n, c, h, h];
    let len: usize = shape.iter().product();
    let sample = |s: u32| Tensor::from_f32(&shape, values(len, s).iter().map(|v| v * 2.0).collect()).unwrap();
    let d = tmp("row-nests");
    let q = quantize_builder(&b, &d, &(100..104).map(sample).collect::<Vec<_>>());
    let model = d.join("float.onnx");
    std::fs::write(&model, b.bytes()).unwrap();
    let mut f = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
    qcc::driver::compile(&mut f, OptLevel::O2, Instrumentation::default(), &mut std::io::sink()).unwrap();
    for isa in isas() {
        let (cq, cf) = (Compiled::new(&q, isa).unwrap(), Compiled::new(&f, isa).unwrap());
        for k in [Kernel::DwConv, Kernel::MaxPool, Kernel::QAvgPool] {
            assert_eq!(cq.plan.steps.iter().filter(|s| s.kernel == k).count(), 1, "{isa:?} {k:?}: {}", cq.plan.summary());
        }
        if isa == Isa::Avx512Vnni {
            let rows = cf.plan.steps.iter().filter(|s| s.kernel == Kernel::FDwNhwc).count();
            assert_eq!(rows, 2, "depthwise and max pooling: {}", cf.plan.summary());
        }
        for threads in [1, 3] {
            qcc_runtime::kernels::pool::set_threads(threads);
            for s in 0..2 {
                let x = sample(s);
                assert_eq!(cq.run(std::slice::from_ref(&x)).unwrap(), qcc_runtime::run(&q, vec![x.clone()]).unwrap(), "{isa:?}, {threads}");
                let want = qcc_runtime::run(&f, vec![x.clone()]).unwrap()[0].to_f32_vec();
                let got = cf.run(&[x]).unwrap()[0].to_f32_vec();
                let err = want.iter().zip(&got).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(err < 1e-4, "{isa:?}, {threads} threads: float differs by {err}");
            }
        }
    }
    qcc_runtime::kernels::pool::set_threads(0);
}

/// Grouped convolutions that are not depthwise (ResNeXt, RegNet, ShuffleNet) compile, one GEMM per group:
/// int8 reading each group's channels in place (cin per group a multiple of 4, strided too), gathering
/// them (6 per group), or as a pointwise GEMM; float as one product per group and image, or (channels-last,
/// groups of fewer than 16 outputs) one step across groups. Int8 equals the interpreter byte for byte on
/// every ISA and thread count, float within rounding; batch 2. The QDQ export re-imports to the same
/// integer results.
#[test]
fn grouped_convolutions_compile() {
    let mut b = Builder::new();
    b.input("x", &[2, 16, 9, 9]).output("y", &[2, 24, 5, 5]);
    let w = |n: usize, seed: u32, s: f32| values(n, seed).iter().map(|v| v * s).collect::<Vec<f32>>();
    // g1: 16 → 32 in 4 groups (4 → 8), 3x3; g2: 32 → 24 in 2 groups, 1x1; g3: 24 → 24 in 4 groups (6 → 6),
    // 3x3 (gathered); g5: 24 → 24 in 6 groups (4 → 4), 3x3; g4: 24 → 24 in 3 groups (8 → 8), 3x3 stride 2
    // with a bias.
    b.init("w1", &[32, 4, 3, 3], w(32 * 36, 1, 0.5)).init("w2", &[24, 16, 1, 1], w(24 * 16, 2, 0.4));
    b.init("w3", &[24, 6, 3, 3], w(24 * 54, 3, 0.4)).init("w4", &[24, 8, 3, 3], w(24 * 72, 4, 0.3));
    b.init("b4", &[24], w(24, 5, 0.2)).init("w5", &[24, 4, 3, 3], w(24 * 36, 6, 0.5));
    let p1 = vec![int("group", 4), ints("pads", &[1, 1, 1, 1])];
    b.node("Conv", "g1", &["x", "w1"], &["c1"], p1).node("Relu", "r1", &["c1"], &["a1"], vec![]);
    b.node("Conv", "g2", &["a1", "w2"], &["c2"], vec![int("group", 2)]).node("Relu", "r2", &["c2"], &["a2"], vec![]);
    let p3 = vec![int("group", 4), ints("pads", &[1, 1, 1, 1])];
    b.node("Conv", "g3", &["a2", "w3"], &["c3"], p3).node("Relu", "r3", &["c3"], &["a3"], vec![]);
    let p5 = vec![int("group", 6), ints("pads", &[1, 1, 1, 1])];
    b.node("Conv", "g5", &["a3", "w5"], &["c5"], p5).node("Relu", "r5", &["c5"], &["a5"], vec![]);
    let p4 = vec![int("group", 3), ints("pads", &[1, 1, 1, 1]), ints("strides", &[2, 2])];
    b.node("Conv", "g4", &["a5", "w4", "b4"], &["y"], p4);
    let shape = [2usize, 16, 9, 9];
    let n: usize = shape.iter().product();
    let sample = |s: u32| Tensor::from_f32(&shape, values(n, s).iter().map(|v| v * 2.0).collect()).unwrap();
    let d = tmp("grouped");
    let q = quantize_builder(&b, &d, &(90..94).map(sample).collect::<Vec<_>>());
    let mut f = qcc::driver::load_model(&d.join("net.onnx"), &Default::default()).unwrap().graph;
    qcc::driver::compile(&mut f, OptLevel::O2, Instrumentation::default(), &mut std::io::sink()).unwrap();
    for isa in isas() {
        let (cq, cf) = (Compiled::new(&q, isa).unwrap(), Compiled::new(&f, isa).unwrap());
        for c in [&cq, &cf] {
            assert_eq!(c.plan.steps.iter().filter(|s| s.kernel == Kernel::Host).count(), 0, "{}", c.plan.summary());
        }
        // One product per group (and per image for float).
        assert_eq!(cq.plan.steps.iter().filter(|s| s.kernel == Kernel::Gemm).count(), 4 + 2 + 4 + 6 + 3, "{}", cq.plan.summary());
        // Channels-last (AVX-512), g5's groups of 4 outputs are one step across groups for the batch (g1
        // reads the graph input and g4 writes the graph output, both in logical order).
        let products = cf.plan.steps.iter().filter(|s| matches!(s.kernel, Kernel::FGemm | Kernel::FConvNhwc | Kernel::FGroupNhwc)).count();
        let across = if isa == Isa::Avx512Vnni { 1 } else { 0 };
        assert_eq!(cf.plan.steps.iter().filter(|s| s.kernel == Kernel::FGroupNhwc).count(), across, "{}", cf.plan.summary());
        assert_eq!(products, across + 2 * (4 + 2 + 4 + 6 * (1 - across) + 3), "{}", cf.plan.summary());
        for threads in [1, 3] {
            qcc_runtime::kernels::pool::set_threads(threads);
            for s in 0..2 {
                let want = qcc_runtime::run(&q, vec![sample(s)]).unwrap();
                assert_eq!(cq.run(&[sample(s)]).unwrap(), want, "{isa:?}, {threads} threads, sample {s}");
                let want = qcc_runtime::run(&f, vec![sample(s)]).unwrap()[0].to_f32_vec();
                let got = cf.run(&[sample(s)]).unwrap()[0].to_f32_vec();
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                let err = want.iter().zip(&got).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
                assert!(err < 1e-4, "{isa:?}, sample {s}: relative error {err}");
            }
        }
    }
    // The quantized graph's QDQ export keeps the groups: re-imported, it computes the same bytes.
    let path = d.join("q.onnx");
    std::fs::write(&path, qcc_frontend::export_onnx(&q).unwrap()).unwrap();
    let mut q2 = qcc::driver::load_model(&path, &Default::default()).unwrap().graph;
    qcc::driver::compile(&mut q2, OptLevel::O2, Instrumentation::default(), &mut std::io::sink()).unwrap();
    for s in 0..2 {
        assert_eq!(qcc_runtime::run(&q2, vec![sample(s)]).unwrap(), qcc_runtime::run(&q, vec![sample(s)]).unwrap(), "export, sample {s}");
    }
}

/// Softmax is compiled (no host step, so object files take it) and computes the interpreter's bits: over
/// the last, a middle and the channel axis, and with opset 11's flattening of the trailing dimensions.
#[test]
fn compiled_softmax_equals_the_interpreter() {
    let dims = [2usize, 5, 3, 7];
    let n: usize = dims.iter().product();
    for (opset, axis) in [(13, -1), (13, 1), (13, 2), (11, 1)] {
        let mut b = Builder::new();
        b.opset = opset;
        b.input("x", &[2, 5, 3, 7]).output("y", &[2, 5, 3, 7]);
        b.node("Softmax", "sm", &["x"], &["y"], vec![int("axis", axis)]);
        let d = tmp(&format!("softmax{opset}{axis}"));
        let model = d.join("net.onnx");
        std::fs::write(&model, b.bytes()).unwrap();
        let g = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
        for isa in isas() {
            let c = Compiled::new(&g, isa).unwrap();
            assert!(c.plan.steps.iter().any(|s| s.kernel == Kernel::Softmax), "{}", c.plan.summary());
            assert_eq!(c.plan.steps.iter().filter(|s| s.kernel == Kernel::Host).count(), 0, "{}", c.plan.summary());
            for s in 0..2 {
                let x = Tensor::from_f32(&dims, values(n, 40 + s).iter().map(|v| v * 6.0).collect()).unwrap();
                let want = qcc_runtime::run(&g, vec![x.clone()]).unwrap()[0].to_f32_vec();
                let got = c.run(&[x]).unwrap()[0].to_f32_vec();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
                assert_eq!(bits(&got), bits(&want), "opset {opset}, axis {axis}, {isa:?}");
            }
        }
    }
}

/// Transposes and slices are compiled as strided copies over any storage: f32 values of rank 3 to 5, a
/// strided slice, and an int8 network reading an NHWC input (TF's layout) whose integer values are
/// stored channels-last, with a split along the channels and a transpose between two integer values;
/// all byte-identical to the interpreter.
#[test]
fn compiled_transposes_and_slices_equal_the_interpreter() {
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    for (dims, perm) in
        [(vec![2usize, 3, 4], vec![2i64, 0, 1]), (vec![2, 3, 4, 5], vec![3, 1, 0, 2]), (vec![2, 3, 1, 5, 2], vec![4, 2, 0, 3, 1])]
    {
        let mut b = Builder::new();
        let od: Vec<i64> = perm.iter().map(|p| dims[*p as usize] as i64).collect();
        b.input("x", &dims.iter().map(|d| *d as i64).collect::<Vec<_>>()).output("y", &od);
        b.node("Transpose", "t", &["x"], &["y"], vec![ints("perm", &perm)]);
        let d = tmp(&format!("transpose{}", dims.len()));
        let model = d.join("net.onnx");
        std::fs::write(&model, b.bytes()).unwrap();
        let g = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
        let c = Compiled::new(&g, Isa::Scalar).unwrap();
        assert!(c.plan.steps.iter().any(|s| s.kernel == Kernel::Strided), "{}", c.plan.summary());
        let n: usize = dims.iter().product();
        let x = Tensor::from_f32(&dims, values(n, 7)).unwrap();
        let want = qcc_runtime::run(&g, vec![x.clone()]).unwrap()[0].to_f32_vec();
        assert_eq!(bits(&c.run(&[x]).unwrap()[0].to_f32_vec()), bits(&want), "{dims:?} {perm:?}");
    }
    // A slice with a start, an end from the back and a step of 2.
    let mut b = Builder::new();
    b.input("x", &[2, 3, 9, 8]).output("y", &[2, 3, 4, 6]);
    for (name, v) in [("starts", [1, 1]), ("ends", [9, -1]), ("axes", [2, 3]), ("steps", [2, 1])] {
        b.init_i64(name, &[2], v.to_vec());
    }
    b.node("Slice", "cut", &["x", "starts", "ends", "axes", "steps"], &["y"], vec![]);
    let d = tmp("slice");
    let model = d.join("net.onnx");
    std::fs::write(&model, b.bytes()).unwrap();
    let g = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
    let c = Compiled::new(&g, Isa::Scalar).unwrap();
    assert!(c.plan.steps.iter().any(|s| s.kernel == Kernel::Strided), "{}", c.plan.summary());
    let x = Tensor::from_f32(&[2, 3, 9, 8], values(432, 8)).unwrap();
    let want = qcc_runtime::run(&g, vec![x.clone()]).unwrap()[0].to_f32_vec();
    assert_eq!(bits(&c.run(&[x]).unwrap()[0].to_f32_vec()), bits(&want), "slice");
    // int8: NHWC input → transpose → conv → split of the channels, concatenated the other way round →
    // transpose to NHWC → transpose back → conv → reshape to 3-D (channels-last integers to logical
    // order) → concatenated with itself → reshape to 4-D (back to channels-last) → conv → output.
    let mut b = Builder::new();
    b.input("x", &[1, 9, 7, 3]).output("y", &[1, 3, 9, 14]);
    b.init("w0", &[6, 3, 3, 3], values(162, 1).iter().map(|v| v * 0.4).collect());
    b.init("w1", &[4, 6, 1, 1], values(24, 2).iter().map(|v| v * 0.5).collect());
    b.node("Transpose", "to_nchw", &["x"], &["xt"], vec![ints("perm", &[0, 3, 1, 2])]);
    b.node("Conv", "conv0", &["xt", "w0"], &["c0"], vec![ints("pads", &[1, 1, 1, 1])]);
    b.node("Relu", "relu0", &["c0"], &["r0"], vec![]);
    b.init_i64("parts", &[2], vec![2, 4]);
    b.node("Split", "split", &["r0", "parts"], &["lo", "hi"], vec![int("axis", 1)]);
    b.node("Concat", "swap", &["hi", "lo"], &["r0s"], vec![int("axis", 1)]);
    b.node("Transpose", "to_nhwc", &["r0s"], &["r0t"], vec![ints("perm", &[0, 2, 3, 1])]);
    b.node("Transpose", "back", &["r0t"], &["r0b"], vec![ints("perm", &[0, 3, 1, 2])]);
    b.node("Conv", "conv1", &["r0b", "w1"], &["c1"], vec![]);
    b.init_i64("flat", &[3], vec![1, 4, 63]).init_i64("wide", &[4], vec![1, 4, 9, 14]);
    b.init("w2", &[3, 4, 1, 1], values(12, 3).iter().map(|v| v * 0.5).collect());
    b.node("Reshape", "to_3d", &["c1", "flat"], &["c1f"], vec![]);
    b.node("Concat", "twice", &["c1f", "c1f"], &["c1d"], vec![int("axis", 2)]);
    b.node("Reshape", "to_4d", &["c1d", "wide"], &["c1w"], vec![]);
    b.node("Conv", "conv2", &["c1w", "w2"], &["y"], vec![]);
    let sample = |s: u32| Tensor::from_f32(&[1, 9, 7, 3], values(189, s).iter().map(|v| v * 2.0).collect()).unwrap();
    let q = quantize_builder(&b, &tmp("transpose-int8"), &(50..54).map(sample).collect::<Vec<_>>());
    for isa in isas() {
        let comp = Compiled::new(&q, isa).unwrap();
        let summary = comp.plan.summary();
        // Three transposes, two slices and the two reshapes that change the layout.
        assert_eq!(comp.plan.steps.iter().filter(|s| s.kernel == Kernel::Strided).count(), 7, "{summary}");
        assert_eq!(comp.plan.steps.iter().filter(|s| s.kernel == Kernel::Host).count(), 0, "{summary}");
        for s in 0..2 {
            let want = qcc_runtime::run(&q, vec![sample(s)]).unwrap()[0].to_f32_vec();
            assert_eq!(bits(&comp.run(&[sample(s)]).unwrap()[0].to_f32_vec()), bits(&want), "{isa:?}, sample {s}");
        }
    }
}

/// The QDQ ONNX export of every integer op (qmul, qconcat, qaverage_pool included) re-imports to a graph
/// that computes the same bytes.
#[test]
fn qdq_export_of_every_integer_op_reimports_exactly() {
    let d = tmp("qdq");
    for (name, g) in quantized(17, &[("sym-per-channel", "asym", "u8"), ("asym-per-tensor", "sym", "i8")]) {
        let path = d.join("q.onnx");
        std::fs::write(&path, qcc_frontend::export_onnx(&g).unwrap()).unwrap();
        let mut g2 = qcc::driver::load_model(&path, &Default::default()).unwrap().graph;
        qcc::driver::compile(&mut g2, OptLevel::O2, Instrumentation::default(), &mut std::io::sink()).unwrap();
        let ops = |g: &Graph| {
            let mut v: Vec<String> = g.node_ids().map(|n| g.node(n).op.name().to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(ops(&g2), ops(&g), "{name}");
        for s in 0..3 {
            let (a, b) = (qcc_runtime::run(&g, vec![input(17, s)]).unwrap(), qcc_runtime::run(&g2, vec![input(17, s)]).unwrap());
            assert_eq!(a, b, "{name}, input {s}");
        }
    }
}

/// A CNN of the ops older and newer exporters write besides the MobileNets' (Gelu exact and tanh, Elu and Mish after
/// convolutions, PRelu per channel and with one slope, LRN, GlobalMaxPool, LogSoftmax): compiled in float within 1e-4 of the interpreter
/// with the activations fused into the convolutions; quantized, byte-identical to the interpreter for
/// every instruction set; and its float ONNX export re-imports to the same results.
#[test]
fn classic_and_newer_ops_compile_and_quantize() {
    let h = 12usize;
    let mut b = Builder::new();
    b.opset = 20;
    b.input("x", &[1, 3, h as i64, h as i64]).output("y", &[1, 10]);
    let w = |n: usize, seed: u32, s: f32| values(n, seed).iter().map(|v| v * s).collect::<Vec<f32>>();
    b.init("w0", &[8, 3, 3, 3], w(216, 61, 0.5)).init("w1", &[8, 8, 3, 3], w(576, 62, 0.3));
    b.init("slope", &[8, 1, 1], w(8, 63, 0.5)).init("w2", &[8, 8, 1, 1], w(64, 64, 0.5)).init("w3", &[8, 8, 1, 1], w(64, 65, 0.5));
    b.init("wf", &[10, 8], w(80, 66, 0.5)).init("bf", &[10], w(10, 67, 0.1));
    b.init("w4", &[8, 8, 1, 1], w(64, 68, 0.5)).init("slope1", &[1], vec![0.25]).init("w5", &[8, 8, 1, 1], w(64, 69, 0.5));
    b.node("Conv", "c0", &["x", "w0"], &["a0"], vec![ints("pads", &[1, 1, 1, 1])]);
    b.node("Gelu", "gelu", &["a0"], &["g0"], vec![]);
    b.node("Conv", "c1", &["g0", "w1"], &["a1"], vec![ints("pads", &[1, 1, 1, 1])]);
    b.node("PRelu", "prelu", &["a1", "slope"], &["p1"], vec![]);
    b.node("LRN", "lrn", &["p1"], &["l1"], vec![int("size", 3)]);
    b.node("Conv", "c2", &["l1", "w2"], &["a2"], vec![]);
    b.node("Elu", "elu", &["a2"], &["e2"], vec![]);
    b.node("Conv", "c3", &["e2", "w3"], &["a3"], vec![]);
    b.node("Mish", "mish", &["a3"], &["m3"], vec![]);
    b.node("Conv", "c4", &["m3", "w4"], &["a4"], vec![]);
    // One slope for all channels: a LeakyRelu.
    b.node("PRelu", "prelu1", &["a4", "slope1"], &["p4"], vec![]);
    b.node("Conv", "c5", &["p4", "w5"], &["a5"], vec![]);
    b.node("Gelu", "gelu_tanh", &["a5"], &["g5"], vec![string("approximate", "tanh")]);
    b.node("GlobalMaxPool", "gmp", &["g5"], &["gp"], vec![]);
    b.node("Flatten", "flat", &["gp"], &["f"], vec![]);
    b.node("Gemm", "fc", &["f", "wf", "bf"], &["z"], vec![int("transB", 1)]);
    b.node("LogSoftmax", "lsm", &["z"], &["y"], vec![]);
    let d = tmp("classic");
    let model = d.join("net.onnx");
    std::fs::write(&model, b.bytes()).unwrap();
    let x = |s: u32| Tensor::from_f32(&[1, 3, h, h], values(3 * h * h, 70 + s).iter().map(|v| v * 2.0).collect()).unwrap();

    let g0 = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
    let mut g = g0.clone();
    qcc::driver::compile(&mut g, OptLevel::O2, Instrumentation::default(), &mut std::io::sink()).unwrap();
    let text = qcc_ir::print_graph(&g, Default::default());
    for fused in ["act=\"gelu\"", "act=\"gelu_tanh\"", "act=\"elu(1.0)\"", "act=\"mish\"", "act=\"leaky_relu(0.25)\""] {
        assert!(text.contains(fused), "{fused} not fused into its conv:\n{text}");
    }
    let close = |want: &[f32], got: &[f32], what: &str| {
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = want.iter().zip(got).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(err < 1e-4, "{what}: relative error {err}");
    };
    for s in 0..2 {
        close(
            &qcc_runtime::run(&g0, vec![x(s)]).unwrap()[0].to_f32_vec(),
            &qcc_runtime::run(&g, vec![x(s)]).unwrap()[0].to_f32_vec(),
            "-O2",
        );
    }
    for isa in isas() {
        let c = Compiled::new(&g, isa).unwrap();
        let hosts: Vec<&str> = c.plan.steps.iter().filter(|s| s.kernel == Kernel::Host).map(|s| s.node.as_str()).collect();
        // LRN and LogSoftmax's two reductions have no kernels; everything else is compiled.
        assert_eq!(hosts, ["lrn", "lsm", "lsm"], "{}", c.plan.summary());
        for s in 0..2 {
            let want = qcc_runtime::run(&g, vec![x(s)]).unwrap()[0].to_f32_vec();
            close(&want, &c.run(&[x(s)]).unwrap()[0].to_f32_vec(), &format!("float {isa:?}"));
        }
    }

    // The float graph's ONNX export (Gelu, both forms, and Mish as opset-17 formulas) computes the same.
    let exported = d.join("export.onnx");
    std::fs::write(&exported, qcc_frontend::export_onnx(&g).unwrap()).unwrap();
    let g2 = qcc::driver::load_model(&exported, &Default::default()).unwrap().graph;
    for s in 0..2 {
        let want = qcc_runtime::run(&g, vec![x(s)]).unwrap()[0].to_f32_vec();
        close(&want, &qcc_runtime::run(&g2, vec![x(s)]).unwrap()[0].to_f32_vec(), "export");
    }

    let q = quantize_builder(&b, &tmp("classic-int8"), &(100..108).map(x).collect::<Vec<_>>());
    let qtext = qcc_ir::print_graph(&q, Default::default());
    assert!(qtext.contains("qconv") && qtext.contains("act=\"mish\""), "{qtext}");
    for isa in isas() {
        let c = Compiled::new(&q, isa).unwrap();
        for s in 0..2 {
            assert_eq!(c.run(&[x(s)]).unwrap(), qcc_runtime::run(&q, vec![x(s)]).unwrap(), "int8 {isa:?}, input {s}");
        }
    }
}

/// Integer adds and multiplies the compiler generates whole (codegen/src/elementwise.rs) equal the
/// interpreter byte for byte: u8 and i8 values, relu, leaky and clip activations, a fused
/// `dequantize → clip → quantize`, several chunks with a tail shorter than a vector; and the sigmoid
/// table lookup. Each such step is asserted to be generated on CPUs with AVX2.
#[test]
fn elementwise_steps_equal_the_interpreter() {
    // 8 × 47 × 47 = 17672 elements: two tasks, the second 1288 long (8 past a multiple of 16).
    let (c, h) = (8usize, 47usize);
    let mut b = Builder::new();
    b.input("x", &[1, c as i64, h as i64, h as i64]).output("y", &[1, c as i64, h as i64, h as i64]);
    b.init("w1", &[c as i64, c as i64, 1, 1], values(c * c, 70).iter().map(|v| v * 0.6).collect());
    b.init("w2", &[c as i64, c as i64, 1, 1], values(c * c, 71).iter().map(|v| v * 0.4).collect());
    b.init("lo", &[], vec![-0.5]).init("hi", &[], vec![1.5]);
    b.node("Conv", "c1", &["x", "w1"], &["c1"], vec![]);
    b.node("Conv", "c2", &["x", "w2"], &["c2"], vec![]);
    b.node("Add", "add", &["c1", "c2"], &["s"], vec![]);
    b.node("Relu", "relu", &["s"], &["r"], vec![]);
    b.node("Mul", "mul", &["c1", "c2"], &["m"], vec![]);
    b.node("LeakyRelu", "leaky", &["m"], &["l"], vec![]);
    b.node("Add", "add2", &["r", "l"], &["s2"], vec![]);
    // A sigmoid between 8-bit values that no add absorbs: a table.
    b.node("MaxPool", "pool", &["s2"], &["p"], vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])]);
    b.node("Sigmoid", "sig", &["p"], &["g"], vec![]);
    b.node("Mul", "mul2", &["g", "c1"], &["m2"], vec![]);
    b.node("Clip", "clip", &["m2", "lo", "hi"], &["y"], vec![]);
    let shape = [1, c, h, h];
    let len: usize = shape.iter().product();
    let sample = |s: u32| Tensor::from_f32(&shape, values(len, s).iter().map(|v| v * 3.0).collect()).unwrap();
    let d = tmp("elementwise");
    std::fs::write(d.join("net.onnx"), b.bytes()).unwrap();
    let cal = d.join("calib");
    std::fs::create_dir_all(&cal).unwrap();
    for s in 0..4 {
        qcc::npy::write_npy(&cal.join(format!("s{s}.npy")), &sample(100 + s)).unwrap();
    }
    let g = qcc::driver::load_model(&d.join("net.onnx"), &Default::default()).unwrap().graph;
    let set = CalibSet::open(&cal, &["x".to_string()], None, None).unwrap();
    let inst = Instrumentation { verify: true, ..Default::default() };
    let cb = calibrate(g, OptLevel::O2, CalibOptions::default(), &set, &inst, &mut std::io::sink()).unwrap();
    for (a, t) in [("asym", "u8"), ("sym", "i8")] {
        let q = cb.finish(&quant_config("sym-per-channel", a, t, "minmax").unwrap(), &inst, &mut std::io::sink()).unwrap();
        for isa in isas() {
            let cq = Compiled::new(&q, isa).unwrap();
            let adds: Vec<_> = cq.plan.steps.iter().filter(|s| s.kernel == Kernel::QAdd).collect();
            assert_eq!(adds.len(), 4, "{t} {isa:?}: {}", cq.plan.summary());
            assert!(cq.plan.steps.iter().any(|s| s.kernel == Kernel::Lut), "{t} {isa:?}: {}", cq.plan.summary());
            if isa != Isa::Scalar {
                for s in &adds {
                    let hdr = qcc_runtime::abi::QAddHdr::decode(&cq.plan.blob.words(s.hdr, 64));
                    assert!(qcc::codegen::elementwise::qadd_generated(isa, &hdr), "{t} {isa:?} {}: {hdr:?}", s.node);
                }
            }
            for threads in [1, 3] {
                qcc_runtime::kernels::pool::set_threads(threads);
                for s in 0..2 {
                    let x = sample(s);
                    assert_eq!(cq.run(std::slice::from_ref(&x)).unwrap(), qcc_runtime::run(&q, vec![x]).unwrap(), "{t} {isa:?}, {threads}");
                }
            }
        }
    }
    // i8 and u8 operands mixed, an i8 output, operands broadcast per channel and per pixel (rows of 20
    // channels: one vector and a tail), and a `dequantize → clip → quantize` after the add that its
    // kernel applies (an 8-bit grid 0.9 wide: values saturate at both ends); 20 × 37 × 53 = 39220
    // elements (three tasks, the last 4 past a multiple of 16). The scales make the sums land on halves, so
    // rounding ties to even matters. The last add's tiny scale keeps the NaN check `quantize` leaves out
    // for ordinary scales (its outputs saturate).
    let text = r#"graph @t(%0: f32[1,20,37,53] "a", %1: f32[1,20,37,53] "b", %13: f32[1,20,1,1] "c", %14: f32[1,1,37,53] "d") -> (%7: f32[1,20,37,53] "y", %8: f32[1,20,37,53] "z", %12: f32[1,20,37,53] "w", %17: f32[1,20,37,53] "u", %20: f32[1,20,37,53] "v") {
  %2 = quantize %0 : i8[1,20,37,53] q<0.05, -3>
  %3 = quantize %1 : u8[1,20,37,53] q<0.025, 131>
  %4 = qadd %2, %3 : i8[1,20,37,53] q<0.1, 5>
  %5 = dequantize %4 : f32[1,20,37,53]
  %6 = clip %5 {max=0.6, min=-0.3} : f32[1,20,37,53]
  %9 = quantize %6 : u8[1,20,37,53] q<0.0035, 90>
  %7 = dequantize %9 : f32[1,20,37,53]
  %10 = qmul %2, %3 {act="leaky_relu(0.1)"} : i8[1,20,37,53] q<0.02, -1>
  %8 = dequantize %10 : f32[1,20,37,53]
  %11 = qadd %2, %3 : u8[1,20,37,53] q<1e-35, 7>
  %12 = dequantize %11 : f32[1,20,37,53]
  %15 = quantize %13 : u8[1,20,1,1] q<0.02, 128>
  %16 = qmul %2, %15 : i8[1,20,37,53] q<0.04, 3>
  %17 = dequantize %16 : f32[1,20,37,53]
  %18 = quantize %14 : i8[1,1,37,53] q<0.03, -2>
  %19 = qadd %18, %3 {act="relu"} : u8[1,20,37,53] q<0.05, 0>
  %20 = dequantize %19 : f32[1,20,37,53]
}
"#;
    let q = qcc_ir::parse::parse_graph(text).unwrap();
    let shape = [1, 20, 37, 53];
    let n: usize = shape.iter().product();
    for isa in isas() {
        let cq = Compiled::new(&q, isa).unwrap();
        let adds: Vec<_> = cq.plan.steps.iter().filter(|s| s.kernel == Kernel::QAdd).collect();
        assert_eq!(adds.len(), 5, "{isa:?}: {}", cq.plan.summary());
        let bcast = adds.iter().filter(|s| qcc_runtime::abi::QAddHdr::decode(&cq.plan.blob.words(s.hdr, 64)).bcast).count();
        assert_eq!(bcast, 2, "{isa:?}: a per-channel and a per-pixel operand");
        let mid = adds.iter().map(|s| qcc_runtime::abi::QAddHdr::decode(&cq.plan.blob.words(s.hdr, 64))).filter(|h| h.mid_on).count();
        assert_eq!(mid, 1, "{isa:?}: the clamp is the add's");
        if isa != Isa::Scalar {
            for s in &adds {
                let hdr = qcc_runtime::abi::QAddHdr::decode(&cq.plan.blob.words(s.hdr, 64));
                assert!(qcc::codegen::elementwise::qadd_generated(isa, &hdr), "{isa:?} {}: {hdr:?}", s.node);
            }
        }
        for s in 0..3 {
            // Multiples of half a step of each input, spanning past both ends of its range.
            let grid = |seed: u32, step: f32| values(n, seed).iter().map(|v| (v * 300.0).round() * step).collect::<Vec<f32>>();
            let a = Tensor::from_f32(&shape, grid(s, 0.025)).unwrap();
            let b = Tensor::from_f32(&shape, grid(s + 50, 0.0125)).unwrap();
            let c = Tensor::from_f32(&[1, 20, 1, 1], values(20, s + 60).iter().map(|v| v * 3.0).collect()).unwrap();
            let d = Tensor::from_f32(&[1, 1, 37, 53], values(37 * 53, s + 70).iter().map(|v| v * 4.0).collect()).unwrap();
            let xs = vec![a, b, c, d];
            let want = qcc_runtime::run(&q, xs.clone()).unwrap();
            assert_eq!(cq.run(&xs).unwrap(), want, "{isa:?}, sample {s}");
        }
    }
    qcc_runtime::kernels::pool::set_threads(0);
}

/// f32 binary and unary steps the compiler generates (codegen/src/felementwise.rs) equal the
/// interpreter bit for bit: same-shape operands (three tasks, a tail shorter than a vector), per-channel
/// and per-pixel operands, a constant one and a scalar, every binary op and every generated unary op, on
/// inputs with NaN, infinities, signed zeros and halves (max and min of ±0 pairs, floor and ceil of
/// ties, square roots of negatives). Each is asserted to be generated on CPUs with AVX2; exp is not
/// (the runtime's kernel runs it). On AVX-512 a binary and a unary op reading a convolution's
/// channels-last output into a graph output (logical order) reorder it with a strided copy.
#[test]
fn float_elementwise_steps_equal_the_interpreter() {
    let (c, h, w) = (20usize, 37usize, 53usize);
    let t = |dims: &str| format!("f32[{dims}]");
    let full = t(&format!("1,{c},{h},{w}"));
    let consts = values(c, 90).iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ");
    let mut body = vec![
        format!("  const @k: {} = [{consts}]", t(&format!("1,{c},1,1"))),
        "  const @two: f32[] = [2.0]".to_string(),
        // An identity 1×1 convolution: exact, and channels-last on AVX-512, so the ops reading it and
        // writing graph outputs (logical order) reorder their values.
        format!(
            "  const @eye: f32[{c},{c},1,1] = [{}]",
            (0..c * c).map(|i| if i % (c + 1) == 0 { "1.0" } else { "0.0" }).collect::<Vec<_>>().join(", ")
        ),
        format!("  %e1 = conv %e, @eye {{dilations=[1, 1], group=1, pads=[0, 0, 0, 0], strides=[1, 1]}} : {full} loc(\"eye\")"),
    ];
    let mut nodes: Vec<(String, String)> = vec![];
    for (op, a, b) in [
        ("add", "%a", "%b"),
        ("sub", "@two", "%a"),
        ("mul", "%a", "%c"),
        ("div", "%a", "%b"),
        ("max", "%a", "%d"),
        ("min", "%b", "@k"),
        ("max", "%a", "%b"),
        ("min", "%a", "%b"),
        ("mul", "%e1", "%c"),
        ("add", "%e1", "%a"),
    ] {
        nodes.push((format!("{op} {a}, {b}"), format!("{op}_{}", nodes.len())));
    }
    for op in [
        "relu",
        "clip {max=1.5, min=-0.5}",
        "leaky_relu {alpha=0.1}",
        "hard_sigmoid {alpha=0.2, beta=0.5}",
        "hard_swish",
        "neg",
        "abs",
        "sqrt",
        "reciprocal",
        "floor",
        "ceil",
        "exp",
        "hard_swish",
    ] {
        let (name, attrs) = op.split_once(' ').unwrap_or((op, ""));
        let arg = match name {
            _ if nodes.len() == 22 => "%e1",
            n if n.starts_with("hard") => "%a",
            _ => "%b",
        };
        nodes.push((format!("{name} {arg} {attrs}"), format!("{name}_{}", nodes.len())));
    }
    body.extend(nodes.iter().map(|(text, out)| format!("  %{out} = {text} : {full} loc(\"{out}\")")));
    let outs: Vec<String> = nodes.iter().map(|(_, out)| format!("%{out}: {full}")).collect();
    let text = format!(
        "graph @t(%a: {full} \"a\", %b: {full} \"b\", %c: {} \"c\", %d: {} \"d\", %e: {full} \"e\") -> ({}) {{\n{}\n}}\n",
        t(&format!("1,{c},1,1")),
        t(&format!("1,1,{h},{w}")),
        outs.join(", "),
        body.join("\n")
    );
    let g = qcc_ir::parse::parse_graph(&text).unwrap();
    let n = c * h * w;
    // Multiples of a half with every tenth value special, so ties, zeros and NaN meet in both operands.
    let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 0.5, -0.5, -2.5, 3.0, 1e-40];
    let sample = |len: usize, seed: u32| {
        let v = values(len, seed);
        v.iter()
            .enumerate()
            .map(|(i, x)| if i % 10 == 3 { special[(i / 10) % special.len()] } else { (x * 8.0).round() / 2.0 })
            .collect::<Vec<f32>>()
    };
    for isa in isas() {
        let cg = Compiled::new(&g, isa).unwrap();
        let steps: Vec<_> = cg.plan.steps.iter().filter(|s| matches!(s.kernel, Kernel::Binary | Kernel::Unary)).collect();
        assert_eq!(steps.len(), 23, "{isa:?}: {}", cg.plan.summary());
        // The three ops on the convolution's channels-last output reorder it (AVX-512 only).
        let reorders = cg.plan.steps.iter().filter(|s| s.kernel == Kernel::Strided).count();
        assert_eq!(reorders, if isa == Isa::Avx512Vnni { 3 } else { 0 }, "{isa:?}: {}", cg.plan.summary());
        for s in &steps {
            let words = cg.plan.blob.words(s.hdr, 64);
            let generated = match s.kernel {
                Kernel::Binary => {
                    qcc::codegen::felementwise::binary_generated(isa, &qcc_runtime::abi::BinaryHdr::decode(&words), &cg.plan.blob)
                }
                _ => qcc::codegen::felementwise::unary_generated(isa, &qcc_runtime::abi::UnaryHdr::decode(&words)),
            };
            // add_9 reads one operand channels-last and one in planes on AVX-512: the runtime's kernel.
            let mixed = isa == Isa::Avx512Vnni && s.node == "add_9";
            assert_eq!(generated, isa != Isa::Scalar && !s.node.starts_with("exp") && !mixed, "{isa:?} {}", s.node);
        }
        for threads in [1, 3] {
            qcc_runtime::kernels::pool::set_threads(threads);
            for seed in 0..2 {
                let xs = vec![
                    Tensor::from_f32(&[1, c, h, w], sample(n, seed)).unwrap(),
                    Tensor::from_f32(&[1, c, h, w], sample(n, seed + 10)).unwrap(),
                    Tensor::from_f32(&[1, c, 1, 1], sample(c, seed + 20)).unwrap(),
                    Tensor::from_f32(&[1, 1, h, w], sample(h * w, seed + 30)).unwrap(),
                    // Halves without specials: the identity convolution passes them on exactly.
                    Tensor::from_f32(&[1, c, h, w], values(n, seed + 40).iter().map(|x| (x * 8.0).round() / 2.0).collect()).unwrap(),
                ];
                let want = qcc_runtime::run(&g, xs.clone()).unwrap();
                let got = cg.run(&xs).unwrap();
                for ((wv, gv), name) in want.iter().zip(&got).zip(&outs) {
                    let bits = |t: &Tensor| t.to_f32_vec().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
                    let (wb, gb) = (bits(wv), bits(gv));
                    let bad = wb.iter().zip(&gb).position(|(x, y)| x != y);
                    assert!(
                        bad.is_none(),
                        "{isa:?}, {threads} threads, {name}: element {bad:?}: {:?} != {:?}",
                        bad.map(|i| f32::from_bits(gb[i])),
                        bad.map(|i| f32::from_bits(wb[i]))
                    );
                }
            }
        }
    }
    qcc_runtime::kernels::pool::set_threads(0);
}

/// Quantize and dequantize steps the compiler generates (codegen/src/elementwise.rs) equal the
/// interpreter byte for byte: u8 and i8, NaN, infinities, values past both ends and on half steps, tails
/// shorter than a vector; and the quantize of planes into a convolution's channels-last input and the
/// dequantize of its output back into planes, with channel counts a multiple of 4 and 3 or 1 past one,
/// and pixels past a multiple of 4; the global average pooling of that output (7 channels, and 21:
/// one vector of 16 and 5 one at a time) and its concatenation with itself, copied (the output's
/// parameters) and requantized (rows of 7 and 21: a tail, and a vector plus a tail). Each such step is asserted to be generated wherever the CPU has SSE4.1 (every non-scalar ISA).
#[test]
fn quantize_and_dequantize_steps_equal_the_interpreter() {
    // 37 × 47 pixels: two tasks of the dequantize into planes, the second 715 pixels long (3 past a
    // multiple of 4); and 6661 values in logical order (a tail of 5 past the vectors).
    let (h, w, n) = (37usize, 47usize, 6661usize);
    for (ci, c, t, z) in [(4usize, 7usize, "u8", 131), (7, 21, "i8", -5)] {
        let weights: Vec<String> = values(c * ci, c as u32).iter().map(|v| format!("{}", (v * 127.0).round())).collect();
        let (zp, c2) = (z / 2 + 3, 2 * c);
        let text = format!(
            r#"graph @t(%0: f32[1,{ci},{h},{w}] "x", %6: f32[1,{n}] "v") -> (%3: f32[1,{c},{h},{w}] "y", %5: f32[1,{n}] "z", %8: f32[1,{c},1,1] "p", %10: f32[1,{c2},{h},{w}] "k", %12: f32[1,{c2},{h},{w}] "r") {{
  const @w: i8[{c},{ci},1,1] q<0.01, 0, -127..127> = [{}]
  %1 = quantize %0 : u8[1,{ci},{h},{w}] q<0.02, 120>
  %2 = qconv %1, @w {{dilations=[1, 1], group=1, pads=[0, 0, 0, 0], strides=[1, 1]}} : {t}[1,{c},{h},{w}] q<0.004, {z}>
  %3 = dequantize %2 : f32[1,{c},{h},{w}]
  %4 = quantize %6 : {t}[1,{n}] q<0.013, {z}>
  %5 = dequantize %4 : f32[1,{n}]
  %7 = qglobal_average_pool %2 : {t}[1,{c},1,1] q<0.0023, {zp}>
  %8 = dequantize %7 : f32[1,{c},1,1]
  %9 = qconcat %2, %2 {{axis=1}} : {t}[1,{c2},{h},{w}] q<0.004, {z}>
  %10 = dequantize %9 : f32[1,{c2},{h},{w}]
  %11 = qconcat %2, %2 {{axis=1}} : {t}[1,{c2},{h},{w}] q<0.0047, {zp}>
  %12 = dequantize %11 : f32[1,{c2},{h},{w}]
}}"#,
            weights.join(", ")
        );
        let q = qcc_ir::parse::parse_graph(&text).unwrap();
        for isa in isas() {
            let cq = Compiled::new(&q, isa).unwrap();
            let hdr = |s: &qcc::codegen::plan::Step| cq.plan.blob.words(s.hdr, 64);
            let (mut planes, mut pixels, mut copies) = (0, 0, 0);
            for s in &cq.plan.steps {
                let generated = match s.kernel {
                    Kernel::Quantize => {
                        let h = qcc_runtime::abi::QuantizeHdr::decode(&hdr(s));
                        pixels += h.to_nhwc as usize;
                        qcc::codegen::elementwise::quantize_generated(isa, &h)
                    }
                    Kernel::Dequantize => {
                        let h = qcc_runtime::abi::DequantizeHdr::decode(&hdr(s));
                        planes += h.from_nhwc as usize;
                        qcc::codegen::elementwise::dequantize_generated(isa, &h)
                    }
                    Kernel::QGap => qcc::codegen::elementwise::qgap_generated(isa, &qcc_runtime::abi::QGapHdr::decode(&hdr(s))),
                    Kernel::RequantRows => {
                        let h = qcc_runtime::abi::RequantRowsHdr::decode(&hdr(s));
                        copies += (h.copy > 0) as usize;
                        qcc::codegen::elementwise::requant_rows_generated(isa, &h)
                    }
                    _ => true,
                };
                assert!(generated || isa == Isa::Scalar, "{t} {isa:?} {}: not generated", s.node);
            }
            if isa == Isa::Avx512Vnni {
                let summary = cq.plan.summary();
                // The pooled output and the concatenations are channels-last too.
                assert_eq!((pixels, planes), (1, 4), "{t}: the convolution's input and output are channels-last: {summary}");
            }
            if isa != Isa::Scalar {
                assert_eq!(copies, 2, "{t} {isa:?}: the first concatenation copies its inputs' rows");
            }
            for s in 0..3u32 {
                let mut v: Vec<f32> = values(n, s + 90).iter().map(|v| (v * 500.0).round() * 0.0065).collect();
                for (i, special) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, 0.0065 * 3.0].into_iter().enumerate() {
                    v[(i * 997 + s as usize * 13) % n] = special;
                    v[n - 1 - i] = special;
                }
                let mut x: Vec<f32> = values(ci * h * w, s + 95).iter().map(|v| (v * 200.0).round() * 0.01).collect();
                // NaN in the first and the last channel (a remainder one for 7 channels) and in the pixels past
                // the last block of 4.
                let (hw, s) = (h * w, s as usize);
                for at in [s * 31, (ci - 1) * hw + 5 + s, hw - 1 - s] {
                    x[at] = f32::NAN;
                }
                x[ci * hw - 1 - s] = 1e30;
                let xs = vec![Tensor::from_f32(&[1, ci, h, w], x).unwrap(), Tensor::from_f32(&[1, n], v).unwrap()];
                let want = qcc_runtime::run(&q, xs.clone()).unwrap();
                let got = cq.run(&xs).unwrap();
                for (k, (a, b)) in want.iter().zip(&got).enumerate() {
                    let (a, b) = (a.to_f32_vec(), b.to_f32_vec());
                    let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{t} {isa:?}, sample {s}, output {k}");
                }
            }
        }
    }
}

/// Float pooling, unary ops and depthwise convolutions that read the graph input (logical order) keep
/// that order on AVX-512 — they have kernels for either layout, not between them — so none is left to
/// the interpreter; the pointwise convolutions after them read the logical order themselves. Results
/// within rounding of the interpreter on every ISA.
#[test]
fn float_layers_on_the_graph_input_compile() {
    let (c, h) = (8usize, 20usize);
    let mut b = Builder::new();
    b.input("x", &[1, c as i64, h as i64, h as i64]).output("y1", &[1, 16, 10, 10]).output("y2", &[1, 16, h as i64, h as i64]);
    let w = |n: usize, seed: u32, s: f32| values(n, seed).iter().map(|v| v * s).collect::<Vec<f32>>();
    b.init("wd", &[c as i64, 1, 3, 3], w(c * 9, 80, 0.5)).init("bd", &[c as i64], w(c, 81, 0.1));
    b.init("wd2", &[c as i64, 1, 3, 3], w(c * 9, 82, 0.5));
    b.init("wp", &[16, c as i64, 1, 1], w(16 * c, 83, 0.4)).init("wp2", &[16, c as i64, 1, 1], w(16 * c, 84, 0.4));
    b.node("MaxPool", "max", &["x"], &["p"], vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])]);
    b.node("Relu", "relu", &["p"], &["r"], vec![]);
    b.node("Conv", "dw", &["r", "wd", "bd"], &["d"], vec![ints("pads", &[1, 1, 1, 1]), int("group", c as i64)]);
    b.node("Conv", "pw", &["d", "wp"], &["y1"], vec![]);
    let avg = vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])];
    b.node("AveragePool", "avg", &["x"], &["a"], avg);
    b.node("Conv", "dw2", &["a", "wd2"], &["d2"], vec![ints("pads", &[1, 1, 1, 1]), int("group", c as i64)]);
    b.node("Conv", "pw2", &["d2", "wp2"], &["y2"], vec![]);
    let d = tmp("float-input-layers");
    let model = d.join("net.onnx");
    std::fs::write(&model, b.bytes()).unwrap();
    let mut f = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
    qcc::driver::compile(&mut f, OptLevel::O2, Instrumentation::default(), &mut std::io::sink()).unwrap();
    let x = Tensor::from_f32(&[1, c, h, h], values(c * h * h, 5).iter().map(|v| v * 2.0).collect()).unwrap();
    let want = qcc_runtime::run(&f, vec![x.clone()]).unwrap();
    for isa in isas() {
        let cf = Compiled::new(&f, isa).unwrap();
        assert!(cf.plan.steps.iter().all(|s| s.kernel != Kernel::Host), "{isa:?}: {}", cf.plan.summary());
        let got = cf.run(std::slice::from_ref(&x)).unwrap();
        for (w, g) in want.iter().zip(&got) {
            let err = w.to_f32_vec().iter().zip(g.to_f32_vec()).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err < 1e-4, "{isa:?}: float differs by {err}");
        }
    }
}

/// f32 global average pooling, generated over planes (a graph input) and channels-last (a convolution's
/// output on AVX-512), equals the interpreter bit for bit: both take `pool_sum`'s order of additions.
/// Pixel counts 1 to 100 leave every remainder mod 8; 21 channels leave a tail past four lanes; two
/// images check the per-image addressing.
#[test]
fn float_global_average_pooling_equals_the_interpreter() {
    let c = 21usize;
    for (h, w) in [(1usize, 1usize), (1, 7), (2, 4), (3, 5), (7, 7), (10, 10), (4, 9)] {
        let full = format!("f32[2,{c},{h},{w}]");
        let pooled = format!("f32[2,{c},1,1]");
        let eye = (0..c * c).map(|i| if i % (c + 1) == 0 { "1.0" } else { "0.0" }).collect::<Vec<_>>().join(", ");
        let text = format!(
            "graph @t(%a: {full} \"a\") -> (%p: {pooled}, %q: {pooled}) {{\n  const @eye: f32[{c},{c},1,1] = [{eye}]\n  \
             %p = global_average_pool %a : {pooled} loc(\"gap_planes\")\n  \
             %e = conv %a, @eye {{dilations=[1, 1], group=1, pads=[0, 0, 0, 0], strides=[1, 1]}} : {full} loc(\"eye\")\n  \
             %q = global_average_pool %e : {pooled} loc(\"gap_conv\")\n}}\n"
        );
        let g = qcc_ir::parse::parse_graph(&text).unwrap();
        for isa in isas() {
            let cg = Compiled::new(&g, isa).unwrap();
            let kinds: Vec<Kernel> = cg.plan.steps.iter().filter(|s| s.node.starts_with("gap")).map(|s| s.kernel).collect();
            let conv_side = if isa == Isa::Avx512Vnni { Kernel::FGapNhwc } else { Kernel::FGap };
            assert_eq!(kinds, [Kernel::FGap, conv_side], "{isa:?}: {}", cg.plan.summary());
            assert_eq!(qcc::codegen::fpool::fgap_generated(isa), isa != Isa::Scalar);
            for threads in [1, 3] {
                qcc_runtime::kernels::pool::set_threads(threads);
                for seed in 0..3 {
                    // Values of many magnitudes, so a sum taken in another order rounds differently.
                    let x: Vec<f32> = values(2 * c * h * w, seed).iter().enumerate().map(|(i, v)| v * (1 << (i % 23)) as f32).collect();
                    let xs = vec![Tensor::from_f32(&[2, c, h, w], x).unwrap()];
                    let want = qcc_runtime::run(&g, xs.clone()).unwrap();
                    let got = cg.run(&xs).unwrap();
                    for (k, (wv, gv)) in want.iter().zip(&got).enumerate() {
                        let bits = |t: &Tensor| t.to_f32_vec().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
                        assert_eq!(bits(gv), bits(wv), "{isa:?}, {h}x{w}, {threads} threads, output {k}");
                    }
                }
            }
        }
    }
    qcc_runtime::kernels::pool::set_threads(0);
}

/// f32 max and average pooling over planes (graph inputs and outputs stay in logical order), run by the
/// generated row loop around the runtime's row microkernels, equal the interpreter bit for bit: strides
/// 1 to 3, dilation, uneven padding, padding counted and not, two images, NaN in the windows (never the
/// maximum; it spreads through a sum), 1 and 3 threads.
#[test]
fn float_pooling_over_planes_equals_the_interpreter() {
    let (n, c) = (2usize, 5usize);
    // (h, w, kernel, stride, dilation, pads [top, left, bottom, right])
    for (h, w, k, s, d, p) in [
        (9usize, 11usize, 3usize, 2usize, 1usize, [1usize, 1, 1, 1]),
        (8, 8, 2, 2, 1, [0, 0, 0, 0]),
        (13, 7, 3, 1, 2, [2, 0, 1, 2]),
        (10, 12, 3, 3, 1, [1, 2, 0, 0]),
    ] {
        let ke = (k - 1) * d + 1;
        let (oh, ow) = ((h + p[0] + p[2] - ke) / s + 1, (w + p[1] + p[3] - ke) / s + 1);
        let attrs = |extra: &str| {
            format!(
                "{{ceil_mode=false, {extra}dilations=[{d}, {d}], kernel=[{k}, {k}], pads=[{}, {}, {}, {}], strides=[{s}, {s}]}}",
                p[0], p[1], p[2], p[3]
            )
        };
        let (xt, yt) = (format!("f32[{n},{c},{h},{w}]"), format!("f32[{n},{c},{oh},{ow}]"));
        let text = format!(
            "graph @t(%a: {xt} \"a\") -> (%m: {yt}, %v: {yt}, %u: {yt}) {{\n  \
             %m = max_pool %a {} : {yt} loc(\"max\")\n  \
             %v = average_pool %a {} : {yt} loc(\"avg\")\n  \
             %u = average_pool %a {} : {yt} loc(\"avg_pad\")\n}}\n",
            attrs(""),
            attrs("count_include_pad=false, "),
            attrs("count_include_pad=true, ")
        );
        let g = qcc_ir::parse::parse_graph(&text).unwrap();
        for isa in isas() {
            let cg = Compiled::new(&g, isa).unwrap();
            let kinds: Vec<Kernel> = cg.plan.steps.iter().map(|s| s.kernel).filter(|k| k.row_kernel().is_some()).collect();
            assert_eq!(kinds, [Kernel::FMaxPool, Kernel::FAvgPool, Kernel::FAvgPool], "{isa:?}: {}", cg.plan.summary());
            for threads in [1, 3] {
                qcc_runtime::kernels::pool::set_threads(threads);
                for seed in 0..3 {
                    let x: Vec<f32> = values(n * c * h * w, seed + 50)
                        .iter()
                        .enumerate()
                        .map(|(i, v)| if i % 37 == 5 { f32::NAN } else { v * (1 << (i % 11)) as f32 })
                        .collect();
                    let xs = vec![Tensor::from_f32(&[n, c, h, w], x).unwrap()];
                    let want = qcc_runtime::run(&g, xs.clone()).unwrap();
                    let got = cg.run(&xs).unwrap();
                    for (name, (wv, gv)) in ["max", "avg", "avg_pad"].iter().zip(want.iter().zip(&got)) {
                        let bits = |t: &Tensor| t.to_f32_vec().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
                        assert_eq!(bits(gv), bits(wv), "{isa:?}, {h}x{w} k{k} s{s} d{d} {p:?}, {threads} threads, {name}");
                    }
                }
            }
        }
    }
    qcc_runtime::kernels::pool::set_threads(0);
}

/// Float pooling and depthwise convolution reading a channels-last value (an identity convolution's
/// output on AVX-512) into graph outputs (logical order) run the channels-last kernels into a temporary
/// and reorder it, instead of interpreted steps: pooling bit for bit as the interpreter, the depthwise
/// convolution to rounding. Both images, strides 1 and 2, uneven padding, 1 and 3 threads.
#[test]
fn float_pooling_from_channels_last_into_outputs_compiles() {
    let (n, c, h, w) = (2usize, 6usize, 11usize, 9usize);
    for (s, p) in [(2usize, [1usize, 0, 1, 1]), (1, [1, 1, 1, 1])] {
        let (oh, ow) = ((h + p[0] + p[2] - 3) / s + 1, (w + p[1] + p[3] - 3) / s + 1);
        let (xt, yt) = (format!("f32[{n},{c},{h},{w}]"), format!("f32[{n},{c},{oh},{ow}]"));
        let pads = format!("pads=[{}, {}, {}, {}], strides=[{s}, {s}]", p[0], p[1], p[2], p[3]);
        let pool = |extra: &str| format!("{{ceil_mode=false, {extra}dilations=[1, 1], kernel=[3, 3], {pads}}}");
        let eye = (0..c * c).map(|i| if i % (c + 1) == 0 { "1.0" } else { "0.0" }).collect::<Vec<_>>().join(", ");
        let wd = values(c * 9, 61).iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ");
        let text = format!(
            "graph @t(%a: {xt} \"a\") -> (%m: {yt}, %v: {yt}, %u: {yt}, %d: {yt}) {{\n  \
             const @eye: f32[{c},{c},1,1] = [{eye}]\n  const @wd: f32[{c},1,3,3] = [{wd}]\n  \
             %e = conv %a, @eye {{dilations=[1, 1], group=1, pads=[0, 0, 0, 0], strides=[1, 1]}} : {xt} loc(\"eye\")\n  \
             %m = max_pool %e {} : {yt} loc(\"max\")\n  \
             %v = average_pool %e {} : {yt} loc(\"avg\")\n  \
             %u = average_pool %e {} : {yt} loc(\"avg_pad\")\n  \
             %d = conv %e, @wd {{dilations=[1, 1], group={c}, {pads}}} : {yt} loc(\"dw\")\n}}\n",
            pool(""),
            pool("count_include_pad=false, "),
            pool("count_include_pad=true, ")
        );
        let g = qcc_ir::parse::parse_graph(&text).unwrap();
        for isa in isas() {
            let cg = Compiled::new(&g, isa).unwrap();
            assert!(cg.plan.steps.iter().all(|s| s.kernel != Kernel::Host), "{isa:?}: {}", cg.plan.summary());
            let reorders = cg.plan.steps.iter().filter(|s| s.kernel == Kernel::Strided).count();
            assert_eq!(reorders, if isa == Isa::Avx512Vnni { 4 } else { 0 }, "{isa:?}: {}", cg.plan.summary());
            for threads in [1, 3] {
                qcc_runtime::kernels::pool::set_threads(threads);
                for seed in 0..2 {
                    // Finite values of many magnitudes: the identity convolution passes them on exactly.
                    let x: Vec<f32> =
                        values(n * c * h * w, seed + 70).iter().enumerate().map(|(i, v)| v * (1 << (i % 11)) as f32).collect();
                    let xs = vec![Tensor::from_f32(&[n, c, h, w], x).unwrap()];
                    let want = qcc_runtime::run(&g, xs.clone()).unwrap();
                    let got = cg.run(&xs).unwrap();
                    for (name, (wv, gv)) in ["max", "avg", "avg_pad", "dw"].iter().zip(want.iter().zip(&got)) {
                        let (wf, gf) = (wv.to_f32_vec(), gv.to_f32_vec());
                        let tag = format!("{isa:?}, stride {s}, {p:?}, {threads} threads, {name}");
                        if *name == "dw" {
                            // Sums of nine products in another order: a few ulps of the largest value.
                            let tol = 1e-6 * wf.iter().fold(0f32, |m, a| m.max(a.abs()));
                            let bad = wf.iter().zip(&gf).position(|(a, b)| (a - b).abs() > tol);
                            assert!(bad.is_none(), "{tag}: element {bad:?}");
                        } else {
                            let bad = wf.iter().zip(&gf).position(|(a, b)| a.to_bits() != b.to_bits());
                            assert!(bad.is_none(), "{tag}: element {bad:?}: {:?} != {:?}", bad.map(|i| gf[i]), bad.map(|i| wf[i]));
                        }
                    }
                }
            }
        }
    }
    qcc_runtime::kernels::pool::set_threads(0);
}

/// Float convolutions over channels-last values run as generated loop nests (codegen/src/nest.rs) that
/// address every window and call the runtime's micro-tiles: the stem read from the NCHW graph input
/// (kernel rows of its padded copy), one with column dilation from that input (taps of the padded copy),
/// padding on every side, stride 2 with dilation 2 and uneven pads, a fused residual, two groups, weights
/// past L2 taken panel by panel in two K parts, and outputs in logical order (a graph output) with bands;
/// pixel counts leave partial micro-tiles. They equal the interpreter to rounding and give the same bits
/// at 1, 2 and 3 threads.
#[test]
fn float_convolution_nests_address_every_window() {
    if !Isa::Avx512Vnni.supported() {
        eprintln!("NOTE: this CPU lacks AVX-512: float convolutions are not channels-last here, nothing to test");
        return;
    }
    let mut b = Builder::new();
    b.input("x", &[1, 3, 25, 25]).output("y1", &[1, 80, 6, 6]).output("y2", &[1, 8, 25, 25]);
    // Weights scaled by 1/sqrt(fan-in), so every layer's values stay near 1.
    let mut init = |name: &str, dims: [usize; 4], seed: u32| {
        let n = dims.iter().product::<usize>();
        let s = 1.0 / ((dims[1] * dims[2] * dims[3]) as f32).sqrt();
        b.init(name, &dims.map(|d| d as i64), values(n, seed).iter().map(|v| v * s).collect());
    };
    init("w0", [16, 3, 7, 7], 1);
    init("w1", [24, 16, 3, 3], 2);
    init("w2", [24, 24, 3, 3], 3);
    init("w3", [32, 24, 3, 3], 4);
    init("w4", [64, 16, 3, 3], 5);
    init("w5", [300, 64, 5, 5], 6);
    init("w6", [80, 300, 3, 3], 7);
    init("wd", [8, 3, 3, 3], 8);
    let pads = |p: [i64; 4]| ints("pads", &p);
    b.node("Conv", "stem", &["x", "w0"], &["s"], vec![ints("strides", &[2, 2]), pads([3, 3, 3, 3])]);
    b.node("Relu", "stem_relu", &["s"], &["sr"], vec![]);
    b.node("Conv", "c1", &["sr", "w1"], &["a"], vec![pads([1, 1, 1, 1])]);
    b.node("Conv", "c2", &["a", "w2"], &["c2"], vec![pads([1, 1, 1, 1])]);
    b.node("Add", "res", &["c2", "a"], &["r"], vec![]);
    b.node("Conv", "c3", &["r", "w3"], &["c3"], vec![ints("strides", &[2, 2]), ints("dilations", &[2, 2]), pads([2, 1, 1, 2])]);
    b.node("Conv", "c4", &["c3", "w4"], &["c4"], vec![pads([1, 1, 1, 1]), int("group", 2)]);
    b.node("Conv", "c5", &["c4", "w5"], &["c5"], vec![pads([2, 2, 2, 2])]);
    b.node("Conv", "c6", &["c5", "w6"], &["y1"], vec![pads([1, 1, 1, 1])]);
    b.node("Conv", "cd", &["x", "wd"], &["d"], vec![ints("dilations", &[1, 2]), pads([1, 2, 1, 2])]);
    // Not fused into the convolution, so it reads the convolution's channels-last output.
    b.node("Abs", "cd_abs", &["d"], &["y2"], vec![]);
    let d = tmp("float-conv-nests");
    let model = d.join("net.onnx");
    std::fs::write(&model, b.bytes()).unwrap();
    let mut f = qcc::driver::load_model(&model, &Default::default()).unwrap().graph;
    qcc::driver::compile(&mut f, OptLevel::O2, Instrumentation::default(), &mut std::io::sink()).unwrap();
    let cf = Compiled::new(&f, Isa::Avx512Vnni).unwrap();
    let convs = cf.plan.steps.iter().filter(|s| s.kernel == Kernel::FConvNhwc).count();
    assert_eq!(convs, 9, "{}", cf.plan.summary());
    assert!(cf.plan.steps.iter().all(|s| s.kernel != Kernel::Host), "{}", cf.plan.summary());
    // The schedules the nests follow cover each way of walking the windows and the weights.
    let schedules: Vec<(String, FConvSchedule, bool)> = cf
        .plan
        .steps
        .iter()
        .filter(|s| s.kernel == Kernel::FConvNhwc)
        .map(|s| {
            let h = qcc_runtime::abi::FConvNhwcHdr::decode(&cf.plan.blob.words(s.hdr, 64));
            (s.node.clone(), FConvSchedule::of(h.isa, h.g, h.ldx, h.nchw, h.m, h.w.len, h.cso), h.cso != 1)
        })
        .collect();
    let has = |name: &str, f: &dyn Fn(&FConvSchedule, bool) -> bool| {
        assert!(schedules.iter().any(|(n, s, planes)| n == name && f(s, *planes)), "{name}: {schedules:?}");
    };
    has("stem", &|s, _| s.rows && s.tiles * 6 > s.pixels);
    has("cd", &|s, _| !s.rows && s.g.pad == [0, 0] && s.tiles * 6 > s.pixels);
    has("c5", &|s, _| !s.tile_major && s.span < s.segs && s.segs % s.span != 0);
    has("c6", &|s, planes| !s.tile_major && planes && s.span == s.segs && s.bands == 2);
    has("c4", &|s, _| s.ldx == 2 * s.g.c);
    for seed in 0..2 {
        let x = Tensor::from_f32(&[1, 3, 25, 25], values(3 * 25 * 25, 30 + seed)).unwrap();
        let want = qcc_runtime::run(&f, vec![x.clone()]).unwrap();
        let mut first: Option<Vec<Vec<u32>>> = None;
        for threads in [1, 2, 3] {
            qcc_runtime::kernels::pool::set_threads(threads);
            let got = cf.run(std::slice::from_ref(&x)).unwrap();
            for (k, (w, g)) in want.iter().zip(&got).enumerate() {
                let (w, g) = (w.to_f32_vec(), g.to_f32_vec());
                let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
                let bad = w.iter().zip(&g).position(|(a, b)| (a - b).abs() > 1e-5 * scale || a.is_nan() != b.is_nan());
                assert!(
                    bad.is_none(),
                    "output {k}, {threads} threads: element {bad:?}: {:?} against {:?}",
                    bad.map(|i| g[i]),
                    bad.map(|i| w[i])
                );
            }
            let bits: Vec<Vec<u32>> = got.iter().map(|t| t.to_f32_vec().iter().map(|v| v.to_bits()).collect()).collect();
            match &first {
                None => first = Some(bits),
                Some(one) => assert!(*one == bits, "{threads} threads differ from one"),
            }
        }
    }
    qcc_runtime::kernels::pool::set_threads(0);
}
