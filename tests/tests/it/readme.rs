//! Every `berth` command the README shows (in its ```bash blocks) is one the CLI accepts: the
//! same subcommands, flags and argument shapes. A README that drifts from the CLI fails here.
//! Placeholders (`SAGA_ID`, `DROPLET_ID`, …) are given sample values, `a|b` alternatives and
//! `[optional]` parts are each tried.

use berth_cli::Cli;
use clap::Parser;

/// Sample values for the README's placeholders, as the CLI would be given them.
const PLACEHOLDERS: &[(&str, &str)] = &[
    ("SAGA_ID", "0197a0c2-0000-7000-8000-000000000001"),
    ("UUID", "0197a0c2-0000-7000-8000-000000000002"),
    ("DROPLET_ID", "123456"),
    ("STEP_INDEX", "2"),
    ("TOKEN_ID", "t-1"),
    ("DRIFT_ID", "d-1"),
    ("TAG", "team:ops"),
];

/// The README's `berth …` command lines, continuations joined and comments cut.
fn documented() -> Vec<String> {
    let readme = std::fs::read_to_string(berth_tests::bin::workspace_root().join("README.md"))
        .expect("README.md");
    let mut in_bash = false;
    let bash = readme.lines().filter(|line| {
        if line.starts_with("```") {
            in_bash = *line == "```bash";
            return false;
        }
        in_bash
    });
    joined(bash, |line| line.starts_with("berth "))
}

/// Shell lines trimmed, a line ending in `\` joined with the next; a command begins only at a
/// line `starts` accepts (others between commands are skipped).
pub fn joined<'a>(
    lines: impl Iterator<Item = &'a str>,
    starts: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut commands = Vec::new();
    let mut pending = String::new();
    for line in lines.map(str::trim) {
        if pending.is_empty() && !starts(line) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    commands
}

/// Splits like a shell: quotes group, a word starting with `#` ends the line.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut word, mut quote, mut started) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, '#') if !started => break,
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

/// Each concrete command a documented line stands for: `a|b` words and `X | Y` tails are
/// alternatives, `[…]` parts are tried with and without.
fn variants(words: &[String]) -> Vec<Vec<String>> {
    let mut all: Vec<Vec<String>> = vec![Vec::new()];
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if w == "|" {
            // `berth archive delete UUID | --all-of wiki`: the rest replaces the word before.
            let mut other: Vec<Vec<String>> = all
                .iter()
                .map(|v| v[..v.len().saturating_sub(1)].to_vec())
                .collect();
            for v in &mut other {
                v.extend(words[i + 1..].iter().cloned());
            }
            all.extend(other);
            break;
        }
        if let Some(inner) = w.strip_prefix('[') {
            let mut part = vec![inner.to_owned()];
            while !part.last().is_some_and(|p| p.ends_with(']')) && i + 1 < words.len() {
                i += 1;
                part.push(words[i].clone());
            }
            if let Some(last) = part.last_mut() {
                *last = last.trim_end_matches(']').to_owned();
            }
            let without = all.clone();
            for v in &mut all {
                v.extend(part.iter().cloned());
            }
            all.extend(without);
        } else if w.contains('|') && !w.contains('"') {
            let mut next = Vec::new();
            for v in &all {
                for alt in w.split('|') {
                    let mut v = v.clone();
                    v.push(alt.to_owned());
                    next.push(v);
                }
            }
            all = next;
        } else {
            let value = PLACEHOLDERS
                .iter()
                .find(|(name, _)| *name == w)
                .map_or(w.as_str(), |(_, v)| v);
            for v in &mut all {
                v.push(value.to_owned());
            }
        }
        i += 1;
    }
    all
}

#[test]
fn every_berth_command_in_the_readme_parses() {
    let lines = documented();
    assert!(lines.len() >= 40, "only {} commands found", lines.len());
    let mut refused = Vec::new();
    let mut tried = 0;
    for line in &lines {
        for argv in variants(&words(line)) {
            tried += 1;
            if let Err(e) = Cli::try_parse_from(&argv) {
                let first = e.to_string().lines().next().unwrap_or_default().to_owned();
                refused.push(format!("{line}\n    as {argv:?}\n    {first}"));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "{} of {tried} documented commands are refused by the CLI:\n{}",
        refused.len(),
        refused.join("\n")
    );
}

#[test]
fn the_readme_splitter_reads_quotes_comments_and_alternatives() {
    let w = words(r#"berth a --x '{"k": 1}' "two words" # note"#);
    assert_eq!(w, ["berth", "a", "--x", r#"{"k": 1}"#, "two words"]);
    let v = variants(&words("berth sagas cancel|retry SAGA_ID"));
    assert_eq!(v.len(), 2);
    assert_eq!(v[1][2], "retry");
    assert_eq!(v[1][3], PLACEHOLDERS[0].1);
    let v = variants(&words("berth droplet list [--tag TAG] [--all]"));
    assert_eq!(v.len(), 4);
    let v = variants(&words("berth archive delete UUID | --all-of wiki"));
    assert_eq!(v[1], ["berth", "archive", "delete", "--all-of", "wiki"]);
}
