//! CPU-bound signature work, run on a pool of sync threads (`SyncArbiter`) so that neither
//! the NATS arbiter nor the IAM actor waits on elliptic-curve maths.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, Handler, Message, SyncContext};
use cmesh_common::jwt::{self, Claims, JwtError};
use cmesh_common::keys::{personal_digest, Secp256k1PublicKey as PublicKey, SignatureError};
use cmesh_common::{Address, Signature65};

use cmesh_common::rpc::RequestProof;

pub struct Verifier;

impl Actor for Verifier {
    type Context = SyncContext<Self>;
}

/// Verifies a JWT against the known nodes' keys.
#[derive(Message)]
#[rtype(result = "Result<Claims, JwtError>")]
pub struct VerifyToken {
    pub token: String,
    pub audience: String,
    pub now: u64,
    pub keys: Arc<HashMap<Address, PublicKey>>,
}

impl Handler<VerifyToken> for Verifier {
    type Result = Result<Claims, JwtError>;

    fn handle(&mut self, msg: VerifyToken, _: &mut SyncContext<Self>) -> Self::Result {
        jwt::verify(&msg.token, &msg.audience, msg.now, |address| {
            msg.keys.get(address).copied()
        })
    }
}

/// Recovers who personal_signed `message`.
#[derive(Message)]
#[rtype(result = "Result<(PublicKey, Address), SignatureError>")]
pub struct RecoverSigner {
    pub message: Vec<u8>,
    pub signature: String,
}

impl Handler<RecoverSigner> for Verifier {
    type Result = Result<(PublicKey, Address), SignatureError>;

    fn handle(&mut self, msg: RecoverSigner, _: &mut SyncContext<Self>) -> Self::Result {
        let signature: Signature65 = msg.signature.parse()?;
        signature.recover_digest(personal_digest(&msg.message))
    }
}

/// Recovers the signer of a Kami request: personal_sign over the JCS of the request
/// without its `signature` member (canonicalising is CPU work too, so it happens here).
#[derive(Message)]
#[rtype(result = "Result<RecoveredRequest, SignatureError>")]
pub struct RecoverRequestSigner {
    pub raw: serde_json::Value,
    pub signature: String,
}

/// Who signed a request, and the proof (kept for transactions it causes).
pub struct RecoveredRequest {
    pub signer: Address,
    pub proof: RequestProof,
}

impl Handler<RecoverRequestSigner> for Verifier {
    type Result = Result<RecoveredRequest, SignatureError>;

    fn handle(&mut self, msg: RecoverRequestSigner, _: &mut SyncContext<Self>) -> Self::Result {
        let signature: Signature65 = msg.signature.parse()?;
        let request = cmesh_common::jcs::signing_bytes(&msg.raw);
        let (_, signer) = signature.recover_digest(personal_digest(&request))?;
        Ok(RecoveredRequest {
            signer,
            proof: RequestProof { request, signature },
        })
    }
}
