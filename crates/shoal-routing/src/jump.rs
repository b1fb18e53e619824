//! Jump consistent hash (Lamping and Veach, 2014).
//!
//! Maps a 64-bit key to one of `n` buckets so that growing `n` to `n + 1` moves only the
//! `1 / (n + 1)` of keys that land in the new bucket, with no table at all: O(ln n) steps of
//! a linear congruential generator. Buckets are numbered, so it suits shards that are only
//! ever added at the end (or removed from the end); for named nodes that come and go in any
//! order use [`crate::rendezvous`].

use std::num::NonZeroU32;

/// The bucket in `0..buckets` for `key` (a hash, such as [`crate::key_hash()`]'s). This is the
/// paper's algorithm step for step, so its output matches every faithful implementation.
#[inline]
pub fn jump_hash(mut key: u64, buckets: NonZeroU32) -> u32 {
    let n = i64::from(buckets.get());
    let (mut b, mut j) = (-1i64, 0i64);
    while j < n {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    // 0 <= b < n <= u32::MAX.
    b as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(x: u32) -> NonZeroU32 {
        NonZeroU32::new(x).unwrap()
    }

    #[test]
    fn golden_vectors() {
        assert_eq!(jump_hash(0, n(1)), 0);
        assert_eq!(jump_hash(0, n(1000)), 0);
        assert_eq!(jump_hash(1, n(1000)), 549);
        assert_eq!(jump_hash(0xDEAD_BEEF, n(1000)), 285);
        assert_eq!(jump_hash(u64::MAX, n(1000)), 313);
        assert_eq!(jump_hash(42, n(1 << 20)), 153_897);
        assert_eq!(jump_hash(0x0123_4567_89AB_CDEF, n(u32::MAX)), 1_651_575_352);
    }

    /// The crate `jumphash` implements the same algorithm over its own key hash; fed our
    /// hash through a pass-through hasher it must agree everywhere.
    #[test]
    fn agrees_with_the_jumphash_crate() {
        #[derive(Clone, Default)]
        struct PassThrough(u64);
        impl std::hash::Hasher for PassThrough {
            fn finish(&self) -> u64 {
                self.0
            }
            fn write(&mut self, _: &[u8]) {
                unreachable!("only u64 keys are hashed")
            }
            fn write_u64(&mut self, v: u64) {
                self.0 = v;
            }
        }
        let theirs = jumphash::CustomJumpHasher::new(PassThrough::default());
        let mut key = 0x9E37_79B9_7F4A_7C15u64;
        for buckets in [1u32, 2, 3, 10, 1000, 1001, 65_536, 1_000_000, u32::MAX] {
            for _ in 0..1000 {
                key = key.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                assert_eq!(jump_hash(key, n(buckets)), theirs.slot(&key, buckets));
            }
        }
    }

    #[test]
    fn growing_moves_keys_only_into_the_new_bucket() {
        let mut key = 7u64;
        for _ in 0..10_000 {
            key = key.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let before = jump_hash(key, n(100));
            let after = jump_hash(key, n(101));
            assert!(after == before || after == 100);
        }
    }
}
