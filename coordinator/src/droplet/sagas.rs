//! The droplet saga kinds, each built from its checked inputs:
//!
//! | kind | steps |
//! |---|---|
//! | `droplet.provision` | `create_droplet`, `wait_droplet_active`, `register_droplet` |
//! | `droplet.destroy` | `destroy_droplet` (pivot) |
//! | `droplet.snapshot` | `create_droplet_snapshot` |
//! | `droplet.resize` | `resize_droplet`, `update_desired_size` |
//! | `droplet.drill` | the named steps, usually ending in `fail`, to rehearse the unwind |

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::digitalocean::DropletId;
use crate::saga::{Registry, Step};

use super::DropletRef;
use super::create::{CreateDroplet, WaitDropletActive};
use super::inputs::{
    DestroyInputs, DrillInputs, DrillStep, ProvisionInputs, ResizeInputs, SnapshotInputs,
    check_droplet_id, check_label, check_size,
};
use super::register::{DestroyDroplet, Fail, RegisterDroplet, UpdateDesiredSize};
use super::resize::ResizeDroplet;
use super::snapshot::CreateDropletSnapshot;

/// Kinds that only an admin may start, whichever RPC starts them.
pub const ADMIN_KINDS: &[&str] = &["droplet.destroy"];

/// Registers the droplet saga kinds.
pub fn register(r: &mut Registry) {
    r.register("droplet.provision", build_provision);
    r.register("droplet.destroy", build_destroy);
    r.register("droplet.snapshot", build_snapshot);
    r.register("droplet.resize", build_resize);
    r.register("droplet.drill", build_drill);
}

type Steps = Result<Vec<Arc<dyn Step>>, String>;

fn parse<T: DeserializeOwned>(inputs: &Value) -> Result<T, String> {
    serde_json::from_value(inputs.clone()).map_err(|e| e.to_string())
}

fn build_provision(inputs: &Value) -> Steps {
    let p: ProvisionInputs = parse(inputs)?;
    p.check()?;
    let spec = p.spec();
    Ok(vec![
        Arc::new(CreateDroplet { inputs: p }),
        Arc::new(WaitDropletActive {
            droplet: DropletRef::FromStep(0),
            create_step: Some(0),
        }),
        Arc::new(RegisterDroplet {
            droplet: DropletRef::FromStep(0),
            spec,
            recorded_by: "saga:droplet.provision",
        }),
    ])
}

fn build_destroy(inputs: &Value) -> Steps {
    let d: DestroyInputs = parse(inputs)?;
    d.check()?;
    Ok(vec![Arc::new(DestroyDroplet {
        droplet: DropletRef::Id(DropletId(d.droplet_id)),
        force: d.force,
    })])
}

fn build_snapshot(inputs: &Value) -> Steps {
    let s: SnapshotInputs = parse(inputs)?;
    s.check()?;
    Ok(vec![Arc::new(CreateDropletSnapshot {
        droplet: DropletRef::Id(DropletId(s.droplet_id)),
        label: s.label,
    })])
}

fn build_resize(inputs: &Value) -> Steps {
    let r: ResizeInputs = parse(inputs)?;
    r.check()?;
    let droplet = DropletRef::Id(DropletId(r.droplet_id));
    Ok(vec![
        Arc::new(ResizeDroplet {
            droplet,
            size_slug: r.size_slug.clone(),
            disk: r.disk,
        }),
        Arc::new(UpdateDesiredSize {
            droplet,
            size_slug: r.size_slug,
        }),
    ])
}

