//! Saga kinds whose work happens on a host: warm snapshot and restore, archive create and
//! restore. Inputs are typed and checked at start. Each saga is one agent step; an archive
//! create is followed by the retention step, and its archive's uuid is the saga's id unless
//! the inputs name one.

use std::sync::Arc;

use berth_shared::{AppName, HostId, StackName};
use serde::Deserialize;
use serde_json::Value;

use super::kinds::Registry;
use super::remote::AgentStep;
use super::step::Step;
use crate::archive::RetentionStep;

/// Inputs of `warm.snapshot` and `warm.restore`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmInputs {
    host_id: String,
    app: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    stack: Option<String>,
    #[serde(default)]
    commit: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    wait_undeployed_secs: Option<u64>,
}

/// Inputs of `archive.create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveCreateInputs {
    host_id: String,
    app: String,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    index_label: Option<String>,
    #[serde(default)]
    zstd_level: Option<i32>,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    stack: Option<String>,
}

/// Inputs of `archive.restore`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveRestoreInputs {
    host_id: String,
    uuid: String,
    #[serde(default)]
    target_app: Option<String>,
    #[serde(default)]
    stack: Option<String>,
}

fn parse<T: for<'de> Deserialize<'de>>(v: &Value) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| e.to_string())
}

fn one(name: &'static str, task_kind: &'static str) -> Vec<Arc<dyn Step>> {
    vec![Arc::new(AgentStep {
        name,
        task_kind,
        uuid_from_saga: false,
    })]
}

/// An archive id as the agents and the bucket spell it: a lowercase, hyphenated uuid.
fn uuid(text: &str) -> Result<(), String> {
    berth_shared::archive::ArchiveId::new(text)
        .map(drop)
        .map_err(|_| {
            format!("archive uuid {text:?} is not a uuid in its lowercase, hyphenated form")
        })
}

fn check_warm(v: &Value) -> Result<(), String> {
    let i: WarmInputs = parse(v)?;
    HostId::new(i.host_id).map_err(|e| e.to_string())?;
    AppName::new(i.app).map_err(|e| e.to_string())?;
    match (&i.stack, i.domain.is_empty()) {
        (Some(s), _) => StackName::new(s.as_str())
            .map(drop)
            .map_err(|e| e.to_string())?,
        (None, false) => StackName::from_domain(&i.domain)
            .map(drop)
            .map_err(|e| e.to_string())?,
        (None, true) => return Err("give the app's `domain` or its `stack`".into()),
    }
    let _ = (i.commit, i.version, i.wait_undeployed_secs);
    Ok(())
}

fn warm_snapshot(v: &Value) -> Result<Vec<Arc<dyn Step>>, String> {
    check_warm(v)?;
    Ok(one("warm_snapshot", "warm_snapshot"))
}

fn warm_restore(v: &Value) -> Result<Vec<Arc<dyn Step>>, String> {
    check_warm(v)?;
    Ok(one("warm_restore", "warm_restore"))
}

fn archive_create(v: &Value) -> Result<Vec<Arc<dyn Step>>, String> {
    let i: ArchiveCreateInputs = parse(v)?;
    HostId::new(i.host_id).map_err(|e| e.to_string())?;
    AppName::new(i.app).map_err(|e| e.to_string())?;
    if let Some(level) = i.zstd_level
        && !(1..=19).contains(&level)
    {
        return Err(format!("zstd_level {level} is out of range; use 1 to 19"));
    }
    if let Some(id) = &i.uuid {
        uuid(id)?;
    }
    if let Some(stack) = i.stack {
        StackName::new(stack).map_err(|e| e.to_string())?;
    }
    let _ = (i.labels, i.index_label);
    Ok(vec![
        Arc::new(AgentStep {
            name: "archive_create",
            task_kind: "archive_create",
            uuid_from_saga: true,
        }),
        Arc::new(RetentionStep),
    ])
}

fn archive_restore(v: &Value) -> Result<Vec<Arc<dyn Step>>, String> {
    let i: ArchiveRestoreInputs = parse(v)?;
    HostId::new(i.host_id).map_err(|e| e.to_string())?;
    uuid(&i.uuid)?;
    if let Some(app) = i.target_app {
        AppName::new(app).map_err(|e| e.to_string())?;
    }
    if let Some(stack) = i.stack {
        StackName::new(stack).map_err(|e| e.to_string())?;
    }
    Ok(one("archive_restore", "archive_restore"))
}

/// Registers the agent-side saga kinds.
pub fn register(registry: &mut Registry) {
    registry.register("warm.snapshot", warm_snapshot);
    registry.register("warm.restore", warm_restore);
    registry.register("archive.create", archive_create);
    registry.register("archive.restore", archive_restore);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_inputs_are_checked_before_anything_is_written() {
        let mut r = Registry::default();
        register(&mut r);
        r.build(
            "warm.restore",
            r#"{"host_id":"ci-1","app":"keycloak","domain":"kc.example.org"}"#,
        )
        .unwrap();
        let err = |inputs: &str| r.build("warm.restore", inputs).err().unwrap().to_string();
        assert!(
            err(r#"{"host_id":"ci-1","app":"../x","domain":"kc.example.org"}"#)
                .contains("app name")
        );
        assert!(
            err(r#"{"host_id":"ci/1","app":"kc","domain":"kc.example.org"}"#).contains("host id")
        );
        assert!(err(r#"{"host_id":"ci-1","app":"kc"}"#).contains("domain"));
        assert!(
            err(r#"{"host_id":"ci-1","app":"kc","domain":"a","extra":1}"#)
                .contains("unknown field")
        );
        let err = r
            .build(
                "archive.create",
                r#"{"host_id":"h","app":"a","zstd_level":40}"#,
            )
            .err()
            .unwrap();
        assert!(err.to_string().contains("out of range"));
        let err = r
            .build("archive.restore", r#"{"host_id":"h","uuid":"nope"}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("not a uuid"));
    }
}
