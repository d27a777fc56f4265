//! `berth-warm bench`: snapshot and restore side by side with GNU tar as cc-ci's warmsnap.py
//! runs it (`tar -C MOUNTPOINT -cf X.tar .`, then `rm -rf` + `tar -xf`, one volume after the
//! other), on real Docker volumes: (a) one volume of 2 GiB in large files, (b) one volume of
//! 200,000 files of 4 KiB, (c) a stack of 4 volumes of 256 MiB. Berth runs as a child process
//! (`berth-warm snapshot|restore`) so its peak RSS is measured alone. Each restore starts
//! from the same settled filesystem ([`settle`]), so neither tool pays for what the other did
//! just before it. Prints ratios.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use berth_agent::warm::{SWARM_LABEL, WarmError};

mod spares;

const MIB: u64 = 1 << 20;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Where GNU tar's archives and Berth's warm root go (about 8 GiB at scale 1).
    #[arg(long, default_value = "/var/tmp/berth-bench")]
    dir: PathBuf,
    /// Scenarios to run, of: large, small, stack.
    #[arg(long, value_delimiter = ',', default_value = "large,small,stack")]
    only: Vec<String>,
    /// Multiplies every size and count (0.05 for a quick run).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Keep the volumes and archives afterwards.
    #[arg(long)]
    keep: bool,
    /// Put each volume on an XFS filesystem with reflink of this size (e.g. 8G), made on a
    /// loop device and mounted over the volume's directory, so spares are reflinked.
    #[arg(long)]
    xfs_size: Option<String>,
    /// Do not drop the kernel's caches before each restore (see `settle`): each restore then
    /// inherits the state the step before it left.
    #[arg(long)]
    keep_caches: bool,
}

/// What one volume is filled with.
#[derive(Debug, Clone, Copy)]
enum Fill {
    Large { bytes: u64, file: u64 },
    Small { files: u64, size: u64, per_dir: u64 },
}

fn scenarios(scale: f64) -> Vec<(&'static str, Vec<Fill>)> {
    let s = |n: u64| ((n as f64 * scale) as u64).max(1);
    vec![
        (
            "large",
            vec![Fill::Large {
                bytes: s(2048 * MIB),
                file: 256 * MIB,
            }],
        ),
        (
            "small",
            vec![Fill::Small {
                files: s(200_000),
                size: 4096,
                per_dir: 1000,
            }],
        ),
        (
            "stack",
            vec![
                Fill::Large {
                    bytes: s(256 * MIB),
                    file: 64 * MIB
                };
                4
            ],
        ),
    ]
}

/// One measured operation.
struct Row {
    scenario: &'static str,
    op: &'static str,
    gnu: f64,
    gnu_sync: f64,
    /// Of `gnu`, the `rm -rf` of the old contents (restores only).
    gnu_rm: Option<f64>,
    /// Until Berth said the volumes are done (restore: before the old contents are removed).
    berth: f64,
    /// Until the Berth process exited (restore: old contents removed too).
    berth_exit: f64,
    rss_kib: u64,
}

pub async fn run(args: BenchArgs) -> Result<String, WarmError> {
    tokio::task::spawn_blocking(move || run_blocking(&args))
        .await?
        .map_err(|e| WarmError::Input(format!("benchmark failed: {e}")))
}

