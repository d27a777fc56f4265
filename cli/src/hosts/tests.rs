//! Rendering of `hosts list` and `hosts show`, with an injected "now".

use super::*;

const NOW: i64 = 1_750_000_000_000;

fn host(id: &str, hostname: &str, online: bool, heartbeat_age_ms: i64) -> pb::Host {
    pb::Host {
        host_id: id.into(),
        hostname: hostname.into(),
        agent_version: "0.1.0".into(),
        docker_version: "27.3.1".into(),
        capabilities: vec!["warm".into(), "archive".into()],
        first_seen_ms: NOW - 86_400_000 * 2,
        last_heartbeat_ms: NOW - heartbeat_age_ms,
        online,
        connected_to: if online {
            "coord-a".into()
        } else {
            String::new()
        },
        warm_root_free_bytes: None,
    }
}

fn text(f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> String {
    let mut buf = Vec::new();
    f(&mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

#[test]
fn host_table_aligns_columns_and_shows_relative_heartbeats() {
    let mut old = host("ci-runner-2", "runner2.example.org", false, 3 * 3_600_000);
    old.docker_version = String::new();
    let hosts = [host("h1", "h1.example.org", true, 3_200), old];
    let out = text(|o| write_host_table(&hosts, NOW, o));
    assert_eq!(
        out,
        "HOST ID      HOSTNAME             STATUS   LAST HEARTBEAT  AGENT  DOCKER\n\
         h1           h1.example.org       online   3s ago          0.1.0  27.3.1\n\
         ci-runner-2  runner2.example.org  offline  3h ago          0.1.0  -\n"
    );
}

#[test]
fn host_json_has_snake_case_keys() {
    let view = HostView::from(&host("h1", "h1.example.org", true, 1000));
    let json = serde_json::to_value(vec![view]).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{
            "host_id": "h1",
            "hostname": "h1.example.org",
            "online": true,
            "last_heartbeat_ms": NOW - 1000,
            "first_seen_ms": NOW - 172_800_000,
            "agent_version": "0.1.0",
            "docker_version": "27.3.1",
            "capabilities": ["warm", "archive"],
            "connected_to": "coord-a",
        }])
    );
    let offline = HostView::from(&host("h2", "h2", false, 1000));
    assert_eq!(offline.connected_to, None);
}

fn description() -> pb::HostDescription {
    pb::HostDescription {
        docker_version: "27.3.1".into(),
        docker_api_version: "1.47".into(),
        os: "Debian GNU/Linux 12 (bookworm)".into(),
        kernel_version: "6.1.0-28-amd64".into(),
        architecture: "x86_64".into(),
        cpus: 4,
        memory_bytes: 8 * 1024 * 1024 * 1024,
        containers_running: 3,
        containers_total: 5,
        swarm_active: true,
        warm_root: "/var/lib/berth/warm".into(),
        warm_root_free_bytes: 20 * 1024 * 1024 * 1024,
        warm_root_total_bytes: 80 * 1024 * 1024 * 1024,
        storage_driver: "overlay2".into(),
    }
}

#[test]
fn host_detail_shows_the_description() {
    let detail = pb::HostDetail {
        host: Some(host("h1", "h1.example.org", true, 2000)),
        description: Some(description()),
        description_error: String::new(),
    };
    let view = HostDetailView::try_from(&detail).unwrap();
    let out = text(|o| write_host_detail(&view, NOW, o));
    assert_eq!(
        out,
        "host id:         h1\n\
         hostname:        h1.example.org\n\
         status:          online (connected to coord-a)\n\
         last heartbeat:  2s ago\n\
         first seen:      2d ago\n\
         agent:           0.1.0\n\
         docker:          27.3.1\n\
         capabilities:    warm, archive\n\
         description:\n\
         \x20 docker:          27.3.1 (api 1.47)\n\
         \x20 os:              Debian GNU/Linux 12 (bookworm)\n\
         \x20 kernel:          6.1.0-28-amd64\n\
         \x20 arch:            x86_64\n\
         \x20 cpus:            4\n\
         \x20 memory:          8.0 GiB\n\
         \x20 containers:      3 running of 5\n\
         \x20 swarm:           active\n\
         \x20 storage driver:  overlay2\n\
         \x20 warm root:       /var/lib/berth/warm (20.0 GiB free of 80.0 GiB)\n"
    );
}

#[test]
fn host_detail_says_why_there_is_no_description() {
    let detail = pb::HostDetail {
        host: Some(host("h2", "h2", false, 60_000)),
        description: None,
        description_error: "host is offline".into(),
    };
    let view = HostDetailView::try_from(&detail).unwrap();
    let out = text(|o| write_host_detail(&view, NOW, o));
    assert!(out.contains("status:          offline\n"), "{out}");
    assert!(
        out.ends_with("description:  unavailable: host is offline\n"),
        "{out}"
    );

    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["description"], serde_json::Value::Null);
    assert_eq!(json["description_error"], "host is offline");
    assert_eq!(json["host"]["host_id"], "h2");
}

#[test]
fn host_detail_json_nests_the_description() {
    let detail = pb::HostDetail {
        host: Some(host("h1", "h1", true, 0)),
        description: Some(description()),
        description_error: String::new(),
    };
    let json = serde_json::to_value(HostDetailView::try_from(&detail).unwrap()).unwrap();
    assert_eq!(
        json["description"]["memory_bytes"],
        8u64 * 1024 * 1024 * 1024
    );
    assert_eq!(json["description"]["swarm_active"], true);
    assert_eq!(json["description_error"], serde_json::Value::Null);
    let mut keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["description", "description_error", "host"]);
}

#[test]
fn a_detail_without_host_is_a_protocol_error() {
    let e = HostDetailView::try_from(&pb::HostDetail::default()).unwrap_err();
    assert!(matches!(e, CliError::Protocol(_)));
}
