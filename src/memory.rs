//! Freed memory handed back to the system when it matters.
//!
//! rackboot allocates with mimalloc (see `main.rs`), which returns the pages
//! a thread has freed only when that thread next allocates or frees: after
//! a flood of made-up MACs is reaped, a worker that then goes quiet would
//! keep its share of the flood for as long as it stays quiet. Measured with
//! `benches/flood.sh`.

/// Asks the allocator to return the freed memory it still holds, now: the
/// calling thread's free pages and the delayed purges of every thread.
/// Costs a walk of this thread's heap; call it after something large was
/// freed, not per request. (In a build on the system allocator, as unit
/// tests are, it tidies mimalloc's own empty heap and nothing else.)
pub fn give_back() {
    // SAFETY: mi_collect takes no pointers and may be called from any
    // thread at any time (mimalloc's documented contract).
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Returns the free memory at the top and in the middle of the C heap,
/// where SQLite (which allocates with the C library's malloc, not
/// mimalloc) freed its page cache.
pub fn trim_c_heap() {
    // SAFETY: malloc_trim takes no pointers and is thread-safe (glibc).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}
