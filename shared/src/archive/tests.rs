//! Tests of the archive layout, metadata and store URLs (retention: `retention/tests.rs`).

use super::*;

const ID: &str = "0b8e6f1c-3a51-4c1e-9d7a-5f2a7c1e9b30";
const ID2: &str = "0b8e6f1c-3a51-4c1e-9d7a-5f2a7c1e9b31";

fn app(name: &str) -> AppName {
    AppName::new(name).unwrap()
}

#[test]
fn keys_are_formatted_as_gos_key_name() {
    // Go: fmt.Sprintf("%s%s%s%s%s%s%d", app, ":", uuid, ":", labelValue, ":", ts)
    let id = ArchiveId::new(ID).unwrap();
    let k = ArchiveKey::new(
        app("web"),
        id.clone(),
        Some("owner-7".into()),
        1_650_000_000,
    );
    assert_eq!(k.as_str(), format!("web:{ID}:owner-7:1650000000"));
    let k = ArchiveKey::new(app("web"), id, None, 1_650_000_000);
    assert_eq!(k.as_str(), format!("web:{ID}:-:1650000000"));
    assert_eq!(k.to_string(), k.as_str());
    assert_eq!(ArchiveKey::app_prefix(&app("web")), "web:");
}

#[test]
fn index_value_follows_gos_key_name_last_match_wins() {
    let labels: Vec<String> = ["owner:a", "ownerx:b", "owner:c", "size:10"]
        .map(String::from)
        .to_vec();
    assert_eq!(index_value_from_labels(&labels, "owner"), Some("c"));
    assert_eq!(index_value_from_labels(&labels, "team"), None);
}

#[test]
fn keys_parse_back_and_bad_keys_are_refused() {
    let k = ArchiveKey::parse(&format!("web.example.org:{ID}:owner-7:1650000000")).unwrap();
    assert_eq!(k.app().as_str(), "web.example.org");
    assert_eq!(k.id().as_str(), ID);
    assert_eq!(k.index(), Some("owner-7"));
    assert_eq!(k.ts(), 1_650_000_000);
    let none = ArchiveKey::parse(&format!("web:{ID}:-:7")).unwrap();
    assert_eq!(none.index(), None);

    let bad = [
        (format!("web:{ID}:-"), "4 fields"),
        (format!("web:{ID}:a:b:7"), "4 fields"),
        (format!("a/b:{ID}:-:7"), "invalid app name"),
        (format!("..:{ID}:-:7"), "invalid app name"),
        ("web:not-a-uuid:-:7".to_owned(), "invalid uuid"),
        (format!("web:{}:-:7", ID.to_uppercase()), "invalid uuid"),
        (format!("web:{ID}:-:soon"), "invalid timestamp"),
        (format!("web:{ID}::7"), "empty index"),
        ("_metadata/".to_owned(), "4 fields"),
    ];
    for (key, expected) in bad {
        let err = ArchiveKey::parse(&key).unwrap_err().to_string();
        assert!(err.contains(expected), "{key}: {err}");
    }
}

#[test]
fn newest_first_orders_by_time_then_uuid() {
    let a = ArchiveKey::parse(&format!("w:{ID}:-:5")).unwrap();
    let b = ArchiveKey::parse(&format!("w:{ID2}:-:5")).unwrap();
    let c = ArchiveKey::parse(&format!("w:{ID}:-:9")).unwrap();
    let mut v = vec![a.clone(), c.clone(), b.clone()];
    v.sort_by(ArchiveKey::newest_first);
    assert_eq!(v, vec![c, b, a]);
}

