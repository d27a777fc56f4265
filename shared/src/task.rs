//! The task contract between a coordinator and its agents: every kind of work an agent does
//! for a saga step, with typed inputs, parsed once on each side (the coordinator when a saga
//! starts, the agent when a task arrives). On the wire a task is the JSON of [`Task`], tagged
//! by `kind`; the host it runs on is the saga's `host_id`, not part of the task.

use serde::{Deserialize, Serialize};

use crate::archive::ArchiveId;
use crate::{AppName, Secret, StackName};

/// The field of [`ArchiveRestore`] holding a one-off identity: a secret saga input, sealed at
/// start and added only to the task sent to the agent.
pub const IDENTITY_FIELD: &str = "identity";

/// Longest wait for a stack to be undeployed that a task may ask for, in seconds.
pub const MAX_WAIT_UNDEPLOYED_SECS: u64 = 3600;

/// Longest domain (DNS's limit), commit and version a task may carry, in bytes.
pub const MAX_DOMAIN: usize = 253;
pub const MAX_COMMIT: usize = 128;
pub const MAX_VERSION: usize = 128;
/// Most labels one archive may carry, the longest label and the longest index label.
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL: usize = 256;
pub const MAX_INDEX_LABEL: usize = 128;
/// Most extra recipients one archive create may name, and the longest (an SSH RSA key of
/// 8192 bits is about 1.4 KB).
pub const MAX_RECIPIENTS: usize = 16;
pub const MAX_RECIPIENT: usize = 2048;

/// `Err` naming `field` and the limit when `value` is longer than `max` bytes.
fn bounded(field: &str, value: &str, max: usize) -> Result<(), String> {
    match value.len() {
        len if len > max => Err(format!("{field} is {len} bytes long; the limit is {max}")),
        _ => Ok(()),
    }
}

/// A unit of agent work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Snapshot a stack's volumes into the app's warm snapshot.
    WarmSnapshot(WarmSnapshot),
    /// Put the app's warm snapshot back into its stack's volumes.
    WarmRestore(WarmRestore),
    /// Archive an app directory (or a stack's volumes) into object storage.
    ArchiveCreate(ArchiveCreate),
    /// Restore an archive into an app directory (or a stack's volumes).
    ArchiveRestore(ArchiveRestore),
    /// Download an archive and check it as a restore would, writing nothing.
    ArchiveVerify(ArchiveVerify),
}

/// Inputs of [`Task::WarmSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmSnapshot {
    pub app: AppName,
    /// The app's domain; its stack is the domain with `.` as `_` unless `stack` names it.
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub stack: Option<StackName>,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// How long to wait for the stack to be undeployed before refusing (0: refuse at once).
    #[serde(default)]
    pub wait_undeployed_secs: Option<u64>,
    /// Keep no ready spare of this snapshot (`berth warm snapshot --no-spare`). Sent only
    /// when set, so agents from before spares take every other snapshot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_spare: bool,
}

/// Inputs of [`Task::WarmRestore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmRestore {
    pub app: AppName,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub stack: Option<StackName>,
    #[serde(default)]
    pub wait_undeployed_secs: Option<u64>,
}

/// Inputs of [`Task::ArchiveCreate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveCreate {
    pub app: AppName,
    /// Archive this stack's volumes instead of the app directory.
    #[serde(default)]
    pub stack: Option<StackName>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: Vec<String>,
    /// The index label value, the key's third field; empty for none.
    #[serde(default, deserialize_with = "null_as_default")]
    pub index_label: String,
    /// zstd level 1..=19; absent for the agent's default.
    #[serde(default)]
    pub zstd_level: Option<i32>,
    /// The archive's uuid; a saga's create uses the saga id, so every attempt makes (or
    /// finds) the same archive.
    #[serde(default)]
    pub uuid: Option<ArchiveId>,
    /// More age recipients for this archive, beside the agent's own: public keys (`age1…`,
    /// `ssh-ed25519 …`, `ssh-rsa …`). The agent parses them; here only their shape is held.
    #[serde(default, deserialize_with = "null_as_default")]
    pub recipients: Vec<String>,
    /// Write nothing when the source's listing digest equals this archive's (the newest good
    /// one's, as its create saga recorded it): a schedule's `skip_unchanged`.
    #[serde(default)]
    pub unchanged_since: Option<UnchangedSince>,
}

/// The archive an unchanged source would match, and its listing digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnchangedSince {
    pub uuid: ArchiveId,
    pub source_digest: String,
}

/// What the saga that created an archive recorded about it. A restore checks the archive
/// against this and never against the bucket's metadata, which anyone who can write the
/// bucket can rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recorded {
    /// Hex SHA-256 of the stored object.
    pub sha256: String,
    /// Bytes of the stored object.
    pub size: u64,
    /// Uncompressed tar bytes and tar entries: the restore's caps.
    pub tar_bytes: u64,
    pub entries: u64,
}

