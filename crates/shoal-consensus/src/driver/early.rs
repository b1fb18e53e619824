//! Messages for groups not hosted yet, kept a moment.
//!
//! The right half of a split starts on each replica as that replica applies the split, and
//! its first leader's messages (a vote request, the first appends) can reach a replica a few
//! milliseconds before it gets there. Dropped, they would hold the new group's first
//! election back by a whole election timeout. So a message for an unknown group is kept, a
//! bounded number per group for a bounded time, and stepped when the group is added.

use crate::message::Message;
use shoal_core::{Instant, RangeId};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// How long a message for an unknown group is kept.
const KEEP_FOR: Duration = Duration::from_secs(2);
/// The most messages kept per unknown group (the newest are kept).
const PER_GROUP: usize = 64;
/// The most unknown groups messages are kept for.
const GROUPS: usize = 1024;

/// Messages for groups not hosted yet, by group, oldest first.
#[derive(Default)]
pub(super) struct EarlyMessages {
    by_group: HashMap<RangeId, VecDeque<(Instant, Message)>>,
    /// Messages dropped because a bound was reached.
    pub(super) dropped: u64,
}

impl EarlyMessages {
    /// Keeps `message`, received at `now`, for a group not hosted.
    pub(super) fn keep(&mut self, now: Instant, message: Message) {
        if !self.by_group.contains_key(&message.group) && self.by_group.len() >= GROUPS {
            self.expire(now);
            if self.by_group.len() >= GROUPS {
                self.dropped += 1;
                return;
            }
        }
        let kept = self.by_group.entry(message.group).or_default();
        kept.push_back((now, message));
        if kept.len() > PER_GROUP {
            kept.pop_front();
            self.dropped += 1;
        }
    }

    /// The messages kept for `group` that are still fresh, oldest first.
    pub(super) fn take(&mut self, group: RangeId, now: Instant) -> Vec<Message> {
        self.by_group
            .remove(&group)
            .into_iter()
            .flatten()
            .filter(|(at, _)| now.saturating_duration_since(*at) < KEEP_FOR)
            .map(|(_, m)| m)
            .collect()
    }

    /// Forgets what was kept too long.
    pub(super) fn expire(&mut self, now: Instant) {
        self.by_group.retain(|_, kept| {
            kept.retain(|(at, _)| now.saturating_duration_since(*at) < KEEP_FOR);
            !kept.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageBody;
    use shoal_core::NodeId;

    fn message(group: u64) -> Message {
        Message {
            group: RangeId::new(group),
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
        assert_eq!(early.take(RangeId::new(7), t0).len(), PER_GROUP);
        assert!(early.take(RangeId::new(7), t0).is_empty(), "taken once");
        early.keep(t0, message(8));
        assert!(
            early.take(RangeId::new(8), t0 + KEEP_FOR).is_empty(),
            "too old"
        );
        for g in 0..GROUPS as u64 + 5 {
            early.keep(t0, message(100 + g));
        }
        assert_eq!(early.by_group.len(), GROUPS);
        early.expire(t0 + KEEP_FOR);
        assert!(early.by_group.is_empty());
    }
}
