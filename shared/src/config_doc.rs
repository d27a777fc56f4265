//! A configuration's reference, taken from its structs: `#[derive(ConfigDoc)]` (in
//! `berth-derive`) lists every key with its type, its default and its doc comment, so
//! `config reference` prints what the code reads and a test can hold the README and the example
//! configs to it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

pub use berth_derive::ConfigDoc;

/// Something a config file can hold: a table (derived for structs), a value (derived for
/// fieldless enums, implemented here for scalars), or an optional or listed one.
pub trait ConfigDoc {
    /// Appends this item's entries (for a table: itself, then its keys) to `out`.
    fn document(place: &Place, given: Given<'_, Self>, out: &mut Vec<Entry>);
}

/// The reference of a whole file whose top-level struct is `C`.
pub fn reference<C: ConfigDoc>() -> Vec<Entry> {
    let mut out = Vec::new();
    C::document(&Place::root(), Given::Required, &mut out);
    out
}

/// What the code does when a key is absent.
pub enum Given<'a, T: ?Sized> {
    /// It takes this value.
    Value(&'a T),
    /// It goes without (an optional key or table).
    Unset,
    /// It refuses the file.
    Required,
}

impl<T: ?Sized> Clone for Given<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for Given<'_, T> {}

impl<'a, T: ?Sized> Given<'a, T> {
    /// A key of this table: its value within this one's, or required within the table when the
    /// table has no value of its own.
    pub fn field<U: ?Sized>(self, f: impl FnOnce(&'a T) -> &'a U) -> Given<'a, U> {
        match self {
            Given::Value(v) => Given::Value(f(v)),
            Given::Unset | Given::Required => Given::Required,
        }
    }

    pub fn is_optional(&self) -> bool {
        matches!(self, Given::Unset)
    }
}

/// Where an item sits: its path of keys, its doc comment, and a default written out by hand.
pub struct Place {
    path: Vec<&'static str>,
    doc: &'static str,
    default_text: Option<&'static str>,
}

impl Place {
    fn root() -> Place {
        Place {
            path: Vec::new(),
            doc: "",
            default_text: None,
        }
    }

    /// The place of key `name` inside this one.
    pub fn key(
        &self,
        name: &'static str,
        doc: &'static str,
        default_text: Option<&'static str>,
    ) -> Place {
        let mut path = self.path.clone();
        path.push(name);
        Place {
            path,
            doc,
            default_text,
        }
    }

    /// Records a table (nothing for the file itself).
    pub fn table(&self, optional: bool, out: &mut Vec<Entry>) {
        if self.path.is_empty() {
            return;
        }
        let default = match (self.default_text, optional) {
            (Some(text), _) => DefaultValue::Text(text.to_owned()),
            (None, true) => DefaultValue::Unset,
            (None, false) => DefaultValue::Value("{}".to_owned()),
        };
        out.push(self.entry("table".to_owned(), default));
    }

    /// Records a value of type `ty`, its default rendered by `render`.
    pub fn value<T: ?Sized>(
        &self,
        ty: &str,
        given: Given<'_, T>,
        render: impl Fn(&T) -> String,
        out: &mut Vec<Entry>,
    ) {
        let default = match (self.default_text, given) {
            (Some(text), _) => DefaultValue::Text(text.to_owned()),
            (None, Given::Value(v)) => DefaultValue::Value(render(v)),
            (None, Given::Unset) => DefaultValue::Unset,
            (None, Given::Required) => DefaultValue::Required,
        };
        out.push(self.entry(ty.to_owned(), default));
    }

    fn entry(&self, ty: String, default: DefaultValue) -> Entry {
        let (key, table) = self.path.split_last().expect("an entry has a key");
        Entry {
            table: table.join("."),
            key: (*key).to_owned(),
            ty,
            default,
            doc: self.doc.to_owned(),
        }
    }
}

/// One key of the reference.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The table holding it, dotted (`sagas`, `archive`); empty at the top of the file.
    pub table: String,
    pub key: String,
    /// `integer`, `string`, `path`, `"text" | "json"`, `list of string`, … or `table`.
    #[serde(rename = "type")]
    pub ty: String,
    pub default: DefaultValue,
    pub doc: String,
}

impl Entry {
    pub fn is_table(&self) -> bool {
        self.ty == "table"
    }

