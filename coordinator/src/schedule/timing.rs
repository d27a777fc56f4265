//! When a schedule fires: its cron expression read in its time zone (croner, with chrono-tz),
//! shifted by its jitter, and the decision for one look at the clock. No I/O; every function
//! takes the time it is asked about, so tests walk days and DST changes without waiting.

use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use sha2::{Digest, Sha256};

use crate::store::Trigger;

/// Why a schedule's timing was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error(
        "cron expression {expr:?} is not valid: {reason}; use five fields (minute hour \
         day-of-month month day-of-week, e.g. \"0 2 * * *\" for 02:00 daily), or six with \
         seconds first"
    )]
    Cron { expr: String, reason: String },
    #[error(
        "time zone {0:?} is not an IANA zone name; use one like \"UTC\", \"Europe/Berlin\" or \
         \"America/New_York\""
    )]
    Zone(String),
    #[error("cron expression {0:?} never fires")]
    Never(String),
    #[error(
        "cron expression {expr:?} fires every {gap_secs} s; schedules may fire at most every \
         {min_secs} s (schedules.min_interval_secs)"
    )]
    TooOften {
        expr: String,
        gap_secs: i64,
        min_secs: i64,
    },
    #[error("jitter {0} s is out of range: use 0 to 86400 s")]
    Jitter(i64),
}

/// A schedule's occurrences.
#[derive(Debug, Clone)]
pub struct Timing {
    cron: Cron,
    tz: Tz,
    /// Every occurrence fires this long after its slot: fixed per schedule (a hash of its
    /// name within the jitter), so every coordinator agrees on it and schedules sharing an
    /// expression spread out.
    offset_ms: i64,
}

/// What one look at the clock decided for a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing due; the next fire time, if any.
    Wait { next_ms: Option<i64> },
    /// Handle the occurrence at `slot_ms` (the newest due one; older missed ones are folded
    /// into it, never run one by one).
    Fire { slot_ms: i64, trigger: Trigger },
}

