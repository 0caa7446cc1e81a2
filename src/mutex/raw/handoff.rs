//! `Handoff`'s spinner: one waiter that stays on a CPU, registered in the spinner slot, to
//! which an unlock hands the lock before it considers the sleepers (see the parent module's
//! docs for the slot's states and why a spinner goes first).

use super::{DONATED, PARKED, REQUESTS, RawMutex, SPINNING, UNLOCKED, owner_of};
use crate::loom::{
    AWAIT_SPINNER_ROUNDS, FAIRNESS_CHECK_EVERY, HANDOFF_SPIN_ROUNDS, Ordering, monotonic_us,
    yield_now,
};
use crate::mutex::spin::SpinWait;
use crate::task::Me;

/// In the spinner slot: the registered spinner has been chosen as the next owner.
const GRANTED: usize = 1;
/// How long the sleepers of a Handoff lock may be passed over for spinners.
const SLEEPER_PATIENCE_US: u32 = 1000;

impl RawMutex {
    /// Handoff: registers `me` as the lock's spinner and spins until an unlocker hands it the
    /// lock (true) or the budget runs out and it withdraws to sleep (false).
    pub(super) fn spin_for_handoff(&self, me: Me) -> bool {
        // AcqRel on success: Release publishes nothing yet (the bit below does), Acquire orders
        // us after the previous spinner's withdrawal. Relaxed on failure: we just go to sleep.
        if self
            .spinner
            .compare_exchange(0, me.addr(), Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false; // another waiter spins already
        }
        // Release: an unlocker that sees the bit (Acquire) sees our slot entry.
        self.word.fetch_or(SPINNING, Ordering::Release);
        let mut spin = SpinWait::with_budget(HANDOFF_SPIN_ROUNDS);
        loop {
            // Acquire: pairs with the unlocker's Release that made us owner.
            let word = self.word.load(Ordering::Acquire);
            let owner = owner_of(word);
            if owner == me.addr() {
                me.acquired();
                if word & DONATED != 0 {
                    crate::donor::took_donated_lock(me);
                }
                return true;
            }
            // A free word (an unlock that raced our registration): withdraw and take it.
            if owner == UNLOCKED || !spin.spin() {
                break;
            }
        }
        // Withdraw unless an unlocker claimed us first; the slot decides (module docs).
        if self
            .spinner
            .compare_exchange(me.addr(), 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            // Relaxed: a stale or missing bit only changes which unlock path runs.
            self.word.fetch_and(!SPINNING, Ordering::Relaxed);
            return false;
        }
        // Claimed: the unlocker is writing us into the word right now. Only a preemption
        // between its two steps makes this wait long; yield then, in case it shares our CPU.
        let mut spin = SpinWait::default();
        loop {
            // Acquire: as above.
            if owner_of(self.word.load(Ordering::Acquire)) == me.addr() {
                me.acquired();
                return true;
            }
            if !spin.spin() {
                yield_now();
            }
        }
    }

    /// Handoff: makes the registered spinner the owner. False if no spinner is registered or
    /// sleepers have waited long enough that one of them must go first.
    pub(super) fn hand_to_spinner(&self, check_sleepers: bool) -> Spinner {
        // Acquire: pairs with the Release that set SPINNING, so the slot entry is visible.
        let word = self.word.load(Ordering::Acquire);
        if check_sleepers && word & PARKED != 0 && self.sleepers_waited_too_long() {
            return Spinner::SleepersFirst;
        }
        if word & SPINNING == 0 {
            return Spinner::None;
        }
        // Relaxed: ordered after the Acquire load above.
        let spinner = self.spinner.load(Ordering::Relaxed);
        let claimed = spinner != 0
            && spinner & GRANTED == 0
            && self
                .spinner
                .compare_exchange(
                    spinner,
                    spinner | GRANTED,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok();
        if !claimed {
            if spinner == 0 {
                // Relaxed: the spinner left; drop its stale bit (see SPINNING).
                self.word.fetch_and(!SPINNING, Ordering::Relaxed);
            }
            return Spinner::None;
        }
        // Release: our critical section happens-before the spinner's. A CAS loop: waiters
        // may set PARKED, and the ledger DONATED, concurrently.
        let _ = self
            .word
            .fetch_update(Ordering::Release, Ordering::Relaxed, |w| {
                Some(spinner | (w & (PARKED | DONATED | REQUESTS)))
            });
        crate::stats::count_handoff();
        // Release: the next spinner's Acquire registration comes after this handoff.
        self.spinner.store(0, Ordering::Release);
        Spinner::Handed
    }

    /// Handoff: gives the lock to a running waiter if there is one, or one shows up within a
    /// moment while only sleepers wait (unless the sleepers are owed their turn).
    pub(super) fn try_spinner_first(&self) -> bool {
        match self.hand_to_spinner(true) {
            Spinner::Handed => true,
            Spinner::None => {
                self.has_parked()
                    && self.await_spinner()
                    && self.hand_to_spinner(false) == Spinner::Handed
            }
            Spinner::SleepersFirst => false,
        }
    }

    /// Handoff, with sleepers queued and no spinner: waits a moment (about 0.75 µs) for a
    /// running waiter to register before a sleeper gets the lock. With sections shorter than
    /// the gap between a thread's unlock and its next lock, the unlocker often finds only
    /// sleepers, and waking one leaves the lock idle for a whole wake-up (35 µs across vCPUs
    /// here); this wait took 8 threads on a counter from 11 µs to about 0.14 µs per section.
    fn await_spinner(&self) -> bool {
        let mut spin = SpinWait::with_budget(AWAIT_SPINNER_ROUNDS);
        while spin.spin() {
            // Relaxed: a hint; `hand_to_spinner` re-reads with Acquire.
            if self.word.load(Ordering::Relaxed) & SPINNING != 0 {
                return true;
            }
        }
        false
    }

    /// Whether the sleepers have been passed over for about `SLEEPER_PATIENCE_US`. Reads the
    /// clock only on every `FAIRNESS_CHECK_EVERY`th call, so spinner handoffs stay cheap.
    fn sleepers_waited_too_long(&self) -> bool {
        // Relaxed load and store: only the lock holder touches the counter, and the lock
        // orders holders.
        let n = self.handoffs_unchecked.load(Ordering::Relaxed) + 1;
        if n < FAIRNESS_CHECK_EVERY {
            self.handoffs_unchecked.store(n, Ordering::Relaxed);
            return false;
        }
        self.handoffs_unchecked.store(0, Ordering::Relaxed);
        // Relaxed: a hint, see `sleepers_since`.
        let since = self.sleepers_since.load(Ordering::Relaxed);
        // Wrapping: the stamp keeps 32 bits (71 minutes); a stamp older than that is misread
        // as recent once, which only delays one sleeper's turn.
        (monotonic_us() as u32).wrapping_sub(since) >= SLEEPER_PATIENCE_US
    }
}

/// What `hand_to_spinner` did.
#[derive(PartialEq, Eq)]
pub(super) enum Spinner {
    /// The registered spinner is the owner now.
    Handed,
    /// No spinner is registered (or it withdrew first).
    None,
    /// Sleepers have been passed over long enough; one of them goes first.
    SleepersFirst,
}
