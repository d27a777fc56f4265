//! App archive benchmark, side by side in one run, on (a) 2 GiB of mixed files and (b) 200,000
//! small files, against the real S3 server (s3s-fs) on loopback:
//!
//! - create: Berth's archive-to-S3 (tar + zstd streamed into a multipart upload) vs the old
//!   tool's way (`tar -acf tmp.tar.zst ./`, then upload the file with the same client) vs the
//!   compression ceiling `tar -cf - . | zstd -T0 -3 > /dev/null`;
//! - restore: Berth's restore (download, verify, untar, swap) vs downloading the file with the
//!   same client then `zstd -d -c tmp.tar.zst | tar -x`;
//! - encryption: Berth's create and restore with age (one X25519 recipient) beside the same
//!   without, interleaved in each run (the two take turns going first), and the create again
//!   into `memory://` (no S3 server on the same cores);
//! - unchanged: a create told the archive just made (a schedule's `skip_unchanged`), which
//!   stat-walks the source, finds its listing digest equal and writes nothing.
//!
//!   cargo run --release -p berth-tests --bin archive-bench [-- --runs 3 --work DIR --sets mixed,small]
//!   cargo run --release -p berth-tests --bin archive-bench -- serve   (the S3 server alone)
//!
//! Each contender runs as its own process under `/usr/bin/time` (peak RSS of its largest
//! process), after a `sync`; the S3 server runs in this process. Times are medians of
//! `--runs`. Data is generated once into `--work` and reused; page caches are warmed before
//! measuring.

mod child;
mod data;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use berth_tests::s3::S3Server;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;

use child::Target;
use data::Set;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("child") => return child::run(&args[1..]),
        Some("serve") => return serve(),
        _ => {}
    }
    let mut runs = 3usize;
    let mut restores = true;
    let mut work = PathBuf::from("/tmp/berth-archive-bench");
    let mut sets = vec![Set::Mixed, Set::Small];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().context("a flag without its value");
        match a.as_str() {
            "--runs" => runs = value()?.parse()?,
            "--work" => work = value()?.into(),
            "--no-restore" => restores = false,
            "--sets" => {
                sets = value()?
                    .split(',')
                    .map(|s| match s {
                        "mixed" => Ok(Set::Mixed),
                        "small" => Ok(Set::Small),
                        other => bail!("unknown set {other}: use mixed and/or small"),
                    })
                    .collect::<anyhow::Result<_>>()?
            }
            other => bail!("unknown argument {other}"),
        }
    }
    for tool in ["tar", "zstd", "/usr/bin/time"] {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()?
            .stdout
            .is_empty()
        {
            bail!("{tool} is needed: apt-get install -y tar zstd time");
        }
    }
    let rt = tokio::runtime::Runtime::new()?;
    let server = rt.block_on(S3Server::start());
    let config = server.agent_config(child::PREFIX);
    let target = Target {
        endpoint: server.endpoint.clone(),
        key_file: config.access_key_id_file.clone().unwrap(),
        secret_file: config.secret_access_key_file.clone().unwrap(),
    };
    let mut report = String::new();
    writeln!(report, "# Berth app archive benchmark\n")?;
    writeln!(
        report,
        "Machine: {} CPUs, {}. S3: s3s-fs in process on loopback. Median of {runs} runs; peak \
         RSS is the largest process of each contender (`/usr/bin/time -f %M`).\n",
        std::thread::available_parallelism()?.get(),
        first_line(&sh("uname -sr")?)
    )?;
    for set in sets {
        let app = data::ensure(&work, set)?;
        let section = rt.block_on(bench_set(
            &server, &target, &work, set, &app, runs, restores,
        ))?;
        print!("{section}");
        report.push_str(&section);
    }
    let out = work.join("report.md");
    std::fs::write(&out, &report)?;
    eprintln!("report written to {}", out.display());
    Ok(())
}

/// `archive-bench serve`: the benchmark's S3 server alone, for timing or profiling one
/// contender by hand (`perf record … archive-bench child create-sealed ENDPOINT KEY SECRET
/// APPS APP RECIPIENT`); prints the child's target arguments and serves until interrupted.
fn serve() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let server = S3Server::start().await;
        let config = server.agent_config(child::PREFIX);
        let target = Target {
            endpoint: server.endpoint.clone(),
            key_file: config.access_key_id_file.clone().context("no key file")?,
            secret_file: config
                .secret_access_key_file
                .clone()
                .context("no secret file")?,
        };
        println!("{}", target.args().join(" "));
        eprintln!("serving {} until interrupted", server.root.path().display());
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

