//! The engine against an in-memory model over random operation sequences: batches of puts,
//! deletes and compare-and-sets, splits and merges, and restarts (drop and reopen).

use proptest::prelude::*;
use shoal_core::{KeyRange, RangeId};
use shoal_storage::{
    Condition, Engine, EngineConfig, RangeStats, Scan, SplitSpec, WriteBatch, WriteOp, WriteOutcome,
};
use std::collections::BTreeMap;

const LEFT: RangeId = RangeId::new(1);
const RIGHT: RangeId = RangeId::new(2);

#[derive(Debug, Clone)]
enum Op {
    Batch(Vec<Write>),
    Split(u8),
    Merge,
    Restart,
}

#[derive(Debug, Clone)]
enum Write {
    Put(u8, u8),
    Delete(u8),
    /// Compare-and-set against the model's current version (`true`) or a wrong one.
    CasVersion(u8, bool, Option<u8>),
    CasAbsent(u8, u8),
    CasValue(u8, u8, Option<u8>),
}

fn key(k: u8) -> Vec<u8> {
    vec![b'k', k]
}

fn write() -> impl Strategy<Value = Write> {
    let k = 0u8..12;
    prop_oneof![
        4 => (k.clone(), any::<u8>()).prop_map(|(k, v)| Write::Put(k, v)),
        2 => k.clone().prop_map(Write::Delete),
        2 => (k.clone(), any::<bool>(), proptest::option::of(any::<u8>()))
            .prop_map(|(k, right, v)| Write::CasVersion(k, right, v)),
        1 => (k.clone(), any::<u8>()).prop_map(|(k, v)| Write::CasAbsent(k, v)),
        1 => (k, 0u8..3, proptest::option::of(any::<u8>()))
            .prop_map(|(k, e, v)| Write::CasValue(k, e, v)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec(write(), 1..5).prop_map(Op::Batch),
        1 => (1u8..12).prop_map(Op::Split),
        1 => Just(Op::Merge),
        1 => Just(Op::Restart),
    ]
}

/// The model: every key's version and value; per range, the span's split point (if split),
/// version counters and applied indexes.
#[derive(Default)]
struct Model {
    data: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    split: Option<Vec<u8>>,
    next_version: [u64; 2],
    applied: [u64; 2],
}

impl Model {
    fn side(&self, k: &[u8]) -> usize {
        usize::from(self.split.as_deref().is_some_and(|s| k >= s))
    }

    fn stats(&self, side: usize) -> RangeStats {
        let mut s = RangeStats::default();
        for (k, (_, v)) in &self.data {
            if self.side(k) == side {
                s.live_keys += 1;
                s.live_bytes += (k.len() + v.len()) as u64;
            }
        }
        s
    }
}

fn to_op(model: &Model, w: &Write) -> WriteOp {
    let current = |k: u8| model.data.get(&key(k));
    match *w {
        Write::Put(k, v) => WriteOp::Put {
            key: key(k),
            value: vec![v],
        },
        Write::Delete(k) => WriteOp::Delete { key: key(k) },
        Write::CasVersion(k, right, v) => WriteOp::CompareAndSet {
            key: key(k),
            expect: Condition::Version(match (current(k), right) {
                (Some((ver, _)), true) => *ver,
                (Some((ver, _)), false) => ver + 1000,
                (None, _) => 1,
            }),
            new: v.map(|v| vec![v]),
        },
        Write::CasAbsent(k, v) => WriteOp::CompareAndSet {
            key: key(k),
            expect: Condition::Absent,
            new: Some(vec![v]),
        },
        Write::CasValue(k, e, v) => WriteOp::CompareAndSet {
            key: key(k),
            expect: Condition::Value(vec![e]),
            new: v.map(|v| vec![v]),
        },
    }
}

/// Applies `op` to the model the way the engine should, returning its outcome.
fn model_apply(model: &mut Model, side: usize, op: &WriteOp) -> WriteOutcome {
    let cur = model.data.get(op.key()).cloned();
    let new = match op {
        WriteOp::Put { value, .. } => Some(value.clone()),
        WriteOp::Delete { .. } => None,
        WriteOp::CompareAndSet { expect, new, .. } => {
            let holds = match (expect, &cur) {
                (Condition::Absent, None) => true,
                (Condition::Version(v), Some((cv, _))) => v == cv,
                (Condition::Value(v), Some((_, cv))) => v == cv,
                _ => false,
            };
            if !holds {
                return match cur {
                    None => WriteOutcome::Missing,
                    Some((cv, _)) => WriteOutcome::Mismatch {
                        current_version: cv,
                    },
                };
            }
            new.clone()
        }
    };
    match new {
        Some(v) => {
            let version = model.next_version[side];
            model.next_version[side] += 1;
            model.data.insert(op.key().to_vec(), (version, v));
            WriteOutcome::Written { version }
        }
        None => WriteOutcome::Deleted {
            existed: model.data.remove(op.key()).is_some(),
        },
    }
}

fn check(engine: &Engine, model: &Model) {
    let ranges: Vec<RangeId> = if model.split.is_some() {
        vec![LEFT, RIGHT]
    } else {
        vec![LEFT]
    };
    let mut all = Vec::new();
    for (side, &r) in ranges.iter().enumerate() {
        let info = engine.range(r).unwrap();
        assert_eq!(info.stats, model.stats(side), "stats of {r}");
        assert_eq!(info.applied_index, model.applied[side]);
        all.extend(engine.scan(r, &Scan::all(100)).unwrap());
    }
    let expect: Vec<_> = model
        .data
        .iter()
        .map(|(k, (ver, v))| (k.clone(), *ver, v.clone()))
        .collect();
    let got: Vec<_> = all
        .into_iter()
        .map(|e| (e.key, e.version, e.value))
        .collect();
    assert_eq!(got, expect);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn engine_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        engine.create_range(LEFT, KeyRange::full(), 0).unwrap();
        let mut model = Model { next_version: [1, 1], ..Model::default() };
        for op in ops {
            match op {
                Op::Batch(writes) => {
                    // Writes go to the range of the first key; others of the batch that
                    // fall elsewhere are dropped from it.
                    let first = to_op(&model, &writes[0]);
                    let side = model.side(first.key());
                    let range = [LEFT, RIGHT][side];
                    let mut batch = WriteBatch::new();
                    let mut expect = Vec::new();
                    for w in &writes {
                        let op = to_op(&model, w);
                        if model.side(op.key()) == side {
                            expect.push(model_apply(&mut model, side, &op));
                            batch.push(op);
                        }
                    }
                    model.applied[side] += 1;
                    let got = engine.apply(range, model.applied[side], &batch).unwrap();
                    prop_assert_eq!(got, expect);
                }
                Op::Split(at) if model.split.is_none() => {
                    let at = key(at);
                    let index = model.applied[0] + 1;
                    engine.split(LEFT, &SplitSpec { at: at.clone(), new_range: RIGHT, index, new_range_applied: 0, left_tag: None, right_tag: None }).unwrap();
                    model.applied = [index, 0];
                    model.next_version[1] = model.next_version[0];
                    model.split = Some(at);
                }
                Op::Merge if model.split.is_some() => {
                    let index = model.applied[0] + 1;
                    engine.merge(LEFT, RIGHT, index).unwrap();
                    model.applied = [index, 0];
                    model.next_version[0] = model.next_version[0].max(model.next_version[1]);
                    model.split = None;
                }
                Op::Restart => {
                    drop(engine);
                    engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
                }
                Op::Split(_) | Op::Merge => {}
            }
            check(&engine, &model);
        }
    }
}
