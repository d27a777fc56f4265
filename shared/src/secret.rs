//! `Secret`: a string that is a secret (a one-off age identity in a restore task). Its
//! `Debug` and `Display` never show it; serde reads and writes it as the plain string, so
//! only code that means to send it (the task on the wire) does.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(secret, {} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn a_secret_shows_only_its_length_but_serializes_whole() {
        let s = Secret::new("AGE-SECRET-KEY-1XYZ");
        assert_eq!(format!("{s:?} {s}"), "Secret(19 bytes) (secret, 19 bytes)");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#""AGE-SECRET-KEY-1XYZ""#
        );
        let back: Secret = serde_json::from_str(r#""k""#).unwrap();
        assert_eq!(back.expose(), "k");
    }
}
