//! The Wing–Gong search with Lowe's memoization, on one register, as porcupine does it.
//!
//! Calls and returns sit in a doubly linked list in real-time order. The search walks it,
//! trying to linearize each call it meets (apply it to the model; it must agree with the
//! recorded outcome); a success removes the call and its return from the list and starts
//! over from the head, remembering (set of linearized operations, state) so no
//! configuration is explored twice. Meeting a return means its call had to be linearized
//! by then: backtrack to the last choice. Operations with an unknown outcome return at
//! infinity and need not be linearized at all.

use super::history::{Outcome, RegisterOp, Value};
use std::collections::HashSet;

/// One operation of the register, as the search needs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op {
    pub op: RegisterOp,
    pub outcome: Outcome,
    pub invoked: u64,
    /// `None`: unknown outcome, returns at infinity.
    pub completed: Option<u64>,
}

/// The register model: the state after `op`, or `None` when the recorded outcome is
/// impossible from `state`.
fn step(state: Value, op: RegisterOp, outcome: Outcome) -> Option<Value> {
    match (op, outcome) {
        (RegisterOp::Read, Outcome::Read(v)) => (v == state).then_some(state),
        (RegisterOp::Write(v), _) => Some(Some(v)),
        (RegisterOp::Delete, _) => Some(None),
        (RegisterOp::Cas { expected, new }, Outcome::Swapped(true)) => {
            (state == expected).then_some(new)
        }
        (RegisterOp::Cas { expected, .. }, Outcome::Swapped(false)) => {
            (state != expected).then_some(state)
        }
        // Unknown: it swapped if it could.
        (RegisterOp::Cas { expected, new }, _) => Some(if state == expected { new } else { state }),
        (RegisterOp::Read, _) => Some(state),
    }
}

/// What the search concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    Linearizable,
    NotLinearizable,
    /// The step budget ran out.
    GaveUp,
}

const HEAD: usize = usize::MAX;

/// Whether `ops` (one register's operations, none failed, no unknown reads) are
/// linearizable from `initial`, within `budget` search steps.
pub(crate) fn search(ops: &[Op], initial: Value, budget: u64) -> Found {
    // Events: 2i is op i's call, 2i+1 its return; ordered by time, unknown returns last.
    let mut order: Vec<(u64, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.invoked, 2 * i));
        order.push((op.completed.unwrap_or(u64::MAX), 2 * i + 1));
    }
    order.sort_unstable();
    let n = order.len();
    let (mut next, mut prev) = (vec![HEAD; n], vec![HEAD; n]);
    let mut first = HEAD;
    let mut last = HEAD;
    for &(_, e) in &order {
        if last == HEAD {
            first = e;
        } else {
            next[last] = e;
        }
        prev[e] = last;
        last = e;
    }
    let required = ops.iter().filter(|o| o.completed.is_some()).count();
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut done = 0usize;
    let mut state = initial;
    let mut seen: HashSet<(Vec<u64>, Value)> = HashSet::new();
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut entry = first;
    let mut steps = 0u64;

    // Removes op i's call and return from the list; `relink` puts them back (in reverse).
    let lift = |i: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>, first: &mut usize| {
        for e in [2 * i, 2 * i + 1] {
            if prev[e] == HEAD {
                *first = next[e];
            } else {
                next[prev[e]] = next[e];
            }
            if next[e] != HEAD {
                prev[next[e]] = prev[e];
            }
        }
    };
    let relink = |i: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>, first: &mut usize| {
        for e in [2 * i + 1, 2 * i] {
            if prev[e] == HEAD {
                *first = e;
            } else {
                next[prev[e]] = e;
            }
            if next[e] != HEAD {
                prev[next[e]] = e;
            }
        }
    };

    loop {
        if done == required {
            return Found::Linearizable;
        }
        steps += 1;
        if steps > budget {
            return Found::GaveUp;
        }
        if entry == HEAD {
            // Only unknown operations' returns remained; fall through to backtracking.
        } else if entry.is_multiple_of(2) {
            let i = entry / 2;
            let op = ops[i];
            if let Some(after) = step(state, op.op, op.outcome) {
                linearized[i / 64] |= 1 << (i % 64);
                if seen.insert((linearized.clone(), after)) {
                    stack.push((i, state));
                    state = after;
                    done += usize::from(op.completed.is_some());
                    lift(i, &mut next, &mut prev, &mut first);
                    entry = first;
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = next[entry];
            continue;
        }
        // A return (or the end): its call should have been linearized. Backtrack.
        let Some((i, before)) = stack.pop() else {
            return Found::NotLinearizable;
        };
        linearized[i / 64] &= !(1 << (i % 64));
        state = before;
        done -= usize::from(ops[i].completed.is_some());
        relink(i, &mut next, &mut prev, &mut first);
        entry = next[2 * i];
    }
}
