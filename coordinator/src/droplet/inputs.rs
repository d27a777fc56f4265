//! The typed inputs of the droplet sagas, checked when a saga starts so a bad name or slug is
//! refused before anything is written or sent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::digitalocean::{CreateDroplet, ImageSpec, SshKey};

use super::{MANAGED_TAG, SAGA_TAG_PREFIX};

/// `droplet.provision`: what to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionInputs {
    /// A hostname: letters, digits, `-` and `.`.
    pub name: String,
    /// A region slug (`nyc3`, `fra1`).
    pub region: String,
    /// A size slug (`s-1vcpu-1gb`).
    pub size_slug: String,
    /// A public image slug (`ubuntu-24-04-x64`) or a numeric image or snapshot id.
    pub image: String,
    /// SSH keys already on the account: numeric ids or MD5 fingerprints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
    /// Extra tags; Berth adds its own (`berth-saga-…`, `managed-by-berth`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Cloud-init user data, at most 64 KiB. A secret: when the saga starts it moves to
    /// `saga_secrets` and only `user_data_bytes` stays in the inputs (`saga::secrets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Set in a started saga's inputs instead of `user_data`: its length; `CreateDroplet`
    /// reads the value from the saga's secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_bytes: Option<u64>,
}

/// `droplet.destroy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestroyInputs {
    pub droplet_id: u64,
    /// Destroy a droplet without the `managed-by-berth` tag too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// `droplet.snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotInputs {
    pub droplet_id: u64,
    /// Appended to the snapshot's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// `droplet.resize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeInputs {
    pub droplet_id: u64,
    pub size_slug: String,
    /// Grow the disk too: permanent (the droplet can never shrink back), so the resize is then
    /// a pivot that is not undone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disk: bool,
}

/// One step of a `droplet.drill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillStep {
    CreateDroplet,
    WaitDropletActive,
    RegisterDroplet,
    CreateDropletSnapshot,
    ResizeDroplet,
    /// Fails on purpose: everything before it is undone.
    Fail,
}

/// `droplet.drill`: the named droplet steps in order, for rehearsing failures and their unwind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillInputs {
    pub steps: Vec<DrillStep>,
    /// For `create_droplet`.
    #[serde(default)]
    pub provision: Option<ProvisionInputs>,
    /// The droplet the steps work on when no `create_droplet` step comes first.
    #[serde(default)]
    pub droplet_id: Option<u64>,
    /// For `create_droplet_snapshot`.
    #[serde(default)]
    pub label: Option<String>,
    /// For `resize_droplet`.
    #[serde(default)]
    pub size_slug: Option<String>,
}

fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_slug(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// DigitalOcean's tag rule: letters, digits, `:`, `-`, `_`; at most 255 characters.
pub fn is_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 255
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'))
}

fn is_fingerprint(k: &str) -> bool {
    let parts: Vec<&str> = k.split(':').collect();
    parts.len() == 16
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub fn check_region(region: &str) -> Result<(), String> {
    let letters = region.bytes().take_while(u8::is_ascii_lowercase).count();
    let ok = (2..=4).contains(&letters)
        && region.len() > letters
        && region.len() <= letters + 2
        && region.bytes().skip(letters).all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "region {region:?} is not a region slug; give one such as nyc3 or fra1"
        ))
    }
}

pub fn check_size(size: &str) -> Result<(), String> {
    if is_slug(size, 64) {
        Ok(())
    } else {
        Err(format!(
            "size_slug {size:?} is not a size slug; give one such as s-1vcpu-1gb"
        ))
    }
}

pub fn check_label(label: &str) -> Result<(), String> {
    let ok = !label.is_empty()
        && label.len() <= 64
        && label
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "snapshot label {label:?} is not valid: use up to 64 letters, digits, '-', '_' and '.', \
             starting with a letter or digit"
        ))
    }
}

pub fn check_droplet_id(id: u64) -> Result<(), String> {
    if id == 0 {
        Err("droplet_id is missing or 0; give the droplet's numeric id".into())
    } else {
        Ok(())
    }
}

impl ProvisionInputs {
    pub fn check(&self) -> Result<(), String> {
        if !is_hostname(&self.name) {
            return Err(format!(
                "droplet name {:?} is not a valid hostname: use letters, digits, '-' and '.', at \
                 most 63 characters between dots, none starting or ending with '-'",
                self.name
            ));
        }
        check_region(&self.region)?;
        check_size(&self.size_slug)?;
        // A slug, or digits (an image or snapshot id), which the slug rule also allows.
        if !is_slug(&self.image, 128) {
            return Err(format!(
                "image {:?} is neither an image slug (ubuntu-24-04-x64) nor a numeric image id",
                self.image
            ));
        }
        for k in &self.ssh_keys {
            let id = !k.is_empty() && k.len() <= 19 && k.bytes().all(|b| b.is_ascii_digit());
            if !id && !is_fingerprint(k) {
                return Err(format!(
                    "ssh key {k:?} is neither a numeric key id nor an md5 fingerprint \
                     (aa:bb:…, 16 pairs); `doctl compute ssh-key list` shows both"
                ));
            }
        }
        if self.tags.len() > 20 {
            return Err(format!("{} tags given; at most 20", self.tags.len()));
        }
        for t in &self.tags {
            if !is_tag(t) {
                return Err(format!(
                    "tag {t:?} is not valid: use letters, digits, ':', '-' and '_'"
                ));
            }
            if t.starts_with(SAGA_TAG_PREFIX) || t == MANAGED_TAG {
                return Err(format!(
                    "tag {t:?} is reserved: berth adds {SAGA_TAG_PREFIX}<saga id> and {MANAGED_TAG} itself"
                ));
            }
        }
        if self.user_data.as_ref().is_some_and(|u| u.len() > 64 * 1024) {
            return Err("user_data is longer than 64 KiB".into());
        }
        Ok(())
    }

