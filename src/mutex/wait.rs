//! The waiter's protocol, written once: every thread that waits for a lock (a guard's slow
//! path, a Condvar waiter taking its mutex back, a `run` caller waiting for its section) goes
//! through [`wait_for`], so the order of the steps holds everywhere:
//!
//! 1. publish `blocked_on`, so chain walkers and lenders find the wait;
//! 2. survey the chain (`donor::before_spinning`): lend what helps an owner worse than us, and
//!    report a deadlock cycle;
//! 3. spin while the chain's last owner runs, if the survey says it pays (the caller's way:
//!    the lock's spinner slot, or a `run` caller's slot);
//! 4. lend the CPU we are about to free (`donor::before_sleep`), then sleep (the caller's
//!    way: the lock's queue, or the `run` slot);
//! 5. clear `blocked_on`, then let the ledger know the wait ended (`donor::after_wait`).
//!
//! A wait that finds a deadlock leaves by step 5 too, before the caller reports it.

use crate::chain::Deadlock;
use crate::donor::{self, Spin};
use crate::task::Me;
use crate::word::LockRef;

/// One wait of `me` for `lock` (`timed`: it has a deadline). `spin(plan)` runs after the
/// survey; it spins as `plan` allows (nothing for `Spin::No`) and returns `Some` to end the
/// wait without sleeping. Otherwise `me` lends its CPU, if it spun, and `sleep()` ends the
/// wait. Either outcome is returned once the wait has been left.
pub(crate) fn wait_for<R>(
    me: Me,
    lock: LockRef<'_>,
    timed: bool,
    spin: impl FnOnce(Spin) -> Option<R>,
    sleep: impl FnOnce() -> R,
) -> Result<R, Deadlock> {
    me.set_blocked_on(lock.tagged(), timed);
    let outcome = (|| {
        let plan = donor::before_spinning(me, lock, timed)?;
        if let Some(ended) = spin(plan) {
            return Ok(ended);
        }
        if plan != Spin::No {
            donor::before_sleep(me, lock, timed, true)?;
        }
        Ok(sleep())
    })();
    me.clear_blocked_on();
    // A deadlocked wait never sleeps, and the lock's donations are no business of a thread
    // that will not take it.
    donor::after_wait(me, outcome.is_ok() && lock.is_donated());
    outcome
}
