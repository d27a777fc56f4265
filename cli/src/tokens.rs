//! `berth token create|list|revoke`: bearer tokens with a role (TokenService, admin only).
//!
//! The new token's secret is printed once by `create` and nowhere else.

use std::io::Write;
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_shared::{AppName, HostId, Role};
use serde::Serialize;

use crate::connect::Connection;
use crate::duration::parse_duration;
use crate::error::CliError;
use crate::output::{OutputFormat, Table, relative_time, write_json};

/// `berth token create`.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// Role of the new token: admin, operator, ci or agent
    #[arg(long)]
    pub role: Role,
    /// For --role agent (required, once): the host the token is bound to. For --role ci: a
    /// host its warm restores may run on (repeat for several; none: any host)
    #[arg(long, value_name = "HOST_ID")]
    pub host: Vec<HostId>,
    /// For --role ci: an app its warm restores may restore (repeat for several; none: any app)
    #[arg(long, value_name = "APP")]
    pub app: Vec<AppName>,
    /// What the token is for, e.g. "gitlab runner 3"
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Lifetime, e.g. 30m, 12h, 7d or 1h30m [default: never expires]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
}

/// The request for `token create`, checked as the coordinator would check it, so a wrong
/// combination fails here and nothing is sent.
pub fn create_request(args: &CreateArgs) -> Result<pb::CreateTokenRequest, CliError> {
    fn names<T: ToString>(v: &[T]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }
    let (host_id, scope_hosts) = match (args.role, args.host.as_slice()) {
        (Role::Agent, [host]) => (host.to_string(), Vec::new()),
        (Role::Agent, _) => {
            return Err(CliError::InvalidArgument(
                "an agent token is bound to one host: pass --host HOST_ID".to_owned(),
            ));
        }
        (Role::Ci, hosts) => (String::new(), names(hosts)),
        (role, [_, ..]) => {
            return Err(CliError::InvalidArgument(format!(
                "--host is for --role agent (its host) and --role ci (its scope); role {role} \
                 takes no host"
            )));
        }
        (_, []) => (String::new(), Vec::new()),
    };
    if args.role != Role::Ci && !args.app.is_empty() {
        return Err(CliError::InvalidArgument(format!(
            "--app scopes a ci token; a {} token has no app scope",
            args.role
        )));
    }
    Ok(pb::CreateTokenRequest {
        role: args.role.to_string(),
        host_id,
        description: args.description.clone().unwrap_or_default(),
        ttl_secs: args.ttl.map_or(0, |d| d.as_secs()),
        scope_hosts,
        scope_apps: names(&args.app),
    })
}

/// A token's public record as `--output json` shows it; absent times are null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenView {
    pub token_id: String,
    pub role: String,
    pub host_id: Option<String>,
    pub description: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
    /// When an enrollment token enrolled its host (it cannot be used again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_at_ms: Option<i64>,
    /// A ci token's scope: the hosts and apps its warm restores may touch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scope_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scope_apps: Vec<String>,
}

impl TokenView {
    /// The HOST column: an agent token's host, or a ci token's scope.
    fn host_cell(&self) -> String {
        let mut cell = self
            .host_id
            .clone()
            .unwrap_or_else(|| self.scope_hosts.join(","));
        if !self.scope_apps.is_empty() {
            if cell.is_empty() {
                cell.push('*');
            }
            cell.push_str(&format!(" apps={}", self.scope_apps.join(",")));
        }
        cell
    }
}

impl From<&pb::TokenInfo> for TokenView {
    fn from(t: &pb::TokenInfo) -> Self {
        Self {
            token_id: t.token_id.clone(),
            role: t.role.clone(),
            host_id: (!t.host_id.is_empty()).then(|| t.host_id.clone()),
            description: t.description.clone(),
            created_at_ms: t.created_at_ms,
            expires_at_ms: positive(t.expires_at_ms),
            revoked_at_ms: positive(t.revoked_at_ms),
            last_used_ms: positive(t.last_used_ms),
            used_at_ms: positive(t.used_at_ms),
            scope_hosts: t.scope_hosts.clone(),
            scope_apps: t.scope_apps.clone(),
        }
    }
}

