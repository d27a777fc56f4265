//! Drift decisions as pure functions: read a field of a live resource, compare it with the
//! desired value loosely (JSON round trips must not make false drift), plan what to do with
//! the drift rows already open, and say how a drifted field can be reverted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value, json};

pub use crate::store::DriftStatus;

/// A live resource as the inventory holds it: its top-level fields and its full attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveResource {
    pub fields: Map<String, Value>,
    pub attributes: Value,
    /// The resource disappeared from the cloud.
    pub deleted: bool,
}

/// A desired field whose live value differs.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub field: String,
    pub expected: Value,
    pub actual: Value,
}

/// A drift row that is open now.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenDrift {
    pub drift_id: String,
    pub field: String,
    pub expected: Value,
    pub actual: Value,
    /// A revert saga was started for it.
    pub reverting: bool,
}

/// What detection does with the drift table.
#[derive(Debug, Clone, PartialEq)]
pub enum DriftAction {
    /// A new mismatch: open a row (and write a `drift_detected` event).
    Open(Mismatch),
    /// Still drifted, but the live value (or the desired one) moved: update the open row.
    Update {
        drift_id: String,
        expected: Value,
        actual: Value,
    },
    /// The field matches again by itself: close the row as `stale`.
    CloseStale { drift_id: String },
    /// The field matches again after a revert saga: close the row as `reverted`.
    CloseReverted { drift_id: String },
}

/// The field that reports a resource deleted out of band.
pub const STATUS_FIELD: &str = "status";
/// The live `status` of a resource gone from the cloud.
pub const DELETED: &str = "deleted";

/// Scalars compare as strings (so `2`, `2.0` and `"2"` agree), lists as sets, objects key by
/// key, and `null` only with `null` or an absent value.
pub fn loose_eq(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Null, Value::Null) => true,
        (Value::Array(a), Value::Array(b)) => as_set(a) == as_set(b),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| loose_eq(v, w)))
        }
        (a, b) => match (scalar(a), scalar(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(normalize_number(s).unwrap_or_else(|| s.clone())),
        Value::Number(n) => Some(normalize_number(&n.to_string()).unwrap_or_else(|| n.to_string())),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `"2"`, `"2.0"` and `2` all read `2`; anything that is not a number is left alone.
fn normalize_number(s: &str) -> Option<String> {
    let f: f64 = s.trim().parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    Some(if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    })
}

fn as_set(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .map(|v| scalar(v).unwrap_or_else(|| v.to_string()))
        .collect()
}

/// A field's live value: the top-level field first, then the attributes (a dotted path such
/// as `image.slug` walks into objects).
pub fn live_value(live: &LiveResource, field: &str) -> Value {
    if let Some(v) = live.fields.get(field) {
        return v.clone();
    }
    let mut at = &live.attributes;
    for part in field.split('.') {
        match at.get(part) {
            Some(v) => at = v,
            None => return Value::Null,
        }
    }
    at.clone()
}

/// Every desired field whose live value differs. A deleted resource drifts on `status`
/// whatever else its spec says, unless its spec says `status: deleted` (a deletion accepted).
pub fn detect(spec: &Map<String, Value>, live: &LiveResource) -> Vec<Mismatch> {
    if live.deleted {
        let expected = spec
            .get(STATUS_FIELD)
            .cloned()
            .unwrap_or_else(|| Value::String("present".into()));
        let actual = Value::String(DELETED.into());
        if loose_eq(&expected, &actual) {
            return Vec::new();
        }
        return vec![Mismatch {
            field: STATUS_FIELD.into(),
            expected,
            actual,
        }];
    }
    spec.iter()
        .filter_map(|(field, expected)| {
            let actual = live_value(live, field);
            (!loose_eq(expected, &actual)).then(|| Mismatch {
                field: field.clone(),
                expected: expected.clone(),
                actual,
            })
        })
        .collect()
}

/// What the inventory says of a resource that has a desired spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observed<'a> {
    /// The inventory row (present, or marked deleted by the sync).
    Row(&'a LiveResource),
    /// A Berth saga deleted it (`droplet.destroy`): gone on purpose, not drift.
    RetiredByBerth,
    /// No inventory row at all: as good as gone.
    Missing,
}

/// [`detect`] for whatever the inventory holds of a resource.
pub fn detect_observed(spec: &Map<String, Value>, observed: Observed<'_>) -> Vec<Mismatch> {
    match observed {
        Observed::Row(live) => detect(spec, live),
        Observed::RetiredByBerth => Vec::new(),
        Observed::Missing => detect(
            spec,
            &LiveResource {
                fields: Map::new(),
                attributes: Value::Null,
                deleted: true,
            },
        ),
    }
}

/// What to do with the drift table given this detection's mismatches and the open rows of the
/// same resource: open new ones, update moved ones, close those that match again (as
/// `reverted` when a revert saga was started for them, else as `stale`).
pub fn plan(mismatches: Vec<Mismatch>, open: &[OpenDrift]) -> Vec<DriftAction> {
    let open_by_field: BTreeMap<&str, &OpenDrift> =
        open.iter().map(|d| (d.field.as_str(), d)).collect();
    let drifted: BTreeSet<String> = mismatches.iter().map(|m| m.field.clone()).collect();
    let mut actions = Vec::new();
    for m in mismatches {
        match open_by_field.get(m.field.as_str()) {
            None => actions.push(DriftAction::Open(m)),
            Some(d) if !loose_eq(&d.actual, &m.actual) || !loose_eq(&d.expected, &m.expected) => {
                actions.push(DriftAction::Update {
                    drift_id: d.drift_id.clone(),
                    expected: m.expected,
                    actual: m.actual,
                })
            }
            Some(_) => {}
        }
    }
    for d in open {
        if !drifted.contains(&d.field) {
            let drift_id = d.drift_id.clone();
            actions.push(if d.reverting {
                DriftAction::CloseReverted { drift_id }
            } else {
                DriftAction::CloseStale { drift_id }
            });
        }
    }
    actions
}

/// The saga that changes one field of a live resource back to its desired value.
#[derive(Debug, Clone, PartialEq)]
pub struct RevertPlan {
    pub saga_kind: &'static str,
    pub inputs: Value,
}

/// Why a drift cannot be reverted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRevert {
    NoPath {
        kind: String,
        field: String,
        revertible: Vec<&'static str>,
    },
    Invalid {
        field: String,
        problem: String,
    },
}

