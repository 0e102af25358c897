//! Which permission each method needs: the method table's defaults (`cmesh_common::method`),
//! with the operator's per-method overrides from the config file on top. An override that
//! names no method is refused at start, so a typo cannot leave a method unprotected.

use std::collections::BTreeMap;

use cmesh_common::method::{Method, Permission};

use crate::error::IamError;

#[derive(Debug, Clone)]
pub struct Permissions {
    overrides: BTreeMap<Method, Permission>,
}

impl Permissions {
    pub fn new(overrides: &BTreeMap<String, String>) -> Result<Self, IamError> {
        let mut parsed = BTreeMap::new();
        for (name, rule) in overrides {
            let method: Method =
                name.parse()
                    .map_err(|e: cmesh_common::method::UnknownMethod| IamError::Permission {
                        method: name.clone(),
                        message: e.to_string(),
                    })?;
            let permission = Permission::parse(rule).map_err(|message| IamError::Permission {
                method: name.clone(),
                message,
            })?;
            parsed.insert(method, permission);
        }
        Ok(Permissions { overrides: parsed })
    }

    /// What `method` needs; a method the node does not serve (`None`) needs an
    /// authenticated caller, who then hears that it does not exist.
    pub fn required(&self, method: Option<Method>) -> Permission {
        match method {
            Some(method) => self
                .overrides
                .get(&method)
                .cloned()
                .unwrap_or_else(|| method.default_permission()),
            None => Permission::Authenticated,
        }
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
        assert_eq!(permissions.required(Some(Method::IamLogin)), Permission::Public);
        assert_eq!(
            permissions.required(Some(Method::IamGrant)),
            Permission::Attribute("role=admin".into())
        );
        assert_eq!(
            permissions.required(Some(Method::RegistrarRegister)),
            Permission::Attribute("role=registrant".into())
        );
        assert_eq!(permissions.required(None), Permission::Authenticated);
    }

    #[test]
    fn bad_rules_and_unknown_methods_are_refused() {
        let mut overrides = BTreeMap::new();
        overrides.insert("iam.whoami".to_string(), "admins only".to_string());
        assert!(Permissions::new(&overrides).is_err());
        let mut overrides = BTreeMap::new();
        overrides.insert("registrar.regster".to_string(), "public".to_string());
        let err = Permissions::new(&overrides).expect_err("a typo names no method");
        assert!(err.to_string().contains("registrar.regster"), "{err}");
    }
}
