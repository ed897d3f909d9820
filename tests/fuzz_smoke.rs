//! A bounded, deterministic fuzz run in the core suite: mutated ONNX bytes and mutated .qir text go
//! through the same entry points as the cargo-fuzz targets in fuzz/. Nothing may panic.
use std::panic::catch_unwind;
use std::path::Path;

/// xorshift, so the corpus is the same on every machine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => v.truncate(rng.below(v.len() + 1)),
            3 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
            _ if v.len() > 8 => {
                let (a, b) = (rng.below(v.len()), rng.below(v.len()));
                let (a, b) = (a.min(b), a.max(b));
                let chunk = v[a..b].to_vec();
                let at = rng.below(v.len());
                v.splice(at..at, chunk);
            }
            _ => {}
        }
    }
    v
}

#[test]
fn mutated_onnx_and_qir_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let onnx = std::fs::read(root.join("examples/mnist/mnist_cnn.onnx")).unwrap();
    // Sorted, so the corpus (and so every mutation) is the same on every machine.
    let mut paths = Vec::new();
    for dir in std::fs::read_dir(root.join("tests/filetests")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            paths.push(f.unwrap().path());
        }
    }
    paths.sort();
    let qirs: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let n: usize = std::env::var("QCC_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    for i in 0..n {
        let bytes = mutate(&onnx, &mut rng);
        let r = catch_unwind(|| qcc_fuzz_entry::onnx(&bytes));
        assert!(r.is_ok(), "ONNX import panicked on mutation {i}");
        let q = mutate(&qirs[i % qirs.len()], &mut rng);
        let r = catch_unwind(|| qcc_fuzz_entry::qir(&q));
        assert!(r.is_ok(), "qir parse panicked on mutation {i}: {}", String::from_utf8_lossy(&q));
    }
    println!("fuzz smoke: {n} ONNX and {n} .qir mutations, no panic");
}

/// The same entry points as fuzz/fuzz_targets.
mod qcc_fuzz_entry {
    pub fn onnx(bytes: &[u8]) {
        qcc::fuzzing::import_onnx(bytes);
    }
    pub fn qir(bytes: &[u8]) {
        qcc::fuzzing::parse_qir(bytes);
    }
}
