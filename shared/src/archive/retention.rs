//! Retention as a pure decision: which of an app's archives a policy keeps, never the newest
//! good one.

use serde::{Deserialize, Serialize};

/// Keep the last `keep_last` archives and those younger than `keep_within_secs`; an archive
/// either rule keeps is kept. At least one rule must be set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    pub keep_last: Option<u32>,
    pub keep_within_secs: Option<u64>,
}

impl RetentionPolicy {
    /// True when neither rule is set (such a policy is refused, not read as "delete all").
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none() && self.keep_within_secs.is_none()
    }

    /// `self`'s rules where set, `defaults`' otherwise.
    pub fn or(self, defaults: RetentionPolicy) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last.or(defaults.keep_last),
            keep_within_secs: self.keep_within_secs.or(defaults.keep_within_secs),
        }
    }
}

/// Why a policy could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "no retention rule: set keep_last and/or keep_within_secs (in the request or the \
         coordinator's [archive] config)"
    )]
    NoRule,
}

/// One archive of an app, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionEntry {
    /// Tie-break for equal timestamps (the uuid); larger is newer.
    pub id: String,
    /// Unix seconds.
    pub ts: i64,
    /// Checked complete: metadata present and its size matching the object. A caller must
    /// check, newest first, at least up to the first good archive; older ones may be left
    /// `false`, since goodness only protects the newest good archive.
    pub good: bool,
}

/// Why an archive is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// Among the last `keep_last`.
    Last,
    /// Younger than `keep_within_secs`.
    Recent,
    /// The newest good archive, kept whatever the policy says.
    NewestGood,
    /// The app has no good archive: nothing is deleted until it has one.
    NoGoodArchive,
}

/// The verdict for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Keep(KeepReason),
    Delete,
}

/// Verdicts in the order of the entries given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPlan {
    pub verdicts: Vec<Verdict>,
}

impl RetentionPlan {
    /// Indexes (into the entries given) of the archives to delete.
    pub fn to_delete(&self) -> impl Iterator<Item = usize> + '_ {
        self.verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| **v == Verdict::Delete)
            .map(|(i, _)| i)
    }
}

/// Decides which of one app's archives `policy` keeps at time `now` (unix seconds).
pub fn plan_retention(
    entries: &[RetentionEntry],
    policy: &RetentionPolicy,
    now: i64,
) -> Result<RetentionPlan, RetentionError> {
    if policy.is_empty() {
        return Err(RetentionError::NoRule);
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&entries[a], &entries[b]);
        b.ts.cmp(&a.ts).then_with(|| b.id.cmp(&a.id))
    });
    let newest_good = order.iter().copied().find(|&i| entries[i].good);
    let mut verdicts = vec![Verdict::Delete; entries.len()];
    let Some(newest_good) = newest_good else {
        verdicts.fill(Verdict::Keep(KeepReason::NoGoodArchive));
        return Ok(RetentionPlan { verdicts });
    };
    let cutoff = policy
        .keep_within_secs
        .map(|d| now.saturating_sub(i64::try_from(d).unwrap_or(i64::MAX)));
    for (rank, &i) in order.iter().enumerate() {
        verdicts[i] = if policy.keep_last.is_some_and(|n| rank < n as usize) {
            Verdict::Keep(KeepReason::Last)
        } else if cutoff.is_some_and(|c| entries[i].ts > c) {
            Verdict::Keep(KeepReason::Recent)
        } else if i == newest_good {
            Verdict::Keep(KeepReason::NewestGood)
        } else {
            Verdict::Delete
        };
    }
    Ok(RetentionPlan { verdicts })
}
