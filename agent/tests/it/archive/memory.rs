//! Memory stays bounded whatever the archive size: a child process archives 512 MiB that do
//! not compress to the real S3 server (running in this process) and restores it, and reports
//! its peak resident memory (`VmHWM`) against its resident memory before starting. Another
//! restores archives whose PAX record or long name holds 2 GiB: refused before reading it.

use std::time::Instant;

use berth_agent::archive::{ArchiveConfig, ArchiveProgress, Archiver, CreateInput, RestoreInput};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::tree::noise;
use super::{Backend, Env};
use crate::hostile_tar::{Item, tar_zst};

const CHILD_ENV: &str = "BERTH_IT_MEMORY_CHILD";

/// Runs test `archive::memory::<name>` of this binary alone in a child process with `key`
/// set to `value`, and returns the `MEMORY k=v ...` line it prints and a reader of its fields
/// (a process of its own, so its peak RSS is its own).
async fn memory_of_child(name: &str, key: &str, value: &str) -> (String, impl Fn(&str) -> u64) {
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            format!("archive::memory::{name}").as_str(),
            "--exact",
            "--nocapture",
        ])
        .env(key, value)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("MEMORY "))
        .unwrap_or_else(|| panic!("no MEMORY line in:\n{stdout}"))
        .to_owned();
    let fields = line.clone();
    let field = move |name: &str| -> u64 {
        fields
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {fields}"))
    };
    (line, field)
}
/// The bound the issue sets for agent memory is 128 MiB; we hold it to a good deal less.
const MAX_GROWTH_KIB: u64 = 96 * 1024;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Run as a child process by the test below.
#[tokio::test]
async fn child_archive_and_restore_512_mib() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return; // not a child: nothing to do
    };
    let [endpoint, secrets, apps] = spec.split('|').collect::<Vec<_>>()[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let mut config = ArchiveConfig::for_url(format!("s3://{}/berth/test", super::s3::BUCKET));
    config.endpoint = Some(endpoint.into());
    config.access_key_id_file = Some(format!("{secrets}/key-id").into());
    config.secret_access_key_file = Some(format!("{secrets}/secret").into());
    let state = tempfile::tempdir().unwrap();
    let archiver = Archiver::new(config, apps, state.path()).unwrap();
    let (progress, _) = watch::channel(ArchiveProgress::default());
    let cancel = CancellationToken::new();
    let before = status_kib("VmRSS:");
    let t = Instant::now();
    let input = CreateInput {
        app: "big".into(),
        ..Default::default()
    };
    let out = archiver.create(input, &progress, &cancel).await.unwrap();
    let created = t.elapsed();
    let create_peak = status_kib("VmHWM:");
    // Reset the peak so the restore's is measured on its own.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before_restore = status_kib("VmRSS:");
    let input = RestoreInput {
        uuid: out.uuid,
        target_app: Some("big-restored".into()),
        ..Default::default()
    };
    archiver.restore(input, &progress, &cancel).await.unwrap();
    println!(
        "MEMORY before_kib={before} create_peak_kib={create_peak} before_restore_kib={before_restore} restore_peak_kib={} size={} create_ms={} total_ms={}",
        status_kib("VmHWM:"),
        out.size,
        created.as_millis(),
        t.elapsed().as_millis()
    );
}

#[tokio::test]
async fn archiving_512_mib_keeps_memory_bounded() {
    let env = Env::new(Backend::S3).await;
    let s3 = env.s3.as_ref().unwrap();
    let dir = env.app_dir("big");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..4 {
        std::fs::write(dir.join(format!("part-{i}.bin")), noise(100 + i, 128 << 20)).unwrap();
    }
    let spec = format!(
        "{}|{}|{}",
        s3.endpoint,
        s3.secrets_dir().display(),
        env.apps.path().display()
    );
    let (line, field) =
        memory_of_child("child_archive_and_restore_512_mib", CHILD_ENV, &spec).await;
    let growth = field("create_peak_kib").saturating_sub(field("before_kib"));
    let restore_growth = field("restore_peak_kib").saturating_sub(field("before_kib"));
    let growth = growth.max(restore_growth);
    eprintln!("{line} growth_kib={growth}");
    assert!(field("size") > 512 << 20, "incompressible: {line}");
    assert!(
        growth < MAX_GROWTH_KIB,
        "peak memory grew by {growth} KiB: {line}"
    );
    let restored = std::fs::read(env.app_dir("big-restored/part-3.bin")).unwrap();
    assert!(restored == noise(103, 128 << 20), "restored bytes differ");
}

const BOMB_CHILD_ENV: &str = "BERTH_IT_RECORD_BOMB_CHILD";
/// The bound the issue sets for a record bomb.
const MAX_BOMB_GROWTH_KIB: u64 = 64 * 1024;

/// Run as a child process by the test below: restores two small archives whose PAX record
/// and GNU long name hold 2 GiB each (all there, compressed), and reports the growth of its
/// resident memory.
#[tokio::test]
async fn child_restore_record_bombs() {
    if std::env::var(BOMB_CHILD_ENV).is_err() {
        return; // not a child: nothing to do
    }
    let env = Env::new(Backend::Memory).await;
    let mut uploads = Vec::new();
    for (kind, entry) in [
        (tar::EntryType::XHeader, "././@PaxHeader"),
        (tar::EntryType::GNULongName, "././@LongLink"),
    ] {
        let bomb = tar_zst(&[Item::Record(kind, 2 << 30, 2 << 30)]);
        assert!(bomb.len() < 256 << 10, "a small archive: {}", bomb.len());
        let uuid = uuid::Uuid::new_v4().to_string();
        let meta = format!(
            r#"{{"uuid":"{uuid}","app_name":"src","ts":1,"labels":["size:{}"]}}"#,
            bomb.len()
        );
        env.put(&format!("_metadata/{uuid}"), meta.into_bytes())
            .await;
        env.put(&format!("src:{uuid}:-:1"), bomb).await;
        uploads.push((uuid, entry));
    }
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_kib("VmRSS:");
    let t = Instant::now();
    for (uuid, entry) in uploads {
        let err = env.restore(&uuid, "victim").await.unwrap_err();
        let text = super::chain(&err);
        assert!(
            text.starts_with(&format!(
                "archive entry {entry:?} is a long name or PAX record"
            )),
            "{text}"
        );
    }
    println!(
        "MEMORY before_kib={before} peak_kib={} ms={}",
        status_kib("VmHWM:"),
        t.elapsed().as_millis()
    );
}

#[tokio::test]
async fn record_bombs_are_refused_unread_and_memory_stays_flat() {
    let (line, field) = memory_of_child("child_restore_record_bombs", BOMB_CHILD_ENV, "1").await;
    let growth = field("peak_kib").saturating_sub(field("before_kib"));
    eprintln!("{line} growth_kib={growth}");
    assert!(
        growth < MAX_BOMB_GROWTH_KIB,
        "peak memory grew by {growth} KiB: {line}"
    );
    assert!(field("ms") < 10_000, "refused quickly: {line}");
}
