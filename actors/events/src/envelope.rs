//! The event envelope every node publishes on `cmesh.events.<service>.<kind>`, and the
//! checks applied to envelopes from other nodes. Those are untrusted: every field a peer
//! controls is bounded and cross-checked against the subject it arrived on, so a peer can
//! neither flood memory nor file its events under another service's topic keys.

use serde::{Deserialize, Serialize};

use cmesh_common::Address;

/// Every event subject starts with this.
pub const SUBJECT_PREFIX: &str = "cmesh.events";
/// Service name of application events (`cmesh.events.app.<topic>`).
pub const APP_SERVICE: &str = "app";
/// Service name of registrar events.
pub const REGISTRAR_SERVICE: &str = "registrar";
/// Service name of context events (`cmesh.events.ctx.<context>.<event>`).
pub const CONTEXT_SERVICE: &str = "ctx";
/// Topic keys of registrar events start with this (`R:<name>`, `R:<name>:<kind>`).
pub const REGISTRAR_TOPIC_PREFIX: &str = "R:";
/// The subjects this node listens on for other nodes' events.
pub const REMOTE_SUBJECTS: [&str; 2] = ["cmesh.events.app.>", "cmesh.events.registrar.>"];

/// At most this many topic keys per event.
pub const MAX_TOPICS_PER_EVENT: usize = 16;
/// At most this many bytes per topic key.
pub const MAX_TOPIC_LEN: usize = 256;
/// At most this many bytes in `<kind>` (and in an app topic).
pub const MAX_KIND_LEN: usize = 200;
/// At most this many bytes in `<service>`.
pub const MAX_SERVICE_LEN: usize = 32;

/// One event, as published and as kept for "recent events" queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// `<node address>:<seq>`, unique per event mesh-wide; used to drop duplicates.
    pub id: String,
    /// The node that published the event.
    pub node: Address,
    /// Unix time in milliseconds, by the publishing node's clock.
    pub ts: u64,
    pub service: String,
    pub kind: String,
    /// Keys under which the event is kept for recent-events queries.
    pub topics: Vec<String>,
    /// Who caused the event, for application events emitted on a caller's behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Address>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl EventEnvelope {
    /// The subject this envelope is published on.
    pub fn subject(&self) -> String {
        subject_for(&self.service, &self.kind)
    }
}

/// `cmesh.events.<service>.<kind>`.
pub fn subject_for(service: &str, kind: &str) -> String {
    format!("{SUBJECT_PREFIX}.{service}.{kind}")
}

/// `<node address>:<seq>`.
pub fn event_id(node: &Address, seq: u64) -> String {
    format!("{node}:{seq}")
}

/// Registrar topic keys for an event about `name`: `R:<name>`, `R:<name>:<kind>`, and
/// `R:<kind>` for every name's events of that kind (names have a `.`, kinds do not).
pub fn registrar_topics(name: &str, kind: &str) -> Vec<String> {
    vec![
        format!("{REGISTRAR_TOPIC_PREFIX}{name}"),
        format!("{REGISTRAR_TOPIC_PREFIX}{name}:{kind}"),
        format!("{REGISTRAR_TOPIC_PREFIX}{kind}"),
    ]
}

/// Topic keys of a context event: `S:<context>` and `S:<context>:<event>`.
pub fn context_topics(context: &str, event: &str) -> Vec<String> {
    vec![format!("S:{context}"), format!("S:{context}:{event}")]
}

/// Checks one part of a subject: dot-separated non-empty tokens without wildcards or
/// whitespace. `dots` says whether several tokens are allowed.
pub fn check_subject_part(text: &str, dots: bool, max_len: usize) -> Result<(), &'static str> {
    if text.is_empty() {
        return Err("must not be empty");
    }
    if text.len() > max_len {
        return Err("is too long");
    }
    if !dots && text.contains('.') {
        return Err("must be a single subject token (no dots)");
    }
    if text.split('.').any(str::is_empty) {
        return Err("has an empty subject token");
    }
    if text
        .chars()
        .any(|c| c == '*' || c == '>' || c.is_whitespace() || c.is_control())
    {
        return Err("must not contain wildcards, whitespace or control characters");
    }
    Ok(())
}

/// Checks a topic key: non-empty, bounded, printable.
pub fn check_topic_key(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("must not be empty");
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err("is too long");
    }
    if topic.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

