//! Retention as a pure decision: which of an app's archives a policy keeps (restic `forget`
//! tiers in a time zone, keep-last, keep-within), and why; never the newest good one.

use std::fmt;

use chrono::{DateTime, Datelike, Timelike};
use chrono_tz::Tz;
use serde::Serialize;

/// The rules of a policy; an archive any rule keeps is kept. At least one rule must be set.
///
/// The calendar tiers follow restic's `forget`: walking the good archives newest first, a
/// tier keeps an archive when its bucket (its hour, day, ISO week, month or year in
/// `timezone`) differs from the bucket of the last archive that tier kept, until the tier's
/// count is used up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the N newest good archives.
    pub keep_last: Option<u32>,
    /// Keep the newest good archive of each of the last N hours that have one.
    pub keep_hourly: Option<u32>,
    /// … of each of the last N days that have one.
    pub keep_daily: Option<u32>,
    /// … of each of the last N ISO weeks that have one.
    pub keep_weekly: Option<u32>,
    /// … of each of the last N months that have one.
    pub keep_monthly: Option<u32>,
    /// … of each of the last N years that have one.
    pub keep_yearly: Option<u32>,
    /// Keep good archives younger than this many seconds.
    pub keep_within_secs: Option<u64>,
    /// The zone whose calendar the tiers bucket in; `None`: UTC.
    pub timezone: Option<Tz>,
}

impl RetentionPolicy {
    /// True when no rule is set (such a policy is refused, not read as "delete all"). The
    /// time zone alone is not a rule.
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && Tier::ALL.iter().all(|t| t.count(self).is_none())
            && self.keep_within_secs.is_none()
    }

    /// `self`'s rules (and zone) where set, `defaults`' otherwise.
    pub fn or(self, defaults: RetentionPolicy) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last.or(defaults.keep_last),
            keep_hourly: self.keep_hourly.or(defaults.keep_hourly),
            keep_daily: self.keep_daily.or(defaults.keep_daily),
            keep_weekly: self.keep_weekly.or(defaults.keep_weekly),
            keep_monthly: self.keep_monthly.or(defaults.keep_monthly),
            keep_yearly: self.keep_yearly.or(defaults.keep_yearly),
            keep_within_secs: self.keep_within_secs.or(defaults.keep_within_secs),
            timezone: self.timezone.or(defaults.timezone),
        }
    }

    /// The zone the tiers bucket in.
    pub fn zone(&self) -> Tz {
        self.timezone.unwrap_or(Tz::UTC)
    }
}

/// Parses an IANA time zone name (`Europe/Berlin`, `UTC`) for a policy.
pub fn parse_timezone(name: &str) -> Result<Tz, RetentionError> {
    name.parse::<Tz>()
        .map_err(|_| RetentionError::UnknownTimezone(name.chars().take(64).collect()))
}

/// Why a policy could not be made or applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "no retention rule: set keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, \
         keep_yearly and/or keep_within_secs (in the request or the coordinator's [archive] \
         config)"
    )]
    NoRule,
    #[error("unknown time zone {0:?}: give an IANA name such as Europe/Berlin or UTC")]
    UnknownTimezone(String),
}

/// One archive of an app, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionEntry {
    /// Tie-break for equal timestamps (the uuid); larger is newer.
    pub id: String,
    /// Unix seconds.
    pub ts: i64,
    /// Checked complete: metadata present and its size matching the object. A caller must
    /// check every archive it passes: only good archives fill a rule's slots.
    pub good: bool,
    /// Further run times (unix seconds) this archive stands for: a scheduled run that found
    /// the source unchanged since this archive records its time here. For the tiers and
    /// keep-within the archive counts at each of these times as well as at `ts`, so it is
    /// kept for the buckets those runs would have filled.
    pub covers: Vec<i64>,
}

impl RetentionEntry {
    /// Every time the archive stands for: `ts`, then `covers`.
    fn runs(&self) -> impl Iterator<Item = i64> + '_ {
        std::iter::once(self.ts).chain(self.covers.iter().copied())
    }
}

/// A rule that can keep an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Among the `keep_last` newest good archives.
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    /// Younger than `keep_within_secs`.
    Within,
    /// The newest good archive, kept whatever the policy says.
    NewestGood,
    /// The history has no good archive: nothing is deleted until it has one.
    NoGoodArchive,
    /// No metadata yet, and younger than the upload grace: its create may be writing the
    /// metadata right now.
    InProgress,
}

impl Rule {
    /// The rule's name in the API and the CLI (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Last => "last",
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Yearly => "yearly",
            Rule::Within => "within",
            Rule::NewestGood => "newest_good",
            Rule::NoGoodArchive => "no_good_archive",
            Rule::InProgress => "in_progress",
        }
    }
}

/// One reason an archive is kept: the rule, and for a tier the bucket it fills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeepReason {
    pub rule: Rule,
    /// The tier's bucket in the policy's zone: `2026-12-05T14` (hour), `2026-12-05` (day),
    /// `2026-W49` (ISO week), `2026-12` (month), `2026` (year); empty for other rules.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub bucket: String,
}

