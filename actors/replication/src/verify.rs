//! Signature checks of received transactions, on a pool of threads: two key recoveries
//! per transaction is most of what receiving costs, and it needs nothing but the bytes.

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use cmesh_state::tx::{Transaction, VerifiedTx, MAX_TX_BYTES};
use cmesh_state::Id;

/// Checks each encoded transaction on its own (`Transaction::checked`) and that it
/// belongs to `context`.
#[derive(Message)]
#[rtype(result = "Vec<Result<VerifiedTx, Rejected>>")]
pub struct CheckTxs {
    pub context: Id,
    pub txs: Vec<Vec<u8>>,
}

/// A transaction refused before it reached the DAG, and why.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Its claimed id, when it decoded.
    pub id: Option<Id>,
    pub reason: String,
}

pub struct TxVerifier;

impl Actor for TxVerifier {
    type Context = SyncContext<Self>;
}

impl TxVerifier {
    pub fn start(threads: usize) -> Addr<TxVerifier> {
        SyncArbiter::start(threads.max(1), || TxVerifier)
    }
}

pub fn check(context: &Id, bytes: &[u8]) -> Result<VerifiedTx, Rejected> {
    let reject = |id, reason: String| Rejected { id, reason };
    if bytes.len() > MAX_TX_BYTES {
        return Err(reject(None, format!("{} bytes; at most {MAX_TX_BYTES}", bytes.len())));
    }
    let tx = Transaction::decode(bytes).map_err(|e| reject(None, e.to_string()))?;
    let claimed = tx.body.id().ok();
    let verified = tx.checked().map_err(|e| reject(claimed, e.to_string()))?;
    let own = verified.tx().body.context_of(verified.id());
    if own != *context {
        return Err(reject(
            Some(verified.id()),
            format!("it belongs to context {own}, not {context}"),
        ));
    }
    Ok(verified)
}

impl Handler<CheckTxs> for TxVerifier {
    type Result = Vec<Result<VerifiedTx, Rejected>>;

    fn handle(&mut self, msg: CheckTxs, _: &mut SyncContext<Self>) -> Self::Result {
        msg.txs.iter().map(|bytes| check(&msg.context, bytes)).collect()
    }
}

/// Checks `txs` spread over the pool's threads; answers them in order.
pub async fn check_all(
    verifier: &Addr<TxVerifier>,
    threads: usize,
    context: Id,
    txs: Vec<Vec<u8>>,
) -> Result<Vec<Result<VerifiedTx, Rejected>>, actix::MailboxError> {
    let chunk = txs.len().div_ceil(threads.max(1)).max(16);
    let mut pending = Vec::new();
    let mut txs = txs.into_iter().peekable();
    while txs.peek().is_some() {
        let part: Vec<Vec<u8>> = txs.by_ref().take(chunk).collect();
        pending.push(verifier.send(CheckTxs { context, txs: part }));
    }
    let mut out = Vec::new();
    for part in futures::future::join_all(pending).await {
        out.extend(part?);
    }
    Ok(out)
}
