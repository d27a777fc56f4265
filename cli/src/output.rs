//! How results are shown: `--output table|json`, aligned tables, key/value blocks, times,
//! durations and sizes. Every table cell and field value has its control characters escaped
//! ([`escape_controls`]): agents and callers write hostnames, errors and phases, and an ESC
//! sequence in one must not drive the operator's terminal.

use std::io::{self, Write};

use serde::Serialize;

/// `--output`: a table for people, JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

/// Writes `value` as pretty JSON followed by a newline.
pub fn write_json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// A table whose columns are padded to their widest cell, two spaces apart.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; empty cells show as `-` so columns stay readable by eye and by `awk`.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        let cells = cells
            .into_iter()
            .map(|c| {
                if c.is_empty() {
                    "-".to_owned()
                } else {
                    escape_controls(&c).into_owned()
                }
            })
            .collect();
        self.rows.push(cells);
    }

    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let headers: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.extend(std::iter::repeat_n(' ', w - width(cell) + 2));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Writes `label: value` lines with the values aligned; `indent` spaces before each label.
pub fn write_fields(
    out: &mut dyn Write,
    indent: usize,
    fields: &[(&str, String)],
) -> io::Result<()> {
    let label_width = fields.iter().map(|(k, _)| width(k) + 1).max().unwrap_or(0);
    for (label, value) in fields {
        let value = if value.is_empty() {
            "-".into()
        } else {
            escape_controls(value)
        };
        let label = format!("{label}:");
        writeln!(out, "{:indent$}{label:<label_width$}  {value}", "")?;
    }
    Ok(())
}

/// Display width of a cell: characters, which is right for the ASCII we print.
/// `s` with every control character (C0, DEL, C1: ESC, CR, newline, tab, …) written as a
/// visible escape (`\x1b`, `\n`, `\u{9b}`), so it prints as text on one line.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

fn width(s: &str) -> usize {
    s.chars().count()
}

pub use berth_shared::human::{human_bytes, human_duration_ms, relative_time, utc_time};

/// When a step's latest attempt began (0: never ran); a coordinator before schema 14 sends
/// only the first attempt's start.
pub fn attempt_start(st: &berth_proto::v1::SagaStep) -> i64 {
    if st.attempt_started_at_ms > 0 {
        st.attempt_started_at_ms
    } else {
        st.started_at_ms
    }
}

/// `s` on one line, cut to at most `max` characters with a trailing `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &Table) -> String {
        let mut buf = Vec::new();
        t.write(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn control_characters_are_escaped_in_cells_and_fields() {
        assert_eq!(escape_controls("plain-host"), "plain-host");
        assert_eq!(
            escape_controls("evil\x1b[31mred\x07\r\n\u{9b}2J"),
            "evil\\x1b[31mred\\x07\\r\\n\\u{9b}2J"
        );
        let mut t = Table::new(&["HOST"]);
        t.row(vec!["a\x1b[2Jb".into()]);
        let text = render(&t);
        assert!(
            !text.contains('\x1b') && text.contains("a\\x1b[2Jb"),
            "{text}"
        );
        let mut out = Vec::new();
        write_fields(&mut out, 0, &[("error", "x\x1b]0;pwned\x07".into())]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text}");
    }

    #[test]
    fn tables_align_columns_and_mark_empty_cells() {
        let mut t = Table::new(&["ID", "NAME", "NOTE"]);
        t.row(vec!["a".into(), "longer-name".into(), "x".into()]);
        t.row(vec!["bbbb".into(), String::new(), String::new()]);
        assert_eq!(
            render(&t),
            "ID    NAME         NOTE\n\
             a     longer-name  x\n\
             bbbb  -            -\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(render(&Table::new(&["A", "B"])), "A  B\n");
    }

    #[test]
    fn fields_align_their_values() {
        let mut buf = Vec::new();
        write_fields(
            &mut buf,
            2,
            &[("os", "Debian".into()), ("kernel", String::new())],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "  os:      Debian\n  kernel:  -\n"
        );
    }

    #[test]
    fn truncation_keeps_one_line_and_marks_the_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("a\n  b", 10), "a b");
        assert_eq!(truncate("abcdefghijkl", 6), "abcde…");
        assert_eq!(truncate("abcdefghijkl", 6).chars().count(), 6);
    }
}
