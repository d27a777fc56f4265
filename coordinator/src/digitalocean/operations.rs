//! `DoApi` over HTTP: each operation's method, path, body and response envelope, and
//! pagination (`per_page=200`, next page number parsed out of `links.pages.next`).

use std::collections::HashSet;

use async_trait::async_trait;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{DoApiError, DoErrorKind, Failure};
use super::model::{
    Account, Action, ActionId, CreateDroplet, CreatedDroplet, Deleted, Droplet, DropletAction,
    DropletId, DropletSnapshot, Snapshot, SnapshotId, Tag, TagResource,
};
use super::retry::Idempotency;
use super::token::TokenPurpose;
use super::transport::{Call, HttpDoApi, Reply};
use super::{DoApi, check_tag_name};

/// The largest page DigitalOcean serves.
pub const PER_PAGE: u32 = 200;
/// A listing that claims more pages than this is broken, not big.
const MAX_PAGES: u64 = 10_000;

fn get(op: &'static str, path: String) -> Call {
    Call {
        op,
        method: Method::GET,
        path,
        query: Vec::new(),
        body: None,
        purpose: TokenPurpose::Read,
        idempotency: Idempotency::Safe,
    }
}

fn write(op: &'static str, method: Method, path: String, idempotency: Idempotency) -> Call {
    Call {
        op,
        method,
        path,
        query: Vec::new(),
        body: None,
        purpose: TokenPurpose::Provisioning,
        idempotency,
    }
}

fn with_body(mut call: Call, body: &impl Serialize) -> Call {
    call.body = Some(serde_json::to_value(body).expect("request bodies serialize"));
    call
}

/// A 2xx answer whose body is not what the spec says. The call did happen.
fn bad_body(call: &Call, reply: &Reply, what: String) -> DoApiError {
    DoApiError::new(Failure {
        op: call.op,
        kind: DoErrorKind::Transient,
        status: Some(reply.status),
        code: None,
        message: format!("unexpected response body: {what}"),
        request_id: reply.request_id.clone(),
        attempts: reply.attempts,
        retry_after: None,
        may_have_applied: call.idempotency == Idempotency::Unsafe,
        source: None,
    })
}

/// The object under `key` in a response envelope (`{"droplet": {...}}`).
fn field<T: DeserializeOwned>(call: &Call, reply: &Reply, key: &str) -> Result<T, DoApiError> {
    let mut body: serde_json::Value =
        serde_json::from_slice(&reply.body).map_err(|e| bad_body(call, reply, e.to_string()))?;
    let value = body
        .get_mut(key)
        .map(serde_json::Value::take)
        .ok_or_else(|| bad_body(call, reply, format!("no {key:?}")))?;
    serde_json::from_value(value).map_err(|e| bad_body(call, reply, format!("{key}: {e}")))
}

/// The page number in a `links.pages.next` URL (absolute, as DigitalOcean sends it, or
/// relative). The URL itself is not followed, so the client works against any host.
pub(crate) fn page_number(next: &str) -> Option<u64> {
    let url = Url::parse(next)
        .or_else(|_| Url::parse("http://relative.invalid/").and_then(|b| b.join(next)))
        .ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
}

