//! qcc: the library behind the `qcc` command — loading models (.onnx or .qir), running pipelines,
//! reading and writing .npy data, preprocessing images, and measuring accuracy.
pub mod analyze;
pub mod calib;
pub mod data;
pub mod driver;
pub mod eval;
pub mod exec;
pub mod fsutil;
pub mod fuzzing;
pub mod mixed;
pub mod npy;
pub mod range_search;
pub mod report;

pub use qcc_codegen as codegen;
pub use qcc_frontend as frontend;
pub use qcc_ir as ir;
pub use qcc_passes as passes;
pub use qcc_runtime as runtime;

/// At most this many samples are in flight at once when calibrating or analysing: each holds a network's
/// activations (tens of MB for an ImageNet model), so memory stays bounded on many-core machines.
const MAX_WORKERS: usize = 8;

/// Runs `work(i)` for i in 0..n on one thread per core (at most MAX_WORKERS) and hands each result to
/// `consume` in index order, so whatever `consume` accumulates is exactly what one sequential pass would
/// give. Stops at the first error (of either).
pub(crate) fn in_order<T: Send>(
    n: usize,
    work: impl Fn(usize) -> anyhow::Result<T> + Sync,
    mut consume: impl FnMut(usize, T) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let workers = std::thread::available_parallelism().map_or(1, |p| p.get()).min(MAX_WORKERS).min(n).max(1);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, anyhow::Result<T>)>(workers);
        let work = &work;
        for w in 0..workers {
            let tx = tx.clone();
            scope.spawn(move || {
                for i in (w..n).step_by(workers) {
                    let r = work(i);
                    let failed = r.is_err();
                    // A closed channel means the caller stopped (another sample failed).
                    if tx.send((i, r)).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = std::collections::BTreeMap::new();
        let mut next = 0;
        for (i, r) in rx {
            pending.insert(i, r);
            while let Some(r) = pending.remove(&next) {
                consume(next, r?)?;
                next += 1;
            }
        }
        Ok(())
    })
}
