//! The reader against archives the tar crate writes, and against hostile headers: records
//! refused from their size alone, sizes that lie, damaged headers.

use std::io::{self, Read};

use tar::{Builder, EntryType, Header};

use super::*;

/// A source that counts what was read from it.
struct Counted<'a> {
    data: &'a [u8],
    read: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.data.read(out)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl Source for Counted<'_> {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut self.take(n), &mut io::sink())
    }
}

fn reader(data: &[u8]) -> TarReader<Counted<'_>> {
    TarReader::new(Counted { data, read: 0 })
}

fn header(name: &str, kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h
}

fn refusal(e: UntarError) -> (String, String) {
    match e {
        UntarError::Refused { entry, why } => (String::from_utf8(entry).unwrap(), why),
        other => panic!("not a refusal: {other:?}"),
    }
}

#[test]
fn long_names_pax_records_and_data_are_read() {
    let long = format!("./{}/{}", "d".repeat(120), "f".repeat(120));
    let mut b = Builder::new(Vec::new());
    b.append_data(
        &mut header("x", EntryType::Regular, 5),
        &long,
        &b"hello"[..],
    )
    .unwrap();
    b.append_pax_extensions([("path", &b"./from-pax"[..]), ("mtime", b"12.5")])
        .unwrap();
    b.append(&header("short", EntryType::Regular, 3), &b"abc"[..])
        .unwrap();
    let mut link = header("l", EntryType::Symlink, 0);
    b.append_link(&mut link, "./l", "t".repeat(200)).unwrap();
    let bytes = b.into_inner().unwrap();

    let mut r = reader(&bytes);
    let first = r.next().unwrap().unwrap();
    assert_eq!(first.path, long.as_bytes());
    let mut data = [0; 5];
    r.read_data(&mut data).unwrap();
    assert_eq!(&data, b"hello");
    let second = r.next().unwrap().unwrap();
    assert_eq!(second.path, b"./from-pax");
    assert_eq!(second.pax, vec![(b"mtime".to_vec(), b"12.5".to_vec())]);
    // Its data is skipped by asking for the next entry.
    let third = r.next().unwrap().unwrap();
    assert_eq!(third.link.unwrap(), "t".repeat(200).as_bytes());
    assert!(r.next().unwrap().is_none());
}

#[test]
fn oversized_records_are_refused_from_their_header_alone() {
    for kind in [
        EntryType::XHeader,
        EntryType::GNULongName,
        EntryType::GNULongLink,
        EntryType::XGlobalHeader,
    ] {
        let mut bytes = header("@Bomb", kind, 2 << 30).as_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 1 << 16));
        let mut r = reader(&bytes);
        let (entry, why) = refusal(r.next().err().unwrap());
        assert_eq!(entry, "@Bomb");
        assert!(why.contains("2147483648 bytes"), "{why}");
        assert_eq!(r.into_inner().read, 512, "{kind:?}: read past the header");
    }
    // At the limit is fine.
    let mut b = Builder::new(Vec::new());
    let path = format!("./{}", "p".repeat(MAX_RECORD as usize - 40));
    b.append_pax_extensions([("path", path.as_bytes())])
        .unwrap();
    b.append(&header("f", EntryType::Regular, 0), io::empty())
        .unwrap();
    let bytes = b.into_inner().unwrap();
    assert_eq!(
        reader(&bytes).next().unwrap().unwrap().path,
        path.as_bytes()
    );
}

#[test]
fn sizes_that_lie_name_the_entry() {
    let mut bytes = header("big", EntryType::Regular, 4096).as_bytes().to_vec();
    bytes.extend_from_slice(b"only this");
    // Skipped.
    let mut r = reader(&bytes);
    r.next().unwrap().unwrap();
    let (entry, why) = refusal(r.next().err().unwrap());
    assert_eq!(entry, "big");
    assert!(
        why.contains("says 4096 bytes but the archive ends after 9"),
        "{why}"
    );
    // Read.
    let mut r = reader(&bytes);
    r.next().unwrap().unwrap();
    let mut buf = vec![0; 4096];
    let (entry, _) = refusal(r.read_data(&mut buf).unwrap_err());
    assert_eq!(entry, "big");
}

#[test]
fn sparse_maps_are_read_across_extension_blocks() {
    // 30 regions: 4 in the header, 21 and 5 in two extension blocks.
    let regions: Vec<(u64, u64)> = (0..30).map(|i| (i * 4096, 100)).collect();
    let mut h = header("sparse", EntryType::GNUSparse, 3000);
    let gnu = h.as_gnu_mut().unwrap();
    for (slot, (off, len)) in gnu.sparse.iter_mut().zip(&regions) {
        slot.set_offset(*off);
        slot.set_length(*len);
    }
    gnu.set_real_size(200_000);
    gnu.set_is_extended(true);
    h.set_cksum();
    let mut bytes = h.as_bytes().to_vec();
    for (i, chunk) in regions[4..].chunks(21).enumerate() {
        let mut ext = GnuExtSparseHeader::new();
        for (slot, (off, len)) in ext.sparse.iter_mut().zip(chunk) {
            slot.set_offset(*off);
            slot.set_length(*len);
        }
        ext.isextended[0] = u8::from(i == 0);
        bytes.extend_from_slice(ext.as_bytes());
    }
    let data_pos = bytes.len() as u64;
    bytes.extend(std::iter::repeat_n(b'd', 3000));
    bytes.resize(bytes.len().div_ceil(512) * 512 + 1024, 0);
    let mut r = reader(&bytes);
    let head = r.next().unwrap().unwrap();
    assert_eq!(head.data_pos, data_pos);
    assert_eq!(
        head.sparse,
        Some(Sparse {
            regions,
            real_size: 200_000
        })
    );
    assert!(r.next().unwrap().is_none(), "framed past the data");
}

#[test]
fn damaged_headers_are_not_tar() {
    let mut bytes = header("f", EntryType::Regular, 0).as_bytes().to_vec();
    bytes[0] ^= 1;
    match reader(&bytes).next() {
        Err(UntarError::Read(e)) => assert!(e.to_string().contains("checksum"), "{e}"),
        other => panic!("{:?}", other.map(|h| h.map(|h| h.path))),
    }
    match reader(&bytes[..100]).next() {
        Err(UntarError::Read(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
        other => panic!("{:?}", other.map(|h| h.map(|h| h.path))),
    }
}