impl HttpDoApi {
    /// Every item of a paginated listing, `key` naming the array (`droplets`, `snapshots`).
    async fn list_all<T: DeserializeOwned>(
        &self,
        mut call: Call,
        key: &str,
    ) -> Result<Vec<T>, DoApiError> {
        let base_query = std::mem::take(&mut call.query);
        let mut items = Vec::new();
        let mut page = 1u64;
        loop {
            call.query = base_query.clone();
            call.query.push(("page", page.to_string()));
            call.query.push(("per_page", PER_PAGE.to_string()));
            let reply = self.call(&call).await?;
            let mut body: serde_json::Value = serde_json::from_slice(&reply.body)
                .map_err(|e| bad_body(&call, &reply, e.to_string()))?;
            let batch = body
                .get_mut(key)
                .map(serde_json::Value::take)
                .ok_or_else(|| bad_body(&call, &reply, format!("no {key:?}")))?;
            let batch: Option<Vec<T>> = serde_json::from_value(batch)
                .map_err(|e| bad_body(&call, &reply, format!("{key}: {e}")))?;
            items.extend(batch.unwrap_or_default());
            let Some(next) = body.pointer("/links/pages/next").and_then(|n| n.as_str()) else {
                return Ok(items);
            };
            match page_number(next) {
                Some(n) if n > page && n <= MAX_PAGES => page = n,
                _ => {
                    return Err(bad_body(
                        &call,
                        &reply,
                        format!("page {page} links to next page {next:?}"),
                    ));
                }
            }
        }
    }

    /// A listing of droplets; a droplet seen twice (listings shift while paging) is kept once.
    async fn list_droplets_query(
        &self,
        query: Vec<(&'static str, String)>,
    ) -> Result<Vec<Droplet>, DoApiError> {
        let mut call = get("droplets_list", "/v2/droplets".to_owned());
        call.query = query;
        let all: Vec<Droplet> = self.list_all(call, "droplets").await?;
        let mut seen = HashSet::new();
        Ok(all.into_iter().filter(|d| seen.insert(d.id)).collect())
    }

    async fn delete(&self, call: Call) -> Result<Deleted, DoApiError> {
        match self.call(&call).await {
            Ok(_) => Ok(Deleted::Now),
            Err(e) if e.is_not_found() => Ok(Deleted::AlreadyGone),
            Err(e) => Err(e),
        }
    }
}

#[derive(Deserialize)]
struct CreateLinks {
    #[serde(default)]
    actions: Vec<ActionLink>,
}

#[derive(Deserialize)]
struct ActionLink {
    id: u64,
    #[serde(default)]
    rel: String,
}

#[async_trait]
impl DoApi for HttpDoApi {
    async fn create_droplet(&self, request: &CreateDroplet) -> Result<CreatedDroplet, DoApiError> {
        let call = with_body(
            write(
                "droplets_create",
                Method::POST,
                "/v2/droplets".to_owned(),
                Idempotency::Unsafe,
            ),
            request,
        );
        let reply = self.call(&call).await?;
        let droplet: Droplet = field(&call, &reply, "droplet")?;
        let links: Option<CreateLinks> = field(&call, &reply, "links").unwrap_or(None);
        let action_id = links
            .and_then(|l| {
                l.actions
                    .iter()
                    .find(|a| a.rel == "create")
                    .or(l.actions.first())
                    .map(|a| a.id)
            })
            .map(ActionId);
        Ok(CreatedDroplet { droplet, action_id })
    }

    async fn get_droplet(&self, id: DropletId) -> Result<Droplet, DoApiError> {
        let call = get("droplets_get", format!("/v2/droplets/{id}"));
        let reply = self.call(&call).await?;
        field(&call, &reply, "droplet")
    }

    async fn list_droplets_by_tag(&self, tag: &str) -> Result<Vec<Droplet>, DoApiError> {
        check_tag_name("droplets_list", tag)?;
        self.list_droplets_query(vec![("tag_name", tag.to_owned())])
            .await
    }

    async fn list_droplets(&self) -> Result<Vec<Droplet>, DoApiError> {
        self.list_droplets_query(Vec::new()).await
    }

    async fn destroy_droplet(&self, id: DropletId) -> Result<Deleted, DoApiError> {
        self.delete(write(
            "droplets_destroy",
            Method::DELETE,
            format!("/v2/droplets/{id}"),
            Idempotency::Safe,
        ))
        .await
    }

    async fn droplet_action(
        &self,
        id: DropletId,
        action: &DropletAction,
    ) -> Result<Action, DoApiError> {
        let call = with_body(
            write(
                "dropletActions_post",
                Method::POST,
                format!("/v2/droplets/{id}/actions"),
                Idempotency::Unsafe,
            ),
            action,
        );
        let reply = self.call(&call).await?;
        field(&call, &reply, "action")
    }

