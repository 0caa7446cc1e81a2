//! The spinner slot: one waiter that stays on a CPU, registered in the slot, to which an
//! unlock hands the lock before it considers the sleepers (see the parent module's docs for the
//! slot's states and why a spinner goes first). `Handoff`'s waiters spin there for a budget
//! before they sleep; under every policy, a lender or real-time waiter spins there while the
//! owner runs.

use crate::donor::Spin;
use crate::loom::{
    FilterOp, Ordering, ParkToken, UnparkToken, deadline_passed, monotonic_us, unpark_filter,
    yield_now,
};
use crate::spin::{ChainEndWatch, SpinWait};
use crate::task::Me;
use crate::tuning::{
    AWAIT_SPINNER_ROUNDS, FAIRNESS_CHECK_EVERY, HANDOFF_SPIN_ROUNDS, SLEEPER_LOOK_EVERY_US,
};
use crate::word::{DONATED, PARKED, POISONED, REQUESTS, RawMutex, SPINNING, UNLOCKED, owner_of};
use std::time::Instant;

/// The word's flags a handoff to the spinner keeps: sleepers, lenders, published sections and
/// poison stay; `SPINNING` stays only if another waiter has registered since the claim
/// (`handed_word`).
const KEPT_BY_HANDOFF: usize = PARKED | DONATED | REQUESTS | POISONED;
/// Whether `us` microseconds have passed from `since` to `now` (low 32 bits of `monotonic_us`,
/// compared with wrapping arithmetic, as the sleepers' stamps are).
fn at_least_since(now: u32, since: u32, us: u32) -> bool {
    now.wrapping_sub(since) >= us
}

crate::loom::const_thread_local! {
    /// This thread's spinner handoffs since it last read the clock for the sleepers' patience,
    /// and when it last looked at a queue's first sleeper (low 32 bits of `monotonic_us`).
    /// Thread-local, not in the task record: written at every handoff, it would share a line
    /// with fields other threads read at each handoff (`exited`, `tid`).
    static FAIRNESS_CHECK: std::cell::Cell<(u8, u32)> = std::cell::Cell::new((0, 0));
}

/// How long the sleepers of a Handoff lock may be passed over for spinners.
pub(super) const SLEEPER_PATIENCE_US: u32 = 1000;

impl RawMutex {
    /// Handoff: registers `me` as the lock's spinner and spins until an unlocker hands it the
    /// lock (true) or the budget runs out and it withdraws to sleep (false).
    pub(super) fn spin_for_handoff(&self, me: Me) -> bool {
        let mut spin = SpinWait::with_budget(HANDOFF_SPIN_ROUNDS);
        let handed = self.spin_in_slot(me, false, |_| spin.spin());
        if handed {
            me.acquired();
            // Relaxed: we own the word now; the bit was set under the ledger lock, which
            // `took_donated_lock` takes.
            if self.word.load(Ordering::Relaxed) & DONATED != 0 {
                // The waiters' loans now belong to us.
                crate::donor::took_donated_lock(me);
            }
        }
        handed
    }

    /// A waiter that lends, or waits at a real-time priority, spins in the spinner slot while
    /// the chain's last owner runs (`ChainEndWatch`), as the kernel's rt_mutex waiters spin
    /// while the owner is on a CPU: an owner that runs will unlock soon, and a waiter that
    /// sleeps instead pays for its wake-up on top (tens of µs when its CPU went idle), which a
    /// PI futex's waiter, spinning in the kernel, does not. It has published `blocked_on` and,
    /// if real-time, lent all but its CPU (then `spin` gives the owner it lifted a start
    /// grace); any other waiter has lent nothing yet (`donor::before_spinning`).
    ///
    /// It also stops when the lock changes hands or is freed, and when `deadline` passes. True
    /// if an unlocker handed it the lock in the slot. False: the caller lends its CPU and parks
    /// (the park's validation sends it round again if the lock was freed meanwhile).
    pub(super) fn spin_while_owner_runs(
        &self,
        me: Me,
        deadline: Option<Instant>,
        spin: Spin,
    ) -> bool {
        // Relaxed: only tells when the lock changes hands; the slot's own loads order a handoff.
        let owner = owner_of(self.word.load(Ordering::Relaxed));
        let Some(mut watch) = ChainEndWatch::new(self, me, spin.start_grace_us()) else {
            return false;
        };
        self.spin_in_slot(me, true, |word| {
            owner_of(word) == owner
                && !deadline.is_some_and(deadline_passed)
                && watch.still_running()
        })
    }

