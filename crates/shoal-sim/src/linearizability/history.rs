//! A history of register operations as clients saw them, and its text form.
//!
//! The text form has one event per line, in real-time order (a line is written when the
//! event happens):
//!
//! ```text
//! # comments and blank lines are ignored
//! initial nil                      # or a number: every register's value before the history
//! initial <key> <value|nil>        # one register's value before the history (overrides)
//! invoke <id> <process> <key> read
//! invoke <id> <process> <key> write <value>
//! invoke <id> <process> <key> delete
//! invoke <id> <process> <key> cas <expected|nil> <new|nil>
//! ok <id> <value|nil>              # a read's answer
//! ok <id>                          # a write or delete done
//! ok <id> <true|false>             # a cas done: whether it swapped
//! fail <id>                        # the operation certainly did not take effect
//! info <id>                        # unknown (a timeout): it may take effect, at any time
//! ```
//!
//! Ids are unique numbers, processes any number (informational), keys any word without
//! spaces, values unsigned 64-bit numbers, `nil` an absent key: `cas nil 5` creates a key only
//! if it is absent, `cas 5 nil` deletes it only if it holds 5. An operation with no completion
//! line is `info`. Files written before deletes, `nil` operands and per-key initial values
//! existed read the same as before.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// A register value: `None` is a missing key.
pub type Value = Option<u64>;

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    /// Reads the value.
    Read,
    /// Sets the value.
    Write(u64),
    /// Removes the key (its value becomes `None`).
    Delete,
    /// Sets the value to `new` if it is `expected`; `None` on either side is an absent key
    /// (create only if absent; delete only if it holds a value).
    Cas {
        /// The value required.
        expected: Value,
        /// The value set.
        new: Value,
    },
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A read returned this value.
    Read(Value),
    /// A write or delete completed.
    Written,
    /// A cas completed; whether it swapped.
    Swapped(bool),
    /// It certainly did not take effect.
    Failed,
    /// Unknown: it may take effect at any time after its invocation, or never.
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Its id.
    pub id: u64,
    /// The client that issued it.
    pub process: u64,
    /// The register.
    pub key: String,
    /// What it does.
    pub op: RegisterOp,
    /// Position of its invocation among all events.
    pub invoked: u64,
    /// Position of its completion, if it completed.
    pub completed: Option<u64>,
    /// How it ended ([`Outcome::Unknown`] until completed).
    pub outcome: Outcome,
}

/// Why a history could not be built or parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// A line that is not an event.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An id invoked twice.
    #[error("operation {0} invoked twice")]
    DuplicateId(u64),
    /// A completion of an operation never invoked, or completed twice.
    #[error("completion of operation {0}, which is not pending")]
    NotPending(u64),
    /// A completion that does not fit the operation (a read answered `true`, …).
    #[error("operation {id}: outcome {outcome:?} does not fit {op:?}")]
    Mismatch {
        /// The operation.
        id: u64,
        /// What it does.
        op: RegisterOp,
        /// The outcome given.
        outcome: Outcome,
    },
}

/// Register operations in real-time order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Every register's value before the history, unless [`History::set_initial`] gave the
    /// register its own.
    pub initial: Value,
    /// Registers whose value before the history is not [`History::initial`].
    initials: BTreeMap<String, Value>,
    ops: Vec<Operation>,
    by_id: HashMap<u64, usize>,
    events: u64,
}

impl History {
    /// An empty history whose registers start at `initial`.
    pub fn new(initial: Value) -> Self {
        History {
            initial,
            ..History::default()
        }
    }

    /// Gives register `key` its own value before the history.
    pub fn set_initial(&mut self, key: impl Into<String>, value: Value) {
        self.initials.insert(key.into(), value);
    }

    /// Register `key`'s value before the history.
    pub fn initial_of(&self, key: &str) -> Value {
        self.initials.get(key).copied().unwrap_or(self.initial)
    }

    /// The operations, in invocation order.
    pub fn operations(&self) -> &[Operation] {
        &self.ops
    }

    /// Whether operation `id` was invoked and has not completed.
    pub fn is_pending(&self, id: u64) -> bool {
        self.by_id.get(&id).is_some_and(|&i| {
            self.ops[i].completed.is_none() && self.ops[i].outcome == Outcome::Unknown
        })
    }

    /// Records an invocation, now.
    pub fn invoke(
        &mut self,
        id: u64,
        process: u64,
        key: impl Into<String>,
        op: RegisterOp,
    ) -> Result<(), HistoryError> {
        if self.by_id.contains_key(&id) {
            return Err(HistoryError::DuplicateId(id));
        }
        self.by_id.insert(id, self.ops.len());
        self.ops.push(Operation {
            id,
            process,
            key: key.into(),
            op,
            invoked: self.events,
            completed: None,
            outcome: Outcome::Unknown,
        });
        self.events += 1;
        Ok(())
    }

