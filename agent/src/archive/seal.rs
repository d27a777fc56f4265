//! age encryption as one more streaming stage: on create between zstd and the upload, on
//! restore before zstd. An agent that archives holds only recipients (age X25519 or SSH
//! public keys, `[archive] recipients` / `recipients_file`); only a host given an identity
//! (`[archive] identity_file`) can restore, so a stolen host reads none of the backups it
//! wrote.
//!
//! The stream is plain age (the format of `age -r`), so `age -d -i key | zstd -d | tar -x`
//! reads an archive, and `tar | zstd | age -r` makes one Berth restores.

mod payload;

use std::cell::OnceCell;
use std::collections::HashSet;
use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::path::Path;

use age::secrecy::ExposeSecret;
use age::{Identity, Recipient};
use age_core::format::{FileKey, Stanza};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};

use super::ArchiveError;
use super::config::ArchiveConfig;

/// [`berth_shared::archive::ArchiveMeta::encryption`] of an age-encrypted archive.
pub const ENCRYPTION_AGE: &str = "age";

/// How every age stream starts.
pub(crate) const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// Bytes of an archive's start fetched to check an identity against its header before a
/// restore writes anything (age headers of a few dozen recipients fit).
pub(crate) const HEADER_PROBE: u64 = 64 << 10;

/// The recipients an archive is encrypted to, with the names its metadata gives them.
pub(crate) struct Recipients {
    keys: Vec<Box<dyn Recipient + Send + Sync>>,
    /// Each recipient as an operator recognises it: an age recipient as itself (`age1…`),
    /// an SSH key as `ssh-keygen -l` shows it (`ssh-ed25519 SHA256:…`).
    pub names: Vec<String>,
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.names).finish()
    }
}

impl Recipients {
    /// The agent's own recipients (`recipients`, then the lines of `recipients_file`) and a
    /// create's `extra` ones; `None` when there are none, and the archive is not encrypted.
    pub fn of(config: &ArchiveConfig, extra: &[String]) -> Result<Option<Self>, ArchiveError> {
        let mut lines: Vec<(String, String)> = Vec::new();
        for r in &config.recipients {
            lines.push((r.clone(), "archive.recipients".to_owned()));
        }
        if let Some(path) = &config.recipients_file {
            let text = std::fs::read_to_string(path).map_err(|source| ArchiveError::Read {
                path: path.clone(),
                source,
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    lines.push((
                        line.to_owned(),
                        format!("{} line {}", path.display(), n + 1),
                    ));
                }
            }
        }
        for r in extra {
            lines.push((r.clone(), "the create's recipients".to_owned()));
        }
        if lines.is_empty() {
            return Ok(None);
        }
        let mut keys = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for (text, origin) in lines {
            let (key, name) = parse_recipient(text.trim()).map_err(|why| {
                // A public key may be shown; anything else might be a pasted secret key.
                let shown = if text.starts_with("age1") || text.starts_with("ssh-") {
                    format!("recipient {text:?}")
                } else {
                    "a recipient".to_owned()
                };
                ArchiveError::AgeKey(format!("{shown} in {origin}: {why}"))
            })?;
            if !names.contains(&name) {
                keys.push(key);
                names.push(name);
            }
        }
        Ok(Some(Recipients { keys, names }))
    }