fn run_blocking(args: &BenchArgs) -> Result<String, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let mut rows = Vec::new();
    let mut spare_rows = Vec::new();
    let load_before = loadavg();
    for (name, fills) in scenarios(args.scale) {
        if !args.only.iter().any(|o| o == name) {
            continue;
        }
        let stack = format!("berthbench_{name}_{}", std::process::id());
        eprintln!("== {name}: preparing {} volume(s)", fills.len());
        let mut volumes = Vec::new();
        let result = (|| {
            for (i, fill) in fills.iter().enumerate() {
                let vol = format!("{stack}_v{i}");
                sh(
                    "docker",
                    &[
                        "volume",
                        "create",
                        "--label",
                        &format!("{SWARM_LABEL}={stack}"),
                        &vol,
                    ],
                )?;
                let mp = sh(
                    "docker",
                    &["volume", "inspect", "-f", "{{.Mountpoint}}", &vol],
                )?;
                volumes.push((vol, PathBuf::from(mp.trim())));
                if let Some(size) = &args.xfs_size {
                    mount_xfs(&args.dir, &volumes[i].1, size)?;
                }
                fill_volume(&volumes[i].1, *fill)?;
            }
            measure(&me, args, name, &stack, &volumes, &mut rows)?;
            let warm_root = args.dir.join(&stack).join("warm");
            let tars = berth_tars(&warm_root, &stack, &volumes);
            let settled = || settle(args, &tars);
            spare_rows.push(spares::measure(
                &me, name, &warm_root, &stack, &volumes, &settled,
            )?);
            Ok::<(), String>(())
        })();
        if !args.keep {
            for (vol, mp) in &volumes {
                if args.xfs_size.is_some() {
                    let parent = mp.parent().unwrap_or(mp);
                    let _ = sh("umount", &[&parent.to_string_lossy()]);
                }
                let _ = sh("docker", &["volume", "rm", "-f", vol]);
            }
            let _ = fs::remove_dir_all(args.dir.join(&stack));
        }
        result?;
    }
    print_table(&rows);
    spares::print(&spare_rows);
    eprintln!(
        "load average (1 min): {load_before} before, {} after; other work on this machine shares \
         the CPUs and the disk",
        loadavg()
    );
    let summary: Vec<_> = rows
        .iter()
        .map(|r| serde_json::json!({
            "scenario": r.scenario, "op": r.op, "gnu_tar_s": r.gnu, "gnu_tar_sync_s": r.gnu_sync,
            "gnu_rm_s": r.gnu_rm,
            "berth_s": r.berth, "berth_exit_s": r.berth_exit, "speedup": r.gnu / r.berth,
            "speedup_vs_tar_sync": r.gnu_sync / r.berth, "berth_peak_rss_kib": r.rss_kib,
        }))
        .chain(spare_rows.iter().map(spares::json))
        .collect();
    Ok(serde_json::Value::Array(summary).to_string())
}

