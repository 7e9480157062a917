//! What rackboot's memory costs the system: freed memory handed back when it
//! matters, and no transparent huge pages.
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

/// Turns transparent huge pages off for this process (and the hooks it
/// runs), as early as rackboot's own code runs.
///
/// A huge page is resident whole, 2 MiB, once one byte of it is touched.
/// mimalloc asked for them on the arenas it reserves (built with `no_thp`
/// now, it does not): rackboot at rest with no node records held 8.6 MiB
/// of anonymous memory with them and 2.1 MiB without, and what 10 000
/// records added came in steps of 2 MiB instead of what the records cost.
/// They bought no speed: with a million records, 20 000 DORA/s lost
/// 0.6-0.75 % of its exchanges with huge pages and 0.005-0.44 % without.
/// This call covers systems whose setting is `always` (the kernel then
/// gives huge pages unasked); what was touched before `main` may already
/// sit in one or two.
pub fn without_huge_pages() {
    // SAFETY: prctl with integer arguments only; PR_SET_THP_DISABLE sets a
    // flag on the calling process (inherited by children), nothing else.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
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

#[cfg(test)]
mod tests {
    /// The kernel reports the switch per process, as "THP_enabled: 0".
    #[test]
    #[cfg(target_os = "linux")]
    fn huge_pages_are_off_once_turned_off() {
        super::without_huge_pages();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("THP_enabled:"))
            .expect("the kernel reports THP_enabled (Linux 5.0 and later)");
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
}
