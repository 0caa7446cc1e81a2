//! `fork()`: the child starts with records and donation state of its own. Without this, a
//! child's records kept its parent's tids: its main thread reported the parent's tid, its
//! loans landed on the parent's threads (which kept them), and a child could wait forever on a
//! ledger lock held, at the fork, by a thread that does not exist in it.
//!
//! The hooks (`pthread_atfork`) are set up with the process's first task record. Before the
//! fork, the forking thread takes the ledger and registry locks; after it, the parent lets
//! them go, and the child's only thread takes its own tid, drops every loan and listing (the
//! parent's), gives itself its base back if it was boosted, marks every other record as a
//! thread that exited, and lets them go. A mutex held by another thread at the fork stays held
//! in the child, as std's does: its owner's record names a thread the child does not have.

use crate::task;

/// Sets the hooks up, once.
pub(crate) fn arm() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| crate::loom::at_fork(prepare, parent, child));
}

extern "C" fn prepare() {
    crate::loom::before_fork(task::current().task());
}

extern "C" fn parent() {
    crate::loom::after_fork_in_parent();
}

extern "C" fn child() {
    crate::loom::after_fork_in_child(|ledger, registry| {
        task::after_fork_in_child(registry);
        crate::donor::after_fork_in_child(task::current().task(), ledger);
    });
}
