//! API tokens by purpose, read from files. A token is never logged, printed or put in an
//! error: `Debug` shows `Token(<redacted>)` and the header value is marked sensitive.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::header::HeaderValue;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// What a call needs its token for. Reads use the `read` token when one is configured (a
/// read-only scoped token keeps the blast radius small), else the provisioning token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenPurpose {
    Read,
    Provisioning,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::Read => "read",
            TokenPurpose::Provisioning => "provisioning",
        }
    }
}

/// A DigitalOcean API token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("cannot read {purpose} token file {path}")]
    Read {
        purpose: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{purpose} token file {path} is empty")]
    Empty {
        purpose: &'static str,
        path: PathBuf,
    },
    #[error("{purpose} token {origin} holds characters not allowed in an http header")]
    Invalid {
        purpose: &'static str,
        origin: String,
    },
}

impl Token {
    /// Reads a token file (surrounding whitespace and a final newline are ignored).
    pub fn from_file(purpose: TokenPurpose, path: &Path) -> Result<Token, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            purpose: purpose.as_str(),
            path: path.to_owned(),
            source,
        })?;
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenError::Empty {
                purpose: purpose.as_str(),
                path: path.to_owned(),
            });
        }
        Self::parse(purpose, text, &format!("in {}", path.display()))
    }

    /// A token given directly (tests, tools). `origin` names where it came from in errors.
    pub fn new(purpose: TokenPurpose, secret: &str) -> Result<Token, TokenError> {
        Self::parse(purpose, secret.trim(), "given")
    }

    fn parse(purpose: TokenPurpose, text: &str, origin: &str) -> Result<Token, TokenError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Invalid {
                purpose: purpose.as_str(),
                origin: origin.to_owned(),
            });
        }
        Ok(Token(Arc::from(text)))
    }

    /// `Bearer <token>`, marked sensitive so no HTTP layer logs it.
    pub(crate) fn authorization(&self) -> HeaderValue {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.0))
            .expect("checked to be printable ascii");
        v.set_sensitive(true);
        v
    }

    /// A short, non-reversible name for the token (the first 8 hex digits of its SHA-256), to
    /// tell tokens apart in logs and to share one rate limiter between equal tokens.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        hex::encode(&digest[..4])
    }
}

/// The tokens a coordinator holds; at least one.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub read: Option<Token>,
    pub provisioning: Option<Token>,
}

impl Tokens {
    /// Reads whichever token files are given.
    pub fn from_files(
        read: Option<&Path>,
        provisioning: Option<&Path>,
    ) -> Result<Tokens, TokenError> {
        Ok(Tokens {
            read: read
                .map(|p| Token::from_file(TokenPurpose::Read, p))
                .transpose()?,
            provisioning: provisioning
                .map(|p| Token::from_file(TokenPurpose::Provisioning, p))
                .transpose()?,
        })
    }

    /// One token for both purposes.
    pub fn single(token: Token) -> Tokens {
        Tokens {
            read: Some(token.clone()),
            provisioning: Some(token),
        }
    }

    /// The token for a purpose: reads fall back to the provisioning token; writes never use
    /// the read token.
    pub fn for_purpose(&self, purpose: TokenPurpose) -> Option<&Token> {
        match purpose {
            TokenPurpose::Read => self.read.as_ref().or(self.provisioning.as_ref()),
            TokenPurpose::Provisioning => self.provisioning.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "dop_v1_0123456789abcdef";

    #[test]
    fn debug_and_errors_never_show_the_token() {
        let t = Token::new(TokenPurpose::Read, SECRET).unwrap();
        let tokens = Tokens::single(t.clone());
        assert!(!format!("{t:?} {tokens:?}").contains(SECRET));
        assert!(t.authorization().is_sensitive());
        assert_eq!(t.fingerprint().len(), 8);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{SECRET}\u{7}\n")).unwrap();
        let err = Token::from_file(TokenPurpose::Provisioning, &path).unwrap_err();
        assert!(!format!("{err} {err:?}").contains(SECRET), "{err:?}");
    }

    #[test]
    fn token_files_are_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("  {SECRET}\n")).unwrap();
        let t = Token::from_file(TokenPurpose::Read, &path).unwrap();
        assert_eq!(t, Token::new(TokenPurpose::Read, SECRET).unwrap());
        std::fs::write(&path, "\n").unwrap();
        let err = Token::from_file(TokenPurpose::Read, &path).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        let err = Token::from_file(TokenPurpose::Read, &dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn writes_never_fall_back_to_the_read_token() {
        let read = Token::new(TokenPurpose::Read, "r").unwrap();
        let tokens = Tokens {
            read: Some(read.clone()),
            provisioning: None,
        };
        assert_eq!(tokens.for_purpose(TokenPurpose::Read), Some(&read));
        assert_eq!(tokens.for_purpose(TokenPurpose::Provisioning), None);
    }
}
