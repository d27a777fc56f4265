//! The DigitalOcean objects Berth reads and writes, typed for the fields we use and tolerant of
//! the rest (unknown fields are ignored; a droplet keeps them in `extra` for the inventory).

use std::fmt;
use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                Self(v)
            }
        }
    };
}

numeric_id!(
    /// A droplet's id (an integer in every response).
    DropletId
);
numeric_id!(
    /// An action's id; the handle a step checkpoints to resume polling after a restart.
    ActionId
);

/// A snapshot's id. `/v2/snapshots` answers strings (`"6372321"`, or a UUID for volume
/// snapshots), `/v2/droplets/{id}/snapshots` integers; both name the same image.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnapshotId(pub String);

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<u64> for SnapshotId {
    fn from(v: u64) -> Self {
        Self(v.to_string())
    }
}

impl From<&str> for SnapshotId {
    fn from(v: &str) -> Self {
        Self(v.to_owned())
    }
}

/// `null` where a list is expected reads as an empty list.
fn nullable_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A droplet's life-cycle status. `archive` is internal to DigitalOcean (the public API answers
/// 404 for a destroyed droplet); an unknown future value reads as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropletStatus {
    New,
    Active,
    Off,
    Archive,
    #[serde(other)]
    Unknown,
}

/// A droplet as `GET /v2/droplets/{id}` and the listings return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Droplet {
    pub id: DropletId,
    pub name: String,
    pub status: DropletStatus,
    #[serde(default)]
    pub memory: u64,
    #[serde(default)]
    pub vcpus: u32,
    #[serde(default)]
    pub disk: u64,
    #[serde(default)]
    pub locked: bool,
    pub created_at: DateTime<Utc>,
    pub size_slug: String,
    pub region: RegionRef,
    #[serde(default)]
    pub image: ImageRef,
    #[serde(default)]
    pub networks: Networks,
    #[serde(default, deserialize_with = "nullable_vec")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "nullable_vec")]
    pub snapshot_ids: Vec<u64>,
    #[serde(default)]
    pub vpc_uuid: Option<String>,
    /// Every other field, kept as DigitalOcean sent it (the inventory stores the whole object).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Droplet {
    /// The public IPv4 address, picked by `type == "public"` (never by position). Absent until
    /// DigitalOcean has assigned it, which can be after the droplet reads `active`.
    pub fn public_ipv4(&self) -> Option<Ipv4Addr> {
        self.networks
            .v4
            .iter()
            .find(|n| n.kind == "public")
            .and_then(|n| n.ip_address.parse().ok())
    }

    /// `active` with a public IPv4: what `WaitDropletActive` waits for.
    pub fn is_ready(&self) -> bool {
        self.status == DropletStatus::Active && self.public_ipv4().is_some()
    }
}

/// The region a droplet is in (the full object has more; we keep the slug and name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionRef {
    pub slug: String,
    #[serde(default)]
    pub name: String,
}

/// The image a droplet was created from: a public image has a slug, a snapshot only an id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageRef {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// A droplet's addresses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Networks {
    #[serde(default, deserialize_with = "nullable_vec")]
    pub v4: Vec<NetworkV4>,
    #[serde(default, deserialize_with = "nullable_vec")]
    pub v6: Vec<serde_json::Value>,
}

/// One IPv4 address; `type` is `public` or `private`, `gateway` may be `""` or `"nil"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkV4 {
    pub ip_address: String,
    #[serde(default)]
    pub netmask: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
}

/// An image for droplet create: a public slug (`ubuntu-24-04-x64`) or a numeric id (snapshots
/// and private images must be given by id, never by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageSpec {
    Id(u64),
    Slug(String),
}

/// An SSH key already on the account, by id or fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SshKey {
    Id(u64),
    Fingerprint(String),
}

/// The body of `POST /v2/droplets` for one droplet. Name and tags should be unique to the
/// saga: DigitalOcean has no idempotency key, so they are how a retry finds what it made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateDroplet {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub size: String,
    pub image: ImageSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<SshKey>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub monitoring: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6: bool,
}

/// What `POST /v2/droplets` answers (202): the droplet, still `new` with no address, and the
/// id of its `create` action.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedDroplet {
    pub droplet: Droplet,
    pub action_id: Option<ActionId>,
}

/// The droplet actions Berth posts (`POST /v2/droplets/{id}/actions`, answered 201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DropletAction {
    /// Snapshot the droplet under `name` (make it unique: the response carries no image id).
    Snapshot {
        name: String,
    },
    /// Resize to `size`; `disk: true` also grows the disk, permanently. The droplet must be off.
    Resize {
        size: String,
        disk: bool,
    },
    /// Hard power off.
    PowerOff,
    PowerOn,
    /// Graceful shutdown; may not succeed (follow with `PowerOff` after a timeout).
    Shutdown,
}

impl DropletAction {
    /// The action's `type` as DigitalOcean spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            DropletAction::Snapshot { .. } => "snapshot",
            DropletAction::Resize { .. } => "resize",
            DropletAction::PowerOff => "power_off",
            DropletAction::PowerOn => "power_on",
            DropletAction::Shutdown => "shutdown",
        }
    }
}

/// An action's status; note `completed`, not `complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionStatus {
    InProgress,
    Completed,
    Errored,
    #[serde(other)]
    Unknown,
}

