//! Where published sections wait: a fixed table of lock-free stacks, found by the lock's
//! address, so a lock carries no stack of its own (parking_lot keeps its queues the same way).
//!
//! Locks whose addresses hash to one bucket share its stack. Each slot names its lock
//! (`Slot::lock`), and a holder that takes the stack keeps only its own lock's slots; the
//! others it hands back to their callers (`proxy::take_mine`), who take their locks the
//! ordinary way. A holder never puts another lock's slots back: while it held them, that
//! lock's holder may have looked at the stack, found nothing and freed its lock, and a slot
//! put back behind a free word would wait forever.

use crate::loom::{AtomicUsize, Ordering};
use crate::task::slot::Slot;
use crate::tuning::REQUEST_BUCKETS;

/// The stack of published slots of the locks hashing to one bucket: a Treiber stack (push with
/// one CAS, take everything with one swap), newest first.
pub(crate) struct Requests(AtomicUsize);

impl Requests {
    crate::loom::const_fn! {
        fn new() -> Requests {
            Requests(AtomicUsize::new(0))
        }
    }

    /// Pushes `slot`, whose `next` is free to write.
    pub(crate) fn push(&self, slot: &Slot) {
        // Relaxed load: the CAS validates.
        let mut head = self.0.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release CAS below.
            slot.next.store(head, Ordering::Relaxed);
            // Release: the slot's fields (and the section behind it) happen-before the
            // holder's Acquire take.
            match self.0.compare_exchange_weak(
                head,
                slot.addr(),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Puts a taken chain (newest first) back, if nothing was published meanwhile. Holder only,
    /// with a chain of its own lock's slots.
    pub(crate) fn restore(&self, chain: usize) -> bool {
        // Release: as a push. Relaxed on failure: the caller takes the newer ones and retries.
        self.0
            .compare_exchange(0, chain, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes every published slot of the bucket, newest first. Holder only.
    pub(crate) fn take_all(&self) -> usize {
        // Acquire: pairs with the pushes' Release.
        self.0.swap(0, Ordering::Acquire)
    }
}

/// A cache line per bucket, so that publishers on different locks do not share one.
#[repr(align(64))]
struct Bucket(Requests);

struct Table([Bucket; REQUEST_BUCKETS]);

impl Table {
    #[cfg(not(loom))]
    const fn new() -> Table {
        Table([const { Bucket(Requests::new()) }; REQUEST_BUCKETS])
    }

    #[cfg(loom)]
    fn new() -> Table {
        Table(std::array::from_fn(|_| Bucket(Requests::new())))
    }
}

crate::loom::global! {
    fn table() -> Table = Table::new();
}

/// The stack that holds the sections published on the lock at `lock`.
pub(crate) fn stack_of(lock: usize) -> &'static Requests {
    // Fibonacci hashing: the product's upper half mixes every bit of the address.
    let hash = (lock as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    &table().0[hash as usize & (REQUEST_BUCKETS - 1)].0
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::stack_of;
    use crate::Mutex;
    use std::sync::Barrier;

    /// Callers of `run` on two locks whose sections share a stack, with guard users on both:
    /// every section runs once, under its own lock (the counters would lose updates
    /// otherwise), however the holders' takes interleave with the publishes.
    #[test]
    fn sections_of_two_locks_sharing_a_stack_all_run_under_their_own_lock() {
        let locks: Vec<Mutex<u64>> = (0..256).map(|_| Mutex::new(0)).collect();
        let addr = |m: &Mutex<u64>| m.raw() as *const crate::RawMutex as usize;
        let (a, b) = (0..locks.len())
            .flat_map(|i| (i + 1..locks.len()).map(move |j| (i, j)))
            .find(|&(i, j)| std::ptr::eq(stack_of(addr(&locks[i])), stack_of(addr(&locks[j]))))
            .map(|(i, j)| (&locks[i], &locks[j]))
            .expect("256 locks in 64 buckets share one");
        const THREADS: usize = 4;
        const ROUNDS: u64 = 5_000;
        let start = Barrier::new(2 * THREADS);
        std::thread::scope(|s| {
            for m in [a, b] {
                for t in 0..THREADS {
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        for _ in 0..ROUNDS {
                            if t == 0 {
                                *m.lock().unwrap() += 1;
                            } else {
                                m.run(|v| *v += 1).unwrap();
                            }
                        }
                    });
                }
            }
        });
        let expected = THREADS as u64 * ROUNDS;
        assert_eq!(
            (*a.lock().unwrap(), *b.lock().unwrap()),
            (expected, expected)
        );
    }
}
