//! The shared-memory half of wake-ups: a fixed array of parked-worker slots
//! and the counters `flowtrack.wake_stats()` reports. Plain atomics, no
//! Postgres symbols, so the protocol's every step is exercised by plain
//! `#[test]`s and by the exhaustive model in `model.rs`.
//!
//! A slot is one `u32` word: 0 when free, else `(procno + 1) << 1 | WOKEN`
//! for the parked backend's PGPROC number. Only the backend that parked a
//! slot frees it; enqueuers only ever set its WOKEN bit, with a
//! compare-and-swap on the word they read, so a wake-up can land on the
//! parking it saw or on a later parking of the same slot (a spurious wake-up
//! the worker's re-check absorbs), never on nothing.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};

/// The WOKEN bit of a slot word.
const WOKEN: u32 = 1;

/// How many backends may be parked at once. Each worker process parks one
/// connection at a time, so this is the number of idle worker processes
/// that wake within milliseconds; a park that finds every slot taken falls
/// back to polling (counted as an overflow).
pub const SLOTS: usize = 64;

/// The parked-worker slots.
pub struct Slots<const N: usize> {
    words: [AtomicU32; N],
}

/// What one slot's share of a wake-up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Nobody is parked here.
    Free,
    /// Somebody is parked here and was already woken: nothing written.
    AlreadyWoken,
    /// This call woke the backend with this PGPROC number: set its latch.
    Woke(u32),
}

impl<const N: usize> Slots<N> {
    pub const fn new() -> Self {
        Self {
            words: [const { AtomicU32::new(0) }; N],
        }
    }

    /// Publishes `procno` as parked and not yet woken in the first free
    /// slot; its index, or `None` when every slot is taken. SeqCst: the
    /// worker's re-check that follows must be ordered after this store.
    pub fn park(&self, procno: u32) -> Option<usize> {
        if procno >= u32::MAX >> 1 {
            return None; // no word encodes it (PGPROC numbers are far smaller)
        }
        let word = (procno + 1) << 1;
        (0..N).find(|&i| {
            self.words[i]
                .compare_exchange(0, word, SeqCst, Relaxed)
                .is_ok()
        })
    }

    /// Frees a slot this backend parked.
    pub fn unpark(&self, slot: usize) {
        self.words[slot].store(0, SeqCst);
    }

    /// Whether an enqueuer has woken the backend parked in `slot`.
    pub fn is_woken(&self, slot: usize) -> bool {
        self.words[slot].load(SeqCst) & WOKEN != 0
    }

    /// One slot's share of a wake-up, run by an enqueuer after its commit:
    /// mark the parked backend woken unless it already is. Reads only, in
    /// the common cases (nobody parked, or already woken), so busy workers
    /// cost an enqueue no shared-memory write.
    pub fn wake(&self, slot: usize) -> Wake {
        let word = &self.words[slot];
        let mut seen = word.load(SeqCst);
        loop {
            // 1 is no word park writes; read as free rather than trusted.
            if seen <= WOKEN {
                return Wake::Free;
            }
            if seen & WOKEN != 0 {
                return Wake::AlreadyWoken;
            }
            match word.compare_exchange(seen, seen | WOKEN, SeqCst, SeqCst) {
                Ok(_) => return Wake::Woke((seen >> 1) - 1),
                Err(now) => seen = now,
            }
        }
    }

    /// (parked, of which woken), read slot by slot (not one snapshot).
    pub fn counts(&self) -> (u32, u32) {
        self.words.iter().fold((0, 0), |(parked, woken), w| {
            let w = w.load(Relaxed);
            (
                parked + u32::from(w != 0),
                woken + u32::from(w & WOKEN != 0),
            )
        })
    }

    /// The raw words, for the model check's state.
    #[cfg(test)]
    pub fn words(&self) -> [u32; N] {
        std::array::from_fn(|i| self.words[i].load(SeqCst))
    }