impl Timing {
    pub fn new(
        name: &str,
        expr: &str,
        zone: &str,
        jitter_secs: i64,
    ) -> Result<Timing, TimingError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| TimingError::Cron {
                expr: expr.to_owned(),
                reason: e.to_string(),
            })?;
        let tz: Tz = zone
            .parse()
            .map_err(|_| TimingError::Zone(zone.to_owned()))?;
        if !(0..=86_400).contains(&jitter_secs) {
            return Err(TimingError::Jitter(jitter_secs));
        }
        let offset_ms = if jitter_secs == 0 {
            0
        } else {
            let hash = Sha256::digest(name.as_bytes());
            let n = u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"));
            (n % (jitter_secs as u64 * 1000)) as i64
        };
        Ok(Timing {
            cron,
            tz,
            offset_ms,
        })
    }

    /// Refuses expressions that never fire or fire more often than every `min_secs`, looking
    /// at the occurrences after `from_ms`.
    pub fn check(&self, expr: &str, from_ms: i64, min_secs: i64) -> Result<(), TimingError> {
        let upcoming = self.slots_after(from_ms, 16);
        if upcoming.is_empty() {
            return Err(TimingError::Never(expr.to_owned()));
        }
        if let Some(gap) = upcoming.windows(2).map(|w| w[1] - w[0]).min()
            && gap < min_secs * 1000
        {
            return Err(TimingError::TooOften {
                expr: expr.to_owned(),
                gap_secs: gap / 1000,
                min_secs,
            });
        }
        Ok(())
    }

    fn at(&self, ms: i64) -> Option<DateTime<Tz>> {
        self.tz.timestamp_millis_opt(ms).single()
    }

    /// Occurrences strictly after `after_ms`, at most `n` (fewer when the expression stops).
    fn slots_after(&self, after_ms: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n);
        let mut t = after_ms;
        while out.len() < n {
            let Some(next) = self
                .at(t)
                .and_then(|dt| self.cron.find_next_occurrence(&dt, false).ok())
            else {
                break;
            };
            t = next.timestamp_millis();
            out.push(t);
        }
        out
    }

    /// The newest occurrence at or before `ms`.
    fn latest_at_or_before(&self, ms: i64) -> Option<i64> {
        let dt = self.at(ms)?;
        let prev = self.cron.find_previous_occurrence(&dt, true).ok()?;
        Some(prev.timestamp_millis())
    }

    /// When the occurrence at `slot_ms` fires.
    pub fn fire_ms(&self, slot_ms: i64) -> i64 {
        slot_ms + self.offset_ms
    }

    /// The next `n` fire times after `after_ms`.
    pub fn upcoming(&self, after_ms: i64, n: usize) -> Vec<i64> {
        self.slots_after(after_ms - self.offset_ms, n)
            .into_iter()
            .map(|s| self.fire_ms(s))
            .collect()
    }

    /// How long without a success makes a schedule overdue when its operator said nothing:
    /// twice the longest gap between its next occurrences (a weekday schedule's weekend
    /// included), 0 when it fires at most once.
    pub fn default_alert_after_secs(&self, now_ms: i64) -> i64 {
        let next = self.slots_after(now_ms, 16);
        next.windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .map_or(0, |gap| 2 * gap / 1000)
    }

    /// What to do at `now_ms` for a schedule whose last handled occurrence is `cursor_ms`.
    /// An occurrence is on time within `late_grace_ms` of its fire time; later than that,
    /// no coordinator was running when it fell due, and it is caught up once or recorded as
    /// missed.
    pub fn decide(
        &self,
        cursor_ms: i64,
        now_ms: i64,
        catch_up: bool,
        late_grace_ms: i64,
    ) -> Decision {
        let due = self
            .latest_at_or_before(now_ms - self.offset_ms)
            .filter(|&slot| slot > cursor_ms);
        let Some(slot_ms) = due else {
            let from = cursor_ms.max(now_ms - self.offset_ms);
            let next_ms = self.slots_after(from, 1).first().map(|&s| self.fire_ms(s));
            return Decision::Wait { next_ms };
        };
        let late = now_ms - self.fire_ms(slot_ms);
        let trigger = if late <= late_grace_ms {
            Trigger::Scheduled
        } else if catch_up {
            Trigger::CatchUp
        } else {
            Trigger::Missed
        };
        Decision::Fire { slot_ms, trigger }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    /// Looks at the clock every `step_ms` from `from` to `to`, firing as the scheduler does
    /// (each fire moves the cursor), and returns the slots fired with their trigger.
    fn walk(t: &Timing, from: i64, to: i64, step_ms: i64) -> Vec<(i64, Trigger)> {
        let mut cursor = from;
        let mut fired = Vec::new();
        let mut now = from;
        while now <= to {
            if let Decision::Fire { slot_ms, trigger } = t.decide(cursor, now, true, 5 * MIN) {
                fired.push((slot_ms, trigger));
                cursor = slot_ms;
            }
            now += step_ms;
        }
        fired
    }

    #[test]
    fn a_daily_schedule_fires_once_per_local_day_across_both_dst_changes() {
        let t = Timing::new("nightly", "30 2 * * *", "Europe/Berlin", 0).unwrap();
        // Autumn: 02:30 happens twice on 2026-10-25 (CEST, then CET); it fires once.
        let fired = walk(
            &t,
            ms("2026-10-23T12:00:00+02:00"),
            ms("2026-10-27T12:00:00+01:00"),
            MIN,
        );
        let slots: Vec<i64> = fired.iter().map(|f| f.0).collect();
        assert_eq!(
            slots,
            vec![
                ms("2026-10-24T02:30:00+02:00"),
                ms("2026-10-25T02:30:00+02:00"),
                ms("2026-10-26T02:30:00+01:00"),
                ms("2026-10-27T02:30:00+01:00"),
            ]
        );
        assert!(fired.iter().all(|f| f.1 == Trigger::Scheduled));
        // Spring: 02:30 does not exist on 2026-03-29; it fires once, just after the gap.
        let fired = walk(
            &t,
            ms("2026-03-28T12:00:00+01:00"),
            ms("2026-03-30T12:00:00+02:00"),
            MIN,
        );
        let slots: Vec<i64> = fired.iter().map(|f| f.0).collect();
        assert_eq!(
            slots,
            vec![
                ms("2026-03-29T03:00:00+02:00"),
                ms("2026-03-30T02:30:00+02:00"),
            ]
        );
    }

    #[test]
    fn an_hourly_schedule_fires_once_per_real_hour_on_the_25_hour_day() {
        let t = Timing::new("hourly", "0 * * * *", "Europe/Berlin", 0).unwrap();
        let fired = walk(
            &t,
            ms("2026-10-25T00:00:00+02:00"),
            ms("2026-10-26T00:00:00+01:00"),
            MIN,
        );
        // 25 hours on the day the clock goes back: 01:00 … 23:00 local, 02:00 twice, and
        // the next midnight; never a duplicate instant.
        assert_eq!(fired.len(), 25);
        let mut slots: Vec<i64> = fired.iter().map(|f| f.0).collect();
        slots.dedup();
        assert_eq!(slots.len(), 25);
        assert!(slots.windows(2).all(|w| w[1] - w[0] == HOUR));
    }

    #[test]
    fn missed_occurrences_are_caught_up_once_or_recorded_as_missed() {
        let t = Timing::new("m", "* * * * *", "UTC", 0).unwrap();
        let cursor = ms("2026-12-01T10:00:00Z");
        // Every coordinator was down from 10:00:30 to 10:03:20: three occurrences missed.
        let now = ms("2026-12-01T10:03:20Z");
        assert_eq!(
            t.decide(cursor, now, true, 10_000),
            Decision::Fire {
                slot_ms: ms("2026-12-01T10:03:00Z"),
                trigger: Trigger::CatchUp
            }
        );
        assert_eq!(
            t.decide(cursor, now, false, 10_000),
            Decision::Fire {
                slot_ms: ms("2026-12-01T10:03:00Z"),
                trigger: Trigger::Missed
            }
        );
        // Within the grace it is simply on time.
        assert_eq!(
            t.decide(cursor, now, false, 30_000),
            Decision::Fire {
                slot_ms: ms("2026-12-01T10:03:00Z"),
                trigger: Trigger::Scheduled
            }
        );
        // Once handled, nothing more until the next minute.
        assert_eq!(
            t.decide(ms("2026-12-01T10:03:00Z"), now, true, 10_000),
            Decision::Wait {
                next_ms: Some(ms("2026-12-01T10:04:00Z"))
            }
        );
    }

    #[test]
    fn jitter_is_fixed_per_schedule_and_within_bounds() {
        let a = Timing::new("alpha", "0 2 * * *", "UTC", 600).unwrap();
        let b = Timing::new("beta", "0 2 * * *", "UTC", 600).unwrap();
        let again = Timing::new("alpha", "0 2 * * *", "UTC", 600).unwrap();
        assert_eq!(a.offset_ms, again.offset_ms);
        assert_ne!(a.offset_ms, b.offset_ms);
        assert!((0..600_000).contains(&a.offset_ms));
        let slot = ms("2026-12-02T02:00:00Z");
        let before = a.fire_ms(slot) - 1;
        assert!(matches!(
            a.decide(slot - 1, before, true, 0),
            Decision::Wait { .. }
        ));
        assert_eq!(
            a.decide(slot - 1, a.fire_ms(slot), true, 0),
            Decision::Fire {
                slot_ms: slot,
                trigger: Trigger::Scheduled
            }
        );
        assert_eq!(a.upcoming(slot, 1), vec![a.fire_ms(slot)]);
        assert_eq!(
            a.upcoming(a.fire_ms(slot), 1),
            vec![a.fire_ms(slot + 24 * HOUR)]
        );
    }

    #[test]
    fn the_default_overdue_window_spans_a_weekday_schedules_weekend() {
        let t = Timing::new("weekdays", "0 2 * * 1-5", "UTC", 0).unwrap();
        // From a Wednesday: Friday to Monday is the longest gap, three days.
        let window = t.default_alert_after_secs(ms("2026-12-02T12:00:00Z"));
        assert_eq!(window, 2 * 3 * 86_400);
        let hourly = Timing::new("h", "0 * * * *", "UTC", 0).unwrap();
        assert_eq!(hourly.default_alert_after_secs(0), 7_200);
    }

    #[test]
    fn bad_timings_are_refused_with_what_to_write() {
        let err = Timing::new("x", "61 * * * *", "UTC", 0).unwrap_err();
        assert!(err.to_string().contains("five fields"), "{err}");
        let err = Timing::new("x", "0 2 * * *", "Mars/Olympus", 0).unwrap_err();
        assert!(err.to_string().contains("Europe/Berlin"), "{err}");
        let t = Timing::new("x", "*/10 * * * * *", "UTC", 0).unwrap();
        let err = t.check("*/10 * * * * *", 0, 60).unwrap_err();
        assert!(
            matches!(err, TimingError::TooOften { gap_secs: 10, .. }),
            "{err}"
        );
        t.check("*/10 * * * * *", 0, 10).unwrap();
        // February 30th: refused when parsed or when its occurrences are looked for.
        if let Ok(never) = Timing::new("x", "0 0 30 2 *", "UTC", 0) {
            assert!(never.check("0 0 30 2 *", 0, 60).is_err());
        }
    }
}
