//! Droplet and action endpoints: create (202), list, get, destroy (204), actions (201, 422 on
//! a busy droplet), action reads, and a droplet's snapshots.

use std::time::Instant;

use chrono::Utc;
use serde_json::{Value, json};

use super::catalog;
use super::state::{Droplet, DropletImage, World};
use super::wire::{self, Reply};

/// A request as the handlers see it: path parameters, query, parsed body.
pub struct Req<'a> {
    pub params: &'a [(String, String)],
    pub query: &'a [(String, String)],
    pub body: Option<&'a Value>,
}

impl Req<'_> {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn id(&self, name: &str) -> Option<u64> {
        self.param(name).and_then(|v| v.parse().ok())
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn field(&self, name: &str) -> Option<&Value> {
        self.body.and_then(|b| b.get(name))
    }
}

/// What a new droplet is made of.
pub struct NewDroplet {
    pub name: String,
    pub size: &'static catalog::Size,
    pub region: &'static str,
    pub image: DropletImage,
    pub tags: Vec<String>,
    pub ipv6: bool,
    pub monitoring: bool,
    pub backups: bool,
    pub public_networking: bool,
    pub user_data: Option<String>,
}

/// Adds a droplet and its create action; `settled` makes it as if created long ago.
pub fn insert(w: &mut World, spec: NewDroplet, now: Instant, settled: bool) -> (u64, u64) {
    let (id, seq) = w.new_droplet_id();
    let t = *w.t();
    let created = if settled {
        now.checked_sub(t.active_after + t.ipv4_after_active + t.list_lag_after_create)
            .unwrap_or(now)
    } else {
        now
    };
    let tags = spec.tags.iter().map(|t| w.ensure_tag(t)).collect();
    let action = w.start_action(id, "create", t.active_after, None, created);
    w.droplets.insert(
        id,
        Droplet {
            id,
            seq,
            name: spec.name,
            size: spec.size,
            region: spec.region,
            image: spec.image,
            tags,
            created,
            created_at: Utc::now(),
            create_action: action,
            power_on: true,
            public_networking: spec.public_networking,
            ipv6: spec.ipv6,
            monitoring: spec.monitoring,
            backups: spec.backups,
            user_data: spec.user_data,
            vpc_uuid: format!(
                "5a4f4e5c-0000-4000-8000-{:012x}",
                spec_region_hash(spec.region)
            ),
            deleted: None,
        },
    );
    (id, action)
}

fn spec_region_hash(region: &str) -> u64 {
    region
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        & 0xffff_ffff_ffff
}

