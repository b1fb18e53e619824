//! A tour of shoal-core's vocabulary: typed ids, a hybrid logical clock that never runs
//! backwards, a range descriptor split and merged, wire error codes, the size-limited codec and
//! the deterministic random number generator.
//!
//! Run it with `cargo run -p shoal-core --example hlc_and_descriptors`.

use shoal_core::{
    codec, DetRng, Error, ErrorCode, Hlc, KeyRange, ManualClock, NodeId, RangeDescriptor, RangeId,
    ReplicaDescriptor, Rng,
};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Ids are u64 newtypes that print with a one-letter prefix.
    let (n1, n2, n3) = (NodeId::new(1), NodeId::new(2), NodeId::new(3));
    let meta = RangeId::META;
    println!("1. nodes {n1}, {n2} and {n3}; the meta range is {meta}");

    // A hybrid logical clock reading a wall clock we control; timestamps print as ms.logical@node.
    let wall = ManualClock::new(1_000);
    let max_offset = Duration::from_millis(500);
    let mut hlc = Hlc::new(n1, &wall, max_offset);
    let a = hlc.now();
    wall.set_wall_ms(900);
    let b = hlc.now();
    println!("2. n1's clock reads {a}, then {b} after its wall clock stepped back 100 ms");
    let from_n2 = Hlc::new(n2, ManualClock::new(1_200), max_offset).now();
    let after = hlc.update(from_n2)?;
    println!("   receiving {from_n2} from n2 moves n1 to {after}");
    let from_n3 = Hlc::new(n3, ManualClock::new(60_000), max_offset).now();
    if let Err(e) = hlc.update(from_n3) {
        println!("   {from_n3} from n3 is refused: {e}");
    }

    // A range over every key on three voters, split at "m" and merged back.
    let voters = [n1, n2, n3].map(ReplicaDescriptor::voter).to_vec();
    let whole = RangeDescriptor::new(RangeId::new(1), KeyRange::full(), voters)?;
    let (left, right) = whole.split(b"m", RangeId::new(2))?;
    let merged = left.merge(&right)?;
    for d in [&whole, &left, &right, &merged] {
        let (id, range, generation) = (d.id, &d.range, d.generation);
        println!("3. {id} covers {range} at {generation}");
    }
    let kiwi = [&left, &right].map(|d| d.contains_key(b"kiwi"));
    println!("   \"kiwi\" belongs to the left half and not the right: {kiwi:?}");

    // Error codes tell a caller whether trying again can help.
    for code in [
        ErrorCode::NotLeader { hint: None },
        ErrorCode::InvalidRequest,
    ] {
        let error = Error::new(code, "from the example");
        let retriable = error.is_retriable();
        println!("4. {error} (retriable: {retriable})");
    }

    // Everything on the wire goes through the codec, which decodes only within a limit.
    let bytes = codec::encode(&right)?;
    let back: RangeDescriptor = codec::decode(&bytes, 64 * 1024)?;
    assert_eq!(back, right);
    let (id, len) = (right.id, bytes.len());
    println!("5. {id} encodes to {len} bytes and decodes back equal");
    if let Err(e) = codec::decode::<RangeDescriptor>(&bytes, 8) {
        let code = Error::from(e.clone()).code;
        println!("   with an 8-byte limit: {e} (on the wire: {code})");
    }

    // A seed fixes every draw of DetRng, on every platform.
    let (mut x, mut y) = (DetRng::from_seed(7), DetRng::from_seed(7));
    let draws: Vec<u64> = (0..5).map(|_| x.below(100)).collect();
    let again: Vec<u64> = (0..5).map(|_| y.below(100)).collect();
    println!("6. seed 7 draws {draws:?}, and {again:?} the second time");
    Ok(())
}