fn measure(
    me: &Path,
    args: &BenchArgs,
    name: &'static str,
    stack: &str,
    volumes: &[(String, PathBuf)],
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let base = args.dir.join(stack);
    let gnu_dir = base.join("gnu");
    let warm_root = base.join("warm");
    fs::create_dir_all(&gnu_dir).map_err(|e| e.to_string())?;
    sync();

    eprintln!("== {name}: snapshot with GNU tar, one volume after the other");
    let t = Instant::now();
    for (vol, mp) in volumes {
        let tar = gnu_dir.join(format!("{vol}.tar"));
        sh(
            "tar",
            &[
                "-C",
                &mp.to_string_lossy(),
                "-cf",
                &tar.to_string_lossy(),
                ".",
            ],
        )?;
    }
    let gnu = t.elapsed().as_secs_f64();
    sync();
    let gnu_sync = t.elapsed().as_secs_f64();
    eprintln!("== {name}: snapshot with Berth");
    let b = child(me, "snapshot", &warm_root, stack)?;
    rows.push(Row {
        scenario: name,
        op: "snapshot",
        gnu,
        gnu_sync,
        gnu_rm: None,
        berth: b.outcome,
        berth_exit: b.exit,
        rss_kib: b.rss_kib,
    });

    eprintln!("== {name}: restore with rm -rf + GNU tar, one volume after the other");
    let gnu_tars: Vec<PathBuf> = volumes
        .iter()
        .map(|(vol, _)| gnu_dir.join(format!("{vol}.tar")))
        .collect();
    settle(args, &gnu_tars);
    let t = Instant::now();
    let mut rm = 0.0;
    for (vol, mp) in volumes {
        let mp = mp.to_string_lossy();
        let clear = format!(r#"rm -rf -- "{mp}"/* "{mp}"/.[!.]* "{mp}"/..?* 2>/dev/null; true"#);
        let r = Instant::now();
        sh("sh", &["-c", &clear])?;
        rm += r.elapsed().as_secs_f64();
        let tar = gnu_dir.join(format!("{vol}.tar"));
        sh("tar", &["-C", &mp, "-xf", &tar.to_string_lossy()])?;
    }
    let gnu = t.elapsed().as_secs_f64();
    sync();
    let gnu_sync = t.elapsed().as_secs_f64();
    eprintln!("== {name}: restore with Berth");
    let berth_tars = berth_tars(&warm_root, stack, volumes);
    settle(args, &berth_tars);
    let b = child(me, "restore", &warm_root, stack)?;
    rows.push(Row {
        scenario: name,
        op: "restore",
        gnu,
        gnu_sync,
        gnu_rm: Some(rm),
        berth: b.outcome,
        berth_exit: b.exit,
        rss_kib: b.rss_kib,
    });
    Ok(())
}

/// What a child run took: until it printed its outcome, until it exited, and its peak RSS;
/// and what it printed (the outcome line, and stderr).
struct Timing {
    outcome: f64,
    exit: f64,
    rss_kib: u64,
    stdout: String,
    stderr: String,
}

/// Runs `berth-warm <op>` for the stack.
fn child(me: &Path, op: &str, warm_root: &Path, stack: &str) -> Result<Timing, String> {
    use std::io::{BufRead, Read};
    let t = Instant::now();
    let mut proc = Command::new(me)
        .args([
            op,
            "--warm-root",
            &warm_root.to_string_lossy(),
            "--app",
            stack,
            "--stack",
            stack,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", me.display()))?;
    let mut stdout = std::io::BufReader::new(proc.stdout.take().expect("piped"));
    let mut line = String::new();
    let _ = stdout.read_line(&mut line);
    let outcome = t.elapsed().as_secs_f64();
    let mut stderr = String::new();
    let _ = proc
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr);
    let status = proc.wait().map_err(|e| e.to_string())?;
    let exit = t.elapsed().as_secs_f64();
    if !status.success() {
        return Err(format!("berth-warm {op} failed: {stderr}"));
    }
    let rss_kib = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kib "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok(Timing {
        outcome,
        exit,
        rss_kib,
        stdout: line,
        stderr,
    })
}

fn print_table(rows: &[Row]) {
    let mut out = std::io::stderr().lock();
    let _ = writeln!(
        out,
        "\n{:<8} {:<9} {:>9} {:>9} {:>14} {:>8} {:>13} {:>10} {:>15} {:>13}",
        "scenario",
        "op",
        "gnu_tar_s",
        "of_it_rm",
        "gnu_tar+sync_s",
        "berth_s",
        "berth_exit_s",
        "gnu/berth",
        "gnu+sync/berth",
        "berth_rss_MiB"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<8} {:<9} {:>9.2} {:>9} {:>14.2} {:>8.2} {:>13.2} {:>9.2}x {:>14.2}x {:>13.1}",
            r.scenario,
            r.op,
            r.gnu,
            r.gnu_rm
                .map_or_else(|| "-".to_owned(), |rm| format!("{rm:.2}")),
            r.gnu_sync,
            r.berth,
            r.berth_exit,
            r.gnu / r.berth,
            r.gnu_sync / r.berth,
            r.rss_kib as f64 / 1024.0
        );
    }
}

