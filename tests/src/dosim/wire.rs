//! DigitalOcean's JSON for the simulated objects, answers with their status, and pagination
//! (`links.pages` with absolute URLs, `meta.total`).

use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::catalog;
use super::state::{Action, Droplet, DropletImage, Snapshot, World};

/// An answer before the server adds its headers (and the request id to error bodies).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
    /// `retry-after` seconds, for a 429.
    pub retry_after: Option<u64>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            retry_after: None,
        }
    }

    pub fn no_content() -> Self {
        Self {
            status: 204,
            body: None,
            retry_after: None,
        }
    }

    /// DigitalOcean's standard error: `{"id", "message"}` (`request_id` is added on the way out).
    pub fn error(status: u16, message: &str) -> Self {
        let id = match status {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            422 => "unprocessable_entity",
            429 => "too_many_requests",
            503 => "service_unavailable",
            _ => "server_error",
        };
        Self::json(status, json!({"id": id, "message": message}))
    }

    pub fn not_found() -> Self {
        Self::error(404, "The resource you requested could not be found.")
    }
}

pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn droplet_json(w: &World, d: &Droplet, now: Instant) -> Value {
    let status = w.droplet_status(d, now);
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    if status != "new" {
        v4.push(json!({
            "ip_address": w.private_ipv4(d).to_string(),
            "netmask": "255.255.0.0",
            "gateway": "",
            "type": "private",
        }));
    }
    if let Some(ip) = w.public_ipv4(d, now) {
        let [a, b, c, _] = ip.octets();
        v4.push(json!({
            "ip_address": ip.to_string(),
            "netmask": "255.255.255.0",
            "gateway": format!("{a}.{b}.{c}.1"),
            "type": "public",
        }));
        if d.ipv6 {
            v6.push(json!({
                "ip_address": format!("2604:a880:400:d1::{:x}", d.seq),
                "netmask": 64,
                "gateway": "2604:a880:400:d1::1",
                "type": "public",
            }));
        }
    }
    let image = match &d.image {
        DropletImage::Public(id) => catalog::IMAGES
            .iter()
            .find(|(i, ..)| i == id)
            .map(|(i, slug, dist, name)| catalog::public_image_json(*i, slug, dist, name))
            .unwrap_or(Value::Null),
        DropletImage::Snapshot { id, name } => json!({
            "id": id, "name": name, "type": "snapshot", "distribution": "Unknown",
            "slug": null, "public": false, "regions": [d.region],
            "created_at": ts(d.created_at), "min_disk_size": d.size.disk,
            "size_gigabytes": 2.0, "description": "", "tags": [], "status": "available",
            "error_message": "",
        }),
    };
    let mut features = vec!["private_networking"];
    if d.ipv6 {
        features.push("ipv6");
    }
    if d.monitoring {
        features.push("monitoring");
    }
    if d.backups {
        features.push("backups");
    }
    json!({
        "id": d.id,
        "name": d.name,
        "memory": d.size.memory,
        "vcpus": d.size.vcpus,
        "disk": d.size.disk,
        "disk_info": [{"type": "local", "size": {"amount": d.size.disk, "unit": "gib"}}],
        "locked": false,
        "status": status,
        "kernel": null,
        "created_at": ts(d.created_at),
        "features": features,
        "backup_ids": [],
        "next_backup_window": null,
        "snapshot_ids": w.snapshot_ids(d.id, now),
        "image": image,
        "volume_ids": [],
        "size": catalog::size_json(d.size),
        "size_slug": d.size.slug,
        "networks": {"v4": v4, "v6": v6},
        "region": catalog::region_json(d.region),
        "tags": d.tags,
        "vpc_uuid": d.vpc_uuid,
    })
}

pub fn action_json(w: &World, a: &Action, now: Instant) -> Value {
    let status = w.action_status(a, now);
    let completed_at = (status != "in-progress")
        .then(|| ts(a.started_at + chrono::Duration::from_std(a.duration).unwrap_or_default()));
    json!({
        "id": a.id,
        "status": status,
        "type": a.kind,
        "started_at": ts(a.started_at),
        "completed_at": completed_at,
        "resource_id": a.droplet,
        "resource_type": "droplet",
        "region": catalog::region_json(a.region),
        "region_slug": a.region,
    })
}

/// An item of `GET /v2/droplets/{id}/snapshots`: integer id and a `type`.
pub fn droplet_snapshot_json(s: &Snapshot) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "created_at": ts(s.created_at),
        "regions": [s.region],
        "min_disk_size": s.min_disk_size,
        "size_gigabytes": s.size_gigabytes,
        "type": "snapshot",
    })
}

/// An item of `GET /v2/snapshots`: string ids, resource type and tags.
pub fn snapshot_json(s: &Snapshot) -> Value {
    json!({
        "id": s.id.to_string(),
        "name": s.name,
        "created_at": ts(s.created_at),
        "regions": [s.region],
        "resource_id": s.droplet.to_string(),
        "resource_type": "droplet",
        "min_disk_size": s.min_disk_size,
        "size_gigabytes": s.size_gigabytes,
        "tags": s.tags,
    })
}

/// Page and page size from the query (already checked against the spec; bad values fall
/// back to DigitalOcean's defaults).
pub fn page_params(query: &[(String, String)]) -> (usize, usize) {
    let get = |k: &str| {
        query
            .iter()
            .find(|(q, _)| q == k)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let page = get("page").filter(|p| *p >= 1).unwrap_or(1);
    let per_page = get("per_page")
        .filter(|p| (1..=200).contains(p))
        .unwrap_or(20);
    (page, per_page)
}

/// One page of `items` under `key` (only the page's items rendered), with `links.pages` (absolute URLs on `links_base`, other
/// query parameters kept) and `meta.total`.
pub fn page<T>(
    key: &str,
    items: Vec<T>,
    render: impl Fn(T) -> Value,
    links_base: &str,
    path: &str,
    query: &[(String, String)],
) -> Reply {
    let (page, per_page) = page_params(query);
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page).min(total);
    let end = (start + per_page).min(total);
    let slice: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(end - start)
        .map(render)
        .collect();
    let keep: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "page" && k != "per_page")
        .cloned()
        .collect();
    let link = |p: usize| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("page", &p.to_string());
        q.append_pair("per_page", &per_page.to_string());
        for (k, v) in &keep {
            q.append_pair(k, v);
        }
        format!("{}{path}?{}", links_base.trim_end_matches('/'), q.finish())
    };
    let mut pages = serde_json::Map::new();
    if page > 1 {
        pages.insert("first".into(), json!(link(1)));
        pages.insert("prev".into(), json!(link((page - 1).min(last))));
    }
    if page < last {
        pages.insert("next".into(), json!(link(page + 1)));
        pages.insert("last".into(), json!(link(last)));
    }
    let mut body = serde_json::Map::new();
    body.insert(key.into(), Value::Array(slice));
    body.insert("links".into(), json!({ "pages": pages }));
    body.insert("meta".into(), json!({ "total": total }));
    Reply::json(200, Value::Object(body))
}
