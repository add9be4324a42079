//! Giving memory back between runs. A full reconcile of 100k people holds hundreds of MB for
//! a few seconds (the listings as they are decoded, the plan's maps); freed, that memory stays
//! with the allocator (mimalloc, the global allocator of the binary) until it decides to
//! purge it. The daemon makes it give everything back after every run and poll, so that its
//! idle RSS is what it keeps, not its peak (docs/performance.md, "Idle RSS"):
//!
//! - [`for_daemon`] sets mimalloc's purge delay to 0: a page freed is returned to the OS at
//!   once, not a second later and only when that thread next allocates (which an idle thread
//!   never does). The one-shot commands keep the delay: they exit anyway.
//! - [`release`] collects the calling thread's heap and those of threads that exited, and
//!   asks every runtime worker to collect its own: mimalloc's heaps are per thread, and a
//!   block freed by another thread than the one that allocated it (a task that moved between
//!   workers, a buffer filled on a blocking thread) is only taken back by its owner. Each worker
//!   collects when it next parks ([`on_park`], the runtime's park hook), and `release` wakes the
//!   workers so that they do (best effort: an empty task per worker, which tokio does not
//!   promise to spread one to each).
//! - The binary is built with mimalloc's `no_thp` feature: with transparent huge pages its 1 GiB
//!   arena is backed in 2 MiB pages, and a few live blocks keep whole huge pages resident
//!   (a 1,000-person daemon idled at 44 MiB instead of 22).

use std::cell::Cell;
use std::os::raw::{c_int, c_long};
use std::sync::atomic::{AtomicU64, Ordering};

extern "C" {
    /// mimalloc's `mi_collect`: frees what the heap of this thread and the abandoned ones
    /// hold unused and, with `force`, returns the free pages to the OS now.
    fn mi_collect(force: bool);
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_option_get(option: c_int) -> c_long;
}

/// `mi_option_purge_delay`: its position in mimalloc 3's `mi_option_e` (mimalloc.h; the
/// `libmimalloc-sys` constants follow mimalloc 2's numbering, where 15 is the same option but
/// the version is pinned by Cargo.lock and a unit test checks the default behind it).
const PURGE_DELAY: c_int = 15;

/// Bumped by every [`release`]; a worker that has not collected since collects when it parks.
static EPOCH: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COLLECTED: Cell<u64> = const { Cell::new(0) };
}

fn collect_here() {
    // The symbol is mimalloc's (linked through the `mimalloc` dependency); naming the type
    // keeps the library in the link of every binary, the tests' included.
    let _ = std::mem::size_of::<mimalloc::MiMalloc>();
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
    unsafe { mi_collect(true) }
}

/// Makes the allocator return freed pages to the OS at once (see the module's doc). Called by
/// `bbsync run` before its runtime starts.
pub fn for_daemon() {
    // SAFETY: an option write; mimalloc reads this one each time it purges.
    unsafe { mi_option_set(PURGE_DELAY, 0) }
}

/// The purge delay in force, in milliseconds.
pub fn purge_delay_ms() -> c_long {
    // SAFETY: an option read.
    unsafe { mi_option_get(PURGE_DELAY) }
}

/// Returns the memory freed since the last call to the OS (see the module's doc). Cheap
/// when little was freed; a few milliseconds after a large run.
pub fn release() {
    EPOCH.fetch_add(1, Ordering::Relaxed);
    collect_here();
    COLLECTED.with(|c| c.set(EPOCH.load(Ordering::Relaxed)));
    // Wake the workers: each runs one of these, parks, and collects in `on_park`.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        for _ in 0..rt.metrics().num_workers() {
            rt.spawn(async {});
        }
    }
}

/// The runtime's `on_thread_park` hook: a worker collects its own heap once after each
/// [`release`]. An atomic load otherwise.
pub fn on_park() {
    let epoch = EPOCH.load(Ordering::Relaxed);
    COLLECTED.with(|c| {
        if c.get() != epoch {
            c.set(epoch);
            collect_here();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_mimalloc_documents() {
        // mimalloc 3's default purge delay (options.c); another number would mean that 15 is
        // not `mi_option_purge_delay` in the mimalloc linked.
        assert_eq!(purge_delay_ms(), 1000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn release_has_every_worker_collect_once() {
        let before = EPOCH.load(Ordering::Relaxed);
        release();
        assert_eq!(EPOCH.load(Ordering::Relaxed), before + 1);
        // A worker's park hook runs a collect once per epoch, then only loads it.
        let seen = tokio::spawn(async {
            on_park();
            let first = COLLECTED.with(Cell::get);
            on_park();
            (first, COLLECTED.with(Cell::get))
        })
        .await
        .expect("join");
        assert_eq!(seen.0, seen.1);
        assert!(seen.0 > before);
    }
}
