//! The commands of the mesh registry: what one Raft log entry asks the registry to do.
//!
//! Why a closed enum: every replica must apply the same entry the same way, so a command
//! is data with one meaning, never a method name interpreted by local configuration.

use cmesh_common::{Address, Method};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an admitted node is to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A Raft voter.
    Voter,
    /// A replica of the registry that does not vote.
    Learner,
    /// No replica; asks a voter.
    Member,
}

/// One change to the registry. `caller` (the identity on whose behalf it runs) is in the
/// [`EntryBody`](crate::entry::EntryBody), not here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Command {
    /// `mesh.admit {node, role}`: admit a node, or change its role. Mesh admins only.
    Admit { node: Address, role: Role },
    /// `mesh.remove {node}`: the node stops being a peer. Mesh admins only.
    Remove { node: Address },
    /// `registrar.register {name, target}`.
    Register { name: String, target: String },
    /// `registrar.transfer {name, to}`.
    Transfer { name: String, to: Address },
    /// `registrar.release {name}`.
    Release { name: String },
    /// `iam.grant {address, attribute}` of a mesh-wide attribute. Mesh admins only.
    Grant { address: Address, attribute: String },
    /// `iam.revoke {address, attribute}`. Mesh admins only.
    Revoke { address: Address, attribute: String },
}

/// The registry commands (`CW:<op>:<json>`), for messages.
pub const OPS: &str = "admit, remove, register, transfer, release, grant, revoke";

impl Command {
    /// The command a client's call of `method` with `params` asks for; `None` if the
    /// method changes no registry.
    ///
    /// Why here: the router makes commands with this, and every replica checks with it
    /// that a client's signed request asked for the command its entry carries, so the
    /// two cannot disagree. The params are the command's fields, named as in the method
    /// table; `consensus.write {body}` takes a `CW:` body.
    pub fn of_call(method: Method, params: &Value) -> Option<Result<Command, String>> {
        let op = match method {
            Method::RegistrarRegister => "register",
            Method::RegistrarTransfer => "transfer",
            Method::RegistrarRelease => "release",
            Method::MeshAdmit => "admit",
            Method::MeshRemove => "remove",
            Method::IamGrant => "grant",
            Method::IamRevoke => "revoke",
            Method::ConsensusWrite => {
                return Some(match params.get("body").and_then(Value::as_str) {
                    Some(body) if params.as_object().is_some_and(|p| p.len() == 1) => Command::of_body(body),
                    _ => Err("consensus.write takes {\"body\": \"<op>:<json>\"}".to_string()),
                })
            }
            _ => return None,
        };
        let fields = match params {
            Value::Null => serde_json::Map::new(),
            Value::Object(fields) => fields.clone(),
            _ => return Some(Err("params must be a JSON object".to_string())),
        };
        Some(Command::of_fields(op, fields).map_err(|e| e.to_string()))
    }

    /// `<op>:<json>` (a `CW:` body), e.g. `admit:{"node":"0x…","role":"learner"}`.
    pub fn of_body(body: &str) -> Result<Command, String> {
        let (op, json) = body.split_once(':').unwrap_or((body, "{}"));
        let fields: serde_json::Map<String, Value> = serde_json::from_str(json)
            .map_err(|e| format!("`CW:{op}:` takes a JSON object of the command's fields: {e}"))?;
        Command::of_fields(op, fields).map_err(|e| format!("`CW:{op}:…` is not a registry command ({OPS}): {e}"))
    }

    fn of_fields(op: &str, mut fields: serde_json::Map<String, Value>) -> Result<Command, serde_json::Error> {
        fields.insert("op".to_string(), Value::String(op.to_string()));
        serde_json::from_value(Value::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_and_bodies_make_the_same_commands() {
        let node = Address([3; 20]);
        let admit = Command::Admit {
            node,
            role: Role::Learner,
        };
        let params = json!({"node": node, "role": "learner"});
        assert_eq!(Command::of_call(Method::MeshAdmit, &params), Some(Ok(admit.clone())));
        let body = format!("admit:{params}");
        assert_eq!(Command::of_body(&body), Ok(admit.clone()));
        assert_eq!(
            Command::of_call(Method::ConsensusWrite, &json!({ "body": body })),
            Some(Ok(admit))
        );
        assert_eq!(
            Command::of_call(Method::RegistrarRelease, &json!({"name": "a.mcom"})),
            Some(Ok(Command::Release { name: "a.mcom".into() }))
        );
        assert_eq!(
            Command::of_call(Method::RegistrarResolve, &json!({"name": "a.mcom"})),
            None
        );
    }

    #[test]
    fn bad_params_are_no_command() {
        for (method, params) in [
            (Method::RegistrarRelease, json!({"name": "a.mcom", "extra": 1})),
            (Method::RegistrarRegister, json!({"name": "a.mcom"})),
            (Method::IamGrant, json!([1, 2])),
            (Method::ConsensusWrite, json!({"body": "nothing:{}"})),
            (
                Method::ConsensusWrite,
                json!({"body": "release:{\"name\":\"a.mcom\"}", "more": 1}),
            ),
        ] {
            assert!(
                matches!(Command::of_call(method, &params), Some(Err(_))),
                "{method} {params}"
            );
        }
    }
}
