//! The registry as a state machine: who may change what, which entries do not count, and
//! (property) that a snapshot restored anywhere goes on exactly as the original.

use cmesh_common::genesis::Genesis;
use cmesh_common::rpc::RequestProof;
use cmesh_common::{Address, SigningKey, Status};
use cmesh_consensus::{
    Applied, Command, EntryBody, EntryFault, EntryId, Outcome, Registry, Role, SignedEntry, REPLAY_WINDOW_MS,
};
use proptest::prelude::*;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes([seed; 32]).expect("a valid secret key")
}

/// Keys 1 (admin), 2 and 3 (genesis voters), 4..=6 (clients or later nodes).
fn genesis() -> Genesis {
    Genesis::new("test", vec![key(1).address()], vec![key(2).address(), key(3).address()]).unwrap()
}

fn registry() -> Registry {
    Registry::from_genesis(&genesis()).unwrap()
}

struct Proposal {
    proposer: u8,
    caller: Address,
    time_ms: u64,
    id: u8,
}

trait ApplyOne {
    /// Applies an entry of one command and gives its one result.
    fn apply_one(&mut self, entry: &cmesh_consensus::SignedEntry) -> Applied;
}

impl ApplyOne for Registry {
    fn apply_one(&mut self, entry: &cmesh_consensus::SignedEntry) -> Applied {
        let mut results = self.apply(entry);
        assert_eq!(results.len(), 1, "one result per command");
        results.remove(0)
    }
}

fn entry(registry: &Registry, proposal: &Proposal, command: Command) -> cmesh_consensus::SignedEntry {
    EntryBody {
        mesh: registry.mesh(),
        command,
        caller: proposal.caller,
        time_ms: proposal.time_ms,
        id: EntryId([proposal.id; 16]),
        proof: None,
    }
    .sign(&key(proposal.proposer))
}

fn by(caller: u8, id: u8) -> Proposal {
    Proposal {
        proposer: 2,
        caller: key(caller).address(),
        time_ms: 1_000 + u64::from(id),
        id,
    }
}

