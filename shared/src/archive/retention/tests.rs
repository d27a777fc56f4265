//! Tests of retention: keep-last and keep-within, the calendar tiers in a zone (across a DST
//! change and an ISO week-year end), covered runs, and what bad archives may never do.

use chrono::TimeZone;

use super::*;

/// Unix seconds of a UTC wall-clock time.
fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    chrono::Utc
        .with_ymd_and_hms(y, mo, d, h, mi, 0)
        .unwrap()
        .timestamp()
}

fn entries(list: &[(i64, bool)]) -> Vec<RetentionEntry> {
    list.iter()
        .enumerate()
        .map(|(i, &(ts, good))| RetentionEntry {
            id: format!("{i:02}"),
            ts,
            good,
            covers: Vec::new(),
        })
        .collect()
}

/// Good archives at these times.
fn good(times: &[i64]) -> Vec<RetentionEntry> {
    entries(&times.iter().map(|&t| (t, true)).collect::<Vec<_>>())
}

fn deleted(plan: &RetentionPlan) -> Vec<usize> {
    plan.to_delete().collect()
}

/// Each verdict as text: `-` for a deletion, else the reasons joined with `, `.
fn why(plan: &RetentionPlan) -> Vec<String> {
    plan.verdicts
        .iter()
        .map(|v| match v {
            Verdict::Delete => "-".to_owned(),
            Verdict::Keep(r) => r
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect()
}

fn policy() -> RetentionPolicy {
    RetentionPolicy::default()
}

#[test]
fn keep_last_and_keep_within_are_a_union() {
    let e = entries(&[
        (100, true),
        (500, true),
        (300, true),
        (200, true),
        (400, true),
    ]);
    let last2 = RetentionPolicy {
        keep_last: Some(2),
        ..policy()
    };
    assert_eq!(
        deleted(&plan_retention(&e, &last2, 1000).unwrap()),
        vec![0, 2, 3]
    );
    let within = RetentionPolicy {
        keep_within_secs: Some(750),
        ..policy()
    };
    // cutoff 250: 300, 400, 500 stay.
    assert_eq!(
        deleted(&plan_retention(&e, &within, 1000).unwrap()),
        vec![0, 3]
    );
    let both = RetentionPolicy {
        keep_last: Some(1),
        keep_within_secs: Some(650),
        ..policy()
    };
    // last 1: 500; younger than cutoff 350: 400, 500.
    let plan = plan_retention(&e, &both, 1000).unwrap();
    assert_eq!(deleted(&plan), vec![0, 2, 3]);
    assert_eq!(why(&plan)[1], "last, within");
    assert_eq!(why(&plan)[4], "within");
}

#[test]
fn bad_archives_never_fill_a_slot_and_the_newest_good_one_always_stays() {
    // The two newest are incomplete: keep_last 1 keeps the newest good one (ts 300), and
    // the bad ones go, however new.
    let e = entries(&[(500, false), (400, false), (300, true), (200, true)]);
    let p = RetentionPolicy {
        keep_last: Some(1),
        ..policy()
    };
    let plan = plan_retention(&e, &p, 1000).unwrap();
    assert_eq!(deleted(&plan), vec![0, 1, 3]);
    assert_eq!(why(&plan)[2], "last");

    // keep_within covering everything keeps only the good ones.
    let p = RetentionPolicy {
        keep_within_secs: Some(10_000),
        ..policy()
    };
    assert_eq!(deleted(&plan_retention(&e, &p, 1000).unwrap()), vec![0, 1]);

    // A daily tier: the bad archive of Dec 5 takes no day; Dec 4 and Dec 3 fill both.
    let e = entries(&[
        (utc(2026, 12, 5, 12, 0), false),
        (utc(2026, 12, 4, 12, 0), true),
        (utc(2026, 12, 3, 12, 0), true),
        (utc(2026, 12, 2, 12, 0), true),
    ]);
    let p = RetentionPolicy {
        keep_daily: Some(2),
        ..policy()
    };
    let plan = plan_retention(&e, &p, utc(2026, 12, 6, 0, 0)).unwrap();
    assert_eq!(
        why(&plan),
        vec!["-", "daily 2026-12-04", "daily 2026-12-03", "-"]
    );

    // keep_within alone, everything old: only the newest good one stays, and says why.
    let e = entries(&[(500, false), (400, true), (300, true)]);
    let p = RetentionPolicy {
        keep_within_secs: Some(1),
        ..policy()
    };
    let plan = plan_retention(&e, &p, 1000).unwrap();
    assert_eq!(why(&plan), vec!["-", "newest_good", "-"]);

    // No good archive at all: nothing is deleted.
    let e = entries(&[(500, false), (400, false)]);
    let plan = plan_retention(&e, &p, 1000).unwrap();
    assert!(deleted(&plan).is_empty());
    assert_eq!(why(&plan), vec!["no_good_archive", "no_good_archive"]);
}

#[test]
fn ties_empty_policies_and_merging() {
    // Equal timestamps: the larger id is newer.
    let mut e = good(&[5, 5]);
    e[0].id = "a".into();
    e[1].id = "b".into();
    let p = RetentionPolicy {
        keep_last: Some(1),
        ..policy()
    };
    assert_eq!(deleted(&plan_retention(&e, &p, 10).unwrap()), vec![0]);
    assert_eq!(
        plan_retention(&e, &policy(), 10),
        Err(RetentionError::NoRule)
    );
    assert!(plan_retention(&[], &p, 10).unwrap().verdicts.is_empty());

    // Any one rule makes a policy; the zone alone does not.
    assert!(policy().is_empty());
    let berlin = parse_timezone("Europe/Berlin").unwrap();
    assert!(
        RetentionPolicy {
            timezone: Some(berlin),
            ..policy()
        }
        .is_empty()
    );
    let one_each = [
        RetentionPolicy {
            keep_last: Some(1),
            ..policy()
        },
        RetentionPolicy {
            keep_hourly: Some(1),
            ..policy()
        },
        RetentionPolicy {
            keep_daily: Some(1),
            ..policy()
        },
        RetentionPolicy {
            keep_weekly: Some(1),
            ..policy()
        },
        RetentionPolicy {
            keep_monthly: Some(1),
            ..policy()
        },
        RetentionPolicy {
            keep_yearly: Some(1),
            ..policy()
        },
        RetentionPolicy {
            keep_within_secs: Some(1),
            ..policy()
        },
    ];
    for p in one_each {
        assert!(!p.is_empty(), "{p:?}");
    }

    // `or` takes every field from the defaults where the policy leaves it unset.
    let defaults = RetentionPolicy {
        keep_last: Some(1),
        keep_hourly: Some(2),
        keep_daily: Some(3),
        keep_weekly: Some(4),
        keep_monthly: Some(5),
        keep_yearly: Some(6),
        keep_within_secs: Some(7),
        timezone: Some(berlin),
    };
    assert_eq!(policy().or(defaults), defaults);
    let own = RetentionPolicy {
        keep_daily: Some(30),
        timezone: Some(Tz::UTC),
        ..policy()
    };
    let merged = own.or(defaults);
    assert_eq!(merged.keep_daily, Some(30));
    assert_eq!(merged.timezone, Some(Tz::UTC));
    assert_eq!(merged.keep_yearly, Some(6));
    assert_eq!(policy().zone(), Tz::UTC);

    let err = parse_timezone("Mars/Olympus").unwrap_err().to_string();
    assert!(
        err.contains("Mars/Olympus") && err.contains("Europe/Berlin"),
        "{err}"
    );
}

#[test]
fn the_tiers_keep_one_archive_per_bucket_newest_first() {
    let e = good(&[
        utc(2026, 12, 5, 12, 0), // Saturday, 2026-W49
        utc(2026, 12, 5, 6, 0),
        utc(2026, 12, 4, 12, 0),  // Friday, 2026-W49
        utc(2026, 11, 29, 12, 0), // Sunday, 2026-W48
        utc(2026, 11, 20, 12, 0),
        utc(2026, 10, 15, 12, 0),
        utc(2025, 6, 1, 12, 0),
        utc(2024, 3, 1, 12, 0),
    ]);
    let p = RetentionPolicy {
        keep_last: Some(1),
        keep_daily: Some(2),
        keep_weekly: Some(2),
        keep_monthly: Some(2),
        keep_yearly: Some(3),
        ..policy()
    };
    let plan = plan_retention(&e, &p, utc(2026, 12, 6, 0, 0)).unwrap();
    assert_eq!(
        why(&plan),
        vec![
            "last, daily 2026-12-05, weekly 2026-W49, monthly 2026-12, yearly 2026",
            "-",
            "daily 2026-12-04",
            "weekly 2026-W48, monthly 2026-11",
            "-",
            "-",
            "yearly 2025",
            "yearly 2024",
        ]
    );

    // A gap takes no slot: three daily slots reach back past the empty Dec 4, and the
    // hourly tier keeps one per hour.
    let e = good(&[
        utc(2026, 12, 5, 12, 40),
        utc(2026, 12, 5, 12, 10),
        utc(2026, 12, 3, 22, 0),
        utc(2026, 12, 3, 10, 0),
        utc(2026, 12, 2, 9, 0),
        utc(2026, 12, 1, 20, 0),
    ]);
    let p = RetentionPolicy {
        keep_daily: Some(3),
        keep_hourly: Some(2),
        ..policy()
    };
    let plan = plan_retention(&e, &p, utc(2026, 12, 6, 0, 0)).unwrap();
    assert_eq!(
        why(&plan),
        vec![
            "hourly 2026-12-05T12, daily 2026-12-05",
            "-",
            "hourly 2026-12-03T22, daily 2026-12-03",
            "-",
            "daily 2026-12-02",
            "-",
        ]
    );
}

#[test]
fn weeks_are_iso_weeks_across_the_year_end() {
    // 2027-01-02 is in ISO week 2026-W53 (2027-W01 starts on Monday 4 January), while its
    // calendar year is 2027.
    let e = good(&[
        utc(2027, 1, 4, 12, 0),
        utc(2027, 1, 2, 12, 0),
        utc(2026, 12, 28, 12, 0),
        utc(2026, 12, 27, 12, 0),
    ]);
    let now = utc(2027, 1, 5, 0, 0);
    let weekly = RetentionPolicy {
        keep_weekly: Some(3),
        ..policy()
    };
    assert_eq!(
        why(&plan_retention(&e, &weekly, now).unwrap()),
        vec!["weekly 2027-W01", "weekly 2026-W53", "-", "weekly 2026-W52"]
    );
    let yearly = RetentionPolicy {
        keep_yearly: Some(2),
        ..policy()
    };
    assert_eq!(
        why(&plan_retention(&e, &yearly, now).unwrap()),
        vec!["yearly 2027", "-", "yearly 2026", "-"]
    );

    // The zone decides the week: Sunday 23:30 UTC is already Monday in Berlin.
    let e = good(&[utc(2027, 1, 3, 23, 30), utc(2027, 1, 2, 12, 0)]);
    let utc_plan = plan_retention(&e, &weekly, now).unwrap();
    assert_eq!(why(&utc_plan), vec!["weekly 2026-W53", "-"]);
    let berlin = RetentionPolicy {
        timezone: Some(parse_timezone("Europe/Berlin").unwrap()),
        ..weekly
    };
    assert_eq!(
        why(&plan_retention(&e, &berlin, now).unwrap()),
        vec!["weekly 2027-W01", "weekly 2026-W53"]
    );
}

#[test]
fn days_are_the_zones_days_across_a_dst_change() {
    // Berlin leaves summer time on 2026-10-25 (03:00 CEST becomes 02:00 CET): that day
    // has 25 hours, from 24 Oct 22:00 UTC to 25 Oct 23:00 UTC.
    let e = good(&[
        utc(2026, 10, 25, 23, 30), // Berlin 26 Oct 00:30 CET
        utc(2026, 10, 25, 22, 30), // Berlin 25 Oct 23:30 CET
        utc(2026, 10, 24, 22, 30), // Berlin 25 Oct 00:30 CEST
        utc(2026, 10, 24, 21, 30), // Berlin 24 Oct 23:30 CEST
    ]);
    let now = utc(2026, 10, 27, 0, 0);
    let daily = RetentionPolicy {
        keep_daily: Some(3),
        ..policy()
    };
    assert_eq!(
        why(&plan_retention(&e, &daily, now).unwrap()),
        vec!["daily 2026-10-25", "-", "daily 2026-10-24", "-"],
        "in UTC"
    );
    let berlin = RetentionPolicy {
        timezone: Some(parse_timezone("Europe/Berlin").unwrap()),
        ..daily
    };
    assert_eq!(
        why(&plan_retention(&e, &berlin, now).unwrap()),
        vec![
            "daily 2026-10-26",
            "daily 2026-10-25",
            "-",
            "daily 2026-10-24"
        ],
        "in Berlin"
    );

    // The repeated hour 02:00–03:00 is one local hour: its two archives share one bucket.
    let e = good(&[utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 0, 30)]);
    let hourly = RetentionPolicy {
        keep_hourly: Some(2),
        ..berlin
    };
    assert_eq!(
        why(&plan_retention(&e, &hourly, now).unwrap()),
        vec!["hourly 2026-10-25T02, daily 2026-10-25", "-"]
    );
}

#[test]
fn an_archive_fills_the_buckets_of_the_runs_it_covers() {
    // Runs on Dec 2 and Dec 3 found the source unchanged since the archive of Dec 1: that
    // archive stands for three days, so three daily slots reach back only to Dec 2 and the
    // archive of Nov 30 goes.
    let mut e = good(&[
        utc(2026, 12, 4, 10, 0),
        utc(2026, 12, 1, 10, 0),
        utc(2026, 11, 30, 10, 0),
    ]);
    e[1].covers = vec![utc(2026, 12, 2, 10, 0), utc(2026, 12, 3, 10, 0)];
    let now = utc(2026, 12, 5, 0, 0);
    let daily = RetentionPolicy {
        keep_daily: Some(3),
        ..policy()
    };
    assert_eq!(
        why(&plan_retention(&e, &daily, now).unwrap()),
        vec![
            "daily 2026-12-04",
            "daily 2026-12-03, daily 2026-12-02",
            "-"
        ]
    );
    let mut plain = e.clone();
    plain[1].covers.clear();
    assert_eq!(
        deleted(&plan_retention(&plain, &daily, now).unwrap()),
        Vec::<usize>::new(),
        "without the covered runs each archive fills one day"
    );

    // An old archive covering yesterday is kept for yesterday, in place of a newer one
    // that stands only for a day further back.
    let mut e = good(&[
        utc(2026, 12, 4, 10, 0),
        utc(2026, 11, 25, 10, 0),
        utc(2026, 11, 20, 10, 0),
    ]);
    e[2].covers = vec![utc(2026, 12, 3, 10, 0)];
    let daily2 = RetentionPolicy {
        keep_daily: Some(2),
        ..policy()
    };
    assert_eq!(
        why(&plan_retention(&e, &daily2, now).unwrap()),
        vec!["daily 2026-12-04", "-", "daily 2026-12-03"]
    );
    // keep-within counts an archive at its newest run.
    let within = RetentionPolicy {
        keep_within_secs: Some(3 * 86_400),
        ..policy()
    };
    assert_eq!(
        why(&plan_retention(&e, &within, now).unwrap()),
        vec!["within", "-", "within"]
    );

    // Covered runs never make a bad archive count.
    e[2].good = false;
    assert_eq!(
        why(&plan_retention(&e, &daily2, now).unwrap()),
        vec!["daily 2026-12-04", "daily 2026-11-25", "-"]
    );
}

#[test]
fn the_newest_good_archive_stays_when_older_ones_fill_every_slot() {
    // The older archive covers a run after the newest one: the single hourly slot goes to
    // it, and the newest good archive is kept all the same.
    let mut e = good(&[utc(2026, 12, 5, 10, 0), utc(2026, 12, 1, 10, 0)]);
    e[1].covers = vec![utc(2026, 12, 5, 11, 0)];
    let hourly = RetentionPolicy {
        keep_hourly: Some(1),
        ..policy()
    };
    let plan = plan_retention(&e, &hourly, utc(2026, 12, 6, 0, 0)).unwrap();
    assert_eq!(why(&plan), vec!["newest_good", "hourly 2026-12-05T11"]);
}

#[test]
fn off_calendar_timestamps_take_no_bucket() {
    // A key's timestamp is whatever the bucket holds: one far beyond the calendar fills no
    // tier (it is still the newest good archive, so it stays).
    let e = good(&[i64::MAX, utc(2026, 12, 4, 10, 0)]);
    let p = RetentionPolicy {
        keep_daily: Some(1),
        ..policy()
    };
    assert_eq!(
        why(&plan_retention(&e, &p, 0).unwrap()),
        vec!["newest_good", "daily 2026-12-04"]
    );
}
