//! Consistency checks: compare two replicas' trees taken at the same applied index and say
//! exactly where they disagree.

use crate::digest::Digest;
use crate::error::MerkleError;
use crate::tree::MerkleTree;

/// One key on which two trees disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The key.
    pub key: Vec<u8>,
    /// Its leaf digest in the first tree (None: absent there).
    pub left: Option<Digest>,
    /// Its leaf digest in the second tree (None: absent there).
    pub right: Option<Digest>,
}

/// Every key on which `left` and `right` disagree, in key order, found by descending only
/// into subtrees whose full digests differ. Both trees must have the same shape.
pub fn diverging_keys(
    left: &mut MerkleTree,
    right: &mut MerkleTree,
) -> Result<Vec<Divergence>, MerkleError> {
    if left.shape() != right.shape() {
        return Err(MerkleError::ShapeMismatch);
    }
    left.refresh();
    right.refresh();
    let shape = left.shape();
    let mut out = Vec::new();
    let mut frontier = vec![0u64];
    for level in 0..=shape.depth() {
        frontier.retain(|&i| left.node(level, i) != right.node(level, i));
        if level == shape.depth() {
            break;
        }
        frontier = frontier
            .iter()
            .flat_map(|&i| {
                let first = shape.first_child(i);
                first..first + shape.fanout() as u64
            })
            .collect();
    }
    for b in frontier {
        let (l, r) = (left.bucket(b), right.bucket(b));
        let (mut i, mut j) = (0, 0);
        while i < l.len() || j < r.len() {
            let order = match (l.get(i), r.get(j)) {
                (Some(a), Some(b)) => (a.hash(), a.key()).cmp(&(b.hash(), b.key())),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let d = match order {
                std::cmp::Ordering::Less => {
                    i += 1;
                    Some((l[i - 1].key(), Some(*l[i - 1].digest()), None))
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    Some((r[j - 1].key(), None, Some(*r[j - 1].digest())))
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    let (a, b) = (l[i - 1].digest(), r[j - 1].digest());
                    (a != b).then(|| (l[i - 1].key(), Some(*a), Some(*b)))
                }
            };
            if let Some((key, left, right)) = d {
                out.push(Divergence {
                    key: key.to_vec(),
                    left,
                    right,
                });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Groups diverging keys into key ranges `[first, last]` (inclusive): consecutive diverging
/// keys share a range when no key that both trees agree on lies between them. `left` gives
/// the keys to look between (either tree does; agreeing keys are in both).
pub fn diverging_ranges(left: &MerkleTree, divergences: &[Divergence]) -> Vec<(Vec<u8>, Vec<u8>)> {
    if divergences.is_empty() {
        return Vec::new();
    }
    let diverging: std::collections::HashSet<&[u8]> =
        divergences.iter().map(|d| d.key.as_slice()).collect();
    let mut agreeing: Vec<&[u8]> = left
        .entries()
        .map(|e| e.key())
        .filter(|k| !diverging.contains(k))
        .collect();
    agreeing.sort_unstable();
    let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for d in divergences {
        if let Some((first, last)) = ranges.last_mut() {
            let between = agreeing.partition_point(|k| *k <= last.as_slice());
            let blocked = agreeing.get(between).is_some_and(|k| *k < d.key.as_slice());
            if !blocked && first.as_slice() <= d.key.as_slice() {
                *last = d.key.clone();
                continue;
            }
        }
        ranges.push((d.key.clone(), d.key.clone()));
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::TreeShape;

    #[test]
    fn finds_every_divergence_and_groups_neighbours() {
        let shape = TreeShape::new(2, 5).unwrap();
        let (mut a, mut b) = (MerkleTree::new(shape), MerkleTree::new(shape));
        for k in 0..2000u32 {
            let key = k.to_be_bytes();
            a.insert(&key, Digest::of_version(&key, 1)).unwrap();
            b.insert(&key, Digest::of_version(&key, 1)).unwrap();
        }
        assert!(diverging_keys(&mut a, &mut b).unwrap().is_empty());
        // 10 and 11 differ in version, 12 is only on a, 500 only on b.
        for k in [10u32, 11] {
            let key = k.to_be_bytes();
            b.insert(&key, Digest::of_version(&key, 2)).unwrap();
        }
        a.insert(&12u32.to_be_bytes(), Digest::ZERO).unwrap();
        b.remove(&12u32.to_be_bytes());
        let extra = 50_000u32.to_be_bytes();
        b.insert(&extra, Digest::of_version(&extra, 1)).unwrap();
        let found = diverging_keys(&mut a, &mut b).unwrap();
        let keys: Vec<u32> = found
            .iter()
            .map(|d| u32::from_be_bytes(d.key.clone().try_into().unwrap()))
            .collect();
        assert_eq!(keys, [10, 11, 12, 50_000]);
        assert_eq!((found[2].left.is_some(), found[2].right), (true, None));
        assert_eq!(found[3].left, None);
        let ranges = diverging_ranges(&a, &found);
        assert_eq!(ranges.len(), 2, "{ranges:?}");
        assert_eq!(
            ranges[0],
            (10u32.to_be_bytes().to_vec(), 12u32.to_be_bytes().to_vec())
        );
        let other = MerkleTree::new(TreeShape::new(2, 4).unwrap());
        assert_eq!(
            diverging_keys(&mut a, &mut other.clone()),
            Err(MerkleError::ShapeMismatch)
        );
    }
}