/// `token create --output json`: the new token with its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedView {
    pub token_id: String,
    pub role: String,
    pub host_id: Option<String>,
    pub token: String,
    pub expires_at_ms: Option<i64>,
}

/// `berth token create`: the token alone on stdout (table mode), its id and role on stderr.
pub async fn create(
    conn: &Connection,
    req: pb::CreateTokenRequest,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let resp = conn
        .tokens()
        .create_token(req)
        .await
        .map_err(|s| conn.rpc_error(s))?
        .into_inner();
    let info = resp
        .info
        .as_ref()
        .ok_or(CliError::Protocol("the token's record"))?;
    let info = TokenView::from(info);
    match format {
        OutputFormat::Table => {
            writeln!(out, "{}", resp.token)?;
            eprintln!("{}", created_note(&info));
        }
        OutputFormat::Json => write_json(
            out,
            &CreatedView {
                token_id: info.token_id,
                role: info.role,
                host_id: info.host_id,
                token: resp.token,
                expires_at_ms: info.expires_at_ms,
            },
        )?,
    }
    Ok(())
}

/// The stderr line after `token create`: what was made, without the secret.
pub fn created_note(info: &TokenView) -> String {
    let host = match (
        &info.host_id,
        info.scope_hosts.is_empty() && info.scope_apps.is_empty(),
    ) {
        (Some(h), _) => format!(", bound to host {h}"),
        (None, false) => format!(", scoped to {}", info.host_cell()),
        (None, true) => String::new(),
    };
    format!(
        "created token {} with role {}{host}; it is shown only this once",
        info.token_id, info.role
    )
}

/// `berth token list [--all]`.
pub async fn list(
    conn: &Connection,
    include_revoked: bool,
    format: OutputFormat,
    now_ms: i64,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let tokens = conn
        .tokens()
        .list_tokens(pb::ListTokensRequest { include_revoked })
        .await
        .map_err(|s| conn.rpc_error(s))?
        .into_inner()
        .tokens;
    let views: Vec<TokenView> = tokens.iter().map(TokenView::from).collect();
    match format {
        OutputFormat::Table => write_token_table(&views, now_ms, out)?,
        OutputFormat::Json => write_json(out, &views)?,
    }
    Ok(())
}

/// `berth token revoke TOKEN_ID`.
pub async fn revoke(
    conn: &Connection,
    token_id: &str,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let info = conn
        .tokens()
        .revoke_token(pb::RevokeTokenRequest {
            token_id: token_id.to_owned(),
        })
        .await
        .map_err(|s| conn.rpc_error(s))?
        .into_inner();
    let view = TokenView::from(&info);
    match format {
        OutputFormat::Table => writeln!(out, "revoked token {} ({})", view.token_id, view.role)?,
        OutputFormat::Json => write_json(out, &view)?,
    }
    Ok(())
}

/// The `token list` table; `now_ms` makes times relative and tells expired tokens.
pub fn write_token_table(
    tokens: &[TokenView],
    now_ms: i64,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut table = Table::new(&[
        "TOKEN ID",
        "ROLE",
        "HOST",
        "STATUS",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "DESCRIPTION",
    ]);
    for t in tokens {
        let status = match (t.revoked_at_ms, t.used_at_ms, t.expires_at_ms) {
            (Some(_), _, _) => "revoked",
            (None, Some(_), _) => "used",
            (None, None, Some(at)) if at <= now_ms => "expired",
            _ => "active",
        };
        let time = |at: Option<i64>| relative_time(now_ms, at.unwrap_or(0));
        table.row(vec![
            t.token_id.clone(),
            t.role.clone(),
            t.host_cell(),
            status.to_owned(),
            relative_time(now_ms, t.created_at_ms),
            time(t.expires_at_ms),
            time(t.last_used_ms),
            t.description.clone(),
        ]);
    }
    table.write(out)
}

