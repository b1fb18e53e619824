//! Apply batches to a range as numbered log entries, read with gets, scans and a view, split
//! at the size median, and stream one half into a second engine (both in temporary dirs).
//!
//! Run it with `cargo run -p shoal-storage --example engine_basics`.

use shoal_core::{KeyRange, RangeId};
use shoal_storage::{
    snapshot_header, Condition, Engine, EngineConfig, Scan, SplitSpec, WriteBatch,
};
use std::error::Error;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn keys(engine: &Engine, range: RangeId, scan: &Scan) -> Result<Vec<String>, Box<dyn Error>> {
    let entries = engine.scan(range, scan)?;
    Ok(entries.iter().map(|e| text(&e.key)).collect())
}

/// Prints what the engine knows of `range`, and its keys.
fn show(engine: &Engine, range: RangeId) -> Result<(), Box<dyn Error>> {
    let (info, held) = (engine.range(range)?, keys(engine, range, &Scan::all(100))?);
    let (span, applied, bytes) = (info.span, info.applied_index, info.stats.live_bytes);
    println!("   {range} {span} at applied index {applied}, {bytes} bytes: {held:?}");
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let engine = Engine::open(dir.path(), EngineConfig::default())?;
    let (r1, r2) = (RangeId::new(1), RangeId::new(2));
    engine.create_range(r1, KeyRange::full(), 0)?;
    let mut batch = WriteBatch::new();
    for fruit in ["apple", "banana", "cherry", "kiwi", "mango", "pear"] {
        batch.put(fruit, "fresh");
    }
    println!("1. {r1}, entry 1: {:?}", engine.apply(r1, 1, &batch)?);

    let v = engine.get(r1, b"apple")?.ok_or("apple is missing")?.version;
    let mut batch = WriteBatch::new();
    batch
        .compare_and_set("apple", Condition::Version(v), Some(b"ripe".to_vec()))
        .compare_and_set("apple", Condition::Version(v), Some(b"stale".to_vec()))
        .compare_and_set("fig", Condition::Absent, Some(b"new".to_vec()))
        .compare_and_set("grape", Condition::Value(b"fresh".to_vec()), None)
        .delete("banana");
    println!("2. {r1}, entry 2: {:?}", engine.apply(r1, 2, &batch)?);

    let view = engine.view(r1)?;
    let mut batch = WriteBatch::new();
    batch.put("kiwi", "sold out");
    engine.apply(r1, 3, &batch)?;
    let now = engine.get(r1, b"kiwi")?.map(|v| text(&v.value));
    let then = view.get(b"kiwi")?.map(|v| text(&v.value));
    println!("3. kiwi is {now:?}; a view taken at index 2 still reads {then:?}");
    let page = keys(&engine, r1, &Scan::all(2).from("b"))?;
    let down = keys(&engine, r1, &Scan::all(10).to("m").reverse())?;
    println!("4. two keys from \"b\": {page:?}; keys below \"m\", descending: {down:?}");

    let at = engine.split_key(r1)?.ok_or("too few keys to split")?;
    let spec = SplitSpec {
        at: at.clone(),
        new_range: r2,
        index: 4,
        new_range_applied: 0,
        left_tag: None,
        right_tag: None,
    };
    engine.split(r1, &spec)?;
    let at = text(&at);
    println!("5. split {r1} at its size median {at:?}, moving no data:");
    show(&engine, r1)?;
    show(&engine, r2)?;

    let other_dir = tempfile::tempdir()?;
    let other = Engine::open(other_dir.path(), EngineConfig::default())?;
    let stream = engine.snapshot_stream(r2, 1024)?;
    let chunks = stream.collect::<Result<Vec<_>, _>>()?;
    let (range, _applied, span) = snapshot_header(&chunks[0])?;
    let mut ingest = other.ingest(range, span)?;
    for chunk in &chunks {
        ingest.apply(chunk)?;
    }
    ingest.finish()?;
    let count = chunks.len();
    println!("6. {range} streamed as {count} chunk(s) into a second engine:");
    show(&other, range)?;
    Ok(())
}