    /// Slots holding these raw words, for the model check's state.
    #[cfg(test)]
    pub fn from_words(words: [u32; N]) -> Self {
        Self {
            words: words.map(AtomicU32::new),
        }
    }
}

/// Monotonic counters for `flowtrack.wake_stats()`. Relaxed: they observe,
/// they order nothing.
#[derive(Default)]
pub struct Counters {
    /// Successful parks.
    pub parks: AtomicU64,
    /// Parked backends woken (one per backend per wake-up).
    pub wakes: AtomicU64,
    /// Commits that had work due, found workers parked, and woke none
    /// because every one was already woken.
    pub coalesced: AtomicU64,
    /// Waits that ended by their timeout (the polling fallback at work).
    pub timeouts: AtomicU64,
    /// Parks that found every slot taken (those workers poll).
    pub overflows: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Relaxed);
    }
}

/// Everything wake-ups keep in shared memory.
pub struct WakeShared {
    pub slots: Slots<SLOTS>,
    pub counters: Counters,
}

impl WakeShared {
    pub const fn new() -> Self {
        Self {
            slots: Slots::new(),
            counters: Counters {
                parks: AtomicU64::new(0),
                wakes: AtomicU64::new(0),
                coalesced: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
                overflows: AtomicU64::new(0),
            },
        }
    }
}

impl Default for WakeShared {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod unit {
    use super::{Slots, Wake};

    #[test]
    fn a_parked_backend_is_woken_once_and_its_slot_reused_after_unpark() {
        let slots = Slots::<2>::new();
        assert_eq!(slots.wake(0), Wake::Free);
        let a = slots.park(7).unwrap();
        let b = slots.park(0).unwrap();
        assert_ne!(a, b);
        assert_eq!(slots.park(9), None, "two slots, both taken");
        assert_eq!(slots.counts(), (2, 0));
        assert!(!slots.is_woken(a));
        assert_eq!(slots.wake(a), Wake::Woke(7));
        assert_eq!(slots.wake(a), Wake::AlreadyWoken);
        assert_eq!(slots.wake(b), Wake::Woke(0));
        assert!(slots.is_woken(a) && slots.is_woken(b));
        assert_eq!(slots.counts(), (2, 2));
        slots.unpark(a);
        assert_eq!(slots.wake(a), Wake::Free);
        assert_eq!(slots.park(9), Some(a));
        assert!(!slots.is_woken(a), "a new parking starts unwoken");
    }

    #[test]
    fn the_largest_procnos_still_fit_in_a_word() {
        let slots = Slots::<1>::new();
        let i = slots.park((u32::MAX >> 1) - 1).unwrap();
        assert_eq!(slots.wake(i), Wake::Woke((u32::MAX >> 1) - 1));
        slots.unpark(i);
        assert_eq!(slots.park(u32::MAX >> 1), None, "no word encodes it");
        assert_eq!(slots.park(u32::MAX), None, "no word encodes it");
    }

    /// Real threads: every parking a waker runs after is woken, however
    /// parks and unparks interleave (a smoke test; the proof is model.rs).
    #[test]
    fn concurrent_parks_and_wakes_keep_the_words_consistent() {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        let slots = Slots::<4>::new();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for procno in 0..3u32 {
                let (slots, stop) = (&slots, &stop);
                s.spawn(move || {
                    while !stop.load(SeqCst) {
                        let i = slots.park(procno).expect("4 slots, 3 parkers");
                        while !slots.is_woken(i) && !stop.load(SeqCst) {
                            std::hint::spin_loop();
                        }
                        slots.unpark(i);
                    }
                });
            }
            for _ in 0..20_000 {
                for i in 0..4 {
                    if let Wake::Woke(p) = slots.wake(i) {
                        assert!(p < 3, "woke a procno nobody parked: {p}");
                    }
                }
            }
            stop.store(true, SeqCst);
        });
        assert_eq!(slots.counts(), (0, 0));
    }
}
