//! Who may do what in a context (seed 001): readers view, writers also call mutations,
//! admins also grant and revoke roles. Each role includes the ones below it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Writer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    /// The byte stored in the roles table.
    pub fn to_byte(self) -> u8 {
        match self {
            Role::Reader => 1,
            Role::Writer => 2,
            Role::Admin => 3,
        }
    }

    pub fn from_byte(byte: u8) -> Option<Role> {
        match byte {
            1 => Some(Role::Reader),
            2 => Some(Role::Writer),
            3 => Some(Role::Admin),
            _ => None,
        }
    }

    /// Whether this role allows what `needed` allows.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown role `{0}`: expected reader, writer or admin")]
pub struct UnknownRole(String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest_and_round_trip() {
        assert!(Role::Admin.allows(Role::Writer) && Role::Writer.allows(Role::Reader));
        assert!(!Role::Reader.allows(Role::Writer) && !Role::Writer.allows(Role::Admin));
        for role in [Role::Reader, Role::Writer, Role::Admin] {
            assert_eq!(Role::from_byte(role.to_byte()), Some(role));
            assert_eq!(role.as_str().parse::<Role>().ok(), Some(role));
        }
        assert!(Role::from_byte(0).is_none() && "owner".parse::<Role>().is_err());
    }
}