impl KeepReason {
    fn of(rule: Rule) -> Self {
        Self {
            rule,
            bucket: String::new(),
        }
    }
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rule.as_str())?;
        if !self.bucket.is_empty() {
            write!(f, " {}", self.bucket)?;
        }
        Ok(())
    }
}

/// The verdict for one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Kept, by every rule listed (at least one).
    Keep(Vec<KeepReason>),
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

/// A calendar tier.
#[derive(Debug, Clone, Copy)]
enum Tier {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Tier {
    const ALL: [Tier; 5] = [
        Tier::Hourly,
        Tier::Daily,
        Tier::Weekly,
        Tier::Monthly,
        Tier::Yearly,
    ];

    fn count(self, policy: &RetentionPolicy) -> Option<u32> {
        match self {
            Tier::Hourly => policy.keep_hourly,
            Tier::Daily => policy.keep_daily,
            Tier::Weekly => policy.keep_weekly,
            Tier::Monthly => policy.keep_monthly,
            Tier::Yearly => policy.keep_yearly,
        }
    }

    fn rule(self) -> Rule {
        match self {
            Tier::Hourly => Rule::Hourly,
            Tier::Daily => Rule::Daily,
            Tier::Weekly => Rule::Weekly,
            Tier::Monthly => Rule::Monthly,
            Tier::Yearly => Rule::Yearly,
        }
    }

    /// The label of the bucket holding unix time `ts` in `zone`; `None` when `ts` is off
    /// the calendar (a key's timestamp is bucket contents, so anything can be there).
    fn bucket(self, ts: i64, zone: Tz) -> Option<String> {
        let t = DateTime::from_timestamp(ts, 0)?.with_timezone(&zone);
        Some(match self {
            Tier::Hourly => format!(
                "{:04}-{:02}-{:02}T{:02}",
                t.year(),
                t.month(),
                t.day(),
                t.hour()
            ),
            Tier::Daily => format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day()),
            Tier::Weekly => {
                let w = t.iso_week();
                format!("{:04}-W{:02}", w.year(), w.week())
            }
            Tier::Monthly => format!("{:04}-{:02}", t.year(), t.month()),
            Tier::Yearly => format!("{:04}", t.year()),
        })
    }
}

/// Decides which of one history's archives `policy` keeps at time `now` (unix seconds), and
/// by which rules.
///
/// Only good archives fill keep-last, the tiers and keep-within: an incomplete archive never
/// takes a slot, and is deleted, unless the history has no good archive at all (then nothing
/// is deleted). The newest good archive is always kept.
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
    let good: Vec<usize> = order.into_iter().filter(|&i| entries[i].good).collect();
    let Some(&newest_good) = good.first() else {
        let all = Verdict::Keep(vec![KeepReason::of(Rule::NoGoodArchive)]);
        return Ok(RetentionPlan {
            verdicts: vec![all; entries.len()],
        });
    };
    let mut reasons: Vec<Vec<KeepReason>> = vec![Vec::new(); entries.len()];

    let last = policy.keep_last.map_or(0, |n| n as usize);
    for &i in good.iter().take(last) {
        reasons[i].push(KeepReason::of(Rule::Last));
    }

    // Every run a good archive stands for, newest first (a newer archive first on a tie).
    let mut runs: Vec<(i64, usize, usize)> = good
        .iter()
        .enumerate()
        .flat_map(|(rank, &i)| entries[i].runs().map(move |t| (t, rank, i)))
        .collect();
    runs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let zone = policy.zone();
    for tier in Tier::ALL {
        let Some(mut left) = tier.count(policy) else {
            continue;
        };
        let mut previous: Option<String> = None;
        for &(t, _, i) in &runs {
            if left == 0 {
                break;
            }
            let Some(bucket) = tier.bucket(t, zone) else {
                continue;
            };
            if previous.as_deref() != Some(bucket.as_str()) {
                previous = Some(bucket.clone());
                reasons[i].push(KeepReason {
                    rule: tier.rule(),
                    bucket,
                });
                left -= 1;
            }
        }
    }

    if let Some(within) = policy.keep_within_secs {
        let cutoff = now.saturating_sub(i64::try_from(within).unwrap_or(i64::MAX));
        for &i in &good {
            if entries[i].runs().max().is_some_and(|t| t > cutoff) {
                reasons[i].push(KeepReason::of(Rule::Within));
            }
        }
    }

    if reasons[newest_good].is_empty() {
        reasons[newest_good].push(KeepReason::of(Rule::NewestGood));
    }
    let verdicts = reasons
        .into_iter()
        .map(|r| {
            if r.is_empty() {
                Verdict::Delete
            } else {
                Verdict::Keep(r)
            }
        })
        .collect();
    Ok(RetentionPlan { verdicts })
}

#[cfg(test)]
mod tests;
