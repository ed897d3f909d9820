//! The thread pool runs every task exactly once, whatever the thread count and the task count, with
//! uneven tasks (one participant's share slow, so the others finish theirs and take from it).
use qcc_runtime::kernels::pool::{parallel_for, set_threads};
use std::sync::atomic::{AtomicUsize, Ordering};

#[test]
fn every_task_runs_once_for_every_thread_count() {
    for threads in 1..=5 {
        set_threads(threads);
        for n in [0usize, 1, 2, 3, 5, 7, 64, 1000] {
            for round in 0..20 {
                let counts: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                parallel_for(n, &|i| {
                    // The first share is slow on odd rounds: the others take from it.
                    if round % 2 == 1 && i < n / threads.max(1) && i % 4 == 0 {
                        std::thread::sleep(std::time::Duration::from_micros(50));
                    }
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
                let wrong: Vec<(usize, usize)> =
                    counts.iter().map(|c| c.load(Ordering::Relaxed)).enumerate().filter(|(_, c)| *c != 1).collect();
                assert!(wrong.is_empty(), "{threads} threads, {n} tasks, round {round}: (task, runs) {wrong:?}");
            }
        }
    }
    set_threads(0);
}
