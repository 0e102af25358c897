//! The mesh registry: the state machine every replica applies the Raft log to.
//!
//! Why pure: it is a function of the genesis and the entries, nothing else. No clock, no
//! randomness, no local configuration: time comes from the entry, the name rules from
//! the genesis. So replicas that applied the same log hold equal registries, and a
//! snapshot restored anywhere goes on exactly as the original would.

use std::collections::{BTreeMap, BTreeSet};

use cmesh_common::genesis::{Genesis, MeshId};
use cmesh_common::method::{check_attribute, ADMIN_ATTRIBUTE};
use cmesh_common::rpc::RequestProof;
use cmesh_common::{Address, CmtpError, Method};
use cmesh_registrar::{check_target, NameChange, NamePolicy, NameRecord, RegistrarError, TldConfigError};
use serde::{Deserialize, Serialize};

use crate::command::{Command, Role};
use crate::entry::{EntryBody, EntryId, SignedEntry};
use crate::error::{EntryFault, Refusal};

/// How long an applied entry id is remembered, in the registry's clock (entry times). An
/// entry older than this behind the clock is stale, so a replay cannot outlive the memory.
pub const REPLAY_WINDOW_MS: u64 = 10 * 60 * 1000;

/// What an accepted command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Outcome {
    /// A node's role after the command; `None` once removed.
    Node { node: Address, role: Option<Role> },
    /// A name's record (as it was, for a release) and the change to publish.
    Name { record: NameRecord, change: NameChange },
    /// An identity's mesh-wide attributes afterwards.
    Attributes { address: Address, attributes: Vec<String> },
}

/// The result of applying one entry. Only `Done` changed the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Done(Outcome),
    /// The rules refused the command: the client's error.
    Refused(CmtpError),
    /// The entry does not count: a no-op on every replica, reported.
    Ignored(EntryFault),
}

/// Everything replicated, as it goes into a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RegistryState {
    mesh: MeshId,
    admins: BTreeSet<Address>,
    tlds: Vec<String>,
    nodes: BTreeMap<Address, Role>,
    names: BTreeMap<String, NameRecord>,
    grants: BTreeMap<Address, BTreeSet<String>>,
    /// Ids applied within [`REPLAY_WINDOW_MS`] of `clock_ms`, with their times.
    recent: BTreeMap<EntryId, u64>,
    /// The latest entry time applied.
    clock_ms: u64,
}

/// The registry of one mesh.
#[derive(Debug, Clone)]
pub struct Registry {
    state: RegistryState,
    policy: NamePolicy,
    /// `state.recent` ordered by time, so that expired ids leave without a scan.
    expiry: BTreeSet<(u64, EntryId)>,
}

/// A snapshot that cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the registry snapshot does not decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("the registry snapshot holds an unusable TLD list: {0}")]
    Tlds(#[from] TldConfigError),
}

impl PartialEq for Registry {
    fn eq(&self, other: &Self) -> bool {
        self.state == other.state
    }
}

impl Registry {
    /// The registry before the first entry: the genesis voters admitted as voters.
    pub fn from_genesis(genesis: &Genesis) -> Result<Self, TldConfigError> {
        let policy = NamePolicy::new(genesis.tlds.clone())?;
        let state = RegistryState {
            mesh: genesis.mesh_id(),
            admins: genesis.admins.iter().copied().collect(),
            tlds: genesis.tlds.clone(),
            nodes: genesis.voters.iter().map(|voter| (*voter, Role::Voter)).collect(),
            names: BTreeMap::new(),
            grants: BTreeMap::new(),
            recent: BTreeMap::new(),
            clock_ms: 0,
        };
        Ok(Registry {
            state,
            policy,
            expiry: BTreeSet::new(),
        })
    }

    pub fn mesh(&self) -> MeshId {
        self.state.mesh
    }

    /// The admitted nodes and their roles.
    pub fn nodes(&self) -> &BTreeMap<Address, Role> {
        &self.state.nodes
    }

    pub fn role(&self, node: &Address) -> Option<Role> {
        self.state.nodes.get(node).copied()
    }

    pub fn resolve(&self, name: &str) -> Result<&NameRecord, CmtpError> {
        let name = self.policy.normalize(name).map_err(RegistrarError::from)?;
        self.state
            .names
            .get(&name)
            .ok_or_else(|| RegistrarError::NotFound { name }.into())
    }

    pub fn names(&self) -> impl Iterator<Item = &NameRecord> {
        self.state.names.values()
    }

    /// An identity's mesh-wide attributes, sorted: those granted, and [`ADMIN_ATTRIBUTE`]
    /// for a genesis admin.
    pub fn attributes(&self, address: &Address) -> Vec<String> {
        let mut attributes: Vec<String> = self
            .state
            .grants
            .get(address)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        if self.state.admins.contains(address) && !attributes.iter().any(|a| a == ADMIN_ATTRIBUTE) {
            attributes.push(ADMIN_ATTRIBUTE.to_string());
            attributes.sort();
        }
        attributes
    }