/// Checks the topic keys an event of `service` may be kept under, so that events of
/// one service cannot be filed under another's keys: an app event only under its own
/// topic, a registrar event only under `R:` keys. Other services (this node's own
/// lifecycle events, never accepted from the network) are not restricted.
pub fn check_topics_for_service(service: &str, kind: &str, topics: &[String]) -> Result<(), &'static str> {
    if topics.len() > MAX_TOPICS_PER_EVENT {
        return Err("has too many entries");
    }
    for topic in topics {
        check_topic_key(topic)?;
    }
    match service {
        APP_SERVICE if topics.len() != 1 || topics[0] != kind => Err("of an app event must be exactly its topic"),
        REGISTRAR_SERVICE if topics.is_empty() || !topics.iter().all(|t| t.starts_with(REGISTRAR_TOPIC_PREFIX)) => {
            Err("of a registrar event must be R:<name> keys")
        }
        _ => Ok(()),
    }
}

/// Why an envelope from the network was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("payload of {size} bytes exceeds {max}")]
    TooLarge { size: usize, max: usize },
    #[error("not a JSON event envelope: {0}")]
    Malformed(String),
    #[error("subject {subject} does not match service {service:?} and kind {kind:?}")]
    SubjectMismatch {
        subject: String,
        service: String,
        kind: String,
    },
    #[error("service {0:?} is not accepted from other nodes")]
    UnexpectedService(String),
    #[error("{field} {reason}")]
    BadField { field: &'static str, reason: &'static str },
    #[error("id {0:?} is not <node address>:<seq>")]
    BadId(String),
}

/// Parses and checks an envelope received on `subject` from another node.
pub fn parse_remote(subject: &str, payload: &[u8], max_bytes: usize) -> Result<EventEnvelope, Rejected> {
    if payload.len() > max_bytes {
        return Err(Rejected::TooLarge {
            size: payload.len(),
            max: max_bytes,
        });
    }
    let envelope: EventEnvelope =
        serde_json::from_slice(payload).map_err(|err| Rejected::Malformed(err.to_string()))?;
    let bad = |field, reason| Rejected::BadField { field, reason };
    check_subject_part(&envelope.service, false, MAX_SERVICE_LEN).map_err(|reason| bad("service", reason))?;
    check_subject_part(&envelope.kind, true, MAX_KIND_LEN).map_err(|reason| bad("kind", reason))?;
    if subject != envelope.subject() {
        return Err(Rejected::SubjectMismatch {
            subject: subject.to_string(),
            service: envelope.service,
            kind: envelope.kind,
        });
    }
    if envelope.service != APP_SERVICE && envelope.service != REGISTRAR_SERVICE {
        return Err(Rejected::UnexpectedService(envelope.service));
    }
    check_id(&envelope)?;
    check_topics_for_service(&envelope.service, &envelope.kind, &envelope.topics)
        .map_err(|reason| bad("topics", reason))?;
    Ok(envelope)
}

