//! `TokenService`: create, list and revoke API tokens (admin only, by policy), and the
//! exchange of a one-time enrollment token for an agent token (enrollment tokens only).

use std::time::{Duration, SystemTime};

use berth_proto::v1 as pb;
use berth_shared::time::unix_ms;
use berth_shared::{HostId, Role};
use tonic::{Request, Response, Status};

use super::principal;
use crate::auth::Tokens;
use crate::error::ApiError;
use crate::store::{Store, TokenRecord, TokenScope};

#[derive(Clone, Debug)]
pub struct TokensService {
    pub store: Store,
    pub tokens: Tokens,
}

pub(crate) fn token_info(t: TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        token_id: t.token_id,
        role: t.role,
        host_id: t.host_id.unwrap_or_default(),
        description: t.description,
        created_at_ms: t.created_at_ms,
        expires_at_ms: t.expires_at_ms.unwrap_or_default(),
        revoked_at_ms: t.revoked_at_ms.unwrap_or_default(),
        last_used_ms: t.last_used_ms.unwrap_or_default(),
        used_at_ms: t.used_at_ms.unwrap_or_default(),
        scope_hosts: t.scope.hosts,
        scope_apps: t.scope.apps,
    }
}

/// A requested scope with each name checked.
fn scope_of(hosts: Vec<String>, apps: Vec<String>) -> Result<TokenScope, ApiError> {
    for h in &hosts {
        HostId::new(h.as_str()).map_err(ApiError::from)?;
    }
    for a in &apps {
        berth_shared::AppName::new(a.as_str()).map_err(ApiError::from)?;
    }
    Ok(TokenScope { hosts, apps })
}

#[tonic::async_trait]
impl pb::token_service_server::TokenService for TokensService {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let r = req.into_inner();
        let role: Role = r
            .role
            .parse()
            .map_err(|e: berth_shared::role::UnknownRole| {
                ApiError::InvalidArgument(e.to_string())
            })?;
        let host = match r.host_id.as_str() {
            "" => None,
            h => Some(HostId::new(h).map_err(ApiError::from)?),
        };
        let ttl = (r.ttl_secs > 0).then(|| Duration::from_secs(r.ttl_secs));
        let scope = scope_of(r.scope_hosts, r.scope_apps)?;
        let (record, token) = self
            .tokens
            .issue_scoped(role, host.as_ref(), &scope, &r.description, ttl)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(token_id = record.token_id, role = %role, "token created");
        Ok(Response::new(pb::CreateTokenResponse {
            info: Some(token_info(record)),
            token,
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let all = req.into_inner().include_revoked;
        let tokens = self.store.list_tokens(all).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.into_iter().map(token_info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let id = req.into_inner().token_id;
        let record = self
            .store
            .revoke_token(&id, unix_ms(SystemTime::now()))
            .await
            .map_err(ApiError::from)?;
        tracing::info!(token_id = record.token_id, "token revoked");
        Ok(Response::new(token_info(record)))
    }

    async fn enroll_agent(
        &self,
        req: Request<pb::EnrollAgentRequest>,
    ) -> Result<Response<pb::EnrollAgentResponse>, Status> {
        let caller = principal(&req)?;
        let asked = match req.into_inner().host_id.as_str() {
            "" => None,
            h => Some(HostId::new(h).map_err(ApiError::from)?),
        };
        let (record, token, host) = self
            .tokens
            .enroll(&caller, asked.as_ref())
            .await
            .map_err(ApiError::from)?;
        tracing::info!(
            host_id = %host,
            enrollment_token_id = caller.token_id,
            token_id = record.token_id,
            "agent enrolled"
        );
        Ok(Response::new(pb::EnrollAgentResponse {
            token,
            host_id: host.to_string(),
        }))
    }
}
