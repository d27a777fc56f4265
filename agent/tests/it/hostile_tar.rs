//! Hostile tar archives, one table for both restores: `warm_safety` plants each case as a
//! volume's tar, `archive::hostile` uploads it zstd-compressed. Names, link targets, sizes
//! and sparse maps are written byte for byte, as an attacker would (the tar crate's writer
//! would refuse most of them).

use std::io::{self, Read, Write};
use std::path::PathBuf;

use tar::{EntryType, GnuExtSparseHeader, Header};

/// One raw tar entry.
pub enum Item {
    File(Vec<u8>, Vec<u8>),
    Dir(Vec<u8>),
    Symlink(Vec<u8>, Vec<u8>),
    HardLink(Vec<u8>, Vec<u8>),
    /// A regular file of this many zeros.
    Zeros(Vec<u8>, u64),
    /// A character device (major 1, minor 3: /dev/null's numbers).
    Device(Vec<u8>),
    /// A regular file with this mode.
    Mode(Vec<u8>, u32),
    /// An entry of this type, without data.
    Typed(Vec<u8>, EntryType),
    /// A regular file whose header says `declared` bytes, followed by only `data`, and the
    /// end of the archive.
    Lying(Vec<u8>, u64, Vec<u8>),
    /// A PAX (`x`) or GNU long name (`L`) record whose header says `declared` bytes, of
    /// which `present` follow (`x` bytes), then (if all were present) a file `./f`.
    Record(EntryType, u64, u64),
    /// A GNU sparse file of size `real`: each region `(offset, length)` holds `d` bytes,
    /// holes are zeros; `stored` overrides the header's size (the regions' total).
    Sparse {
        name: Vec<u8>,
        real: u64,
        regions: Vec<(u64, u64)>,
        stored: Option<u64>,
    },
}

pub fn file(name: impl AsRef<[u8]>, data: &[u8]) -> Item {
    Item::File(name.as_ref().to_vec(), data.to_vec())
}

pub fn dir(name: impl AsRef<[u8]>) -> Item {
    Item::Dir(name.as_ref().to_vec())
}

pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Item {
    Item::Symlink(name.as_ref().to_vec(), target.as_ref().to_vec())
}

