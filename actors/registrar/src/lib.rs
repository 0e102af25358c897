//! The registrar: names like `hello.mcom`, each owned by an address and pointing at a
//! target FQMN.
//!
//! Why it is split this way: this crate is only the node-local part, pure rules plus
//! durable storage behind an actor, so it can be tested without NATS and later replicated
//! (Raft) without touching the rules. The router authenticates the caller, checks that
//! targets are valid FQMNs, forwards over NATS and publishes the [`NameChange`]s as
//! events.
//!
//! - [`names`]: what a name and a target may look like (422 otherwise).
//! - [`record`]: [`NameRecord`] and [`NameChange`].
//! - [`store`]: the redb file; one durable transaction per accepted write.
//! - [`messages`] and [`actor`]: the actix face of it.
//! - [`error`]: [`RegistrarError`] and its CMTP statuses.

pub mod actor;
pub mod error;
pub mod messages;
pub mod names;
pub mod record;
pub mod store;

#[cfg(test)]
mod tests;

pub use actor::RegistrarActor;
pub use error::RegistrarError;
pub use messages::{List, Register, Release, Resolve, Transfer, Written};
pub use names::{
    check_target, NameError, NamePolicy, TargetError, TldConfigError, DEFAULT_TLDS, MAX_LABEL_LEN, MAX_TARGET_BYTES,
};
pub use record::{ChangeKind, NameChange, NameRecord};
pub use store::{RegistrarStore, LIST_CAP, SCHEMA_VERSION};
