//! An entry as restores see it, parsed once from a [`Head`]: its name cleaned (never
//! absolute, never `..`), its kind with what the kind needs (a symlink's target as written, a
//! hard link's cleaned target, a device number, a sparse map) and its attributes.

use rustix::fs::Timespec;
use tar::EntryType;

use super::read::{Head, Sparse};
use super::tree::Attrs;
use super::{UntarError, shown};

/// A name inside the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    /// As written in the archive.
    pub raw: Vec<u8>,
    /// Cleaned: components without `.` or empty ones, joined by `/`; empty for the root.
    pub rel: Vec<u8>,
}

impl Name {
    /// Cleans `raw`; `Err` says why it cannot be a name inside the target.
    pub fn parse(raw: &[u8]) -> Result<Name, &'static str> {
        if raw.first() == Some(&b'/') {
            return Err("is an absolute path");
        }
        if raw.contains(&0) {
            return Err("has a NUL byte in its name");
        }
        let mut rel = Vec::with_capacity(raw.len());
        for part in raw.split(|b| *b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => return Err("climbs out with '..'"),
                part => {
                    if !rel.is_empty() {
                        rel.push(b'/');
                    }
                    rel.extend_from_slice(part);
                }
            }
        }
        Ok(Name {
            raw: raw.to_vec(),
            rel,
        })
    }

    pub fn is_root(&self) -> bool {
        self.rel.is_empty()
    }

    /// The parent's cleaned path and the last component (empty for the root).
    pub fn split(&self) -> (&[u8], &[u8]) {
        match self.rel.iter().rposition(|b| *b == b'/') {
            Some(i) => (&self.rel[..i], &self.rel[i + 1..]),
            None => (&[], &self.rel),
        }
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Sparse(Sparse),
    /// A symlink and its target, as written (kept as data, never followed).
    Symlink(Vec<u8>),
    /// A hard link to an entry extracted before it.
    HardLink(Name),
    Fifo,
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
}

/// One entry to extract.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: Name,
    pub kind: Kind,
    pub attrs: Attrs,
}

impl Entry {
    /// The entry `head` describes; `None` for what restores skip (a GNU volume label).
    /// Refuses names that leave the target, a root that is not a directory, hard links
    /// whose target leaves it, and entry types no restore makes.
    pub fn parse(head: &Head) -> Result<Option<Entry>, UntarError> {
        let raw = &head.path;
        let refuse = |why: String| UntarError::refused(raw, why);
        let name = Name::parse(raw).map_err(|why| refuse(why.into()))?;
        let h = &head.header;
        let device = || -> Result<(u32, u32), UntarError> {
            let bad = |_| refuse("has an unreadable device number".into());
            Ok((
                h.device_major().map_err(bad)?.unwrap_or(0),
                h.device_minor().map_err(bad)?.unwrap_or(0),
            ))
        };
        let kind = match h.entry_type() {
            EntryType::Directory => Kind::Dir,
            EntryType::Regular | EntryType::Continuous => Kind::File,
            EntryType::GNUSparse => Kind::Sparse(
                head.sparse
                    .clone()
                    .ok_or_else(|| refuse("is a sparse file without a sparse map".into()))?,
            ),
            EntryType::Symlink => match &head.link {
                Some(target) if !target.is_empty() && !target.contains(&0) => {
                    Kind::Symlink(target.clone())
                }
                _ => return Err(refuse("is a symlink without a usable target".into())),
            },
            EntryType::Link => {
                let target = head.link.clone().unwrap_or_default();
                let to = Name::parse(&target).map_err(|why| {
                    refuse(format!(
                        "is a hard link to {:?}, which {why}",
                        shown(&target)
                    ))
                })?;
                if to.is_root() {
                    return Err(refuse("is a hard link to the root".into()));
                }
                if to.rel == name.rel {
                    return Err(refuse("is a hard link to itself".into()));
                }
                Kind::HardLink(to)
            }
            EntryType::Fifo => Kind::Fifo,
            EntryType::Char => {
                let (major, minor) = device()?;
                Kind::Char { major, minor }
            }
            EntryType::Block => {
                let (major, minor) = device()?;
                Kind::Block { major, minor }
            }
            // A GNU volume label says nothing about files.
            other if other.as_byte() == b'V' => return Ok(None),
            other => {
                return Err(refuse(format!(
                    "has an entry type no restore makes ({other:?})"
                )));
            }
        };
        if name.is_root() && kind != Kind::Dir {
            return Err(refuse(
                "replaces the root, which only a directory may".into(),
            ));
        }
        let attrs = attrs(head).map_err(|why| refuse(why.into()))?;
        Ok(Some(Entry { name, kind, attrs }))
    }
}