    /// Wraps `out` so that what is written to it is encrypted to these recipients, and its
    /// plaintext hashed. The age crate writes the header (and the payload's nonce) into
    /// `out` at once; the payload is [`payload::Writer`]'s.
    pub fn seal<W: Write>(&self, mut out: W) -> io::Result<Sealer<W>> {
        let file_key = OnceCell::new();
        let keeping = KeepKey::each(&self.keys, &file_key);
        let encryptor =
            age::Encryptor::with_recipients(keeping.iter().map(|k| k as &dyn Recipient))
                .map_err(io::Error::other)?;
        let mut head = Vec::new();
        // The crate's own payload writer is dropped unused: nothing of it is written.
        drop(encryptor.wrap_output(&mut head)?);
        let nonce = head
            .len()
            .checked_sub(payload::NONCE)
            .map(|at| &head[at..])
            .ok_or_else(|| io::Error::other("age wrote no header"))?;
        let file_key = file_key
            .get()
            .ok_or_else(|| io::Error::other("age made no file key"))?;
        let key = payload::key(file_key, nonce)?;
        out.write_all(&head)?;
        Ok(Sealer {
            writer: payload::Writer::new(key, out),
            hasher: Sha256::new(),
        })
    }
}

/// One recipient and its name, or why the text is not one.
fn parse_recipient(text: &str) -> Result<(Box<dyn Recipient + Send + Sync>, String), String> {
    if text.starts_with("age1") {
        let key: age::x25519::Recipient = text.parse().map_err(|e: &str| e.to_owned())?;
        return Ok((Box::new(key), text.to_owned()));
    }
    if text.starts_with("ssh-") {
        let key: age::ssh::Recipient = text
            .parse()
            .map_err(|e: age::ssh::ParseRecipientKeyError| format!("{e:?}"))?;
        return Ok((Box::new(key), ssh_fingerprint(text)?));
    }
    Err("not an age recipient (age1…) nor an SSH public key (ssh-ed25519 …, ssh-rsa …)".into())
}

/// `ssh-ed25519 SHA256:…`, as `ssh-keygen -l` names the key.
fn ssh_fingerprint(text: &str) -> Result<String, String> {
    let mut fields = text.split_whitespace();
    let kind = fields.next().unwrap_or_default();
    let blob = fields
        .next()
        .and_then(|b| STANDARD.decode(b).ok())
        .ok_or("its key is not base64")?;
    let digest = STANDARD_NO_PAD.encode(Sha256::digest(&blob));
    Ok(format!("{kind} SHA256:{digest}"))
}

/// The create's end of the stage: encrypts what zstd writes and hashes the plaintext.
pub(crate) struct Sealer<W: Write> {
    writer: payload::Writer<W>,
    hasher: Sha256,
}

