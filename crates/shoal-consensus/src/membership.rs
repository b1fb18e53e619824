//! Who is in a group: voters, learners, and the joint configuration used while voters change.
//!
//! A change that alters the voters goes through joint consensus (Raft thesis §4.3): the group
//! first moves to `C(old,new)`, in which every decision (a commit, an election) needs a
//! majority of the old voters *and* a majority of the new ones, and then, once that entry is
//! committed, the leader appends `C(new)` on its own. Changes that touch only learners take
//! effect in one step because learners never count towards a quorum.

use serde::{Deserialize, Serialize};
use shoal_core::NodeId;
use std::collections::BTreeSet;
use std::fmt;

use crate::entry::LogIndex;

/// The members of one Raft group.
///
/// Decoding checks the invariants that every membership built here keeps (see
/// [`Membership::validate`]), so one received from a peer or read back from disk is as
/// trustworthy as a local one.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawMembership")]
pub struct Membership {
    voters: BTreeSet<NodeId>,
    /// The previous voters while the configuration is joint; empty otherwise.
    outgoing: BTreeSet<NodeId>,
    /// Learners that may be promoted to voters once they have caught up.
    learners: BTreeSet<NodeId>,
    /// Learners that stay read-only for ever: they replicate and serve follower reads, but a
    /// promotion is refused.
    read_only: BTreeSet<NodeId>,
}

/// The unvalidated wire form (the same fields in the same order); decoding goes through
/// [`Membership::validate`].
#[derive(Deserialize)]
struct RawMembership {
    voters: BTreeSet<NodeId>,
    outgoing: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    read_only: BTreeSet<NodeId>,
}

impl TryFrom<RawMembership> for Membership {
    type Error = MembershipError;
    fn try_from(raw: RawMembership) -> Result<Self, Self::Error> {
        let membership = Membership {
            voters: raw.voters,
            outgoing: raw.outgoing,
            learners: raw.learners,
            read_only: raw.read_only,
        };
        membership.validate()?;
        Ok(membership)
    }
}

/// Why a membership breaks the invariants (only a bug or a forged message or file makes one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// It has members but no (incoming) voter: the group could never elect or commit.
    #[error("a membership with members has no voter")]
    NoVoters,
    /// A node holds two roles: a voter (incoming or outgoing) that is also a learner, or a
    /// learner of both kinds.
    #[error("{0} holds two roles in the membership")]
    OverlappingRoles(NodeId),
    /// More role entries (voters, outgoing voters and learners counted separately) than
    /// [`MAX_MEMBERSHIP_ENTRIES`].
    #[error("{0} role entries, more than the {max} a membership may hold", max = MAX_MEMBERSHIP_ENTRIES)]
    TooManyMembers(usize),
}

/// The most role entries a membership may hold (voters, outgoing voters and learners counted
/// separately). Far above any real group, it bounds what a peer's membership costs to decode
/// and keeps a snapshot chunk's metadata within what [`crate::RaftConfig::max_message_bytes`]
/// allows for it.
pub const MAX_MEMBERSHIP_ENTRIES: usize = 4096;

/// The kind of learner [`ConfChange::AddNode`] adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LearnerKind {
    /// May later be promoted to a voter.
    Promotable,
    /// Never votes; a promotion is refused.
    ReadOnly,
}

/// A requested membership change. Nodes join as learners and become voters by promotion, so
/// a voter is never added before it holds the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChange {
    /// Adds a learner.
    AddNode {
        /// The new member.
        node: NodeId,
        /// Whether it may be promoted later.
        kind: LearnerKind,
    },
    /// Removes a voter (through a joint configuration) or a learner (at once).
    RemoveNode(NodeId),
    /// Makes a caught-up promotable learner a voter (through a joint configuration).
    PromoteLearner(NodeId),
    /// Promotes several learners in one joint change.
    BatchPromote(Vec<NodeId>),
    /// Removes several members in one change (joint when any is a voter).
    BatchRemove(Vec<NodeId>),
}

/// Why a membership change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    /// The group is between configurations; the change must wait until it leaves.
    #[error("the group is in a joint configuration; wait for it to leave")]
    InJointConfig,
    /// Another membership change is proposed and not yet committed.
    #[error("another membership change is still pending")]
    ChangePending,
    /// The node is already a member.
    #[error("{0} is already a member")]
    AlreadyMember(NodeId),
    /// The node is not a member.
    #[error("{0} is not a member")]
    NotMember(NodeId),
    /// The node is not a promotable learner (a voter, or a read-only learner).
    #[error("{0} is not a promotable learner")]
    NotPromotable(NodeId),
    /// The learner's log is too far behind the leader's commit index to be promoted.
    #[error("{node} has not caught up: {lag} entries behind")]
    NotCaughtUp {
        /// The learner.
        node: NodeId,
        /// Entries it lacks.
        lag: u64,
    },
    /// The change would leave the group without voters.
    #[error("the change would leave no voters")]
    NoVotersLeft,
    /// The batch is empty or names a node twice.
    #[error("the batch is empty or names a node twice")]
    BadBatch,
}

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A quorum (of both halves, when joint) granted.
    Won,
    /// A quorum can no longer be reached.
    Lost,
    /// Not decided yet.
    Pending,
}

