//! `Secret`: a string that must not be printed (a bearer token in the CLI, a one-off age
//! identity in a restore task). `Debug` shows only that it is there; serde reads and writes
//! it as the plain string, so only code that means to send it (a task on the wire) does.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends or uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn a_secret_is_never_shown_but_serializes_whole() {
        let s = Secret::new("AGE-SECRET-KEY-1XYZ");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#""AGE-SECRET-KEY-1XYZ""#
        );
        let back: Secret = serde_json::from_str(r#""k""#).unwrap();
        assert_eq!(back.expose(), "k");
    }
}
