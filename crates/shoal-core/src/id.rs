//! Identifier newtypes shared by every layer.
//!
//! Each id is a `u64` in a newtype so that a node id can never be passed where a range id is
//! expected. They serialize as bare integers and print with a short prefix (`n3`, `r7`,
//! `grp2`) so logs stay readable.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw value.
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw value.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl From<u64> for $name {
            fn from(raw: u64) -> Self {
                Self(raw)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}

id_newtype!(
    /// A cluster member. Unique within a cluster for the member's lifetime; a node that is
    /// wiped and rejoins gets a new id.
    NodeId,
    "n"
);

id_newtype!(
    /// A range of the key space (and the Raft group that replicates it). Range 0 is the meta
    /// range.
    RangeId,
    "r"
);

id_newtype!(
    /// A Raft group (shoal-consensus): one replicated log and its state machine, among the
    /// many a node may host. A range's group has the range's number ([`RangeId`] converts
    /// both ways); a Raft user without ranges numbers its groups as it likes.
    GroupId,
    "grp"
);

impl From<RangeId> for GroupId {
    fn from(range: RangeId) -> Self {
        GroupId(range.get())
    }
}

impl From<GroupId> for RangeId {
    fn from(group: GroupId) -> Self {
        RangeId::new(group.get())
    }
}

id_newtype!(
    /// Matches a response to its request on a multiplexed connection. Unique per connection
    /// while the request is in flight.
    CorrelationId,
    "c"
);

id_newtype!(
    /// The version of a range descriptor. Every split, merge or replica change produces a
    /// descriptor with a higher generation; when two descriptors overlap, the higher one wins.
    Generation,
    "g"
);

impl RangeId {
    /// The meta range, which holds the authoritative range descriptors.
    pub const META: RangeId = RangeId(0);
}

impl Generation {
    /// The highest generation a valid descriptor may carry: 2^60, far above any real count
    /// (a million descriptor changes a second for 30,000 years). A peer's descriptor above it
    /// is refused at decode and [`Generation::next`] stops at it, so no generation wraps and
    /// nothing panics. A descriptor at the bound itself still wins every merge and can no
    /// longer change: the bound turns a forged generation into a frozen range, not a broken
    /// node. Keeping forgers out is the transport's job (peer authentication), not the
    /// merge's.
    pub const MAX: Generation = Generation(1 << 60);

    /// The generation after this one, or `None` when that would pass [`Generation::MAX`]
    /// (only reachable from a descriptor built locally at the bound: decoding refuses any
    /// generation above it).
    pub fn next(self) -> Option<Self> {
        let next = self.0.checked_add(1)?;
        (next <= Self::MAX.0).then_some(Self(next))
    }
}

impl CorrelationId {
    /// The id after this one, wrapping at `u64::MAX` (a connection would need 2^64 requests
    /// in flight at once to collide).
    pub fn next(self) -> Self {
        Self(self.0.wrapping_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_with_their_prefix() {
        assert_eq!(NodeId::new(3).to_string(), "n3");
        assert_eq!(format!("{:?}", RangeId::new(7)), "r7");
        assert_eq!(Generation::new(1).next(), Some(Generation::new(2)));
        assert_eq!(Generation::MAX.next(), None);
        assert_eq!(Generation::new(u64::MAX).next(), None);
    }

    #[test]
    fn ids_serialize_as_bare_integers() {
        let bytes = crate::codec::encode(&NodeId::new(300)).unwrap();
        assert_eq!(bytes, crate::codec::encode(&300u64).unwrap());
    }
}
