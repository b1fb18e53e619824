//! The JSON bodies of the HTTP API: one set of types that the gateway serves (and describes
//! in its OpenAPI document, with the `openapi` feature) and this client reads, so the two
//! cannot drift apart. Keys and values in JSON are percent-encoded strings (see
//! [`crate::encode_bytes`]).

use serde::{Deserialize, Serialize};

/// A write's new version (`acks=majority`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Written {
    /// The key's version after the write.
    pub version: u64,
}

/// A write sent with `acks=leader` or `acks=none`: accepted, not known to be committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    /// Always true.
    pub accepted: bool,
}

/// A compare-and-set that deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deleted {
    /// Whether the key had a value.
    pub deleted: bool,
}

/// What a compare-and-set expects the key to hold now.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CasExpect {
    /// The key at this version.
    Version(u64),
    /// The key holding this value (percent-encoded).
    Value(String),
    /// The key holding no value.
    Absent,
}

/// A compare-and-set. Both fields are required: a string value sets it, `null` deletes (a
/// missing `value` is a malformed request, never a delete).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CasRequest {
    /// The expectation.
    pub expect: CasExpect,
    /// The new value (percent-encoded), or `null` to delete.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, required = true))]
    pub value: serde_json::Value,
}

/// One key of a scan.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Entry {
    /// The key, percent-encoded.
    pub key: String,
    /// The value, percent-encoded.
    pub value: String,
    /// Its version.
    pub version: u64,
}

/// A page of a scan.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScanPage {
    /// Keys in order.
    pub entries: Vec<Entry>,
    /// Where the next page starts (pass it back as `continuation`); `null` at the end.
    pub continuation: Option<String>,
}

/// A member of the cluster, as this node's membership sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    /// Its node id.
    pub id: u64,
    /// Its node RPC and gossip address.
    pub addr: String,
    /// `alive`, `suspect`, `dead` or `left`.
    pub state: String,
    /// Its incarnation (bumped each time it refutes a suspicion).
    pub incarnation: u64,
    /// `data` (hosts ranges) or `gateway` (routes requests only).
    pub role: String,
}

/// A replica as a range's descriptor names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Replica {
    /// Its node.
    pub node: u64,
    /// `voter` or `learner`.
    pub role: String,
}

/// A range as the meta range records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Range {
    /// Its id.
    pub id: u64,
    /// Its first key, percent-encoded (empty: the start of the key space).
    pub start: String,
    /// The first key after it, percent-encoded; `null`: the end of the key space.
    pub end: Option<String>,
    /// Its generation (bumped by every split and replica change).
    pub generation: u64,
    /// Its replicas.
    pub replicas: Vec<Replica>,
    /// Its leader, where this node knows it.
    pub leader: Option<u64>,
}

/// A split's request: where, or nothing (an empty body) for the size median.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SplitRequest {
    /// The right half's first key (percent-encoded), strictly inside the range.
    pub at: Option<String>,
}

/// A change of a range's replicas: exactly one of the fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ReplicaChange {
    /// Adds a learner on this node (it is created there and brought up by a snapshot).
    AddLearner(u64),
    /// Makes this caught-up learner a voter.
    Promote(u64),
    /// Removes this replica (a voter through a joint configuration).
    Remove(u64),
}

/// A range after a change of its replicas.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicasChanged {
    /// The range as its leader applied the change; `null` if the leader removed itself.
    pub range: Option<Range>,
}

/// A split's halves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SplitDone {
    /// The left half (the range's id, a new generation).
    pub left: Range,
    /// The right half (a new id).
    pub right: Range,
}

/// One replica of a range, as its own node reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaStatus {
    /// Its node.
    pub node: u64,
    /// `voter` or `learner`, as the descriptor names it.
    pub role: String,
    /// Whether its node answered; if not, `error` says why and the figures are absent.
    pub reachable: bool,
    /// Why its node did not answer.
    pub error: Option<String>,
    /// `leader`, `follower`, `candidate` or `pre_candidate`.
    pub raft_role: Option<String>,
    /// Its Raft term.
    pub term: Option<u64>,
    /// Its commit index.
    pub commit: Option<u64>,
    /// The index its engine has applied.
    pub applied: Option<u64>,
    /// Its last log index.
    pub last_index: Option<u64>,
    /// Entries it lacks, as the leader sees it (absent for the leader).
    pub lag_entries: Option<u64>,
    /// How long since it last held the leader's whole log, in milliseconds.
    pub lag_ms: Option<u64>,
    /// How the leader replicates to it: `probe`, `replicate` or `snapshot`.
    pub replication: Option<String>,
    /// Live keys in its copy.
    pub keys: Option<u64>,
    /// Live bytes (keys and values) in its copy.
    pub bytes: Option<u64>,
}

/// A range with each replica's state, asked of the replicas' nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RangeStatus {
    /// Its id.
    pub id: u64,
    /// Its first key, percent-encoded.
    pub start: String,
    /// The first key after it, percent-encoded; `null`: the end of the key space.
    pub end: Option<String>,
    /// Its generation.
    pub generation: u64,
    /// The leader of the highest term any replica reported.
    pub leader: Option<u64>,
    /// Its replicas.
    pub replicas: Vec<ReplicaStatus>,
}

/// A range's replicas, each digested by its own node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RangeDigests {
    /// The range.
    pub id: u64,
    /// Its generation.
    pub generation: u64,
    /// Whether every replica answered, at one applied index, with one root: then they
    /// hold the same data.
    pub equal: bool,
    /// Each replica's digest.
    pub replicas: Vec<ReplicaDigest>,
}

/// One replica's digest: the Merkle root of its data (BLAKE3 over every key's version and
/// value) at its applied index.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaDigest {
    /// Its node.
    pub node: u64,
    /// The applied index digested at.
    pub applied: Option<u64>,
    /// The root, in hexadecimal.
    pub root: Option<String>,
    /// Keys digested.
    pub keys: Option<u64>,
    /// Why its node did not answer, if it did not.
    pub error: Option<String>,
}

/// `/health` and `/ready`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    /// `ok` or `ready`.
    pub status: String,
}

/// Every error's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A short stable name: `bad_request`, `not_found`, `condition_failed`, `too_large`,
    /// `unavailable`, `outcome_unknown`, `unauthorized`, `origin_not_allowed`,
    /// `not_ready`, `internal`.
    pub error: String,
    /// What happened.
    pub message: String,
}
