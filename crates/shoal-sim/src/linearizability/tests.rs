use super::*;

const BUDGET: u64 = 10_000_000;

fn verdict(text: &str) -> Verdict {
    check(&History::parse(text).expect("parses"), BUDGET)
}

fn linearizable(text: &str) -> bool {
    match verdict(text) {
        Verdict::Linearizable => true,
        Verdict::NotLinearizable { .. } => false,
        Verdict::Unknown { key } => panic!("gave up on {key}"),
    }
}

#[test]
fn sequential_histories_follow_the_register() {
    assert!(linearizable(
        "invoke 1 1 x write 1\nok 1\ninvoke 2 1 x read\nok 2 1\ninvoke 3 1 x cas 1 2\nok 3 true\ninvoke 4 1 x cas 1 3\nok 4 false\ninvoke 5 1 x read\nok 5 2"
    ));
    assert!(!linearizable(
        "invoke 1 1 x write 1\nok 1\ninvoke 2 1 x read\nok 2 2"
    ));
    assert!(!linearizable(
        "invoke 1 1 x write 1\nok 1\ninvoke 2 1 x cas 2 3\nok 2 true"
    ));
    assert!(!linearizable(
        "invoke 1 1 x write 1\nok 1\ninvoke 2 1 x cas 1 3\nok 2 false"
    ));
    assert!(linearizable("initial 7\ninvoke 1 1 x read\nok 1 7"));
    assert!(!linearizable("initial 7\ninvoke 1 1 x read\nok 1 nil"));
}

#[test]
fn concurrent_operations_may_take_effect_in_either_order() {
    // Two concurrent writes, then reads agreeing on either order.
    let both = |last: u64| {
        format!("invoke 1 1 x write 1\ninvoke 2 2 x write 2\nok 1\nok 2\ninvoke 3 1 x read\nok 3 {last}")
    };
    assert!(linearizable(&both(1)));
    assert!(linearizable(&both(2)));
    // But two later sequential reads may not disagree then flip back.
    assert!(!linearizable(
        "invoke 1 1 x write 1\ninvoke 2 2 x write 2\nok 1\nok 2\ninvoke 3 1 x read\nok 3 1\ninvoke 4 1 x read\nok 4 2"
    ));
}

#[test]
fn a_stale_read_after_a_completed_write_is_caught() {
    // The classic split-brain symptom: process 2 reads the old value after the write
    // completed (from a deposed leader).
    assert!(!linearizable(
        "invoke 1 1 x write 1\nok 1\ninvoke 2 1 x write 2\nok 2\ninvoke 3 2 x read\nok 3 1"
    ));
}

#[test]
fn failed_operations_never_happened_and_unknown_ones_may_have() {
    assert!(!linearizable(
        "invoke 1 1 x write 1\nfail 1\ninvoke 2 2 x read\nok 2 1"
    ));
    assert!(linearizable(
        "invoke 1 1 x write 1\ninfo 1\ninvoke 2 2 x read\nok 2 1"
    ));
    assert!(linearizable(
        "invoke 1 1 x write 1\ninfo 1\ninvoke 2 2 x read\nok 2 nil"
    ));
    // Never completed at all is the same as info; it can take effect long after.
    assert!(linearizable(
        "invoke 1 1 x write 1\ninvoke 2 2 x read\nok 2 nil\ninvoke 3 2 x read\nok 3 1\ninvoke 4 2 x read\nok 4 1"
    ));
    // …but only once: it cannot be seen, unseen, then seen again.
    assert!(!linearizable(
        "invoke 1 1 x write 1\ninvoke 2 2 x read\nok 2 1\ninvoke 3 2 x read\nok 3 nil"
    ));
}

#[test]
fn keys_are_checked_independently_and_the_bad_one_is_named() {
    let text = "invoke 1 1 a write 1\nok 1\ninvoke 2 1 b write 1\nok 2\ninvoke 3 2 b read\nok 3 nil\ninvoke 4 2 a read\nok 4 1";
    assert_eq!(
        verdict(text),
        Verdict::NotLinearizable {
            key: "b".into(),
            operations: vec![2, 3]
        }
    );
}