impl Membership {
    /// A configuration of `voters` and no learners.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            voters: voters.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Checks the invariants that [`Membership::new`], [`Membership::with_learners`] and
    /// [`Membership::apply`] keep: no node holds two roles (a voter, incoming or outgoing,
    /// is no learner, and no learner is of both kinds), there are at most
    /// [`MAX_MEMBERSHIP_ENTRIES`] role entries, and there is at least one incoming
    /// voter unless the membership is empty (the value of a node that knows none yet, and of
    /// "no snapshot").
    pub fn validate(&self) -> Result<(), MembershipError> {
        let entries =
            self.voters.len() + self.outgoing.len() + self.learners.len() + self.read_only.len();
        if entries > MAX_MEMBERSHIP_ENTRIES {
            return Err(MembershipError::TooManyMembers(entries));
        }
        if self.is_empty() {
            return Ok(());
        }
        if self.voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        let overlap = self
            .learners
            .iter()
            .chain(&self.read_only)
            .find(|&&n| self.is_voter(n))
            .or_else(|| self.learners.intersection(&self.read_only).next());
        match overlap {
            Some(&node) => Err(MembershipError::OverlappingRoles(node)),
            None => Ok(()),
        }
    }

    /// Adds learners (builder style), for bootstrapping a group with some.
    pub fn with_learners(
        mut self,
        learners: impl IntoIterator<Item = NodeId>,
        kind: LearnerKind,
    ) -> Self {
        for node in learners {
            if !self.contains(node) {
                match kind {
                    LearnerKind::Promotable => self.learners.insert(node),
                    LearnerKind::ReadOnly => self.read_only.insert(node),
                };
            }
        }
        self
    }

    /// The (incoming) voters.
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.voters
    }

    /// The outgoing voters of a joint configuration; empty when not joint.
    pub fn outgoing(&self) -> &BTreeSet<NodeId> {
        &self.outgoing
    }

    /// Promotable learners.
    pub fn learners(&self) -> &BTreeSet<NodeId> {
        &self.learners
    }

    /// Read-only learners.
    pub fn read_only_learners(&self) -> &BTreeSet<NodeId> {
        &self.read_only
    }

    /// Whether the configuration is joint.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether no node is a member (a fresh node that has not received its group's log yet).
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
            && self.outgoing.is_empty()
            && self.learners.is_empty()
            && self.read_only.is_empty()
    }

    /// Whether `node` votes (in either half of a joint configuration).
    pub fn is_voter(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.outgoing.contains(&node)
    }

    /// Whether `node` is a learner of either kind.
    pub fn is_learner(&self, node: NodeId) -> bool {
        self.learners.contains(&node) || self.read_only.contains(&node)
    }

    /// Whether `node` is a member in any role.
    pub fn contains(&self, node: NodeId) -> bool {
        self.is_voter(node) || self.is_learner(node)
    }

    /// Every member, each once, in id order: the nodes a leader replicates to.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(&self.outgoing);
        all.extend(&self.learners);
        all.extend(&self.read_only);
        all
    }

    /// How many distinct members there are.
    pub fn node_count(&self) -> usize {
        self.members().len()
    }

    /// The highest index stored on a quorum, given each voter's match index: the commit
    /// index this configuration allows. Joint: the lower of the two halves.
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> LogIndex) -> LogIndex {
        let incoming = majority_index(&self.voters, &matched);
        if self.outgoing.is_empty() {
            incoming
        } else {
            incoming.min(majority_index(&self.outgoing, &matched))
        }
    }

    /// Counts votes: `vote(node)` is `Some(granted)` for the answers received so far.
    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let incoming = majority_vote(&self.voters, &vote);
        if self.outgoing.is_empty() {
            return incoming;
        }
        match (incoming, majority_vote(&self.outgoing, &vote)) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// Whether the nodes for which `active` holds form a quorum (of both halves, when joint).
    pub fn is_quorum(&self, active: impl Fn(NodeId) -> bool) -> bool {
        self.vote_result(|n| Some(active(n))) == VoteResult::Won
    }

    /// The configuration after `change`, or why it is refused. Learner changes are final at
    /// once; voter changes produce a joint configuration that [`Membership::leave_joint`]
    /// completes. The caller (the leader) checks catch-up separately.
    pub fn apply(&self, change: &ConfChange) -> Result<Membership, ConfChangeError> {
        if self.is_joint() {
            return Err(ConfChangeError::InJointConfig);
        }
        let mut next = self.clone();
        match change {
            ConfChange::AddNode { node, kind } => {
                if self.contains(*node) {
                    return Err(ConfChangeError::AlreadyMember(*node));
                }
                match kind {
                    LearnerKind::Promotable => next.learners.insert(*node),
                    LearnerKind::ReadOnly => next.read_only.insert(*node),
                };
                return Ok(next);
            }
            ConfChange::RemoveNode(node) => next.remove(&[*node])?,
            ConfChange::BatchRemove(nodes) => next.remove(nodes)?,
            ConfChange::PromoteLearner(node) => next.promote(&[*node])?,
            ConfChange::BatchPromote(nodes) => next.promote(nodes)?,
        }
        if next.voters.is_empty() {
            return Err(ConfChangeError::NoVotersLeft);
        }
        if next.voters != self.voters {
            next.outgoing = self.voters.clone();
        }
        Ok(next)
    }

    /// The final configuration of a joint one: only the incoming voters vote.
    pub fn leave_joint(&self) -> Membership {
        let mut next = self.clone();
        next.outgoing.clear();
        next
    }

    /// The nodes promoted by the change that produced this joint configuration.
    pub fn promoted_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters
            .iter()
            .copied()
            .filter(|n| !self.outgoing.is_empty() && !self.outgoing.contains(n))
    }

    fn remove(&mut self, nodes: &[NodeId]) -> Result<(), ConfChangeError> {
        check_batch(nodes)?;
        for node in nodes {
            if !self.contains(*node) {
                return Err(ConfChangeError::NotMember(*node));
            }
        }
        for node in nodes {
            self.voters.remove(node);
            self.learners.remove(node);
            self.read_only.remove(node);
        }
        Ok(())
    }

    fn promote(&mut self, nodes: &[NodeId]) -> Result<(), ConfChangeError> {
        check_batch(nodes)?;
        for node in nodes {
            if !self.learners.contains(node) {
                return Err(ConfChangeError::NotPromotable(*node));
            }
        }
        for node in nodes {
            self.learners.remove(node);
            self.voters.insert(*node);
        }
        Ok(())
    }
}

