use super::*;
use crate::entry::EntryPayload;
use crate::membership::Membership;
use crate::store::MemLogStore;
use proptest::prelude::*;
use shoal_core::NodeId;

const G1: GroupId = GroupId::new(1);
const G2: GroupId = GroupId::new(2);

fn entry(index: LogIndex, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: EntryPayload::Command(format!("e{index}t{term}").into_bytes().into()),
    }
}

fn entries(lo: LogIndex, hi: LogIndex, term: Term) -> Vec<Entry> {
    (lo..hi).map(|i| entry(i, term)).collect()
}

fn meta(index: LogIndex, term: Term) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        membership: Membership::new([NodeId::new(1)]),
    }
}

fn small() -> WalConfig {
    WalConfig {
        segment_bytes: 512,
        cache_bytes_per_group: 200,
        ..WalConfig::default()
    }
}

fn all(store: &impl LogStore) -> Vec<Entry> {
    store
        .entries(store.first_index(), store.last_index() + 1, u64::MAX)
        .unwrap()
}

#[test]
fn what_was_synced_is_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, recovery) = Wal::open(dir.path(), WalConfig::default()).unwrap();
        assert_eq!(
            recovery,
            Recovery {
                segments: 0,
                ..Recovery::default()
            }
        );
        let mut s = wal.store(G1);
        s.append(&entries(1, 11, 1)).unwrap();
        s.append(&entries(8, 13, 2)).unwrap();
        s.set_hard_state(HardState {
            term: 2,
            vote: Some(NodeId::new(3)),
            commit: 9,
        })
        .unwrap();
        s.compact(&meta(4, 1), 3).unwrap();
        s.sync().unwrap();
    }
    let (wal, recovery) = Wal::open(dir.path(), WalConfig::default()).unwrap();
    assert_eq!(recovery.groups, vec![G1]);
    assert_eq!(recovery.torn, None);
    let s = wal.store(G1);
    assert_eq!((s.first_index(), s.last_index()), (4, 12));
    assert_eq!(s.term(3).unwrap(), 1);
    assert_eq!(s.term(8).unwrap(), 2);
    assert_eq!(s.hard_state().vote, Some(NodeId::new(3)));
    assert_eq!(s.snapshot_meta(), meta(4, 1));
    let mut want = entries(4, 8, 1);
    want.extend(entries(8, 13, 2));
    assert_eq!(all(&s), want);
}

#[test]
fn one_sync_covers_every_group() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), WalConfig::default()).unwrap();
    let (mut a, mut b) = (wal.store(G1), wal.store(G2));
    a.append(&entries(1, 5, 1)).unwrap();
    b.append(&entries(1, 3, 1)).unwrap();
    a.sync().unwrap();
    b.sync().unwrap();
    assert_eq!(
        wal.stats().syncs,
        1,
        "the second group's sync found nothing to do"
    );
    assert_eq!(wal.stats().records, 2);
}

/// Writes two synced records of group 1 (entries 1..4, then 4..6) into a new WAL in `dir`;
/// returns the first one's end offset in segment 1.
fn two_synced_records(dir: &std::path::Path) -> u64 {
    let (wal, _) = Wal::open(dir, WalConfig::default()).unwrap();
    let mut s = wal.store(G1);
    s.append(&entries(1, 4, 1)).unwrap();
    s.sync().unwrap();
    let len = std::fs::metadata(segment_path(dir, 1)).unwrap().len();
    s.append(&entries(4, 6, 1)).unwrap();
    s.sync().unwrap();
    len
}

#[test]
fn a_torn_tail_is_cut_off_and_reported_at_every_cut_point() {
    let dir = tempfile::tempdir().unwrap();
    let synced_len = two_synced_records(dir.path());
    let path = segment_path(dir.path(), 1);
    let full = std::fs::read(&path).unwrap();
    for cut in synced_len as usize + 1..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let (wal, recovery) = Wal::open(dir.path(), WalConfig::default()).unwrap();
        let torn = recovery.torn.expect("a torn write is reported");
        assert_eq!(
            (torn.offset, torn.dropped_bytes),
            (synced_len, cut as u64 - synced_len)
        );
        assert_eq!(all(&wal.store(G1)), entries(1, 4, 1));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            synced_len,
            "truncated on disk"
        );
    }
    // Garbage after the last record (a zero-filled block, a flipped byte) is torn too.
    let mut zeros = full.clone();
    zeros.extend([0; 100]);
    std::fs::write(&path, &zeros).unwrap();
    let (_, recovery) = Wal::open(dir.path(), WalConfig::default()).unwrap();
    assert_eq!(recovery.torn.unwrap().reason, RecordError::BadLength(0));
}

