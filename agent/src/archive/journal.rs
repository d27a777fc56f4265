//! The upload journal: `state_dir/uploads/<archive uuid>.json` names the multipart upload a
//! create started (key, upload id, when), written atomically and fsynced before the first
//! part goes up and removed once the upload is completed or aborted. What a killed agent
//! leaves here is aborted when it starts again, or by the next attempt of the same create.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::ArchiveError;

/// One journaled upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournaledUpload {
    /// The archive uuid (the `archive.create` saga's id).
    pub uuid: String,
    /// The object key, relative to the store URL's prefix.
    pub key: String,
    /// S3's upload id; for a `file://` store, `None` (its staging files are `<key>#<n>`).
    #[serde(default)]
    pub upload_id: Option<String>,
    /// Unix milliseconds.
    pub created_ms: i64,
}

/// The journal directory; cheap to clone. Writers in one process are serialized, so a
/// removal never takes away an entry written after the one it meant.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    dir: PathBuf,
    lock: Arc<Mutex<()>>,
}

impl Journal {
    /// The journal under `state_dir/uploads` (created on first write).
    pub fn open(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("uploads"),
            lock: Arc::default(),
        }
    }

    fn path(&self, uuid: &str) -> PathBuf {
        self.dir.join(format!("{uuid}.json"))
    }

    fn error(&self, path: PathBuf, source: std::io::Error) -> ArchiveError {
        ArchiveError::Journal { path, source }
    }

    /// Records `entry` durably: temp file, fsync, rename, fsync of the directory.
    pub fn record(&self, entry: &JournaledUpload) -> Result<(), ArchiveError> {
        let _held = self.lock.lock().expect("journal lock poisoned");
        fs::create_dir_all(&self.dir).map_err(|e| self.error(self.dir.clone(), e))?;
        let path = self.path(&entry.uuid);
        let tmp = self.dir.join(format!(".{}.json.tmp", entry.uuid));
        let json = serde_json::to_vec(entry).expect("journal entries serialize");
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| self.error(path.clone(), e))
    }

    /// The entry for `uuid`, if any (an unreadable one is logged and skipped).
    pub fn get(&self, uuid: &str) -> Option<JournaledUpload> {
        let path = self.path(uuid);
        let bytes = fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable upload journal entry; removing it");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Removes `entry` if the journal still holds exactly it.
    pub fn remove(&self, entry: &JournaledUpload) -> Result<(), ArchiveError> {
        let _held = self.lock.lock().expect("journal lock poisoned");
        if self.get(&entry.uuid).as_ref() != Some(entry) {
            return Ok(());
        }
        let path = self.path(&entry.uuid);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.error(path, e)),
        }
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Every entry, sorted by uuid.
    pub fn all(&self) -> Vec<JournaledUpload> {
        let Ok(read) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut entries: Vec<JournaledUpload> = read
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let uuid = name.strip_suffix(".json")?;
                (!uuid.starts_with('.')).then(|| self.get(uuid))?
            })
            .collect();
        entries.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uuid: &str, id: &str) -> JournaledUpload {
        JournaledUpload {
            uuid: uuid.into(),
            key: format!("web:{uuid}:-:1"),
            upload_id: Some(id.into()),
            created_ms: 1,
        }
    }

    #[test]
    fn entries_are_recorded_listed_and_removed_only_when_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path());
        assert!(j.all().is_empty());
        let first = entry("a", "1");
        j.record(&first).unwrap();
        j.record(&entry("b", "2")).unwrap();
        assert_eq!(j.all().len(), 2);
        assert_eq!(j.get("a"), Some(first.clone()));
        // A later attempt of the same uuid replaced the entry: removing the old one keeps it.
        let second = entry("a", "3");
        j.record(&second).unwrap();
        j.remove(&first).unwrap();
        assert_eq!(j.get("a"), Some(second.clone()));
        j.remove(&second).unwrap();
        assert_eq!(j.get("a"), None);
        let names: Vec<_> = fs::read_dir(dir.path().join("uploads"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["b.json"], "no temp files left");
    }
}