    /// Every identity that holds a mesh-wide attribute (granted, or a genesis admin's).
    pub fn attribute_holders(&self) -> impl Iterator<Item = Address> + '_ {
        let granted: BTreeSet<Address> = self
            .state
            .grants
            .keys()
            .chain(self.state.admins.iter())
            .copied()
            .collect();
        granted.into_iter()
    }

    /// A genesis admin, or granted [`ADMIN_ATTRIBUTE`] mesh-wide.
    pub fn is_admin(&self, address: &Address) -> bool {
        self.state.admins.contains(address)
            || self
                .state
                .grants
                .get(address)
                .is_some_and(|set| set.contains(ADMIN_ATTRIBUTE))
    }

    /// The replicated state as bytes (MessagePack), for a Raft snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(&self.state).unwrap_or_default()
    }

    /// The registry a [`Registry::snapshot`] was taken of.
    pub fn restore(bytes: &[u8]) -> Result<Self, RestoreError> {
        let state: RegistryState = rmp_serde::from_slice(bytes)?;
        let policy = NamePolicy::new(state.tlds.clone())?;
        let expiry = state.recent.iter().map(|(id, time)| (*time, *id)).collect();
        Ok(Registry { state, policy, expiry })
    }

    /// Applies one log entry: checks that it counts, then runs its commands in order, one
    /// result each.
    pub fn apply(&mut self, entry: &SignedEntry) -> Vec<Applied> {
        if let Err(fault) = self.check_proposer(entry) {
            tracing::warn!(proposer = %entry.proposer, %fault, "registry entry ignored");
            return vec![Applied::Ignored(fault); entry.bodies.len()];
        }
        entry
            .bodies
            .iter()
            .map(|body| self.apply_body(entry.proposer, body))
            .collect()
    }

    fn apply_body(&mut self, proposer: Address, body: &EntryBody) -> Applied {
        if let Err(fault) = self.check_body(body) {
            tracing::warn!(%proposer, %fault, "registry command ignored");
            return Applied::Ignored(fault);
        }
        self.state.clock_ms = self.state.clock_ms.max(body.time_ms);
        let horizon = self.state.clock_ms.saturating_sub(REPLAY_WINDOW_MS);
        while let Some(&(time, id)) = self.expiry.first() {
            if time >= horizon {
                break;
            }
            self.expiry.pop_first();
            self.state.recent.remove(&id);
        }
        self.state.recent.insert(body.id, body.time_ms);
        self.expiry.insert((body.time_ms, body.id));
        match self.run(&body.command, body.caller, body.time_ms) {
            Ok(outcome) => Applied::Done(outcome),
            Err(error) => Applied::Refused(error),
        }
    }

    /// The entry is signed by its proposer, an admitted node.
    fn check_proposer(&self, entry: &SignedEntry) -> Result<(), EntryFault> {
        if !entry.signature_holds() {
            return Err(EntryFault::BadSignature {
                proposer: entry.proposer,
            });
        }
        if !self.state.nodes.contains_key(&entry.proposer) {
            return Err(EntryFault::NotAdmitted {
                proposer: entry.proposer,
            });
        }
        Ok(())
    }

    /// The command is for this mesh, new and recent, and its client proof (if any) holds.
    fn check_body(&self, body: &EntryBody) -> Result<(), EntryFault> {
        if body.mesh != self.state.mesh {
            return Err(EntryFault::OtherMesh {
                found: body.mesh,
                expected: self.state.mesh,
            });
        }
        if let Some(proof) = &body.proof {
            check_client_proof(body, proof).map_err(|reason| EntryFault::ClientProof { reason })?;
        }
        if self.state.recent.contains_key(&body.id) {
            return Err(EntryFault::Replayed);
        }
        let age_ms = self.state.clock_ms.saturating_sub(body.time_ms);
        if age_ms > REPLAY_WINDOW_MS {
            return Err(EntryFault::Stale { age_ms });
        }
        Ok(())
    }

    fn run(&mut self, command: &Command, caller: Address, now_ms: u64) -> Result<Outcome, CmtpError> {
        match command {
            Command::Admit { node, role } => {
                self.require_admin(caller, "admit nodes")?;
                if *role != Role::Voter && self.is_last_voter(node) {
                    return Err(Refusal::LastVoter { node: *node }.into());
                }
                self.state.nodes.insert(*node, *role);
                Ok(Outcome::Node {
                    node: *node,
                    role: Some(*role),
                })
            }
            Command::Remove { node } => {
                self.require_admin(caller, "remove nodes")?;
                if !self.state.nodes.contains_key(node) {
                    return Err(Refusal::UnknownNode { node: *node }.into());
                }
                if self.is_last_voter(node) {
                    return Err(Refusal::LastVoter { node: *node }.into());
                }
                self.state.nodes.remove(node);
                Ok(Outcome::Node {
                    node: *node,
                    role: None,
                })
            }
            Command::Register { name, target } => self.register(caller, name, target, now_ms),
            Command::Transfer { name, to } => self.transfer(caller, name, *to, now_ms),
            Command::Release { name } => self.release(caller, name),
            Command::Grant { address, attribute } => {
                self.require_admin(caller, "grant mesh-wide attributes")?;
                check_attribute(attribute)?;
                self.state.grants.entry(*address).or_default().insert(attribute.clone());
                Ok(self.attributes_of(*address))
            }
            Command::Revoke { address, attribute } => {
                self.require_admin(caller, "revoke mesh-wide attributes")?;
                check_attribute(attribute)?;
                if attribute == ADMIN_ATTRIBUTE && self.state.admins.contains(address) {
                    return Err(Refusal::GenesisAdmin { address: *address }.into());
                }
                if let Some(set) = self.state.grants.get_mut(address) {
                    set.remove(attribute);
                    if set.is_empty() {
                        self.state.grants.remove(address);
                    }
                }
                Ok(self.attributes_of(*address))
            }
        }
    }

    fn register(&mut self, caller: Address, name: &str, target: &str, now_ms: u64) -> Result<Outcome, CmtpError> {
        let name = self.policy.normalize(name).map_err(RegistrarError::from)?;
        check_target(target).map_err(RegistrarError::from)?;
        if let Some(existing) = self.state.names.get(&name) {
            return Err(RegistrarError::Taken {
                name,
                owner: existing.owner,
            }
            .into());
        }
        let record = NameRecord::registered(name.clone(), caller, target, now_ms);
        self.state.names.insert(name, record.clone());
        let change = NameChange::registered(&record);
        Ok(Outcome::Name { record, change })
    }

    fn transfer(&mut self, caller: Address, name: &str, to: Address, now_ms: u64) -> Result<Outcome, CmtpError> {
        let name = self.owned_by(caller, name, "transfer")?;
        let record = self
            .state
            .names
            .get_mut(&name)
            .ok_or_else(|| RegistrarError::NotFound { name })?;
        if record.owner != to {
            record.owner = to;
            record.updated_at = now_ms.max(record.registered_at);
        }
        let record = record.clone();
        let change = NameChange::transferred(&record, caller);
        Ok(Outcome::Name { record, change })
    }

    fn release(&mut self, caller: Address, name: &str) -> Result<Outcome, CmtpError> {
        let name = self.owned_by(caller, name, "release")?;
        let record = self
            .state
            .names
            .remove(&name)
            .ok_or_else(|| RegistrarError::NotFound { name })?;
        let change = NameChange::released(&record);
        Ok(Outcome::Name { record, change })
    }

    /// The normalised name, if `caller` owns it.
    fn owned_by(&self, caller: Address, name: &str, action: &'static str) -> Result<String, CmtpError> {
        let name = self.policy.normalize(name).map_err(RegistrarError::from)?;
        let record = self
            .state
            .names
            .get(&name)
            .ok_or_else(|| RegistrarError::NotFound { name: name.clone() })?;
        record.check_owner(caller, action)?;
        Ok(name)
    }

    fn require_admin(&self, caller: Address, action: &'static str) -> Result<(), Refusal> {
        if self.is_admin(&caller) {
            Ok(())
        } else {
            Err(Refusal::NotAdmin { caller, action })
        }
    }

    fn is_last_voter(&self, node: &Address) -> bool {
        self.state.nodes.get(node) == Some(&Role::Voter)
            && self.state.nodes.values().filter(|role| **role == Role::Voter).count() == 1
    }

    fn attributes_of(&self, address: Address) -> Outcome {
        Outcome::Attributes {
            address,
            attributes: self.attributes(&address),
        }
    }
}

/// The caller signed a request for exactly this command, and the body's id is the
/// request's.
fn check_client_proof(body: &EntryBody, proof: &RequestProof) -> Result<(), String> {
    let signer = proof
        .signer()
        .map_err(|e| format!("the signature of the request does not recover: {e}"))?;
    if signer != body.caller {
        return Err(format!(
            "the request is signed by {signer}, not by the caller {}",
            body.caller
        ));
    }
    if body.id != EntryId::of_proof(proof) {
        return Err("the entry's id is not the signed request's".to_string());
    }
    let (method, params) = proof
        .call()
        .ok_or_else(|| "the signed bytes are no JSON-RPC request".to_string())?;
    let asked = method
        .parse::<Method>()
        .ok()
        .and_then(|method| Command::of_call(method, &params))
        .and_then(Result::ok);
    if asked.as_ref() != Some(&body.command) {
        return Err(format!("the signed request (`{method}`) does not ask for this command"));
    }
    Ok(())
}
