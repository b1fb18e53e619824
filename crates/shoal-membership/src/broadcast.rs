//! The transmit-limited queue of updates waiting to be piggybacked or gossiped.
//!
//! Each update is sent at most `retransmit_mult × ceil(log10(n + 1))` times, freshest first:
//! updates sent the fewest times go first, and among those the newest. A newer update about a
//! member replaces the queued one, so the queue holds at most one per member plus the user
//! broadcasts, whose number is bounded by the caller.

use crate::packet::push_part;
use shoal_core::NodeId;
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

/// What a queued update is about; a newer update with the same key replaces the older one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BroadcastKey {
    /// An alive, suspect or dead update about one member.
    Member(NodeId),
    /// One user broadcast (never replaced).
    User(u64),
}

/// Ordering: fewest transmits first, then newest first.
type Rank = (u32, Reverse<u64>);

#[derive(Debug)]
struct Item {
    key: BroadcastKey,
    bytes: Vec<u8>,
}

/// Updates waiting to go out, each with a transmit count.
#[derive(Debug, Default)]
pub(crate) struct BroadcastQueue {
    order: BTreeMap<Rank, Item>,
    ranks: HashMap<BroadcastKey, Rank>,
    next_id: u64,
    users: usize,
}

/// A part shorter than this cannot be a message; stop looking once less room is left.
const MIN_PART_BYTES: usize = 8;
/// Items looked at per fill before giving up on finding ones that fit.
const MAX_SCAN: usize = 256;

impl BroadcastQueue {
    /// Queues `bytes` (one encoded message) under `key`, replacing any queued update with the
    /// same key.
    pub(crate) fn push(&mut self, key: BroadcastKey, bytes: Vec<u8>) {
        self.remove(key);
        self.next_id += 1;
        let rank = (0, Reverse(self.next_id));
        if matches!(key, BroadcastKey::User(_)) {
            self.users += 1;
        }
        self.ranks.insert(key, rank);
        self.order.insert(rank, Item { key, bytes });
    }

    /// A fresh key for a user broadcast.
    pub(crate) fn next_user_key(&mut self) -> BroadcastKey {
        self.next_id += 1;
        BroadcastKey::User(self.next_id)
    }

    /// Drops the update queued under `key`, if any.
    pub(crate) fn remove(&mut self, key: BroadcastKey) {
        if let Some(rank) = self.ranks.remove(&key) {
            self.order.remove(&rank);
            if matches!(key, BroadcastKey::User(_)) {
                self.users -= 1;
            }
        }
    }

    /// Whether an update is queued under `key`.
    pub(crate) fn contains(&self, key: BroadcastKey) -> bool {
        self.ranks.contains_key(&key)
    }

    /// Queued updates.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Queued user broadcasts.
    pub(crate) fn user_len(&self) -> usize {
        self.users
    }

    /// Appends as many queued updates as fit to `body` (up to `limit` bytes in all), freshest
    /// first, counts a transmit for each, and drops those sent `transmit_limit` times.
    /// Returns how many were appended.
    pub(crate) fn fill(&mut self, body: &mut Vec<u8>, limit: usize, transmit_limit: u32) -> usize {
        let mut sent = Vec::new();
        for (scanned, (rank, item)) in self.order.iter().enumerate() {
            if scanned >= MAX_SCAN || body.len() + MIN_PART_BYTES > limit {
                break;
            }
            if push_part(body, &item.bytes, limit) {
                sent.push(*rank);
            }
        }
        for rank in &sent {
            let item = self.order.remove(rank).expect("rank was just seen");
            let transmits = rank.0 + 1;
            if transmits >= transmit_limit {
                self.ranks.remove(&item.key);
                if matches!(item.key, BroadcastKey::User(_)) {
                    self.users -= 1;
                }
            } else {
                let new_rank = (transmits, rank.1);
                self.ranks.insert(item.key, new_rank);
                self.order.insert(new_rank, item);
            }
        }
        sent.len()
    }
}

/// The retransmit limit for a cluster of `n` members: `mult × ceil(log10(n + 1))`.
pub(crate) fn retransmit_limit(mult: u32, n: usize) -> u32 {
    let scale = ((n as f64) + 1.0).log10().ceil().max(1.0) as u32;
    mult.saturating_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::split_parts;

    fn member(id: u64) -> BroadcastKey {
        BroadcastKey::Member(NodeId::new(id))
    }

    #[test]
    fn retransmit_limit_follows_memberlist() {
        assert_eq!(retransmit_limit(4, 0), 4);
        assert_eq!(retransmit_limit(4, 9), 4);
        assert_eq!(retransmit_limit(4, 10), 8);
        assert_eq!(retransmit_limit(4, 1000), 16);
    }

    #[test]
    fn freshest_first_and_dropped_after_the_limit() {
        let mut q = BroadcastQueue::default();
        q.push(member(1), b"one".to_vec());
        q.push(member(2), b"two".to_vec());
        let mut body = Vec::new();
        // Room for exactly one part: the newest goes first.
        assert_eq!(q.fill(&mut body, 5 + MIN_PART_BYTES - 1, 2), 1);
        assert_eq!(split_parts(&body).unwrap(), vec![&b"two"[..]]);
        // "one" now has fewer transmits than "two", so it leads.
        let mut body = Vec::new();
        assert_eq!(q.fill(&mut body, 100, 2), 2);
        assert_eq!(split_parts(&body).unwrap(), vec![&b"one"[..], b"two"]);
        // "two" reached the limit of 2 and is gone; "one" has one transmit left.
        assert_eq!(q.len(), 1);
        let mut body = Vec::new();
        assert_eq!(q.fill(&mut body, 100, 2), 1);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn newer_update_replaces_and_users_are_counted() {
        let mut q = BroadcastQueue::default();
        q.push(member(1), b"old".to_vec());
        q.push(member(1), b"new".to_vec());
        let user = q.next_user_key();
        q.push(user, b"hi".to_vec());
        assert_eq!((q.len(), q.user_len()), (2, 1));
        assert!(q.contains(user));
        let mut body = Vec::new();
        q.fill(&mut body, 100, 1);
        assert_eq!(split_parts(&body).unwrap(), vec![&b"hi"[..], b"new"]);
        assert_eq!((q.len(), q.user_len()), (0, 0));
    }
}