fn refused_status(applied: &Applied) -> Status {
    match applied {
        Applied::Refused(error) => error.status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn commands_signed_together_each_get_their_own_result() {
    let mut registry = registry();
    let mesh = registry.mesh();
    let body = |id: u8, name: &str| EntryBody {
        mesh,
        command: Command::Register {
            name: name.into(),
            target: "I:whoami".into(),
        },
        caller: key(4).address(),
        time_ms: 1_000,
        id: EntryId([id; 16]),
        proof: None,
    };
    let first = SignedEntry::sign(vec![body(1, "a.mcom"), body(2, "b.mcom")], &key(2));
    // The same name twice and an id used before, next to a good command.
    let second = SignedEntry::sign(vec![body(3, "a.mcom"), body(1, "c.mcom"), body(4, "d.mcom")], &key(2));
    let results = registry.apply(&first);
    assert!(results.iter().all(|r| matches!(r, Applied::Done(_))), "{results:?}");
    let results = registry.apply(&second);
    assert!(
        matches!(&results[0], Applied::Refused(e) if e.status == Status::CONFLICT),
        "{results:?}"
    );
    assert_eq!(results[1], Applied::Ignored(EntryFault::Replayed));
    assert!(matches!(results[2], Applied::Done(_)));
    let names: Vec<_> = registry.names().map(|r| r.name.clone()).collect();
    assert_eq!(names, ["a.mcom", "b.mcom", "d.mcom"]);

    // One signature covers every body: change one, and none counts.
    let before = registry.clone();
    let mut tampered = SignedEntry::sign(vec![body(5, "e.mcom"), body(6, "f.mcom")], &key(2));
    tampered.bodies[1].caller = key(5).address();
    let results = registry.apply(&tampered);
    assert_eq!(results.len(), 2);
    assert!(results
        .iter()
        .all(|r| matches!(r, Applied::Ignored(EntryFault::BadSignature { .. }))));
    assert_eq!(registry, before);
}

#[test]
fn genesis_voters_are_admitted_and_only_admins_change_nodes() {
    let mut registry = registry();
    assert_eq!(registry.role(&key(2).address()), Some(Role::Voter));
    assert_eq!(registry.role(&key(4).address()), None);

    let admit = Command::Admit {
        node: key(4).address(),
        role: Role::Learner,
    };
    let by_stranger = registry.apply_one(&entry(&registry, &by(5, 1), admit.clone()));
    assert_eq!(refused_status(&by_stranger), Status::FORBIDDEN);
    assert_eq!(registry.role(&key(4).address()), None);

    let by_admin = registry.apply_one(&entry(&registry, &by(1, 2), admit));
    assert_eq!(
        by_admin,
        Applied::Done(Outcome::Node {
            node: key(4).address(),
            role: Some(Role::Learner)
        })
    );
    assert_eq!(registry.role(&key(4).address()), Some(Role::Learner));

    let remove = |node: u8| Command::Remove {
        node: key(node).address(),
    };
    assert!(matches!(
        registry.apply_one(&entry(&registry, &by(1, 3), remove(4))),
        Applied::Done(_)
    ));
    assert_eq!(registry.role(&key(4).address()), None);
    assert_eq!(
        refused_status(&registry.apply_one(&entry(&registry, &by(1, 4), remove(4)))),
        Status::NOT_FOUND
    );
    assert!(matches!(
        registry.apply_one(&entry(&registry, &by(1, 5), remove(3))),
        Applied::Done(_)
    ));
    // Node 2 is now the only voter: it can be neither removed nor demoted.
    assert_eq!(
        refused_status(&registry.apply_one(&entry(&registry, &by(1, 6), remove(2)))),
        Status::CONFLICT
    );
    let demote = Command::Admit {
        node: key(2).address(),
        role: Role::Member,
    };
    assert_eq!(
        refused_status(&registry.apply_one(&entry(&registry, &by(1, 7), demote))),
        Status::CONFLICT
    );
}

#[test]
fn entries_that_do_not_count_change_nothing() {
    let mut registry = registry();
    let register = Command::Register {
        name: "hello.mcom".into(),
        target: "I:whoami".into(),
    };
    let before = registry.clone();

    // A key the registry never admitted, signing correctly.
    let stranger = Proposal {
        proposer: 6,
        ..by(4, 1)
    };
    let applied = registry.apply_one(&entry(&registry, &stranger, register.clone()));
    assert_eq!(
        applied,
        Applied::Ignored(EntryFault::NotAdmitted {
            proposer: key(6).address()
        })
    );

    // An admitted node's entry with a signature that is not its own.
    let mut forged = entry(&registry, &by(4, 2), register.clone());
    forged.proposer = key(3).address();
    assert!(matches!(
        registry.apply_one(&forged),
        Applied::Ignored(EntryFault::BadSignature { .. })
    ));

    // A body changed after signing.
    let mut tampered = entry(&registry, &by(4, 3), register.clone());
    tampered.bodies[0].caller = key(5).address();
    assert!(matches!(
        registry.apply_one(&tampered),
        Applied::Ignored(EntryFault::BadSignature { .. })
    ));

    // Another mesh's entry.
    let other = Registry::from_genesis(&Genesis::new("other", vec![key(1).address()], vec![key(2).address()]).unwrap())
        .unwrap();
    let foreign = entry(&other, &by(4, 4), register.clone());
    assert!(matches!(
        registry.apply_one(&foreign),
        Applied::Ignored(EntryFault::OtherMesh { .. })
    ));
    assert_eq!(registry, before, "nothing that did not count changed the registry");

    // A good entry counts once; its replay is ignored, and so is one older than the window.
    let good = entry(&registry, &by(4, 5), register);
    assert!(matches!(registry.apply_one(&good), Applied::Done(Outcome::Name { .. })));
    let after = registry.clone();
    assert_eq!(registry.apply_one(&good), Applied::Ignored(EntryFault::Replayed));
    let late = Proposal {
        time_ms: 1_000 + REPLAY_WINDOW_MS + 10,
        ..by(4, 6)
    };
    let release = Command::Release {
        name: "hello.mcom".into(),
    };
    let stale = entry(&registry, &by(4, 7), release.clone());
    assert!(matches!(
        registry.apply_one(&entry(
            &registry,
            &late,
            Command::Register {
                name: "late.mcom".into(),
                target: "I:whoami".into()
            }
        )),
        Applied::Done(_)
    ));
    assert!(matches!(
        registry.apply_one(&stale),
        Applied::Ignored(EntryFault::Stale { .. })
    ));
    assert!(registry.resolve("hello.mcom").is_ok(), "the stale release did not run");
    assert_ne!(registry, after);
}

#[test]
fn names_keep_the_registrar_rules_and_statuses() {
    let mut registry = registry();
    let register = |name: &str| Command::Register {
        name: name.into(),
        target: "I:whoami".into(),
    };
    let applied = registry.apply_one(&entry(&registry, &by(4, 1), register("Hello.mcom")));
    let Applied::Done(Outcome::Name { record, change }) = applied else {
        panic!("register failed: {applied:?}");
    };
    assert_eq!(record.name, "hello.mcom");
    assert_eq!(record.owner, key(4).address());
    assert_eq!(
        record.registered_at, 1_001,
        "the time is the entry's, the same on every replica"
    );
    assert!(!change.is_noop());

    assert_eq!(
        refused_status(&registry.apply_one(&entry(&registry, &by(5, 2), register("hello.mcom")))),
        Status::CONFLICT
    );
    assert_eq!(
        refused_status(&registry.apply_one(&entry(&registry, &by(5, 3), register("bad name")))),
        Status::UNPROCESSABLE
    );
    let steal = Command::Transfer {
        name: "hello.mcom".into(),
        to: key(5).address(),
    };
    assert_eq!(
        refused_status(&registry.apply_one(&entry(&registry, &by(5, 4), steal.clone()))),
        Status::FORBIDDEN
    );
    assert!(matches!(
        registry.apply_one(&entry(&registry, &by(4, 5), steal)),
        Applied::Done(_)
    ));
    assert_eq!(registry.resolve("hello.mcom").unwrap().owner, key(5).address());
    let release = Command::Release {
        name: "hello.mcom".into(),
    };
    assert_eq!(
        refused_status(&registry.apply_one(&entry(&registry, &by(4, 6), release.clone()))),
        Status::FORBIDDEN
    );
    assert!(matches!(
        registry.apply_one(&entry(&registry, &by(5, 7), release.clone())),
        Applied::Done(_)
    ));
    assert_eq!(
        refused_status(&registry.apply_one(&entry(&registry, &by(5, 8), release))),
        Status::NOT_FOUND
    );
}

#[test]
fn mesh_grants_need_an_admin_and_a_granted_admin_is_one() {
    let mut registry = registry();
    let grant = |address: u8, attribute: &str| Command::Grant {
        address: key(address).address(),
        attribute: attribute.into(),
    };
    assert_eq!(
        refused_status(&registry.apply_one(&entry(&registry, &by(4, 1), grant(4, "role=admin")))),
        Status::FORBIDDEN
    );
    assert_eq!(
        refused_status(&registry.apply_one(&entry(&registry, &by(1, 2), grant(4, "no attribute")))),
        Status::UNPROCESSABLE
    );
    assert!(matches!(
        registry.apply_one(&entry(&registry, &by(1, 3), grant(4, "role=admin"))),
        Applied::Done(_)
    ));
    assert!(registry.is_admin(&key(4).address()));
    assert!(matches!(
        registry.apply_one(&entry(&registry, &by(4, 4), grant(5, "team=blue"))),
        Applied::Done(_)
    ));
    assert_eq!(registry.attributes(&key(5).address()), vec!["team=blue".to_string()]);
    let revoke = Command::Revoke {
        address: key(4).address(),
        attribute: "role=admin".into(),
    };
    assert!(matches!(
        registry.apply_one(&entry(&registry, &by(1, 5), revoke)),
        Applied::Done(_)
    ));
    assert!(!registry.is_admin(&key(4).address()));
    assert_eq!(
        refused_status(&registry.apply_one(&entry(&registry, &by(4, 6), grant(6, "team=red")))),
        Status::FORBIDDEN
    );
}

/// `client`'s Kami-signed JSON-RPC request (its signing bytes and signature).
fn signed_request(client: u8, method: &str, params: serde_json::Value) -> RequestProof {
    let request = serde_json::json!({
        "jsonrpc": "2.0", "method": method, "params": params, "id": "0x01", "nonce": 1,
    });
    let request = cmesh_common::jcs::signing_bytes(&request);
    RequestProof {
        signature: key(client).sign_personal(&request),
        request,
    }
}

#[test]
fn a_client_proof_must_be_the_callers_and_ask_for_the_command() {
    let mut registry = registry();
    let mesh = registry.mesh();
    let register = |name: &str| Command::Register {
        name: name.into(),
        target: "I:whoami".into(),
    };
    let proof = signed_request(
        4,
        "registrar.register",
        serde_json::json!({"name": "mine.mcom", "target": "I:whoami"}),
    );
    let body = |caller: u8, command: Command, id: EntryId, proof: RequestProof| EntryBody {
        mesh,
        command,
        caller: key(caller).address(),
        time_ms: 1_000,
        id,
        proof: Some(proof),
    };
    let before = registry.clone();
    let mut forged_signature = proof.clone();
    forged_signature.signature.0[10] ^= 1;
    let consensus_write = signed_request(
        4,
        "consensus.write",
        serde_json::json!({"body": "release:{\"name\":\"mine.mcom\"}"}),
    );
    let not_json = RequestProof {
        signature: key(4).sign_personal(b"register mine.mcom"),
        request: b"register mine.mcom".to_vec(),
    };
    let faults = [
        // The proposer names another caller than the one who signed.
        body(5, register("mine.mcom"), EntryId::of_proof(&proof), proof.clone()),
        // Another command than the one asked for.
        body(4, register("other.mcom"), EntryId::of_proof(&proof), proof.clone()),
        // The request's signature does not hold.
        body(
            4,
            register("mine.mcom"),
            EntryId::of_proof(&forged_signature),
            forged_signature,
        ),
        // An id of the proposer's choosing: the request could then be applied twice.
        body(4, register("mine.mcom"), EntryId([9; 16]), proof.clone()),
        // A signed request for another command (a release, through consensus.write).
        body(
            4,
            register("mine.mcom"),
            EntryId::of_proof(&consensus_write),
            consensus_write.clone(),
        ),
        // Signed bytes that are no request.
        body(4, register("mine.mcom"), EntryId::of_proof(&not_json), not_json),
    ];
    for fault in faults {
        let results = registry.apply(&SignedEntry::sign(vec![fault.clone()], &key(2)));
        assert!(
            matches!(&results[..], [Applied::Ignored(EntryFault::ClientProof { .. })]),
            "{fault:?}: {results:?}"
        );
    }
    assert_eq!(registry, before, "an entry whose client proof fails is a no-op");

    let good = SignedEntry::sign(
        vec![body(4, register("mine.mcom"), EntryId::of_proof(&proof), proof.clone())],
        &key(2),
    );
    assert!(matches!(
        &registry.apply(&good)[..],
        [Applied::Done(Outcome::Name { .. })]
    ));
    assert_eq!(registry.resolve("mine.mcom").unwrap().owner, key(4).address());
    // The same signed request again, in an entry of its own: the id gives it away.
    let again = SignedEntry::sign(
        vec![body(4, register("mine.mcom"), EntryId::of_proof(&proof), proof)],
        &key(3),
    );
    assert_eq!(registry.apply(&again), vec![Applied::Ignored(EntryFault::Replayed)]);
    // consensus.write bodies are checked as their command.
    let release = Command::Release {
        name: "mine.mcom".into(),
    };
    let by_body = SignedEntry::sign(
        vec![body(4, release, EntryId::of_proof(&consensus_write), consensus_write)],
        &key(2),
    );
    assert!(matches!(
        &registry.apply(&by_body)[..],
        [Applied::Done(Outcome::Name { .. })]
    ));
    assert!(registry.resolve("mine.mcom").is_err());
}

#[test]
fn genesis_admins_hold_role_admin_which_no_revoke_takes() {
    let mut registry = registry();
    assert_eq!(registry.attributes(&key(1).address()), vec!["role=admin".to_string()]);
    let revoke = Command::Revoke {
        address: key(1).address(),
        attribute: "role=admin".into(),
    };
    assert_eq!(
        refused_status(&registry.apply_one(&entry(&registry, &by(1, 1), revoke))),
        Status::CONFLICT
    );
    assert!(registry.is_admin(&key(1).address()));
}

/// A command from a small universe, so that sequences hit the same names and nodes.
fn command() -> impl Strategy<Value = Command> {
    let who = 1u8..=6;
    let name = prop::sample::select(vec!["a.mcom", "b.mcom", "c.mcom", "bad name"]);
    let role = prop::sample::select(vec![Role::Voter, Role::Learner, Role::Member]);
    let attribute = prop::sample::select(vec!["role=admin", "team=blue", "x"]);
    prop_oneof![
        (who.clone(), role).prop_map(|(n, role)| Command::Admit {
            node: key(n).address(),
            role
        }),
        who.clone().prop_map(|n| Command::Remove { node: key(n).address() }),
        name.clone().prop_map(|name| Command::Register {
            name: name.into(),
            target: "I:whoami".into()
        }),
        (name.clone(), who.clone()).prop_map(|(name, n)| Command::Transfer {
            name: name.into(),
            to: key(n).address()
        }),
        name.prop_map(|name| Command::Release { name: name.into() }),
        (who.clone(), attribute.clone()).prop_map(|(n, attribute)| Command::Grant {
            address: key(n).address(),
            attribute: attribute.into()
        }),
        (who, attribute).prop_map(|(n, attribute)| Command::Revoke {
            address: key(n).address(),
            attribute: attribute.into()
        }),
    ]
}

/// (proposer, caller, time step, id, command): ids from a small range so replays happen,
/// proposers from all keys so strangers propose too.
fn entries() -> impl Strategy<Value = Vec<(u8, u8, u64, u8, Command)>> {
    prop::collection::vec((1u8..=6, 1u8..=6, 0u64..200_000, 0u8..40, command()), 0..60)
}

fn signed(registry: &Registry, step: &(u8, u8, u64, u8, Command), clock: &mut u64) -> cmesh_consensus::SignedEntry {
    let (proposer, caller, advance, id, command) = step;
    *clock += advance;
    let proposal = Proposal {
        proposer: *proposer,
        caller: key(*caller).address(),
        time_ms: *clock,
        id: *id,
    };
    entry(registry, &proposal, command.clone())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Apply a prefix, snapshot, restore; the rest of the log then gives the same results
    /// and the same registry on the original and the restored copy.
    #[test]
    fn apply_then_snapshot_then_restore_is_the_same_registry(log in entries(), cut in 0usize..60) {
        let mut original = registry();
        let cut = cut.min(log.len());
        let mut clock = 0;
        for step in &log[..cut] {
            let entry = signed(&original, step, &mut clock);
            original.apply_one(&entry);
        }
        let mut restored = Registry::restore(&original.snapshot()).unwrap();
        prop_assert_eq!(&restored, &original);
        for step in &log[cut..] {
            let entry = signed(&original, step, &mut clock);
            prop_assert_eq!(original.apply_one(&entry), restored.apply_one(&entry));
        }
        prop_assert_eq!(&restored, &original);
        prop_assert_eq!(restored.snapshot(), original.snapshot());
    }

    /// Whatever the log, at least one voter stays admitted.
    #[test]
    fn a_voter_always_remains(log in entries()) {
        let mut registry = registry();
        let mut clock = 0;
        for step in &log {
            let entry = signed(&registry, step, &mut clock);
            registry.apply_one(&entry);
            prop_assert!(registry.nodes().values().any(|role| *role == Role::Voter));
        }
    }
}

#[test]
fn a_list_query_gives_at_most_the_cap_whatever_limit_it_asks() {
    let mut registry = registry();
    let mesh = registry.mesh();
    let cap = cmesh_registrar::LIST_CAP;
    let bodies = (0..=cap)
        .map(|i| EntryBody {
            mesh,
            command: Command::Register {
                name: format!("n{i}.mcom"),
                target: "I:whoami".into(),
            },
            caller: key(4).address(),
            time_ms: 1_000,
            id: EntryId((i as u128).to_be_bytes()),
            proof: None,
        })
        .collect();
    let results = registry.apply(&SignedEntry::sign(bodies, &key(2)));
    assert!(results.iter().all(|r| matches!(r, Applied::Done(_))));
    let query = cmesh_consensus::Query::List {
        owner: None,
        limit: usize::MAX,
    };
    match query.run(&registry) {
        cmesh_consensus::Answer::Records(records) => assert_eq!(records.len(), cap),
        other => panic!("{other:?}"),
    }
}
