//! `meta.json` of a warm snapshot, as cc-ci's warmsnap.py writes and reads it:
//! `{recipe, domain, commit, version, volumes, ts}`, extra keys allowed and kept.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// The metadata of one snapshot. Unknown keys are kept in `extra` and written back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The app's folder name under the warm root (cc-ci calls it the recipe).
    #[serde(default)]
    pub recipe: String,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// Volume names, one `volumes/<name>.tar` each.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// UTC, second precision: `2024-05-01T12:34:56Z`.
    #[serde(default)]
    pub ts: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `now` the way warmsnap.py writes it.
pub fn format_ts(now: DateTime<Utc>) -> String {
    now.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Unix milliseconds of a `ts`, or `None` when it is not one we can read. Accepts the
/// Python form (naive, with `Z`), RFC 3339 with an offset, and fractional seconds.
pub fn parse_ts(ts: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(ts) {
        return Some(t.timestamp_millis());
    }
    let naive = ts.strip_suffix('Z').unwrap_or(ts);
    NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

impl Meta {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("meta serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_warmsnap_writes_and_keeps_extra_keys() {
        let py = br#"{"recipe": "kc", "domain": "kc.example.org", "commit": null, "version": "1.2", "volumes": ["kc_example_org_db"], "ts": "2024-05-01T12:34:56Z", "note": 7}"#;
        let meta = Meta::from_json(py).unwrap();
        assert_eq!(meta.recipe, "kc");
        assert_eq!(meta.commit, None);
        assert_eq!(meta.version.as_deref(), Some("1.2"));
        assert_eq!(meta.volumes, ["kc_example_org_db"]);
        assert_eq!(meta.extra["note"], 7);
        let again = Meta::from_json(&meta.to_json()).unwrap();
        assert_eq!(again, meta);
        let text = String::from_utf8(meta.to_json()).unwrap();
        for key in ["recipe", "domain", "commit", "version", "volumes", "ts"] {
            assert!(text.contains(&format!("\"{key}\":")), "{text}");
        }
    }

    #[test]
    fn timestamps_round_trip_in_python_form() {
        let t = DateTime::from_timestamp(1_714_566_896, 0).unwrap();
        let ts = format_ts(t);
        assert_eq!(ts, "2024-05-01T12:34:56Z");
        assert_eq!(parse_ts(&ts), Some(1_714_566_896_000));
        assert_eq!(parse_ts("2024-05-01T12:34:56"), Some(1_714_566_896_000));
        assert_eq!(
            parse_ts("2024-05-01T12:34:56.5+00:00"),
            Some(1_714_566_896_500)
        );
        assert_eq!(parse_ts("yesterday"), None);
    }
}
