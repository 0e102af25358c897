//! Catching a context up from a member, over the in-process bus with real state actors:
//! a join that takes several pages (and the progress `ctx.status` shows on the way), and
//! a join whose member vanishes in the middle, fails, and completes when asked again.

use std::time::Duration;

use cmesh_common::Status;
use cmesh_replication::memory_bus::{Action, Fault};
use cmesh_replication::{wire, JoinContext, Phase, ReplicationError, Settings};

mod common;
use common::*;

#[actix::test]
async fn a_joiner_fetches_a_context_page_by_page() {
    let mesh = Mesh::new();
    let (a, b, context) = mesh
        .invited_pair(Settings {
            page_limit: 7,
            ..quick()
        })
        .await;
    mesh.writes(&a, context, 40).await;
    let source = a.sync_state(context).await;
    assert_eq!(source.applied, 42, "genesis, invitation, 40 writes");

    // B's requests to A by name: its state, the genesis, the app's module, then pages.
    // The fourth page is held back while the test looks at the join's progress.
    let to_a = wire::sync_subject(&context, Some(&a.address));
    let fourth_page = mesh
        .network
        .inject(Fault::new(to_a.clone(), Action::Hold).from(b.address).skip(6).times(1));
    let started = b.join(context, false).await.expect("A accepts B");
    assert_eq!(started.phase, Phase::Joining, "without wait the join answers at once");
    assert_eq!((started.fetched, started.root), (0, None));

    mesh.network.acted(fourth_page, 1).await;
    // Asked meanwhile with wait, a join answers once the running one is over.
    let waiting = b.replicator.send(JoinContext { context, wait: true });
    let midway = b.status(context).await;
    assert_eq!(midway.phase, Phase::Joining);
    assert_eq!(
        (midway.fetched, midway.expected),
        (14, 41),
        "two pages of 7 applied (the third waits for the fourth's fetch)"
    );
    mesh.network.remove(fourth_page);

    let joined = waiting.await.expect("mailbox").expect("the join succeeds");
    assert_eq!(joined.phase, Phase::InSync);
    assert_eq!((joined.fetched, joined.expected), (41, 41));
    assert!(joined.rate > 0.0, "{joined:?}");
    assert_eq!(joined.peer, Some(a.address));
    assert_eq!(joined.error, None);
    assert_eq!(joined.root, Some(source.root));
    assert_eq!(joined.heads.as_ref(), Some(&source.heads));
    assert_eq!(joined.applied, Some(42));
    assert_eq!(
        (
            joined.catch_ups,
            joined.parked,
            joined.waiting,
            joined.invalid,
            joined.dropped
        ),
        (1, 0, 0, 0, 0)
    );
    assert_eq!(
        mesh.network.published(&to_a),
        3 + 6,
        "state, genesis and module, then six pages of at most 7"
    );
    assert_eq!(b.committed().await, 42, "each transaction committed once");
}

#[actix::test]
async fn a_member_vanishing_mid_join_fails_it_clearly_and_a_retry_completes() {
    let mesh = Mesh::new();
    let (a, b, context) = mesh
        .invited_pair(Settings {
            page_limit: 5,
            request_timeout: Duration::from_millis(100),
            ..quick()
        })
        .await;
    mesh.writes(&a, context, 30).await;
    let source = a.sync_state(context).await;
    assert_eq!(source.applied, 32);

    // A vanishes while B waits for its second page.
    let to_a = wire::sync_subject(&context, Some(&a.address));
    let second_page = mesh
        .network
        .inject(Fault::new(to_a, Action::Hold).from(b.address).skip(4).times(1));
    let vanish = async {
        mesh.network.acted(second_page, 1).await;
        mesh.network.cut(a.address);
    };
    let (failed, ()) = futures::join!(b.join(context, true), vanish);

    let error = failed.expect_err("the join fails");
    assert!(matches!(error, ReplicationError::JoinFailed { .. }), "{error:?}");
    assert_eq!(error.status(), Status::UNAVAILABLE);
    let message = error.to_string();
    assert!(
        message.contains(&format!("member {} did not answer within 100 ms", a.address)),
        "{message}"
    );
    let status = b.status(context).await;
    assert_eq!(status.phase, Phase::Failed);
    assert!(
        status
            .error
            .as_deref()
            .is_some_and(|e| e.contains(&a.address.to_string())),
        "{status:?}"
    );
    assert_eq!((status.fetched, status.expected), (5, 31), "the first page was applied");
    let not_ready = b.check_ready(&context.to_string()).await.expect_err("not ready");
    assert_eq!(not_ready.status(), Status::UNAVAILABLE);
    assert!(not_ready.to_string().contains("failed on this node"), "{not_ready}");

    // A is back; asked again, the join takes what the first attempt did not.
    mesh.network.restore(a.address);
    let joined = b.join(context, true).await.expect("the retry succeeds");
    assert_eq!(joined.phase, Phase::InSync);
    assert_eq!(joined.peer, Some(a.address));
    assert_eq!(joined.error, None);
    assert_eq!((joined.fetched, joined.expected), (26, 26));
    assert_eq!(joined.root, Some(source.root));
    assert_eq!(joined.heads.as_ref(), Some(&source.heads));
    assert_eq!(joined.applied, Some(32));
    assert_eq!(b.committed().await, 32, "nothing taken twice across the two attempts");
    b.check_ready(&context.to_string()).await.expect("ready once joined");
}
