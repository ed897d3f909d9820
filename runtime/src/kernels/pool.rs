//! A small thread pool for kernels: `parallel_for(n, f)` runs f(0..n) on the calling thread and the
//! workers, which spin briefly between calls (layers follow each other within microseconds) and then
//! sleep. Work is split into tasks that write disjoint outputs, so results never depend on the thread
//! count. Each participant starts on its own contiguous share of the tasks (so consecutive layers split
//! the same way give a core the pixels it wrote, still in its L2: measured 3–4% on float MobileNetV2 at
//! two threads) and then helps with the others' shares, so a slowed core does not hold the layer up.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

type Job = &'static (dyn Fn(usize) + Sync);

/// Participants of one parallel_for beyond which more threads are not used.
const MAX_PARTICIPANTS: usize = 64;

/// A published job: generation, the function, its task count, and how many workers take part.
type Published = (usize, Job, usize, usize);

/// An atomic alone on its cache lines: the task counters change while spinning threads read the
/// generation, and sharing a line would bounce it between cores on every task.
#[repr(align(128))]
struct Padded(AtomicUsize);

impl std::ops::Deref for Padded {
    type Target = AtomicUsize;
    fn deref(&self) -> &AtomicUsize {
        &self.0
    }
}

struct Shared {
    job: Mutex<Option<Published>>,
    wake: Condvar,
    generation: Padded,
    /// Per participant (the caller is 0, worker i is i + 1), the next task of its share.
    next: Vec<Padded>,
    done: Padded,
    /// Workers inside run_tasks for the current job; the caller waits for 0 before the job's borrow ends.
    busy: Padded,
    /// Workers waiting on `wake` (changed under the `job` lock), so publishing skips the wake-up system
    /// call while every worker is still spinning.
    sleeping: AtomicUsize,
}

struct Pool {
    shared: Arc<Shared>,
    workers: usize,
}

static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
static WANTED: AtomicUsize = AtomicUsize::new(0);

/// Sets the number of threads kernels use (including the caller); 0 = all cores. Takes effect at the
/// next parallel_for.
pub fn set_threads(n: usize) {
    WANTED.store(n, Ordering::SeqCst);
}

/// The number of threads kernels will use.
pub fn threads() -> usize {
    // available_parallelism reads cgroup files on Linux: ask once, not on every kernel call.
    static CORES: OnceLock<usize> = OnceLock::new();
    match WANTED.load(Ordering::SeqCst) {
        0 => *CORES.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
        n => n,
    }
}

fn worker(shared: Arc<Shared>, index: usize) {
    let mut seen = 0usize;
    loop {
        // Spin on the generation for a while before sleeping on the condvar.
        let start = Instant::now();
        while shared.generation.load(Ordering::Acquire) == seen && start.elapsed() < Duration::from_micros(300) {
            std::hint::spin_loop();
        }
        let (job, n, threads) = {
            let mut guard = shared.job.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                match *guard {
                    Some((g, job, n, active)) if g != seen => {
                        seen = g;
                        if index < active {
                            shared.busy.fetch_add(1, Ordering::AcqRel);
                            break (job, n, (active + 1, index + 1));
                        }
                    }
                    _ => {
                        shared.sleeping.fetch_add(1, Ordering::AcqRel);
                        guard = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                        shared.sleeping.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
        };
        run_tasks(&shared, job, n, threads.0, threads.1);
        shared.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The first task of participant `i`'s share.
fn share_start(i: usize, n: usize, threads: usize) -> usize {
    i * n / threads
}

/// Runs participant `me`'s share, then whatever is left of the others', in runs of about a quarter of a
/// share (few atomic operations on shared lines, still balancing uneven tasks), and counts them done once.
fn run_tasks(shared: &Shared, job: Job, n: usize, threads: usize, me: usize) {
    let run = (n / (4 * threads)).max(1);
    let mut mine = 0;
    for k in 0..threads {
        let t = (me + k) % threads;
        let end = share_start(t + 1, n, threads);
        loop {
            let i = shared.next[t].fetch_add(run, Ordering::AcqRel);
            if i >= end {
                break;
            }
            let stop = (i + run).min(end);
            (i..stop).for_each(job);
            mine += stop - i;
        }
    }
    shared.done.fetch_add(mine, Ordering::AcqRel);
}

/// Runs `f(i)` for every i in 0..n, on up to threads() threads, returning when all are done.
pub fn parallel_for(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let want = threads();
    if want <= 1 || n <= 1 {
        (0..n).for_each(f);
        return;
    }
    let pool = POOL.get_or_init(|| {
        Mutex::new(Pool {
            shared: Arc::new(Shared {
                job: Mutex::new(None),
                wake: Condvar::new(),
                generation: Padded(AtomicUsize::new(0)),
                next: (0..MAX_PARTICIPANTS).map(|_| Padded(AtomicUsize::new(0))).collect(),
                done: Padded(AtomicUsize::new(0)),
                busy: Padded(AtomicUsize::new(0)),
                sleeping: AtomicUsize::new(0),
            }),
            workers: 0,
        })
    });
    // One parallel_for at a time: a second caller waits here (kernels never nest).
    let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
    while pool.workers + 1 < want {
        let shared = pool.shared.clone();
        let index = pool.workers;
        // Without another thread the caller simply does more of the tasks itself.
        if std::thread::Builder::new().name("qcc-worker".into()).spawn(move || worker(shared, index)).is_err() {
            break;
        }
        pool.workers += 1;
    }
    let shared = pool.shared.clone();
    // SAFETY: workers only reach the job through `shared.job` while it is published, and every worker
    // that took it is counted in `busy`; this function unpublishes it and waits for busy == 0 before
    // returning, so the 'static borrow never outlives `f`.
    let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
    // The caller and the workers that take part (the spawned ones, at most MAX_PARTICIPANTS in all).
    let threads = want.min(pool.workers + 1).min(MAX_PARTICIPANTS);
    for (i, next) in shared.next.iter().enumerate().take(threads) {
        next.store(share_start(i, n, threads), Ordering::SeqCst);
    }
    shared.done.store(0, Ordering::SeqCst);
    let generation = shared.generation.load(Ordering::SeqCst) + 1;
    {
        let mut guard = shared.job.lock().unwrap_or_else(|e| e.into_inner());
        *guard = Some((generation, job, n, threads - 1));
        shared.generation.store(generation, Ordering::Release);
        if shared.sleeping.load(Ordering::Acquire) > 0 {
            shared.wake.notify_all();
        }
    }
    run_tasks(&shared, job, n, threads, 0);
    while shared.done.load(Ordering::Acquire) < n {
        std::hint::spin_loop();
    }
    *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
    while shared.busy.load(Ordering::Acquire) > 0 {
        std::hint::spin_loop();
    }
}