    /// Registers `me` in the spinner slot and spins while `keep_spinning(word)` says so, until
    /// an unlocker hands it the lock (true) or it withdraws (false). False at once if another
    /// waiter holds the slot. A free word ends the spin too: an unlock raced the registration,
    /// and the caller goes and takes the lock its own way. The caller does the bookkeeping of a
    /// lock it was handed.
    fn spin_in_slot(
        &self,
        me: Me,
        wait_published: bool,
        mut keep_spinning: impl FnMut(usize) -> bool,
    ) -> bool {
        // AcqRel on success: Release publishes nothing yet (the bit below does), Acquire orders
        // us after the previous spinner's withdrawal. Relaxed on failure: we just go to sleep.
        if !self.spinner.register(me.addr()) {
            return false; // another waiter spins already
        }
        // Release: an unlocker that sees the bit (Acquire) sees our slot entry.
        self.word.fetch_or(SPINNING, Ordering::Release);
        loop {
            // Acquire: pairs with the unlocker's Release that made us owner.
            let word = self.word.load(Ordering::Acquire);
            let owner = owner_of(word);
            if owner == me.addr() {
                return true;
            }
            if owner == UNLOCKED || !keep_spinning(word) {
                break;
            }
        }
        // Withdraw unless an unlocker claimed us first; the slot decides (module docs).
        // AcqRel: as the claim's Acquire; Release, so a registrant after us comes after.
        if self.spinner.take(me.addr(), Ordering::AcqRel) {
            // Relaxed: a stale or missing bit only changes which unlock path runs.
            self.word.fetch_and(!SPINNING, Ordering::Relaxed);
            return false;
        }
        // Claimed: the unlocker is writing us into the word right now. Only a preemption
        // between its steps makes this wait long: a SCHED_IDLE unlocker, which nobody lends
        // to while it runs, preempted by a hog right after its claim. So a spinner whose wait
        // is published finishes the handoff itself once the unlocker has ended that wait, and
        // lends to an unlocker that stopped running before that
        // (`donor::lend_to_stalled_unlocker`); any other yields, in case the unlocker shares
        // its CPU. The unlocker's watch (a chain walk and a clock read) is made only once a
        // short spin has not seen the handoff through: most end within nanoseconds of the
        // claim.
        let mut spin = SpinWait::default();
        let mut watched = !wait_published;
        let mut unlocker = None;
        while !(self.is_owned_by(me) || wait_published && self.finish_claimed_handoff(me)) {
            if spin.spin() {
                continue;
            }
            if !watched {
                watched = true;
                unlocker = ChainEndWatch::new(self, me, 0);
            }
            if let Some(watch) = unlocker.as_mut() {
                if !watch.still_running() {
                    unlocker = None;
                    crate::donor::lend_to_stalled_unlocker(me, self);
                }
            } else {
                yield_now();
            }
        }
        true
    }

    fn is_owned_by(&self, me: Me) -> bool {
        // Acquire: pairs with the unlocker's Release that made us owner.
        owner_of(self.word.load(Ordering::Acquire)) == me.addr()
    }

