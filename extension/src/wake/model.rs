//! The proof that no wake-up is lost: an exhaustive search of every
//! interleaving of 2 workers (2 rounds each of park, re-check, wait) and
//! 3 enqueuers (commit a job, then wake), each atomic action one step. The
//! slot operations are the real ones (`shmem::Slots`, run on a copy of the
//! words for each state); the programs around them follow `mod.rs`.
//!
//! Property, checked in every state where nothing can move any more: no
//! worker sleeps, unwoken, while a committed job is unclaimed. That is,
//! every committed job was seen by some worker's re-check, or every worker
//! that missed it has been woken.
//!
//! Why steps are atomic and sequentially consistent: slot words are SeqCst
//! atomics, and "a re-check sees a commit" is ordered by ProcArrayLock (the
//! snapshot takes it; the commit clears its xid under it before the commit
//! callback runs), so "the re-check missed the commit" implies "the commit's
//! wake-up runs after the worker's park", which is what the interleaving
//! semantics assumes.
//!
//! The same search finds the bugs in variants: re-checking before parking,
//! waking before the commit is visible, setting the latch before marking the
//! slot, and, for the first design (a global `pending` flag and the latch
//! alone), clearing `pending` before publishing, or any other wait in the
//! worker consuming the latch.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use super::shmem::{Slots, Wake};

const WORKERS: usize = 2;
const ENQUEUERS: usize = 3;
const ROUNDS: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Design {
    /// What mod.rs does: per-slot WOKEN marks, the latch only as a doorbell.
    Marks,
    /// The first design: a global `pending` flag, waiters trusting the latch.
    Pending,
}

#[derive(Clone, Copy, Debug)]
struct Protocol {
    design: Design,
    /// Publish in a slot, then re-check (the reverse is the bug).
    park_then_check: bool,
    /// Wake in the commit callback (the reverse: wake before commit).
    wake_after_commit: bool,
    /// Marks: mark the slot woken, then set the latch.
    mark_then_latch: bool,
    /// Pending: publish, then clear `pending`.
    publish_then_clear: bool,
    /// Environment: something the worker runs between parking and waiting
    /// (a lock wait in the claim query, say) may reset its latch once.
    nested_reset: bool,
}

