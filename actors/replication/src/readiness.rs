//! Whether calls to a context may run on this node now. A node that is joining a
//! context, or fetching transactions it knows it lacks, would answer from a state that
//! is not yet the context's; the client is better told to retry in a moment, and how far
//! the node got. The router asks before every context call, so the answer comes from
//! the replicator's own bookkeeping, without a round trip to the state actor.
//!
//! A catch-up that does not (or does not yet) know it is behind (a lone node's restart,
//! the fetch of a parked transaction's parents among members that keep writing) does not
//! hold calls back: being a little behind is a member's ordinary state.

use std::sync::Arc;

use actix::prelude::*;
use cmesh_state::Id;

use crate::actor::{Replicator, Tracked};
use crate::error::ReplicationError;
use crate::messages::{CheckReady, Phase};

/// Why calls to a context wait on this node.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotReady {
    #[error("context {context} is being joined on this node{}; retry in a moment", progress(*.fetched, *.expected))]
    Joining { context: Id, fetched: u64, expected: u64 },
    #[error("context {context} is catching up on this node{}; retry in a moment", progress(*.fetched, *.expected))]
    CatchingUp { context: Id, fetched: u64, expected: u64 },
    #[error("joining context {context} failed on this node ({cause}); a node admin joins it again (ctx.join)")]
    JoinFailed {
        context: Id,
        #[source]
        cause: Arc<ReplicationError>,
    },
}

fn progress(fetched: u64, expected: u64) -> String {
    if expected == 0 {
        String::new()
    } else {
        format!(": fetched {} of {} transactions", grouped(fetched), grouped(expected))
    }
}

/// `5000` as `5,000`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

impl Tracked {
    fn readiness(&self, context: Id) -> Result<(), NotReady> {
        let (fetched, expected) = (self.progress.fetched, self.progress.expected);
        match self.phase {
            Phase::InSync => Ok(()),
            Phase::Joining => Err(NotReady::Joining {
                context,
                fetched,
                expected,
            }),
            Phase::CatchingUp if fetched < expected => Err(NotReady::CatchingUp {
                context,
                fetched,
                expected,
            }),
            Phase::CatchingUp => Ok(()),
            Phase::Failed => Err(match &self.error {
                Some(cause) => NotReady::JoinFailed {
                    context,
                    cause: cause.clone(),
                },
                // Not reached: a join fails with its error.
                None => NotReady::Joining {
                    context,
                    fetched,
                    expected,
                },
            }),
        }
    }
}

/// The hex digits a client named a context by (`0x` optional, any case), if that is
/// what the text is.
fn hex_digits(text: &str) -> Option<&str> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let hex = !digits.is_empty() && digits.len() <= 64 && digits.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then_some(digits)
}

/// Whether `id`'s hex starts with `digits` (hex digits, any case).
fn starts_with(id: &Id, digits: &str) -> bool {
    digits.bytes().enumerate().all(|(i, digit)| {
        let byte = id.0[i / 2];
        let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
        (digit as char).to_digit(16) == Some(u32::from(nibble))
    })
}

impl Handler<CheckReady> for Replicator {
    type Result = Result<(), ReplicationError>;

    fn handle(&mut self, msg: CheckReady, _: &mut Context<Self>) -> Self::Result {
        let Some(digits) = hex_digits(&msg.context) else {
            return Ok(());
        };
        let mut named = self.contexts.iter().filter(|(id, _)| starts_with(id, digits));
        // Text that names several contexts is the call's to refuse.
        match (named.next(), named.next()) {
            (Some((id, tracked)), None) => Ok(tracked.readiness(*id)?),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_200), "1,200");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(progress(0, 0), "");
        assert_eq!(progress(1_200, 5_000), ": fetched 1,200 of 5,000 transactions");
    }

    #[test]
    fn contexts_are_named_by_any_prefix_with_or_without_0x() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[1] = 0xc1;
        let id = Id(bytes);
        for text in ["0xab", "ab", "0XAB", "abc", "ABC1", "a"] {
            let digits = hex_digits(text).expect("hex");
            assert!(starts_with(&id, digits), "{text}");
        }
        let full = id.to_string();
        assert!(starts_with(&id, hex_digits(&full).expect("hex")));
        assert!(!starts_with(&id, "abd"));
        assert!(!starts_with(&id, "b"));
        for text in ["", "0x", "0xzz", "call me", &format!("{full}0")] {
            assert_eq!(hex_digits(text), None, "{text}");
        }
    }
}
