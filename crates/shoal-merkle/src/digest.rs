//! Digests and key hashes: what the tree is made of, and the fixed formulas behind them.
//!
//! Every formula here is part of the wire contract between replicas (two replicas compare
//! digests they computed independently), so none of them may change without a new format
//! version:
//!
//! - **Key hash** ([`key_hash`]): the first 8 bytes of BLAKE3(`key`), big-endian. It places a
//!   key in its bucket (the top bits) and names it on the wire as an item id.
//! - **Leaf digest** ([`Digest::of_version`], [`Digest::of_value`]): BLAKE3 over a domain tag,
//!   the key's length and bytes, then the version (8 bytes big-endian) or the BLAKE3 of the
//!   value.
//! - **Bucket digest**: BLAKE3 over a domain tag and, for each entry in (key hash, key) order,
//!   the key hash (8 bytes big-endian) and the leaf digest. An empty bucket is [`Digest::ZERO`].
//! - **Inner digest**: BLAKE3 over a domain tag and the children's digests in order; a node
//!   whose children are all empty is [`Digest::ZERO`] itself, so empty subtrees cost nothing.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Length of a full digest in bytes.
pub const DIGEST_LEN: usize = 32;

const LEAF_VERSION_TAG: &[u8] = b"shoal-merkle/leaf/version/1";
const LEAF_VALUE_TAG: &[u8] = b"shoal-merkle/leaf/value/1";
const BUCKET_TAG: &[u8] = b"shoal-merkle/bucket/1";
const INNER_TAG: &[u8] = b"shoal-merkle/inner/1";

/// A 32-byte BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Digest(pub [u8; DIGEST_LEN]);

impl Digest {
    /// The digest of nothing: an empty bucket or a subtree without entries.
    pub const ZERO: Digest = Digest([0; DIGEST_LEN]);

    /// The leaf digest of `key` at `version` (for stores that version their keys).
    pub fn of_version(key: &[u8], version: u64) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(LEAF_VERSION_TAG);
        h.update(&(key.len() as u64).to_be_bytes());
        h.update(key);
        h.update(&version.to_be_bytes());
        Digest(*h.finalize().as_bytes())
    }

    /// The leaf digest of `key` holding `value` (for stores that compare contents).
    pub fn of_value(key: &[u8], value: &[u8]) -> Digest {
        Self::of_value_hash(key, &Digest(*blake3::hash(value).as_bytes()))
    }

    /// The leaf digest of `key` whose value has BLAKE3 `value_hash`.
    pub fn of_value_hash(key: &[u8], value_hash: &Digest) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(LEAF_VALUE_TAG);
        h.update(&(key.len() as u64).to_be_bytes());
        h.update(key);
        h.update(&value_hash.0);
        Digest(*h.finalize().as_bytes())
    }

    /// Whether this is [`Digest::ZERO`].
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// The `len` bytes of this digest that a session compares in pass `window` (see
    /// [`DigestWindow`]).
    pub fn window(&self, window: DigestWindow) -> &[u8] {
        let (start, len) = window.span();
        &self.0[start..start + len]
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// Which bytes of each digest a sync pass compares: `len` bytes starting at an offset chosen
/// by the pass number `window`.
///
/// Descending a tree with full 32-byte digests costs more than the differences it finds, so
/// a session compares truncated digests while it descends and the full roots at the end. A
/// truncated digest can match by chance (probability 2<sup>-8·len</sup> per comparison); the
/// final root comparison catches that, and the next pass looks at different bytes of the same
/// digests, so the chance does not repeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DigestWindow {
    /// Bytes per compared digest, [`DigestWindow::MIN_LEN`] to [`DIGEST_LEN`].
    pub len: u8,
    /// The pass number; picks the offset.
    pub window: u8,
}

impl DigestWindow {
    /// The shortest comparison allowed.
    pub const MIN_LEN: u8 = 2;

    /// Whether `len` is in range.
    pub fn is_valid(&self) -> bool {
        (Self::MIN_LEN..=DIGEST_LEN as u8).contains(&self.len)
    }

    /// Bytes per compared digest.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Never true for a valid window; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start and length within a digest (a valid window is assumed; an invalid one is clamped).
    fn span(&self) -> (usize, usize) {
        let len = self.len().clamp(1, DIGEST_LEN);
        let starts = DIGEST_LEN - len + 1;
        ((usize::from(self.window) * len) % starts, len)
    }
}

/// The fixed 64-bit hash of a key: the first 8 bytes of BLAKE3(`key`), big-endian.
pub fn key_hash(key: &[u8]) -> u64 {
    let hash = blake3::hash(key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// The digest of a bucket holding `entries` (key hash, leaf digest), already in order.
pub(crate) fn bucket_digest<'a>(entries: impl Iterator<Item = (u64, &'a Digest)>) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(BUCKET_TAG);
    let mut any = false;
    for (hash, digest) in entries {
        any = true;
        h.update(&hash.to_be_bytes());
        h.update(&digest.0);
    }
    if any {
        Digest(*h.finalize().as_bytes())
    } else {
        Digest::ZERO
    }
}

/// The digest of an inner node with `children`.
pub(crate) fn inner_digest(children: &[Digest]) -> Digest {
    if children.iter().all(Digest::is_zero) {
        return Digest::ZERO;
    }
    let mut h = blake3::Hasher::new();
    h.update(INNER_TAG);
    for child in children {
        h.update(&child.0);
    }
    Digest(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_pinned() {
        // Golden values: replicas on different versions must compute the same digests.
        assert_eq!(format!("{:016x}", key_hash(b"apple")), "553bcf297bd9b9fb");
        assert_eq!(
            format!("{:?}", Digest::of_version(b"apple", 7)),
            "d2abce97670b…"
        );
        assert_eq!(
            format!("{:?}", Digest::of_value(b"apple", b"red")),
            "9ecd3fd8df6b…"
        );
        let leaf = Digest::of_version(b"apple", 7);
        assert_eq!(
            format!("{:?}", bucket_digest([(1u64, &leaf)].into_iter())),
            "d2b2dbbfac92…"
        );
        assert_eq!(
            format!("{:?}", inner_digest(&[leaf, Digest::ZERO])),
            "e919d43e9fb0…"
        );
    }

    #[test]
    fn windows_cover_different_bytes_and_clamp() {
        let d = Digest(std::array::from_fn(|i| i as u8));
        let w = |len, window| DigestWindow { len, window };
        assert_eq!(d.window(w(4, 0)), &[0, 1, 2, 3]);
        assert_eq!(d.window(w(4, 1)), &[4, 5, 6, 7]);
        assert_eq!(d.window(w(4, 7)), &[28, 29, 30, 31]);
        assert_eq!(d.window(w(4, 8)), &[3, 4, 5, 6]);
        assert_eq!(d.window(w(32, 5)), &d.0[..]);
        assert!(!w(1, 0).is_valid() && !w(33, 0).is_valid() && w(2, 9).is_valid());
    }

    #[test]
    fn empty_nodes_are_zero_and_order_matters() {
        assert_eq!(bucket_digest(std::iter::empty()), Digest::ZERO);
        assert_eq!(inner_digest(&[Digest::ZERO; 4]), Digest::ZERO);
        let a = Digest::of_version(b"a", 1);
        let b = Digest::of_version(b"b", 1);
        assert_ne!(inner_digest(&[a, b]), inner_digest(&[b, a]));
        assert_ne!(Digest::of_version(b"a", 1), Digest::of_version(b"a", 2));
        assert_ne!(Digest::of_value(b"a", b"x"), Digest::of_value(b"a", b"y"));
    }
}
