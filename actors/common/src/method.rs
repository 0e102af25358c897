//! The methods a node serves, in one table.
//!
//! A method arrives as a JSON-RPC name (`registrar.resolve`) or as an FQMN the router maps
//! to one (`R:hello.mcom`). Either way it is parsed once into a [`Method`], and everything
//! else comes from the table below: the name, the permission a caller needs unless the
//! operator overrides it (IAM), the params a client must send (errors and `--help`), and
//! the dispatch, a `match` the compiler checks for every method (the router). Adding a
//! method is a row here and an arm there; a row without a permission does not compile.

use std::fmt;
use std::str::FromStr;

/// Who may call a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    /// Anyone, even without credentials (login itself).
    Public,
    /// Any logged-in identity.
    Authenticated,
    /// An identity holding this attribute, e.g. `role=admin`.
    Attribute(String),
}

impl Permission {
    /// `public`, `authenticated` or an attribute (`key=value`), as in the config file.
    pub fn parse(rule: &str) -> Result<Self, String> {
        match rule.trim() {
            "public" => Ok(Permission::Public),
            "authenticated" => Ok(Permission::Authenticated),
            other if is_attribute(other) => Ok(Permission::Attribute(other.to_string())),
            other => Err(format!("`{other}` is not public, authenticated or key=value")),
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Permission::Public => f.write_str("public"),
            Permission::Authenticated => f.write_str("authenticated"),
            Permission::Attribute(attribute) => f.write_str(attribute),
        }
    }
}

/// The attribute of admins: of the mesh when the registry holds it, of one node when
/// its `--admin` names the identity.
pub const ADMIN_ATTRIBUTE: &str = "role=admin";

/// An attribute is `key=value`: key of [a-z0-9_.-], value non-empty without whitespace,
/// 128 bytes at most in all.
pub fn is_attribute(text: &str) -> bool {
    let Some((key, value)) = text.split_once('=') else {
        return false;
    };
    text.len() <= 128
        && !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
        && !value.is_empty()
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// [`is_attribute`], as the 422 a caller who named a bad attribute gets.
pub fn check_attribute(attribute: &str) -> Result<(), crate::CmtpError> {
    if is_attribute(attribute) {
        Ok(())
    } else {
        Err(crate::CmtpError::new(
            crate::Status::UNPROCESSABLE,
            format!("`{attribute}` is not an attribute: write key=value (key of a-z, 0-9, _ . -; value without spaces; 128 bytes at most)"),
        ))
    }
}

/// A method's default permission, as written in the table.
enum Needs {
    Public,
    Authenticated,
    Attribute(&'static str),
}

/// The table: `Variant => "service.name", permission, "params";`, one row per method.
macro_rules! methods {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, $needs:ident $(($attribute:literal))?, $params:literal; )*) => {
        /// A method the node serves.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Method {
            $( $(#[$doc])* $variant, )*
        }

        impl Method {
            /// Every method, in the table's order.
            pub const ALL: &'static [Method] = &[$(Method::$variant),*];

            /// The JSON-RPC name, `<service>.<method>`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Method::$variant => $name,)*
                }
            }

            /// What a caller needs unless the operator's config says otherwise.
            pub fn default_permission(self) -> Permission {
                let needs = match self {
                    $(Method::$variant => Needs::$needs $(($attribute))?,)*
                };
                match needs {
                    Needs::Public => Permission::Public,
                    Needs::Authenticated => Permission::Authenticated,
                    Needs::Attribute(attribute) => Permission::Attribute(attribute.to_string()),
                }
            }

            /// The params a caller sends, as shown in errors and `--help`.
            pub fn params(self) -> &'static str {
                match self {
                    $(Method::$variant => $params,)*
                }
            }
        }
    };
}

