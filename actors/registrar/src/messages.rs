//! The requests the registrar actor answers.
//!
//! `caller` is always an address the router has already authenticated: the registrar
//! trusts it and only decides what that address may do. Names are taken as typed; the
//! registrar normalises them. Errors are [`CmtpError`]s ready to put in a reply.

use actix::Message;
use cmesh_common::{Address, CmtpError};

use super::record::{NameChange, NameRecord};

/// Result of an accepted write: the record (after the write; for a release, as it was
/// before) and the change to publish.
pub type Written = (NameRecord, NameChange);

/// Register a free name to `caller`. 422 bad name or target, 409 taken.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "Result<Written, CmtpError>")]
pub struct Register {
    pub caller: Address,
    pub name: String,
    pub target: String,
}

/// Look a name up. 422 bad name, 404 not registered.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "Result<NameRecord, CmtpError>")]
pub struct Resolve {
    pub name: String,
}

/// Give a name to `to`. 422 bad name, 404 not registered, 403 caller is not the owner.
/// `to == caller` succeeds, writes nothing and returns a change with `is_noop()`.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "Result<Written, CmtpError>")]
pub struct Transfer {
    pub caller: Address,
    pub name: String,
    pub to: Address,
}

/// Delete a name so it can be registered again. 422, 404, 403 as for [`Transfer`].
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "Result<Written, CmtpError>")]
pub struct Release {
    pub caller: Address,
    pub name: String,
}

/// Records sorted by name, all or one owner's, at most
/// [`LIST_CAP`](super::store::LIST_CAP).
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "Result<Vec<NameRecord>, CmtpError>")]
pub struct List {
    pub owner: Option<Address>,
}
