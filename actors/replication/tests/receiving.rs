//! Receiving other members' broadcasts over the in-process bus, with real state actors:
//! transactions that arrive before their parents wait and are applied once a catch-up
//! from their author brought the parents; reordered and duplicated broadcasts converge
//! without applying anything twice; and a batch that names the previous batch's
//! transactions as parents is handed over after it even when it is checked first.

use std::time::Duration;

use cmesh_replication::memory_bus::{Action, Fault};
use cmesh_replication::wire::{self, TxBatch};
use cmesh_replication::{Bus, Settings};
use cmesh_state::tx::Transaction;

mod common;
use common::*;

/// Timings of a node that must not catch up on a heads notice within a test: what it
/// fetches, it fetches because a transaction waited for its parents.
fn no_heads_catch_up() -> Settings {
    Settings {
        heads_grace: Duration::from_secs(60),
        ..quick()
    }
}

#[actix::test]
async fn transactions_before_their_parents_wait_for_a_catch_up_from_their_author() {
    let mesh = Mesh::new();
    let (a, b, context) = mesh.joined_pair(no_heads_catch_up()).await;

    let lost = mesh.network.inject(
        Fault::new(wire::txs_subject(&context), Action::Drop)
            .from(a.address)
            .to(b.address)
            .times(2),
    );
    for i in 0..3 {
        mesh.write(&a, context, "k", i).await;
    }
    mesh.network.acted(lost, 2).await;

    let state = mesh.converged(context, &[&a, &b]).await;
    assert_eq!(state.applied, 5, "genesis, invitation, three writes");
    let status = b.status(context).await;
    assert_eq!(status.parked, 1, "the third write came before the first two");
    assert_eq!(status.waiting, 0);
    assert_eq!(status.catch_ups, 2, "the join, then one from the author");
    assert_eq!((status.invalid, status.dropped), (0, 0));
    assert_eq!(status.root, Some(state.root));
    assert_eq!(b.committed().await, 5);
}

#[actix::test]
async fn reordered_and_duplicated_broadcasts_converge_and_apply_once() {
    let mesh = Mesh::new();
    let (a, b, context) = mesh.joined_pair(no_heads_catch_up()).await;

    // A's broadcasts reach B three at a time, newest first; B's reach A twice.
    let txs = wire::TXS_WILDCARD;
    let reorder = mesh
        .network
        .inject(Fault::new(txs, Action::Reorder(3)).from(a.address).to(b.address));
    let duplicate = mesh
        .network
        .inject(Fault::new(txs, Action::Duplicate).from(b.address).to(a.address));
    for round in 0..3 {
        for node in [&a, &b] {
            for i in 0..3 {
                mesh.write(node, context, &format!("k{i}"), round).await;
            }
        }
    }
    mesh.network.acted(reorder, 9).await;
    mesh.network.acted(duplicate, 9).await;

    let state = mesh.converged(context, &[&a, &b]).await;
    assert_eq!(state.applied, 2 + 18, "genesis, invitation, 18 writes");
    for node in [&a, &b] {
        let status = node.status(context).await;
        assert_eq!((status.invalid, status.dropped), (0, 0), "{status:?}");
        assert_eq!(node.committed().await, 20, "every transaction committed once");
    }
    let b_status = b.status(context).await;
    // At least A's first third write came before its parents (and started a catch-up);
    // how many more did depends on how far each catch-up got meanwhile.
    assert!(b_status.parked >= 1, "{b_status:?}");
    assert!(b_status.catch_ups >= 2, "the join, then from A: {b_status:?}");
}

#[actix::test]
async fn a_batch_is_handed_over_after_the_batch_before_it_even_when_checked_first() {
    let mesh = Mesh::new();
    let (a, b, context) = mesh.joined_pair(no_heads_catch_up()).await;

    // B hears A's transactions only as the test sends them: 60 in one batch, then
    // one on top of them in the next. The small batch is checked long before the big
    // one, on the pool's other thread.
    let subject = wire::txs_subject(&context);
    mesh.network
        .inject(Fault::new(subject.clone(), Action::Drop).from(a.address).to(b.address));
    let first = mesh.writes(&a, context, 60).await;
    let last = mesh.write(&a, context, "last", 0).await;
    let first = a.encoded(context, first).await;
    let last = a.encoded(context, vec![last]).await;
    let parents = &Transaction::decode(&last[0]).expect("decodes").body.parents;
    let first_ids: Vec<_> = first
        .iter()
        .map(|tx| Transaction::decode(tx).expect("decodes").body.id().expect("id"))
        .collect();
    assert!(
        parents.iter().all(|parent| first_ids.contains(parent)),
        "the last write's parents are in the first batch"
    );

    let sender = mesh.network.connect(new_address());
    for txs in [first, last] {
        let batch = TxBatch {
            txs: txs.into_iter().map(serde_bytes::ByteBuf::from).collect(),
        };
        let payload = wire::encode(&batch).expect("encode");
        sender.publish(subject.clone(), payload.into()).await.expect("publish");
    }

    let state = mesh.converged(context, &[&a, &b]).await;
    assert_eq!(state.applied, 2 + 61);
    let status = b.status(context).await;
    assert_eq!(status.parked, 0, "nothing waited for parents: {status:?}");
    assert_eq!(status.catch_ups, 1, "the join alone: {status:?}");
    assert_eq!(status.invalid, 0);
}
