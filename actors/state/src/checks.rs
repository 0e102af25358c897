//! The checks that both the write path (the executor, and replay when it applies a
//! transaction) and the read path (the views) run on a request or a call: the caller's
//! role, whether the context is held, the app version a call requires, the app's output,
//! its code. One copy, so a view and a write refuse the same things with the same words.

use cmesh_common::Address;
use redb::ReadableTable;

use crate::error::StateError;
use crate::ids::Id;
use crate::roles::Role;
use crate::store::ContextRecord;
use cmesh_runtime::StorageError;

/// Whether a user with `role` (`None`: none) in `context` may do what needs `needed`.
pub fn check_role(role: Option<Role>, needed: Role, user: &Address, context: &Id) -> Result<(), StateError> {
    match role {
        Some(role) if role.allows(needed) => Ok(()),
        Some(role) => Err(StateError::Forbidden(format!(
            "{user} is a {role} of context {context}; this needs the {needed} role (an admin grants it with ctx.grant)"
        ))),
        None => Err(StateError::Forbidden(format!(
            "{user} has no role in context {context}; this needs the {needed} role (an admin grants it with ctx.grant)"
        ))),
    }
}

/// A context named by its whole id that this node does not hold (any longer).
pub fn not_held(context: &Id) -> StateError {
    StateError::NotFound(format!("no context {context} on this node"))
}

/// `A:` calls run only on a context whose app version matches the requirement.
pub fn check_version(record: &ContextRecord, requirement: Option<&str>) -> Result<(), StateError> {
    let Some(requirement) = requirement else {
        return Ok(());
    };
    let req = semver::VersionReq::parse(requirement).map_err(|source| StateError::NotARequirement {
        requirement: requirement.to_string(),
        source,
    })?;
    let version = semver::Version::parse(&record.version).map_err(|source| StateError::StoredVersion {
        context: record.id,
        version: record.version.clone(),
        source,
    })?;
    if req.matches(&version) {
        Ok(())
    } else {
        Err(StateError::Conflict(format!(
            "context {} runs {} {}, which does not match `{requirement}`",
            record.id, record.name, record.version
        )))
    }
}

/// An app's output as JSON: the SDK writes JSON; anything else that is UTF-8 comes back
/// as a string.
pub fn output_value(output: &[u8]) -> Result<serde_json::Value, StateError> {
    if output.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    if let Ok(value) = serde_json::from_slice(output) {
        return Ok(value);
    }
    match std::str::from_utf8(output) {
        Ok(text) => Ok(serde_json::Value::String(text.to_string())),
        Err(_) => Err(StateError::Unprocessable(format!(
            "the app returned {} bytes that are neither JSON nor UTF-8",
            output.len()
        ))),
    }
}

/// The module of `app`, for the runtime to compile when it does not have it cached.
pub fn load_code(table: &impl ReadableTable<&'static [u8], &'static [u8]>, app: &Id) -> Result<Vec<u8>, StorageError> {
    match table.get(app.0.as_slice()) {
        Ok(Some(code)) => Ok(code.value().to_vec()),
        Ok(None) => Err(StorageError(format!("the code of app {app} is missing"))),
        Err(e) => Err(StorageError(e.to_string())),
    }
}
