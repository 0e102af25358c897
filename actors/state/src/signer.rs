//! Signs transaction ids on a thread of its own. A transaction's id is known before its
//! method runs, so the executor asks for the signature and goes on with the next job;
//! it collects every signature of the batch just before the commit. On two cores this
//! takes the secp256k1 work (about a sixth of a transaction's cost) off the executor. It
//! signs with a [`BulkSigner`](cmesh_common::keys::BulkSigner), blinded per 256
//! signatures rather than per signature.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use cmesh_common::{Signature65, SigningKey};

use crate::error::StateError;
use crate::ids::Id;

pub struct Signer {
    requests: Sender<Id>,
    signatures: Receiver<(Id, Signature65)>,
}

impl Signer {
    pub fn spawn(key: Arc<SigningKey>) -> Result<Signer, StateError> {
        let mut bulk = key.bulk_signer().map_err(StateError::SignerStart)?;
        let (requests, to_sign) = channel::<Id>();
        let (signed, signatures) = channel();
        std::thread::Builder::new()
            .name("cmesh-state-sign".into())
            .spawn(move || {
                for id in to_sign {
                    let signature = match bulk.sign(id.0) {
                        Ok(signature) => signature,
                        Err(e) => {
                            // The executor sees the channel close and fails the batch.
                            tracing::error!("the transaction signer stops: {e}");
                            break;
                        }
                    };
                    if signed.send((id, signature)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Signer { requests, signatures })
    }

    pub fn request(&self, id: Id) -> Result<(), StateError> {
        self.requests.send(id).map_err(|_| StateError::SignerStopped)
    }

    /// The signatures of `ids`, all requested before. Signatures left over from a batch
    /// that was abandoned are skipped.
    pub fn collect(&self, ids: impl Iterator<Item = Id>) -> Result<HashMap<Id, Option<Signature65>>, StateError> {
        let mut wanted: HashMap<Id, Option<Signature65>> = ids.map(|id| (id, None)).collect();
        let mut missing = wanted.len();
        while missing > 0 {
            let (id, signature) = self.signatures.recv().map_err(|_| StateError::SignerStopped)?;
            if let Some(slot @ None) = wanted.get_mut(&id) {
                *slot = Some(signature);
                missing -= 1;
            }
        }
        Ok(wanted)
    }
}
