//! Tests of config parsing, validation, the token file and the host id.

use std::os::unix::fs::PermissionsExt;

use super::*;

const MINIMAL: &str = r#"
coordinator_url = "http://127.0.0.1:7400"
token_file = "/run/credentials/berth-agent/token"
"#;

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("agent.toml");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn minimal_config_gets_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(&write_config(dir.path(), MINIMAL)).unwrap();
    assert_eq!(c.coordinator_url, "http://127.0.0.1:7400");
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/berth-agent"));
    assert_eq!(c.warm_root, PathBuf::from("/var/lib/ci-warm"));
    assert_eq!(c.apps_root, PathBuf::from("/var/lib/berth/apps"));
    assert_eq!(c.reconnect_max_backoff_ms, 5000);
    assert_eq!(c.log_format, LogFormat::Text);
    assert!(c.tls.is_none() && c.host_id.is_none());
}

#[test]
fn full_config_parses() {
    let text = r#"
coordinator_url = "https://coord.example.org:7400"
token_file = "/etc/berth/token"
host_id = "web-1"
state_dir = "/tmp/s"
warm_root = "/tmp/w"
apps_root = "/tmp/a"
reconnect_max_backoff_ms = 30000
log_format = "json"

[tls]
ca_file = "/etc/berth/ca.pem"
client_cert_file = "/etc/berth/agent.pem"
client_key_file = "/etc/berth/agent.key"
domain_name = "coordinator.internal"
"#;
    let c = Config::parse(text, "agent.toml").unwrap();
    c.validate().unwrap();
    assert_eq!(c.log_format, LogFormat::Json);
    let tls = c.tls.unwrap();
    assert_eq!(tls.domain_name.as_deref(), Some("coordinator.internal"));
    assert_eq!(
        tls.client_key_file,
        Some(PathBuf::from("/etc/berth/agent.key"))
    );
}

#[test]
fn unknown_key_is_refused_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &format!("{MINIMAL}coordinator_uri = \"x\"\n"));
    let err = format!("{:#}", Config::load(&path).unwrap_err());
    assert!(err.contains("coordinator_uri"), "{err}");
    assert!(err.contains("agent.toml:4:"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn unknown_key_in_tls_table_is_refused() {
    let text = format!("{MINIMAL}[tls]\nca_file = \"a\"\nca_flie = \"b\"\n");
    let err = format!("{:#}", Config::parse(&text, "agent.toml").unwrap_err());
    assert!(err.contains("ca_flie"), "{err}");
}

#[test]
fn missing_config_file_names_the_path() {
    let err = format!(
        "{:#}",
        Config::load(Path::new("/nonexistent/berth/agent.toml")).unwrap_err()
    );
    assert!(
        err.starts_with("cannot read config file /nonexistent/berth/agent.toml"),
        "{err}"
    );
}

#[test]
fn required_values_may_come_from_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let err = format!("{:#}", Config::load(&path).unwrap_err());
    assert!(err.contains("coordinator_url is required"), "{err}");
    let c = Config::load_with(
        &path,
        Overrides {
            coordinator_url: Some("http://127.0.0.1:7400".into()),
            token_file: Some("/t".into()),
            host_id: Some("h1".into()),
        },
    )
    .unwrap();
    assert_eq!(c.host_id.as_deref(), Some("h1"));
}

#[test]
fn invalid_values_are_refused() {
    let cases = [
        (
            "coordinator_url = \"127.0.0.1:7400\"\ntoken_file = \"/t\"",
            "http:// or https://",
        ),
        (
            "coordinator_url = \"https://c:1\"\ntoken_file = \"/t\"",
            "no [tls] table",
        ),
        (
            "coordinator_url = \"http://c:1\"\ntoken_file = \"/t\"\n[tls]\nca_file = \"/ca\"",
            "plaintext",
        ),
        (
            "coordinator_url = \"https://c:1\"\ntoken_file = \"/t\"\n[tls]\nca_file = \"/ca\"\nclient_cert_file = \"/c\"",
            "set together",
        ),
        (
            "coordinator_url = \"http://127.0.0.1:1\"",
            "token_file is required",
        ),
        (
            "coordinator_url = \"http://10.0.0.1:1\"\ntoken_file = \"/t\"",
            "not loopback",
        ),
        (
            "coordinator_url = \"http://127.0.0.1:1\"\ntoken_file = \"/t\"\nreconnect_max_backoff_ms = 5",
            "at least 100",
        ),
        (
            "coordinator_url = \"http://127.0.0.1:1\"\ntoken_file = \"/t\"\nlog_format = \"xml\"",
            "xml",
        ),
    ];
    for (text, expected) in cases {
        let err = Config::parse(text, "agent.toml")
            .and_then(|c| c.validate())
            .map(|()| "accepted".to_owned())
            .unwrap_or_else(|e| format!("{e:#}"));
        assert!(err.contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn invalid_host_id_in_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &format!("{MINIMAL}host_id = \"../etc\"\n"));
    let err = format!("{:#}", Config::load(&path).unwrap_err());
    assert!(err.contains("host_id") && err.contains("../etc"), "{err}");

    let mut c = Config::new("http://c:1", "/t");
    c.host_id = Some("a b".into());
    assert!(matches!(
        c.resolve_host_id(),
        Err(AgentError::HostId { .. })
    ));
}

#[test]
fn host_id_is_generated_once_then_stable() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let path = write_config(
        dir.path(),
        &format!("{MINIMAL}state_dir = {:?}\n", state.display().to_string()),
    );
    let first = Config::load(&path).unwrap().resolve_host_id().unwrap();
    let file = state.join("host_id");
    assert_eq!(fs::read_to_string(&file).unwrap().trim(), first.as_str());
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let second = Config::load(&path).unwrap().resolve_host_id().unwrap();
    assert_eq!(first, second);
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(&state).unwrap().count(), 1);
}

