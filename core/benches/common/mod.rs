//! Shared set-up of the benches: thread count and batch, the same as the PyTorch reference.

/// Torch intra-op threads (and the Add kernel's): `SHIFTADD_BENCH_THREADS`, default 2.
pub fn threads() -> i32 {
    std::env::var("SHIFTADD_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

pub const BATCH: i64 = 64;
pub const RES: i64 = 32;

pub fn init() {
    // As the `shiftadd` binary does (`SHIFTADD_MALLOC=system` for glibc's defaults).
    let _ = shiftadd_core::alloc::tune_for_training();
    tch::set_num_threads(threads());
    tch::manual_seed(0);
}
