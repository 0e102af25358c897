//! Error types. Callers of the actor need to tell a bad request (their fault: a topic
//! that is not a subject, data that is too big) from a node problem (disk, NATS), and the
//! audit verifier must say exactly which entry is broken and how.

use std::fmt;

use cmesh_common::hash::to_hex0x;
use cmesh_common::CmtpError;

/// What went wrong with the audit store or chain.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store: {0}")]
    Store(#[from] redb::Error),
    #[error("audit store directory: {0}")]
    Io(#[from] std::io::Error),
    /// The chain is not intact; `seq` is the first entry found broken.
    #[error("audit chain broken at seq {seq}: {problem}")]
    Broken { seq: u64, problem: ChainProblem },
}

cmesh_common::redb_errors_into!(AuditError, AuditError::Store);

impl AuditError {
    /// The seq of the first broken entry, if the error is a broken chain.
    pub fn broken_seq(&self) -> Option<u64> {
        match self {
            AuditError::Broken { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

/// How an audit entry fails verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// No entry is stored under this seq; `next_present` is the next seq that is.
    Missing { next_present: Option<u64> },
    /// An entry is stored under seq 0; seqs start at 1.
    ZeroSeq,
    /// The stored value is not a well-formed entry.
    BadEncoding { len: usize },
    /// The entry is stored under a key that differs from the seq inside it.
    SeqMismatch { stored: u64 },
    /// `prev` is not the hash of the entry before it.
    PrevMismatch { expected: [u8; 32], found: [u8; 32] },
    /// The stored hash is not the hash of the entry's fields.
    HashMismatch { stored: [u8; 32], computed: [u8; 32] },
    /// The recorded head disagrees with the last stored entry.
    HeadMismatch { head: Option<u64>, last: u64 },
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainProblem::Missing {
                next_present: Some(next),
            } => {
                write!(f, "entry is missing (next stored entry is seq {next})")
            }
            ChainProblem::Missing { next_present: None } => write!(f, "entry is missing"),
            ChainProblem::ZeroSeq => write!(f, "seq 0 is not a valid entry (seqs start at 1)"),
            ChainProblem::BadEncoding { len } => {
                write!(f, "stored value of {len} bytes is not an audit entry")
            }
            ChainProblem::SeqMismatch { stored } => {
                write!(f, "entry says it is seq {stored}")
            }
            ChainProblem::PrevMismatch { expected, found } => write!(
                f,
                "prev is {} but the previous entry hashes to {}",
                to_hex0x(found),
                to_hex0x(expected)
            ),
            ChainProblem::HashMismatch { stored, computed } => write!(
                f,
                "stored hash {} but the fields hash to {} (entry was altered)",
                to_hex0x(stored),
                to_hex0x(computed)
            ),
            ChainProblem::HeadMismatch { head: Some(head), last } => {
                write!(f, "head records seq {head} but the last stored entry is seq {last}")
            }
            ChainProblem::HeadMismatch { head: None, last } => {
                write!(f, "no head recorded but entries up to seq {last} exist")
            }
        }
    }
}

/// Errors of the events actor.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("events data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("event is {size} bytes encoded, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    #[error("could not encode event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("publishing to NATS failed: {0}")]
    Publish(#[from] async_nats::PublishError),
    #[error("too many publications are waiting on NATS")]
    OutboxFull,
    #[error("the events actor stopped before publishing")]
    Stopped,
    /// Kept by the actor and handed to every `Ready`, so shared.
    #[error("subscribing to other nodes' events failed: {0}")]
    Subscribe(#[source] std::sync::Arc<async_nats::SubscribeError>),
    #[error("the subscription to other nodes' events ended")]
    SubscriptionEnded,
    #[error("the NATS connection closed before the readiness probe came back")]
    ProbeLost,
}

impl From<EventsError> for CmtpError {
    fn from(err: EventsError) -> Self {
        match &err {
            EventsError::Invalid { .. } => CmtpError::bad_request(err.to_string()),
            EventsError::TooLarge { .. } => CmtpError::new(cmesh_common::Status::PAYLOAD_TOO_LARGE, err.to_string()),
            EventsError::Publish(_)
            | EventsError::OutboxFull
            | EventsError::Stopped
            | EventsError::Subscribe(_)
            | EventsError::SubscriptionEnded
            | EventsError::ProbeLost => CmtpError::new(cmesh_common::Status::UNAVAILABLE, err.to_string()),
            _ => CmtpError::new(cmesh_common::Status::INTERNAL, err.to_string()),
        }
    }
}
