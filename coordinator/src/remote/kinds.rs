//! Saga kinds whose work happens on a host: warm snapshot and restore, archive create,
//! restore and verify (then the step recording its verdict). A saga's inputs are its task's inputs plus `host_id`, parsed at start as the
//! typed task contract (`berth_shared::task::Task`). Each saga is one agent step; an archive
//! create is followed by the retention step, and its archive's uuid is the saga's id unless
//! the inputs name one.

use std::sync::Arc;

use serde_json::Value;

use super::{AgentStep, task_of};
use crate::archive::{CheckStep, RetentionInputs, RetentionStep};
use crate::saga::{Registry, Step};

/// Checks a saga's inputs as the task they become (`berth_shared::task::Task`), so a bad
/// input is refused at start, before anything is written. The saga id is not known yet; a
/// placeholder stands in for the archive uuid it provides.
fn check(task_kind: &str, v: &Value) -> Result<(), String> {
    const PLACEHOLDER: &str = "00000000-0000-7000-8000-000000000000";
    task_of(task_kind, PLACEHOLDER, v).map(drop)
}

fn one(name: &'static str) -> Vec<Arc<dyn Step>> {
    vec![Arc::new(AgentStep {
        name,
        task_kind: name,
    })]
}

/// `steps`, then `step` (a coordinator step after the agent's).
fn then(mut steps: Vec<Arc<dyn Step>>, step: impl Step + 'static) -> Vec<Arc<dyn Step>> {
    steps.push(Arc::new(step));
    steps
}

fn warm_snapshot(v: &Value) -> Result<Vec<Arc<dyn Step>>, String> {
    check("warm_snapshot", v)?;
    Ok(one("warm_snapshot"))
}

fn warm_restore(v: &Value) -> Result<Vec<Arc<dyn Step>>, String> {
    check("warm_restore", v)?;
    Ok(one("warm_restore"))
}

fn archive_create(v: &Value) -> Result<Vec<Arc<dyn Step>>, String> {
    check("archive_create", v)?;
    RetentionInputs::of(v)?;
    Ok(then(one("archive_create"), RetentionStep))
}

fn archive_restore(v: &Value) -> Result<Vec<Arc<dyn Step>>, String> {
    check("archive_restore", v)?;
    Ok(one("archive_restore"))
}

fn archive_verify(v: &Value) -> Result<Vec<Arc<dyn Step>>, String> {
    check("archive_verify", v)?;
    Ok(then(one("archive_verify"), CheckStep))
}

/// Registers the agent-side saga kinds.
pub fn register(registry: &mut Registry) {
    registry.register("warm.snapshot", warm_snapshot);
    registry.register("warm.restore", warm_restore);
    registry.register("archive.create", archive_create);
    registry.register("archive.restore", archive_restore);
    registry.register("archive.verify", archive_verify);
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
        // A schedule's retention rides in the create's inputs, checked at start and never
        // sent to the agent.
        r.build(
            "archive.create",
            r#"{"host_id":"h","app":"a","retention":{"keep_daily":7,"timezone":"Europe/Berlin"}}"#,
        )
        .unwrap();
        let err = r
            .build(
                "archive.create",
                r#"{"host_id":"h","app":"a","retention":{"keep_daily":7,"timezone":"Mars"}}"#,
            )
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("retention: unknown time zone"),
            "{err}"
        );
        let (_, task) = super::super::task_of(
            "archive_create",
            "00000000-0000-7000-8000-000000000000",
            &serde_json::json!({"host_id":"h","app":"a","retention":{"keep_last":2}}),
        )
        .unwrap();
        assert!(!serde_json::to_string(&task).unwrap().contains("retention"));
        let err = r
            .build("archive.restore", r#"{"host_id":"h","uuid":"nope"}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("not a uuid"));
        r.build(
            "archive.verify",
            r#"{"host_id":"h","uuid":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"}"#,
        )
        .unwrap();
        let err = r
            .build(
                "archive.verify",
                r#"{"host_id":"h","uuid":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","recorded":{"sha256":"x","size":1,"tar_bytes":1,"entries":1}}"#,
            )
            .err()
            .unwrap();
        assert!(err.to_string().contains("filled in by the coordinator"));
    }
}
