//! Task records kept in `state_dir/tasks/`, one small JSON file per saga step, so an agent
//! that restarts still answers a repeated task with its result (or, for a task it was
//! running when it stopped, with a retryable failure) and still refuses stale attempts.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use berth_shared::time::unix_ms;
use serde::{Deserialize, Serialize};

/// The failure of a task the agent stopped (or crashed) in the middle of.
pub(crate) const INTERRUPTED: &str =
    "the agent stopped while this task was running; send it again to retry";

/// Records older than this are forgotten at start.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a finished task answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub ok: bool,
    pub output_json: String,
    pub error: String,
    pub retryable: bool,
}

impl Outcome {
    /// A failure that sending the same attempt again will not change.
    pub fn failed(error: impl Into<String>) -> Self {
        Outcome {
            ok: false,
            output_json: String::new(),
            error: error.into(),
            retryable: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Running,
    Done,
}

/// One saga step as this agent knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub saga_id: String,
    pub step_index: u32,
    /// The newest attempt seen for this step: its epoch and its attempt under that epoch.
    pub epoch: u64,
    #[serde(default)]
    pub attempt: u64,
    pub kind: String,
    pub status: Status,
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Runs of the step this agent started, and runs that succeeded.
    #[serde(default)]
    pub runs: u32,
    #[serde(default)]
    pub succeeded: u32,
    pub updated_ms: i64,
}

/// The folder of records; `None` when it cannot be used (then tasks live in memory only).
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: Option<PathBuf>,
}

impl Store {
    /// Opens `dir`, returning the records in it. A task that was running when the agent
    /// stopped becomes a retryable failure. Old records are removed.
    pub fn open(dir: PathBuf) -> (Self, Vec<Record>) {
        if let Err(e) = fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot use the task state dir; task results will not survive a restart");
            return (Self { dir: None }, Vec::new());
        }
        let store = Self {
            dir: Some(dir.clone()),
        };
        let mut records = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the task state dir");
                return (store, records);
            }
        };
        let cutoff = unix_ms(SystemTime::now()) - KEEP.as_millis() as i64;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let record: Record = match fs::read(&path).map(|b| serde_json::from_slice(&b)) {
                Ok(Ok(r)) => r,
                _ => {
                    tracing::warn!(path = %path.display(), "ignoring an unreadable task record");
                    continue;
                }
            };
            if record.updated_ms < cutoff {
                let _ = fs::remove_file(&path);
                continue;
            }
            let record = if record.status == Status::Running {
                let interrupted = Record {
                    status: Status::Done,
                    outcome: Some(Outcome {
                        ok: false,
                        output_json: String::new(),
                        error: INTERRUPTED.to_owned(),
                        retryable: true,
                    }),
                    updated_ms: unix_ms(SystemTime::now()),
                    ..record
                };
                if let Err(e) = store.save(&interrupted) {
                    tracing::warn!(error = %e, "cannot record an interrupted task");
                }
                interrupted
            } else {
                record
            };
            records.push(record);
        }
        (store, records)
    }

    /// Writes `record` atomically (temporary file, fsync, rename).
    pub fn save(&self, record: &Record) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let path = dir.join(file_name(&record.saga_id, record.step_index));
        let tmp = path.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(record).expect("a record serializes"))?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(dir)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// `<saga>-<step>.json`, with the saga id hex-encoded unless it is plainly safe.
fn file_name(saga_id: &str, step: u32) -> String {
    let plain = !saga_id.is_empty()
        && saga_id.len() <= 100
        && saga_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        format!("{saga_id}-{step}.json")
    } else {
        let hex: String = saga_id.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x{hex}-{step}.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: Status) -> Record {
        Record {
            saga_id: "0190-abc".into(),
            step_index: 2,
            epoch: 3,
            attempt: 1,
            kind: "warm_snapshot".into(),
            status,
            outcome: None,
            runs: 1,
            succeeded: 0,
            updated_ms: unix_ms(SystemTime::now()),
        }
    }

    #[test]
    fn records_survive_and_running_ones_become_retryable_failures() {
        let dir = tempfile::tempdir().unwrap();
        let (store, none) = Store::open(dir.path().join("tasks"));
        assert!(none.is_empty());
        let mut done = record(Status::Done);
        done.step_index = 1;
        done.outcome = Some(Outcome {
            ok: true,
            output_json: "{}".into(),
            error: String::new(),
            retryable: false,
        });
        store.save(&done).unwrap();
        store.save(&record(Status::Running)).unwrap();
        let mut old = record(Status::Done);
        old.step_index = 9;
        old.updated_ms = 0;
        store.save(&old).unwrap();

        let (_, mut loaded) = Store::open(dir.path().join("tasks"));
        loaded.sort_by_key(|r| r.step_index);
        assert_eq!(loaded.len(), 2, "the old record is pruned");
        assert_eq!(loaded[0], done);
        let interrupted = loaded[1].outcome.clone().unwrap();
        assert!(!interrupted.ok && interrupted.retryable);
        assert_eq!(loaded[1].status, Status::Done);
    }

    #[test]
    fn file_names_are_safe_whatever_the_saga_id() {
        assert_eq!(file_name("abc-1", 2), "abc-1-2.json");
        assert_eq!(file_name("../x", 0), "x2e2e2f78-0.json");
        assert_eq!(file_name("", 0), "x-0.json");
    }
}
