//! Listing the warm snapshots under a warm root: app, volumes, size, age and what
//! `meta.json` says, and whether the snapshot is complete (meta plus every listed tar).

use std::fs;
use std::io;
use std::path::Path;

use berth_proto::v1 as pb;
use berth_shared::AppName;
use berth_shared::time::unix_ms;
use serde::Serialize;

use super::error::WarmError;
use super::layout::{self, AppDir, VOLUMES};
use super::meta::{Meta, parse_ts};

/// One app's warm snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    pub app: String,
    pub volumes: Vec<String>,
    /// Bytes of the tars and `meta.json` on disk.
    pub size_bytes: u64,
    /// From `meta.json`'s `ts`, else the file's mtime; 0 when neither is known.
    pub taken_at_ms: i64,
    pub commit: Option<String>,
    pub version: Option<String>,
    pub domain: String,
    pub complete: bool,
}

impl From<SnapshotInfo> for pb::WarmSnapshotInfo {
    fn from(s: SnapshotInfo) -> Self {
        pb::WarmSnapshotInfo {
            host_id: String::new(),
            app: s.app,
            volumes: s.volumes,
            size_bytes: s.size_bytes,
            taken_at_ms: s.taken_at_ms,
            commit: s.commit.unwrap_or_default(),
            version: s.version.unwrap_or_default(),
            domain: s.domain,
            complete: s.complete,
            spare: String::new(),
        }
    }
}

/// The snapshots under `root` (of `only` when given), sorted by app. Folders that are not
/// valid app names, or hold no `snapshot/`, are not snapshots and are skipped.
pub(crate) fn list(root: &Path, only: Option<&AppName>) -> Result<Vec<SnapshotInfo>, WarmError> {
    let apps: Vec<AppName> = match only {
        Some(app) => vec![app.clone()],
        None => match fs::read_dir(root) {
            Ok(entries) => {
                let mut apps = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(|e| WarmError::io("list", root, e))?;
                    if let Some(app) = entry
                        .file_name()
                        .to_str()
                        .and_then(|n| AppName::new(n).ok())
                    {
                        apps.push(app);
                    }
                }
                apps.sort();
                apps
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(WarmError::io("list", root, e)),
        },
    };
    let mut out = Vec::new();
    for app in apps {
        if let Some(info) = describe(&AppDir::new(root, &app), &app)? {
            out.push(info);
        }
    }
    Ok(out)
}

fn describe(dir: &AppDir, app: &AppName) -> Result<Option<SnapshotInfo>, WarmError> {
    let snapshot = dir.snapshot();
    if !fs::symlink_metadata(&snapshot).is_ok_and(|m| m.is_dir()) {
        return Ok(None);
    }
    let meta_path = dir.meta();
    let (meta, meta_len, meta_mtime) = match fs::read(&meta_path) {
        Ok(bytes) => {
            let mtime = fs::metadata(&meta_path).and_then(|m| m.modified()).ok();
            (Meta::from_json(&bytes).ok(), bytes.len() as u64, mtime)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (None, 0, None),
        Err(e) => return Err(WarmError::io("read", &meta_path, e)),
    };
    let mut size = meta_len;
    let mut tars = std::collections::BTreeMap::new();
    let volumes_dir = snapshot.join(VOLUMES);
    if layout::exists(&volumes_dir)? {
        for entry in
            fs::read_dir(&volumes_dir).map_err(|e| WarmError::io("list", &volumes_dir, e))?
        {
            let entry = entry.map_err(|e| WarmError::io("list", &volumes_dir, e))?;
            let meta = entry
                .metadata()
                .map_err(|e| WarmError::io("inspect", entry.path(), e))?;
            if meta.is_file() {
                size += meta.len();
                if let Some(name) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".tar"))
                {
                    tars.insert(name.to_owned(), ());
                }
            }
        }
    }
    let info = match meta {
        Some(meta) => {
            let complete = meta.volumes.iter().all(|v| tars.contains_key(v));
            SnapshotInfo {
                app: app.to_string(),
                taken_at_ms: parse_ts(&meta.ts)
                    .or_else(|| meta_mtime.map(unix_ms))
                    .unwrap_or(0),
                volumes: meta.volumes,
                size_bytes: size,
                commit: meta.commit,
                version: meta.version,
                domain: meta.domain,
                complete,
            }
        }
        None => SnapshotInfo {
            app: app.to_string(),
            volumes: tars.into_keys().collect(),
            size_bytes: size,
            taken_at_ms: meta_mtime.map_or(0, unix_ms),
            commit: None,
            version: None,
            domain: String::new(),
            complete: false,
        },
    };
    Ok(Some(info))
}

/// `SystemTime` of now, for tests of ages.
#[cfg(test)]
fn now_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_complete_incomplete_and_skips_what_is_not_a_snapshot() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("kc/snapshot/volumes")).unwrap();
        fs::write(r.join("kc/last_good"), "1").unwrap();
        fs::write(
            r.join("kc/snapshot/meta.json"),
            r#"{"recipe":"kc","domain":"kc.org","commit":"abc","version":"2","volumes":["kc_db","kc_files"],"ts":"2024-05-01T12:34:56Z"}"#,
        )
        .unwrap();
        fs::write(r.join("kc/snapshot/volumes/kc_db.tar"), vec![0; 1024]).unwrap();
        fs::write(r.join("kc/snapshot/volumes/kc_files.tar"), vec![0; 2048]).unwrap();
        fs::create_dir_all(r.join("half/snapshot/volumes")).unwrap();
        fs::write(
            r.join("half/snapshot/meta.json"),
            r#"{"volumes":["half_db"],"ts":"x"}"#,
        )
        .unwrap();
        fs::create_dir_all(r.join("only-state")).unwrap();
        fs::create_dir_all(r.join(".hidden/snapshot")).unwrap();

        let all = list(r, None).unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        let half = &all[0];
        assert_eq!((half.app.as_str(), half.complete), ("half", false));
        assert!(
            half.taken_at_ms > now_ms() - 60_000,
            "falls back to the meta file's mtime"
        );
        let kc = &all[1];
        assert!(kc.complete);
        assert_eq!(kc.volumes, ["kc_db", "kc_files"]);
        assert!(kc.size_bytes > 3072);
        assert_eq!(kc.taken_at_ms, 1_714_566_896_000);
        assert_eq!(
            (kc.commit.as_deref(), kc.version.as_deref()),
            (Some("abc"), Some("2"))
        );

        let one = list(r, Some(&AppName::new("kc").unwrap())).unwrap();
        assert_eq!(one, vec![kc.clone()]);
        assert!(list(&r.join("absent"), None).unwrap().is_empty());
    }
}