fn sh(cmd: &str) -> anyhow::Result<String> {
    let out = Command::new("sh").arg("-c").arg(cmd).output()?;
    if !out.status.success() {
        bail!("{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// One timed process: wall seconds, peak RSS in KiB, and its stdout.
struct Run {
    secs: f64,
    peak_kib: u64,
    /// User + system CPU seconds of the process (and its children).
    cpu: f64,
    stdout: String,
}

/// Runs one contender after `sync`, so that none pays for flushing what the one before it
/// wrote (the S3 server's objects, a restore's files).
fn timed(cwd: &Path, program: &str, args: &[String]) -> anyhow::Result<Run> {
    let rss_file = tempfile::NamedTempFile::new()?;
    sh("sync")?;
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M %U %S")
        .arg("-o")
        .arg(rss_file.path())
        .arg(program)
        .args(args)
        .current_dir(cwd)
        .output()?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let usage = std::fs::read_to_string(rss_file.path())?;
    let fields: Vec<&str> = usage
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let [peak, user, sys] = fields[..] else {
        bail!("unexpected /usr/bin/time output {usage:?}");
    };
    let peak_kib = peak.parse()?;
    let cpu = user.parse::<f64>()? + sys.parse::<f64>()?;
    Ok(Run {
        secs,
        peak_kib,
        cpu,
        stdout: String::from_utf8(out.stdout)?,
    })
}

fn result_field<'a>(stdout: &'a str, name: &str) -> anyhow::Result<&'a str> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        })
        .with_context(|| format!("no {name} in {stdout:?}"))
}

/// `min–max` of `v`, or `—` when empty.
fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        "—".into()
    } else {
        format!("{min:.2}–{max:.2}")
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The 1-minute load average.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// CPU seconds this process (the S3 server) has used so far.
fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command name, field 3 (state) comes first: utime (14) and stime (15) are
    // at 11 and 12, in clock ticks.
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Median seconds and the largest peak of several runs (each a sum of steps).
#[derive(Default)]
struct Sample {
    secs: Vec<f64>,
    peak_kib: u64,
    cpu: Vec<f64>,
    /// CPU seconds the in-process S3 server spent meanwhile.
    server_cpu: Vec<f64>,
}

impl Sample {
    fn add(&mut self, runs: &[&Run], server_cpu: f64) {
        self.secs.push(runs.iter().map(|r| r.secs).sum());
        self.cpu.push(runs.iter().map(|r| r.cpu).sum());
        self.server_cpu.push(server_cpu);
        self.peak_kib = self
            .peak_kib
            .max(runs.iter().map(|r| r.peak_kib).max().unwrap_or(0));
    }
    fn median(&self) -> f64 {
        median(&self.secs)
    }
    fn mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

async fn bench_set(
    server: &S3Server,
    target: &Target,
    work: &Path,
    set: Set,
    app: &Path,
    runs: usize,
    restores: bool,
) -> anyhow::Result<String> {
    let root = app.parent().unwrap().to_owned();
    let exe = std::env::current_exe()?.display().to_string();
    let store = server.client(child::PREFIX);
    let tmp = work.join("tmp.tar.zst");
    let child_args = |op: &str, rest: &[&str]| -> Vec<String> {
        let mut a = vec!["child".to_owned(), op.to_owned()];
        a.extend(target.args());
        a.extend(rest.iter().map(|s| s.to_string()));
        a
    };
    let load_before = loadavg();
    let (entries, bytes) = data::summary(app)?;
    eprintln!("{}: warming the page cache", set.name());
    sh(&format!("cd {} && tar -cf - . > /dev/null", app.display()))?;
    let tar_len: u64 = sh(&format!("cd {} && tar -cf - . | wc -c", app.display()))?
        .trim()
        .parse()?;

    let mut ceiling = Sample::default();
    let (mut berth, mut berth_mem, mut old) =
        (Sample::default(), Sample::default(), Sample::default());
    let (mut old_tar, mut old_up) = (Sample::default(), Sample::default());
    let (mut berth_restore, mut cli_restore) = (Sample::default(), Sample::default());
    let (mut cli_down, mut cli_x) = (Sample::default(), Sample::default());
    let (mut sealed, mut sealed_restore) = (Sample::default(), Sample::default());
    let mut sealed_mem = Sample::default();
    let mut unchanged = Sample::default();
    let (mut berth_size, mut berth_tar, mut old_size) = (0u64, 0u64, 0u64);
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let key_file = work.join("bench-age.key");
    {
        use age::secrecy::ExposeSecret;
        std::fs::write(&key_file, identity.to_string().expose_secret())?;
    }
    let key_s = key_file.display().to_string();
    let root_s = root.display().to_string();
    let tmp_s = tmp.display().to_string();
    for run in 0..runs {
        eprintln!("{}: run {}/{runs}", set.name(), run + 1);
        let cpu0 = own_cpu();
        let c = timed(
            app,
            "sh",
            &["-c".into(), "tar -cf - . | zstd -T0 -3 > /dev/null".into()],
        )?;
        ceiling.add(&[&c], own_cpu() - cpu0);

        // Each encrypted contender runs beside its unencrypted twin, and the two take turns
        // going first, so that neither always meets what the other left behind (a server's
        // writes still being flushed, a page cache to reclaim).
        let sealed_first = run % 2 == 1;
        for sealed_turn in [sealed_first, !sealed_first] {
            let cpu0 = own_cpu();
            if sealed_turn {
                let args = [root_s.as_str(), "app", &recipient];
                let m = timed(app, &exe, &child_args("create-memory-sealed", &args))?;
                sealed_mem.add(&[&m], own_cpu() - cpu0);
            } else {
                let m = timed(app, &exe, &child_args("create-memory", &[&root_s, "app"]))?;
                berth_mem.add(&[&m], own_cpu() - cpu0);
            }
        }

        let (mut plain_made, mut sealed_made) = (None, None);
        for sealed_turn in [sealed_first, !sealed_first] {
            let cpu0 = own_cpu();
            if sealed_turn {
                let args = [root_s.as_str(), "app", &recipient];
                let e = timed(app, &exe, &child_args("create-sealed", &args))?;
                sealed.add(&[&e], own_cpu() - cpu0);
                sealed_made = Some(e);
            } else {
                let b = timed(app, &exe, &child_args("create", &[&root_s, "app"]))?;
                berth.add(&[&b], own_cpu() - cpu0);
                plain_made = Some(b);
            }
        }
        let (b, e) = (plain_made.expect("ran"), sealed_made.expect("ran"));
        let uuid = result_field(&b.stdout, "uuid")?.to_owned();
        let key = result_field(&b.stdout, "key")?.to_owned();
        berth_size = result_field(&b.stdout, "size")?.parse()?;
        berth_tar = result_field(&b.stdout, "tar_bytes")?.parse()?;
        let digest = result_field(&b.stdout, "source_digest")?.to_owned();
        let sealed_uuid = result_field(&e.stdout, "uuid")?.to_owned();
        let sealed_key = result_field(&e.stdout, "key")?.to_owned();

        let cpu0 = own_cpu();
        let args = [root_s.as_str(), "app", &uuid, &digest];
        let n = timed(app, &exe, &child_args("create-unchanged", &args))?;
        unchanged.add(&[&n], own_cpu() - cpu0);

        let _ = std::fs::remove_file(&tmp);
        let cpu0 = own_cpu();
        let t = timed(app, "tar", &["-acf".into(), tmp_s.clone(), "./".into()])?;
        old_tar.add(&[&t], 0.0);
        old_size = std::fs::metadata(&tmp)?.len();
        let old_key = format!("old-{run}.tar.zst");
        let cpu1 = own_cpu();
        let u = timed(app, &exe, &child_args("upload", &[&tmp_s, &old_key]))?;
        old_up.add(&[&u], own_cpu() - cpu1);
        old.add(&[&t, &u], own_cpu() - cpu0);
        std::fs::remove_file(&tmp)?;

        if restores {
            let restored = root.join("restored");
            let _ = std::fs::remove_dir_all(&restored);
            for sealed_turn in [sealed_first, !sealed_first] {
                let cpu0 = own_cpu();
                if sealed_turn {
                    let args = [root_s.as_str(), &sealed_uuid, "restored", &key_s];
                    let r = timed(app, &exe, &child_args("restore-sealed", &args))?;
                    sealed_restore.add(&[&r], own_cpu() - cpu0);
                } else {
                    let args = [root_s.as_str(), &uuid, "restored"];
                    let r = timed(app, &exe, &child_args("restore", &args))?;
                    berth_restore.add(&[&r], own_cpu() - cpu0);
                }
                check_same(app, &restored, entries, bytes)?;
                std::fs::remove_dir_all(&restored)?;
            }

            let cli_dir = root.join("cli-restored");
            let _ = std::fs::remove_dir_all(&cli_dir);
            std::fs::create_dir(&cli_dir)?;
            let cpu0 = own_cpu();
            let d = timed(app, &exe, &child_args("download", &[&old_key, &tmp_s]))?;
            let cpu1 = own_cpu();
            let x = timed(
                app,
                "sh",
                &[
                    "-c".into(),
                    format!("zstd -d -c {tmp_s} | tar -x -C {}", cli_dir.display()),
                ],
            )?;
            cli_down.add(&[&d], cpu1 - cpu0);
            cli_x.add(&[&x], 0.0);
            cli_restore.add(&[&d, &x], own_cpu() - cpu0);
            check_same(app, &cli_dir, entries, bytes)?;
            std::fs::remove_dir_all(&cli_dir)?;
            std::fs::remove_file(&tmp)?;
        }

        for k in [
            key,
            format!("_metadata/{uuid}"),
            old_key,
            sealed_key,
            format!("_metadata/{sealed_uuid}"),
        ] {
            store.delete(&ObjectPath::from(k.as_str())).await?;
        }
    }

    let mut s = String::new();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    writeln!(s, "## {} — {}\n", set.name(), set.describe())?;
    writeln!(
        s,
        "{entries} entries, {:.2} GiB of file data, tar stream {:.2} GiB. Load average (1 min) \
         {load_before} before, {} after: other work shared the CPUs.\n",
        gib(bytes),
        gib(tar_len),
        loadavg()
    )?;
    writeln!(
        s,
        "| | command | time (s) | MB/s (tar) | CPU s | S3 server CPU s | peak RSS (MiB) | archive (MiB) | ratio |"
    )?;
    writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|")?;
    let mbps = |secs: f64| tar_len as f64 / 1e6 / secs;
    let row =
        |s: &mut String, name: &str, cmd: &str, x: &Sample, rss: bool, size: Option<(u64, u64)>| {
            let (arch, ratio) = match size {
                Some((size, raw)) => (
                    format!("{:.1}", size as f64 / 1048576.0),
                    format!("{:.2}", raw as f64 / size as f64),
                ),
                None => (String::new(), String::new()),
            };
            let rss = if rss {
                format!("{:.1}", x.mib())
            } else {
                "—".into()
            };
            writeln!(
                s,
                "| {name} | `{cmd}` | {:.2} | {:.0} | {:.1} | {:.1} | {rss} | {arch} | {ratio} |",
                x.median(),
                mbps(x.median()),
                median(&x.cpu),
                median(&x.server_cpu),
            )
        };
    let berth_cmd = "archive_create: tar + zstd -3 (MT) + sha256 → multipart upload";
    row(
        &mut s,
        "**Berth archive → S3**",
        berth_cmd,
        &berth,
        true,
        Some((berth_size, berth_tar)),
    )?;
    row(
        &mut s,
        "Berth archive → S3, encrypted",
        "the same, age (one X25519 recipient) between zstd and the upload",
        &sealed,
        true,
        None,
    )?;
    row(
        &mut s,
        "Berth archive, source unchanged",
        "the same told the archive just made: stat walk, digest equal, nothing written",
        &unchanged,
        true,
        None,
    )?;
    row(
        &mut s,
        "Berth archive → memory://",
        "the same pipeline, no network or server",
        &berth_mem,
        false,
        None,
    )?;
    row(
        &mut s,
        "Berth archive → memory://, encrypted",
        "the same, with age between zstd and the store",
        &sealed_mem,
        false,
        None,
    )?;
    row(
        &mut s,
        "old tool",
        "tar -acf tmp.tar.zst ./ && upload tmp.tar.zst",
        &old,
        true,
        Some((old_size, tar_len)),
    )?;
    row(
        &mut s,
        "  of which",
        "tar -acf tmp.tar.zst ./",
        &old_tar,
        true,
        None,
    )?;
    row(
        &mut s,
        "  of which",
        "upload tmp.tar.zst (same object_store client, 8 MiB parts × 4)",
        &old_up,
        true,
        None,
    )?;
    row(
        &mut s,
        "ceiling",
        "tar -cf - . | zstd -T0 -3 > /dev/null",
        &ceiling,
        true,
        None,
    )?;
    if restores {
        let restore_cmd = "archive_restore: download → sha256 + zstd -d + untar → syncfs → swap";
        row(
            &mut s,
            "**Berth restore**",
            restore_cmd,
            &berth_restore,
            true,
            None,
        )?;
        row(
            &mut s,
            "Berth restore, encrypted",
            "the same, age -d before zstd -d",
            &sealed_restore,
            true,
            None,
        )?;
        row(
            &mut s,
            "CLI restore",
            "download tmp.tar.zst && zstd -d -c tmp.tar.zst | tar -x",
            &cli_restore,
            true,
            None,
        )?;
        row(
            &mut s,
            "  of which",
            "download tmp.tar.zst",
            &cli_down,
            true,
            None,
        )?;
        row(
            &mut s,
            "  of which",
            "zstd -d -c tmp.tar.zst | tar -x",
            &cli_x,
            true,
            None,
        )?;
    }
    writeln!(s)?;
    let cpu = |x: &Sample| median(&x.cpu);
    writeln!(
        s,
        "- archive-to-S3 vs temp-file-then-upload: **{:.2}×** faster (goal ≥ 1.3×); CPU on \
         the host: {:.2}× less (server excluded)",
        old.median() / berth.median(),
        cpu(&old) / cpu(&berth)
    )?;
    writeln!(
        s,
        "- archive-to-S3 vs compression ceiling: **{:.2}×** the ceiling's time (goal ≤ 1.15×); \
         the pipeline alone (memory://): **{:.2}×**; CPU on the host: {:.2}× the ceiling's",
        berth.median() / ceiling.median(),
        berth_mem.median() / ceiling.median(),
        cpu(&berth) / cpu(&ceiling)
    )?;
    if restores {
        writeln!(
            s,
            "- restore vs download + CLI: **{:.2}×** the CLI's time (goal ≤ 1.0×); CPU on the \
             host: {:.2}× the CLI's",
            berth_restore.median() / cli_restore.median(),
            cpu(&berth_restore) / cpu(&cli_restore)
        )?;
    }
    let restore_ratio = if restores {
        format!("{:.2}×", sealed_restore.median() / berth_restore.median())
    } else {
        "not measured (--no-restore)".to_owned()
    };
    writeln!(
        s,
        "- encryption (age): create **{:.2}×**, restore **{restore_ratio}** the unencrypted \
         time (goal < 1.10×); peak memory {:.0} / {:.0} MiB",
        sealed.median() / berth.median(),
        sealed.mib(),
        sealed_restore.mib()
    )?;
    writeln!(
        s,
        "- encryption without the S3 server on the same cores (memory://): create **{:.2}×** \
         the unencrypted time, {:.1} CPU s against {:.1}; spread {} s against {} s",
        sealed_mem.median() / berth_mem.median(),
        median(&sealed_mem.cpu),
        median(&berth_mem.cpu),
        spread(&sealed_mem.secs),
        spread(&berth_mem.secs)
    )?;
    writeln!(
        s,
        "- source unchanged (a schedule's run over an app that did not change): **{:.2} s** \
         (goal < 1 s), nothing written; spread {} s",
        unchanged.median(),
        spread(&unchanged.secs)
    )?;
    writeln!(
        s,
        "- spread (min–max s): create {}, encrypted {}; restore {}, encrypted {}",
        spread(&berth.secs),
        spread(&sealed.secs),
        spread(&berth_restore.secs),
        spread(&sealed_restore.secs)
    )?;
    writeln!(
        s,
        "- peak memory: create {:.0} MiB, restore {:.0} MiB (goal < 128 MiB)\n",
        berth.mib(),
        berth_restore.mib()
    )?;
    Ok(s)
}

/// The restore has as many entries and file bytes as the source.
fn check_same(source: &Path, restored: &Path, entries: u64, bytes: u64) -> anyhow::Result<()> {
    let found = data::summary(restored)?;
    if found != (entries, bytes) {
        bail!(
            "{} has {found:?} (entries, bytes), {} has {:?}",
            restored.display(),
            source.display(),
            (entries, bytes)
        );
    }
    Ok(())
}