    async fn get_droplet_action(
        &self,
        droplet: DropletId,
        action: ActionId,
    ) -> Result<Action, DoApiError> {
        let call = get(
            "dropletActions_get",
            format!("/v2/droplets/{droplet}/actions/{action}"),
        );
        let reply = self.call(&call).await?;
        field(&call, &reply, "action")
    }

    async fn get_action(&self, id: ActionId) -> Result<Action, DoApiError> {
        let call = get("actions_get", format!("/v2/actions/{id}"));
        let reply = self.call(&call).await?;
        field(&call, &reply, "action")
    }

    async fn list_droplet_snapshots(
        &self,
        id: DropletId,
    ) -> Result<Vec<DropletSnapshot>, DoApiError> {
        let call = get(
            "droplets_list_snapshots",
            format!("/v2/droplets/{id}/snapshots"),
        );
        self.list_all(call, "snapshots").await
    }

    async fn list_snapshots(&self) -> Result<Vec<Snapshot>, DoApiError> {
        let mut call = get("snapshots_list", "/v2/snapshots".to_owned());
        call.query = vec![("resource_type", "droplet".to_owned())];
        self.list_all(call, "snapshots").await
    }

    async fn get_snapshot(&self, id: &SnapshotId) -> Result<Snapshot, DoApiError> {
        check_snapshot_id("snapshots_get", id)?;
        let call = get("snapshots_get", format!("/v2/snapshots/{id}"));
        let reply = self.call(&call).await?;
        field(&call, &reply, "snapshot")
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<Deleted, DoApiError> {
        check_snapshot_id("snapshots_delete", id)?;
        self.delete(write(
            "snapshots_delete",
            Method::DELETE,
            format!("/v2/snapshots/{id}"),
            Idempotency::Safe,
        ))
        .await
    }

    async fn create_tag(&self, name: &str) -> Result<Tag, DoApiError> {
        check_tag_name("tags_create", name)?;
        let call = with_body(
            write(
                "tags_create",
                Method::POST,
                "/v2/tags".to_owned(),
                Idempotency::Safe,
            ),
            &serde_json::json!({ "name": name }),
        );
        let reply = self.call(&call).await?;
        field(&call, &reply, "tag")
    }

    async fn tag_resources(&self, tag: &str, resources: &[TagResource]) -> Result<(), DoApiError> {
        check_tag_name("tags_assign_resources", tag)?;
        let call = with_body(
            write(
                "tags_assign_resources",
                Method::POST,
                format!("/v2/tags/{tag}/resources"),
                Idempotency::Safe,
            ),
            &serde_json::json!({ "resources": resources }),
        );
        self.call(&call).await.map(|_| ())
    }

    async fn get_account(&self) -> Result<Account, DoApiError> {
        let call = get("account_get", "/v2/account".to_owned());
        let reply = self.call(&call).await?;
        field(&call, &reply, "account")
    }
}

/// Snapshot ids go into a path: digits, or a volume snapshot's UUID.
fn check_snapshot_id(op: &'static str, id: &SnapshotId) -> Result<(), DoApiError> {
    let ok = !id.0.is_empty() && id.0.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(DoApiError::local(
            op,
            DoErrorKind::Validation,
            format!("invalid snapshot id {:?}", id.0),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_numbers_come_from_next_links_of_any_host() {
        assert_eq!(
            page_number("https://api.digitalocean.com/v2/droplets?page=2&per_page=200"),
            Some(2)
        );
        assert_eq!(
            page_number("https://api.digitalocean.com/v2/droplets?per_page=200&tag_name=a&page=17"),
            Some(17)
        );
        assert_eq!(page_number("/v2/sizes?page=3"), Some(3));
        assert_eq!(page_number("https://api.digitalocean.com/v2/sizes"), None);
    }
}