impl<W: Write> Sealer<W> {
    /// Writes age's last chunk; gives the plaintext's SHA-256 (hex) and the inner writer.
    pub fn finish(self) -> io::Result<(String, W)> {
        let inner = self.writer.finish()?;
        Ok((hex::encode(self.hasher.finalize()), inner))
    }
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.writer.write(data)?;
        self.hasher.update(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// How a one-off identity (sent with a restore task) is named in messages.
pub(crate) const ONE_OFF: &str = "the restore's one-off identity";

/// The identities a restoring agent holds, and where they came from.
pub(crate) struct Identities {
    keys: Vec<Box<dyn Identity + Send + Sync>>,
    origin: String,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys themselves.
        f.debug_struct("Identities")
            .field("origin", &self.origin)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Identities {
    /// Reads `path` (`[archive] identity_file`); see [`Identities::parse`].
    pub fn read(path: &Path) -> Result<Self, ArchiveError> {
        let data = std::fs::read(path).map_err(|source| ArchiveError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&data, &format!("archive.identity_file {}", path.display()))
    }

    /// Age identities (`AGE-SECRET-KEY-1…` lines, as `age-keygen` writes) or one unencrypted
    /// SSH private key, from `origin` (named in errors; the key never is).
    pub fn parse(data: &[u8], origin: &str) -> Result<Self, ArchiveError> {
        let bad = |why: String| ArchiveError::AgeKey(format!("{origin}: {why}"));
        let keys: Vec<Box<dyn Identity + Send + Sync>> = if String::from_utf8_lossy(data)
            .contains("AGE-SECRET-KEY-")
        {
            age::IdentityFile::from_buffer(io::BufReader::new(data))
                .map_err(|e| bad(e.to_string()))?
                .into_identities()
                .map_err(|e| bad(e.to_string()))?
        } else {
            let name = Some(origin.to_owned());
            match age::ssh::Identity::from_buffer(io::BufReader::new(data), name) {
                Ok(key @ age::ssh::Identity::Unencrypted(_)) => vec![Box::new(key)],
                Ok(age::ssh::Identity::Encrypted(_)) => {
                    return Err(bad(
                        "a passphrase-protected SSH key cannot be used unattended; give \
                             the agent an unencrypted key readable only by it (a systemd \
                             credential), or an age identity"
                            .into(),
                    ));
                }
                Ok(age::ssh::Identity::Unsupported(_)) => {
                    return Err(bad("an SSH key type age does not support".into()));
                }
                Err(_) => {
                    return Err(bad(
                        "neither age identities (AGE-SECRET-KEY-1…) nor an SSH private key".into(),
                    ));
                }
            }
        };
        if keys.is_empty() {
            return Err(bad("it holds no identity".into()));
        }
        Ok(Identities {
            keys,
            origin: origin.to_owned(),
        })
    }

    /// Where these identities came from, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn iter(&self) -> impl Iterator<Item = &dyn Identity> {
        self.keys.iter().map(|k| k.as_ref() as &dyn Identity)
    }

    /// Checks that one of these identities opens the age header at the start of `head`.
    pub fn check_header(&self, head: &[u8]) -> Result<(), age::DecryptError> {
        let decryptor = age::Decryptor::new_buffered(head)?;
        decryptor.decrypt(self.iter()).map(drop)
    }

    /// Wraps `input`, an age stream, so that reading it gives the plaintext; every chunk is
    /// authenticated as it is read, and a stream cut short is an error. The age crate reads
    /// the header (from its first [`HEADER_PROBE`] bytes), unwraps the file key and checks
    /// the header's MAC; the payload is [`payload::Reader`]'s.
    pub fn open<R: Read>(&self, mut input: R) -> io::Result<impl Read> {
        let mut head = Vec::new();
        (&mut input).take(HEADER_PROBE).read_to_end(&mut head)?;
        let file_key = OnceCell::new();
        let keeping = KeepKey::each(&self.keys, &file_key);
        let mut header = io::Cursor::new(&head[..]);
        let decryptor = age::Decryptor::new_buffered(&mut header).map_err(io::Error::other)?;
        // Ok only once the header's MAC checked out under the file key kept below.
        drop(
            decryptor
                .decrypt(keeping.iter().map(|k| k as &dyn Identity))
                .map_err(io::Error::other)?,
        );
        let file_key = file_key
            .get()
            .ok_or_else(|| io::Error::other("age gave no file key"))?;
        // The reader stopped right after the header and the 16-byte nonce.
        let start = usize::try_from(header.position()).map_err(io::Error::other)?;
        let key = payload::key(file_key, &head[start - payload::NONCE..start])?;
        let rest = head.split_off(start);
        Ok(payload::Reader::new(
            key,
            io::Cursor::new(rest).chain(input),
        ))
    }
}

/// One of the age crate's recipients or identities, which keeps the file key that passes
/// through it for the payload stage.
struct KeepKey<'a, T: ?Sized> {
    inner: &'a T,
    file_key: &'a OnceCell<FileKey>,
}

impl<'a, T: ?Sized> KeepKey<'a, T> {
    /// One for each of `keys`, all keeping into `file_key`.
    fn each(keys: &'a [Box<T>], file_key: &'a OnceCell<FileKey>) -> Vec<Self> {
        keys.iter()
            .map(|inner| KeepKey {
                inner: inner.as_ref(),
                file_key,
            })
            .collect()
    }