#[test]
fn the_budget_bounds_the_search() {
    // Many concurrent writes followed by an impossible read: exponential without memo,
    // and still more than a budget of 10 steps.
    let mut text = String::new();
    for i in 0..12 {
        text += &format!("invoke {i} {i} x write {i}\n");
    }
    for i in 0..12 {
        text += &format!("ok {i}\n");
    }
    text += "invoke 99 1 x read\nok 99 77\n";
    let h = History::parse(&text).unwrap();
    assert_eq!(check(&h, 10), Verdict::Unknown { key: "x".into() });
    assert!(matches!(check(&h, BUDGET), Verdict::NotLinearizable { .. }));
}

#[test]
fn the_text_form_round_trips_and_bad_lines_are_refused_with_their_number() {
    let text = "initial nil\ninvoke 1 3 k write 4\ninvoke 2 4 k cas 4 5\nok 1\nok 2 true\ninvoke 3 3 k read\nok 3 5\ninvoke 4 3 k read\nfail 4\n";
    let h = History::parse(text).unwrap();
    assert_eq!(h.to_text(), text);
    assert_eq!(History::parse(&h.to_text()).unwrap(), h);
    assert!(matches!(
        History::parse("invoke 1 1 x read\nok 1 true"),
        Err(HistoryError::Syntax { line: 2, .. })
    ));
    assert!(matches!(
        History::parse("ok 1"),
        Err(HistoryError::NotPending(1))
    ));
    assert!(matches!(
        History::parse("invoke 1 1 x read\ninvoke 1 1 x read"),
        Err(HistoryError::DuplicateId(1))
    ));
    assert!(matches!(
        History::parse("invoke 1 1 x read\nok 1 2\nok 1 2"),
        Err(HistoryError::NotPending(1))
    ));
    assert!(matches!(
        History::parse("invoke 1 1 x frob"),
        Err(HistoryError::Syntax { line: 1, .. })
    ));
}

