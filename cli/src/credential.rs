//! The bearer token: where it comes from, how it is read, and the interceptor that sends it.
//!
//! The token is only ever held as a sensitive metadata value or a [`Secret`]; neither prints it.

use std::fmt;
use std::path::{Path, PathBuf};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;

pub use berth_shared::Secret;

use crate::error::CliError;

/// Where the token for this run comes from, after precedence was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A file holding the token (trailing whitespace is ignored).
    File(PathBuf),
    /// The BERTH_TOKEN environment variable.
    Env(Secret),
    /// No token: calls go out without `authorization`, which only an open coordinator accepts.
    None,
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.0.is_some() { "<token>" } else { "none" };
        write!(f, "Bearer({state})")
    }
}

impl Bearer {
    /// Reads the token from its source and checks that it can travel as a header.
    pub fn load(source: &TokenSource) -> Result<Self, CliError> {
        match source {
            TokenSource::None => Ok(Self(None)),
            TokenSource::Env(secret) => header(secret.expose())
                .map(|v| Self(Some(v)))
                .map_err(CliError::TokenEnv),
            TokenSource::File(path) => {
                let text = read_token_file(path)?;
                header(&text)
                    .map(|v| Self(Some(v)))
                    .map_err(|why| CliError::TokenFile {
                        path: path.clone(),
                        message: why.to_owned(),
                    })
            }
        }
    }

    /// Whether a token is sent at all (to word an UNAUTHENTICATED answer).
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

fn read_token_file(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::TokenFile {
        path: path.to_owned(),
        message: format!("cannot read it: {e}"),
    })
}

/// `Bearer <token>` as a sensitive header value. The reason for a refusal never quotes the token.
fn header(raw: &str) -> Result<MetadataValue<Ascii>, &'static str> {
    let token = raw.trim();
    if token.is_empty() {
        return Err("is empty");
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err("holds characters a token cannot have (spaces, control or non-ASCII)");
    }
    let mut value = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| "holds characters a token cannot have")?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_trimmed_and_sent_as_bearer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-token\n").unwrap();
        let mut bearer = Bearer::load(&TokenSource::File(path)).unwrap();
        let req = bearer.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer s3cret-token"
        );
        assert!(!format!("{bearer:?}").contains("s3cret"));
    }

    #[test]
    fn bad_tokens_are_refused_without_quoting_them() {
        let e = Bearer::load(&TokenSource::Env(Secret::new("two words"))).unwrap_err();
        assert!(!e.to_string().contains("two words"), "{e}");
        let e = Bearer::load(&TokenSource::Env(Secret::new("  \n"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "BERTH_TOKEN is empty; set it to the token alone"
        );
        let e = Bearer::load(&TokenSource::File("/nonexistent/berth-token".into())).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("token file /nonexistent/berth-token: cannot read it")
        );
    }

    #[test]
    fn no_token_sends_no_header() {
        let mut bearer = Bearer::load(&TokenSource::None).unwrap();
        let req = bearer.call(tonic::Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
        assert!(!bearer.is_some());
    }

    #[test]
    fn secrets_do_not_debug_print() {
        assert_eq!(format!("{:?}", Secret::new("abc")), "Secret(<redacted>)");
    }
}
