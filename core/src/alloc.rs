//! The process's memory allocator, set for training (issue 17).
//!
//! libtorch allocates every activation and gradient with `malloc`. glibc serves large blocks with
//! fresh `mmap`s (and a training thread from its own 64 MiB arena heaps) and hands the pages back
//! on `free`, so every step of a wide model page-faults and zero-fills its activations again: the
//! profile of a ShiftAddAug step on 2 cores showed over half the time in the kernel. One arena
//! (`M_ARENA_MAX`), no `mmap` for large blocks (`M_MMAP_MAX = 0`) and no trimming below 2 GiB of
//! free heap (`M_TRIM_THRESHOLD`) make freed blocks stay mapped and be reused; the price is a
//! resident size that stays at its peak. `SHIFTADD_MALLOC=system` keeps glibc's defaults.

/// What [`tune_for_training`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// glibc's allocator set to reuse freed memory.
    Reuse,
    /// Left as the system has it (`SHIFTADD_MALLOC=system`).
    System,
    /// Not glibc: nothing to do.
    Unsupported,
}

/// The environment variable that opts out.
pub const ENV: &str = "SHIFTADD_MALLOC";

/// Set the allocator for training. Call it first in `main`, before any thread starts (an arena
/// created earlier stays); calling it again is harmless.
pub fn tune_for_training() -> Tuning {
    if std::env::var(ENV).is_ok_and(|v| v.trim() == "system") {
        return Tuning::System;
    }
    glibc::tune()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    #[allow(unsafe_code)]
    pub fn tune() -> super::Tuning {
        // SAFETY: mallopt only sets allocator parameters; it is thread-safe and these values are
        // in range for each parameter.
        let ok = unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1) == 1
                && libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        };
        if ok {
            super::Tuning::Reuse
        } else {
            super::Tuning::Unsupported
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub fn tune() -> super::Tuning {
        super::Tuning::Unsupported
    }
}
