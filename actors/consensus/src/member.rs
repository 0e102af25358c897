//! A `member` holds no replica of the registry: it asks a replica (a voter or a learner)
//! to run its reads, sends its writes to the leader, and keeps a view of whom to trust.
//!
//! Why a view: a member still decides on every request whether a peer is admitted and
//! what attributes a caller holds. It keeps the latest [`Trust`] that a majority of the
//! voters it knows gave alike, asked again every `member_refresh`, and the leader they
//! named, for its writes. A reply counts only if the voter asked signed it (the requester
//! checks), and only voters of the view (or, before the first answer, the genesis
//! voters) are asked.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};

use cmesh_common::Address;

use crate::command::Role;
use crate::query::Trust;

#[derive(Debug, Default)]
pub struct MemberView {
    trust: RwLock<Option<Trust>>,
    leader: RwLock<Option<Address>>,
}

impl MemberView {
    /// Takes a replica's answer; true when the admitted nodes changed.
    pub fn learn(&self, trust: Trust) -> bool {
        let mut held = self.trust.write().unwrap_or_else(PoisonError::into_inner);
        let changed = held.as_ref().is_none_or(|old| old.nodes != trust.nodes);
        *held = Some(trust);
        changed
    }

    /// Drops `node` from the admitted nodes; true if it was there.
    pub fn forget(&self, node: &Address) -> bool {
        let mut held = self.trust.write().unwrap_or_else(PoisonError::into_inner);
        held.as_mut().is_some_and(|trust| trust.nodes.remove(node).is_some())
    }

    pub fn learn_leader(&self, leader: Option<Address>) {
        if leader.is_some() {
            *self.leader.write().unwrap_or_else(PoisonError::into_inner) = leader;
        }
    }

    /// The leader the last replica named.
    pub fn leader(&self) -> Option<Address> {
        *self.leader.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The admitted nodes, once a replica said.
    pub fn nodes(&self) -> Option<BTreeMap<Address, Role>> {
        self.read(|trust| trust.nodes.clone())
    }

    pub fn role(&self, node: &Address) -> Option<Role> {
        self.read(|trust| trust.nodes.get(node).copied()).flatten()
    }

    /// An identity's mesh-wide attributes (none before a replica said).
    pub fn attributes(&self, address: &Address) -> Vec<String> {
        self.read(|trust| trust.attributes.get(address).cloned())
            .flatten()
            .unwrap_or_default()
    }

    /// The replicas to ask, the leader first: of the view, else of `fallback` (this
    /// node's own registry, the genesis's at least).
    pub fn replicas(&self, fallback: &BTreeMap<Address, Role>) -> Vec<Address> {
        let mut replicas = self.having(fallback, |role| role != Role::Member);
        if let Some(leader) = self.leader() {
            if let Some(at) = replicas.iter().position(|node| *node == leader) {
                replicas.swap(0, at);
            }
        }
        replicas
    }

    /// The voters: of the view, else of `fallback`.
    pub fn voters(&self, fallback: &BTreeMap<Address, Role>) -> Vec<Address> {
        self.having(fallback, |role| role == Role::Voter)
    }

    /// The nodes whose role `keeps`: of the view, else of `fallback`.
    fn having(&self, fallback: &BTreeMap<Address, Role>, keeps: impl Fn(Role) -> bool) -> Vec<Address> {
        let of = |nodes: &BTreeMap<Address, Role>| -> Vec<Address> {
            nodes
                .iter()
                .filter(|(_, role)| keeps(**role))
                .map(|(node, _)| *node)
                .collect()
        };
        self.read(|trust| of(&trust.nodes)).unwrap_or_else(|| of(fallback))
    }

    fn read<T>(&self, get: impl FnOnce(&Trust) -> T) -> Option<T> {
        self.trust
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_asks_its_replicas_leader_first_and_knows_roles_and_attributes() {
        let (a, b, c, m) = (Address([1; 20]), Address([2; 20]), Address([3; 20]), Address([4; 20]));
        let view = MemberView::default();
        let genesis = BTreeMap::from([(a, Role::Voter), (b, Role::Voter)]);
        assert_eq!(
            view.replicas(&genesis),
            vec![a, b],
            "before any answer: the genesis voters"
        );
        assert!(view.attributes(&m).is_empty());

        let trust = Trust {
            nodes: BTreeMap::from([
                (a, Role::Voter),
                (b, Role::Voter),
                (c, Role::Learner),
                (m, Role::Member),
            ]),
            attributes: BTreeMap::from([(m, vec!["team=blue".to_string()])]),
        };
        assert!(view.learn(trust.clone()));
        assert!(!view.learn(trust), "the same nodes again are no change");
        view.learn_leader(Some(c));
        view.learn_leader(None);
        assert_eq!(view.leader(), Some(c), "a replica that knows no leader changes nothing");
        assert_eq!(view.replicas(&genesis), vec![c, b, a], "members are no replicas");
        assert_eq!(view.role(&m), Some(Role::Member));
        assert_eq!(view.attributes(&m), vec!["team=blue"]);
        assert!(view.forget(&m));
        assert!(!view.forget(&m));
        assert_eq!(view.role(&m), None);
    }
}
