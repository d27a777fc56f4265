//! What the simulated cloud offers: sizes, regions and public images, as DigitalOcean's JSON.

use serde_json::{Value, json};

/// A droplet size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Size {
    pub slug: &'static str,
    pub memory: u64,
    pub vcpus: u32,
    pub disk: u64,
    pub transfer: f64,
    pub price_monthly: f64,
}

pub const SIZES: &[Size] = &[
    Size {
        slug: "s-1vcpu-512mb-10gb",
        memory: 512,
        vcpus: 1,
        disk: 10,
        transfer: 0.5,
        price_monthly: 4.0,
    },
    Size {
        slug: "s-1vcpu-1gb",
        memory: 1024,
        vcpus: 1,
        disk: 25,
        transfer: 1.0,
        price_monthly: 6.0,
    },
    Size {
        slug: "s-1vcpu-2gb",
        memory: 2048,
        vcpus: 1,
        disk: 50,
        transfer: 2.0,
        price_monthly: 12.0,
    },
    Size {
        slug: "s-2vcpu-2gb",
        memory: 2048,
        vcpus: 2,
        disk: 60,
        transfer: 3.0,
        price_monthly: 18.0,
    },
    Size {
        slug: "s-2vcpu-4gb",
        memory: 4096,
        vcpus: 2,
        disk: 80,
        transfer: 4.0,
        price_monthly: 24.0,
    },
    Size {
        slug: "s-4vcpu-8gb",
        memory: 8192,
        vcpus: 4,
        disk: 160,
        transfer: 5.0,
        price_monthly: 48.0,
    },
];

pub const REGIONS: &[(&str, &str)] = &[
    ("nyc1", "New York 1"),
    ("nyc3", "New York 3"),
    ("sfo3", "San Francisco 3"),
    ("ams3", "Amsterdam 3"),
    ("fra1", "Frankfurt 1"),
    ("lon1", "London 1"),
    ("sgp1", "Singapore 1"),
    ("syd1", "Sydney 1"),
    ("tor1", "Toronto 1"),
    ("blr1", "Bangalore 1"),
];

/// The region DigitalOcean picks when a create names none.
pub const DEFAULT_REGION: &str = "nyc3";

/// Public images: (id, slug, distribution, name).
pub const IMAGES: &[(u64, &str, &str, &str)] = &[
    (160_000_001, "ubuntu-24-04-x64", "Ubuntu", "24.04 (LTS) x64"),
    (160_000_002, "ubuntu-22-04-x64", "Ubuntu", "22.04 (LTS) x64"),
    (160_000_003, "debian-12-x64", "Debian", "12 x64"),
    (160_000_004, "fedora-40-x64", "Fedora", "40 x64"),
    (160_000_005, "rockylinux-9-x64", "Rocky Linux", "9 x64"),
];

pub fn size(slug: &str) -> Option<&'static Size> {
    SIZES.iter().find(|s| s.slug == slug)
}

/// A region slug, or a prefix such as `nyc` meaning any datacenter there.
pub fn region(slug: &str) -> Option<&'static str> {
    REGIONS
        .iter()
        .find(|(s, _)| *s == slug)
        .or_else(|| {
            REGIONS
                .iter()
                .find(|(s, _)| s.starts_with(slug) && slug.len() >= 3)
        })
        .map(|(s, _)| *s)
}

pub fn public_image(slug: &str) -> Option<(u64, &'static str, &'static str, &'static str)> {
    IMAGES.iter().copied().find(|(_, s, _, _)| *s == slug)
}

fn region_slugs() -> Vec<&'static str> {
    REGIONS.iter().map(|(s, _)| *s).collect()
}

pub fn size_json(s: &Size) -> Value {
    let hourly = (s.price_monthly / 672.0 * 1e5).round() / 1e5;
    json!({
        "slug": s.slug,
        "memory": s.memory,
        "vcpus": s.vcpus,
        "disk": s.disk,
        "transfer": s.transfer,
        "price_monthly": s.price_monthly,
        "price_hourly": hourly,
        "regions": region_slugs(),
        "available": true,
        "description": "Basic",
        "disk_info": [{"type": "local", "size": {"amount": s.disk, "unit": "gib"}}],
    })
}

pub fn region_json(slug: &str) -> Value {
    let name = REGIONS
        .iter()
        .find(|(s, _)| *s == slug)
        .map_or("Unknown", |(_, n)| *n);
    json!({
        "name": name,
        "slug": slug,
        "features": ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"],
        "available": true,
        "sizes": SIZES.iter().map(|s| s.slug).collect::<Vec<_>>(),
    })
}

/// The `image` object of a droplet made from a public image.
pub fn public_image_json(id: u64, slug: &str, distribution: &str, name: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "distribution": distribution,
        "slug": slug,
        "public": true,
        "regions": region_slugs(),
        "created_at": "2024-04-25T00:00:00Z",
        "type": "base",
        "min_disk_size": 7,
        "size_gigabytes": 2.36,
        "description": format!("{distribution} {name}"),
        "tags": [],
        "status": "available",
        "error_message": "",
    })
}
