//! Messages for groups not hosted yet, kept a moment.
//!
//! The right half of a split starts on each replica as that replica applies the split, and
//! its first leader's messages (a vote request, the first appends) can reach a replica a few
//! milliseconds before it gets there. Dropped, they would hold the new group's first
//! election back by a whole election timeout. So a message for an unknown group is kept, a
//! bounded number per group for a bounded time, and stepped when the group is added.

use crate::message::Message;
use shoal_core::{GroupId, Instant};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// How long a message for an unknown group is kept.
const KEEP_FOR: Duration = Duration::from_secs(2);
/// The most messages kept per unknown group (the newest are kept).
const PER_GROUP: usize = 64;
/// The most unknown groups messages are kept for.
const GROUPS: usize = 1024;
/// The most bytes kept in all (as [`crate::MessageBody::approx_size`] counts them): a peer
/// cannot make a node hold more by sending large appends for groups it does not host.
const MAX_BYTES: u64 = 64 << 20;

/// Messages for groups not hosted yet, by group, oldest first.
#[derive(Default)]
pub(super) struct EarlyMessages {
    by_group: HashMap<GroupId, VecDeque<(Instant, Message)>>,
    /// Bytes kept.
    bytes: u64,
    /// When the oldest message kept arrived (none kept: `None`), so that an expiry with
    /// nothing to expire costs nothing.
    oldest: Option<Instant>,
    /// Messages dropped because a bound was reached.
    pub(super) dropped: u64,
}

impl EarlyMessages {
    /// Keeps `message`, received at `now`, for a group not hosted. Past a bound it is
    /// dropped: the ticks' [`EarlyMessages::expire`] makes room, not each message (which
    /// would cost a pass over everything kept per message while a flood lasts).
    pub(super) fn keep(&mut self, now: Instant, message: Message) {
        let size = message.body.approx_size();
        let full = self.bytes.saturating_add(size) > MAX_BYTES
            || (!self.by_group.contains_key(&message.group) && self.by_group.len() >= GROUPS);
        if full {
            self.dropped += 1;
            return;
        }
        self.oldest.get_or_insert(now);
        let kept = self.by_group.entry(message.group).or_default();
        kept.push_back((now, message));
        self.bytes += size;
        if kept.len() > PER_GROUP {
            if let Some((_, old)) = kept.pop_front() {
                self.bytes = self.bytes.saturating_sub(old.body.approx_size());
            }
            self.dropped += 1;
        }
    }

    /// The messages kept for `group` that are still fresh, oldest first.
    pub(super) fn take(&mut self, group: GroupId, now: Instant) -> Vec<Message> {
        let kept = self.by_group.remove(&group).unwrap_or_default();
        let freed: u64 = kept.iter().map(|(_, m)| m.body.approx_size()).sum();
        self.bytes = self.bytes.saturating_sub(freed);
        kept.into_iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) < KEEP_FOR)
            .map(|(_, m)| m)
            .collect()
    }

    /// Forgets what was kept too long (nothing to do, and no pass over what is kept, until
    /// the oldest message is that old).
    pub(super) fn expire(&mut self, now: Instant) {
        match self.oldest {
            Some(oldest) if now.saturating_duration_since(oldest) >= KEEP_FOR => {}
            _ => return,
        }
        let mut bytes = 0;
        let mut oldest: Option<Instant> = None;
        self.by_group.retain(|_, kept| {
            kept.retain(|(at, _)| now.saturating_duration_since(*at) < KEEP_FOR);
            bytes += kept.iter().map(|(_, m)| m.body.approx_size()).sum::<u64>();
            if let Some(&(at, _)) = kept.front() {
                oldest = Some(oldest.map_or(at, |o| o.min(at)));
            }
            !kept.is_empty()
        });
        self.bytes = bytes;
        self.oldest = oldest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageBody;
    use shoal_core::NodeId;

    fn message(group: u64) -> Message {
        Message {
            group: GroupId::new(group),
            from: NodeId::new(1),
            to: NodeId::new(2),
            term: 1,
            config_index: 0,
            body: MessageBody::TimeoutNow,
        }
    }

    #[test]
    fn messages_are_kept_boundedly_and_briefly() {
        let mut early = EarlyMessages::default();
        let t0 = Instant::from_millis(1);
        for _ in 0..PER_GROUP + 10 {
            early.keep(t0, message(7));
        }
        assert_eq!(early.dropped, 10);
        assert_eq!(early.take(GroupId::new(7), t0).len(), PER_GROUP);
        assert!(early.take(GroupId::new(7), t0).is_empty(), "taken once");
        early.keep(t0, message(8));
        assert!(
            early.take(GroupId::new(8), t0 + KEEP_FOR).is_empty(),
            "too old"
        );
        for g in 0..GROUPS as u64 + 5 {
            early.keep(t0, message(100 + g));
        }
        assert_eq!(early.by_group.len(), GROUPS);
        early.expire(t0 + KEEP_FOR);
        assert!(early.by_group.is_empty());
        assert_eq!(early.bytes, 0);
    }
}