impl fmt::Display for NoRevert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoRevert::NoPath {
                kind,
                field,
                revertible,
            } => {
                write!(f, "field {field} of a {kind} has no revert path: ")?;
                if revertible.is_empty() {
                    write!(f, "no field of a {kind} can be reverted")?;
                } else {
                    write!(f, "only {} can be reverted", revertible.join(", "))?;
                }
                f.write_str(
                    "; accept the drift instead, or change the resource by hand and let the \
                     next detection close it",
                )
            }
            NoRevert::Invalid { field, problem } => write!(f, "cannot revert {field}: {problem}"),
        }
    }
}

impl std::error::Error for NoRevert {}

/// Fields that can be reverted, per resource kind, and the saga kind that does it.
pub const REVERT_PATHS: &[(&str, &str, &str)] = &[("droplet", "size_slug", "droplet.resize")];

/// The fields of a kind that can be reverted.
pub fn revertible_fields(kind: &str) -> Vec<&'static str> {
    REVERT_PATHS
        .iter()
        .filter(|(k, _, _)| *k == kind)
        .map(|(_, f, _)| *f)
        .collect()
}

/// The saga that puts `field` of the resource (`kind`, `provider_id`) back to `expected`.
pub fn revert_plan(
    kind: &str,
    provider_id: &str,
    field: &str,
    expected: &Value,
) -> Result<RevertPlan, NoRevert> {
    let invalid = |problem: String| NoRevert::Invalid {
        field: field.to_owned(),
        problem,
    };
    match (kind, field) {
        ("droplet", "size_slug") => {
            let droplet_id: u64 = provider_id
                .parse()
                .map_err(|_| invalid(format!("droplet id {provider_id:?} is not a number")))?;
            let size = match expected {
                Value::String(s) if !s.is_empty() => s.clone(),
                other => {
                    return Err(invalid(format!(
                        "the desired size_slug {other} is not a size slug; record a spec that \
                         names one first"
                    )));
                }
            };
            Ok(RevertPlan {
                saga_kind: "droplet.resize",
                inputs: json!({ "droplet_id": droplet_id, "size_slug": size }),
            })
        }
        _ => Err(NoRevert::NoPath {
            kind: kind.to_owned(),
            field: field.to_owned(),
            revertible: revertible_fields(kind),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live(fields: Value, attributes: Value) -> LiveResource {
        LiveResource {
            fields: fields.as_object().unwrap().clone(),
            attributes,
            deleted: false,
        }
    }

    #[test]
    fn json_round_trips_do_not_make_false_drift() {
        assert!(loose_eq(&json!(2), &json!("2")));
        assert!(loose_eq(&json!("2.0"), &json!(2)));
        assert!(loose_eq(&json!(true), &json!("true")));
        assert!(loose_eq(&json!(["b", "a", "a"]), &json!(["a", "b"])));
        assert!(loose_eq(&json!([1, 2]), &json!(["2", "1"])));
        assert!(!loose_eq(&json!("s-1vcpu-1gb"), &json!("s-2vcpu-2gb")));
        assert!(!loose_eq(&json!(["a"]), &json!(["a", "b"])));
        assert!(!loose_eq(&json!("x"), &Value::Null));
        assert!(loose_eq(&json!({"a": 1}), &json!({"a": "1"})));
    }

    #[test]
    fn fields_are_read_top_level_first_then_from_attributes() {
        let l = live(
            json!({"size_slug": "s-1"}),
            json!({"size_slug": "ignored", "image": {"slug": "debian-12"}}),
        );
        assert_eq!(live_value(&l, "size_slug"), json!("s-1"));
        assert_eq!(live_value(&l, "image.slug"), json!("debian-12"));
        assert_eq!(live_value(&l, "nope"), Value::Null);
    }

    #[test]
    fn only_the_fields_that_differ_are_flagged() {
        let spec = json!({"size_slug": "s-2vcpu-2gb", "region": "fra1", "tags": ["b", "a"]});
        let l = live(
            json!({"size_slug": "s-1vcpu-1gb", "region": "fra1", "tags": ["a", "b"]}),
            json!({}),
        );
        let m = detect(spec.as_object().unwrap(), &l);
        assert_eq!(
            m,
            [Mismatch {
                field: "size_slug".into(),
                expected: json!("s-2vcpu-2gb"),
                actual: json!("s-1vcpu-1gb")
            }]
        );
        let mut gone = l.clone();
        gone.deleted = true;
        let m = detect(spec.as_object().unwrap(), &gone);
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].field.as_str(), &m[0].actual),
            ("status", &json!("deleted"))
        );
    }

    #[test]
    fn plans_open_update_and_stale_closes() {
        let open = [
            OpenDrift {
                drift_id: "d1".into(),
                field: "size_slug".into(),
                expected: json!("s-2"),
                actual: json!("s-1"),
                reverting: false,
            },
            OpenDrift {
                drift_id: "d2".into(),
                field: "region".into(),
                expected: json!("fra1"),
                actual: json!("ams3"),
                reverting: false,
            },
        ];
        let mismatches = vec![
            Mismatch {
                field: "size_slug".into(),
                expected: json!("s-2"),
                actual: json!("s-4"),
            },
            Mismatch {
                field: "image".into(),
                expected: json!("debian-12"),
                actual: json!("ubuntu"),
            },
        ];
        let actions = plan(mismatches, &open);
        assert!(actions.contains(&DriftAction::Update {
            drift_id: "d1".into(),
            expected: json!("s-2"),
            actual: json!("s-4")
        }));
        assert!(actions.contains(&DriftAction::CloseStale {
            drift_id: "d2".into()
        }));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, DriftAction::Open(m) if m.field == "image"))
        );
        assert_eq!(actions.len(), 3);
        // The same live value again changes nothing.
        let again = vec![Mismatch {
            field: "size_slug".into(),
            expected: json!("s-2"),
            actual: json!("s-1"),
        }];
        assert_eq!(plan(again, &open[..1]), []);
    }

    #[test]
    fn a_match_after_a_revert_closes_reverted_and_a_moved_spec_updates() {
        let open = [OpenDrift {
            drift_id: "d1".into(),
            field: "size_slug".into(),
            expected: json!("s-2"),
            actual: json!("s-1"),
            reverting: true,
        }];
        assert_eq!(
            plan(Vec::new(), &open),
            [DriftAction::CloseReverted {
                drift_id: "d1".into()
            }]
        );
        let respecified = vec![Mismatch {
            field: "size_slug".into(),
            expected: json!("s-4"),
            actual: json!("s-1"),
        }];
        assert_eq!(
            plan(respecified, &open),
            [DriftAction::Update {
                drift_id: "d1".into(),
                expected: json!("s-4"),
                actual: json!("s-1")
            }]
        );
    }

    #[test]
    fn deletions_by_berth_or_accepted_are_not_drift() {
        let spec = json!({"size_slug": "s-1"});
        let spec = spec.as_object().unwrap();
        assert!(detect_observed(spec, Observed::RetiredByBerth).is_empty());
        let m = detect_observed(spec, Observed::Missing);
        assert_eq!(
            (m[0].field.as_str(), &m[0].actual),
            ("status", &json!("deleted"))
        );
        let gone = LiveResource {
            deleted: true,
            ..live(json!({}), json!({}))
        };
        let accepted = json!({"size_slug": "s-1", "status": "deleted"});
        assert!(detect(accepted.as_object().unwrap(), &gone).is_empty());
    }

    #[test]
    fn only_droplet_sizes_have_a_revert_path() {
        let p = revert_plan("droplet", "42", "size_slug", &json!("s-2vcpu-2gb")).unwrap();
        assert_eq!(p.saga_kind, "droplet.resize");
        assert_eq!(
            p.inputs,
            json!({"droplet_id": 42, "size_slug": "s-2vcpu-2gb"})
        );
        let e = revert_plan("droplet", "42", "region", &json!("fra1")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("field region") && text.contains("only size_slug"),
            "{text}"
        );
        let e = revert_plan("volume", "v", "size", &json!(1)).unwrap_err();
        assert!(e.to_string().contains("no field of a volume"), "{e}");
        let e = revert_plan("droplet", "42", "size_slug", &Value::Null).unwrap_err();
        assert!(matches!(e, NoRevert::Invalid { .. }), "{e}");
        assert_eq!("stale".parse::<DriftStatus>(), Ok(DriftStatus::Stale));
        assert!("closed".parse::<DriftStatus>().is_err());
    }
}
