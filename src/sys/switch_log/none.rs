//! No switch logs: the same slot as `linux`, which never opens.

use crate::Tid;

/// A thread's switch log: never open here.
pub(crate) struct SwitchLogSlot;

impl SwitchLogSlot {
    pub(crate) const fn new() -> SwitchLogSlot {
        SwitchLogSlot
    }

    /// Never known: the caller asks the thread's clock.
    pub(crate) fn on_cpu(&self) -> Option<bool> {
        None
    }

    pub(crate) fn is_open(&self) -> bool {
        false
    }

    pub(crate) fn open(&self, _tid: Tid) {}

    pub(crate) fn forget_after_fork(&self) {}
}

pub(crate) fn after_fork_in_child() {}