pub fn hard_link(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Item {
    Item::HardLink(name.as_ref().to_vec(), target.as_ref().to_vec())
}

pub fn sparse(name: &str, real: u64, regions: &[(u64, u64)]) -> Item {
    Item::Sparse {
        name: name.into(),
        real,
        regions: regions.to_vec(),
        stored: None,
    }
}

/// The bytes of a sparse file with `regions` of `d` and holes of zeros.
pub fn sparse_contents(real: u64, regions: &[(u64, u64)]) -> Vec<u8> {
    let mut out = vec![0u8; real as usize];
    for &(off, len) in regions {
        out[off as usize..(off + len) as usize].fill(b'd');
    }
    out
}

fn header(name: &[u8], kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_size(size);
    h
}

fn put(out: &mut impl Write, mut h: Header, data: &mut dyn Read, size: u64) -> io::Result<()> {
    h.set_cksum();
    out.write_all(h.as_bytes())?;
    let copied = io::copy(&mut data.take(size), out)?;
    assert_eq!(copied, size, "the item's data");
    out.write_all(&vec![0; ((512 - size % 512) % 512) as usize])
}

/// Writes `items` as a tar stream into `out`.
pub fn write_tar(out: &mut impl Write, items: &[Item]) -> io::Result<()> {
    for item in items {
        match item {
            Item::File(name, data) => {
                let h = header(name, EntryType::Regular, data.len() as u64);
                put(out, h, &mut data.as_slice(), data.len() as u64)?;
            }
            Item::Zeros(name, size) => {
                let h = header(name, EntryType::Regular, *size);
                put(out, h, &mut io::repeat(0), *size)?;
            }
            Item::Dir(name) => {
                let mut h = header(name, EntryType::Directory, 0);
                h.set_mode(0o755);
                put(out, h, &mut io::empty(), 0)?;
            }
            Item::Device(name) => {
                let mut h = header(name, EntryType::Char, 0);
                h.set_device_major(1)?;
                h.set_device_minor(3)?;
                put(out, h, &mut io::empty(), 0)?;
            }
            Item::Mode(name, mode) => {
                let mut h = header(name, EntryType::Regular, 2);
                h.set_mode(*mode);
                put(out, h, &mut &b"#!"[..], 2)?;
            }
            Item::Typed(name, kind) => put(out, header(name, *kind, 0), &mut io::empty(), 0)?,
            Item::Symlink(name, target) | Item::HardLink(name, target) => {
                let kind = match item {
                    Item::Symlink(..) => EntryType::Symlink,
                    _ => EntryType::Link,
                };
                let mut h = header(name, kind, 0);
                h.as_gnu_mut().unwrap().linkname[..target.len()].copy_from_slice(target);
                put(out, h, &mut io::empty(), 0)?;
            }
            Item::Lying(name, declared, data) => {
                let mut h = header(name, EntryType::Regular, *declared);
                h.set_cksum();
                out.write_all(h.as_bytes())?;
                out.write_all(data)?;
                return Ok(()); // the archive ends here
            }
            Item::Record(kind, declared, present) => {
                let name: &[u8] = if kind.is_gnu_longname() {
                    b"././@LongLink"
                } else {
                    b"././@PaxHeader"
                };
                let mut h = header(name, *kind, *declared);
                h.set_cksum();
                out.write_all(h.as_bytes())?;
                io::copy(&mut io::repeat(b'x').take(*present), out)?;
                if present < declared {
                    return Ok(());
                }
                out.write_all(&vec![0; ((512 - declared % 512) % 512) as usize])?;
                put(
                    out,
                    header(b"./f", EntryType::Regular, 1),
                    &mut &b"f"[..],
                    1,
                )?;
            }
            Item::Sparse {
                name,
                real,
                regions,
                stored,
            } => {
                let total: u64 = regions.iter().map(|r| r.1).sum();
                let size = stored.unwrap_or(total);
                let mut h = header(name, EntryType::GNUSparse, size);
                let gnu = h.as_gnu_mut().unwrap();
                for (slot, (off, len)) in gnu.sparse.iter_mut().zip(regions) {
                    slot.set_offset(*off);
                    slot.set_length(*len);
                }
                gnu.set_real_size(*real);
                gnu.set_is_extended(regions.len() > 4);
                h.set_cksum();
                out.write_all(h.as_bytes())?;
                let rest: Vec<_> = regions.iter().skip(4).collect();
                let chunks: Vec<_> = rest.chunks(21).collect();
                for (i, chunk) in chunks.iter().enumerate() {
                    let mut ext = GnuExtSparseHeader::new();
                    for (slot, (off, len)) in ext.sparse.iter_mut().zip(chunk.iter()) {
                        slot.set_offset(*off);
                        slot.set_length(*len);
                    }
                    ext.isextended[0] = u8::from(i + 1 < chunks.len());
                    out.write_all(ext.as_bytes())?;
                }
                io::copy(&mut io::repeat(b'd').take(size), out)?;
                out.write_all(&vec![0; ((512 - size % 512) % 512) as usize])?;
            }
        }
    }
    out.write_all(&[0; 1024])
}

pub fn tar(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    write_tar(&mut out, items).unwrap();
    out
}

pub fn tar_zst(items: &[Item]) -> Vec<u8> {
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    write_tar(&mut encoder, items).unwrap();
    encoder.finish().unwrap()
}

/// A hostile archive, the substring its refusal gives, and the entry it names.
pub struct Case {
    pub name: &'static str,
    pub items: Vec<Item>,
    pub reason: &'static str,
    pub entry: Vec<u8>,
}

/// The name of files that must never appear outside the target, unique to one run.
pub fn escaped(tag: &str) -> String {
    format!("escaped-{tag}")
}

/// A directory outside every target that links point into; it must stay empty.
pub fn outside_dir(tag: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/berth-outside-{tag}"))
}

/// Every hostile case both restores refuse, naming the entry; `tag` keeps the names that
/// would land outside unique to one run.
pub fn cases(tag: &str) -> Vec<Case> {
    let esc = escaped(tag);
    let out = outside_dir(tag);
    let out = out.to_str().unwrap();
    let case = |name, items, reason, entry: &str| Case {
        name,
        items,
        reason,
        entry: entry.as_bytes().to_vec(),
    };
    let up = format!("../{esc}");
    let up2 = format!("./../../{esc}");
    let up_inside = format!("./a/../../{esc}");
    let absolute = format!("{out}/{esc}");
    let via = |link: &str| format!("{link}/{esc}");
    let mut non_utf8 = b"../caf\xe9-".to_vec();
    non_utf8.extend_from_slice(esc.as_bytes());
    let mut cases = vec![
        case(
            "dot-dot",
            vec![dir("./"), file(&up, b"x")],
            "climbs out with '..'",
            &up,
        ),
        case("dot-dot deeper", vec![file(&up2, b"x")], "'..'", &up2),
        case(
            "dot-dot inside",
            vec![file(&up_inside, b"x")],
            "'..'",
            &up_inside,
        ),
        case(
            "absolute",
            vec![file(&absolute, b"x")],
            "is an absolute path",
            &absolute,
        ),
        case(
            "through a symlink out",
            vec![symlink("out", "../.."), file(via("out"), b"x")],
            "goes through \"out\", which is a symlink",
            &via("out"),
        ),
        case(
            "through an absolute symlink",
            vec![symlink("abs", out), file(via("abs"), b"x")],
            "goes through \"abs\"",
            &via("abs"),
        ),
        case(
            "through a symlink inside",
            vec![dir("d/"), symlink("in", "d"), file(via("in"), b"x")],
            "goes through \"in\"",
            &via("in"),
        ),
        case(
            "a directory through a symlink",
            vec![symlink("abs", out), dir(format!("{}/", via("abs")))],
            "goes through \"abs\"",
            &format!("{}/", via("abs")),
        ),
        case(
            "through a chain of symlinks",
            vec![
                dir("s/t/"),
                symlink("s/t/l", "../../u"),
                symlink("m", "s/t/l/../.."),
                file(via("m"), b"x"),
            ],
            "goes through \"m\"",
            &via("m"),
        ),
        case(
            "hard link out",
            vec![hard_link("pw", "../../etc/hostname")],
            "is a hard link to \"../../etc/hostname\", which climbs out with '..'",
            "pw",
        ),
        case(
            "hard link absolute",
            vec![hard_link("pw", "/etc/passwd")],
            "is a hard link to \"/etc/passwd\", which is an absolute path",
            "pw",
        ),
        case(
            "hard link through a symlink",
            vec![symlink("etc", "/etc"), hard_link("pw", "etc/passwd")],
            "is a hard link through \"etc\"",
            "pw",
        ),
        case(
            "hard link to a symlink out",
            vec![symlink("pwl", "/etc/passwd"), hard_link("pw", "pwl")],
            "is a hard link to the symlink \"pwl\", which leads outside",
            "pw",
        ),
        case(
            "hard link to a symlink that leads out from the link's place",
            vec![
                dir("a/b/"),
                file("x", b"x"),
                symlink("a/b/l", "../../x"),
                hard_link("hl", "a/b/l"),
            ],
            "which leads outside",
            "hl",
        ),
        case(
            "hard link to a later entry",
            vec![hard_link("early", "late"), file("late", b"x")],
            "which is not extracted before it",
            "early",
        ),
        case(
            "symlink over the root",
            vec![symlink("./", "/")],
            "replaces the root",
            "./",
        ),
        case(
            "file over the root",
            vec![file("./", b"x")],
            "replaces the root",
            "./",
        ),
        case(
            "PAX bomb",
            vec![Item::Record(EntryType::XHeader, 2 << 30, 0)],
            "is a long name or PAX record of 2147483648 bytes",
            "././@PaxHeader",
        ),
        case(
            "long name bomb",
            vec![Item::Record(EntryType::GNULongName, 2 << 30, 0)],
            "is a long name or PAX record of 2147483648 bytes",
            "././@LongLink",
        ),
        case(
            "non-UTF-8 name climbing out",
            vec![Item::File(non_utf8.clone(), b"x".to_vec())],
            "climbs out with '..'",
            "",
        ),
        case(
            "lying size",
            vec![
                file("ok", b"x"),
                Item::Lying(b"big".to_vec(), 4096, b"only this".to_vec()),
            ],
            "is cut short: its header says 4096 bytes but the archive ends after 9",
            "big",
        ),
        case(
            "lying size of a long name",
            vec![Item::Record(EntryType::GNULongName, 1000, 10)],
            "is cut short",
            "././@LongLink",
        ),
        case(
            "sparse region past its end",
            vec![sparse("sp", 1000, &[(0, 512), (2048, 512)])],
            "with a region past its real size of 1000 bytes",
            "sp",
        ),
        case(
            "sparse map larger than its data",
            vec![Item::Sparse {
                name: b"sp".to_vec(),
                real: 4096,
                regions: vec![(0, 512), (1024, 512)],
                stored: Some(512),
            }],
            "whose map holds 1024 bytes but whose header stores 512",
            "sp",
        ),
        case(
            "sparse regions out of order",
            vec![sparse("sp", 4096, &[(1024, 512), (0, 512)])],
            "regions overlap or are out of order",
            "sp",
        ),
        case(
            "an entry type nothing restores",
            vec![Item::Typed(b"odd".to_vec(), EntryType::new(b'Z'))],
            "has an entry type no restore makes",
            "odd",
        ),
    ];
    cases
        .iter_mut()
        .find(|c| c.name == "non-UTF-8 name climbing out")
        .unwrap()
        .entry = non_utf8;
    cases
}

/// How a restore's error shows an entry's name: invalid UTF-8 as `\xNN`, then `{:?}`.
pub fn shown(name: &[u8]) -> String {
    let mut out = String::new();
    for chunk in name.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    format!("{out:?}")
}
