//! Secret inputs, sealed when a saga starts. A field named in [`SECRET_FIELDS`] (at the top of
//! the inputs or one object down, as in a drill's `provision`) is taken out of the inputs that
//! `saga_runs` keeps and every reader sees, written to `saga_secrets` instead, and replaced by
//! `<field>_bytes` (its length), which is all the API shows: `"user_data": "(set, 1.2 KiB)"`.

use serde_json::{Map, Value};

/// Input fields that are secrets: a droplet's cloud-init user data can hold passwords and
/// keys; an archive restore's one-off age identity is a private key.
pub const SECRET_FIELDS: &[&str] = &["user_data", berth_shared::task::IDENTITY_FIELD];

/// The marker left in the inputs for a sealed field.
fn marker(field: &str) -> String {
    format!("{field}_bytes")
}

/// Takes every secret field out of `inputs`, leaving its marker; returns (field, value) pairs
/// to store in `saga_secrets`. A field may appear once per saga.
pub fn seal(inputs: &mut Value) -> Vec<(&'static str, String)> {
    let mut sealed = Vec::new();
    let Some(top) = inputs.as_object_mut() else {
        return sealed;
    };
    seal_object(top, &mut sealed);
    for nested in top.values_mut().filter_map(Value::as_object_mut) {
        seal_object(nested, &mut sealed);
    }
    sealed
}

fn seal_object(object: &mut Map<String, Value>, sealed: &mut Vec<(&'static str, String)>) {
    for field in SECRET_FIELDS {
        if let Some(Value::String(secret)) = object.remove(*field) {
            object.insert(marker(field), Value::from(secret.len() as u64));
            sealed.push((*field, secret));
        }
    }
}

/// Removes the markers [`seal`] left at the top of `inputs`, so they parse as a task again.
pub fn strip_markers(inputs: &mut Map<String, Value>) {
    for field in SECRET_FIELDS {
        inputs.remove(&marker(field));
    }
}

/// The inputs as the API shows them: each marker becomes `"<field>": "(set, 1.2 KiB)"`, and
/// a secret field that was not sealed (never expected) is hidden all the same.
pub fn for_display(inputs: &str) -> String {
    let Ok(mut value) = serde_json::from_str::<Value>(inputs) else {
        return inputs.to_owned();
    };
    let Some(top) = value.as_object_mut() else {
        return inputs.to_owned();
    };
    display_object(top);
    for nested in top.values_mut().filter_map(Value::as_object_mut) {
        display_object(nested);
    }
    value.to_string()
}

fn display_object(object: &mut Map<String, Value>) {
    for field in SECRET_FIELDS {
        let size = match (object.remove(&marker(field)), object.remove(*field)) {
            (Some(bytes), _) => bytes.as_u64().unwrap_or_default(),
            (None, Some(Value::String(s))) => s.len() as u64,
            (None, Some(_)) | (None, None) => continue,
        };
        object.insert(
            (*field).to_owned(),
            Value::from(format!("(set, {})", human_size(size))),
        );
    }
}

/// `812 B`, `1.2 KiB`, `3.0 MiB`.
fn human_size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_data_is_sealed_and_shown_by_size_only() {
        let secret = "#cloud-config\npassword: hunter2\n".repeat(40);
        let mut inputs = json!({"name": "web-1", "user_data": secret});
        let sealed = seal(&mut inputs);
        assert_eq!(sealed, vec![("user_data", secret.clone())]);
        assert_eq!(
            inputs,
            json!({"name": "web-1", "user_data_bytes": secret.len()})
        );
        let shown = for_display(&inputs.to_string());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains(r#""user_data":"(set, 1.2 KiB)""#), "{shown}");

        let mut drill = json!({"steps": [], "provision": {"name": "x", "user_data": "s3cret"}});
        assert_eq!(seal(&mut drill), vec![("user_data", "s3cret".to_owned())]);
        assert_eq!(drill["provision"]["user_data_bytes"], 6);
        assert!(for_display(&drill.to_string()).contains(r#""user_data":"(set, 6 B)""#));
        assert!(!for_display(r#"{"user_data":"plain"}"#).contains("plain"));
        assert_eq!(for_display(r#"{"a":1}"#), r#"{"a":1}"#);
    }
}
