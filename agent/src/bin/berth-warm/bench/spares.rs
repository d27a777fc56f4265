//! The ready-spare part of `berth-warm bench`: after the usual restore, build each volume's
//! spare (`berth-warm spare`, timed, with the disk it took), then restore from spares ten
//! times (`berth-warm restore`, each followed by a rebuild), reporting the restore step's p50
//! and max as the child measured it around `Warm::restore`, and the whole child's wall time.

use super::child;
use std::path::{Path, PathBuf};

/// Restores from spares per scenario.
const RESTORES: usize = 10;

/// What the spare part measured for one scenario.
pub struct SpareRow {
    pub scenario: &'static str,
    /// How the spares were made (`extract` or `reflink`).
    pub method: String,
    /// First build (with reflink: the base, then the spare).
    pub build_s: f64,
    /// Disk the first build took on the volumes' filesystem.
    pub build_bytes: u64,
    /// Median rebuild after a restore, and the disk a rebuild took.
    pub rebuild_s: f64,
    pub rebuild_bytes: u64,
    /// The restore step (inside the child, around `Warm::restore`): p50 and max, in ms.
    pub step_p50_ms: f64,
    pub step_max_ms: f64,
    /// The child process from start to printing its outcome (connecting to Docker included),
    /// p50.
    pub child_p50_ms: f64,
}

/// Builds spares for the stack's snapshot under `warm_root` and restores from them.
pub fn measure(
    me: &Path,
    scenario: &'static str,
    warm_root: &Path,
    stack: &str,
    volumes: &[(String, PathBuf)],
    settle: &dyn Fn(),
) -> Result<SpareRow, String> {
    let dirs: Vec<PathBuf> = volumes
        .iter()
        .map(|(_, mp)| mp.parent().unwrap_or(mp).to_owned())
        .collect();
    let fs_dir = dirs.as_slice();
    eprintln!("== {scenario}: build the ready spares");
    settle();
    let used = used_bytes(fs_dir)?;
    let built = child(me, "spare", warm_root, stack)?;
    let build_s = built.exit;
    let build_bytes = used_bytes(fs_dir)?.saturating_sub(used);
    let out: serde_json::Value = serde_json::from_str(built.stdout.trim())
        .map_err(|e| format!("berth-warm spare printed no JSON ({e}): {}", built.stdout))?;
    if out["state"] != "ready" {
        return Err(format!("the spares are not ready: {out}"));
    }
    let method = out["built"][0]["method"]
        .as_str()
        .unwrap_or("none")
        .to_owned();

    eprintln!("== {scenario}: {RESTORES} restores from ready spares, each followed by a rebuild");
    let (mut steps, mut childs, mut rebuilds, mut rebuild_bytes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RESTORES {
        let restored = child(me, "restore", warm_root, stack)?;
        childs.push(restored.outcome * 1000.0);
        if restored.stdout.contains("\"method\":\"swap\"")
            || restored.stdout.contains("\"method\":\"clear\"")
        {
            return Err(format!(
                "a restore did not use the spares: {}",
                restored.stdout
            ));
        }
        let step = restored
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("restore_ms "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or("berth-warm restore printed no restore_ms")?;
        steps.push(step);
        let used = used_bytes(fs_dir)?;
        rebuilds.push(child(me, "spare", warm_root, stack)?.exit);
        rebuild_bytes.push(used_bytes(fs_dir)?.saturating_sub(used));
    }
    Ok(SpareRow {
        scenario,
        method,
        build_s,
        build_bytes,
        rebuild_s: median(&mut rebuilds),
        rebuild_bytes: {
            let mut b: Vec<f64> = rebuild_bytes.iter().map(|&b| b as f64).collect();
            median(&mut b) as u64
        },
        step_p50_ms: median(&mut steps.clone()),
        step_max_ms: steps.iter().copied().fold(0.0, f64::max),
        child_p50_ms: median(&mut childs),
    })
}

pub fn print(rows: &[SpareRow]) {
    eprintln!(
        "\n{:<8} {:<8} {:>8} {:>11} {:>10} {:>13} {:>14} {:>14} {:>15}",
        "scenario",
        "spare",
        "build_s",
        "build_MiB",
        "rebuild_s",
        "rebuild_MiB",
        "restore_p50_ms",
        "restore_max_ms",
        "process_p50_ms"
    );
    for r in rows {
        eprintln!(
            "{:<8} {:<8} {:>8.2} {:>11.1} {:>10.2} {:>13.1} {:>14.1} {:>14.1} {:>15.1}",
            r.scenario,
            r.method,
            r.build_s,
            r.build_bytes as f64 / 1048576.0,
            r.rebuild_s,
            r.rebuild_bytes as f64 / 1048576.0,
            r.step_p50_ms,
            r.step_max_ms,
            r.child_p50_ms
        );
    }
}

pub fn json(r: &SpareRow) -> serde_json::Value {
    serde_json::json!({
        "scenario": r.scenario, "op": "restore_from_spare", "spare_method": r.method,
        "spare_build_s": r.build_s, "spare_build_bytes": r.build_bytes,
        "spare_rebuild_s": r.rebuild_s, "spare_rebuild_bytes": r.rebuild_bytes,
        "restore_step_p50_ms": r.step_p50_ms, "restore_step_max_ms": r.step_max_ms,
        "process_p50_ms": r.child_p50_ms,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Bytes in use on the filesystems holding `dirs` (each counted once), after a sync and a
/// moment for freed blocks to be counted free.
fn used_bytes(dirs: &[PathBuf]) -> Result<u64, String> {
    super::sync();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut seen = Vec::new();
    let mut used = 0;
    for dir in dirs {
        let st = rustix::fs::statvfs(dir).map_err(|e| format!("statvfs {}: {e}", dir.display()))?;
        if !seen.contains(&st.f_fsid) {
            seen.push(st.f_fsid);
            used += (st.f_blocks - st.f_bfree) * st.f_frsize;
        }
    }
    Ok(used)
}
