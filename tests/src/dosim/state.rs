//! The simulated cloud: droplets, actions, snapshots and tags, and how they change with time
//! (a droplet turns `active`, an action completes and takes effect, a snapshot becomes listed,
//! a deleted thing stops lingering). Time is real: `advance` is called before every request
//! and every inspection.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::catalog::Size;
use super::config::{SimConfig, Timings};
use super::faults::Faults;
use super::ratelimit::Windows;
use super::{LoggedRequest, Violation};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    ReadWrite,
    /// GETs only; anything else answers 403.
    ReadOnly,
}

#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub secret: String,
    pub label: String,
    pub scope: Scope,
}

#[derive(Debug, Clone)]
pub enum DropletImage {
    Public(u64),
    Snapshot { id: u64, name: String },
}

#[derive(Debug, Clone)]
pub struct Droplet {
    pub id: u64,
    pub seq: u64,
    pub name: String,
    pub size: &'static Size,
    pub region: &'static str,
    pub image: DropletImage,
    pub tags: Vec<String>,
    pub created: Instant,
    pub created_at: DateTime<Utc>,
    pub create_action: u64,
    pub power_on: bool,
    pub public_networking: bool,
    pub ipv6: bool,
    pub monitoring: bool,
    pub backups: bool,
    /// The cloud-init user data the create request carried.
    pub user_data: Option<String>,
    pub vpc_uuid: String,
    pub deleted: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct Action {
    pub id: u64,
    pub droplet: u64,
    pub kind: String,
    pub started: Instant,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub errored: bool,
    pub applied: bool,
    pub region: &'static str,
    /// `resize`: the new size; `snapshot`: the name.
    pub argument: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: u64,
    pub name: String,
    pub droplet: u64,
    pub region: &'static str,
    pub created_at: DateTime<Utc>,
    pub listed_from: Instant,
    pub min_disk_size: u64,
    pub size_gigabytes: f64,
    pub tags: Vec<String>,
    pub deleted: Option<Instant>,
}

/// Which action ends `errored` instead of `completed`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionFailure {
    /// Only actions of this droplet; `None`: any droplet.
    pub droplet: Option<u64>,
    /// Only actions of this type (`snapshot`, `create`, `resize`…); `None`: any.
    pub kind: Option<String>,
}

/// A droplet as a test sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDroplet {
    pub id: u64,
    pub name: String,
    pub status: &'static str,
    pub size_slug: String,
    pub region: String,
    pub tags: Vec<String>,
    pub public_ipv4: Option<Ipv4Addr>,
    pub snapshot_ids: Vec<u64>,
    pub user_data: Option<String>,
}

/// A snapshot as a test sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSnapshot {
    pub id: u64,
    pub name: String,
    pub droplet_id: u64,
    /// Already shown in listings.
    pub listed: bool,
}

/// An action as a test sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimAction {
    pub id: u64,
    pub droplet_id: u64,
    pub kind: String,
    pub status: &'static str,
}

/// Everything behind the simulator's lock.
#[derive(Debug)]
pub struct World {
    pub config: SimConfig,
    pub tokens: Vec<TokenEntry>,
    pub droplets: BTreeMap<u64, Droplet>,
    pub actions: BTreeMap<u64, Action>,
    pub snapshots: BTreeMap<u64, Snapshot>,
    /// Lower-cased name → the name as first created (canonical).
    pub tags: BTreeMap<String, String>,
    pub failures: Vec<ActionFailure>,
    pub faults: Faults,
    pub windows: Windows,
    pub log: Vec<LoggedRequest>,
    pub violations: Vec<Violation>,
    next_droplet: u64,
    next_action: u64,
    next_snapshot: u64,
    next_seq: u64,
}