#[test]
fn damage_with_synced_records_after_it_refuses_to_open_but_a_bad_last_record_is_torn() {
    let dir = tempfile::tempdir().unwrap();
    let first_len = two_synced_records(dir.path()) as usize;
    let path = segment_path(dir.path(), 1);
    let good = std::fs::read(&path).unwrap();

    // A flipped byte in the first record, with the second intact after it: not a torn write.
    let mut bad = good.clone();
    bad[first_len - 1] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    match Wal::open(dir.path(), WalConfig::default()) {
        Err(LogStoreError::Corrupt(msg)) => assert!(msg.contains("data follows"), "{msg}"),
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), bad, "nothing was cut");

    // The same flip in the last record, followed by zeros (unwritten blocks): torn.
    let mut torn = good.clone();
    *torn.last_mut().unwrap() ^= 1;
    torn.extend([0; 64]);
    std::fs::write(&path, &torn).unwrap();
    let (wal, recovery) = Wal::open(dir.path(), WalConfig::default()).unwrap();
    assert_eq!(recovery.torn.unwrap().reason, RecordError::Checksum);
    assert_eq!(all(&wal.store(G1)), entries(1, 4, 1));
}

#[test]
fn damage_in_an_older_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), small()).unwrap();
        let mut s = wal.store(G1);
        for i in 0..40 {
            s.append(&entries(i * 5 + 1, i * 5 + 6, 1)).unwrap();
            s.sync().unwrap();
        }
        assert!(wal.segments().len() > 2);
    }
    let path = segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    match Wal::open(dir.path(), small()) {
        Err(LogStoreError::Corrupt(msg)) => assert!(msg.contains("not a torn write"), "{msg}"),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn segments_are_deleted_once_compacted_and_recovery_still_matches() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = MemLogStore::new();
    {
        let (wal, _) = Wal::open(dir.path(), small()).unwrap();
        let (mut s, mut other) = (wal.store(G1), wal.store(G2));
        other.append(&entries(1, 3, 1)).unwrap();
        other.compact(&meta(2, 1), 2).unwrap();
        for i in 0..200u64 {
            let batch = entries(i * 3 + 1, i * 3 + 4, 1 + i / 50);
            s.append(&batch).unwrap();
            model.append(&batch).unwrap();
            if i % 20 == 19 {
                let through = i * 3 - 10;
                s.compact(&meta(through, model.term(through).unwrap()), through)
                    .unwrap();
                model
                    .compact(&meta(through, model.term(through).unwrap()), through)
                    .unwrap();
            }
            s.sync().unwrap();
        }
        let stats = wal.stats();
        assert!(stats.segments_deleted > 5, "{stats:?}");
        assert!(wal.segments().len() <= 3, "{:?}", wal.segments());
        assert!(stats.disk_reads == 0);
        // The cache holds only the newest entries: reading the whole log goes to disk.
        assert_eq!(all(&s), all(&model));
        assert!(wal.stats().disk_reads > 0);
    }
    let (wal, recovery) = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(recovery.groups, vec![G1, G2]);
    let s = wal.store(G1);
    assert_eq!(
        (s.first_index(), s.last_index()),
        (model.first_index(), model.last_index())
    );
    assert_eq!(
        s.term(s.first_index() - 1).unwrap(),
        model.term(model.first_index() - 1).unwrap()
    );
    assert_eq!(all(&s), all(&model));
    assert_eq!(s.snapshot_meta(), model.snapshot_meta());
    let other = wal.store(G2);
    assert_eq!((other.first_index(), other.last_index()), (3, 2));
}