    /// The create request, tagged for this saga, with the user data read from its secrets.
    pub fn create_request(&self, saga_tag: &str, user_data: Option<String>) -> CreateDroplet {
        let image = match self.image.parse::<u64>() {
            Ok(id) => ImageSpec::Id(id),
            Err(_) => ImageSpec::Slug(self.image.clone()),
        };
        let ssh_keys = self
            .ssh_keys
            .iter()
            .map(|k| match k.parse::<u64>() {
                Ok(id) => SshKey::Id(id),
                Err(_) => SshKey::Fingerprint(k.clone()),
            })
            .collect();
        let mut tags = vec![saga_tag.to_owned(), MANAGED_TAG.to_owned()];
        tags.extend(self.tags.iter().cloned());
        CreateDroplet {
            name: self.name.clone(),
            region: Some(self.region.clone()),
            size: self.size_slug.clone(),
            image,
            ssh_keys,
            tags,
            user_data,
            vpc_uuid: None,
            monitoring: false,
            ipv6: false,
        }
    }

    /// The desired state `RegisterDroplet` records: what was asked for.
    pub fn spec(&self) -> Map<String, Value> {
        let mut spec = Map::new();
        spec.insert("size_slug".into(), self.size_slug.clone().into());
        spec.insert("region".into(), self.region.clone().into());
        spec.insert("image".into(), self.image.clone().into());
        spec
    }
}

impl DestroyInputs {
    pub fn check(&self) -> Result<(), String> {
        check_droplet_id(self.droplet_id)
    }
}

impl SnapshotInputs {
    pub fn check(&self) -> Result<(), String> {
        check_droplet_id(self.droplet_id)?;
        self.label.as_deref().map(check_label).transpose()?;
        Ok(())
    }
}

impl ResizeInputs {
    pub fn check(&self) -> Result<(), String> {
        check_droplet_id(self.droplet_id)?;
        check_size(&self.size_slug)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provision() -> ProvisionInputs {
        ProvisionInputs {
            name: "web-1.example.org".into(),
            region: "nyc3".into(),
            size_slug: "s-1vcpu-1gb".into(),
            image: "ubuntu-24-04-x64".into(),
            ssh_keys: vec![
                "289794".into(),
                "3b:16:e4:bf:8b:00:8b:b8:59:8c:a9:d3:f0:19:fa:45".into(),
            ],
            tags: vec!["env:prod".into()],
            user_data: None,
            user_data_bytes: None,
        }
    }

    #[test]
    fn good_inputs_pass_and_make_a_tagged_request() {
        let p = provision();
        p.check().unwrap();
        let r = p.create_request("berth-saga-x", None);
        assert_eq!(r.tags, ["berth-saga-x", "managed-by-berth", "env:prod"]);
        assert_eq!(r.ssh_keys[0], SshKey::Id(289794));
        let id = ProvisionInputs {
            image: "12345".into(),
            ..provision()
        };
        id.check().unwrap();
        assert_eq!(id.create_request("t", None).image, ImageSpec::Id(12345));
    }

    #[test]
    fn bad_inputs_name_the_field_and_the_rule() {
        let cases = [
            (
                ProvisionInputs {
                    name: "web_1".into(),
                    ..provision()
                },
                "hostname",
            ),
            (
                ProvisionInputs {
                    name: "-web".into(),
                    ..provision()
                },
                "hostname",
            ),
            (
                ProvisionInputs {
                    name: "a..b".into(),
                    ..provision()
                },
                "hostname",
            ),
            (
                ProvisionInputs {
                    region: "New York".into(),
                    ..provision()
                },
                "region",
            ),
            (
                ProvisionInputs {
                    size_slug: "S 1".into(),
                    ..provision()
                },
                "size_slug",
            ),
            (
                ProvisionInputs {
                    image: "Ubuntu 24".into(),
                    ..provision()
                },
                "image",
            ),
            (
                ProvisionInputs {
                    ssh_keys: vec!["key".into()],
                    ..provision()
                },
                "ssh key",
            ),
            (
                ProvisionInputs {
                    tags: vec!["a b".into()],
                    ..provision()
                },
                "tag",
            ),
            (
                ProvisionInputs {
                    tags: vec!["managed-by-berth".into()],
                    ..provision()
                },
                "reserved",
            ),
            (
                ProvisionInputs {
                    tags: vec!["berth-saga-1".into()],
                    ..provision()
                },
                "reserved",
            ),
        ];
        for (inputs, word) in cases {
            let err = inputs.check().unwrap_err();
            assert!(err.contains(word), "{word}: {err}");
        }
        assert!(check_label("../x").is_err());
        assert!(check_label("nightly-2026.01").is_ok());
        assert!(check_droplet_id(0).is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<SnapshotInputs>(r#"{"droplet_id":1,"lable":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lable"), "{err}");
    }
}
