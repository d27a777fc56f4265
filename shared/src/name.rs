//! Names that end up in paths, object keys or Docker labels, validated once at the boundary.
//!
//! A valid name is 1..=128 characters of ASCII letters, digits, `.`, `_` and `-`, does not start
//! with `.` or `-`, and is not `.` or `..`. That excludes `/`, `\`, `:`, NUL, whitespace and every
//! separator our layouts use, so a name can never escape its directory or split a key.

use std::fmt;
use std::str::FromStr;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} {name:?} is longer than {max} characters")]
    TooLong {
        what: &'static str,
        name: String,
        max: usize,
    },
    #[error("{what} {name:?} contains {found}; use only letters, digits, '.', '_' and '-'")]
    BadChar {
        what: &'static str,
        name: String,
        found: String,
    },
    #[error("{what} {name:?} must not start with '.' or '-'")]
    BadStart { what: &'static str, name: String },
}

const MAX_LEN: usize = 128;

fn validate(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > MAX_LEN {
        return Err(NameError::TooLong {
            what,
            name: name.to_owned(),
            max: MAX_LEN,
        });
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        let found = match c {
            '\0' => "a NUL byte".to_owned(),
            '/' | '\\' => format!("a path separator {c:?}"),
            c if c.is_whitespace() => "whitespace".to_owned(),
            c => format!("{c:?}"),
        };
        return Err(NameError::BadChar {
            what,
            name: name.to_owned(),
            found,
        });
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(NameError::BadStart {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl $ty {
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                validate($what, &name)?;
                Ok(Self(name))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// An app's name: its folder under the warm root and apps root, and the first field of
    /// its archive keys.
    AppName,
    "app name"
);
name_type!(
    /// A Docker stack (swarm) or compose project name.
    StackName,
    "stack name"
);
name_type!(
    /// A Docker volume's name, as it appears in a warm snapshot (`volumes/<name>.tar`).
    VolumeName,
    "volume name"
);
name_type!(
    /// A host's stable identity, chosen by its agent on first start or set in its config.
    HostId,
    "host id"
);

impl StackName {
    /// Co-op Cloud's convention: the stack of `app.example.org` is `app_example_org`.
    pub fn from_domain(domain: &str) -> Result<Self, NameError> {
        Self::new(domain.replace('.', "_"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["keycloak", "app.example.org", "a_b-c.9", "X"] {
            AppName::new(n).unwrap();
        }
    }

    #[test]
    fn refuses_names_that_could_escape_or_split_a_key() {
        for n in [
            "", ".", "..", "../x", "a/b", "a\\b", "a:b", "a\0b", "a b", ".hidden", "-x",
        ] {
            assert!(AppName::new(n).is_err(), "{n:?} should be refused");
        }
        assert!(AppName::new("a".repeat(129)).is_err());
        let err = AppName::new("a/b").unwrap_err().to_string();
        assert!(err.contains("path separator"), "{err}");
    }

    #[test]
    fn stack_from_domain_follows_coop_cloud() {
        assert_eq!(
            StackName::from_domain("kc.ci.example.org")
                .unwrap()
                .as_str(),
            "kc_ci_example_org"
        );
    }
}
