//! The one module that knows whether the crate runs under loom. It re-exports only: the normal
//! build's primitives (`real`) or the models' (`model`), and the parking table both can use
//! (`park_table`).
//!
//! Normal builds get core atomics, `std::thread_local!`, parking_lot_core for sleeping and
//! waking, crossbeam-epoch for reclaiming task records, the kernel's scheduling calls and a
//! pthread key for "this thread is exiting". Builds with `--cfg loom` get loom's atomics, thread
//! locals and mutex, a parking table built from loom's `Mutex`/`Condvar` with the same contract
//! as parking_lot_core, a recording fake kernel, and no reclamation (records are leaked, which
//! loom tolerates). Everything else in the crate imports from here; what differs in the models
//! beyond these primitives is a value (`MODEL`, `crate::tuning`).

pub(crate) use parking_lot_core::{
    FilterOp, ParkResult, ParkToken, RequeueOp, UnparkResult, UnparkToken,
};

/// Whether this build runs under loom, for values and paths that differ in the models.
pub(crate) const MODEL: bool = cfg!(loom);

/// A cache cell that no protocol depends on (the donation hints): always the core atomic, so
/// loom does not branch on its stale values, which only decide whether a thread tries to lend.
pub(crate) type CacheU64 = core::sync::atomic::AtomicU64;

/// Declares a function that is `const` in normal builds and plain under loom, whose atomics have
/// no const constructors.
macro_rules! const_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        #[cfg(not(loom))]
        $(#[$attr])* $vis const fn $name($($arg: $ty),*) -> $ret $body
        #[cfg(loom)]
        $(#[$attr])* $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use const_fn;

/// Items that only exist in normal builds (they need const atomics, e.g.
/// `lock_api::RawMutex::INIT`).
macro_rules! not_under_loom {
    ($($item:item)*) => { $( #[cfg(not(loom))] $item )* };
}
pub(crate) use not_under_loom;

/// A thread local with a const initialiser and no destructor: readable while other thread-local
/// destructors run (std), or a plain loom thread local (loom's macro has no `const` form).
macro_rules! const_thread_local {
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
        #[cfg(not(loom))]
        std::thread_local! { $(#[$attr])* static $name: $t = const { $init }; }
        #[cfg(loom)]
        loom::thread_local! { $(#[$attr])* static $name: $t = $init; }
    };
}
pub(crate) use const_thread_local;

/// A function returning a process-wide value: a `static` with a const initialiser in normal
/// builds, a loom lazy static (one per model execution) under loom.
macro_rules! global {
    ($(#[$attr:meta])* $vis:vis fn $name:ident() -> $t:ty = $init:expr;) => {
        $(#[$attr])*
        $vis fn $name() -> &'static $t {
            #[cfg(not(loom))]
            {
                static GLOBAL: $t = $init;
                &GLOBAL
            }
            #[cfg(loom)]
            {
                loom::lazy_static! { static ref GLOBAL: $t = $init; }
                &*GLOBAL
            }
        }
    };
}
pub(crate) use global;

mod park_table;

#[cfg(loom)]
mod model;
#[cfg(loom)]
pub(crate) use model::*;

#[cfg(not(loom))]
mod real;
#[cfg(not(loom))]
pub(crate) use real::*;
