//! Whether a context is ready for calls on a node (`CheckReady`), over the in-process bus
//! with real state actors: not while it is being joined or catching up on what it knows
//! it lacks (a 503 that says how far it got), and again once it is in sync.

use cmesh_common::{CmtpError, Status};
use cmesh_replication::memory_bus::{Action, Fault};
use cmesh_replication::{wire, JoinContext, Phase, Settings};

mod common;
use common::*;

#[actix::test]
async fn calls_wait_while_a_context_is_joined_or_caught_up_and_say_how_far_it_got() {
    let mesh = Mesh::new();
    let (a, b, context) = mesh
        .invited_pair(Settings {
            page_limit: 4,
            ..quick()
        })
        .await;
    mesh.writes(&a, context, 10).await;
    let full = context.to_string();
    let short = full[..10].to_string();
    let bare = full[2..12].to_ascii_uppercase();
    let mut other = full.clone();
    other.replace_range(2..3, if &full[2..3] == "0" { "1" } else { "0" });
    b.check_ready(&full)
        .await
        .expect("a context unknown here is not held back");

    // B's requests to A: state, genesis, module, then pages of 4; the third is held.
    let to_a = wire::sync_subject(&context, Some(&a.address));
    let third_page = mesh
        .network
        .inject(Fault::new(to_a.clone(), Action::Hold).from(b.address).skip(5).times(1));
    assert_eq!(b.join(context, false).await.expect("A accepts B").phase, Phase::Joining);
    mesh.network.acted(third_page, 1).await;
    let joined = b.replicator.send(JoinContext { context, wait: true });
    let joining =
        format!("context {context} is being joined on this node: fetched 4 of 11 transactions; retry in a moment");
    for text in [&full, &short, &bare] {
        let error = b.check_ready(text).await.expect_err("being joined");
        assert_eq!(error.status(), Status::UNAVAILABLE);
        assert_eq!(error.to_string(), joining, "named as {text}");
    }
    let answer = CmtpError::from(b.check_ready(&full).await.expect_err("being joined"));
    assert_eq!(
        (answer.status, answer.message.as_str()),
        (Status::UNAVAILABLE, joining.as_str())
    );
    b.check_ready(&other[..8])
        .await
        .expect("another prefix names nothing held back");
    mesh.network.remove(third_page);
    let joined = joined.await.expect("mailbox").expect("the join succeeds");
    assert_eq!(joined.phase, Phase::InSync);
    b.check_ready(&full).await.expect("ready once joined");

    // Cut off, B misses six writes; back, A's heads tell it, and it catches up. Its
    // first page from A is held.
    mesh.network.cut(b.address);
    mesh.writes(&a, context, 6).await;
    let first_page = mesh
        .network
        .inject(Fault::new(to_a, Action::Hold).from(b.address).skip(1).times(1));
    mesh.network.restore(b.address);
    mesh.network.acted(first_page, 1).await;
    assert_eq!(b.status(context).await.phase, Phase::CatchingUp);
    let error = b.check_ready(&short).await.expect_err("catching up");
    assert_eq!(error.status(), Status::UNAVAILABLE);
    assert_eq!(
        error.to_string(),
        format!("context {context} is catching up on this node: fetched 0 of 6 transactions; retry in a moment")
    );
    mesh.network.remove(first_page);
    let state = mesh.converged(context, &[&a, &b]).await;
    assert_eq!(state.applied, 18);
    b.check_ready(&short).await.expect("ready once caught up");
}