    /// A claimed spinner whose wait the unlocker has ended (`blocked_on` cleared, the
    /// unlocker's step right after its claim) writes itself into the word, unless the
    /// unlocker has done so already. True once the word names us; false while the wait still
    /// shows. After that clear the unlocker touches neither our record nor, once the word
    /// names us, the word (its write is conditioned on its still owning the lock), so we may
    /// run on, unlock and wait again while it is still preempted.
    fn finish_claimed_handoff(&self, me: Me) -> bool {
        // Acquire (inside `blocked_on`): pairs with the Release clear
        // (`clear_blocked_on_of_waiter`), which comes after the unlocker's critical section.
        if me.task().blocked_on().is_some() {
            return false;
        }
        // Until the word names us, its owner is the unlocker that claimed us: only the holder
        // changes the owner, and the holder hands the lock to us. AcqRel: Release so that a
        // reader that sees us as owner (Acquire) also sees our wait cleared; Acquire as any
        // taking of the lock.
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (owner_of(w) != me.addr()).then(|| self.handed_word(me.addr(), w))
            });
        true
    }

    /// The word that makes `spinner`, claimed from the slot, the owner of a lock whose word is
    /// `w`: its flags but `SPINNING`, which was the claimed spinner's own unless another waiter
    /// has registered since the claim emptied the slot. `w` must have been read with Acquire:
    /// a registration sets the bit after it fills the slot, so a `w` that shows the newcomer's
    /// bit also shows its entry here, and a bit set after our CAS is set on the new word.
    fn handed_word(&self, spinner: usize, w: usize) -> usize {
        // Relaxed: ordered by the caller's Acquire read of `w`, as above.
        let newcomer = self.spinner.spinner(Ordering::Relaxed) != 0;
        spinner | (w & KEPT_BY_HANDOFF) | if newcomer { w & SPINNING } else { 0 }
    }

    /// Makes the registered spinner the owner (only if it is `only`, when given). None if no
    /// such spinner is registered; SleepersFirst if sleepers have waited long enough that one
    /// of them must go first (checked when `check_sleepers`, Handoff only).
    pub(super) fn hand_to_spinner(&self, check_sleepers: bool, only: Option<usize>) -> Spinner {
        // Acquire: pairs with the Release that set SPINNING, so the slot entry is visible.
        let word = self.word.load(Ordering::Acquire);
        let unlocker = owner_of(word);
        if check_sleepers && word & PARKED != 0 && self.sleepers_waited_too_long() {
            return Spinner::SleepersFirst;
        }
        if word & SPINNING == 0 {
            return Spinner::None;
        }
        // Relaxed: ordered after the Acquire load above.
        let spinner = self.spinner.spinner(Ordering::Relaxed);
        // Acquire: the spinner's record is initialised for us (its registration was Release).
        // The claim empties the slot at once (module docs).
        let claimed = spinner != 0
            && only.is_none_or(|o| o == spinner)
            && self.spinner.take(spinner, Ordering::Acquire);
        if !claimed {
            if spinner == 0 {
                // Relaxed: the spinner left; drop its stale bit (see SPINNING).
                self.word.fetch_and(!SPINNING, Ordering::Relaxed);
            }
            return Spinner::None;
        }
        crate::loom::after_spinner_claim();
        // SAFETY: claimed, so alive (above and below); a record that has exited was registered
        // by a thread of the parent's at a fork, and stays.
        if unsafe { crate::task::has_exited(spinner) } {
            // Nobody will come for the lock: not handed. Relaxed: see the stale bit above.
            if self.spinner.spinner(Ordering::Relaxed) == 0 {
                self.word.fetch_and(!SPINNING, Ordering::Relaxed);
            }
            return Spinner::None;
        }
        // A spinner waiting while the owner runs still shows as blocked on this lock: its wait
        // ends before the word names it, as a parked waiter's does (`hand_to_parked`).
        // SAFETY: we claimed the spinner, so it cannot withdraw, and it stays in its spin
        // loop, and alive, until this clear or the word below names it.
        unsafe { crate::task::clear_blocked_on_of_waiter(spinner) };
        // Release: our critical section happens-before the spinner's; Acquire for
        // `handed_word`. A CAS loop: waiters may set PARKED or register, and the ledger set
        // DONATED, concurrently. Only while we still own the word: from the clear above on, a
        // spinner whose wait was published may write itself in (`finish_claimed_handoff`) and
        // may even have unlocked again since; we cannot own the lock again meanwhile, since we
        // are busy here.
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (owner_of(w) == unlocker).then(|| self.handed_word(spinner, w))
            });
        crate::stats::count_handoff();
        Spinner::Handed
    }

    /// Handoff: gives the lock to a running waiter if there is one, or one shows up within a
    /// moment while only sleepers wait (unless the sleepers are owed their turn).
    pub(super) fn try_spinner_first(&self) -> bool {
        match self.hand_to_spinner(true, None) {
            Spinner::Handed => true,
            Spinner::None => {
                self.has_parked()
                    && self.await_spinner()
                    && self.hand_to_spinner(false, None) == Spinner::Handed
            }
            Spinner::SleepersFirst => false,
        }
    }

    /// Handoff, with sleepers queued and no spinner: waits a moment (about 0.75 µs) for a
    /// running waiter to register before a sleeper gets the lock. With sections shorter than
    /// the gap between a thread's unlock and its next lock, the unlocker often finds only
    /// sleepers, and waking one leaves the lock idle for a whole wake-up (35 µs across vCPUs
    /// here), where a waiter that registers meanwhile takes it at once.
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

    /// Whether the first sleeper has been passed over for about `SLEEPER_PATIENCE_US`: since
    /// it parked, or since the sleeper before it was served (`Task::parked_at_us`). Reads the
    /// clock only on every `FAIRNESS_CHECK_EVERY`th spinner handoff of this thread, and looks
    /// at the first sleeper (under the queue lock, while we hold the lock) at most every
    /// `SLEEPER_LOOK_EVERY_US`, so handoffs stay cheap.
    fn sleepers_waited_too_long(&self) -> bool {
        let look_now = FAIRNESS_CHECK.with(|check| {
            let (handoffs, last_look) = check.get();
            if handoffs + 1 < FAIRNESS_CHECK_EVERY {
                check.set((handoffs + 1, last_look));
                return None;
            }
            let now = monotonic_us() as u32;
            let look = at_least_since(now, last_look, SLEEPER_LOOK_EVERY_US);
            check.set((0, if look { now } else { last_look }));
            look.then_some(now)
        });
        look_now.is_some_and(|now| {
            self.first_sleeper_waited_us_at(now)
                .is_some_and(|waited| waited >= SLEEPER_PATIENCE_US)
        })
    }

    /// How long the first thread queued on this lock has been passed over, by its stamp;
    /// `None` if nobody is queued.
    pub(crate) fn first_sleeper_waited_us(&self) -> Option<u32> {
        self.first_sleeper_waited_us_at(monotonic_us() as u32)
    }

    fn first_sleeper_waited_us_at(&self, now: u32) -> Option<u32> {
        let mut waited = None;
        let first_sleeper = |token: ParkToken| {
            // SAFETY: a token on a lock's queue is the record of the thread queued with it,
            // alive while it is queued; the filter runs under the queue lock.
            let since = unsafe { crate::task::record_at(token.0) }.parked_at_us();
            // Wrapping: the stamp keeps 32 bits (71 minutes); a stamp older than that is
            // misread as recent once, which only delays one sleeper's turn.
            waited = Some(now.wrapping_sub(since));
            FilterOp::Stop
        };
        // SAFETY: the key is this lock's address; the filter unparks nobody and does not panic.
        unsafe { unpark_filter(self.park_key(), first_sleeper, |_| UnparkToken(0)) };
        waited
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

#[cfg(all(test, not(loom), donates))]
mod tests {
    use super::SPINNING;
    use crate::Mutex;
    use crate::sys::sched::current_cpu;
    use crate::sys::test_threads::{
        Hog, ReadBack, assert_finished_on_cpu_1_and_put_back, become_idle_on, burn, cpus_0_and_1,
        has_two_cpus, pin_to, read_back,
    };
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, mpsc};
    use std::time::{Duration, Instant};

    /// The demo's `direct` case at its worst instant: the SCHED_IDLE owner, on CPU 0, unlocks
    /// and claims the nice-0 waiter spinning in the slot on CPU 1, and a nice-0 hog takes CPU 0
    /// before the owner has ended the waiter's wait. The waiter must lend to the owner, which
    /// then finishes the handoff on CPU 1 and is put back (CPU 0, SCHED_IDLE). Before, the
    /// waiter spun until the hog stopped (2 s here). A test hook widens the window: right after
    /// its claim the owner burns 20 ms of its CPU time. The owner makes itself SCHED_IDLE once
    /// the waiter spins in the slot, just before it unlocks; until then it is nice 0, so that
    /// other tests' threads do not preempt it and send the waiter to sleep instead (the waiter
    /// spins because the owner may not run on its CPU). No privilege needed (the CPU is what
    /// gets the owner going).
    #[test]
    fn a_spinner_claimed_by_a_preempted_unlocker_lends_to_it() {
        if !has_two_cpus("the preempted unlocker's and the spinner's") {
            return;
        }
        let _stage = cpus_0_and_1();
        let Some((finished_on, back, waited)) = (0..20).find_map(|_| claim_and_preempt()) else {
            panic!("in 20 tries the waiter never spun in the slot while the owner ran");
        };
        assert!(waited < HOG_RUN / 2, "the waiter waited {waited:?}");
        assert_finished_on_cpu_1_and_put_back(
            "the unlocker (its handoff)",
            &format!(" (waited {waited:?})"),
            finished_on,
            back,
        );
    }

    const HOG_RUN: Duration = Duration::from_secs(2);

    type Outcome = (Option<u32>, ReadBack, Duration);

    /// Stages the case once: the CPU the unlocker's hook ended on, the unlocker's affinity and
    /// policy once its unlock returned, and the waiter's wait. `None` if the waiter did not
    /// spin in the slot within 50 ms, or left it before the unlock (a thread outside the test
    /// preempted the owner, and the waiter went to sleep instead); the lock was then passed on
    /// as usual.
    fn claim_and_preempt() -> Option<Outcome> {
        let m = Arc::new(Mutex::new(()));
        let (locked_tx, locked) = mpsc::channel();
        let (in_gap_tx, in_gap) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let unlocker = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                pin_to(0);
                let guard = m.lock().unwrap();
                locked_tx.send(()).unwrap();
                // Running, so that the waiter spins, until the waiter is in the slot.
                let deadline = Instant::now() + Duration::from_millis(50);
                // Relaxed: a test's poll of a flag.
                while m.raw().word.load(Ordering::Relaxed) & SPINNING == 0 {
                    if Instant::now() > deadline {
                        drop(in_gap_tx);
                        return;
                    }
                    std::hint::spin_loop();
                }
                // SCHED_IDLE before the unlock, not in the hook: a waiter that lent to us while
                // we were preempted between the claim and the hook would see its loan undone
                // by the hook's own writes, and spin for the whole hog run (a CI failure).
                become_idle_on(0);
                let (cpu_tx, cpu_rx) = mpsc::channel();
                crate::loom::AFTER_SPINNER_CLAIM.set(Some(Box::new(move || {
                    in_gap_tx.send(()).unwrap();
                    burn(Duration::from_millis(20));
                    cpu_tx.send(current_cpu()).unwrap();
                })));
                drop(guard);
                if crate::loom::AFTER_SPINNER_CLAIM.take().is_some() {
                    // The waiter left the slot before the unlock (the owner was preempted
                    // meanwhile): no claim. Dropping the hook tells the test so.
                    return;
                }
                let tid = crate::sys::gettid();
                let finished_on = cpu_rx.recv().unwrap();
                done_tx.send((finished_on, read_back(tid))).unwrap();
            })
        };
        locked.recv().unwrap();
        let waiter = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                pin_to(1);
                let start = Instant::now();
                drop(m.lock().unwrap());
                start.elapsed()
            })
        };
        let staged = in_gap.recv().is_ok();
        let hog = staged.then(|| Hog::start(0, HOG_RUN));
        let outcome = done.recv().ok();
        let waited = waiter.join().unwrap();
        if let Some(hog) = hog {
            hog.stop();
        }
        unlocker.join().unwrap();
        outcome.map(|(finished_on, read_back)| (finished_on, read_back, waited))
    }
}
