//! Copying a byte range from one file into another in the kernel (`copy_file_range`), with a
//! plain read/write fallback where the kernel cannot, in bounded chunks that observe
//! cancellation and report progress.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rustix::io::Errno;
use tokio_util::sync::CancellationToken;

/// Largest piece copied between two checks of the cancellation token.
const CHUNK: u64 = 8 << 20;
/// Buffer of the read/write fallback.
const FALLBACK_BUF: usize = 1 << 20;

/// Which side of a copy failed, so the caller can name the right file.
#[derive(Debug)]
pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
    Cancelled,
}

/// Copies `len` bytes of `src` at `src_off` to `dst` at `dst_off`. Returns how many bytes
/// `src` had (fewer than `len` when it ends early). `done` is told about every piece.
pub(crate) fn copy_range(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: u64,
    cancel: &CancellationToken,
    mut done: impl FnMut(u64),
) -> Result<u64, CopyError> {
    let mut copied = 0;
    let mut kernel = true;
    let mut buf = Vec::new();
    while copied < len {
        if cancel.is_cancelled() {
            return Err(CopyError::Cancelled);
        }
        let want = (len - copied).min(CHUNK);
        let n = if kernel {
            let mut off_in = src_off + copied;
            let mut off_out = dst_off + copied;
            match rustix::fs::copy_file_range(
                src,
                Some(&mut off_in),
                dst,
                Some(&mut off_out),
                want as usize,
            ) {
                Ok(n) => n as u64,
                Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::BADF) => {
                    kernel = false;
                    continue;
                }
                Err(Errno::INTR) => continue,
                Err(e @ (Errno::NOSPC | Errno::DQUOT | Errno::FBIG)) => {
                    return Err(CopyError::Write(e.into()));
                }
                Err(e) => return Err(CopyError::Read(e.into())),
            }
        } else {
            if buf.is_empty() {
                buf = vec![0; FALLBACK_BUF];
            }
            let piece = &mut buf[..want.min(FALLBACK_BUF as u64) as usize];
            let n = match src.read_at(piece, src_off + copied) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Read(e)),
            };
            dst.write_all_at(&piece[..n], dst_off + copied)
                .map_err(CopyError::Write)?;
            n as u64
        };
        if n == 0 {
            break;
        }
        start_writeback(dst, dst_off + copied, n);
        copied += n;
        done(n);
    }
    Ok(copied)
}

/// Asks the kernel to start writing `len` bytes of `file` at `off` to disk now, so a later
/// fsync has little left to wait for (pages being written stay cached). Best effort.
pub(crate) fn start_writeback(file: &File, off: u64, len: u64) {
    if let Some(len) = std::num::NonZeroU64::new(len) {
        let _ = rustix::fs::fadvise(file, off, Some(len), rustix::fs::Advice::DontNeed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_a_range_at_offsets_and_stops_at_the_end_of_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("src"), &data).unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let dst = File::create(dir.path().join("dst")).unwrap();
        let mut seen = 0;
        let n = copy_range(
            &src,
            100,
            &dst,
            512,
            2_000_000,
            &CancellationToken::new(),
            |n| seen += n,
        )
        .unwrap();
        assert_eq!((n, seen), (2_000_000, 2_000_000));
        let out = std::fs::read(dir.path().join("dst")).unwrap();
        assert_eq!(&out[512..], &data[100..2_000_100]);
        let short = copy_range(
            &src,
            2_999_000,
            &dst,
            0,
            5000,
            &CancellationToken::new(),
            |_| {},
        )
        .unwrap();
        assert_eq!(short, 1000);
    }

    #[test]
    fn a_cancelled_copy_stops() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("src"), b"abc").unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let dst = File::create(dir.path().join("dst")).unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(matches!(
            copy_range(&src, 0, &dst, 0, 3, &cancel, |_| {}),
            Err(CopyError::Cancelled)
        ));
    }
}