/// Mode, owner, mtime and xattrs, with PAX `uid`, `gid`, `mtime` (nanoseconds kept) and
/// `SCHILY.xattr.*` records applied.
fn attrs(head: &Head) -> Result<Attrs, &'static str> {
    let h = &head.header;
    let id = |v: u64| u32::try_from(v).map_err(|_| "has an owner id over 32 bits");
    let mut attrs = Attrs {
        mode: h.mode().map_err(|_| "has an unreadable mode")? & 0o7777,
        uid: id(h.uid().map_err(|_| "has an unreadable owner")?)?,
        gid: id(h.gid().map_err(|_| "has an unreadable group")?)?,
        mtime: Timespec {
            tv_sec: i64::try_from(h.mtime().map_err(|_| "has an unreadable mtime")?)
                .unwrap_or(i64::MAX),
            tv_nsec: 0,
        },
        xattrs: Vec::new(),
    };
    let number = |v: &[u8]| std::str::from_utf8(v).ok()?.parse::<u64>().ok();
    for (key, value) in &head.pax {
        match key.as_slice() {
            b"uid" => attrs.uid = id(number(value).ok_or("has an unreadable PAX uid")?)?,
            b"gid" => attrs.gid = id(number(value).ok_or("has an unreadable PAX gid")?)?,
            b"mtime" => {
                if let Some(t) = std::str::from_utf8(value).ok().and_then(parse_pax_time) {
                    attrs.mtime = t;
                }
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    attrs.xattrs.push((name.to_vec(), value.clone()));
                }
            }
        }
    }
    Ok(attrs)
}

/// A PAX time: seconds with an optional fraction, e.g. `1714566896.123456789`.
fn parse_pax_time(v: &str) -> Option<Timespec> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let tv_nsec = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    if tv_sec < 0 {
        return None;
    }
    Some(Timespec { tv_sec, tv_nsec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_or_refused() {
        let rel = |raw: &[u8]| Name::parse(raw).map(|n| n.rel);
        assert_eq!(rel(b"./").unwrap(), b"");
        assert_eq!(rel(b".").unwrap(), b"");
        assert_eq!(rel(b"./a//b/./c/").unwrap(), b"a/b/c");
        assert_eq!(rel(b"caf\xe9/x").unwrap(), b"caf\xe9/x");
        assert_eq!(rel(b"../x"), Err("climbs out with '..'"));
        assert_eq!(rel(b"./a/../../x"), Err("climbs out with '..'"));
        assert_eq!(rel(b"a/.."), Err("climbs out with '..'"));
        assert_eq!(rel(b"/etc/passwd"), Err("is an absolute path"));
        assert_eq!(rel(b"a\0b"), Err("has a NUL byte in its name"));
        let n = Name::parse(b"./a/b/c").unwrap();
        assert_eq!(n.split(), (&b"a/b"[..], &b"c"[..]));
        let n = Name::parse(b"c").unwrap();
        assert_eq!(n.split(), (&b""[..], &b"c"[..]));
    }

    #[test]
    fn pax_times_keep_nanoseconds() {
        let t = parse_pax_time("1714566896.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_714_566_896, 500_000_000));
        let t = parse_pax_time("12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        assert!(parse_pax_time("x").is_none());
    }
}
