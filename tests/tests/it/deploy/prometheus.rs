//! The shipped Prometheus alert rules (`deploy/prometheus/`): valid for `promtool check rules`,
//! and firing as their unit tests say (`promtool test rules`): on a host offline, a lease taken
//! over and an overdue schedule, not on an operator's abandon. The metrics they read are
//! checked against a real coordinator's endpoint in `metrics.rs`.

use std::process::Command;

use berth_tests::{assert_contains, bin};

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(bin::workspace_root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool: {e}; install it from Debian's prometheus package \
                 (`apt-get install -y --no-install-recommends prometheus`; .ci/tools.sh does)"
            )
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{said}");
    said
}

#[test]
fn the_alert_rules_are_valid_and_fire_as_their_tests_say() {
    let rules: Vec<String> = std::fs::read_dir(bin::workspace_root().join("deploy/prometheus"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(!rules.is_empty(), "no rules in deploy/prometheus");
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(String::as_str));
    assert_contains(promtool(&args), "SUCCESS");
    let said = promtool(&[
        "test",
        "rules",
        "deploy/prometheus/tests/berth.rules.test.yml",
    ]);
    assert_contains(said, "SUCCESS");
}
