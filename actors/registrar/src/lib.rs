//! The registrar's rules: names like `hello.mcom`, each owned by an address and pointing
//! at a target FQMN.
//!
//! Why a crate of its own: the rules are pure, so the mesh registry (consensus) applies
//! them the same on every replica, and they are tested without any I/O. The names
//! themselves live in the registry, replicated with Raft.
//!
//! - [`names`]: what a name and a target may look like (422 otherwise).
//! - [`record`]: [`NameRecord`] and [`NameChange`].
//! - [`store`]: the `registrar.redb` of earlier releases' single registrar, which a node
//!   migrates into the registry once.
//! - [`error`]: [`RegistrarError`] and its CMTP statuses.

pub mod error;
pub mod names;
pub mod record;
pub mod store;

#[cfg(test)]
mod tests;

pub use error::RegistrarError;
pub use names::{
    check_target, NameError, NamePolicy, TargetError, TldConfigError, DEFAULT_TLDS, MAX_LABEL_LEN, MAX_TARGET_BYTES,
};
pub use record::{ChangeKind, NameChange, NameRecord};
pub use store::{RegistrarStore, LIST_CAP, SCHEMA_VERSION};
