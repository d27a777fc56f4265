//! DigitalOcean's OpenAPI spec (the JSON Schema form in `tests/fixtures/digitalocean/`) as the
//! simulator's contract: it routes requests by the spec's paths and checks every path
//! parameter, query parameter and body a client sends, and every response the simulator
//! sends, against the spec's schemas.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use jsonschema::Validator;
use serde_json::{Value, json};

const SPEC_TEXT: &str = include_str!("../../fixtures/digitalocean/openapi-subset.jsonschema.json");

/// The spec, parsed once per process; validators are compiled on first use.
pub static SPEC: LazyLock<Spec> = LazyLock::new(Spec::load);

/// One operation of the spec.
#[derive(Debug, Clone)]
pub struct Operation {
    pub id: String,
    pub method: String,
    /// `/v2/droplets/{droplet_id}` split at `/`.
    segments: Vec<String>,
    params: Vec<Param>,
    has_request: bool,
    request_required: bool,
    responses: Vec<String>,
    without_body: Vec<String>,
}

#[derive(Debug, Clone)]
struct Param {
    name: String,
    location: String,
    required: bool,
    index: usize,
}

pub struct Spec {
    root: Value,
    operations: Vec<Operation>,
    validators: Mutex<HashMap<String, Arc<Validator>>>,
}