    /// Records a completion, now. [`Outcome::Unknown`] completes nothing (the operation
    /// stays open forever) but is accepted, as `info` lines are.
    pub fn complete(&mut self, id: u64, outcome: Outcome) -> Result<(), HistoryError> {
        let &i = self.by_id.get(&id).ok_or(HistoryError::NotPending(id))?;
        let op = &mut self.ops[i];
        if op.completed.is_some() || op.outcome != Outcome::Unknown {
            return Err(HistoryError::NotPending(id));
        }
        let fits = matches!(
            (op.op, outcome),
            (_, Outcome::Failed | Outcome::Unknown)
                | (RegisterOp::Read, Outcome::Read(_))
                | (RegisterOp::Write(_) | RegisterOp::Delete, Outcome::Written)
                | (RegisterOp::Cas { .. }, Outcome::Swapped(_))
        );
        if !fits {
            return Err(HistoryError::Mismatch {
                id,
                op: op.op,
                outcome,
            });
        }
        if outcome != Outcome::Unknown {
            op.completed = Some(self.events);
            op.outcome = outcome;
            self.events += 1;
        }
        Ok(())
    }

    /// Parses the text form (see the module docs).
    pub fn parse(text: &str) -> Result<History, HistoryError> {
        let mut h = History::default();
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let syntax = |reason: &str| HistoryError::Syntax {
                line,
                reason: reason.to_owned(),
            };
            let words: Vec<&str> = raw
                .split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            let num = |i: usize| -> Result<u64, HistoryError> {
                words
                    .get(i)
                    .ok_or_else(|| syntax("missing field"))?
                    .parse()
                    .map_err(|_| syntax("expected a number"))
            };
            let value = |i: usize| -> Result<Value, HistoryError> {
                match words.get(i) {
                    Some(&"nil") => Ok(None),
                    Some(_) => num(i).map(Some),
                    None => Err(syntax("missing value")),
                }
            };
            match words.as_slice() {
                [] => {}
                ["initial", _] => h.initial = value(1)?,
                ["initial", key, _] => {
                    let v = value(2)?;
                    h.set_initial(*key, v);
                }
                ["invoke", _, _, key, rest @ ..] => {
                    let op = match rest {
                        ["read"] => RegisterOp::Read,
                        ["write", _] => RegisterOp::Write(num(5)?),
                        ["delete"] => RegisterOp::Delete,
                        ["cas", _, _] => RegisterOp::Cas {
                            expected: value(5)?,
                            new: value(6)?,
                        },
                        _ => {
                            return Err(syntax(
                                "expected read, write <v>, delete or cas <old> <new>",
                            ))
                        }
                    };
                    h.invoke(num(1)?, num(2)?, *key, op)?;
                }
                ["ok", _, rest @ ..] => {
                    let id = num(1)?;
                    let kind = h.by_id.get(&id).map(|&i| h.ops[i].op);
                    let outcome = match (kind, rest) {
                        (Some(RegisterOp::Read), [_]) => Outcome::Read(value(2)?),
                        (Some(RegisterOp::Write(_) | RegisterOp::Delete), []) => Outcome::Written,
                        (Some(RegisterOp::Cas { .. }), ["true"]) => Outcome::Swapped(true),
                        (Some(RegisterOp::Cas { .. }), ["false"]) => Outcome::Swapped(false),
                        (None, _) => return Err(HistoryError::NotPending(id)),
                        _ => return Err(syntax("the result does not fit the operation")),
                    };
                    h.complete(id, outcome)?;
                }
                ["fail", _] => h.complete(num(1)?, Outcome::Failed)?,
                ["info", _] => h.complete(num(1)?, Outcome::Unknown)?,
                _ => return Err(syntax("unknown event")),
            }
        }
        Ok(h)
    }

    /// The text form, events in order (operations never completed get no line).
    pub fn to_text(&self) -> String {
        let show = |v: Value| v.map_or("nil".to_owned(), |v| v.to_string());
        let mut events: Vec<(u64, String)> = Vec::new();
        for op in &self.ops {
            let what = match op.op {
                RegisterOp::Read => "read".to_owned(),
                RegisterOp::Write(v) => format!("write {v}"),
                RegisterOp::Delete => "delete".to_owned(),
                RegisterOp::Cas { expected, new } => {
                    format!("cas {} {}", show(expected), show(new))
                }
            };
            events.push((
                op.invoked,
                format!("invoke {} {} {} {what}", op.id, op.process, op.key),
            ));
            if let Some(at) = op.completed {
                let done = match op.outcome {
                    Outcome::Read(v) => format!("ok {} {}", op.id, show(v)),
                    Outcome::Written => format!("ok {}", op.id),
                    Outcome::Swapped(s) => format!("ok {} {s}", op.id),
                    Outcome::Failed => format!("fail {}", op.id),
                    Outcome::Unknown => format!("info {}", op.id),
                };
                events.push((at, done));
            }
        }
        events.sort_unstable();
        let mut out = format!("initial {}\n", show(self.initial));
        for (key, value) in &self.initials {
            let _ = writeln!(out, "initial {key} {}", show(*value));
        }
        for (_, line) in events {
            let _ = writeln!(out, "{line}");
        }
        out
    }
}
