//! The key hash every placement decision starts from.
//!
//! [`key_hash`] is XXH3-64 with seed 0 over the key's bytes. XXH3's output is frozen by its
//! specification (since xxHash 0.8.0) and defined on bytes, so it is the same on every
//! platform, endianness and Shoal version: a key placed by one node is placed the same way by
//! every other, today and after an upgrade. The golden vectors in this module's tests pin it;
//! changing the function would move data and is a breaking change.
//!
//! It is not keyed, so it offers no defence against keys chosen to collide. Placement does not
//! need one: a collision only puts two keys in the same shard, which hashing to any fixed
//! function allows anyway.

use shoal_core::NodeId;

/// The stable 64-bit hash of `key`: XXH3-64, seed 0.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Mixes two 64-bit values into one well-distributed value (the `mum` fold of wyhash: a
/// 128-bit multiply folded to 64 bits, applied twice). Used to score a node for a key in
/// rendezvous hashing without hashing the key once per node. Stable like [`key_hash`].
#[inline]
pub fn mix(a: u64, b: u64) -> u64 {
    const P0: u64 = 0xa076_1d64_78bd_642f;
    const P1: u64 = 0xe703_7ed1_a0b4_28db;
    let fold = |x: u64, y: u64| {
        let m = u128::from(x) * u128::from(y);
        (m as u64) ^ ((m >> 64) as u64)
    };
    fold(fold(a ^ P0, b ^ P1), P0 ^ P1)
}

/// A node's own hash, mixed with key hashes by [`mix`].
#[inline]
pub fn node_hash(node: NodeId) -> u64 {
    key_hash(&node.get().to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_vectors() {
        // XXH3-64 of "" and of "a" with seed 0 are the reference implementation's published
        // values; the others are pinned from this implementation.
        assert_eq!(key_hash(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(key_hash(b"a"), 0xE6C6_32B6_1E96_4E1F);
        assert_eq!(key_hash(b"shoal"), 0xCBBD_0E4E_10BB_A146);
        assert_eq!(key_hash(b"user/42/profile"), 0x45D2_E55B_55A3_FC46);
        assert_eq!(key_hash(&[0u8; 64]), 0x2FFB_6918_C12C_256E);
        assert_eq!(mix(1, 2), 0xD27B_6ADB_9D17_9182);
        assert_eq!(node_hash(NodeId::new(7)), 0x8167_1E58_D6B5_96AF);
    }

    #[test]
    fn mix_spreads_neighbouring_inputs() {
        let a = mix(1, 1);
        let b = mix(1, 2);
        assert!((a ^ b).count_ones() > 16, "{a:x} {b:x}");
    }
}
