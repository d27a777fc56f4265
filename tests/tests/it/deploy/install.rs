//! `deploy/install.sh` on a clean root (a temporary `DESTDIR`): the same tree however often it
//! runs, and an edited config is never overwritten.

use berth_tests::assert_contains;
use std::collections::BTreeMap;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::{install, repo_file};

/// Every path under `root` with its type, mode, owner and content hash (not its times).
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_dir() {
                todo.push(path.clone());
                "dir".to_owned()
            } else if meta.is_file() {
                let mut h = DefaultHasher::new();
                fs::read(&path).unwrap().hash(&mut h);
                format!("{:016x}", h.finish())
            } else {
                format!("link {:?}", fs::read_link(&path).unwrap())
            };
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.insert(
                rel,
                format!("{:o} {}:{} {what}", meta.mode(), meta.uid(), meta.gid()),
            );
        }
    }
    out
}

fn said(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn installing_twice_on_a_clean_root_gives_the_same_tree() {
    for role in ["agent", "coordinator"] {
        let root = tempfile::tempdir().unwrap();
        let first = install(root.path(), &["--role", role]);
        assert_contains(said(&first), "no service was touched");
        let once = tree(root.path());
        let second = install(root.path(), &["--role", role]);
        assert_eq!(
            tree(root.path()),
            once,
            "{role}: the second run changed the tree"
        );
        assert!(
            !said(&second).contains("installed") && !said(&second).contains("created"),
            "{role}: the second run did something:\n{}",
            said(&second)
        );
        let r = root.path();
        assert_eq!(mode(&r.join(format!("usr/local/bin/berth-{role}"))), 0o755);
        assert_eq!(mode(&r.join("etc/berth/secrets")), 0o700);
        assert_eq!(
            fs::read_to_string(r.join(format!("etc/berth/{role}.toml"))).unwrap(),
            repo_file(&format!("deploy/config/{role}.toml"))
        );
        assert_eq!(
            fs::read_to_string(
                r.join(format!("usr/local/lib/systemd/system/berth-{role}.service"))
            )
            .unwrap(),
            repo_file(&format!("deploy/systemd/berth-{role}.service"))
        );
        assert_eq!(
            r.join("var/lib/ci-warm").is_dir(),
            role == "agent",
            "the agent's writable paths exist for its unit's ReadWritePaths="
        );
    }
}

#[test]
fn an_edited_config_is_never_overwritten_and_a_new_example_lands_beside_it() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    install(r, &["--role", "agent"]);
    let conf = r.join("etc/berth/agent.toml");
    let record = r.join("usr/local/share/berth/agent.toml.example");
    let new = r.join("etc/berth/agent.toml.new");
    let shipped = repo_file("deploy/config/agent.toml");

    // Edited, example unchanged: nothing happens.
    let edited = shipped.replace("berth.example.org", "berth.internal");
    fs::write(&conf, &edited).unwrap();
    let out = install(r, &["--role", "agent"]);
    assert_eq!(fs::read_to_string(&conf).unwrap(), edited);
    assert!(!new.exists(), "{}", said(&out));

    // Edited, and the shipped example changed since the last install (the record holds the
    // older example): the edit stays, the new example is written beside it, and it says so.
    fs::write(&record, "# an older example\n").unwrap();
    let out = install(r, &["--role", "agent"]);
    assert_eq!(
        fs::read_to_string(&conf).unwrap(),
        edited,
        "the edit is kept"
    );
    assert_eq!(fs::read_to_string(&new).unwrap(), shipped);
    assert!(
        said(&out).contains("kept your edited /etc/berth/agent.toml")
            && said(&out).contains("agent.toml.new"),
        "{}",
        said(&out)
    );
    let settled = tree(r);
    install(r, &["--role", "agent"]);
    assert_eq!(tree(r), settled, "a third run changes nothing");

    // Not edited since the older example was installed: it follows the new example.
    fs::remove_file(&new).unwrap();
    fs::write(&record, "# an older example\n").unwrap();
    fs::write(&conf, "# an older example\n").unwrap();
    let out = install(r, &["--role", "agent"]);
    assert_eq!(
        fs::read_to_string(&conf).unwrap(),
        shipped,
        "{}",
        said(&out)
    );
    assert!(!new.exists());
}

/// Each role installs the `berth` CLI beside its program (an operator on the coordinator's
/// host, a CI runner on an agent's), and `--role cli` installs only the CLI: no unit, no
/// config, no directories a service would need.
#[test]
fn every_role_installs_the_berth_cli_and_the_cli_role_nothing_else() {
    for role in ["agent", "coordinator", "cli"] {
        let root = tempfile::tempdir().unwrap();
        install(root.path(), &["--role", role]);
        let berth = root.path().join("usr/local/bin/berth");
        assert_eq!(mode(&berth), 0o755, "{role}");
        let version = std::process::Command::new(&berth)
            .arg("--version")
            .output()
            .unwrap();
        assert!(version.status.success(), "{role}: berth --version failed");
        assert_contains(String::from_utf8_lossy(&version.stdout), "berth");
        if role == "cli" {
            let files: Vec<String> = tree(root.path())
                .into_iter()
                .filter(|(_, what)| !what.ends_with(" dir"))
                .map(|(path, _)| path)
                .collect();
            assert_eq!(
                files,
                ["usr/local/bin/berth"],
                "--role cli installs the CLI alone"
            );
        }
    }
}
