//! Process settings that make candle's CPU backend fast on small machines, applied once before
//! training starts (measured on the 2-core CI box; see docs/LOG.md):
//!
//! * candle's element-wise ops run on its own spinning "barrier pool", separate from the rayon
//!   pool its matrix products use; with both on two cores they spin against each other (3.4×
//!   slower on `nano`). `CANDLE_NUM_THREADS=1` keeps element-wise ops on the calling thread,
//!   unless the user has set it.
//! * Every candle op allocates its output; glibc returns large blocks to the kernel on free and
//!   faults fresh zeroed pages in on the next step (a third of the time on `nano`). Raising
//!   glibc's mmap threshold and turning heap trimming off keeps that memory in the heap for
//!   reuse, and one arena for all threads stops worker-thread arenas (which shrink eagerly)
//!   from doing the same: on `micro`, 4.5 s of system time in 6 steps became 0.5 s. A trim
//!   threshold (it was 1 GiB) is not enough for fine-tuning SmolLM2-135M: each row's backward
//!   grows the heap by 1–2.5 GiB and frees it, so every row was trimmed and faulted back in
//!   (LoRA SFT, 4 steps of 4 rows: 13–26 s of system time, 6–8 s with trimming off, same peak
//!   RSS). The process keeps its peak heap until it exits.

use std::sync::Once;

static TUNE: Once = Once::new();

/// Applies the settings (idempotent). Call before the first candle operation, and before other
/// threads allocate (the arena limit binds threads that have not allocated yet).
pub fn tune() {
    TUNE.call_once(|| {
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            // Set before any candle thread pool exists; nothing else reads it concurrently.
            std::env::set_var("CANDLE_NUM_THREADS", "1");
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator thresholds; both values are in range.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            // -1: never trim (mallopt(3)).
            libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    });
}
