//! The transmit-limited queue of updates waiting to be piggybacked or gossiped.
//!
//! Each update is sent at most `retransmit_mult × ceil(log10(n + 1))` times, freshest first:
//! updates sent the fewest times go first, and among those the newest. A newer update about a
//! member replaces the queued one, so the queue holds at most one per member plus the user
//! broadcasts, whose number is bounded by the caller.
//!
//! News about a member is not stored encoded: the queue keeps the member's id (and who
//! suspected or declared it, for suspect and dead news) and the message is built from the
//! member table when it is sent. The table changes only through rules that queue the change,
//! so what goes out is what was queued, or newer. This keeps an entry at a few dozen bytes
//! with no allocation, which matters after a mass join, when every node has news about
//! every other node queued at once.

use crate::message::Message;
use crate::packet::{push_message, push_part};
use foldhash::fast::FixedState;
use hashbrown::HashMap;
use shoal_core::NodeId;
use std::collections::BTreeMap;

/// What a queued update is about; a newer update with the same key replaces the older one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum BroadcastKey {
    /// Alive, suspect or dead news about one member.
    Member(NodeId),
    /// One user broadcast (never replaced).
    User(u64),
}

/// A queued update.
#[derive(Clone, Copy, Debug)]
enum Item {
    /// News about member `id`; `from` is who suspected or declared it, for suspect and
    /// dead news.
    Member { id: NodeId, from: NodeId },
    /// The user broadcast stored under this key in `users`.
    User(u64),
}

impl Item {
    fn key(self) -> BroadcastKey {
        match self {
            Item::Member { id, .. } => BroadcastKey::Member(id),
            Item::User(key) => BroadcastKey::User(key),
        }
    }
}

/// Send order, packed in one `u64` so that ascending order is: fewest transmits first, then
/// newest first. The top bits count transmits; the rest is `FRESH_MAX - freshness`.
type Rank = u64;
const TRANSMIT_SHIFT: u32 = 48;
const FRESH_MAX: u64 = (1 << TRANSMIT_SHIFT) - 1;
/// Transmits are counted up to this (the limit is far lower in practice).
const MAX_TRANSMITS: u32 = (1 << (64 - TRANSMIT_SHIFT)) - 1;

fn rank(transmits: u32, fresh: u64) -> Rank {
    (u64::from(transmits.min(MAX_TRANSMITS)) << TRANSMIT_SHIFT) | (FRESH_MAX - fresh)
}

fn transmits_of(rank: Rank) -> u32 {
    (rank >> TRANSMIT_SHIFT) as u32
}

/// Updates waiting to go out, each with a transmit count.
#[derive(Debug)]
pub(crate) struct BroadcastQueue {
    order: BTreeMap<Rank, Item>,
    ranks: HashMap<BroadcastKey, Rank, FixedState>,
    users: HashMap<u64, Vec<u8>, FixedState>,
    /// Freshness of the last update queued (1 ..= `FRESH_MAX`).
    fresh: u64,
    next_user: u64,
}

/// A part shorter than this cannot be a message; stop looking once less room is left.
const MIN_PART_BYTES: usize = 8;
/// Items looked at per fill before giving up on finding ones that fit.
const MAX_SCAN: usize = 256;