fn build_drill(inputs: &Value) -> Steps {
    let d: DrillInputs = parse(inputs)?;
    if d.steps.is_empty() || d.steps.len() > 12 {
        return Err("`steps` must name 1 to 12 steps".into());
    }
    if let Some(p) = &d.provision {
        p.check()?;
    }
    let mut droplet = match d.droplet_id {
        Some(id) => {
            check_droplet_id(id)?;
            Some(DropletRef::Id(DropletId(id)))
        }
        None => None,
    };
    let mut create_step = None;
    let mut steps: Vec<Arc<dyn Step>> = Vec::new();
    for (i, step) in d.steps.iter().enumerate() {
        let current = droplet;
        let needs_droplet = || {
            current.ok_or_else(|| {
                format!(
                    "step {i} ({step:?}) needs a droplet: give `droplet_id` or put \
                     create_droplet before it"
                )
            })
        };
        let built: Arc<dyn Step> = match step {
            DrillStep::CreateDroplet => {
                let p = d
                    .provision
                    .clone()
                    .ok_or("create_droplet needs `provision`")?;
                if create_step.is_some() {
                    return Err("a drill creates at most one droplet".into());
                }
                create_step = Some(i);
                droplet = Some(DropletRef::FromStep(i));
                Arc::new(CreateDroplet { inputs: p })
            }
            DrillStep::WaitDropletActive => Arc::new(WaitDropletActive {
                droplet: needs_droplet()?,
                create_step,
            }),
            DrillStep::RegisterDroplet => {
                // Its compensation removes the droplet's inventory row and spec: only for a
                // droplet the drill made itself.
                if create_step.is_none() {
                    return Err("register_droplet in a drill needs create_droplet before it".into());
                }
                let p = d
                    .provision
                    .as_ref()
                    .ok_or("register_droplet needs `provision` (the spec it records)")?;
                Arc::new(RegisterDroplet {
                    droplet: needs_droplet()?,
                    spec: p.spec(),
                    recorded_by: "saga:droplet.drill",
                })
            }
            DrillStep::CreateDropletSnapshot => {
                d.label.as_deref().map(check_label).transpose()?;
                Arc::new(CreateDropletSnapshot {
                    droplet: needs_droplet()?,
                    label: d.label.clone(),
                })
            }
            DrillStep::ResizeDroplet => {
                let size = d
                    .size_slug
                    .clone()
                    .ok_or("resize_droplet needs `size_slug`")?;
                check_size(&size)?;
                Arc::new(ResizeDroplet {
                    droplet: needs_droplet()?,
                    size_slug: size,
                    disk: false,
                })
            }
            DrillStep::Fail => Arc::new(Fail),
        };
        steps.push(built);
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry() -> Registry {
        let mut r = Registry::default();
        register(&mut r);
        r
    }

    fn names(kind: &str, inputs: Value) -> Result<Vec<(&'static str, bool)>, String> {
        registry()
            .build(kind, &inputs.to_string())
            .map(|(_, steps)| steps.iter().map(|s| (s.name(), s.pivot())).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_kind_builds_its_steps() {
        let provision = json!({"name": "web-1", "region": "nyc3", "size_slug": "s-1vcpu-1gb",
            "image": "ubuntu-24-04-x64"});
        assert_eq!(
            names("droplet.provision", provision.clone()).unwrap(),
            [
                ("create_droplet", false),
                ("wait_droplet_active", false),
                ("register_droplet", false)
            ]
        );
        assert_eq!(
            names("droplet.destroy", json!({"droplet_id": 7})).unwrap(),
            [("destroy_droplet", true)]
        );
        assert_eq!(
            names(
                "droplet.resize",
                json!({"droplet_id": 7, "size_slug": "s-2vcpu-2gb"})
            )
            .unwrap(),
            [("resize_droplet", false), ("update_desired_size", false)]
        );
        assert_eq!(
            names(
                "droplet.resize",
                json!({"droplet_id": 7, "size_slug": "s-2vcpu-2gb", "disk": true})
            )
            .unwrap()[0],
            ("resize_droplet", true),
            "a disk resize cannot be undone"
        );
        let drill = json!({"provision": provision, "steps": ["create_droplet",
            "wait_droplet_active", "create_droplet_snapshot", "fail"]});
        assert_eq!(names("droplet.drill", drill).unwrap().len(), 4);
    }

    #[test]
    fn bad_inputs_are_refused_before_anything_runs() {
        let err = names("droplet.snapshot", json!({"droplet_id": 7, "label": "a/b"})).unwrap_err();
        assert!(err.contains("label"), "{err}");
        let err = names("droplet.destroy", json!({"droplet_id": 0})).unwrap_err();
        assert!(err.contains("droplet_id"), "{err}");
        let err = names("droplet.provision", json!({"name": "x"})).unwrap_err();
        assert!(err.contains("missing field"), "{err}");
        let err = names(
            "droplet.drill",
            json!({"steps": ["create_droplet_snapshot", "fail"]}),
        )
        .unwrap_err();
        assert!(err.contains("needs a droplet"), "{err}");
        let err = names(
            "droplet.drill",
            json!({"droplet_id": 3, "steps": ["register_droplet"], "provision": {"name": "a",
                "region": "nyc3", "size_slug": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64"}}),
        )
        .unwrap_err();
        assert!(err.contains("create_droplet before it"), "{err}");
        let err = names(
            "droplet.drill",
            json!({"droplet_id": 3, "steps": ["resize_droplet"]}),
        )
        .unwrap_err();
        assert!(err.contains("size_slug"), "{err}");
    }
}