/// A random history of a correct (atomic) register stays linearizable; the same with one
/// read's answer changed to a value never written is not.
#[test]
fn random_correct_histories_pass_and_a_corrupted_read_fails() {
    use shoal_core::{DetRng, Rng};
    for seed in 0..200 {
        let mut rng = DetRng::from_seed(seed);
        let mut h = History::new(None);
        let mut value: Value = None;
        let mut pending: Vec<(u64, RegisterOp)> = Vec::new();
        let mut next_id = 0;
        let mut reads = Vec::new();
        for _ in 0..60 {
            if pending.len() < 4 && rng.chance(0.5) {
                next_id += 1;
                // A value or absence: `None` one time in five.
                let value_or_nil = |rng: &mut DetRng| Some(rng.below(5)).filter(|v| *v != 4);
                let op = match rng.below(4) {
                    0 => RegisterOp::Read,
                    1 => RegisterOp::Write(rng.below(5)),
                    2 => RegisterOp::Delete,
                    _ => RegisterOp::Cas {
                        expected: value_or_nil(&mut rng),
                        new: value_or_nil(&mut rng),
                    },
                };
                h.invoke(next_id, next_id % 4, "x", op).unwrap();
                pending.push((next_id, op));
            } else if !pending.is_empty() {
                // The register takes effect atomically at completion time.
                let (id, op) = pending.remove(rng.below(pending.len() as u64) as usize);
                let outcome = match op {
                    RegisterOp::Read => {
                        reads.push(id);
                        Outcome::Read(value)
                    }
                    RegisterOp::Write(v) => {
                        value = Some(v);
                        Outcome::Written
                    }
                    RegisterOp::Delete => {
                        value = None;
                        Outcome::Written
                    }
                    RegisterOp::Cas { expected, new } => {
                        let swapped = value == expected;
                        if swapped {
                            value = new;
                        }
                        Outcome::Swapped(swapped)
                    }
                };
                h.complete(id, outcome).unwrap();
            }
        }
        assert_eq!(check(&h, BUDGET), Verdict::Linearizable, "seed {seed}");
        if let Some(&victim) = reads.first() {
            let text = h.to_text();
            let bad: String = text
                .lines()
                .map(|l| {
                    if l.starts_with(&format!("ok {victim} ")) {
                        format!("ok {victim} 999\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            assert!(
                matches!(verdict(&bad), Verdict::NotLinearizable { .. }),
                "seed {seed}: a read of a value never written"
            );
        }
    }
}

#[test]
fn deletes_and_compare_and_set_on_absence_follow_the_register() {
    // Delete, then a create-only cas succeeds and a read sees it.
    assert!(linearizable(
        "initial 1\ninvoke 1 1 x delete\nok 1\ninvoke 2 1 x read\nok 2 nil\n\
         invoke 3 1 x cas nil 5\nok 3 true\ninvoke 4 1 x read\nok 4 5"
    ));
    // A create-only cas cannot succeed on a present key, nor fail on an absent one.
    assert!(!linearizable(
        "invoke 1 1 x write 1\nok 1\ninvoke 2 1 x cas nil 5\nok 2 true"
    ));
    assert!(!linearizable("invoke 1 1 x cas nil 5\nok 1 false"));
    // A conditional delete empties the key.
    assert!(linearizable(
        "invoke 1 1 x write 3\nok 1\ninvoke 2 1 x cas 3 nil\nok 2 true\ninvoke 3 1 x read\nok 3 nil"
    ));
    // A read after a completed delete must not see the old value.
    assert!(!linearizable(
        "invoke 1 1 x write 3\nok 1\ninvoke 2 1 x delete\nok 2\ninvoke 3 1 x read\nok 3 3"
    ));
    // A delete of unknown outcome may or may not have happened.
    assert!(linearizable(
        "invoke 1 1 x write 3\nok 1\ninvoke 2 1 x delete\ninfo 2\ninvoke 3 1 x read\nok 3 3"
    ));
}

#[test]
fn each_register_starts_from_its_own_initial_value() {
    let text = "initial 0\ninitial y 7\ninitial z nil\n\
                invoke 1 1 x read\nok 1 0\ninvoke 2 1 y read\nok 2 7\ninvoke 3 1 z read\nok 3 nil";
    assert!(linearizable(text));
    assert!(!linearizable(
        "initial 0\ninitial y 7\ninvoke 1 1 y read\nok 1 0"
    ));
    // The text form round-trips, per-key initial values and nil operands included.
    let h =
        History::parse("initial y 7\ninvoke 1 1 y cas 7 nil\nok 1 true\ninvoke 2 1 y delete\nok 2")
            .unwrap();
    assert_eq!(h.initial_of("y"), Some(7));
    assert_eq!(h.initial_of("other"), None);
    assert_eq!(History::parse(&h.to_text()).unwrap(), h);
}

/// Files written in the old format (one initial value, numeric cas operands) read as before.
#[test]
fn histories_in_the_old_format_still_parse_and_check_the_same() {
    let old = "initial 0\ninvoke 1 1 x cas 0 2\nok 1 true\ninvoke 2 2 x read\nok 2 2";
    let h = History::parse(old).unwrap();
    assert_eq!(
        h.operations()[0].op,
        RegisterOp::Cas {
            expected: Some(0),
            new: Some(2)
        }
    );
    assert!(linearizable(old));
}

/// A violation is narrowed to the shortest prefix that has no linearization: here a stale
/// read long after many good operations. The window is that read and what overlapped it,
/// not the whole history.
#[test]
fn a_violation_is_explained_by_its_shortest_broken_prefix() {
    let mut text = String::from("initial nil\n");
    // Twenty good write-then-read pairs, one after another.
    for i in 1..=20u64 {
        let (w, r) = (2 * i, 2 * i + 1);
        text.push_str(&format!(
            "invoke {w} 1 x write {i}\nok {w}\ninvoke {r} 2 x read\nok {r} {i}\n"
        ));
    }
    // A write of 100 overlapping a read of 100, then a read of the old value 20, then
    // more good operations that play no part.
    text.push_str("invoke 100 1 x write 100\ninvoke 101 3 x read\nok 101 100\nok 100\n");
    text.push_str("invoke 102 2 x read\ninvoke 103 4 x write 7\nok 102 20\nok 103\n");
    text.push_str("invoke 104 1 x read\nok 104 7\n");
    let h = History::parse(&text).unwrap();
    assert!(matches!(
        check(&h, 1_000_000),
        Verdict::NotLinearizable { .. }
    ));
    let e = explain(&h, "x", 1_000_000).expect("an explanation");
    assert_eq!(e.key, "x");
    assert_eq!(
        e.last, 102,
        "the stale read ends the shortest broken prefix"
    );
    assert_eq!(e.concurrent, vec![103], "{e:?}");
    assert!(!e.prefix.contains(&104), "{e:?}");
    assert!(e.prefix.contains(&100) && e.prefix.contains(&103), "{e:?}");
    // A linearizable register has nothing to explain.
    let good = History::parse("invoke 1 1 x write 1\nok 1\ninvoke 2 2 x read\nok 2 1").unwrap();
    assert_eq!(explain(&good, "x", 1_000_000), None);
}
