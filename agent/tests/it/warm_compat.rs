//! Compatibility with cc-ci's warmsnap.py, run for real (python3 + the docker CLI): a warm
//! root Berth writes passes its `has_snapshot` and restores through its `restore`, and one
//! its `snapshot` writes restores through Berth.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_agent::warm::{AppTarget, RestoreMethod, RestoreRequest, SnapshotRequest};

use crate::env::{Labels, TestStack, require_docker_as_root, warm};
use crate::tree::{assert_same, fill, mutate, reference};
use crate::warm::go;

fn cc_ci() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/origins/cc-ci");
    assert!(
        dir.join("warmsnap.py").is_file(),
        "cc-ci's warmsnap.py is not at {}; the shared/ folder must sit beside the repository",
        dir.display()
    );
    dir
}

/// Runs `code` with warmsnap imported and `CCCI_WARM_ROOT=root`; returns stdout.
fn python(root: &Path, code: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!("import json, warmsnap\n{code}"))
        .current_dir(cc_ci())
        .env("CCCI_WARM_ROOT", root)
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "warmsnap.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A stack named after a domain, as Co-op Cloud does it: `<id>.ci.test` → `<id>_ci_test`.
fn domain_stack() -> (TestStack, String) {
    let stack = TestStack::new("_ci_test");
    let domain = stack.name.replace('_', ".");
    (stack, domain)
}

#[tokio::test]
async fn warmsnap_py_reads_and_restores_what_berth_writes() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let (mut stack, domain) = domain_stack();
    let db = stack.volume("db", Labels::Swarm);
    let files = stack.volume("files", Labels::Swarm);
    fill(&db, 4);
    fill(&files, 5);
    let req = SnapshotRequest {
        target: AppTarget::new("compat1", &domain, None).unwrap(),
        commit: Some("c0ffee".into()),
        version: None,
        spare: true,
        wait_undeployed: Duration::ZERO,
    };
    let (p, c) = go();
    let out = w.snapshot(&req, p, c).await.unwrap();
    assert_eq!(
        out.volumes,
        [
            format!("{}_db", stack.name),
            format!("{}_files", stack.name)
        ]
    );

    let seen = python(
        root.path(),
        "print(json.dumps([warmsnap.has_snapshot('compat1'), warmsnap.read_meta('compat1')]))",
    );
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(seen[0], true, "{seen}");
    assert_eq!(seen[1]["recipe"], "compat1");
    assert_eq!(seen[1]["domain"], domain.as_str());
    assert_eq!(seen[1]["commit"], "c0ffee");
    assert_eq!(seen[1]["volumes"], serde_json::json!(out.volumes));

    mutate(&db);
    mutate(&files);
    python(
        root.path(),
        &format!("warmsnap.restore('compat1', '{domain}')"),
    );
    // GNU tar restores xattrs only with --xattrs, which warmsnap.py does not pass.
    assert_same(&db, reference(4).path(), false);
    assert_same(&files, reference(5).path(), false);
}

#[tokio::test]
async fn berth_restores_what_warmsnap_py_writes() {
    require_docker_as_root().await;
    let root = tempfile::tempdir().unwrap();
    let w = warm(root.path()).await;
    let (mut stack, domain) = domain_stack();
    let db = stack.volume("db", Labels::Swarm);
    let files = stack.volume("files", Labels::Swarm);
    fill(&db, 6);
    fill(&files, 7);
    std::fs::create_dir_all(root.path().join("compat2")).unwrap();
    std::fs::write(root.path().join("compat2/last_good"), "v0").unwrap();
    python(
        root.path(),
        &format!("warmsnap.snapshot('compat2', '{domain}', commit='c1', version='v1')"),
    );

    let listed = w.list(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].complete && listed[0].taken_at_ms > 0,
        "{listed:?}"
    );
    assert_eq!(
        (listed[0].commit.as_deref(), listed[0].version.as_deref()),
        (Some("c1"), Some("v1"))
    );
    assert_eq!(listed[0].domain, domain);

    mutate(&db);
    mutate(&files);
    let req = RestoreRequest {
        target: AppTarget::new("compat2", &domain, None).unwrap(),
        use_spare: true,
        wait_undeployed: Duration::ZERO,
    };
    let (p, c) = go();
    let out = w.restore(&req, p, c).await.unwrap();
    assert!(out.volumes.iter().all(|v| v.method == RestoreMethod::Swap));
    // warmsnap.py's GNU tar stores no xattrs (no --xattrs).
    assert_same(&db, reference(6).path(), false);
    assert_same(&files, reference(7).path(), false);
    assert_eq!(
        std::fs::read_to_string(root.path().join("compat2/last_good")).unwrap(),
        "v0"
    );

    // And back: a snapshot by Berth over warmsnap.py's keeps its sibling state.
    let (p, c) = go();
    let req = SnapshotRequest {
        target: AppTarget::new("compat2", &domain, None).unwrap(),
        commit: None,
        version: None,
        spare: true,
        wait_undeployed: Duration::ZERO,
    };
    w.snapshot(&req, p, c).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(root.path().join("compat2/last_good")).unwrap(),
        "v0"
    );
    let has = python(root.path(), "print(warmsnap.has_snapshot('compat2'))");
    assert_eq!(has.trim(), "True");
}