#[test]
fn ids_and_index_values_are_checked() {
    assert!(ArchiveId::new(ID).is_ok());
    for bad in [
        "",
        "x",
        "../etc/passwd-0000-0000-0000-000000000",
        &ID.replace('-', "_"),
    ] {
        assert!(ArchiveId::new(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        ArchiveId::new(ID).unwrap().metadata_key(),
        format!("_metadata/{ID}")
    );
    assert_eq!(index_value("").unwrap(), None);
    assert_eq!(index_value("-").unwrap(), None);
    assert_eq!(
        index_value("user@x=1").unwrap().as_deref(),
        Some("user@x=1")
    );
    for bad in ["a:b", "a/b", "a b", "a\0", &"x".repeat(129)] {
        let err = index_value(bad).unwrap_err().to_string();
        assert!(err.contains("not allowed"), "{bad:?}: {err}");
    }
}

#[test]
fn metadata_reads_what_go_writes_and_keeps_unknown_keys() {
    let go = format!(
        r#"{{"uuid":"{ID}","app_name":"web","ts":1650000000,"labels":["owner:7","size:1234"]}}"#
    );
    let m = ArchiveMeta::from_json(go.as_bytes()).unwrap();
    assert_eq!(m.size(), Some(1234));
    assert_eq!(m.user_labels().collect::<Vec<_>>(), vec!["owner:7"]);
    assert!(m.sha256.is_none());
    // Written back, it is the same document.
    assert_eq!(String::from_utf8(m.to_json()).unwrap(), go);

    let null_labels =
        format!(r#"{{"uuid":"{ID}","app_name":"w","ts":1,"labels":null,"x":{{"y":1}}}}"#);
    let m = ArchiveMeta::from_json(null_labels.as_bytes()).unwrap();
    assert!(m.labels.is_empty());
    assert_eq!(m.extra["x"]["y"], 1);
    assert!(
        String::from_utf8(m.to_json())
            .unwrap()
            .contains(r#""x":{"y":1}"#)
    );
}

#[test]
fn berth_metadata_starts_with_gos_fields() {
    let mut m = ArchiveMeta::new(ID, "web", 7);
    m.labels.push("owner:1".into());
    m.push_size(99);
    m.sha256 = Some("ab".repeat(32));
    m.format = Some(FORMAT_TAR_ZSTD.into());
    let text = String::from_utf8(m.to_json()).unwrap();
    assert!(
        text.starts_with(&format!(
            r#"{{"uuid":"{ID}","app_name":"web","ts":7,"labels":["owner:1","size:99"],"sha256":"#
        )),
        "{text}"
    );
    assert_eq!(ArchiveMeta::from_json(text.as_bytes()).unwrap(), m);
}

#[test]
fn labels_are_checked() {
    let ok: Vec<String> = vec!["owner:1".into(), "note:a b".into()];
    validate_labels(&ok).unwrap();
    let cases: [(Vec<String>, &str); 4] = [
        (vec!["size:1".into()], "reserved"),
        (vec!["a\nb".into()], "control"),
        (vec![String::new()], "empty"),
        (vec!["x".into(); 65], "too many"),
    ];
    for (labels, expected) in cases {
        let err = validate_labels(&labels).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }
    validate_labels(&["sizeable:1".to_owned()]).unwrap();
}

#[test]
fn store_urls_parse() {
    assert_eq!(
        "file:///var/lib/berth/archives"
            .parse::<StoreUrl>()
            .unwrap(),
        StoreUrl::File {
            root: "/var/lib/berth/archives".into()
        }
    );
    assert_eq!(
        "s3://snapshots".parse::<StoreUrl>().unwrap(),
        StoreUrl::S3 {
            bucket: "snapshots".into(),
            prefix: None
        }
    );
    let u: StoreUrl = "s3://my-bucket/berth/prod/".parse().unwrap();
    assert_eq!(
        u,
        StoreUrl::S3 {
            bucket: "my-bucket".into(),
            prefix: Some("berth/prod".into())
        }
    );
    assert_eq!(u.to_string(), "s3://my-bucket/berth/prod");
    assert_eq!("memory://".parse::<StoreUrl>().unwrap(), StoreUrl::Memory);

    for (bad, expected) in [
        ("ftp://x", "unknown scheme"),
        ("file://relative/dir", "absolute directory"),
        ("file:///a/../b", "absolute directory"),
        ("s3://Bad_Bucket", "not a valid bucket"),
        ("s3://ab", "not a valid bucket"),
        ("s3://bucket/a//b", "prefix"),
        ("s3://bucket/a/../b", "prefix"),
        ("s3://bucket/a b", "prefix"),
    ] {
        let err = bad.parse::<StoreUrl>().unwrap_err().to_string();
        assert!(err.contains(expected), "{bad}: {err}");
    }
}

#[test]
fn the_compression_ratio_is_raw_over_packed() {
    let p = ArchiveProgress {
        phase: Phase::Archiving,
        bytes_done: 300,
        bytes_total: 1000,
        entries_done: 2,
        entries_total: 9,
        bytes_transformed: 100,
        bytes_stored: 50,
    };
    assert_eq!(p.compression_ratio(), 3.0);
    assert_eq!(ArchiveProgress::default().compression_ratio(), 1.0);
}