    /// `table.key`, or `key` at the top.
    pub fn path(&self) -> String {
        if self.table.is_empty() {
            self.key.clone()
        } else {
            format!("{}.{}", self.table, self.key)
        }
    }
}

/// A key's default as the reference states it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum DefaultValue {
    /// The value the code takes, as TOML.
    Value(String),
    /// Written by hand in the struct (`#[config(default_text = "…")]`).
    Text(String),
    /// Absent means "none": the feature is off or another key decides.
    Unset,
    /// The file (or, inside a table, the table) must give it.
    Required,
}

impl std::fmt::Display for DefaultValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DefaultValue::Value(v) | DefaultValue::Text(v) => f.write_str(v),
            DefaultValue::Unset => f.write_str("none"),
            DefaultValue::Required => f.write_str("required"),
        }
    }
}

/// The reference as text: the top-level keys, then each table with its keys; every key with its
/// type, default and doc comment.
pub fn render_text(title: &str, entries: &[Entry]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let keys_of = |out: &mut String, table: &str| {
        for e in entries.iter().filter(|e| e.table == table && !e.is_table()) {
            let _ = writeln!(out, "\n{} = {}  ({})", e.key, e.default, e.ty);
            wrap(out, &e.doc, "    ");
        }
    };
    keys_of(&mut out, "");
    for table in entries.iter().filter(|e| e.is_table()) {
        let name = table.path();
        let absent = match &table.default {
            DefaultValue::Unset => " (optional)",
            _ => "",
        };
        let _ = writeln!(out, "\n[{name}]{absent}");
        wrap(&mut out, &table.doc, "# ");
        keys_of(&mut out, &name);
    }
    out
}

/// Prints the reference on stdout, as text or as one JSON array.
pub fn print(title: &str, entries: &[Entry], json: bool) -> std::process::ExitCode {
    let text = if json {
        serde_json::to_string_pretty(entries).expect("entries serialize") + "\n"
    } else {
        render_text(title, entries)
    };
    print!("{text}");
    std::process::ExitCode::SUCCESS
}

/// `text` in lines of at most 96 characters, each starting with `indent`.
fn wrap(out: &mut String, text: &str, indent: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > 96 {
            out.push_str(indent);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(indent);
        out.push_str(&line);
        out.push('\n');
    }
}

/// Values written as themselves (`Display`) in TOML.
macro_rules! plain {
    ($ty:literal: $($t:ty),*) => {$(
        impl ConfigDoc for $t {
            fn document(place: &Place, given: Given<'_, Self>, out: &mut Vec<Entry>) {
                place.value($ty, given, |v| v.to_string(), out);
            }
        }
    )*};
}
plain!("integer": u16, u32, u64, usize, i32, i64);
plain!("boolean": bool);

/// A TOML basic string.
fn quoted(s: &str) -> String {
    format!("{s:?}")
}

impl ConfigDoc for String {
    fn document(place: &Place, given: Given<'_, Self>, out: &mut Vec<Entry>) {
        place.value("string", given, |v| quoted(v), out);
    }
}

impl ConfigDoc for PathBuf {
    fn document(place: &Place, given: Given<'_, Self>, out: &mut Vec<Entry>) {
        place.value("path", given, |v| quoted(&v.display().to_string()), out);
    }
}

impl ConfigDoc for SocketAddr {
    fn document(place: &Place, given: Given<'_, Self>, out: &mut Vec<Entry>) {
        place.value(
            "address (host:port)",
            given,
            |v| quoted(&v.to_string()),
            out,
        );
    }
}

impl ConfigDoc for chrono_tz::Tz {
    fn document(place: &Place, given: Given<'_, Self>, out: &mut Vec<Entry>) {
        place.value("IANA time zone", given, |v| quoted(v.name()), out);
    }
}

impl<T: ConfigDoc> ConfigDoc for Option<T> {
    fn document(place: &Place, given: Given<'_, Self>, out: &mut Vec<Entry>) {
        let given = match given {
            Given::Value(Some(v)) => Given::Value(v),
            _ => Given::Unset,
        };
        T::document(place, given, out);
    }
}

