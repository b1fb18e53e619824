//! A linearizability checker for histories of register operations (read, write, delete, and
//! compare-and-set on a value or on absence), each register from its own initial value.
//!
//! The search is Wing & Gong's with Lowe's memoization (as in porcupine and Knossos). Each
//! register is checked on its own: linearizability is compositional (Herlihy & Wing), so a
//! history is linearizable exactly when every key's sub-history is, and small sub-histories
//! keep the exponential search small.
//!
//! Outcomes follow Jepsen: `fail` means the operation certainly did not happen and it is
//! dropped; `info` (or no completion at all) means it may take effect at any time after its
//! invocation, or never. Reads with an unknown outcome constrain nothing and are dropped.
//!
//! Histories come from a program ([`History::invoke`], [`History::complete`]) or from a
//! file ([`History::parse`], format in `history.rs`), so multi-process cluster tests can
//! write one as they go and have it checked afterwards.
//!
//! ```
//! use shoal_sim::linearizability::{check, History, Verdict};
//!
//! // A read that misses a write completed before it began: not linearizable.
//! let stale = History::parse(
//!     "initial nil
//!      invoke 1 1 x write 5
//!      ok 1
//!      invoke 2 2 x read
//!      ok 2 nil",
//! )
//! .unwrap();
//! assert!(matches!(check(&stale, 1_000_000), Verdict::NotLinearizable { .. }));
//!
//! // The same read concurrent with the write may see either value.
//! let concurrent = History::parse(
//!     "invoke 1 1 x write 5
//!      invoke 2 2 x read
//!      ok 2 nil
//!      ok 1",
//! )
//! .unwrap();
//! assert_eq!(check(&concurrent, 1_000_000), Verdict::Linearizable);
//! ```

mod history;
mod search;

pub use history::{History, HistoryError, Operation, Outcome, RegisterOp, Value};

use std::collections::BTreeMap;

/// What [`check`] concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every register's operations have a linearization.
    Linearizable,
    /// This register's operations have none.
    NotLinearizable {
        /// The register.
        key: String,
        /// Ids of its operations that took part in the search.
        operations: Vec<u64>,
    },
    /// The search budget ran out on this register before an answer.
    Unknown {
        /// The register.
        key: String,
    },
}

/// Whether the search skips `op`: it certainly did not happen, or it is a read that never
/// answered (which constrains nothing).
fn dropped(op: &Operation) -> bool {
    op.outcome == Outcome::Failed || (op.op == RegisterOp::Read && op.completed.is_none())
}

fn search_op(o: &Operation) -> search::Op {
    search::Op {
        op: o.op,
        outcome: o.outcome,
        invoked: o.invoked,
        completed: o.completed,
    }
}

/// Checks `history`, spending at most `budget` search steps per register.
pub fn check(history: &History, budget: u64) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history.operations() {
        if !dropped(op) {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
    }
    for (key, ops) in by_key {
        let search_ops: Vec<search::Op> = ops.iter().map(|o| search_op(o)).collect();
        match search::search(&search_ops, history.initial_of(key), budget) {
            search::Found::Linearizable => {}
            search::Found::NotLinearizable => {
                return Verdict::NotLinearizable {
                    key: key.to_owned(),
                    operations: ops.iter().map(|o| o.id).collect(),
                }
            }
            search::Found::GaveUp => {
                return Verdict::Unknown {
                    key: key.to_owned(),
                }
            }
        }
    }
    Verdict::Linearizable
}

/// A small window that shows why a register has no linearization: the shortest prefix of
/// its history (cut just after some operation completed) that has none, the operation
/// whose completion ends that prefix, and the operations concurrent with it. The history up
/// to just before that completion could be ordered; with this operation's outcome it
/// cannot (the cause may lie earlier, as with a stale read of a value overwritten long
/// before, but this is the first outcome no order fits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The register.
    pub key: String,
    /// Ids of the operations in the shortest non-linearizable prefix (those invoked by its
    /// end), in invocation order.
    pub prefix: Vec<u64>,
    /// The prefix's last completed operation: adding its outcome is what breaks it.
    pub last: u64,
    /// Ids of the prefix's operations concurrent with `last` (invoked before it completed,
    /// not completed before it was invoked), `last` excluded, in invocation order.
    pub concurrent: Vec<u64>,
}

/// Explains why `key`'s operations in `history` have no linearization (see
/// [`Explanation`]), spending at most `budget` steps per search (a binary search over
/// prefixes, so about log2 of the operations' count searches). `None` if they have one,
/// or if any search gave up (the prefix found could then not be the shortest).
pub fn explain(history: &History, key: &str, budget: u64) -> Option<Explanation> {
    let mut ops: Vec<&Operation> = history
        .operations()
        .iter()
        .filter(|o| o.key == key && !dropped(o))
        .collect();
    ops.sort_by_key(|o| o.invoked);
    let initial = history.initial_of(key);
    // The prefix cut just after position `cut`: operations invoked by then, those not yet
    // completed pending (their outcome unknown; a pending read is dropped).
    let prefix = |cut: u64| -> Vec<&Operation> {
        ops.iter()
            .copied()
            .filter(|o| o.invoked <= cut)
            .filter(|o| o.op != RegisterOp::Read || o.completed.is_some_and(|c| c <= cut))
            .collect()
    };
    // Whether the prefix ending at `cut` has no linearization; `None` if the search gave
    // up.
    let broken = |cut: u64| -> Option<bool> {
        let search_ops: Vec<search::Op> = prefix(cut)
            .iter()
            .map(|o| match o.completed {
                Some(c) if c <= cut => search_op(o),
                _ => search::Op {
                    outcome: Outcome::Unknown,
                    completed: None,
                    ..search_op(o)
                },
            })
            .collect();
        match search::search(&search_ops, initial, budget) {
            search::Found::NotLinearizable => Some(true),
            search::Found::Linearizable => Some(false),
            search::Found::GaveUp => None,
        }
    };
    let mut cuts: Vec<u64> = ops.iter().filter_map(|o| o.completed).collect();
    cuts.sort_unstable();
    // Adding events to a history never makes it linearizable again, so the broken
    // prefixes are a suffix of the cuts: find the first.
    let (mut lo, mut hi) = (0, cuts.len());
    if hi == 0 || !broken(cuts[hi - 1])? {
        return None;
    }
    hi -= 1;
    while lo < hi {
        let mid = (lo + hi) / 2;
        if broken(cuts[mid])? {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let cut = cuts[lo];
    let in_prefix = prefix(cut);
    let last = in_prefix.iter().find(|o| o.completed == Some(cut))?;
    let concurrent = in_prefix
        .iter()
        .filter(|o| o.id != last.id)
        .filter(|o| o.invoked <= cut && o.completed.is_none_or(|c| c >= last.invoked))
        .map(|o| o.id)
        .collect();
    Some(Explanation {
        key: key.to_owned(),
        prefix: in_prefix.iter().map(|o| o.id).collect(),
        last: last.id,
        concurrent,
    })
}

#[cfg(test)]
mod tests;