/// Inputs of [`Task::ArchiveRestore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRestore {
    pub uuid: ArchiveId,
    /// Filled in by the coordinator from the archive's `archive.create` saga, never taken
    /// from a caller; absent for an archive no saga of this fleet created (the Go tool's).
    #[serde(default)]
    pub recorded: Option<Recorded>,
    /// Restore under this app name; absent: the archive's own app.
    #[serde(default)]
    pub target_app: Option<AppName>,
    /// For a volume archive: the stack whose volumes receive it; absent: its own stack.
    #[serde(default)]
    pub stack: Option<StackName>,
    /// An age identity for this one restore (the operator's, from a credential file). The
    /// coordinator keeps it sealed apart from the saga's inputs, adds it only to the task it
    /// sends, and drops it once the step is over; the agent never writes it down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Secret>,
}

/// Inputs of [`Task::ArchiveVerify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveVerify {
    pub uuid: ArchiveId,
    /// Filled in by the coordinator from the archive's `archive.create` saga, as for
    /// [`ArchiveRestore`]; absent for an archive no saga of this fleet created.
    #[serde(default)]
    pub recorded: Option<Recorded>,
}

/// Saga inputs may carry `null` for an absent value.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Why a task's inputs were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid inputs for {kind}: {message}")]
pub struct TaskError {
    pub kind: String,
    pub message: String,
}