impl<T: ConfigDoc> ConfigDoc for Vec<T> {
    fn document(place: &Place, given: Given<'_, Self>, out: &mut Vec<Entry>) {
        // An element's own entry says its type and how one is written.
        let element = Place {
            path: place.path.clone(),
            doc: "",
            default_text: None,
        };
        let one = |item: Given<'_, T>| {
            let mut entries = Vec::new();
            T::document(&element, item, &mut entries);
            entries.into_iter().next()
        };
        let ty =
            one(Given::Required).map_or_else(|| "list".to_owned(), |e| format!("list of {}", e.ty));
        let render = |v: &Vec<T>| {
            let items: Vec<String> = v
                .iter()
                .map(|item| {
                    one(Given::Value(item))
                        .map(|e| e.default.to_string())
                        .unwrap_or_default()
                })
                .collect();
            format!("[{}]", items.join(", "))
        };
        place.value(&ty, given, render, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(ConfigDoc, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct File {
        /// The address.
        /// Second line.
        #[serde(default = "default_listen")]
        listen: SocketAddr,
        /// Must be given.
        name: String,
        /// Optional.
        #[serde(default)]
        url: Option<String>,
        /// Defaults to empty.
        #[serde(default)]
        peers: Vec<String>,
        #[serde(default)]
        #[config(default_text = "<hostname>")]
        instance: Option<String>,
        #[serde(default)]
        format: Format,
        /// A table with its own defaults.
        #[serde(default)]
        inner: Inner,
        /// An optional table.
        #[serde(default)]
        tls: Option<Tls>,
    }

    #[derive(ConfigDoc, serde::Deserialize, PartialEq, Default)]
    #[serde(rename_all = "lowercase")]
    enum Format {
        #[default]
        Text,
        Json,
    }

    #[derive(ConfigDoc, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    #[allow(dead_code)]
    struct Inner {
        /// How often.
        every_ms: u64,
    }
    impl Default for Inner {
        fn default() -> Self {
            Inner { every_ms: 500 }
        }
    }

    #[derive(ConfigDoc, serde::Deserialize)]
    #[allow(dead_code)]
    struct Tls {
        cert_file: PathBuf,
        #[serde(default)]
        ca_file: Option<PathBuf>,
    }

    fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7400))
    }

    fn find<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
        entries
            .iter()
            .find(|e| e.path() == path)
            .unwrap_or_else(|| panic!("no {path} in {entries:#?}"))
    }

    #[test]
    fn every_key_has_its_type_default_and_doc_from_the_struct() {
        let entries = reference::<File>();
        let listen = find(&entries, "listen");
        assert_eq!(
            (listen.ty.as_str(), &listen.default),
            (
                "address (host:port)",
                &DefaultValue::Value("\"127.0.0.1:7400\"".into())
            )
        );
        assert_eq!(listen.doc, "The address. Second line.");
        assert_eq!(find(&entries, "name").default, DefaultValue::Required);
        assert_eq!(find(&entries, "url").default, DefaultValue::Unset);
        let peers = find(&entries, "peers");
        assert_eq!(
            (peers.ty.as_str(), &peers.default),
            ("list of string", &DefaultValue::Value("[]".into()))
        );
        assert_eq!(
            find(&entries, "instance").default,
            DefaultValue::Text("<hostname>".into())
        );
        let format = find(&entries, "format");
        assert_eq!(
            (format.ty.as_str(), &format.default),
            (
                "\"text\" | \"json\"",
                &DefaultValue::Value("\"text\"".into())
            )
        );
        assert_eq!(find(&entries, "inner").ty, "table");
        assert_eq!(
            find(&entries, "inner.every_ms").default,
            DefaultValue::Value("500".into())
        );
        assert_eq!(find(&entries, "tls").default, DefaultValue::Unset);
        assert_eq!(
            find(&entries, "tls.cert_file").default,
            DefaultValue::Required,
            "required once the table is there"
        );
        assert_eq!(find(&entries, "tls.ca_file").default, DefaultValue::Unset);
        assert_eq!(entries.len(), 11);
    }

    #[test]
    fn text_lists_top_level_keys_before_tables() {
        let text = render_text("title", &reference::<File>());
        let listen = text
            .find("listen = \"127.0.0.1:7400\"  (address (host:port))")
            .expect(&text);
        let inner = text.find("\n[inner]\n# A table with its own defaults.\n\nevery_ms = 500  (integer)\n    How often.").expect(&text);
        let format = text.find("format = \"text\"").expect(&text);
        assert!(listen < inner && format < inner, "{text}");
        assert!(text.contains("[tls] (optional)"), "{text}");
    }
}
