use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::random::{RandomError, SecureRandom};

/// Checks the shape shared by principal and agent names: 1–64 characters,
/// lowercase ASCII letters, digits, `.`, `_` and `-`, starting with a letter
/// or digit. Names are identities: they appear in credentials (`sub`,
/// `act.sub`) and in Cedar entity ids, so they are never reused.
fn check_name(kind: &'static str, s: &str) -> Result<(), InputError> {
    let ok_len = (1..=64).contains(&s.len());
    let mut chars = s.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if ok_len && ok_first && ok_rest {
        Ok(())
    } else {
        Err(InputError::BadName {
            kind,
            value: s.chars().take(80).collect(),
        })
    }
}

/// The OpenAPI schema of a newtype that serde reads and writes as a string
/// (`try_from = "String"`): a string of the shape `TryFrom` accepts.
macro_rules! openapi_string {
    ($name:ident, $pattern:expr) => {
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some($pattern))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

/// An agent's name: a registered agent's name, or an ephemeral sub-agent's,
/// `label@mission-id` (the label its delegator gave it and the id of the
/// one mission it exists for). The `@` form can never be registered, so an
/// ephemeral sub-agent never shares a name with a registered agent.
fn check_agent_name(kind: &'static str, s: &str) -> Result<(), InputError> {
    match s.split_once('@') {
        None => check_name(kind, s),
        Some((label, mission)) => {
            if label.len() > 32 || MissionId::try_from(mission.to_owned()).is_err() {
                return Err(InputError::BadName {
                    kind,
                    value: s.chars().take(80).collect(),
                });
            }
            check_name(kind, label)
        }
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:ident, $pattern:literal) => {
        openapi_string!($name, $pattern);

        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InputError;
            fn try_from(s: String) -> Result<Self, InputError> {
                $check($kind, &s)?;
                Ok(Self(s))
            }
        }

        impl FromStr for $name {
            type Err = InputError;
            fn from_str(s: &str) -> Result<Self, InputError> {
                Self::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A principal's name, e.g. `alice`: who delegates. `User::"alice"` in Cedar.
    PrincipalName,
    "principal",
    check_name,
    "^[a-z0-9][a-z0-9._-]{0,63}$"
);
name_type!(
    /// An agent's name: a registered agent's, e.g. `billing-bot`, or an
    /// ephemeral sub-agent's, e.g. `summarizer@msn_…` (see
    /// [`AgentName::is_ephemeral`]).
    AgentName,
    "agent",
    check_agent_name,
    "^[a-z0-9][a-z0-9._-]{0,63}(@msn_[0-9a-f]{32})?$"
);

impl AgentName {
    /// Whether this names an ephemeral sub-agent (`label@mission-id`): an
    /// identity that exists only for that one mission, whose only proof is
    /// the mission key; never registered, never a delegation's target.
    #[must_use]
    pub fn is_ephemeral(&self) -> bool {
        self.0.contains('@')
    }

    /// The name of an ephemeral sub-agent labelled `label` for `mission`.
    pub fn ephemeral(label: &str, mission: &MissionId) -> Result<Self, InputError> {
        Self::try_from(format!("{label}@{mission}"))
    }
}

macro_rules! random_id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        openapi_string!($name, concat!("^", $prefix, "[0-9a-f]{32}$"));

        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// A fresh id: the prefix and 128 random bits in lowercase hex.
            pub fn generate(rng: &dyn SecureRandom) -> Result<Self, RandomError> {
                let mut bytes = [0u8; 16];
                rng.fill(&mut bytes)?;
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                Ok(Self(format!("{}{hex}", $prefix)))
            }

            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InputError;
            fn try_from(s: String) -> Result<Self, InputError> {
                let ok = s.strip_prefix($prefix).is_some_and(|rest| {
                    rest.len() == 32 && rest.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
                });
                if ok {
                    Ok(Self(s))
                } else {
                    Err(InputError::BadId { kind: $kind, value: s.chars().take(80).collect() })
                }
            }
        }

        impl FromStr for $name {
            type Err = InputError;
            fn from_str(s: &str) -> Result<Self, InputError> {
                Self::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

random_id_type!(
    /// A mission's id, `msn_` and 32 hex digits.
    MissionId,
    "msn_",
    "mission"
);
random_id_type!(
    /// An API token's public id, `tok_` and 32 hex digits (not the secret).
    ApiTokenId,
    "tok_",
    "token"
);

random_id_type!(
    /// An approval request's id, `apr_` and 32 hex digits.
    ApprovalId,
    "apr_",
    "approval"
);

random_id_type!(
    /// A grant's id, `grt_` and 32 hex digits.
    GrantId,
    "grt_",
    "grant"
);

/// What a principal may do on the authority itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Manages principals, all agents and missions, and revokes anything.
    Admin,
    /// Registers own agents, delegates missions to them, revokes their own.
    Member,
}

impl Role {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }
}

impl FromStr for Role {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, InputError> {
        match s {
            "admin" => Ok(Self::Admin),
            "member" => Ok(Self::Member),
            other => Err(InputError::BadRole(other.chars().take(40).collect())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    #[test]
    fn names_accept_the_documented_shape_only() {
        for ok in ["alice", "a", "billing-bot", "svc.v2_x", "9lives"] {
            assert!(ok.parse::<PrincipalName>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Alice",
            "-x",
            "a b",
            "a/b",
            "ä",
            &"a".repeat(65),
            "User::\"x\"",
        ] {
            assert!(bad.parse::<AgentName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_ids_round_trip_and_differ() {
        let a = MissionId::generate(&OsRandom).unwrap();
        let b = MissionId::generate(&OsRandom).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().parse::<MissionId>().unwrap(), a);
        assert!("msn_XYZ".parse::<MissionId>().is_err());
        assert!(
            a.as_str()
                .replace("msn_", "tok_")
                .parse::<MissionId>()
                .is_err()
        );
    }
}
