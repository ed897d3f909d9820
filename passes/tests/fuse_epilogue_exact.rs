//! fuse-epilogue changes no bit: the graphs of tests/filetests/fuse-epilogue compute the same integers
//! before and after it, on inputs that cover the whole quantized ranges (negative sums that ReLU clamps,
//! values beyond the clip).
use qcc_ir::{parse_graph, Graph, Tensor};
use qcc_passes::{FoldQdq, FuseEpilogue, Pass, PassContext};

fn inputs(g: &Graph, seed: u32) -> Vec<Tensor> {
    let mut s = seed.wrapping_mul(2654435761) | 1;
    g.inputs()
        .iter()
        .map(|v| {
            let shape = g.ty(*v).shape().unwrap().to_vec();
            let n: usize = shape.iter().product();
            let data = (0..n)
                .map(|_| {
                    s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                    (s >> 8) as f32 / (1u32 << 24) as f32 * 6.0 - 3.0
                })
                .collect();
            Tensor::from_f32(&shape, data).unwrap()
        })
        .collect()
}

#[test]
fn fuse_epilogue_is_exact() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/filetests/fuse-epilogue");
    let mut files = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let path = f.unwrap().path();
        let mut g = parse_graph(&std::fs::read_to_string(&path).unwrap()).unwrap();
        FoldQdq.run(&mut g, &mut PassContext::default()).unwrap();
        let before = g.clone();
        assert!(FuseEpilogue.run(&mut g, &mut PassContext::default()).unwrap(), "{}: nothing fused", path.display());
        for seed in 0..16 {
            let x = inputs(&g, seed);
            let (a, b) = (qcc_runtime::run(&before, x.clone()).unwrap(), qcc_runtime::run(&g, x).unwrap());
            assert_eq!(a, b, "{}, seed {seed}", path.display());
        }
        files += 1;
    }
    assert_eq!(files, 2);
}
