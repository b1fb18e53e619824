//! Half-open ranges of byte keys, `[start, end)`, the unit of partitioning.
//!
//! A range is never empty: `start < end` always holds, whether it was built locally or
//! decoded from a peer (decoding validates). The empty key is the smallest key, so the whole
//! key space is `[b"", ∞)`.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// The upper bound of a [`KeyRange`]: an exclusive key, or no bound at all.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RangeEnd {
    /// Keys strictly below this one.
    Key(Vec<u8>),
    /// Every key above the start.
    Unbounded,
}

impl RangeEnd {
    /// Whether `key` lies below this bound.
    pub fn is_above(&self, key: &[u8]) -> bool {
        match self {
            RangeEnd::Key(end) => key < end.as_slice(),
            RangeEnd::Unbounded => true,
        }
    }

    /// The bound as a key, or `None` when unbounded.
    pub fn as_key(&self) -> Option<&[u8]> {
        match self {
            RangeEnd::Key(k) => Some(k),
            RangeEnd::Unbounded => None,
        }
    }
}

impl Ord for RangeEnd {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (RangeEnd::Key(a), RangeEnd::Key(b)) => a.cmp(b),
            (RangeEnd::Key(_), RangeEnd::Unbounded) => Ordering::Less,
            (RangeEnd::Unbounded, RangeEnd::Key(_)) => Ordering::Greater,
            (RangeEnd::Unbounded, RangeEnd::Unbounded) => Ordering::Equal,
        }
    }
}

impl PartialOrd for RangeEnd {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for RangeEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeEnd::Key(k) => write!(f, "{}", EscapedKey(k)),
            RangeEnd::Unbounded => f.write_str("∞"),
        }
    }
}

/// Why a key range could not be built, split or merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRangeError {
    /// `start >= end`: the range would be empty or inverted.
    #[error("key range start {start} is not below its end {end}")]
    NotAscending {
        /// The offending start, escaped for printing.
        start: String,
        /// The offending end, escaped for printing.
        end: String,
    },
    /// A split key must lie strictly inside the range, or one half would be empty.
    #[error("split key {key} is not strictly inside {range}")]
    SplitKeyOutside {
        /// The split key, escaped.
        key: String,
        /// The range, printed.
        range: String,
    },
    /// Only a range and the one that starts where it ends can be merged.
    #[error("ranges {left} and {right} are not adjacent")]
    NotAdjacent {
        /// The left operand, printed.
        left: String,
        /// The right operand, printed.
        right: String,
    },
}

/// A non-empty half-open range of byte keys.
///
/// ```
/// use shoal_core::KeyRange;
///
/// let all = KeyRange::full();
/// let (left, right) = all.split_at(b"m").unwrap();
/// assert!(left.contains(b"apple") && right.contains(b"melon"));
/// assert_eq!(left.merge(&right).unwrap(), all);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawKeyRange")]
pub struct KeyRange {
    start: Vec<u8>,
    end: RangeEnd,
}

/// The unvalidated wire form; decoding goes through [`KeyRange::new`].
#[derive(Deserialize)]
struct RawKeyRange {
    start: Vec<u8>,
    end: RangeEnd,
}

impl TryFrom<RawKeyRange> for KeyRange {
    type Error = KeyRangeError;
    fn try_from(raw: RawKeyRange) -> Result<Self, Self::Error> {
        KeyRange::new(raw.start, raw.end)
    }
}

impl KeyRange {
    /// The whole key space, `[b"", ∞)`.
    pub fn full() -> Self {
        Self {
            start: Vec::new(),
            end: RangeEnd::Unbounded,
        }
    }

    /// `[start, end)`, refused unless `start < end`.
    pub fn new(start: impl Into<Vec<u8>>, end: RangeEnd) -> Result<Self, KeyRangeError> {
        let start = start.into();
        if !end.is_above(&start) {
            return Err(KeyRangeError::NotAscending {
                start: EscapedKey(&start).to_string(),
                end: format!("{end:?}"),
            });
        }
        Ok(Self { start, end })
    }

    /// `[start, end)` with a key as the end, refused unless `start < end`.
    pub fn bounded(
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
    ) -> Result<Self, KeyRangeError> {
        Self::new(start, RangeEnd::Key(end.into()))
    }

    /// `[start, ∞)`, which is never empty.
    pub fn starting_at(start: impl Into<Vec<u8>>) -> Self {
        Self {
            start: start.into(),
            end: RangeEnd::Unbounded,
        }
    }

    /// The inclusive lower bound.
    pub fn start(&self) -> &[u8] {
        &self.start
    }

    /// The exclusive upper bound.
    pub fn end(&self) -> &RangeEnd {
        &self.end
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.is_above(key)
    }

    /// Whether every key of `other` lies in this range.
    pub fn covers(&self, other: &KeyRange) -> bool {
        other.start >= self.start && other.end <= self.end
    }

