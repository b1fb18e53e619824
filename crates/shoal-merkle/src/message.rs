//! The messages of the sync service, and their compact encodings.
//!
//! A session sends [`SyncRequest`]s and gets one [`SyncResponse`] for each. The responder
//! keeps no state between requests, so a request can be sent again after a lost response
//! or a restart, and every response is checked against the request it answers.

use crate::digest::{Digest, DigestWindow};
use crate::item::Item;
use crate::shape::TreeShape;
use serde::{Deserialize, Serialize};
use shoal_core::codec::{self, CodecError};
use shoal_core::{Error, KeyRange, NodeId};

/// The largest encoded sync message accepted.
pub const MAX_SYNC_MESSAGE_BYTES: usize = 16 << 20;

/// At most this many ids, keys or hashes per fetch, whatever the configuration; a responder
/// refuses more than its own [`SyncConfig::max_fetch`](crate::SyncConfig::max_fetch), which
/// is at most this.
pub const MAX_FETCH: usize = 1000;

/// Node indexes at one level, strictly increasing. On the wire: the first index, then the
/// gaps, as variable-length integers, so a dense list costs about a byte per node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<u64>", try_from = "Vec<u64>")]
pub struct NodeList(Vec<u64>);

impl NodeList {
    /// A list from strictly increasing indexes; `None` otherwise.
    pub fn new(indexes: Vec<u64>) -> Option<NodeList> {
        indexes
            .windows(2)
            .all(|w| w[0] < w[1])
            .then_some(NodeList(indexes))
    }

    /// The indexes.
    pub fn as_slice(&self) -> &[u64] {
        &self.0
    }

    /// Number of indexes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<NodeList> for Vec<u64> {
    fn from(list: NodeList) -> Vec<u64> {
        let mut prev = 0;
        list.0
            .into_iter()
            .enumerate()
            .map(|(i, x)| {
                let gap = if i == 0 { x } else { x - prev };
                prev = x;
                gap
            })
            .collect()
    }
}

impl TryFrom<Vec<u64>> for NodeList {
    type Error = &'static str;

    fn try_from(gaps: Vec<u64>) -> Result<NodeList, Self::Error> {
        let mut out = gaps;
        for i in 1..out.len() {
            if out[i] == 0 {
                return Err("node indexes must be strictly increasing");
            }
            out[i] = out[i - 1]
                .checked_add(out[i])
                .ok_or("node index overflows")?;
        }
        Ok(NodeList(out))
    }
}

/// Item ids (key hashes). On the wire: 8 bytes each, big-endian (hashes are random, so a
/// variable-length encoding would cost more).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<u8>", try_from = "Vec<u8>")]
pub struct IdList(pub Vec<u64>);

impl From<IdList> for Vec<u8> {
    fn from(ids: IdList) -> Vec<u8> {
        ids.0.iter().flat_map(|id| id.to_be_bytes()).collect()
    }
}

impl TryFrom<Vec<u8>> for IdList {
    type Error = &'static str;

    fn try_from(bytes: Vec<u8>) -> Result<IdList, Self::Error> {
        if !bytes.len().is_multiple_of(8) {
            return Err("id list is not a whole number of 8-byte ids");
        }
        Ok(IdList(
            bytes
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ))
    }
}

/// What one replica asks another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// Compares whole trees: the asker's root, key count, shape and key range.
    ExchangeRoots {
        /// The asker's root digest.
        root: Digest,
        /// The asker's key count.
        count: u64,
        /// The asker's tree shape; the responder refuses a different one.
        shape: TreeShape,
        /// The key range the asker's tree covers; the responder refuses a different one
        /// (after a split or merge one side has not applied yet, the two trees cover
        /// different keys and must not be reconciled).
        span: KeyRange,
    },
    /// The digests of the children of `nodes` at `level`, each cut to `window`.
    GetNodes {
        /// The level of `nodes` (below the bucket level).
        level: u8,
        /// The parents whose children are wanted.
        nodes: NodeList,
        /// Which digest bytes to send.
        window: DigestWindow,
        /// At most this many child digests in the answer.
        max: u32,
    },
    /// The entries (key hash and leaf digest cut to `window`) of `buckets`.
    GetLeaves {
        /// Bucket indexes.
        buckets: NodeList,
        /// Resume within the first bucket after this key hash (from a truncated answer).
        after: Option<u64>,
        /// Which digest bytes to send.
        window: DigestWindow,
        /// At most about this many entries in the answer (entries sharing a key hash are
        /// never split).
        max: u32,
    },
    /// The items with these key hashes (at most the responder's `max_fetch`).
    Fetch {
        /// Key hashes.
        ids: IdList,
    },
    /// The items under these keys (at most the responder's `max_fetch`).
    FetchKeys {
        /// Keys.
        keys: Vec<Vec<u8>>,
    },
    /// Content-addressed items by their hash, which is their key (at most the responder's
    /// `max_fetch`).
    FetchByHash {
        /// Item hashes.
        hashes: Vec<Digest>,
    },
    /// Items the asker holds newer or alone; the responder keeps those that win (a read-only
    /// responder refuses the request).
    Push {
        /// The items.
        items: Vec<Item>,
    },
    /// One new item, pushed as soon as it is written (gossip mode; a read-only responder
    /// refuses it).
    Gossip {
        /// The item.
        item: Item,
    },
    /// Liveness and size.
    Ping {
        /// The asker.
        node: NodeId,
        /// The asker's item count.
        count: u64,
    },
}