#[test]
fn configured_host_id_wins_and_a_bad_remembered_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("host_id"), "remembered\n").unwrap();
    let mut c = Config::new("http://c:1", "/t");
    c.state_dir = dir.path().to_owned();
    assert_eq!(c.resolve_host_id().unwrap().as_str(), "remembered");
    c.host_id = Some("configured".into());
    assert_eq!(c.resolve_host_id().unwrap().as_str(), "configured");

    c.host_id = None;
    fs::write(dir.path().join("host_id"), "not/valid\n").unwrap();
    let err = crate::error_kind::chain(&c.resolve_host_id().unwrap_err());
    assert!(
        err.contains("host_id") && err.contains("separator"),
        "{err}"
    );
}

#[test]
fn token_is_trimmed_and_missing_or_empty_files_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    let c = Config::new("http://c:1", &token_path);

    let err = c.read_token().unwrap_err();
    assert!(
        err.to_string().contains(&*token_path.to_string_lossy()),
        "{err}"
    );

    fs::write(&token_path, "  \n").unwrap();
    let err = c.read_token().unwrap_err().to_string();
    assert_eq!(err, format!("token file {} is empty", token_path.display()));

    fs::write(&token_path, "s3cret-token\n").unwrap();
    let token = c.read_token().unwrap();
    assert_eq!(token.expose(), "s3cret-token");
    assert!(!format!("{token:?}").contains("s3cret"));

    fs::write(&token_path, "two words").unwrap();
    assert!(matches!(
        c.read_token(),
        Err(AgentError::TokenInvalid { .. })
    ));
}

#[test]
fn the_example_config_in_deploy_parses_and_validates() {
    let c = Config::parse(
        include_str!("../../../deploy/config/agent.toml"),
        "agent.toml",
    )
    .unwrap();
    c.validate().unwrap();
    assert!(c.tls.as_ref().unwrap().client_cert_file.is_some());
    assert!(c.archive.url().unwrap().is_s3());
    assert_eq!(c.archive.zstd_level, 3);
}

#[test]
fn archive_table_defaults_and_checks() {
    let c = Config::parse(MINIMAL, "agent.toml").unwrap();
    assert_eq!(c.archive.store_url, "file:///var/lib/berth/archives");
    assert_eq!((c.archive.zstd_level, c.archive.part_size_mib), (3, 8));
    let cases = [
        ("[archive]\nstore_url = \"ftp://x\"", "unknown scheme"),
        (
            "[archive]\nstore_url = \"s3://bucket\"",
            "access_key_id_file",
        ),
        ("[archive]\nzstd_level = 22", "zstd_level"),
        ("[archive]\npart_size_mib = 4", "part_size_mib"),
        ("[archive]\nendpoint = \"fra1.example\"", "https://"),
        ("[archive]\nzstd_levle = 3", "zstd_levle"),
    ];
    for (table, expected) in cases {
        let text = format!("{MINIMAL}{table}\n");
        let err = Config::parse(&text, "agent.toml")
            .and_then(|c| c.validate())
            .map(|()| "accepted".to_owned())
            .unwrap_or_else(|e| format!("{e:#}"));
        assert!(err.contains(expected), "{table:?}: {err}");
    }
}
