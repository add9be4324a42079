//! Giving memory back between runs. A full reconcile of 100k people holds hundreds of MB for
//! a few seconds (the listings as they are decoded, the plan's maps); freed, that memory stays
//! with the allocator (mimalloc, the global allocator of the binary) until it decides to
//! purge it. The daemon asks it to after every run so that its idle RSS is what it keeps
//! (the poll's snapshot), not its peak.

extern "C" {
    /// mimalloc's `mi_collect`: frees what the heaps of this thread and the abandoned ones
    /// hold unused and, with `force`, returns the free pages to the OS now.
    fn mi_collect(force: bool);
}

/// Returns the memory freed since the last call to the OS (see the module's doc). Cheap
/// when little was freed; a few milliseconds after a large run.
pub fn release() {
    // The symbol is mimalloc's (linked through the `mimalloc` dependency); naming the type
    // keeps the library in the link of every binary, the tests' included.
    let _ = std::mem::size_of::<mimalloc::MiMalloc>();
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
    unsafe { mi_collect(true) }
}
