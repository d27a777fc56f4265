//! One-time enrollment tokens: an admin creates one bound to a host, with a short lifetime;
//! `berth-agent enroll` on that host exchanges it, once, for the agent's long-lived token.
//!
//! An enrollment token authenticates like any token but the policy lets it call
//! `TokenService.EnrollAgent` only, and lets nothing else call that method. The exchange spends
//! the token and inserts the agent token in one transaction.

use std::time::{Duration, SystemTime};

use berth_shared::time::unix_ms;
use berth_shared::{HostId, Role};

use super::{AuthError, Principal, Tokens, hash_token, new_secret};
use crate::store::{NewToken, StoreError, TokenRecord, TokenScope};

impl Tokens {
    /// Creates an enrollment token for `host_id`, valid for `ttl`; returns its record and its
    /// plaintext, which is never stored.
    pub async fn issue_enrollment(
        &self,
        host_id: &HostId,
        description: &str,
        ttl: Duration,
    ) -> Result<(TokenRecord, String), AuthError> {
        if ttl.is_zero() {
            return Err(AuthError::EnrollmentTtlRequired);
        }
        let (token_id, token) = new_secret();
        let now = unix_ms(SystemTime::now());
        let description = match description {
            "" => format!("enrollment of host {host_id}"),
            d => d.to_owned(),
        };
        let record = self
            .store
            .insert_enrollment_token(&NewToken {
                token_id: &token_id,
                token_hash: &hash_token(&token),
                role: Role::Agent.as_str(),
                host_id: Some(host_id.as_str()),
                description: &description,
                created_at_ms: now,
                expires_at_ms: Some(now.saturating_add(ttl.as_millis() as i64)),
                scope: &TokenScope::default(),
            })
            .await?;
        Ok((record, token))
    }

    /// Spends the caller's enrollment token and issues the agent token of the host it is bound
    /// to; `host_id`, when given, must be that host. The agent token does not expire; the
    /// host's earlier agent tokens are revoked in the same transaction (a re-enrolled host has
    /// one live agent token).
    pub async fn enroll(
        &self,
        caller: &Principal,
        host_id: Option<&HostId>,
    ) -> Result<(TokenRecord, String, HostId), AuthError> {
        if !caller.enrollment {
            return Err(AuthError::EnrollmentRequired {
                role: caller.role,
                path: "/berth.v1.TokenService/EnrollAgent".to_owned(),
            });
        }
        let bound = caller.host_id.clone().unwrap_or_default();
        if let Some(asked) = host_id
            && asked.as_str() != bound
        {
            return Err(AuthError::EnrollmentHostMismatch {
                bound,
                asked: asked.to_string(),
            });
        }
        let host_id = HostId::new(bound).map_err(|_| AuthError::Invalid)?;
        let (token_id, token) = new_secret();
        let now = unix_ms(SystemTime::now());
        let description = format!(
            "agent of host {host_id}, enrolled with token {}",
            caller.token_id
        );
        let agent = NewToken {
            token_id: &token_id,
            token_hash: &hash_token(&token),
            role: Role::Agent.as_str(),
            host_id: Some(host_id.as_str()),
            description: &description,
            created_at_ms: now,
            expires_at_ms: None,
            scope: &TokenScope::default(),
        };
        match self
            .store
            .redeem_enrollment(&caller.token_id, &agent, now)
            .await?
        {
            Some(record) => Ok((record, token, host_id)),
            // Spent between authentication and now: a concurrent exchange won.
            None => {
                let spent = self.store.get_token(&caller.token_id).await?;
                Err(refusal(&spent, now))
            }
        }
    }

    /// Why the token whose hash is `hash` is not live: a precise answer for an enrollment
    /// token (its holder has the secret, so nothing leaks), the generic one otherwise.
    /// Why a token is not live, and the reason `berth_auth_failures_total` counts it under.
    pub(super) async fn why_not_live(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<(AuthError, &'static str), StoreError> {
        let found = self.store.find_token_by_hash(hash).await?;
        let reason = match &found {
            None => "unknown",
            Some(t) if t.revoked_at_ms.is_some() => "revoked",
            Some(t) if t.enrollment && t.used_at_ms.is_some() => "enrollment_used",
            Some(t) if t.expires_at_ms.is_some_and(|at| at <= now) => "expired",
            Some(_) => "unknown",
        };
        Ok(match found {
            Some(t) if t.enrollment => (refusal(&t, now), reason),
            _ => (AuthError::Invalid, reason),
        })
    }
}

fn refusal(t: &TokenRecord, now: i64) -> AuthError {
    if t.revoked_at_ms.is_some() {
        return AuthError::Invalid;
    }
    if let Some(at) = t.used_at_ms {
        return AuthError::EnrollmentUsed { at: when(at) };
    }
    match t.expires_at_ms {
        Some(at) if at <= now => AuthError::EnrollmentExpired { at: when(at) },
        _ => AuthError::Invalid,
    }
}

/// `at 2026-05-01T10:00:00Z`, for messages.
fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            format!(
                "at {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        })
        .unwrap_or_else(|| format!("at unix ms {ms}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(used: Option<i64>, expires: Option<i64>, revoked: Option<i64>) -> TokenRecord {
        TokenRecord {
            token_id: "t".into(),
            role: "agent".into(),
            host_id: Some("h".into()),
            description: String::new(),
            created_at_ms: 0,
            expires_at_ms: expires,
            revoked_at_ms: revoked,
            last_used_ms: None,
            enrollment: true,
            used_at_ms: used,
            scope: TokenScope::default(),
        }
    }

    #[test]
    fn a_dead_enrollment_token_says_why() {
        let used = refusal(&record(Some(1_000), Some(9_000), None), 2_000).to_string();
        assert!(
            used.contains("already used (at 1970-01-01T00:00:01Z)"),
            "{used}"
        );
        let expired = refusal(&record(None, Some(1_000), None), 2_000).to_string();
        assert!(
            expired.contains("expired (at 1970-01-01T00:00:01Z)"),
            "{expired}"
        );
        assert!(matches!(
            refusal(&record(None, None, Some(1)), 2_000),
            AuthError::Invalid
        ));
    }
}
