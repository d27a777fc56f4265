//! The configuration reference holds the README and the example configs to the code: every key
//! `berth-coordinator config reference` and `berth-agent config reference` print (read from the
//! config structs) is named in the README's tables and in `deploy/config/*.toml`, no table row
//! names a key the code does not read, and both example files pass `config check`.

use std::collections::BTreeSet;
use std::process::Command;

use berth_tests::bin;
use serde_json::Value;

/// (table, key) of every value the program reads, from `<program> config reference -o json`;
/// tables themselves are left out.
fn reference(program: &str) -> Vec<(String, String)> {
    let out = Command::new(bin::path(program))
        .args(["config", "reference", "-o", "json"])
        .output()
        .expect("run config reference");
    assert!(
        out.status.success(),
        "{program} config reference: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).expect("reference JSON");
    let keys: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e["type"] != "table")
        .map(|e| {
            (
                e["table"].as_str().unwrap().to_owned(),
                e["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        keys.len() > 20,
        "{program}: too few keys to be the whole reference: {keys:?}"
    );
    for e in &entries {
        assert!(
            !e["doc"].as_str().unwrap().is_empty(),
            "{program}: {e} has no doc comment"
        );
    }
    keys
}

/// The README table after the line starting with `marker`: each row's (table, keys) from its
/// first cell, e.g. "`[sagas]` `lease_ms`, `renew_ms`" → ("sagas", [lease_ms, renew_ms]).
fn readme_table(readme: &str, marker: &str) -> Vec<(String, Vec<String>)> {
    let after = &readme[readme
        .find(marker)
        .unwrap_or_else(|| panic!("README has no {marker:?}"))..];
    let rows = after
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2);
    rows.map(|row| {
        let first = row.split('|').nth(1).expect("a first cell");
        let names: Vec<&str> = first.split('`').skip(1).step_by(2).collect();
        match names.split_first() {
            Some((t, keys)) if t.starts_with('[') => (
                t.trim_matches(['[', ']']).to_owned(),
                keys.iter().map(|k| k.to_string()).collect(),
            ),
            _ => (String::new(), names.iter().map(|k| k.to_string()).collect()),
        }
    })
    .collect()
}

/// (table, key) of every `key =` line, commented out or not, under its `[table]` header.
fn example_keys(text: &str) -> BTreeSet<(String, String)> {
    let mut table = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.to_owned();
        } else if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys.insert((table.clone(), key.to_owned()));
            }
        }
    }
    keys
}

fn check(program: &str, readme_marker: &str, example: &str) {
    let root = bin::workspace_root();
    let keys = reference(program);
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    assert!(
        readme.contains(&format!("{program} config reference")),
        "the README links the full reference"
    );

    let table = readme_table(&readme, readme_marker);
    let in_readme: BTreeSet<(String, String)> = table
        .iter()
        .flat_map(|(t, ks)| ks.iter().map(move |k| (t.clone(), k.clone())))
        .collect();
    let known: BTreeSet<(String, String)> = keys.iter().cloned().collect();
    let missing: Vec<_> = known.difference(&in_readme).collect();
    assert!(
        missing.is_empty(),
        "README's {program} table does not name (table, key) {missing:?}"
    );
    let stale: Vec<_> = in_readme.difference(&known).collect();
    assert!(
        stale.is_empty(),
        "README's {program} table names keys {program} does not read: {stale:?}"
    );

    let path = root.join("deploy/config").join(example);
    let text = std::fs::read_to_string(&path).expect("example config");
    let in_example = example_keys(&text);
    let missing: Vec<_> = known.difference(&in_example).collect();
    assert!(
        missing.is_empty(),
        "deploy/config/{example} does not show (table, key) {missing:?}"
    );

    let out = Command::new(bin::path(program))
        .arg("--config")
        .arg(&path)
        .args(["config", "check"])
        .output()
        .expect("run config check");
    assert!(
        out.status.success(),
        "deploy/config/{example} fails {program} config check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn coordinator_reference_names_every_key_in_readme_and_example() {
    check(
        "berth-coordinator",
        "Coordinator (`/etc/berth/coordinator.toml`",
        "coordinator.toml",
    );
}

#[test]
fn agent_reference_names_every_key_in_readme_and_example() {
    check(
        "berth-agent",
        "Agent (`/etc/berth/agent.toml`",
        "agent.toml",
    );
}

#[test]
fn config_check_names_the_bad_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coordinator.toml");
    std::fs::write(
        &path,
        "insecure_plaintext = true\n[sagas]\nlease_secs = 30\n",
    )
    .unwrap();
    let out = Command::new(bin::path("berth-coordinator"))
        .arg("--config")
        .arg(&path)
        .args(["config", "check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("lease_secs"),
        "names the unknown key: {stderr}"
    );
}
