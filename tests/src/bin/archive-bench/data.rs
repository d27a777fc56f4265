//! The benchmark's data sets, generated once into the work directory: 2 GiB of mixed files
//! (log-like text that compresses, random bytes that do not) and 200,000 small files.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// A fast deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const MIB: u64 = 1 << 20;

/// Which data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// 1 GiB of log lines in 16 files, 1 GiB of random bytes in 2 big and 64 mid-size files.
    Mixed,
    /// 200,000 files of 0 to 4 KiB (half text, half random) in 2,000 directories.
    Small,
}

impl Set {
    pub fn name(self) -> &'static str {
        match self {
            Set::Mixed => "mixed-2GiB",
            Set::Small => "small-200k",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Set::Mixed => "2 GiB: 1 GiB log text in 16 files + 1 GiB random bytes in 66 files",
            Set::Small => "200,000 files of 0-4 KiB (half text, half random) in 2,000 dirs",
        }
    }
}

/// `<work>/<set>/app`, generated unless a previous run completed it.
pub fn ensure(work: &Path, set: Set) -> io::Result<PathBuf> {
    let root = work.join(set.name());
    let app = root.join("app");
    let done = root.join(".complete");
    if done.exists() {
        return Ok(app);
    }
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&app)?;
    eprintln!("generating {} in {} ...", set.describe(), app.display());
    match set {
        Set::Mixed => mixed(&app)?,
        Set::Small => small(&app)?,
    }
    File::create(done)?;
    Ok(app)
}

fn log_text(rng: &mut Rng, out: &mut impl Write, bytes: u64) -> io::Result<()> {
    const LEVELS: [&str; 4] = ["INFO ", "DEBUG", "WARN ", "ERROR"];
    const PATHS: [&str; 5] = [
        "/api/v1/items",
        "/api/v1/users",
        "/healthz",
        "/login",
        "/static/app.js",
    ];
    let mut written = 0;
    while written < bytes {
        let r = rng.next();
        let line = format!(
            "2026-03-{:02}T{:02}:{:02}:{:02}.{:03}Z {} req={:016x} path={}/{} status={} dur_ms={}\n",
            r % 28 + 1,
            (r >> 5) % 24,
            (r >> 10) % 60,
            (r >> 16) % 60,
            (r >> 22) % 1000,
            LEVELS[((r >> 32) % 4) as usize],
            rng.next() & 0xffff_ffff,
            PATHS[((r >> 36) % 5) as usize],
            (r >> 40) % 5000,
            [200, 200, 200, 304, 404, 500][((r >> 50) % 6) as usize],
            (r >> 54) % 900,
        );
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
    }
    Ok(())
}

fn random_file(rng: &mut Rng, path: &Path, bytes: u64) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()
}

fn mixed(app: &Path) -> io::Result<()> {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    fs::create_dir_all(app.join("logs"))?;
    fs::create_dir_all(app.join("media/big"))?;
    for i in 0..16 {
        let mut out = BufWriter::with_capacity(
            1 << 20,
            File::create(app.join(format!("logs/app-{i:02}.log")))?,
        );
        log_text(&mut rng, &mut out, 64 * MIB)?;
        out.flush()?;
    }
    for i in 0..2 {
        random_file(
            &mut rng,
            &app.join(format!("media/big/blob-{i}.bin")),
            256 * MIB,
        )?;
    }
    for i in 0..64 {
        random_file(
            &mut rng,
            &app.join(format!("media/asset-{i:02}.bin")),
            8 * MIB,
        )?;
    }
    Ok(())
}

fn small(app: &Path) -> io::Result<()> {
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    let mut buf = vec![0u8; 4096];
    for d in 0..2000 {
        let dir = app.join(format!("d{:02}/s{d:04}", d % 50));
        fs::create_dir_all(&dir)?;
        for f in 0..100 {
            let len = (rng.next() % 4097) as usize;
            if f % 2 == 0 {
                let mut text = Vec::with_capacity(len + 100);
                while text.len() < len {
                    log_text(&mut rng, &mut text, 1)?;
                }
                text.truncate(len);
                fs::write(dir.join(format!("f{f:03}.txt")), text)?;
            } else {
                rng.fill(&mut buf[..len]);
                fs::write(dir.join(format!("f{f:03}.bin")), &buf[..len])?;
            }
        }
    }
    Ok(())
}

/// Entries and file bytes under `root`, to check a restore.
pub fn summary(root: &Path) -> io::Result<(u64, u64)> {
    let (mut entries, mut bytes) = (0, 0);
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let m = e.metadata()?;
            entries += 1;
            if m.is_dir() {
                stack.push(e.path());
            } else {
                bytes += m.len();
            }
        }
    }
    Ok((entries, bytes))
}
