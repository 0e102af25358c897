//! The answering side of catch-up: a member serves other members' sync requests from
//! its store. Requests must be signed by a node that is a member of the context as far
//! as this node knows; a node that does not hold the context stays silent on the
//! any-member subject (another member will answer) and says 404 when asked by name.

use bytes::Bytes;
use cmesh_common::time::unix_millis;
use cmesh_common::{CmtpError, Status};
use cmesh_state::{AppCode, FetchTransactions, GetSyncState, MissingTransactions, StateError};

use crate::sync::Link;
use crate::wire::{self, Answer, Query, Reply, SyncRequest, MESSAGE_OVERHEAD};

/// Most ids one fetch may ask for.
pub const MAX_FETCH_IDS: usize = 4_096;

/// Answers one sync request; `None`: stay silent.
pub async fn answer(link: &Link, subject: &str, payload: &[u8]) -> Option<Bytes> {
    let addressed = !subject.ends_with(".sync");
    let answer = serve(link, subject, payload, addressed).await?;
    match wire::encode(&answer) {
        Ok(bytes) => Some(Bytes::from(bytes)),
        Err(e) => {
            tracing::error!(error = %e, "could not encode a sync answer");
            None
        }
    }
}

async fn serve(link: &Link, subject: &str, payload: &[u8], addressed: bool) -> Option<Answer> {
    let request: SyncRequest = match wire::decode(payload) {
        Ok(request) => request,
        Err(e) => return addressed.then(|| Err(CmtpError::bad_request(e.to_string()))),
    };
    if request.from == link.node() {
        return None;
    }
    if wire::context_of_subject(subject) != Some(request.context) {
        return Some(Err(CmtpError::bad_request(
            "the request names another context than its subject",
        )));
    }
    if let Err(e) = request.authenticate(&link.mesh, unix_millis()) {
        return Some(Err(e));
    }
    let context = request.context;
    let state = match link.state.send(GetSyncState { context }).await {
        Ok(Ok(state)) => state,
        Ok(Err(StateError::NotFound(_))) => {
            return addressed.then(|| Err(CmtpError::not_found(format!("context {context} is not held here"))))
        }
        Ok(Err(e)) => return Some(Err(e.into())),
        Err(_) => return Some(Err(CmtpError::unavailable("the state service is gone"))),
    };
    if !state.members.iter().any(|m| m.member == request.from) {
        return Some(Err(CmtpError::new(
            Status::FORBIDDEN,
            format!(
                "node {} is not a member of context {context}: an admin invites it with ctx.invite",
                request.from
            ),
        )));
    }
    let max_bytes = link.max_payload.saturating_sub(MESSAGE_OVERHEAD).max(1);
    let reply = match request.query {
        Query::State => Ok(Reply::State {
            node: link.node(),
            heads: state.heads,
            seqs: state.seqs,
            applied: state.applied,
            root: state.root,
            members: state.members,
        }),
        Query::Fetch { ids } => {
            if ids.len() > MAX_FETCH_IDS {
                return Some(Err(CmtpError::bad_request(format!(
                    "{} ids in one fetch; at most {MAX_FETCH_IDS}",
                    ids.len()
                ))));
            }
            match link.state.send(FetchTransactions { context, ids }).await {
                Ok(Ok(txs)) => Ok(Reply::Txs {
                    txs: within(txs, max_bytes),
                }),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(CmtpError::unavailable("the state service is gone")),
            }
        }
        Query::Page { have, after, limit } => {
            let msg = MissingTransactions {
                context,
                have,
                after,
                limit: limit as usize,
                max_bytes,
            };
            match link.state.send(msg).await {
                Ok(Ok(page)) => Ok(Reply::Page {
                    txs: page.txs.into_iter().map(serde_bytes::ByteBuf::from).collect(),
                    next: page.next,
                }),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(CmtpError::unavailable("the state service is gone")),
            }
        }
        Query::App { app } => match link.state.send(AppCode { app }).await {
            Ok(Ok(code)) if code.as_ref().is_some_and(|c| c.len() > max_bytes) => Err(CmtpError::new(
                Status::PAYLOAD_TOO_LARGE,
                format!("the module of app {app} is larger than a NATS message here"),
            )),
            Ok(Ok(code)) => Ok(Reply::App {
                code: code.map(serde_bytes::ByteBuf::from),
            }),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(CmtpError::unavailable("the state service is gone")),
        },
    };
    Some(reply)
}

/// The leading transactions that fit in `max_bytes` (at least one).
fn within(txs: Vec<Vec<u8>>, max_bytes: usize) -> Vec<serde_bytes::ByteBuf> {
    let mut total = 0;
    let mut out = Vec::new();
    for tx in txs {
        total += tx.len();
        if total > max_bytes && !out.is_empty() {
            break;
        }
        out.push(serde_bytes::ByteBuf::from(tx));
    }
    out
}
