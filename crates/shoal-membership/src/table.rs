//! The member table: every member this node knows, found by id or by address.
//!
//! The members sit in one dense `Vec` (iteration and random picks are slice operations);
//! two hash tables of `u32` slots find one by id and by address. A slot is 4 bytes, so the
//! indexes cost about 10 bytes per member instead of the ~70 of two `HashMap`s keyed by
//! `NodeId` and `SocketAddr`, which matters when a simulator holds 10,000 nodes that each
//! know 10,000 members.
//!
//! The address index maps an address to the member that claimed it last (a dead member's
//! address may be reclaimed by a new id). The hashes are keyed per table, so crafted ids or
//! addresses cannot be chosen to collide on purpose.

use crate::member::Member;
use foldhash::fast::FixedState;
use hashbrown::HashTable;
use shoal_core::NodeId;
use std::hash::BuildHasher;
use std::net::SocketAddr;

/// Every known member, by id and by address.
#[derive(Debug)]
pub(crate) struct MemberTable {
    members: Vec<Member>,
    by_id: HashTable<u32>,
    by_addr: HashTable<u32>,
    hasher: FixedState,
}

impl MemberTable {
    /// An empty table whose hashes are keyed by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            members: Vec::new(),
            by_id: HashTable::new(),
            by_addr: HashTable::new(),
            hasher: FixedState::with_seed(seed),
        }
    }

    /// Every member, in slot order.
    pub(crate) fn as_slice(&self) -> &[Member] {
        &self.members
    }

    /// How many members.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// The member in `slot` (`slot < len()`).
    pub(crate) fn at(&self, slot: usize) -> &Member {
        &self.members[slot]
    }

    /// The slot holding `id`.
    pub(crate) fn slot(&self, id: NodeId) -> Option<usize> {
        let members = &self.members;
        self.by_id
            .find(self.hasher.hash_one(id), |&s| members[s as usize].id == id)
            .map(|&s| s as usize)
    }

    /// The member `id`.
    pub(crate) fn get(&self, id: NodeId) -> Option<&Member> {
        self.slot(id).map(|s| &self.members[s])
    }

    /// The member `id`, to change anything but its id and address (see [`Self::set_addr`]).
    pub(crate) fn get_mut(&mut self, id: NodeId) -> Option<&mut Member> {
        self.slot(id).map(|s| &mut self.members[s])
    }

    /// The member that claimed `addr` last.
    pub(crate) fn holder(&self, addr: &SocketAddr) -> Option<&Member> {
        let members = &self.members;
        self.by_addr
            .find(self.hasher.hash_one(addr), |&s| {
                members[s as usize].addr == *addr
            })
            .map(|&s| &members[s as usize])
    }

    /// Adds a member whose id is not in the table; it becomes its address's holder.
    ///
    /// # Panics
    /// If the table already holds `u32::MAX` members (the member count is bounded far below
    /// that by what push-pull and gossip can deliver).
    pub(crate) fn insert(&mut self, member: Member) {
        debug_assert!(self.slot(member.id).is_none(), "member inserted twice");
        let slot = u32::try_from(self.members.len()).expect("fewer than 2^32 members");
        let (id_hash, addr_hash) = (
            self.hasher.hash_one(member.id),
            self.hasher.hash_one(member.addr),
        );
        self.members.push(member);
        let Self {
            members,
            by_id,
            by_addr,
            hasher,
        } = self;
        by_id.insert_unique(id_hash, slot, |&s| hasher.hash_one(members[s as usize].id));
        Self::claim(members, by_addr, hasher, addr_hash, slot);
    }

    /// Moves member `id` to `addr`, which it now holds.
    pub(crate) fn set_addr(&mut self, id: NodeId, addr: SocketAddr) {
        let Some(slot) = self.slot(id) else {
            return;
        };
        let old = self.members[slot].addr;
        if old == addr {
            return;
        }
        self.release(slot as u32, &old);
        self.members[slot].addr = addr;
        let Self {
            members,
            by_addr,
            hasher,
            ..
        } = self;
        Self::claim(members, by_addr, hasher, hasher.hash_one(addr), slot as u32);
    }

    /// Removes member `id` and returns it. The last member moves into its slot.
    pub(crate) fn remove(&mut self, id: NodeId) -> Option<Member> {
        let slot = self.slot(id)?;
        let addr = self.members[slot].addr;
        self.release(slot as u32, &addr);
        let members = &self.members;
        if let Ok(entry) = self
            .by_id
            .find_entry(self.hasher.hash_one(id), |&s| members[s as usize].id == id)
        {
            entry.remove();
        }
        let last = self.members.len() - 1;
        if slot != last {
            // The last member moves into `slot`: point its index entries there.
            let moved = &self.members[last];
            let (moved_id, moved_addr) = (moved.id, moved.addr);
            let last = last as u32;
            if let Some(s) = self
                .by_id
                .find_mut(self.hasher.hash_one(moved_id), |&s| s == last)
            {
                *s = slot as u32;
            }
            if let Some(s) = self
                .by_addr
                .find_mut(self.hasher.hash_one(moved_addr), |&s| s == last)
            {
                *s = slot as u32;
            }
        }
        Some(self.members.swap_remove(slot))
    }

    /// Makes `slot` the holder of its address, replacing any earlier holder.
    fn claim(
        members: &[Member],
        by_addr: &mut HashTable<u32>,
        hasher: &FixedState,
        addr_hash: u64,
        slot: u32,
    ) {
        let addr = members[slot as usize].addr;
        match by_addr.find_mut(addr_hash, |&s| members[s as usize].addr == addr) {
            Some(holder) => *holder = slot,
            None => {
                by_addr.insert_unique(addr_hash, slot, |&s| {
                    hasher.hash_one(members[s as usize].addr)
                });
            }
        }
    }

    /// Drops `addr`'s index entry if `slot` holds it.
    fn release(&mut self, slot: u32, addr: &SocketAddr) {
        if let Ok(entry) = self
            .by_addr
            .find_entry(self.hasher.hash_one(addr), |&s| s == slot)
        {
            entry.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::MemberState;
    use shoal_core::Instant;

    fn member(id: u64, port: u16) -> Member {
        Member {
            id: NodeId::new(id),
            addr: SocketAddr::from(([10, 0, 0, 1], port)),
            incarnation: 0,
            state: MemberState::Alive,
            meta: Vec::new(),
            state_changed: Instant::ZERO,
        }
    }

    fn check(table: &MemberTable) {
        for (slot, m) in table.as_slice().iter().enumerate() {
            assert_eq!(table.slot(m.id), Some(slot), "id index of {}", m.id);
        }
        assert_eq!(table.by_id.len(), table.len());
    }

    #[test]
    fn insert_find_remove_keep_both_indexes_right() {
        let mut table = MemberTable::new(7);
        for i in 1..=100 {
            table.insert(member(i, 1000 + i as u16));
        }
        check(&table);
        for i in (1..=100).step_by(3) {
            assert_eq!(table.remove(NodeId::new(i)).map(|m| m.id.get()), Some(i));
        }
        check(&table);
        assert!(table.get(NodeId::new(1)).is_none());
        assert!(table.remove(NodeId::new(1)).is_none());
        for i in 1..=100u64 {
            let addr = SocketAddr::from(([10, 0, 0, 1], 1000 + i as u16));
            let expected = (i % 3 != 1).then_some(i);
            assert_eq!(table.holder(&addr).map(|m| m.id.get()), expected, "{addr}");
        }
    }

    #[test]
    fn the_latest_claim_holds_an_address() {
        let mut table = MemberTable::new(1);
        table.insert(member(1, 5));
        table.insert(member(2, 5));
        let addr = SocketAddr::from(([10, 0, 0, 1], 5));
        assert_eq!(table.holder(&addr).map(|m| m.id.get()), Some(2));
        // Moving member 2 away leaves the address unheld (member 1 is not re-indexed, as
        // with a map that was overwritten).
        table.set_addr(NodeId::new(2), SocketAddr::from(([10, 0, 0, 1], 6)));
        assert!(table.holder(&addr).is_none());
        table.set_addr(NodeId::new(1), SocketAddr::from(([10, 0, 0, 1], 7)));
        assert_eq!(
            table
                .holder(&SocketAddr::from(([10, 0, 0, 1], 7)))
                .map(|m| m.id.get()),
            Some(1)
        );
        // Removing a member that does not hold its address leaves the holder alone.
        table.insert(member(3, 7));
        table.remove(NodeId::new(1));
        assert_eq!(
            table
                .holder(&SocketAddr::from(([10, 0, 0, 1], 7)))
                .map(|m| m.id.get()),
            Some(3)
        );
        check(&table);
    }
}
