//! Who the members of a context are, as of a transaction's causal past. A transaction is
//! valid only if its author was a member there, and every correct node decides that the
//! same way because it looks at nothing but the transaction's ancestors (Kleppmann,
//! "Making CRDTs Byzantine Fault Tolerant"): an author cannot be let in by one node and
//! shut out by another, whatever order the transactions arrived in.
//!
//! Membership changes (genesis, invite, remove, leave) are rare, so each transaction
//! carries only its *frontier*: the latest membership changes in its causal past (usually
//! one). Each change is stored with every change before it. The members as of a
//! transaction are those changes applied in order of (height, id), which is the order in
//! which every node applies the whole DAG.

use std::collections::{BTreeMap, BTreeSet};

use cmesh_common::Address;
use serde::{Deserialize, Serialize};

use crate::ids::{address_bytes, Id};
use crate::tx::{Op, TxBody};

/// One membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// `member` joins with `seats` seats, or now holds `seats`.
    Seat {
        #[serde(with = "address_bytes")]
        member: Address,
        seats: u32,
    },
    /// `member` stops being a member.
    Unseat {
        #[serde(with = "address_bytes")]
        member: Address,
    },
}

impl Change {
    /// The membership change a transaction makes, if any.
    pub fn of(body: &TxBody) -> Option<Change> {
        match &body.op {
            Op::Create { .. } => Some(Change::Seat {
                member: body.author,
                seats: 1,
            }),
            Op::Invite { member, seats } => Some(Change::Seat {
                member: *member,
                seats: *seats,
            }),
            Op::Remove { member } => Some(Change::Unseat { member: *member }),
            Op::Leave => Some(Change::Unseat { member: body.author }),
            Op::Call { .. } | Op::Grant { .. } | Op::Revoke { .. } => None,
        }
    }
}

/// A stored membership change: where it sorts, and every change in its causal past.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub height: u64,
    pub change: Change,
    pub earlier: Vec<Id>,
}

/// Members and their seats.
pub type Members = BTreeMap<Address, u32>;

/// Errors reading change records (a record that should exist and does not is corrupt
/// state, not bad input).
pub trait ChangeSource {
    type Error;
    fn change(&self, id: &Id) -> Result<ChangeRecord, Self::Error>;
}

/// The frontier of a transaction with these parents: `candidates` are the parents'
/// frontiers together with the parents that are themselves changes. A candidate that is
/// in another's causal past is not in the frontier.
pub fn frontier<S: ChangeSource>(source: &S, candidates: BTreeSet<Id>) -> Result<Vec<Id>, S::Error> {
    if candidates.len() <= 1 {
        return Ok(candidates.into_iter().collect());
    }
    let mut covered = BTreeSet::new();
    for candidate in &candidates {
        covered.extend(source.change(candidate)?.earlier);
    }
    Ok(candidates.into_iter().filter(|c| !covered.contains(c)).collect())
}

/// Every change in a frontier's causal past, the frontier included.
pub fn changes_before<S: ChangeSource>(source: &S, frontier: &[Id]) -> Result<BTreeSet<Id>, S::Error> {
    let mut all: BTreeSet<Id> = frontier.iter().copied().collect();
    for id in frontier {
        all.extend(source.change(id)?.earlier);
    }
    Ok(all)
}

/// The members as of a frontier: its changes applied in (height, id) order.
pub fn members<S: ChangeSource>(source: &S, frontier: &[Id]) -> Result<Members, S::Error> {
    let mut changes = Vec::new();
    for id in changes_before(source, frontier)? {
        let record = source.change(&id)?;
        changes.push((record.height, id, record.change));
    }
    changes.sort_by_key(|(height, id, _)| (*height, *id));
    let mut members = Members::new();
    for (_, _, change) in changes {
        match change {
            Change::Seat { member, seats } => {
                members.insert(member, seats);
            }
            Change::Unseat { member } => {
                members.remove(&member);
            }
        }
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::convert::Infallible;

    use super::*;

    #[derive(Default)]
    struct Changes(HashMap<Id, ChangeRecord>);

    impl ChangeSource for Changes {
        type Error = Infallible;
        fn change(&self, id: &Id) -> Result<ChangeRecord, Infallible> {
            Ok(self.0.get(id).cloned().expect("a known change"))
        }
    }

    impl Changes {
        fn add(&mut self, id: u8, height: u64, change: Change, frontier: &[Id]) -> Id {
            let earlier = changes_before(self, frontier).expect("known").into_iter().collect();
            let id = Id([id; 32]);
            self.0.insert(
                id,
                ChangeRecord {
                    height,
                    change,
                    earlier,
                },
            );
            id
        }
    }

    fn node(n: u8) -> Address {
        Address([n; 20])
    }

    fn seat(n: u8) -> Change {
        Change::Seat {
            member: node(n),
            seats: 1,
        }
    }

    #[test]
    fn members_follow_the_changes_in_the_causal_past_only() {
        let mut changes = Changes::default();
        let genesis = changes.add(1, 1, seat(1), &[]);
        let invite_b = changes.add(2, 2, seat(2), &[genesis]);
        // Concurrent with the invite of B: A invites C.
        let invite_c = changes.add(3, 2, seat(3), &[genesis]);
        let both = frontier(&changes, [invite_b, invite_c].into()).expect("frontier");
        assert_eq!(
            both,
            vec![invite_b, invite_c],
            "concurrent changes are both in the frontier"
        );
        let members_both = members(&changes, &both).expect("members");
        assert_eq!(
            members_both.keys().copied().collect::<Vec<_>>(),
            vec![node(1), node(2), node(3)]
        );
        // Only what a transaction descends from counts.
        let only_b = members(&changes, &[invite_b]).expect("members");
        assert!(!only_b.contains_key(&node(3)));
        // A later change covers the ones before it.
        let remove_b = changes.add(
            4,
            3,
            Change::Unseat { member: node(2) },
            &frontier(&changes, [invite_b, invite_c].into()).expect("frontier"),
        );
        let after = frontier(&changes, [remove_b, invite_b, invite_c].into()).expect("frontier");
        assert_eq!(after, vec![remove_b]);
        let members_after = members(&changes, &after).expect("members");
        assert_eq!(
            members_after.keys().copied().collect::<Vec<_>>(),
            vec![node(1), node(3)]
        );
    }

    #[test]
    fn concurrent_changes_of_one_member_resolve_by_height_then_id() {
        let mut changes = Changes::default();
        let genesis = changes.add(1, 1, seat(1), &[]);
        let invite = changes.add(5, 2, seat(2), &[genesis]);
        // Two concurrent changes of node 2 at the same height: the higher id wins.
        let more_seats = changes.add(
            9,
            3,
            Change::Seat {
                member: node(2),
                seats: 4,
            },
            &[invite],
        );
        let unseat = changes.add(7, 3, Change::Unseat { member: node(2) }, &[invite]);
        let merged = frontier(&changes, [more_seats, unseat].into()).expect("frontier");
        assert_eq!(members(&changes, &merged).expect("members").get(&node(2)), Some(&4));
    }
}
