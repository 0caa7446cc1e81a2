//! `fork()`: the child starts with records and donation state of its own. Without this, a
//! child's records would keep its parent's tids: its loans would land on the parent's threads,
//! and it could wait forever on a ledger lock held, at the fork, by a thread that does not
//! exist in it.
//!
//! The hooks (`pthread_atfork`) are set up with the process's first task record. Before the
//! fork, the forking thread takes the ledger and registry locks; after it, the parent lets them
//! go, and the child's only thread takes its own tid, drops every loan and listing (the
//! parent's), gives itself its base back if it was boosted, marks every other record as a
//! thread that exited, and lets them go. A mutex held by another thread at the fork stays held
//! in the child, as std's does: its owner's record names a thread the child does not have.

use crate::loom::Ordering;
use crate::{donor, task};
use core::sync::atomic::AtomicUsize;

/// Sets the hooks up, once.
pub(crate) fn arm() {
    if crate::loom::MODEL {
        return; // models never fork
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| crate::sys::at_fork(prepare, parent, child));
}

/// How many threads the process had when `prepare` ran, for the child's choice of parking
/// table (`loom::use_parking_table_after_fork`).
static PARENT_THREADS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn prepare() {
    // Relaxed: read by the child, a copy of this thread right after the store.
    PARENT_THREADS.store(
        crate::sys::thread_count().unwrap_or(usize::MAX),
        Ordering::Relaxed,
    );
    // The ledger first, then the registry: the order every other path takes them in.
    donor::before_fork(task::current().task());
    task::before_fork();
}

extern "C" fn parent() {
    task::after_fork_in_parent();
    donor::after_fork_in_parent();
}

extern "C" fn child() {
    task::after_fork_in_child(donor::orphaned_by_fork);
    donor::after_fork_in_child(task::current().task());
    crate::loom::use_parking_table_after_fork(PARENT_THREADS.load(Ordering::Relaxed));
}