pub fn create(w: &mut World, req: &Req, now: Instant, links_base: &str) -> Reply {
    let names: Vec<String> = match (req.field("name"), req.field("names")) {
        (Some(Value::String(n)), None) => vec![n.clone()],
        (None, Some(Value::Array(ns))) => ns
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect(),
        _ => return Reply::error(422, "Name is required."),
    };
    if names.is_empty() || names.len() > 10 {
        return Reply::error(
            422,
            "You may only create between 1 and 10 Droplets at a time.",
        );
    }
    let Some(size) = req
        .field("size")
        .and_then(Value::as_str)
        .and_then(catalog::size)
    else {
        return Reply::error(422, "You specified an invalid size for Droplet creation.");
    };
    let region = match req.field("region").and_then(Value::as_str) {
        None => catalog::DEFAULT_REGION,
        Some(r) => match catalog::region(r) {
            Some(r) => r,
            None => {
                return Reply::error(422, "You specified an invalid region for Droplet creation.");
            }
        },
    };
    let image = match req.field("image") {
        Some(Value::Number(n)) => n.as_u64().and_then(|id| {
            w.snapshots
                .get(&id)
                .filter(|s| s.deleted.is_none())
                .map(|s| DropletImage::Snapshot {
                    id,
                    name: s.name.clone(),
                })
                .or_else(|| {
                    catalog::IMAGES
                        .iter()
                        .any(|(i, ..)| *i == id)
                        .then_some(DropletImage::Public(id))
                })
        }),
        // A snapshot given by name is refused, as DigitalOcean does.
        Some(Value::String(slug)) => {
            catalog::public_image(slug).map(|(id, ..)| DropletImage::Public(id))
        }
        _ => None,
    };
    let Some(image) = image else {
        return Reply::error(422, "You specified an invalid image for Droplet creation.");
    };
    let live = w.droplets.values().filter(|d| d.deleted.is_none()).count();
    if live + names.len() > w.config.droplet_limit as usize {
        return Reply::error(
            422,
            "creating this/these droplet(s) will exceed your droplet limit",
        );
    }
    let flag = |k: &str, default: bool| req.field(k).and_then(Value::as_bool).unwrap_or(default);
    let tags: Vec<String> = req
        .field("tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut created = Vec::new();
    for name in &names {
        let spec = NewDroplet {
            name: name.clone(),
            size,
            region,
            image: image.clone(),
            tags: tags.clone(),
            ipv6: flag("ipv6", false),
            monitoring: flag("monitoring", false),
            backups: flag("backups", false),
            public_networking: flag("public_networking", true),
            user_data: req
                .field("user_data")
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        created.push(insert(w, spec, now, false));
    }
    let base = links_base.trim_end_matches('/');
    let links: Vec<Value> = created
        .iter()
        .map(|(_, a)| json!({"id": a, "rel": "create", "href": format!("{base}/v2/actions/{a}")}))
        .collect();
    let droplets: Vec<Value> = created
        .iter()
        .map(|(id, _)| wire::droplet_json(w, &w.droplets[id], now))
        .collect();
    if req.field("name").is_some() {
        Reply::json(
            202,
            json!({"droplet": droplets[0], "links": {"actions": links}}),
        )
    } else {
        Reply::json(
            202,
            json!({"droplets": droplets, "links": {"actions": links}}),
        )
    }
}

pub fn list(w: &World, req: &Req, now: Instant, links_base: &str) -> Reply {
    let tag = req.query("tag_name");
    let name = req.query("name");
    let gpus = req.query("type") == Some("gpus");
    if tag.is_some() && (name.is_some() || req.query("type").is_some()) {
        return Reply::error(400, "tag_name cannot be combined with name or type");
    }
    let items: Vec<&Droplet> = w
        .droplets
        .values()
        .filter(|d| !gpus && w.droplet_listed(d, now))
        .filter(|d| tag.is_none_or(|t| d.tags.iter().any(|x| x == t)))
        .filter(|d| name.is_none_or(|n| d.name.eq_ignore_ascii_case(n)))
        .collect();
    let render = |d: &Droplet| wire::droplet_json(w, d, now);
    wire::page(
        "droplets",
        items,
        render,
        links_base,
        "/v2/droplets",
        req.query,
    )
}

fn readable<'w>(w: &'w World, req: &Req, now: Instant) -> Option<&'w Droplet> {
    req.id("droplet_id")
        .and_then(|id| w.droplets.get(&id))
        .filter(|d| w.droplet_readable(d, now))
}

pub fn get(w: &World, req: &Req, now: Instant) -> Reply {
    match readable(w, req, now) {
        Some(d) => Reply::json(200, json!({"droplet": wire::droplet_json(w, d, now)})),
        None => Reply::not_found(),
    }
}

pub fn destroy(w: &mut World, req: &Req, now: Instant) -> Reply {
    let live = readable(w, req, now)
        .filter(|d| d.deleted.is_none())
        .map(|d| d.id);
    match live.and_then(|id| w.droplets.get_mut(&id)) {
        Some(d) => {
            d.deleted = Some(now);
            Reply::no_content()
        }
        None => Reply::not_found(),
    }
}

