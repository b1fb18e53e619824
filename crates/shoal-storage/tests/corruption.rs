//! Damaged data directories: every file of a written engine is, in turn, truncated or has
//! bytes flipped; opening and reading must then give a clear error or correct data, never a
//! panic and never wrong data presented as good.

use shoal_core::{KeyRange, RangeId};
use shoal_storage::{Durability, Engine, EngineConfig, Scan, StorageError, WriteBatch};
use std::path::{Path, PathBuf};

const R1: RangeId = RangeId::new(1);

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.file_name().is_some_and(|n| n != "lock") {
            out.push(path);
        }
    }
}

fn value_of(i: u32) -> Vec<u8> {
    vec![(i % 200) as u8 + 1; 64]
}

/// A directory with 3001 keys: 3000 flushed to tables, the last only in the journal.
fn written(dir: &Path) {
    let engine = Engine::open(dir, EngineConfig::default()).unwrap();
    engine.create_range(R1, KeyRange::full(), 0).unwrap();
    for b in 0..30u32 {
        let mut batch = WriteBatch::new();
        for i in b * 100..(b + 1) * 100 {
            batch.put(format!("key{i:05}"), value_of(i));
        }
        engine.apply(R1, u64::from(b) + 1, &batch).unwrap();
    }
    engine.flush().unwrap();
    // And a tail that is only in the journal.
    let mut batch = WriteBatch::new();
    batch.put("key99999", value_of(99_999));
    engine.apply(R1, 31, &batch).unwrap();
    engine.persist(Durability::Sync).unwrap();
}

/// Opens and reads everything; any data returned must be right.
fn probe(dir: &Path) -> Result<(), StorageError> {
    let engine = Engine::open(dir, EngineConfig::default())?;
    for entry in engine.scan(R1, &Scan::all(10_000))? {
        let i: u32 = std::str::from_utf8(&entry.key[3..])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(entry.value, value_of(i), "wrong data served as good");
    }
    Ok(())
}

#[test]
fn damaged_files_give_errors_not_panics() {
    let template = tempfile::tempdir().unwrap();
    written(template.path());
    let mut all = Vec::new();
    files(template.path(), &mut all);
    assert!(!all.is_empty());
    assert!(
        all.iter()
            .any(|f| f.components().any(|c| c.as_os_str() == "tables")),
        "no table files to damage: {all:?}"
    );
    let mut errors = 0;
    for (n, file) in all.iter().enumerate() {
        let rel = file.strip_prefix(template.path()).unwrap().to_path_buf();
        let len = std::fs::metadata(file).unwrap().len() as usize;
        for damage in 0..3 {
            let trial = tempfile::tempdir().unwrap();
            copy_dir(template.path(), trial.path());
            let target = trial.path().join(&rel);
            let mut bytes = std::fs::read(&target).unwrap();
            match damage {
                0 => bytes.truncate(len / 2),
                1 => {
                    for i in (0..bytes.len()).step_by(97 + n) {
                        bytes[i] ^= 0x5A;
                    }
                }
                _ => bytes.truncate(len.saturating_sub(1)),
            }
            std::fs::write(&target, &bytes).unwrap();
            if let Err(e) = probe(trial.path()) {
                errors += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    // Flipped bytes in tables at least are caught by checksums.
    assert!(errors > 0);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}