impl Task {
    /// The task's kind as it appears on the wire and in the ledger.
    pub fn kind(&self) -> &'static str {
        match self {
            Task::WarmSnapshot(_) => "warm_snapshot",
            Task::WarmRestore(_) => "warm_restore",
            Task::ArchiveCreate(_) => "archive_create",
            Task::ArchiveRestore(_) => "archive_restore",
            Task::ArchiveVerify(_) => "archive_verify",
        }
    }

    /// Parses a task of `kind` from its inputs (a JSON object without the `kind` tag), then
    /// checks what serde cannot: a domain or stack for warm tasks, the zstd level's range.
    pub fn parse(kind: &str, inputs: &serde_json::Value) -> Result<Task, TaskError> {
        let err = |message: String| TaskError {
            kind: kind.to_owned(),
            message,
        };
        let mut tagged = inputs.clone();
        let Some(object) = tagged.as_object_mut() else {
            return Err(err("the inputs must be a JSON object".into()));
        };
        object.insert("kind".into(), serde_json::Value::String(kind.to_owned()));
        let task: Task = serde_json::from_value(tagged).map_err(|e| err(e.to_string()))?;
        task.check().map_err(err)?;
        Ok(task)
    }

    /// Parses a task from its wire JSON (the `kind` tag included).
    pub fn from_json(kind: &str, json: &str) -> Result<Task, TaskError> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| TaskError {
            kind: kind.to_owned(),
            message: e.to_string(),
        })?;
        let mut value = value;
        if let Some(o) = value.as_object_mut() {
            o.remove("kind");
        }
        Self::parse(kind, &value)
    }

    /// The wire JSON, `kind` included.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a task serializes")
    }

    fn check(&self) -> Result<(), String> {
        let warm_target = |domain: &str, stack: &Option<StackName>| match (stack, domain) {
            (Some(_), _) => Ok(()),
            (None, "") => Err("give the app's `domain` or its `stack`".to_owned()),
            (None, d) => StackName::from_domain(d)
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        let wait = |w: Option<u64>| match w {
            Some(s) if s > MAX_WAIT_UNDEPLOYED_SECS => Err(format!(
                "wait_undeployed_secs {s} is over the limit of {MAX_WAIT_UNDEPLOYED_SECS}"
            )),
            _ => Ok(()),
        };
        match self {
            Task::WarmSnapshot(t) => {
                bounded("domain", &t.domain, MAX_DOMAIN)?;
                bounded("commit", t.commit.as_deref().unwrap_or(""), MAX_COMMIT)?;
                bounded("version", t.version.as_deref().unwrap_or(""), MAX_VERSION)?;
                warm_target(&t.domain, &t.stack)?;
                wait(t.wait_undeployed_secs)
            }
            Task::WarmRestore(t) => {
                bounded("domain", &t.domain, MAX_DOMAIN)?;
                warm_target(&t.domain, &t.stack)?;
                wait(t.wait_undeployed_secs)
            }
            Task::ArchiveCreate(t) => {
                if t.labels.len() > MAX_LABELS {
                    return Err(format!(
                        "labels has {} entries; the limit is {MAX_LABELS}",
                        t.labels.len()
                    ));
                }
                for label in &t.labels {
                    bounded("labels", label, MAX_LABEL)?;
                }
                bounded("index_label", &t.index_label, MAX_INDEX_LABEL)?;
                if t.recipients.len() > MAX_RECIPIENTS {
                    return Err(format!(
                        "recipients has {} entries; the limit is {MAX_RECIPIENTS}",
                        t.recipients.len()
                    ));
                }
                for r in &t.recipients {
                    bounded("recipients", r, MAX_RECIPIENT)?;
                    if !(r.starts_with("age1") || r.starts_with("ssh-")) {
                        return Err("a recipient is not an age public key (age1…) nor an \
                             SSH public key (ssh-ed25519 …, ssh-rsa …); give public keys only \
                             (it is not repeated here, in case it was a secret key)"
                            .to_owned());
                    }
                }
                Task::check_zstd(t)
            }
            Task::ArchiveRestore(_) | Task::ArchiveVerify(_) => Ok(()),
        }
    }

    fn check_zstd(t: &ArchiveCreate) -> Result<(), String> {
        match t.zstd_level {
            Some(level) if !(1..=19).contains(&level) => {
                Err(format!("zstd_level {level} is out of range; use 1 to 19"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tasks_round_trip_through_the_wire() {
        let t = Task::parse(
            "archive_create",
            &json!({"app": "kc", "labels": null, "uuid": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"}),
        )
        .unwrap();
        assert_eq!(t.kind(), "archive_create");
        assert_eq!(Task::from_json("archive_create", &t.to_json()).unwrap(), t);
        let w = Task::parse(
            "warm_restore",
            &json!({"app": "kc", "domain": "kc.example.org"}),
        )
        .unwrap();
        assert_eq!(Task::from_json("warm_restore", &w.to_json()).unwrap(), w);
    }

    #[test]
    fn a_create_s_recipients_are_public_keys_within_limits() {
        let parse = |r: serde_json::Value| {
            Task::parse("archive_create", &json!({"app": "kc", "recipients": r}))
        };
        let age = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        assert!(parse(json!([age, "ssh-ed25519 AAAA"])).is_ok());
        assert!(parse(json!(null)).is_ok());
        let e = parse(json!(["AGE-SECRET-KEY-1QQQ"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("give public keys only"), "{e}");
        assert!(!e.contains("QQQ"), "a pasted secret is not echoed: {e}");
        let e = parse(json!(vec![age; 17])).unwrap_err().to_string();
        assert!(
            e.contains("recipients has 17 entries; the limit is 16"),
            "{e}"
        );
        let e = parse(json!([format!("ssh-rsa {}", "A".repeat(2100))]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("recipients") && e.contains("2048"), "{e}");
    }

    #[test]
    fn long_inputs_are_refused_naming_the_field_and_limit() {
        let err = |kind: &str, v: serde_json::Value| Task::parse(kind, &v).unwrap_err().to_string();
        let long = |n: usize| "a".repeat(n);
        let e = err(
            "warm_snapshot",
            json!({"app": "kc", "domain": "kc.example.org", "commit": long(129)}),
        );
        assert!(
            e.contains("commit is 129 bytes long; the limit is 128"),
            "{e}"
        );
        let e = err(
            "warm_snapshot",
            json!({"app": "kc", "domain": "kc.example.org", "version": long(200)}),
        );
        assert!(e.contains("version") && e.contains("128"), "{e}");
        let e = err("warm_restore", json!({"app": "kc", "domain": long(300)}));
        assert!(
            e.contains("domain is 300 bytes long; the limit is 253"),
            "{e}"
        );
        let e = err(
            "archive_create",
            json!({"app": "kc", "labels": vec!["x"; 33]}),
        );
        assert!(e.contains("labels has 33 entries; the limit is 32"), "{e}");
        let e = err(
            "archive_create",
            json!({"app": "kc", "labels": [long(257)]}),
        );
        assert!(
            e.contains("labels is 257 bytes long; the limit is 256"),
            "{e}"
        );
        let e = err(
            "archive_create",
            json!({"app": "kc", "index_label": long(129)}),
        );
        assert!(e.contains("index_label") && e.contains("128"), "{e}");
    }

    #[test]
    fn bad_inputs_are_refused_naming_the_problem() {
        let err = |kind: &str, v: serde_json::Value| Task::parse(kind, &v).unwrap_err().to_string();
        assert!(err("warm_restore", json!({"app": "../x", "domain": "a"})).contains("app name"));
        assert!(err("warm_restore", json!({"app": "kc"})).contains("domain"));
        assert!(
            err("warm_restore", json!({"app": "kc", "domain": "a", "x": 1}))
                .contains("unknown field")
        );
        assert!(
            err("archive_create", json!({"app": "a", "zstd_level": 40})).contains("out of range")
        );
        assert!(err("archive_restore", json!({"uuid": "nope"})).contains("uuid"));
        assert!(err("archive_verify", json!({"uuid": "nope"})).contains("uuid"));
        assert!(
            err(
                "archive_verify",
                json!({"uuid": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "target_app": "x"})
            )
            .contains("unknown field")
        );
        assert!(err("frobnicate", json!({})).contains("unknown variant"));
        assert!(
            err(
                "warm_snapshot",
                json!({"app": "kc", "stack": "s", "wait_undeployed_secs": 99999})
            )
            .contains("limit")
        );
    }
}