const OURS: Protocol = Protocol {
    design: Design::Marks,
    park_then_check: true,
    wake_after_commit: true,
    mark_then_latch: true,
    publish_then_clear: true,
    nested_reset: true,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WorkerOp {
    ResetLatch,
    Publish,
    ClearPending,
    Check,
    /// Between the re-check and the wait (where a nested reset may hit).
    PreWait,
    /// Marks: is my slot marked woken? Then return true, else sleep.
    Wait,
    /// WaitLatch until the latch is set, then ResetLatch (and, for Marks,
    /// back to Wait).
    Sleep,
    Unpark,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EnqOp {
    Commit,
    /// Marks: `Slots::wake(i)`, remembering whom to latch.
    Mark(usize),
    /// Marks: set the latch remembered by the last Mark.
    Latch,
    /// Marks, bug: latch slot i's backend if it looks unwoken (no mark).
    LatchFirst(usize),
    /// Pending: any slot parked? If not, done.
    Filter,
    /// Pending: swap `pending` to true; if it was true, done.
    Swap,
    /// Pending: set the latch of slot i's backend, if parked.
    LatchSlot(usize),
}

fn worker_program(p: Protocol) -> Vec<WorkerOp> {
    use WorkerOp::*;
    let mut ops = match (p.design, p.publish_then_clear) {
        (Design::Marks, _) => vec![Publish],
        (Design::Pending, true) => vec![ResetLatch, Publish, ClearPending],
        (Design::Pending, false) => vec![ResetLatch, ClearPending, Publish],
    };
    if p.park_then_check {
        ops.push(Check);
    } else {
        ops.insert(0, Check);
    }
    ops.push(PreWait);
    if p.design == Design::Marks {
        ops.push(Wait);
    }
    ops.extend([Sleep, Unpark]);
    ops
}

fn enqueuer_program(p: Protocol) -> Vec<EnqOp> {
    use EnqOp::*;
    let wake: Vec<EnqOp> = match p.design {
        Design::Marks if p.mark_then_latch => (0..WORKERS).flat_map(|i| [Mark(i), Latch]).collect(),
        Design::Marks => (0..WORKERS)
            .flat_map(|i| [LatchFirst(i), Mark(i)])
            .collect(),
        Design::Pending => [Filter, Swap]
            .into_iter()
            .chain((0..WORKERS).map(LatchSlot))
            .collect(),
    };
    if p.wake_after_commit {
        std::iter::once(Commit).chain(wake).collect()
    } else {
        wake.into_iter().chain(std::iter::once(Commit)).collect()
    }
}

const NO_SLOT: u8 = u8::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Worker {
    pc: u8,
    slot: u8,
    round: u8,
    reset_used: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Enqueuer {
    pc: u8,
    /// Marks: the procno the last Mark woke, to latch next.
    to_latch: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    /// The real slot words (Marks), or procno + 1 / 0 (Pending).
    words: [u32; WORKERS],
    pending: bool,
    latch: [bool; WORKERS],
    committed: u8,
    claimed: u8,
    workers: [Worker; WORKERS],
    enqueuers: [Enqueuer; ENQUEUERS],
}

impl State {
    /// The enqueuers run one program and differ only in their job's bit,
    /// so states that differ by a permutation of enqueuers (with their
    /// bits) are one state: the visited set keys on this sorted form, which
    /// cuts the search about sixfold. The search itself walks real states,
    /// so a counterexample's enqueuer numbers stay consistent.
    fn canonical(&self) -> State {
        let mut each: [(Enqueuer, bool, bool); ENQUEUERS] = std::array::from_fn(|e| {
            (
                self.enqueuers[e],
                self.committed & 1 << e != 0,
                self.claimed & 1 << e != 0,
            )
        });
        each.sort_by_key(|(q, committed, claimed)| (q.pc, q.to_latch, *committed, *claimed));
        let mut t = self.clone();
        (t.committed, t.claimed) = (0, 0);
        for (e, (q, committed, claimed)) in each.into_iter().enumerate() {
            t.enqueuers[e] = q;
            t.committed |= u8::from(committed) << e;
            t.claimed |= u8::from(claimed) << e;
        }
        t
    }
}

struct Search {
    p: Protocol,
    worker: Vec<WorkerOp>,
    enq: Vec<EnqOp>,
    seen: HashSet<State, BuildHasherDefault<Fx>>,
    /// Final states with a worker asleep and nothing unclaimed: the
    /// property is not vacuous.
    idle_finals: usize,
}

#[derive(Debug)]
struct Outcome {
    states: usize,
    /// The steps to a lost wake-up, if there is one.
    counterexample: Option<Vec<String>>,
}

/// One step of one actor, named only when a counterexample is printed.
#[derive(Clone, Copy, Debug)]
enum Step {
    Worker(usize, WorkerOp),
    /// Another wait inside the worker's re-check resets its latch.
    NestedReset(usize),
    Enqueuer(usize, EnqOp),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Worker(w, op) => write!(f, "worker {w}: {op:?}"),
            Step::NestedReset(w) => write!(f, "worker {w}: a nested wait resets the latch"),
            Step::Enqueuer(e, op) => write!(f, "enqueuer {e}: {op:?}"),
        }
    }
}

/// The Fx hash (rustc's): the visited set holds millions of small states.
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

fn check(p: Protocol) -> Outcome {
    let init = State {
        words: [0; WORKERS],
        pending: false,
        latch: [false; WORKERS],
        committed: 0,
        claimed: 0,
        workers: [Worker {
            pc: 0,
            slot: NO_SLOT,
            round: 0,
            reset_used: false,
        }; WORKERS],
        enqueuers: [Enqueuer {
            pc: 0,
            to_latch: None,
        }; ENQUEUERS],
    };
    let mut search = Search {
        p,
        worker: worker_program(p),
        enq: enqueuer_program(p),
        seen: HashSet::default(),
        idle_finals: 0,
    };
    let mut path = Vec::new();
    let counterexample = search.dfs(init, &mut path).map(|stuck| {
        path.iter()
            .map(|step| step.to_string())
            .chain(std::iter::once(stuck))
            .collect()
    });
    if counterexample.is_none() {
        assert!(
            search.idle_finals > 0,
            "no final state has a sleeping worker: the property is vacuous"
        );
    }
    Outcome {
        states: search.seen.len(),
        counterexample,
    }
}

impl Search {
    /// The final state of a lost wake-up reachable from `s`, if any;
    /// `path` then holds the steps to it.
    fn dfs(&mut self, s: State, path: &mut Vec<Step>) -> Option<String> {
        if !self.seen.insert(s.canonical()) {
            return None;
        }
        let next = self.successors(&s);
        if next.is_empty() {
            let unclaimed = s.committed & !s.claimed;
            let asleep = (0..WORKERS)
                .any(|w| self.worker.get(usize::from(s.workers[w].pc)) == Some(&WorkerOp::Sleep));
            if asleep && unclaimed != 0 {
                return Some(format!(
                    "stuck: jobs {unclaimed:#b} unclaimed, a worker asleep: {s:?}"
                ));
            }
            self.idle_finals += usize::from(asleep);
            return None;
        }
        for (step, t) in next {
            path.push(step);
            if let Some(stuck) = self.dfs(t, path) {
                return Some(stuck);
            }
            path.pop();
        }
        None
    }

    fn successors(&self, s: &State) -> Vec<(Step, State)> {
        let mut out = Vec::new();
        for w in 0..WORKERS {
            if let Some(t) = self.worker_step(s, w) {
                out.push((
                    Step::Worker(w, self.worker[usize::from(s.workers[w].pc)]),
                    t,
                ));
            }
            let me = s.workers[w];
            if self.p.nested_reset
                && !me.reset_used
                && self.worker.get(usize::from(me.pc)) == Some(&WorkerOp::PreWait)
            {
                let mut t = s.clone();
                t.latch[w] = false;
                t.workers[w].reset_used = true;
                out.push((Step::NestedReset(w), t));
            }
        }
        for e in 0..ENQUEUERS {
            if let Some(t) = self.enqueuer_step(s, e) {
                out.push((
                    Step::Enqueuer(e, self.enq[usize::from(s.enqueuers[e].pc)]),
                    t,
                ));
            }
        }
        out
    }

    fn worker_step(&self, s: &State, w: usize) -> Option<State> {
        let me = s.workers[w];
        let op = *self.worker.get(usize::from(me.pc))?;
        let mut t = s.clone();
        let unpark_pc = (self.worker.len() - 1) as u8;
        let mut pc = me.pc + 1;
        match op {
            WorkerOp::ResetLatch => t.latch[w] = false,
            WorkerOp::Publish => {
                let slot = match self.p.design {
                    Design::Marks => {
                        let slots = Slots::from_words(t.words);
                        let slot = slots.park(w as u32);
                        t.words = slots.words();
                        slot
                    }
                    Design::Pending => {
                        let slot = t.words.iter().position(|&x| x == 0);
                        if let Some(i) = slot {
                            t.words[i] = w as u32 + 1;
                        }
                        slot
                    }
                };
                t.workers[w].slot = slot.expect("a slot per worker") as u8;
            }
            WorkerOp::ClearPending => t.pending = false,
            WorkerOp::Check => {
                let unclaimed = t.committed & !t.claimed;
                if unclaimed != 0 {
                    t.claimed |= unclaimed;
                    pc = unpark_pc;
                }
            }
            WorkerOp::PreWait => {}
            WorkerOp::Wait => {
                let marked =
                    me.slot != NO_SLOT && Slots::from_words(t.words).is_woken(usize::from(me.slot));
                if marked {
                    pc = unpark_pc; // returns true
                }
            }
            WorkerOp::Sleep => {
                if !t.latch[w] {
                    return None; // asleep
                }
                t.latch[w] = false;
                if self.p.design == Design::Marks {
                    pc = me.pc - 1; // loop: look at the mark again
                }
            }
            WorkerOp::Unpark => {
                if me.slot != NO_SLOT {
                    let slots = Slots::from_words(t.words);
                    slots.unpark(usize::from(me.slot));
                    t.words = slots.words();
                    t.workers[w].slot = NO_SLOT;
                }
                t.workers[w].round += 1;
                t.workers[w].reset_used = false;
                pc = if t.workers[w].round < ROUNDS {
                    0
                } else {
                    self.worker.len() as u8
                };
            }
        }
        t.workers[w].pc = pc;
        Some(t)
    }

    fn enqueuer_step(&self, s: &State, e: usize) -> Option<State> {
        let me = s.enqueuers[e];
        let op = *self.enq.get(usize::from(me.pc))?;
        let mut t = s.clone();
        let mut pc = me.pc + 1;
        let done = self.enq.len() as u8;
        match op {
            EnqOp::Commit => t.committed |= 1 << e,
            EnqOp::Mark(i) => {
                let slots = Slots::from_words(t.words);
                let woke = slots.wake(i);
                t.words = slots.words();
                t.enqueuers[e].to_latch = match woke {
                    Wake::Woke(procno) if self.p.mark_then_latch => Some(procno as u8),
                    _ => None,
                };
            }
            EnqOp::Latch => {
                if let Some(procno) = me.to_latch {
                    t.latch[usize::from(procno)] = true;
                }
                t.enqueuers[e].to_latch = None;
            }
            EnqOp::LatchFirst(i) => {
                let word = t.words[i];
                if word != 0 && word & 1 == 0 {
                    t.latch[((word >> 1) - 1) as usize] = true;
                }
            }
            EnqOp::Filter => {
                if t.words.iter().all(|&x| x == 0) {
                    pc = done;
                }
            }
            EnqOp::Swap => {
                if std::mem::replace(&mut t.pending, true) {
                    pc = done;
                }
            }
            EnqOp::LatchSlot(i) => {
                if t.words[i] != 0 {
                    t.latch[(t.words[i] - 1) as usize] = true;
                }
            }
        }
        t.enqueuers[e].pc = pc;
        Some(t)
    }
}

fn safe(name: &str, p: Protocol) {
    let out = check(p);
    println!(
        "{name}: {} states, no lost wake-up: {}",
        out.states,
        out.counterexample.is_none()
    );
    if let Some(path) = out.counterexample {
        panic!("{name}: lost wake-up:\n  {}", path.join("\n  "));
    }
}

fn unsafe_(name: &str, p: Protocol) {
    let out = check(p);
    let path = out.counterexample.unwrap_or_else(|| {
        panic!(
            "{name}: the search found no lost wake-up in {} states",
            out.states
        )
    });
    println!(
        "{name}: lost wake-up found ({} steps):\n  {}",
        path.len(),
        path.join("\n  ")
    );
}

#[test]
fn the_protocol_loses_no_wake_up_in_any_interleaving() {
    safe("marks", OURS);
}

#[test]
fn the_search_finds_a_recheck_before_parking() {
    unsafe_(
        "re-check, then park",
        Protocol {
            park_then_check: false,
            ..OURS
        },
    );
}

#[test]
fn the_search_finds_a_wake_before_the_commit_is_visible() {
    unsafe_(
        "wake, then commit",
        Protocol {
            wake_after_commit: false,
            ..OURS
        },
    );
}

#[test]
fn the_search_finds_a_latch_set_before_the_mark() {
    unsafe_(
        "latch, then mark",
        Protocol {
            mark_then_latch: false,
            ..OURS
        },
    );
}

/// The first design is right in its order and without nested waits...
#[test]
fn the_pending_flag_design_is_safe_only_if_nothing_else_resets_the_latch() {
    let pending = Protocol {
        design: Design::Pending,
        nested_reset: false,
        ..OURS
    };
    safe("pending flag, latch only", pending);
    // ...but a lock wait inside the re-check consumes the wake-up.
    unsafe_(
        "pending flag, latch only, a nested wait",
        Protocol {
            nested_reset: true,
            ..pending
        },
    );
    // ...and clearing pending before publishing loses one outright.
    unsafe_(
        "pending flag cleared before publishing",
        Protocol {
            publish_then_clear: false,
            ..pending
        },
    );
}