pub fn destroy_by_tag(w: &mut World, req: &Req, now: Instant) -> Reply {
    let Some(tag) = req.query("tag_name") else {
        return Reply::error(400, "tag_name is required");
    };
    for d in w.droplets.values_mut() {
        if d.deleted.is_none() && d.tags.iter().any(|t| t == tag) {
            d.deleted = Some(now);
        }
    }
    Reply::no_content()
}

pub fn post_action(w: &mut World, req: &Req, now: Instant) -> Reply {
    let Some(d) = readable(w, req, now).filter(|d| d.deleted.is_none()) else {
        return Reply::not_found();
    };
    let (id, power_on) = (d.id, d.power_on);
    let kind = req
        .field("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let t = *w.t();
    let (duration, argument) = match kind.as_str() {
        "snapshot" => (
            t.snapshot_duration,
            req.field("name").and_then(Value::as_str).map(str::to_owned),
        ),
        "resize" => {
            let size = req.field("size").and_then(Value::as_str);
            if size.and_then(catalog::size).is_none() {
                return Reply::error(422, "You specified an invalid size for Droplet resize.");
            }
            (t.action_duration, size.map(str::to_owned))
        }
        "power_off" | "power_on" | "shutdown" | "reboot" | "power_cycle" => {
            (t.action_duration, None)
        }
        other => {
            return Reply::error(
                422,
                &format!("the simulator does not implement the {other:?} action"),
            );
        }
    };
    if w.busy(id, now) {
        return Reply::error(422, "Droplet already has a pending event.");
    }
    if kind == "resize" && power_on {
        return Reply::error(
            422,
            "Droplet is currently on. Please power it off to run this event.",
        );
    }
    let action = w.start_action(id, &kind, duration, argument, now);
    Reply::json(
        201,
        json!({"action": wire::action_json(w, &w.actions[&action], now)}),
    )
}

pub fn get_droplet_action(w: &World, req: &Req, now: Instant) -> Reply {
    let found = req
        .id("action_id")
        .and_then(|a| w.actions.get(&a))
        .filter(|a| Some(a.droplet) == req.id("droplet_id"));
    match found {
        Some(a) => {
            let mut v = wire::action_json(w, a, now);
            // Observed (digitalocean/api-v2#199): the droplet-scoped read of a completed
            // snapshot action says `completed_at: null`. Poll `/v2/actions/{id}` instead.
            if a.kind == "snapshot" {
                v["completed_at"] = Value::Null;
            }
            Reply::json(200, json!({ "action": v }))
        }
        None => Reply::not_found(),
    }
}

pub fn get_action(w: &World, req: &Req, now: Instant) -> Reply {
    match req.id("action_id").and_then(|a| w.actions.get(&a)) {
        Some(a) => Reply::json(200, json!({"action": wire::action_json(w, a, now)})),
        None => Reply::not_found(),
    }
}

pub fn list_snapshots(w: &World, req: &Req, now: Instant, links_base: &str) -> Reply {
    let Some(d) = readable(w, req, now) else {
        return Reply::not_found();
    };
    let items: Vec<_> = w
        .snapshots
        .values()
        .filter(|s| s.droplet == d.id && w.snapshot_listed(s, now))
        .collect();
    let path = format!("/v2/droplets/{}/snapshots", d.id);
    wire::page(
        "snapshots",
        items,
        wire::droplet_snapshot_json,
        links_base,
        &path,
        req.query,
    )
}

/// Seeds `n` settled droplets (active, with addresses), bypassing the API and its limits.
pub fn seed(w: &mut World, n: usize, tags: &[String], now: Instant) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let spec = NewDroplet {
                name: format!("seed-{}-{i}", w.droplets.len()),
                size: catalog::size("s-1vcpu-1gb").expect("in the catalog"),
                region: catalog::DEFAULT_REGION,
                image: DropletImage::Public(catalog::IMAGES[0].0),
                tags: tags.to_vec(),
                ipv6: false,
                monitoring: false,
                backups: false,
                public_networking: true,
                user_data: None,
            };
            insert(w, spec, now, true).0
        })
        .collect()
}