methods! {
    IamChallenge => "iam.challenge", Public, "{address, client_nonce?}";
    IamLogin => "iam.login", Public, "{session, signature}";
    IamWhoami => "iam.whoami", Authenticated, "no params";
    IamGrant => "iam.grant", Attribute("role=admin"), "{address, attribute}";
    IamRevoke => "iam.revoke", Attribute("role=admin"), "{address, attribute}";
    IamPeers => "iam.peers", Authenticated, "no params";
    RegistrarRegister => "registrar.register", Authenticated, "{name, target}";
    RegistrarResolve => "registrar.resolve", Authenticated, "{name, consistency?: linearizable|local}";
    RegistrarTransfer => "registrar.transfer", Authenticated, "{name, to}";
    RegistrarRelease => "registrar.release", Authenticated, "{name}";
    RegistrarList => "registrar.list", Authenticated, "{owner?, consistency?}";
    /// Admission is decided by the registry: mesh admins only (403 for anyone else).
    MeshAdmit => "mesh.admit", Authenticated, "{node, role: voter|learner|member}";
    MeshRemove => "mesh.remove", Authenticated, "{node}";
    MeshNodes => "mesh.nodes", Authenticated, "{consistency?}";
    EventsPublish => "events.publish", Authenticated, "{topic, data}";
    EventsRecent => "events.recent", Authenticated, "{topic, limit?}";
    /// This node's audit chain made durable and verified (reads every entry), and the
    /// events actor's counters.
    EventsAudit => "events.audit", Attribute("role=admin"), "no params";
    RouterPing => "router.ping", Public, "no params";
    RouterInfo => "router.info", Authenticated, "no params";
    AppDeploy => "app.deploy", Authenticated, "{name, version, wasm: base64}";
    AppList => "app.list", Authenticated, "no params";
    CtxCreate => "ctx.create", Authenticated, "{app, version?}";
    CtxList => "ctx.list", Authenticated, "no params";
    CtxCall => "ctx.call", Authenticated, "{context, method, args?, version?}";
    CtxView => "ctx.view", Authenticated, "{context, method, args?, version?}";
    CtxGrant => "ctx.grant", Authenticated, "{context, address, role: reader|writer|admin}";
    CtxRevoke => "ctx.revoke", Authenticated, "{context, address}";
    CtxRoot => "ctx.root", Authenticated, "{context}";
    CtxInvite => "ctx.invite", Authenticated, "{context, member: node address, seats?}";
    CtxMembers => "ctx.members", Authenticated, "{context}";
    // What this node replicates is the operator's choice.
    CtxJoin => "ctx.join", Attribute("role=admin"), "{context: full id, wait?}";
    CtxLeave => "ctx.leave", Attribute("role=admin"), "{context: full id}";
    CtxStatus => "ctx.status", Authenticated, "{context: full id}";
    /// `C:<body>`: `C:status` or `C:nodes`.
    ConsensusRead => "consensus.read", Authenticated, "{body}";
    /// `CW:<op>:<json>`: a registry command.
    ConsensusWrite => "consensus.write", Authenticated, "{body}";
}

impl Method {
    /// The service part of the name (`registrar` for `registrar.resolve`).
    pub fn service(self) -> &'static str {
        self.name().split_once('.').map_or(self.name(), |(service, _)| service)
    }

    /// Every method's name, comma-separated (for error messages).
    pub fn list() -> String {
        Method::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no method of the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown method `{0}`; the node serves {list}", list = Method::list())]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .iter()
            .copied()
            .find(|m| m.name() == name)
            .ok_or_else(|| UnknownMethod(name.chars().take(80).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_names_are_distinct() {
        let mut names = std::collections::BTreeSet::new();
        for &method in Method::ALL {
            assert_eq!(method.name().parse::<Method>(), Ok(method));
            assert!(names.insert(method.name()), "{method} twice");
            assert!(method.name().contains('.'), "{method} has no service");
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        assert_eq!(Method::IamLogin.default_permission(), Permission::Public);
        assert_eq!(Method::RouterPing.default_permission(), Permission::Public);
        assert_eq!(
            Method::CtxJoin.default_permission(),
            Permission::Attribute("role=admin".into())
        );
        assert_eq!(Method::CtxCall.default_permission(), Permission::Authenticated);
        assert_eq!(Method::RegistrarResolve.service(), "registrar");
    }

    #[test]
    fn unknown_names_are_refused_with_the_list() {
        let err = "registrar.frobnicate".parse::<Method>().unwrap_err();
        assert!(err.to_string().contains("registrar.frobnicate"), "{err}");
        assert!(err.to_string().contains("ctx.join"), "{err}");
        assert!("".parse::<Method>().is_err());
    }

    #[test]
    fn permission_rules_parse() {
        assert_eq!(Permission::parse("public"), Ok(Permission::Public));
        assert_eq!(
            Permission::parse(" role=registrant "),
            Ok(Permission::Attribute("role=registrant".into()))
        );
        assert!(Permission::parse("admins only").is_err());
        assert!(is_attribute("role=admin"));
        assert!(!is_attribute("Role=admin"));
        assert!(!is_attribute("role="));
        assert!(!is_attribute("role=a b"));
        assert!(!is_attribute("noequals"));
    }
}
