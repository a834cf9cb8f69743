//! The worker threads kernels run on. The whole forward pass runs inside this pool, so the
//! thread that calls `forward` is one of the workers rather than a third thread waiting on
//! two (on a 2-core machine that idle-spinning third thread cost about a fifth of the time).

use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::OnceLock;

static POOL: OnceLock<ThreadPool> = OnceLock::new();

/// Sets the number of worker threads. Only the first call (or first use) decides; returns
/// false if the pool already existed with another size.
pub fn set_threads(n: usize) -> bool {
    let n = n.max(1);
    let pool = POOL.get_or_init(|| build(n));
    pool.current_num_threads() == n
}

/// The pool (made with one thread per available core on first use).
pub fn pool() -> &'static ThreadPool {
    POOL.get_or_init(|| build(default_threads()))
}

/// One thread per core the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn build(n: usize) -> ThreadPool {
    ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("kiln-worker-{i}"))
        .build()
        .expect("the OS can start worker threads")
}