    fn keep(&self, key: &FileKey) {
        let _ = self.file_key.set(FileKey::init_with_mut(|k| {
            k.copy_from_slice(key.expose_secret())
        }));
    }
}

impl Recipient for KeepKey<'_, dyn Recipient + Send + Sync> {
    fn wrap_file_key(
        &self,
        file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        self.keep(file_key);
        self.inner.wrap_file_key(file_key)
    }
}

impl Identity for KeepKey<'_, dyn Identity + Send + Sync> {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        self.unwrap_stanzas(std::slice::from_ref(stanza))
    }

    fn unwrap_stanzas(&self, stanzas: &[Stanza]) -> Option<Result<FileKey, age::DecryptError>> {
        let found = self.inner.unwrap_stanzas(stanzas);
        if let Some(Ok(key)) = &found {
            self.keep(key);
        }
        found
    }
}

/// Reads `r` to its end, so that age authenticates its last chunk.
pub(crate) fn drain(mut r: impl BufRead) -> io::Result<()> {
    loop {
        let n = r.fill_buf()?.len();
        if n == 0 {
            return Ok(());
        }
        r.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use age::secrecy::ExposeSecret;

    use super::*;

    fn config(recipients: &[&str]) -> ArchiveConfig {
        ArchiveConfig {
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            ..ArchiveConfig::default()
        }
    }

    #[test]
    fn what_is_sealed_to_two_recipients_opens_with_either_identity_alone() {
        let (a, b) = (
            age::x25519::Identity::generate(),
            age::x25519::Identity::generate(),
        );
        let (ra, rb) = (a.to_public().to_string(), b.to_public().to_string());
        let recipients = Recipients::of(&config(&[&ra]), std::slice::from_ref(&rb))
            .unwrap()
            .unwrap();
        assert_eq!(recipients.names, [ra, rb]);
        let mut sealer = recipients.seal(Vec::new()).unwrap();
        sealer.write_all(b"zstd frames").unwrap();
        let (plain_sha, sealed) = sealer.finish().unwrap();
        assert_eq!(plain_sha, hex::encode(Sha256::digest(b"zstd frames")));
        for key in [a, b] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("key");
            std::fs::write(&file, key.to_string().expose_secret()).unwrap();
            let ids = Identities::read(&file).unwrap();
            ids.check_header(&sealed).unwrap();
            let mut out = Vec::new();
            ids.open(&sealed[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, b"zstd frames");
        }
    }

    /// The payload stage against the age crate's own, both ways, at the sizes where
    /// chunking has edges (64 KiB chunks; a full last chunk; an empty payload).
    #[test]
    fn the_payload_matches_the_age_crate_s_both_ways() {
        let key = age::x25519::Identity::generate();
        let recipient = key.to_public();
        let recipients = Recipients::of(&config(&[&recipient.to_string()]), &[])
            .unwrap()
            .unwrap();
        let ids = Identities {
            keys: vec![Box::new(key.clone())],
            origin: "test".into(),
        };
        const K: usize = 64 << 10;
        for size in [0, 1, K - 1, K, K + 1, 3 * K, 3 * K + 17] {
            let plain: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            // Ours sealed, the crate opens, in writes of odd sizes.
            let mut sealer = recipients.seal(Vec::new()).unwrap();
            for part in plain.chunks(7919) {
                sealer.write_all(part).unwrap();
            }
            let (_, sealed) = sealer.finish().unwrap();
            let mut out = Vec::new();
            age::Decryptor::new(&sealed[..])
                .unwrap()
                .decrypt(std::iter::once(&key as &dyn Identity))
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, plain, "size {size}, sealed here");
            // The crate sealed, ours opens.
            let encryptor =
                age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn Recipient))
                    .unwrap();
            let mut w = encryptor.wrap_output(Vec::new()).unwrap();
            w.write_all(&plain).unwrap();
            let theirs = w.finish().unwrap();
            let mut out = Vec::new();
            ids.open(&theirs[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, plain, "size {size}, sealed by the age crate");
        }
    }

    /// A stream cut at a chunk's end, a byte flipped in a chunk or its tag, a byte added or
    /// a last chunk dropped: each is refused, and no byte of a bad chunk is given.
    #[test]
    fn an_altered_payload_is_refused() {
        let key = age::x25519::Identity::generate();
        let recipients = Recipients::of(&config(&[&key.to_public().to_string()]), &[])
            .unwrap()
            .unwrap();
        let ids = Identities {
            keys: vec![Box::new(key)],
            origin: "test".into(),
        };
        const K: usize = 64 << 10;
        let plain = vec![7u8; 2 * K + 100];
        let mut sealer = recipients.seal(Vec::new()).unwrap();
        sealer.write_all(&plain).unwrap();
        let (_, sealed) = sealer.finish().unwrap();
        let payload_start = sealed.len() - (2 * (K + 16) + 100 + 16);
        let mut altered: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut flip = |name, at: usize| {
            let mut s = sealed.clone();
            s[at] ^= 1;
            altered.push((name, s));
        };
        flip("a byte of the first chunk", payload_start + 10);
        flip("a byte of the first tag", payload_start + K + 3);
        flip("a byte of the last chunk", sealed.len() - 20);
        altered.push((
            "cut after the second chunk",
            sealed[..payload_start + 2 * (K + 16)].to_vec(),
        ));
        altered.push((
            "cut inside the last tag",
            sealed[..sealed.len() - 1].to_vec(),
        ));
        let mut longer = sealed.clone();
        longer.push(0);
        altered.push(("a byte added", longer));
        for (what, bytes) in altered {
            let mut out = Vec::new();
            let err = ids
                .open(&bytes[..])
                .unwrap()
                .read_to_end(&mut out)
                .expect_err(what);
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
            assert!(
                err.to_string().starts_with("age: payload chunk"),
                "{what}: {err}"
            );
            assert_eq!(
                out.len() % K,
                0,
                "{what}: only whole good chunks were given"
            );
        }
    }

    #[test]
    fn a_stranger_s_identity_is_refused_at_the_header() {
        let owner = age::x25519::Identity::generate();
        let recipients = Recipients::of(&config(&[&owner.to_public().to_string()]), &[])
            .unwrap()
            .unwrap();
        let mut sealer = recipients.seal(Vec::new()).unwrap();
        sealer.write_all(b"x").unwrap();
        let (_, sealed) = sealer.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        let stranger = age::x25519::Identity::generate();
        std::fs::write(&file, stranger.to_string().expose_secret()).unwrap();
        let err = Identities::read(&file).unwrap().check_header(&sealed);
        assert!(
            matches!(err, Err(age::DecryptError::NoMatchingKeys)),
            "{err:?}"
        );
    }

    #[test]
    fn recipients_are_checked_and_named() {
        assert!(Recipients::of(&config(&[]), &[]).unwrap().is_none());
        let err = Recipients::of(&config(&["age1nope"]), &[]).unwrap_err();
        assert_contains(
            &err.to_string(),
            "recipient \"age1nope\" in archive.recipients",
        );
        let err = Recipients::of(&config(&["AGE-SECRET-KEY-1QQQ"]), &[]).unwrap_err();
        assert_contains(&err.to_string(), "nor an SSH public key");
        assert!(
            !err.to_string().contains("QQQ"),
            "a secret is not echoed: {err}"
        );
        let ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxOGSHTYt5qRVJ07xhNTCZmIszQCo6AQAns5DS+Ygch ops@example";
        let named = Recipients::of(&config(&[ssh]), &[]).unwrap().unwrap();
        assert!(
            named.names[0].starts_with("ssh-ed25519 SHA256:"),
            "{:?}",
            named.names
        );
    }

    #[track_caller]
    fn assert_contains(haystack: &str, needle: &str) {
        assert!(
            haystack.contains(needle),
            "expected {needle:?} in {haystack}"
        );
    }
}