impl Spec {
    fn load() -> Spec {
        let root: Value = serde_json::from_str(SPEC_TEXT).expect("the bundled spec is json");
        let ops = root["operations"].as_object().expect("operations");
        let mut operations = Vec::new();
        for (id, op) in ops {
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let params = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .enumerate()
                        .map(|(index, p)| Param {
                            name: p["name"].as_str().unwrap_or_default().to_owned(),
                            location: p["in"].as_str().unwrap_or_default().to_owned(),
                            required: p["required"].as_bool().unwrap_or(false),
                            index,
                        })
                        .collect()
                })
                .unwrap_or_default();
            operations.push(Operation {
                id: id.clone(),
                method: op["method"].as_str().unwrap_or_default().to_owned(),
                segments: op["path"]
                    .as_str()
                    .unwrap_or_default()
                    .split('/')
                    .map(str::to_owned)
                    .collect(),
                params,
                has_request: op.get("request").is_some_and(|r| !r.is_null()),
                request_required: op["request_required"].as_bool().unwrap_or(false),
                responses: op["responses"]
                    .as_object()
                    .map(|r| r.keys().cloned().collect())
                    .unwrap_or_default(),
                without_body: strings(&op["responses_without_body"]),
            });
        }
        Spec {
            root,
            operations,
            validators: Mutex::new(HashMap::new()),
        }
    }

    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The operation for a method and path, with its path parameters.
    pub fn route(&self, method: &str, path: &str) -> Option<(&Operation, Vec<(String, String)>)> {
        let parts: Vec<&str> = path.split('/').collect();
        self.operations.iter().find_map(|op| {
            if !op.method.eq_ignore_ascii_case(method) || op.segments.len() != parts.len() {
                return None;
            }
            let mut params = Vec::new();
            for (seg, part) in op.segments.iter().zip(&parts) {
                if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    if part.is_empty() {
                        return None;
                    }
                    let value = percent_decode(part);
                    params.push((name.to_owned(), value));
                } else if seg != part {
                    return None;
                }
            }
            Some((op, params))
        })
    }

    /// The compiled schema at a JSON pointer into the spec document.
    fn validator(&self, pointer: &str) -> Arc<Validator> {
        let mut cache = self.validators.lock().expect("spec cache");
        if let Some(v) = cache.get(pointer) {
            return v.clone();
        }
        let mut root = self.root.clone();
        root["$ref"] = json!(format!("#{pointer}"));
        let v = Arc::new(
            jsonschema::validator_for(&root)
                .unwrap_or_else(|e| panic!("the spec's schema at {pointer} compiles: {e}")),
        );
        cache.insert(pointer.to_owned(), v.clone());
        v
    }

    fn errors(&self, pointer: &str, instance: &Value) -> Vec<String> {
        let v = self.validator(pointer);
        v.iter_errors(instance).map(|e| describe(&e, 0)).collect()
    }

    /// Everything about a request that the spec does not allow.
    pub fn check_request(
        &self,
        op: &Operation,
        path_params: &[(String, String)],
        query: &[(String, String)],
        content_type: Option<&str>,
        body: &[u8],
    ) -> Vec<String> {
        let mut problems = Vec::new();
        for p in &op.params {
            let raw = match p.location.as_str() {
                "path" => path_params
                    .iter()
                    .find(|(k, _)| *k == p.name)
                    .map(|(_, v)| v),
                "query" => query.iter().find(|(k, _)| *k == p.name).map(|(_, v)| v),
                _ => continue,
            };
            let Some(raw) = raw else {
                if p.required {
                    problems.push(format!("{} parameter {} is required", p.location, p.name));
                }
                continue;
            };
            let pointer = format!("/operations/{}/parameters/{}/schema", op.id, p.index);
            // Parameters arrive as text: valid if the text, or the number it spells, is.
            let as_string = self.errors(&pointer, &Value::String(raw.clone()));
            let as_number = raw
                .parse::<i64>()
                .ok()
                .map(|n| self.errors(&pointer, &json!(n)));
            let ok = as_string.is_empty() || as_number.as_ref().is_some_and(Vec::is_empty);
            if !ok {
                let detail = as_number.unwrap_or(as_string).join("; ");
                problems.push(format!(
                    "{} parameter {}={raw:?}: {detail}",
                    p.location, p.name
                ));
            }
        }
        for (k, _) in query {
            if !op
                .params
                .iter()
                .any(|p| p.location == "query" && p.name == *k)
            {
                problems.push(format!("query parameter {k} is not in the spec"));
            }
        }
        let body_present = !body.iter().all(u8::is_ascii_whitespace);
        if !op.has_request {
            if body_present {
                problems.push("the operation takes no request body".to_owned());
            }
            return problems;
        }
        if !body_present {
            if op.request_required {
                problems.push("request body is required".to_owned());
            }
            return problems;
        }
        if !content_type.is_some_and(|c| c.starts_with("application/json")) {
            problems.push(format!(
                "content-type {content_type:?} is not application/json"
            ));
        }
        match serde_json::from_slice::<Value>(body) {
            Err(e) => problems.push(format!("request body is not json: {e}")),
            Ok(v) => {
                let pointer = format!("/operations/{}/request", op.id);
                problems.extend(
                    self.errors(&pointer, &v)
                        .into_iter()
                        .map(|e| format!("request body {e}")),
                );
            }
        }
        problems
    }

    /// Everything about a response that the spec does not allow.
    pub fn check_response(&self, op: &Operation, status: u16, body: Option<&Value>) -> Vec<String> {
        let status_key = status.to_string();
        if op.without_body.contains(&status_key) {
            return match body {
                Some(_) => vec![format!("a {status} response has no body in the spec")],
                None => Vec::new(),
            };
        }
        let key = if op.responses.contains(&status_key) {
            status_key
        } else if op.responses.iter().any(|r| r == "default") {
            "default".to_owned()
        } else {
            return vec![format!("status {status} is not in the spec")];
        };
        let Some(body) = body else {
            return vec![format!("a {status} response needs a body in the spec")];
        };
        let pointer = format!("/operations/{}/responses/{key}", op.id);
        self.errors(&pointer, body)
            .into_iter()
            .map(|e| format!("response {status} body {e}"))
            .collect()
    }
}

/// An error with its path; for `anyOf`/`oneOf`, why each option failed (the top message alone
/// says only "not valid under any of the schemas").
fn describe(e: &jsonschema::ValidationError<'_>, depth: usize) -> String {
    use jsonschema::error::ValidationErrorKind as Kind;
    let at = e.instance_path().to_string();
    let at = if at.is_empty() { "/".to_owned() } else { at };
    match e.kind() {
        Kind::AnyOf { context } | Kind::OneOfNotValid { context } if depth < 3 => {
            let options: Vec<String> = context
                .iter()
                .enumerate()
                .map(|(i, errors)| {
                    let why: Vec<String> = errors.iter().map(|e| describe(e, depth + 1)).collect();
                    format!("option {}: {}", i + 1, why.join(", "))
                })
                .collect();
            format!(
                "{at}: matches none of the spec's options ({})",
                options.join("; ")
            )
        }
        _ => format!("{at}: {e}"),
    }
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let (b'%', Some(b)) = (bytes[i], hex) {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