    /// Whether the two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        self.end.is_above(&other.start) && other.end.is_above(&self.start)
    }

    /// Whether `right` starts exactly where this range ends.
    pub fn is_left_neighbour_of(&self, right: &KeyRange) -> bool {
        self.end.as_key() == Some(right.start.as_slice())
    }

    /// Splits into `[start, key)` and `[key, end)`. `key` must lie strictly inside, so that
    /// neither half is empty.
    pub fn split_at(&self, key: &[u8]) -> Result<(KeyRange, KeyRange), KeyRangeError> {
        if key <= self.start.as_slice() || !self.end.is_above(key) {
            return Err(KeyRangeError::SplitKeyOutside {
                key: EscapedKey(key).to_string(),
                range: format!("{self:?}"),
            });
        }
        let left = KeyRange {
            start: self.start.clone(),
            end: RangeEnd::Key(key.to_vec()),
        };
        let right = KeyRange {
            start: key.to_vec(),
            end: self.end.clone(),
        };
        Ok((left, right))
    }

    /// Joins this range with `right`, which must start where this one ends.
    pub fn merge(&self, right: &KeyRange) -> Result<KeyRange, KeyRangeError> {
        if !self.is_left_neighbour_of(right) {
            return Err(KeyRangeError::NotAdjacent {
                left: format!("{self:?}"),
                right: format!("{right:?}"),
            });
        }
        Ok(KeyRange {
            start: self.start.clone(),
            end: right.end.clone(),
        })
    }
}

impl fmt::Debug for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {:?})", EscapedKey(&self.start), self.end)
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Prints a key as a quoted string, escaping non-printable bytes, and shortening long keys.
pub struct EscapedKey<'a>(pub &'a [u8]);

impl fmt::Display for EscapedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        let shown = &self.0[..self.0.len().min(SHOWN)];
        write!(f, "\"{}\"", shown.escape_ascii())?;
        if self.0.len() > SHOWN {
            write!(f, "…(+{} bytes)", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use proptest::prelude::*;

    fn r(start: &str, end: Option<&str>) -> KeyRange {
        match end {
            Some(e) => KeyRange::bounded(start, e).unwrap(),
            None => KeyRange::starting_at(start),
        }
    }

    #[test]
    fn contains_is_half_open() {
        let range = r("b", Some("d"));
        assert!(!range.contains(b"a"));
        assert!(range.contains(b"b"));
        assert!(range.contains(b"c\xff"));
        assert!(!range.contains(b"d"));
        assert!(KeyRange::full().contains(b""));
        assert!(KeyRange::full().contains(&[0xff; 100]));
    }

    #[test]
    fn empty_and_inverted_ranges_are_refused() {
        assert!(KeyRange::bounded("b", "b").is_err());
        assert!(KeyRange::bounded("c", "b").is_err());
        assert!(KeyRange::bounded("", "").is_err());
    }

    #[test]
    fn split_requires_a_key_strictly_inside() {
        let range = r("b", Some("d"));
        assert!(range.split_at(b"b").is_err());
        assert!(range.split_at(b"d").is_err());
        assert!(range.split_at(b"a").is_err());
        let (left, right) = range.split_at(b"c").unwrap();
        assert_eq!(left, r("b", Some("c")));
        assert_eq!(right, r("c", Some("d")));
        assert!(KeyRange::full().split_at(b"").is_err());
    }

    #[test]
    fn merge_requires_adjacency_in_order() {
        let left = r("a", Some("m"));
        let right = r("m", None);
        assert_eq!(left.merge(&right).unwrap(), r("a", None));
        assert!(right.merge(&left).is_err());
        assert!(left.merge(&r("n", None)).is_err());
    }

    #[test]
    fn overlap_and_cover() {
        assert!(r("a", Some("c")).overlaps(&r("b", Some("d"))));
        assert!(!r("a", Some("b")).overlaps(&r("b", Some("c"))));
        assert!(r("a", None).overlaps(&r("z", None)));
        assert!(r("a", None).covers(&r("b", Some("c"))));
        assert!(!r("a", Some("c")).covers(&r("b", None)));
    }

    #[test]
    fn decoding_refuses_an_inverted_range_from_the_wire() {
        #[derive(Serialize)]
        struct Raw {
            start: Vec<u8>,
            end: RangeEnd,
        }
        let bytes = codec::encode(&Raw {
            start: b"z".to_vec(),
            end: RangeEnd::Key(b"a".to_vec()),
        })
        .unwrap();
        let err = codec::decode::<KeyRange>(&bytes, 1024).unwrap_err();
        assert!(err.to_string().contains("not below"), "{err}");
    }

    #[test]
    fn long_keys_print_shortened() {
        let key = vec![b'x'; 100];
        assert!(EscapedKey(&key).to_string().ends_with("…(+36 bytes)"));
        assert_eq!(EscapedKey(b"a\x00").to_string(), "\"a\\x00\"");
    }

    proptest! {
        #[test]
        fn split_then_merge_is_identity_and_partitions_keys(
            mut keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..4), 3),
            probe in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            keys.sort();
            keys.dedup();
            prop_assume!(keys.len() == 3);
            let range = KeyRange::bounded(keys[0].clone(), keys[2].clone()).unwrap();
            let (left, right) = range.split_at(&keys[1]).unwrap();
            prop_assert_eq!(left.merge(&right).unwrap(), range.clone());
            prop_assert!(!left.overlaps(&right));
            prop_assert_eq!(range.contains(&probe), left.contains(&probe) || right.contains(&probe));
            let bytes = codec::encode(&range).unwrap();
            prop_assert_eq!(codec::decode::<KeyRange>(&bytes, 1024).unwrap(), range);
        }
    }
}
