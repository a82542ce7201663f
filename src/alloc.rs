//! The allocator the `mergesearch` binary and the benchmarks install.
//!
//! A search materializes one candidate after another, each a fresh model-sized allocation. The
//! system allocator returns such blocks to the OS on free, so every candidate pays a page fault
//! per 4 KiB page (measured here: allocation alone took longer than the merge). mimalloc, told
//! never to purge freed memory, hands the same pages back to the next candidate.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: mergesearch::alloc::MiMalloc = mergesearch::alloc::MiMalloc;
//! fn main() {
//!     mergesearch::alloc::keep_freed_memory();
//! }
//! ```

pub use mimalloc::MiMalloc;

/// Position of `mi_option_purge_delay` in mimalloc's `mi_option_t` (v2 and v3 `mimalloc.h`); the
/// sys crate names only some options.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed memory to the OS (a purge delay of -1).
pub fn keep_freed_memory() {
    // SAFETY: setting an option is always allowed; an unknown option would only be ignored.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_we_set() {
        keep_freed_memory();
        // SAFETY: reading an option is always allowed.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            -1
        );
        // The neighbouring option (eager commit delay, 14) keeps its default of 1.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(14) }, 1);
    }
}