fn positive(ms: i64) -> Option<i64> {
    (ms > 0).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000_000;

    fn args(role: Role, host: Option<&str>) -> CreateArgs {
        CreateArgs {
            role,
            host: host.map(|h| HostId::new(h).unwrap()).into_iter().collect(),
            app: Vec::new(),
            description: Some("runner 3".into()),
            ttl: Some(Duration::from_secs(7 * 86_400)),
        }
    }

    #[test]
    fn create_request_carries_role_host_and_ttl() {
        let req = create_request(&args(Role::Agent, Some("h1"))).unwrap();
        assert_eq!(req.role, "agent");
        assert_eq!(req.host_id, "h1");
        assert_eq!(req.description, "runner 3");
        assert_eq!(req.ttl_secs, 604_800);
        let req = create_request(&CreateArgs {
            ttl: None,
            description: None,
            ..args(Role::Ci, None)
        })
        .unwrap();
        assert_eq!((req.host_id.as_str(), req.ttl_secs), ("", 0));
    }

    #[test]
    fn host_goes_with_the_agent_role_only() {
        let e = create_request(&args(Role::Agent, None)).unwrap_err();
        assert!(matches!(e, CliError::InvalidArgument(_)), "{e}");
        let e = create_request(&args(Role::Operator, Some("h1"))).unwrap_err();
        assert!(e.to_string().contains("role operator takes no host"), "{e}");
    }

    #[test]
    fn a_ci_token_is_scoped_by_host_and_app() {
        let req = create_request(&CreateArgs {
            app: vec![AppName::new("keycloak").unwrap()],
            ..args(Role::Ci, Some("ci-1"))
        })
        .unwrap();
        assert_eq!(req.host_id, "");
        assert_eq!(req.scope_hosts, ["ci-1"]);
        assert_eq!(req.scope_apps, ["keycloak"]);
        let e = create_request(&CreateArgs {
            app: vec![AppName::new("keycloak").unwrap()],
            ..args(Role::Operator, None)
        })
        .unwrap_err();
        assert!(e.to_string().contains("--app scopes a ci token"), "{e}");
    }

    fn info(id: &str, revoked: i64, expires: i64) -> pb::TokenInfo {
        pb::TokenInfo {
            token_id: id.into(),
            role: "ci".into(),
            host_id: String::new(),
            description: "runner".into(),
            created_at_ms: NOW - 3_600_000,
            expires_at_ms: expires,
            revoked_at_ms: revoked,
            last_used_ms: 0,
            ..Default::default()
        }
    }

    #[test]
    fn token_table_tells_active_expired_and_revoked() {
        let views: Vec<TokenView> = [
            info("t-1", 0, NOW + 86_400_000),
            info("t-22", 0, NOW - 1),
            info("t-333", NOW - 60_000, 0),
        ]
        .iter()
        .map(TokenView::from)
        .collect();
        let mut buf = Vec::new();
        write_token_table(&views, NOW, &mut buf).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "TOKEN ID  ROLE  HOST  STATUS   CREATED  EXPIRES   LAST USED  DESCRIPTION\n\
             t-1       ci    -     active   1h ago   in 1d     never      runner\n\
             t-22      ci    -     expired  1h ago   just now  never      runner\n\
             t-333     ci    -     revoked  1h ago   never     never      runner\n"
        );
    }

    #[test]
    fn token_json_uses_null_for_absent_values() {
        let json = serde_json::to_value(TokenView::from(&info("t-1", 0, 0))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "token_id": "t-1",
                "role": "ci",
                "host_id": null,
                "description": "runner",
                "created_at_ms": NOW - 3_600_000,
                "expires_at_ms": null,
                "revoked_at_ms": null,
                "last_used_ms": null,
            })
        );
    }
}