impl BroadcastQueue {
    /// An empty queue whose hashes are keyed by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            order: BTreeMap::new(),
            ranks: HashMap::with_hasher(FixedState::with_seed(seed)),
            users: HashMap::with_hasher(FixedState::with_seed(seed)),
            fresh: 0,
            next_user: 0,
        }
    }

    /// Queues news about member `id` (sent as the member's state when it goes out),
    /// replacing any queued news about it. `from` is who suspected or declared it.
    pub(crate) fn push_member(&mut self, id: NodeId, from: NodeId) {
        self.push(Item::Member { id, from });
    }

    /// Queues one encoded user broadcast.
    pub(crate) fn push_user(&mut self, bytes: Vec<u8>) {
        self.next_user += 1;
        self.users.insert(self.next_user, bytes);
        self.push(Item::User(self.next_user));
    }

    fn push(&mut self, item: Item) {
        let key = item.key();
        if let Some(old) = self.ranks.remove(&key) {
            self.order.remove(&old);
        }
        if self.fresh == FRESH_MAX {
            self.renumber();
        }
        self.fresh += 1;
        let rank = rank(0, self.fresh);
        self.ranks.insert(key, rank);
        self.order.insert(rank, item);
    }

    /// Gives the queued updates fresh, dense freshness numbers in their current order (after
    /// 2^48 updates, so in practice never).
    fn renumber(&mut self) {
        let items: Vec<(Rank, Item)> = std::mem::take(&mut self.order).into_iter().collect();
        let count = items.len() as u64;
        for (i, (old, item)) in items.into_iter().enumerate() {
            // Ascending rank means descending freshness within a transmit count.
            let rank = rank(transmits_of(old), count - i as u64);
            self.ranks.insert(item.key(), rank);
            self.order.insert(rank, item);
        }
        self.fresh = count;
    }

    /// Whether news about member `id` is queued.
    pub(crate) fn contains_member(&self, id: NodeId) -> bool {
        self.ranks.contains_key(&BroadcastKey::Member(id))
    }

    /// Queued updates.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Queued user broadcasts.
    pub(crate) fn user_len(&self) -> usize {
        self.users.len()
    }

    /// Appends as many queued updates as fit to `body` (up to `limit` bytes in all), freshest
    /// first, counts a transmit for each, and drops those sent `transmit_limit` times.
    /// `news(id, from)` builds the message for member news, or `None` if the member is gone
    /// (its entry is dropped). Returns how many were appended.
    pub(crate) fn fill(
        &mut self,
        body: &mut Vec<u8>,
        limit: usize,
        transmit_limit: u32,
        mut news: impl FnMut(NodeId, NodeId) -> Option<Message>,
    ) -> usize {
        let mut sent: Vec<Rank> = Vec::new();
        let mut gone: Vec<Rank> = Vec::new();
        for (scanned, (&rank, item)) in self.order.iter().enumerate() {
            if scanned >= MAX_SCAN || body.len() + MIN_PART_BYTES > limit {
                break;
            }
            let appended = match *item {
                Item::Member { id, from } => match news(id, from) {
                    Some(message) => push_message(body, &message, limit),
                    None => {
                        gone.push(rank);
                        continue;
                    }
                },
                Item::User(key) => self
                    .users
                    .get(&key)
                    .is_some_and(|bytes| push_part(body, bytes, limit)),
            };
            if appended {
                sent.push(rank);
            }
        }
        for rank in gone {
            self.drop_rank(rank);
        }
        for &rank in &sent {
            let transmits = transmits_of(rank) + 1;
            if transmits >= transmit_limit {
                self.drop_rank(rank);
            } else if let Some(item) = self.order.remove(&rank) {
                let new_rank = rank + (1 << TRANSMIT_SHIFT);
                if let Some(queued) = self.ranks.get_mut(&item.key()) {
                    *queued = new_rank;
                }
                self.order.insert(new_rank, item);
            }
        }
        sent.len()
    }

    fn drop_rank(&mut self, rank: Rank) {
        if let Some(item) = self.order.remove(&rank) {
            self.ranks.remove(&item.key());
            if let Item::User(key) = item {
                self.users.remove(&key);
            }
        }
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
    use crate::message::Alive;
    use crate::packet::split_parts;
    use shoal_core::codec;

    fn alive(id: NodeId) -> Message {
        Message::Alive(Alive {
            id,
            addr: ([10, 0, 0, 1], 7946).into(),
            incarnation: 1,
            meta: Vec::new(),
        })
    }

    fn news(id: NodeId, _from: NodeId) -> Option<Message> {
        (id.get() != 99).then(|| alive(id))
    }

    fn ids(body: &[u8]) -> Vec<u64> {
        split_parts(body)
            .unwrap()
            .into_iter()
            .map(|part| match codec::decode::<Message>(part, 1400).unwrap() {
                Message::Alive(a) => a.id.get(),
                Message::User(u) => 1000 + u.seq,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn user(seq: u64) -> Vec<u8> {
        codec::encode(&Message::User(crate::message::UserBroadcast {
            origin: NodeId::new(5),
            seq,
            payload: b"hi".to_vec(),
        }))
        .unwrap()
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
        let mut q = BroadcastQueue::new(0);
        q.push_member(NodeId::new(1), NodeId::new(1));
        q.push_member(NodeId::new(2), NodeId::new(2));
        let one_part = codec::encode(&alive(NodeId::new(1))).unwrap().len() + 2;
        // Room for exactly one part: the newest goes first.
        let mut body = Vec::new();
        assert_eq!(q.fill(&mut body, one_part + MIN_PART_BYTES - 1, 2, news), 1);
        assert_eq!(ids(&body), vec![2]);
        // 1 now has fewer transmits than 2, so it leads.
        let mut body = Vec::new();
        assert_eq!(q.fill(&mut body, 1000, 2, news), 2);
        assert_eq!(ids(&body), vec![1, 2]);
        // 2 reached the limit of 2 and is gone; 1 has one transmit left.
        assert_eq!(q.len(), 1);
        assert!(!q.contains_member(NodeId::new(2)));
        let mut body = Vec::new();
        assert_eq!(q.fill(&mut body, 1000, 2, news), 1);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn newer_news_replaces_users_are_counted_and_gone_members_dropped() {
        let mut q = BroadcastQueue::new(0);
        q.push_member(NodeId::new(1), NodeId::new(3));
        q.push_member(NodeId::new(99), NodeId::new(3));
        q.push_member(NodeId::new(1), NodeId::new(4));
        q.push_user(user(7));
        assert_eq!((q.len(), q.user_len()), (3, 1));
        let mut body = Vec::new();
        assert_eq!(q.fill(&mut body, 1000, 1, news), 2);
        assert_eq!(ids(&body), vec![1007, 1]);
        // Member 99 has no news any more (gone from the table): dropped, not sent.
        assert_eq!((q.len(), q.user_len()), (0, 0));
    }

    #[test]
    fn renumbering_keeps_the_order() {
        let mut q = BroadcastQueue::new(0);
        for id in 1..=4 {
            q.push_member(NodeId::new(id), NodeId::new(id));
        }
        let mut body = Vec::new();
        let one_part = codec::encode(&alive(NodeId::new(1))).unwrap().len() + 2;
        q.fill(&mut body, one_part + MIN_PART_BYTES - 1, 10, news);
        q.fresh = FRESH_MAX;
        q.push_member(NodeId::new(5), NodeId::new(5));
        assert!(q.fresh < 10);
        let mut body = Vec::new();
        q.fill(&mut body, 1000, 10, news);
        assert_eq!(ids(&body), vec![5, 3, 2, 1, 4]);
    }
}