/// The answer to one [`SyncRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// To [`SyncRequest::ExchangeRoots`].
    Roots {
        /// The responder's root.
        root: Digest,
        /// The responder's key count.
        count: u64,
        /// Whether the roots are equal.
        roots_match: bool,
    },
    /// To [`SyncRequest::GetNodes`]: fanout digests of `window.len` bytes per parent, for
    /// the first parents asked for (all of them unless `truncated`), concatenated.
    Nodes {
        /// The digests.
        digests: Vec<u8>,
        /// Whether some parents were left out (ask again for the rest).
        truncated: bool,
    },
    /// To [`SyncRequest::GetLeaves`]: entries in (bucket, key hash) order.
    Leaves {
        /// Key hashes.
        ids: IdList,
        /// Leaf digests of `window.len` bytes, one per id, concatenated.
        digests: Vec<u8>,
        /// Whether the answer stops early (resume after the last id).
        truncated: bool,
    },
    /// To [`SyncRequest::Fetch`], [`SyncRequest::FetchKeys`] and [`SyncRequest::FetchByHash`]: the items for the
    /// first `answered` ids or hashes asked for (all unless the answer hit its size limit;
    /// ask again for the rest).
    Items {
        /// The items found.
        items: Vec<Item>,
        /// How many of the ids or hashes asked for this answers.
        answered: u32,
    },
    /// To [`SyncRequest::Push`] and [`SyncRequest::Gossip`].
    Pushed {
        /// Items stored.
        accepted: u32,
        /// Items refused (stale or invalid).
        refused: u32,
    },
    /// To [`SyncRequest::Ping`].
    Pong {
        /// The responder.
        node: NodeId,
        /// The responder's item count.
        count: u64,
    },
    /// The request was refused (bad shape, over a limit, malformed).
    Refused {
        /// Why.
        error: Error,
    },
}

macro_rules! wire {
    ($ty:ty) => {
        impl $ty {
            /// The wire form.
            pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
                let mut buf = Vec::new();
                codec::encode_into(self, &mut buf, MAX_SYNC_MESSAGE_BYTES)?;
                Ok(buf)
            }

            /// Reads the wire form (at most [`MAX_SYNC_MESSAGE_BYTES`]).
            pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
                codec::decode(bytes, MAX_SYNC_MESSAGE_BYTES)
            }
        }
    };
}

wire!(SyncRequest);
wire!(SyncResponse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_are_delta_encoded_and_checked() {
        let list = NodeList::new(vec![5, 6, 7, 1000]).unwrap();
        let gaps: Vec<u64> = list.clone().into();
        assert_eq!(gaps, [5, 1, 1, 993]);
        assert_eq!(NodeList::try_from(gaps).unwrap(), list);
        assert!(NodeList::new(vec![3, 3]).is_none());
        assert!(NodeList::try_from(vec![1, 0]).is_err());
        assert!(NodeList::try_from(vec![u64::MAX, 1]).is_err());
    }

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let req = SyncRequest::GetNodes {
            level: 3,
            nodes: NodeList::new((0..100).collect()).unwrap(),
            window: DigestWindow { len: 4, window: 0 },
            max: 4096,
        };
        let bytes = req.encode().unwrap();
        assert!(bytes.len() < 110, "{} bytes", bytes.len());
        assert_eq!(SyncRequest::decode(&bytes).unwrap(), req);
        let resp = SyncResponse::Leaves {
            ids: IdList(vec![1, u64::MAX]),
            digests: vec![0; 8],
            truncated: false,
        };
        assert_eq!(SyncResponse::decode(&resp.encode().unwrap()).unwrap(), resp);
        let roots = SyncRequest::ExchangeRoots {
            root: Digest::ZERO,
            count: 7,
            shape: TreeShape::default(),
            span: KeyRange::bounded("a", "m").unwrap(),
        };
        assert_eq!(
            SyncRequest::decode(&roots.encode().unwrap()).unwrap(),
            roots
        );
        for cut in 0..bytes.len() {
            assert!(SyncRequest::decode(&bytes[..cut]).is_err());
        }
        assert!(SyncResponse::decode(&[9, 9, 9, 9]).is_err());
        // An id blob that is not a multiple of 8 bytes.
        let mut bad = resp.encode().unwrap();
        bad[1] = 15;
        assert!(SyncResponse::decode(&bad).is_err());
    }
}
