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

/// Checks `history`, spending at most `budget` search steps per register.
pub fn check(history: &History, budget: u64) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history.operations() {
        let dropped =
            op.outcome == Outcome::Failed || (op.op == RegisterOp::Read && op.completed.is_none());
        if !dropped {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
    }
    for (key, ops) in by_key {
        let search_ops: Vec<search::Op> = ops
            .iter()
            .map(|o| search::Op {
                op: o.op,
                outcome: o.outcome,
                invoked: o.invoked,
                completed: o.completed,
            })
            .collect();
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

#[cfg(test)]
mod tests;
