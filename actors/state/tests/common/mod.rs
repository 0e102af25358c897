//! Helpers the state actor's multi-node tests share (`convergence.rs`, `leave.rs`): the
//! committed kv app, a context of it, invitations, and moving transactions between nodes.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use actix::Addr;
use cmesh_common::Address;
use cmesh_state::tx::{Transaction, VerifiedTx};
use cmesh_state::{
    CreateContext, Deploy, FetchTransactions, GetSyncState, Id, Invite, MissingTransactions, Receive, Requester,
    StateActor,
};

pub fn kv_wasm() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../apps/kv/kv.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub async fn deploy(state: &Addr<StateActor>, by: Address) {
    let deploy = Deploy {
        by,
        name: "kv".into(),
        version: "1.0.0".into(),
        wasm: kv_wasm(),
    };
    state.send(deploy).await.expect("mailbox").expect("deploy");
}

pub async fn create_kv_context(state: &Addr<StateActor>, admin: Address) -> Id {
    let create = CreateContext {
        by: Requester::new(admin),
        app: "kv".into(),
        version: None,
    };
    state.send(create).await.expect("mailbox").expect("create").context
}

/// Invites `member` (one seat); answers the invitation's transaction id.
pub async fn invite(state: &Addr<StateActor>, admin: Address, context: Id, member: Address) -> Id {
    let invite = Invite {
        by: Requester::new(admin),
        context: context.to_string(),
        member,
        seats: 1,
    };
    state.send(invite).await.expect("mailbox").expect("invite").tx
}

pub fn decode(encoded: &[u8]) -> VerifiedTx {
    Transaction::decode(encoded)
        .expect("decodes")
        .checked()
        .expect("a member's transaction checks")
}

pub async fn fetch(state: &Addr<StateActor>, context: Id, id: Id) -> Vec<u8> {
    let mut found = state
        .send(FetchTransactions { context, ids: vec![id] })
        .await
        .expect("mailbox")
        .expect("fetch");
    assert_eq!(found.len(), 1, "the author holds its transaction {id}");
    found.remove(0)
}

/// `to` takes `context` from `from`'s pages of `page` transactions, parents first: all
/// of it when `joining`, else what it lacks. Answers how many it took.
pub async fn catch_up(
    from: &Addr<StateActor>,
    to: &Addr<StateActor>,
    context: Id,
    joining: bool,
    page: usize,
) -> usize {
    let have = if joining {
        Vec::new()
    } else {
        to.send(GetSyncState { context })
            .await
            .expect("mailbox")
            .expect("sync state")
            .seqs
    };
    let mut after = None;
    let mut fetched = 0;
    loop {
        let page = from
            .send(MissingTransactions {
                context,
                have: have.clone(),
                after,
                limit: page,
                max_bytes: usize::MAX,
            })
            .await
            .expect("mailbox")
            .expect("page");
        fetched += page.txs.len();
        let txs: Vec<VerifiedTx> = page.txs.iter().map(|tx| decode(tx)).collect();
        let count = txs.len();
        let receive = Receive {
            txs,
            joining: joining.then_some(context),
        };
        let report = to.send(receive).await.expect("mailbox").expect("receive");
        assert!(report.missing.is_empty() && report.invalid.is_empty(), "{report:?}");
        assert_eq!(report.added.len(), count, "pages come parents first: {report:?}");
        match page.next {
            Some(next) => after = Some(next),
            None => return fetched,
        }
    }
}

/// Stops a state actor (its executor and view threads let go of the store once its last
/// address is gone) and opens the store at `path` itself once it is free.
pub async fn stop(state: Addr<StateActor>, path: &Path) -> redb::Database {
    drop(state);
    for _ in 0..400 {
        match redb::Database::open(path) {
            Ok(db) => return db,
            Err(_) => actix::clock::sleep(Duration::from_millis(25)).await,
        }
    }
    panic!("{} is still open after the actor stopped", path.display());
}