impl World {
    pub fn new(config: SimConfig) -> Self {
        Self {
            config,
            tokens: Vec::new(),
            droplets: BTreeMap::new(),
            actions: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            tags: BTreeMap::new(),
            failures: Vec::new(),
            faults: Faults::default(),
            windows: Windows::default(),
            log: Vec::new(),
            violations: Vec::new(),
            next_droplet: 410_000_001,
            next_action: 2_300_000_001,
            next_snapshot: 180_000_001,
            next_seq: 1,
        }
    }

    pub fn t(&self) -> &Timings {
        &self.config.timings
    }

    pub fn new_droplet_id(&mut self) -> (u64, u64) {
        let ids = (self.next_droplet, self.next_seq);
        self.next_droplet += 1;
        self.next_seq += 1;
        ids
    }

    pub fn new_snapshot_id(&mut self) -> u64 {
        self.next_snapshot += 1;
        self.next_snapshot - 1
    }

    /// Starts an action; it ends `errored` if a registered failure matches it.
    pub fn start_action(
        &mut self,
        droplet: u64,
        kind: &str,
        duration: Duration,
        argument: Option<String>,
        now: Instant,
    ) -> u64 {
        let id = self.next_action;
        self.next_action += 1;
        let errored = match self.failures.iter().position(|f| {
            f.droplet.is_none_or(|d| d == droplet) && f.kind.as_deref().is_none_or(|k| k == kind)
        }) {
            Some(i) => {
                self.failures.remove(i);
                true
            }
            None => false,
        };
        let region = self.droplets.get(&droplet).map_or("nyc3", |d| d.region);
        self.actions.insert(
            id,
            Action {
                id,
                droplet,
                kind: kind.to_owned(),
                started: now,
                started_at: Utc::now(),
                duration,
                errored,
                applied: false,
                region,
                argument,
            },
        );
        id
    }

    /// Applies every action that finished by `now`, forgets what stopped lingering.
    pub fn advance(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .actions
            .values()
            .filter(|a| !a.applied && now >= a.started + a.duration)
            .map(|a| a.id)
            .collect();
        for id in due {
            let action = {
                let a = self.actions.get_mut(&id).expect("listed above");
                a.applied = true;
                a.clone()
            };
            if !action.errored {
                self.apply(&action);
            }
        }
        let linger = self.t().delete_linger;
        self.droplets
            .retain(|_, d| d.deleted.is_none_or(|at| now < at + linger));
        self.snapshots
            .retain(|_, s| s.deleted.is_none_or(|at| now < at + linger));
    }

    fn apply(&mut self, action: &Action) {
        let lag = self.t().snapshot_listing_lag;
        let done = action.started + action.duration;
        match action.kind.as_str() {
            "power_off" | "shutdown" => self.with_droplet(action.droplet, |d| d.power_on = false),
            "power_on" => self.with_droplet(action.droplet, |d| d.power_on = true),
            "resize" => {
                if let Some(size) = action.argument.as_deref().and_then(super::catalog::size) {
                    self.with_droplet(action.droplet, |d| d.size = size);
                }
            }
            "snapshot" => {
                let Some(d) = self.droplets.get(&action.droplet) else {
                    return;
                };
                let (region, disk) = (d.region, d.size.disk);
                let name = action.argument.clone().unwrap_or_else(|| {
                    format!("{}-{}", d.name, action.started_at.timestamp_millis())
                });
                let id = self.new_snapshot_id();
                self.snapshots.insert(
                    id,
                    Snapshot {
                        id,
                        name,
                        droplet: action.droplet,
                        region,
                        // What terraform matches the action on when the name does not help.
                        created_at: action.started_at,
                        listed_from: done + lag,
                        min_disk_size: disk,
                        size_gigabytes: 1.5 + (id % 100) as f64 / 100.0,
                        tags: Vec::new(),
                        deleted: None,
                    },
                );
            }
            _ => {}
        }
    }

    fn with_droplet(&mut self, id: u64, f: impl FnOnce(&mut Droplet)) {
        if let Some(d) = self.droplets.get_mut(&id) {
            f(d);
        }
    }