/// A quiet group's few old entries kept every segment after them until it compacted; once
/// it does, the sync that makes the compaction durable deletes the old segments at once,
/// with no rotation needed, and reopening (the busy group's entries now start after a gap
/// the deleted segments held) rebuilds both logs.
#[test]
fn a_compaction_frees_old_segments_at_its_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = MemLogStore::new();
    {
        let (wal, _) = Wal::open(dir.path(), small()).unwrap();
        let (mut busy, mut quiet) = (wal.store(G1), wal.store(G2));
        quiet.append(&entries(1, 3, 1)).unwrap();
        quiet.sync().unwrap();
        for i in 0..120u64 {
            let batch = entries(i * 3 + 1, i * 3 + 4, 1);
            busy.append(&batch).unwrap();
            model.append(&batch).unwrap();
            busy.sync().unwrap();
        }
        assert!(wal.segments().len() > 5, "{:?}", wal.segments());
        let mut pinning = wal.groups_in_old_segments();
        pinning.sort_unstable();
        assert_eq!(pinning, vec![G1, G2]);
        // The busy group appends again (into the current segment) and compacts everything
        // before that; the quiet one compacts everything.
        let through = model.last_index();
        let term = model.term(through).unwrap();
        let batch = entries(through + 1, through + 4, 2);
        busy.append(&batch).unwrap();
        model.append(&batch).unwrap();
        busy.compact(&meta(through, term), through).unwrap();
        model.compact(&meta(through, term), through).unwrap();
        quiet.compact(&meta(2, 1), 2).unwrap();
        assert!(
            wal.segments().len() > 5,
            "deleted before the compaction was synced"
        );
        quiet.sync().unwrap();
        assert_eq!(wal.segments().len(), 1, "{:?}", wal.segments());
        assert!(wal.groups_in_old_segments().is_empty());
        assert_eq!(wal.disk_usage().segments, 1);
    }
    let (wal, recovery) = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(recovery.groups, vec![G1, G2]);
    let busy = wal.store(G1);
    assert_eq!(
        (busy.first_index(), busy.last_index()),
        (model.first_index(), model.last_index())
    );
    assert_eq!(all(&busy), all(&model));
    let quiet = wal.store(G2);
    assert_eq!((quiet.first_index(), quiet.last_index()), (3, 2));
}

#[test]
fn a_removed_group_is_gone_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), WalConfig::default()).unwrap();
        wal.store(G1).append(&entries(1, 3, 1)).unwrap();
        wal.store(G2).append(&entries(1, 3, 1)).unwrap();
        wal.remove_group(G1).unwrap();
        assert_eq!(wal.store(G1).last_index(), 0);
        wal.sync().unwrap();
    }
    let (wal, recovery) = Wal::open(dir.path(), WalConfig::default()).unwrap();
    assert_eq!(recovery.groups, vec![G2]);
    assert_eq!(wal.groups(), vec![G2]);
}

/// A store handle taken before its group was removed must not bring the group back: it
/// used to recreate it in memory and write records that made recovery find entries with no
/// start. Its writes are refused, it reads an empty log, and a group added again afresh is
/// out of its reach.
#[test]
fn a_removed_groups_old_handles_refuse_writes_and_never_bring_it_back() {
    fn removed(result: Result<(), LogStoreError>) -> bool {
        matches!(result, Err(LogStoreError::GroupRemoved(g)) if g == G1)
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), WalConfig::default()).unwrap();
        let mut old = wal.store(G1);
        old.append(&entries(1, 3, 1)).unwrap();
        let mut clone = old.clone();
        wal.remove_group(G1).unwrap();
        let records = wal.stats().records;
        assert!(removed(old.append(&entries(3, 5, 1))), "continuing the log");
        assert!(removed(clone.append(&entries(1, 2, 1))), "starting afresh");
        let hs = HardState {
            term: 2,
            vote: None,
            commit: 1,
        };
        assert!(removed(old.set_hard_state(hs)));
        assert!(removed(old.truncate(1)));
        assert!(removed(old.compact(&meta(1, 1), 1)));
        assert!(removed(old.install_snapshot(meta(9, 1))));
        assert_eq!(wal.stats().records, records, "nothing was written");
        assert!(wal.groups().is_empty(), "the group did not come back");
        assert_eq!((old.first_index(), old.last_index()), (1, 0));

        // Added again, the group starts empty, and the old handle can neither see nor
        // write it.
        let mut new = wal.store(G1);
        assert_eq!(new.last_index(), 0);
        new.append(&entries(1, 2, 7)).unwrap();
        assert!(removed(old.append(&entries(2, 3, 1))));
        assert_eq!(old.last_index(), 0);
        wal.sync().unwrap();
    }
    let (wal, recovery) = Wal::open(dir.path(), WalConfig::default()).unwrap();
    assert_eq!(recovery.groups, vec![G1]);
    assert_eq!(all(&wal.store(G1)), entries(1, 2, 7));
}

#[test]
fn invalid_writes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(
        dir.path(),
        WalConfig {
            max_record_bytes: 256,
            ..WalConfig::default()
        },
    )
    .unwrap();
    let mut s = wal.store(G1);
    s.append(&entries(1, 3, 1)).unwrap();
    let records = wal.stats().records;
    assert!(
        matches!(
            s.append(&entries(5, 6, 1)),
            Err(LogStoreError::InvalidWrite(_))
        ),
        "a gap"
    );
    assert!(matches!(
        s.compact(&meta(9, 1), 9),
        Err(LogStoreError::InvalidWrite(_))
    ));
    let big = Entry {
        index: 3,
        term: 1,
        payload: EntryPayload::Command(vec![0; 1000].into()),
    };
    assert!(
        matches!(s.append(&[big]), Err(LogStoreError::InvalidWrite(_))),
        "over the record limit"
    );
    assert_eq!(wal.stats().records, records);
    assert_eq!(all(&s), entries(1, 3, 1));
}

