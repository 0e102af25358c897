//! The in-process bus itself: requests through inboxes, no responders, and what each
//! fault does to deliveries.

use std::time::Duration;

use bytes::Bytes;
use cmesh_common::{Address, SigningKey};
use cmesh_replication::memory_bus::{Action, Fault, MemoryNetwork};
use cmesh_replication::{Bus, BusError};
use futures::StreamExt;

fn node() -> Address {
    SigningKey::generate().expect("key").address()
}

#[actix::test]
async fn requests_are_answered_through_inboxes_or_find_nobody() {
    let network = MemoryNetwork::new();
    let (asker, answerer) = (network.connect(node()), network.connect(node()));
    let nobody = asker
        .request("svc.echo".into(), Bytes::from_static(b"hi"), Duration::from_secs(5))
        .await;
    assert!(matches!(nobody, Err(BusError::NoResponders(_))), "{nobody:?}");

    let mut requests = answerer.subscribe("svc.*".into()).await.expect("subscribe");
    let serve = async {
        let request = requests.next().await.expect("a request");
        let reply = request.reply.expect("a reply subject");
        answerer.respond(reply, request.payload).await.expect("respond");
    };
    let ask = asker.request("svc.echo".into(), Bytes::from_static(b"hi"), Duration::from_secs(5));
    let (answer, ()) = futures::join!(ask, serve);
    assert_eq!(answer.expect("an answer").payload, Bytes::from_static(b"hi"));
}

#[actix::test]
async fn faults_drop_duplicate_reorder_and_hold() {
    let network = MemoryNetwork::new();
    let (a, b) = (node(), node());
    let (bus_a, bus_b) = (network.connect(a), network.connect(b));
    let mut heard = bus_b.subscribe("t.>".into()).await.expect("subscribe");
    let publish = |subject: &str, n: u8| bus_a.publish(subject.into(), Bytes::from(vec![n]));

    let dropped = network.inject(Fault::new("t.drop", Action::Drop).from(a).to(b).skip(1).times(1));
    for n in 0..3 {
        publish("t.drop", n).await.expect("publish");
    }
    network.remove(dropped);
    network.inject(Fault::new("t.twice", Action::Duplicate).times(1));
    publish("t.twice", 3).await.expect("publish");
    network.inject(Fault::new("t.reorder", Action::Reorder(3)));
    for n in 4..7 {
        publish("t.reorder", n).await.expect("publish");
    }
    let held = network.inject(Fault::new("t.hold", Action::Hold));
    publish("t.hold", 7).await.expect("publish");
    publish("t.after", 8).await.expect("publish");
    network.acted(held, 1).await;
    network.remove(held);

    let mut got = Vec::new();
    for _ in 0..9 {
        let message = heard.next().await.expect("a message");
        assert_eq!(message.node, Some(a.to_string()), "publications say who published them");
        got.push(message.payload[0]);
    }
    assert_eq!(got, vec![0, 2, 3, 3, 6, 5, 4, 8, 7]);
    assert_eq!(network.published("t.>"), 9);
}

#[actix::test]
async fn delayed_messages_are_overtaken() {
    let network = MemoryNetwork::new();
    let bus = network.connect(node());
    let mut heard = bus.subscribe("t.*".into()).await.expect("subscribe");
    network.inject(Fault::new("t.slow", Action::Delay(Duration::from_millis(20))));
    bus.publish("t.slow".into(), Bytes::from_static(b"slow"))
        .await
        .expect("publish");
    bus.publish("t.fast".into(), Bytes::from_static(b"fast"))
        .await
        .expect("publish");
    let first = heard.next().await.expect("a message");
    let second = heard.next().await.expect("a message");
    assert_eq!((first.subject.as_str(), second.subject.as_str()), ("t.fast", "t.slow"));
}

#[actix::test]
async fn what_was_held_for_a_node_cut_off_meanwhile_is_lost() {
    let network = MemoryNetwork::new();
    let (a, b) = (node(), node());
    let (bus_a, bus_b) = (network.connect(a), network.connect(b));
    let mut heard = bus_b.subscribe("t".into()).await.expect("subscribe");
    let held = network.inject(Fault::new("t", Action::Hold).to(b));
    bus_a
        .publish("t".into(), Bytes::from_static(b"held"))
        .await
        .expect("publish");
    network.acted(held, 1).await;
    network.cut(b);
    network.remove(held);
    network.restore(b);
    bus_a
        .publish("t".into(), Bytes::from_static(b"after"))
        .await
        .expect("publish");
    let next = heard.next().await.expect("a message");
    assert_eq!(next.payload, Bytes::from_static(b"after"));
}

#[actix::test]
async fn a_cut_off_node_neither_hears_nor_is_heard() {
    let network = MemoryNetwork::new();
    let (a, b) = (node(), node());
    let (bus_a, bus_b) = (network.connect(a), network.connect(b));
    let mut heard_by_b = bus_b.subscribe("t".into()).await.expect("subscribe");
    let mut heard_by_a = bus_a.subscribe("t".into()).await.expect("subscribe");
    network.cut(b);
    bus_a
        .publish("t".into(), Bytes::from_static(b"1"))
        .await
        .expect("publish");
    bus_b
        .publish("t".into(), Bytes::from_static(b"2"))
        .await
        .expect("publish");
    let asked = bus_a.request("t".into(), Bytes::new(), Duration::from_millis(10)).await;
    assert!(
        matches!(asked, Err(BusError::TimedOut(_))),
        "a listens itself: {asked:?}"
    );
    network.restore(b);
    bus_a
        .publish("t".into(), Bytes::from_static(b"3"))
        .await
        .expect("publish");
    assert_eq!(
        heard_by_b.next().await.expect("a message").payload,
        Bytes::from_static(b"3")
    );
    let own: Vec<Bytes> = [
        heard_by_a.next().await,
        heard_by_a.next().await,
        heard_by_a.next().await,
    ]
    .into_iter()
    .map(|m| m.expect("a message").payload)
    .collect();
    assert_eq!(own[0], Bytes::from_static(b"1"));
    assert_eq!(own[2], Bytes::from_static(b"3"), "nothing from b while it was cut off");
}