    /// An action of the droplet still running.
    pub fn busy(&self, droplet: u64, now: Instant) -> bool {
        self.actions
            .values()
            .any(|a| a.droplet == droplet && now < a.started + a.duration)
    }

    pub fn action_status(&self, a: &Action, now: Instant) -> &'static str {
        if now < a.started + a.duration {
            "in-progress"
        } else if a.errored {
            "errored"
        } else {
            "completed"
        }
    }

    pub fn droplet_status(&self, d: &Droplet, now: Instant) -> &'static str {
        let created = self.actions.get(&d.create_action);
        let creating = created.is_some_and(|a| now < a.started + a.duration || a.errored);
        if creating {
            "new"
        } else if d.power_on {
            "active"
        } else {
            "off"
        }
    }

    pub fn public_ipv4(&self, d: &Droplet, now: Instant) -> Option<Ipv4Addr> {
        let ready = self.droplet_status(d, now) != "new"
            && now >= d.created + self.t().active_after + self.t().ipv4_after_active;
        (ready && d.public_networking).then(|| {
            // 100.64.0.0/10: unique per droplet, never anyone's real address.
            let n = d.seq as u32;
            Ipv4Addr::new(100, 64 + ((n >> 16) & 0x3f) as u8, (n >> 8) as u8, n as u8)
        })
    }

    pub fn private_ipv4(&self, d: &Droplet) -> Ipv4Addr {
        let n = d.seq as u32;
        Ipv4Addr::new(10, 110 + ((n >> 16) & 0x0f) as u8, (n >> 8) as u8, n as u8)
    }

    /// Shown by `GET /v2/droplets/{id}`.
    pub fn droplet_readable(&self, d: &Droplet, now: Instant) -> bool {
        now >= d.created + self.t().get_404_after_create
    }

    /// Shown by listings.
    pub fn droplet_listed(&self, d: &Droplet, now: Instant) -> bool {
        now >= d.created + self.t().list_lag_after_create
    }

    pub fn snapshot_listed(&self, s: &Snapshot, now: Instant) -> bool {
        now >= s.listed_from
    }

    /// The droplet's snapshot ids as listings show them.
    pub fn snapshot_ids(&self, droplet: u64, now: Instant) -> Vec<u64> {
        self.snapshots
            .values()
            .filter(|s| s.droplet == droplet && s.deleted.is_none() && self.snapshot_listed(s, now))
            .map(|s| s.id)
            .collect()
    }

    pub fn inspect_droplets(&self, now: Instant) -> Vec<SimDroplet> {
        self.droplets
            .values()
            .filter(|d| d.deleted.is_none())
            .map(|d| SimDroplet {
                id: d.id,
                name: d.name.clone(),
                status: self.droplet_status(d, now),
                size_slug: d.size.slug.to_owned(),
                region: d.region.to_owned(),
                tags: d.tags.clone(),
                public_ipv4: self.public_ipv4(d, now),
                snapshot_ids: self.snapshot_ids(d.id, now),
                user_data: d.user_data.clone(),
            })
            .collect()
    }

    pub fn inspect_snapshots(&self, now: Instant) -> Vec<SimSnapshot> {
        self.snapshots
            .values()
            .filter(|s| s.deleted.is_none())
            .map(|s| SimSnapshot {
                id: s.id,
                name: s.name.clone(),
                droplet_id: s.droplet,
                listed: self.snapshot_listed(s, now),
            })
            .collect()
    }

    pub fn inspect_actions(&self, now: Instant) -> Vec<SimAction> {
        self.actions
            .values()
            .map(|a| SimAction {
                id: a.id,
                droplet_id: a.droplet,
                kind: a.kind.clone(),
                status: self.action_status(a, now),
            })
            .collect()
    }

    /// Finds the canonical spelling of a tag, creating it if new.
    pub fn ensure_tag(&mut self, name: &str) -> String {
        self.tags
            .entry(name.to_lowercase())
            .or_insert_with(|| name.to_owned())
            .clone()
    }
}