fn check_batch(nodes: &[NodeId]) -> Result<(), ConfChangeError> {
    let distinct: BTreeSet<_> = nodes.iter().collect();
    if nodes.is_empty() || distinct.len() != nodes.len() {
        return Err(ConfChangeError::BadBatch);
    }
    Ok(())
}

/// The largest index that a majority of `voters` has reached; `u64::MAX`-free: an empty set
/// allows nothing.
fn majority_index(voters: &BTreeSet<NodeId>, matched: &impl Fn(NodeId) -> LogIndex) -> LogIndex {
    if voters.is_empty() {
        return 0;
    }
    let mut indexes: Vec<LogIndex> = voters.iter().map(|&n| matched(n)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[voters.len() / 2]
}

fn majority_vote(voters: &BTreeSet<NodeId>, vote: &impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Lost;
    }
    let need = voters.len() / 2 + 1;
    let (mut yes, mut no) = (0, 0);
    for &n in voters {
        match vote(n) {
            Some(true) => yes += 1,
            Some(false) => no += 1,
            None => {}
        }
    }
    if yes >= need {
        VoteResult::Won
    } else if voters.len() - no < need {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "voters{:?}", self.voters)?;
        if self.is_joint() {
            write!(f, "&outgoing{:?}", self.outgoing)?;
        }
        if !self.learners.is_empty() {
            write!(f, " learners{:?}", self.learners)?;
        }
        if !self.read_only.is_empty() {
            write!(f, " read_only{:?}", self.read_only)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(raw: &[u64]) -> Vec<NodeId> {
        raw.iter().copied().map(NodeId::new).collect()
    }

    #[test]
    fn committed_index_is_the_majority_match_and_joint_takes_the_lower_half() {
        let m = Membership::new(ids(&[1, 2, 3]));
        assert_eq!(m.committed_index(|n| [0, 5, 7, 9][n.get() as usize]), 7);
        let joint = m
            .clone()
            .with_learners(ids(&[4, 5]), LearnerKind::Promotable)
            .apply(&ConfChange::BatchPromote(ids(&[4, 5])))
            .unwrap();
        assert!(joint.is_joint());
        // Incoming {1..5}: majority match 5; outgoing {1,2,3}: 7.
        assert_eq!(
            joint.committed_index(|n| [0, 5, 7, 9, 1, 2][n.get() as usize]),
            5
        );
        assert_eq!(joint.leave_joint().outgoing().len(), 0);
    }

    #[test]
    fn a_joint_vote_needs_both_halves() {
        let joint = Membership::new(ids(&[1, 2, 3]))
            .with_learners(ids(&[4]), LearnerKind::Promotable)
            .apply(&ConfChange::RemoveNode(NodeId::new(1)))
            .unwrap();
        assert_eq!(joint.voters(), &ids(&[2, 3]).into_iter().collect());
        // 2 and 3 grant: both halves won.
        assert_eq!(
            joint.vote_result(|n| (n.get() != 1).then_some(true)),
            VoteResult::Won
        );
        // 1 and 2 grant: incoming {2,3} pending (3 has not answered).
        assert_eq!(
            joint.vote_result(|n| (n.get() <= 2).then_some(true)),
            VoteResult::Pending
        );
        assert_eq!(
            joint.vote_result(|n| (n.get() == 3).then_some(false)),
            VoteResult::Lost
        );
    }

    #[test]
    fn the_codec_refuses_a_membership_that_breaks_the_invariants() {
        use shoal_core::codec;
        const LIMIT: usize = 1 << 20;
        let good = Membership::new(ids(&[1, 2, 3])).with_learners(ids(&[4]), LearnerKind::ReadOnly);
        let bytes = codec::encode(&good).unwrap();
        assert_eq!(codec::decode::<Membership>(&bytes, LIMIT), Ok(good.clone()));
        // The empty membership (a joining node's, and a missing snapshot's) is fine.
        let bytes = codec::encode(&Membership::default()).unwrap();
        assert_eq!(
            codec::decode::<Membership>(&bytes, LIMIT),
            Ok(Membership::default())
        );

        let mut voter_and_learner = good.clone();
        voter_and_learner.learners.insert(NodeId::new(2));
        let mut both_kinds = good.clone();
        both_kinds.learners.insert(NodeId::new(4));
        let mut outgoing_learner = good.clone();
        outgoing_learner.outgoing = ids(&[1, 2, 4]).into_iter().collect();
        let only_outgoing = Membership {
            outgoing: ids(&[1]).into_iter().collect(),
            ..Membership::default()
        };
        let cases = [
            (
                voter_and_learner,
                MembershipError::OverlappingRoles(NodeId::new(2)),
            ),
            (
                both_kinds,
                MembershipError::OverlappingRoles(NodeId::new(4)),
            ),
            (
                outgoing_learner,
                MembershipError::OverlappingRoles(NodeId::new(4)),
            ),
            (
                Membership::default().with_learners(ids(&[4]), LearnerKind::Promotable),
                MembershipError::NoVoters,
            ),
            (only_outgoing, MembershipError::NoVoters),
            (
                Membership::new((1..=MAX_MEMBERSHIP_ENTRIES as u64 + 1).map(NodeId::new)),
                MembershipError::TooManyMembers(MAX_MEMBERSHIP_ENTRIES + 1),
            ),
        ];
        for (bad, why) in cases {
            assert_eq!(bad.validate(), Err(why.clone()), "{bad:?}");
            // It encodes (the check is on the way in), but does not decode.
            let bytes = codec::encode(&bad).unwrap();
            match codec::decode::<Membership>(&bytes, LIMIT) {
                Err(codec::CodecError::Decode(e)) => {
                    assert!(e.contains(&why.to_string()), "{bad:?}: {e}")
                }
                other => panic!("{bad:?} decoded as {other:?}"),
            }
        }
    }

    #[test]
    fn refusals_are_specific_and_learner_changes_are_single_step() {
        let m = Membership::new(ids(&[1])).with_learners(ids(&[9]), LearnerKind::ReadOnly);
        assert_eq!(
            m.apply(&ConfChange::PromoteLearner(NodeId::new(9))),
            Err(ConfChangeError::NotPromotable(NodeId::new(9)))
        );
        assert_eq!(
            m.apply(&ConfChange::RemoveNode(NodeId::new(1))),
            Err(ConfChangeError::NoVotersLeft)
        );
        assert_eq!(
            m.apply(&ConfChange::BatchRemove(ids(&[9, 9]))),
            Err(ConfChangeError::BadBatch)
        );
        let added = m
            .apply(&ConfChange::AddNode {
                node: NodeId::new(2),
                kind: LearnerKind::Promotable,
            })
            .unwrap();
        assert!(!added.is_joint());
        let removed = added
            .apply(&ConfChange::RemoveNode(NodeId::new(9)))
            .unwrap();
        assert!(!removed.is_joint() && !removed.contains(NodeId::new(9)));
        let joint = removed
            .apply(&ConfChange::PromoteLearner(NodeId::new(2)))
            .unwrap();
        assert_eq!(
            joint.apply(&ConfChange::RemoveNode(NodeId::new(1))),
            Err(ConfChangeError::InJointConfig)
        );
        assert_eq!(joint.promoted_nodes().collect::<Vec<_>>(), ids(&[2]));
    }
}