/// Fills a volume with pseudo-random data (nothing compresses, nothing is sparse).
fn fill_volume(root: &Path, fill: Fill) -> Result<(), String> {
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ root.as_os_str().len() as u64;
    let mut next = move |buf: &mut [u8]| {
        for chunk in buf.chunks_mut(8) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            chunk.copy_from_slice(&rng.to_le_bytes()[..chunk.len()]);
        }
    };
    let err = |p: &Path, e: std::io::Error| format!("cannot write {}: {e}", p.display());
    match fill {
        Fill::Large { bytes, file } => {
            let mut buf = vec![0u8; MIB as usize];
            let mut left = bytes;
            let mut i = 0;
            while left > 0 {
                let path = root.join(format!("large-{i:03}.bin"));
                let mut f = fs::File::create(&path).map_err(|e| err(&path, e))?;
                let mut n = left.min(file);
                left -= n;
                while n > 0 {
                    let k = n.min(MIB) as usize;
                    next(&mut buf[..k]);
                    f.write_all(&buf[..k]).map_err(|e| err(&path, e))?;
                    n -= k as u64;
                }
                i += 1;
            }
        }
        Fill::Small {
            files,
            size,
            per_dir,
        } => {
            let mut buf = vec![0u8; size as usize];
            for i in 0..files {
                let dir = root.join(format!("d{:04}", i / per_dir));
                if i % per_dir == 0 {
                    fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
                }
                let path = dir.join(format!("f{i:06}"));
                next(&mut buf);
                fs::write(&path, &buf).map_err(|e| err(&path, e))?;
            }
        }
    }
    Ok(())
}

fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Mounts a new XFS filesystem (reflink on) of `size` over the directory holding `mountpoint`
/// (a Docker volume's `_data`), from an image under `dir`, and makes `_data` on it again.
fn mount_xfs(dir: &Path, mountpoint: &Path, size: &str) -> Result<(), String> {
    let parent = mountpoint.parent().unwrap_or(mountpoint);
    let name = parent
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let image = dir.join(format!("{name}.xfs"));
    let image = image.to_string_lossy();
    sh("truncate", &["-s", size, &image])?;
    sh("mkfs.xfs", &["-q", "-f", "-m", "reflink=1", &image])?;
    sh("mount", &["-o", "loop", &image, &parent.to_string_lossy()])?;
    fs::create_dir(mountpoint).map_err(|e| format!("create {}: {e}", mountpoint.display()))
}

pub(crate) fn sync() {
    rustix::fs::sync();
}

/// The tars `berth-warm snapshot` wrote for `volumes` under `warm_root` (the warm root's
/// layout, as warmsnap.py's).
fn berth_tars(warm_root: &Path, stack: &str, volumes: &[(String, PathBuf)]) -> Vec<PathBuf> {
    volumes
        .iter()
        .map(|(vol, _)| {
            warm_root
                .join(stack)
                .join("snapshot/volumes")
                .join(format!("{vol}.tar"))
        })
        .collect()
}

/// Brings the filesystem to the same state before each timed restore, so neither tool pays
/// for what the other did just before it: everything is written, the kernel's clean caches
/// are dropped (unless `--keep-caches`), and the archives the restore reads are read back
/// into the page cache, where the snapshots left them. Without it the order decides: on ext4
/// without a journal (this bench's host), the inode allocator passes over every free inode
/// deleted in the last 60 s (360 s while its inode-table block is dirty) as long as that
/// block is cached (`recently_deleted` in fs/ext4/ialloc.c), one lookup per such inode on
/// every create; Berth's restore, run right after GNU's `rm -rf` of 100,000 files, spent
/// 16 s extracting what it extracts in 1.7 s settled.
fn settle(args: &BenchArgs, inputs: &[PathBuf]) {
    sync();
    if args.keep_caches {
        return;
    }
    if let Err(e) = fs::write("/proc/sys/vm/drop_caches", "3") {
        eprintln!("warning: cannot drop the kernel's caches ({e}); steps may pay for each other");
        return;
    }
    for path in inputs {
        let read =
            fs::File::open(path).and_then(|mut f| std::io::copy(&mut f, &mut std::io::sink()));
        if let Err(e) = read {
            eprintln!(
                "warning: cannot read {} back into the cache: {e}",
                path.display()
            );
        }
    }
}

/// The 1-minute load average.
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// This process's peak resident set size (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
