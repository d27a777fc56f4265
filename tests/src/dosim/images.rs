//! Snapshot, tag, account and catalogue endpoints.

use std::time::Instant;

use serde_json::{Value, json};

use super::catalog;
use super::droplets::Req;
use super::state::World;
use super::wire::{self, Reply};

pub fn list_snapshots(w: &World, req: &Req, now: Instant, links_base: &str) -> Reply {
    let volumes_only = req.query("resource_type") == Some("volume");
    let items: Vec<_> = w
        .snapshots
        .values()
        .filter(|s| !volumes_only && w.snapshot_listed(s, now))
        .collect();
    wire::page(
        "snapshots",
        items,
        wire::snapshot_json,
        links_base,
        "/v2/snapshots",
        req.query,
    )
}

/// What `{snapshot_id}` names: a live snapshot, a public image (not a snapshot: 400) or nothing.
enum Target {
    Snapshot(u64),
    PublicImage,
    Missing,
}

fn target(w: &World, req: &Req) -> Target {
    let Some(id) = req.id("snapshot_id") else {
        return Target::Missing;
    };
    if w.snapshots.get(&id).is_some_and(|s| s.deleted.is_none()) {
        Target::Snapshot(id)
    } else if catalog::IMAGES.iter().any(|(i, ..)| *i == id) {
        Target::PublicImage
    } else {
        Target::Missing
    }
}

pub fn get_snapshot(w: &World, req: &Req) -> Reply {
    match target(w, req) {
        Target::Snapshot(id) => Reply::json(
            200,
            json!({"snapshot": wire::snapshot_json(&w.snapshots[&id])}),
        ),
        Target::PublicImage => Reply::error(400, "the resource is not a snapshot"),
        Target::Missing => Reply::not_found(),
    }
}

pub fn delete_snapshot(w: &mut World, req: &Req, now: Instant) -> Reply {
    match target(w, req) {
        Target::Snapshot(id) => {
            if let Some(s) = w.snapshots.get_mut(&id) {
                s.deleted = Some(now);
            }
            Reply::no_content()
        }
        Target::PublicImage => Reply::error(400, "the resource is not a snapshot"),
        Target::Missing => Reply::not_found(),
    }
}

fn tag_json(w: &World, name: &str) -> Value {
    let droplets = w
        .droplets
        .values()
        .filter(|d| d.deleted.is_none() && d.tags.iter().any(|t| t == name))
        .count();
    let images = w
        .snapshots
        .values()
        .filter(|s| s.deleted.is_none() && s.tags.iter().any(|t| t == name))
        .count();
    let zero = json!({"count": 0});
    json!({"tag": {"name": name, "resources": {
        "count": droplets + images,
        "droplets": {"count": droplets},
        "images": {"count": images},
        "volumes": zero, "volume_snapshots": zero, "databases": zero,
    }}})
}

/// The 400 DigitalOcean answers an invalid tag name with (its own error shape).
pub fn invalid_tag(name: &str) -> Reply {
    let text = format!(
        "Error validating resource tag: \"tag-name \\\"{name}\\\" contains invalid characters\""
    );
    Reply::json(
        400,
        json!({"error": text, "messages": null, "root_causes": [format!("rpc error: code = InvalidArgument desc = {text}")]}),
    )
}

pub fn create_tag(w: &mut World, req: &Req) -> Reply {
    let name = req
        .field("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'));
    if !valid {
        return invalid_tag(name);
    }
    // Re-creating a tag is not documented; this answers it like a first create.
    let canonical = w.ensure_tag(name);
    Reply::json(201, tag_json(w, &canonical))
}

pub fn tag_resources(w: &mut World, req: &Req) -> Reply {
    let tag = req.param("tag_id").unwrap_or_default();
    // The capitalisation used at creation is the one URLs must use.
    if w.tags.get(&tag.to_lowercase()).is_none_or(|c| c != tag) {
        return Reply::not_found();
    }
    let resources = req
        .field("resources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut droplets = Vec::new();
    let mut images = Vec::new();
    for r in &resources {
        let id = r["resource_id"]
            .as_str()
            .and_then(|i| i.parse::<u64>().ok());
        let found = match (r["resource_type"].as_str(), id) {
            (Some("droplet"), Some(id)) => {
                let ok = w.droplets.get(&id).is_some_and(|d| d.deleted.is_none());
                ok.then(|| droplets.push(id))
            }
            (Some("image"), Some(id)) => {
                let ok = w.snapshots.get(&id).is_some_and(|s| s.deleted.is_none());
                ok.then(|| images.push(id))
            }
            _ => None,
        };
        if found.is_none() {
            return Reply::not_found();
        }
    }
    for id in droplets {
        if let Some(d) = w.droplets.get_mut(&id)
            && !d.tags.iter().any(|t| t == tag)
        {
            d.tags.push(tag.to_owned());
        }
    }
    for id in images {
        if let Some(s) = w.snapshots.get_mut(&id)
            && !s.tags.iter().any(|t| t == tag)
        {
            s.tags.push(tag.to_owned());
        }
    }
    Reply::no_content()
}

pub fn account(w: &World) -> Reply {
    Reply::json(
        200,
        json!({"account": {
            "droplet_limit": w.config.droplet_limit,
            "floating_ip_limit": 3,
            "email": "simulator@berth.invalid",
            "name": "Berth simulator",
            "uuid": "b6fc89dbf6d9156cace5f3c78dc9851d957381ef",
            "email_verified": true,
            "status": "active",
            "status_message": "",
            "team": {"uuid": "5df3e3004a17e242b7c20ca6c9fc25b701a47ece", "name": "Berth"},
        }}),
    )
}

pub fn sizes(req: &Req, links_base: &str) -> Reply {
    let items = catalog::SIZES.iter().collect();
    wire::page(
        "sizes",
        items,
        catalog::size_json,
        links_base,
        "/v2/sizes",
        req.query,
    )
}

pub fn regions(req: &Req, links_base: &str) -> Reply {
    let items = catalog::REGIONS.iter().map(|(slug, _)| *slug).collect();
    wire::page(
        "regions",
        items,
        catalog::region_json,
        links_base,
        "/v2/regions",
        req.query,
    )
}
