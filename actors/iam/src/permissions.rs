//! Which permission each service method needs. Defaults cover every method the node
//! serves; operators override per method in the config file.

use std::collections::BTreeMap;

use crate::error::IamError;

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
    pub fn parse(rule: &str) -> Result<Self, String> {
        match rule.trim() {
            "public" => Ok(Permission::Public),
            "authenticated" => Ok(Permission::Authenticated),
            other if is_attribute(other) => Ok(Permission::Attribute(other.to_string())),
            other => Err(format!("`{other}` is not public, authenticated or key=value")),
        }
    }
}

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

#[derive(Debug, Clone)]
pub struct Permissions {
    rules: BTreeMap<String, Permission>,
}

const DEFAULTS: &[(&str, &str)] = &[
    ("iam.challenge", "public"),
    ("iam.login", "public"),
    ("router.ping", "public"),
    ("iam.grant", "role=admin"),
    ("iam.revoke", "role=admin"),
    // What this node replicates is the operator's choice.
    ("ctx.join", "role=admin"),
    ("ctx.leave", "role=admin"),
];

impl Permissions {
    pub fn new(overrides: &BTreeMap<String, String>) -> Result<Self, IamError> {
        let mut rules = BTreeMap::new();
        let defaults = DEFAULTS.iter().map(|(m, r)| (m.to_string(), r.to_string()));
        for (method, rule) in defaults.chain(overrides.clone()) {
            let permission = Permission::parse(&rule).map_err(|message| IamError::Permission {
                method: method.clone(),
                message,
            })?;
            rules.insert(method, permission);
        }
        Ok(Permissions { rules })
    }

    /// Methods without a rule need an authenticated caller: authenticated by default.
    pub fn required(&self, method: &str) -> &Permission {
        self.rules.get(method).unwrap_or(&Permission::Authenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let mut overrides = BTreeMap::new();
        overrides.insert("registrar.register".to_string(), "role=registrant".to_string());
        let permissions = Permissions::new(&overrides).expect("valid");
        assert_eq!(permissions.required("iam.login"), &Permission::Public);
        assert_eq!(
            permissions.required("iam.grant"),
            &Permission::Attribute("role=admin".into())
        );
        assert_eq!(
            permissions.required("registrar.register"),
            &Permission::Attribute("role=registrant".into())
        );
        assert_eq!(permissions.required("anything.else"), &Permission::Authenticated);
    }

    #[test]
    fn bad_rules_and_attributes_are_refused() {
        let mut overrides = BTreeMap::new();
        overrides.insert("x".to_string(), "admins only".to_string());
        assert!(Permissions::new(&overrides).is_err());
        assert!(is_attribute("role=admin"));
        assert!(!is_attribute("Role=admin"));
        assert!(!is_attribute("role="));
        assert!(!is_attribute("role=a b"));
        assert!(!is_attribute("noequals"));
    }
}