fn check_id(envelope: &EventEnvelope) -> Result<(), Rejected> {
    let node = envelope.node.to_string();
    let seq = envelope
        .id
        .strip_prefix(node.as_str())
        .and_then(|rest| rest.strip_prefix(':'));
    match seq {
        Some(digits)
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && digits.parse::<u64>().is_ok() =>
        {
            Ok(())
        }
        _ => Err(Rejected::BadId(envelope.id.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> Address {
        Address([0x11; 20])
    }

    fn app_event(topic: &str) -> EventEnvelope {
        EventEnvelope {
            id: event_id(&node(), 7),
            node: node(),
            ts: 1_700_000_000_000,
            service: APP_SERVICE.into(),
            kind: topic.into(),
            topics: vec![topic.into()],
            caller: Some(Address([0x22; 20])),
            data: json!({"text": "hi"}),
        }
    }

    fn encode(envelope: &EventEnvelope) -> Vec<u8> {
        serde_json::to_vec(envelope).expect("encodes")
    }

    #[test]
    fn wire_shape_matches_the_documented_envelope() {
        let value = serde_json::to_value(app_event("chat.room1")).expect("encodes");
        assert_eq!(
            value,
            json!({
                "id": "0x1111111111111111111111111111111111111111:7",
                "node": "0x1111111111111111111111111111111111111111",
                "ts": 1_700_000_000_000u64,
                "service": "app",
                "kind": "chat.room1",
                "topics": ["chat.room1"],
                "caller": "0x2222222222222222222222222222222222222222",
                "data": {"text": "hi"}
            })
        );
    }

    #[test]
    fn valid_remote_events_are_accepted() {
        let event = app_event("chat.room1");
        let parsed = parse_remote("cmesh.events.app.chat.room1", &encode(&event), 65_536);
        assert_eq!(parsed, Ok(event));

        let mut registrar = app_event("x");
        registrar.service = REGISTRAR_SERVICE.into();
        registrar.kind = "transferred".into();
        registrar.topics = registrar_topics("helloworld.mcom", "transferred");
        assert_eq!(
            registrar.topics,
            vec!["R:helloworld.mcom", "R:helloworld.mcom:transferred", "R:transferred"]
        );
        assert!(parse_remote("cmesh.events.registrar.transferred", &encode(&registrar), 65_536).is_ok());
    }

    #[test]
    fn hostile_remote_events_are_rejected() {
        let subject = "cmesh.events.app.chat.room1";
        let good = app_event("chat.room1");
        let reject = |envelope: &EventEnvelope, subject: &str| {
            parse_remote(subject, &encode(envelope), 65_536).expect_err("must be rejected")
        };

        assert!(matches!(
            parse_remote(subject, b"{not json", 65_536),
            Err(Rejected::Malformed(_))
        ));
        assert!(matches!(
            parse_remote(subject, &encode(&good), 10),
            Err(Rejected::TooLarge { .. })
        ));
        assert!(matches!(
            reject(&good, "cmesh.events.app.other"),
            Rejected::SubjectMismatch { .. }
        ));

        let mut spoofed_id = good.clone();
        spoofed_id.id = event_id(&Address([0x33; 20]), 1);
        assert!(matches!(reject(&spoofed_id, subject), Rejected::BadId(_)));
        spoofed_id.id = format!("{}:-1", node());
        assert!(matches!(reject(&spoofed_id, subject), Rejected::BadId(_)));

        let mut poisoned = good.clone();
        poisoned.topics = vec!["R:helloworld.mcom".into()];
        assert!(matches!(reject(&poisoned, subject), Rejected::BadField { .. }));

        let mut registrar = good.clone();
        registrar.service = REGISTRAR_SERVICE.into();
        registrar.kind = "registered".into();
        registrar.topics = vec!["chat.room1".into()];
        assert!(matches!(
            reject(&registrar, "cmesh.events.registrar.registered"),
            Rejected::BadField { .. }
        ));

        let mut other_service = good.clone();
        other_service.service = "router".into();
        other_service.kind = "received".into();
        assert!(matches!(
            reject(&other_service, "cmesh.events.router.received"),
            Rejected::UnexpectedService(_)
        ));

        let mut no_topics = good.clone();
        no_topics.topics.clear();
        assert!(matches!(reject(&no_topics, subject), Rejected::BadField { .. }));
    }

    #[test]
    fn topics_are_checked_per_service() {
        let topics = |list: &[&str]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert!(check_topics_for_service("app", "chat", &topics(&["chat"])).is_ok());
        assert!(check_topics_for_service("app", "chat", &topics(&["other"])).is_err());
        assert!(check_topics_for_service("app", "chat", &topics(&[])).is_err());
        assert!(check_topics_for_service("registrar", "released", &topics(&["R:a"])).is_ok());
        assert!(check_topics_for_service("registrar", "released", &topics(&["a"])).is_err());
        assert!(check_topics_for_service("registrar", "released", &topics(&[])).is_err());
        assert!(check_topics_for_service("router", "received", &topics(&[])).is_ok());
        assert!(check_topics_for_service("router", "received", &topics(&["any"])).is_ok());
        assert!(check_topics_for_service("router", "x", &vec!["t".to_string(); 17]).is_err());
        assert!(check_topics_for_service("router", "x", &topics(&[""])).is_err());
    }

    #[test]
    fn subject_parts_are_checked() {
        assert!(check_subject_part("chat.room1", true, 200).is_ok());
        assert!(check_subject_part("chat.room1", false, 200).is_err());
        assert!(check_subject_part("chat..room1", true, 200).is_err());
        assert!(check_subject_part("chat.*", true, 200).is_err());
        assert!(check_subject_part("chat.>", true, 200).is_err());
        assert!(check_subject_part("chat room", true, 200).is_err());
        assert!(check_subject_part("", true, 200).is_err());
        assert!(check_subject_part(&"a".repeat(201), true, 200).is_err());
    }
}