/// An action (`GET /v2/actions/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub id: ActionId,
    pub status: ActionStatus,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub resource_id: Option<u64>,
    #[serde(default)]
    pub resource_type: Option<String>,
    #[serde(default)]
    pub region_slug: Option<String>,
}

impl Action {
    /// Finished one way or the other (`completed` or `errored`).
    pub fn is_done(&self) -> bool {
        matches!(self.status, ActionStatus::Completed | ActionStatus::Errored)
    }
}

/// `snapshot` (made by a user) or `backup` (made by DigitalOcean's backups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    Snapshot,
    Backup,
    #[serde(other)]
    Unknown,
}

/// One image in `GET /v2/droplets/{id}/snapshots` (integer id, with a `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropletSnapshot {
    pub id: u64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, deserialize_with = "nullable_vec")]
    pub regions: Vec<String>,
    #[serde(default)]
    pub min_disk_size: Option<u64>,
    #[serde(default)]
    pub size_gigabytes: Option<f64>,
    #[serde(rename = "type")]
    pub kind: ImageKind,
}

impl DropletSnapshot {
    /// The id to use with `/v2/snapshots/{id}`.
    pub fn snapshot_id(&self) -> SnapshotId {
        SnapshotId::from(self.id)
    }
}

/// A snapshot in `GET /v2/snapshots` and `GET /v2/snapshots/{id}` (string ids).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, deserialize_with = "nullable_vec")]
    pub regions: Vec<String>,
    #[serde(default)]
    pub resource_id: Option<String>,
    #[serde(default)]
    pub resource_type: Option<String>,
    #[serde(default)]
    pub min_disk_size: Option<u64>,
    #[serde(default)]
    pub size_gigabytes: Option<f64>,
    #[serde(default, deserialize_with = "nullable_vec")]
    pub tags: Vec<String>,
}

/// A tag (`POST /v2/tags` answers it with resource counts we do not use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub name: String,
}

/// What kind of resource a tag is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    Droplet,
    Image,
    Volume,
    VolumeSnapshot,
}

/// One resource in `POST /v2/tags/{tag}/resources`; the id is a string even for droplets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagResource {
    pub resource_id: String,
    pub resource_type: ResourceType,
}

impl TagResource {
    pub fn droplet(id: DropletId) -> Self {
        Self {
            resource_id: id.to_string(),
            resource_type: ResourceType::Droplet,
        }
    }

    pub fn snapshot(id: &SnapshotId) -> Self {
        Self {
            resource_id: id.0.clone(),
            resource_type: ResourceType::Image,
        }
    }
}

/// The account behind a token (`GET /v2/account`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub droplet_limit: u32,
    #[serde(default)]
    pub floating_ip_limit: u32,
    pub email: String,
    pub uuid: String,
    #[serde(default)]
    pub email_verified: bool,
    /// `active`, `warning` or `locked`.
    pub status: String,
    #[serde(default)]
    pub status_message: String,
}

/// The outcome of a delete: 404 is success for a delete, so callers can tell the two apart
/// without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// DigitalOcean accepted the delete (204).
    Now,
    /// It was already gone (404).
    AlreadyGone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_droplet_example_parses_and_keeps_unknown_fields() {
        let body: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/digitalocean/examples/droplets_get.200.single_droplet.json"
        ))
        .unwrap();
        let d: Droplet = serde_json::from_value(body["droplet"].clone()).unwrap();
        assert_eq!(d.id, DropletId(3164444));
        assert_eq!(d.status, DropletStatus::Active);
        assert_eq!(d.public_ipv4(), Some(Ipv4Addr::new(192, 241, 165, 154)));
        assert!(d.is_ready());
        assert!(d.extra.contains_key("features"), "{:?}", d.extra.keys());
        assert_eq!(d.region.slug, "nyc3");
    }

    #[test]
    fn actions_serialize_as_the_spec_examples() {
        let j = |a: &DropletAction| serde_json::to_value(a).unwrap();
        assert_eq!(
            j(&DropletAction::PowerOff),
            serde_json::json!({"type": "power_off"})
        );
        assert_eq!(
            j(&DropletAction::Resize {
                size: "s-2vcpu-2gb".into(),
                disk: true
            }),
            serde_json::json!({"type": "resize", "size": "s-2vcpu-2gb", "disk": true})
        );
        assert_eq!(
            j(&DropletAction::Snapshot { name: "n".into() }),
            serde_json::json!({"type": "snapshot", "name": "n"})
        );
    }

    #[test]
    fn unknown_statuses_do_not_fail_parsing() {
        let a: Action = serde_json::from_value(serde_json::json!({
            "id": 1, "status": "paused", "type": "snapshot", "started_at": null,
        }))
        .unwrap();
        assert_eq!(a.status, ActionStatus::Unknown);
        assert!(!a.is_done());
    }

    #[test]
    fn snapshot_ids_of_both_shapes_compare_equal() {
        let s: DropletSnapshot = serde_json::from_value(serde_json::json!({
            "id": 6372321, "name": "web", "created_at": "2020-07-28T16:47:44Z",
            "regions": ["nyc3"], "min_disk_size": 25, "size_gigabytes": 2.34, "type": "snapshot"
        }))
        .unwrap();
        assert_eq!(s.snapshot_id(), SnapshotId::from("6372321"));
    }
}