#[derive(Clone, Debug)]
enum Op {
    Append { back: u64, len: u64, term_bump: u64 },
    Truncate { back: u64 },
    HardState(u64),
    Compact { back: u64 },
    Install { ahead: u64 },
    Sync,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4u64, 1..6u64, 0..2u64).prop_map(|(back, len, term_bump)| Op::Append { back, len, term_bump }),
        1 => (0..4u64).prop_map(|back| Op::Truncate { back }),
        2 => (0..100u64).prop_map(Op::HardState),
        2 => (0..8u64).prop_map(|back| Op::Compact { back }),
        1 => (1..5u64).prop_map(|ahead| Op::Install { ahead }),
        3 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any sequence of writes, syncs and reopenings leaves the WAL store exactly like the
    /// in-memory store given the same writes (every op here syncs before a reopen).
    #[test]
    fn the_wal_store_behaves_like_the_in_memory_store(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let config = WalConfig { segment_bytes: 600, cache_bytes_per_group: 150, ..WalConfig::default() };
        let (mut wal, _) = Wal::open(dir.path(), config.clone()).unwrap();
        let mut s = wal.store(G1);
        let mut model = MemLogStore::new();
        let mut term = 1;
        for op in ops {
            match op {
                Op::Append { back, len, term_bump } => {
                    let first = (model.last_index() + 1).saturating_sub(back).max(model.first_index());
                    term += term_bump;
                    let batch = entries(first, first + len, term);
                    model.append(&batch).unwrap();
                    s.append(&batch).unwrap();
                }
                Op::Truncate { back } => {
                    let from = (model.last_index() + 1).saturating_sub(back).max(model.first_index());
                    model.truncate(from).unwrap();
                    s.truncate(from).unwrap();
                }
                Op::HardState(commit) => {
                    let hs = HardState { term, vote: None, commit };
                    model.set_hard_state(hs).unwrap();
                    s.set_hard_state(hs).unwrap();
                }
                Op::Compact { back } => {
                    let through = model.last_index().saturating_sub(back).max(model.first_index() - 1);
                    let m = meta(through, model.term(through).unwrap());
                    model.compact(&m, through).unwrap();
                    s.compact(&m, through).unwrap();
                }
                Op::Install { ahead } => {
                    let m = meta(model.last_index() + ahead, term);
                    model.install_snapshot(m.clone()).unwrap();
                    s.install_snapshot(m).unwrap();
                }
                Op::Sync => s.sync().unwrap(),
                Op::Reopen => {
                    s.sync().unwrap();
                    drop(s);
                    drop(wal);
                    let (w, recovery) = Wal::open(dir.path(), config.clone()).unwrap();
                    prop_assert_eq!(recovery.torn, None);
                    wal = w;
                    s = wal.store(G1);
                }
            }
            prop_assert_eq!((s.first_index(), s.last_index()), (model.first_index(), model.last_index()));
            prop_assert_eq!(s.term(s.first_index() - 1).unwrap(), model.term(model.first_index() - 1).unwrap());
            prop_assert_eq!(s.hard_state(), model.hard_state());
            prop_assert_eq!(s.snapshot_meta(), model.snapshot_meta());
            prop_assert_eq!(all(&s), all(&model));
        }
    }
}

#[test]
fn a_checksummed_record_that_makes_no_sense_is_refused_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    two_synced_records(dir.path());
    // A forged record, whole and with a valid checksum, whose entries skip an index.
    let forged = Record::Entries {
        group: G1,
        entries: vec![entry(6, 1), entry(8, 1)],
    };
    let mut bytes = Vec::new();
    super::record::encode(&forged, &mut bytes, &mut Vec::new(), 1 << 20).unwrap();
    let path = segment_path(dir.path(), 1);
    let mut file = std::fs::read(&path).unwrap();
    file.extend(&bytes);
    std::fs::write(&path, &file).unwrap();
    match Wal::open(dir.path(), WalConfig::default()) {
        Err(LogStoreError::Corrupt(msg)) => assert!(msg.contains("not consecutive"), "{msg}"),
        other => panic!("expected corruption, got {other:?}"),
    }
}
