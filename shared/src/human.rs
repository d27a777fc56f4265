//! Times, durations and sizes as people read them, for the CLI and the web console.

/// A timestamp relative to `now_ms`: `3s ago`, `5m ago`, `in 2d`, `never` for 0.
pub fn relative_time(now_ms: i64, at_ms: i64) -> String {
    if at_ms <= 0 {
        return "never".to_owned();
    }
    let delta_ms = now_ms.saturating_sub(at_ms);
    // Clock skew between the coordinator and us shows as "just now", not "in 1s".
    if delta_ms.abs() < 1000 {
        return "just now".to_owned();
    }
    let span = short_span(delta_ms.unsigned_abs() / 1000);
    if delta_ms > 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// A span in its largest whole unit: `59s`, `1m`, `23h`, `6d`.
fn short_span(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// A duration of `ms` milliseconds, short: `850ms`, `1.2s`, `2m05s`, `1h02m`, `3d04h`.
pub fn human_duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
        3_600_000..86_400_000 => format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
        _ => format!("{}d{:02}h", ms / 86_400_000, ms % 86_400_000 / 3_600_000),
    }
}

/// A unix-ms timestamp as UTC RFC 3339 with milliseconds: `2025-06-15T08:26:40.123Z`.
pub fn utc_time(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms).map_or_else(
        || at_ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    )
}

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `15.6 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_use_the_largest_unit() {
        let now = 1_700_000_000_000;
        assert_eq!(relative_time(now, now - 3_400), "3s ago");
        assert_eq!(relative_time(now, now - 59_999), "59s ago");
        assert_eq!(relative_time(now, now - 60_000), "1m ago");
        assert_eq!(relative_time(now, now - 2 * 3_600_000 - 5), "2h ago");
        assert_eq!(relative_time(now, now - 3 * 86_400_000), "3d ago");
        assert_eq!(relative_time(now, now + 30 * 86_400_000), "in 30d");
        assert_eq!(relative_time(now, now + 400), "just now");
        assert_eq!(relative_time(now, 0), "never");
    }
    #[test]
    fn durations_use_two_units_at_most() {
        assert_eq!(human_duration_ms(-5), "0ms");
        assert_eq!(human_duration_ms(850), "850ms");
        assert_eq!(human_duration_ms(1_234), "1.2s");
        assert_eq!(human_duration_ms(125_000), "2m05s");
        assert_eq!(human_duration_ms(3_720_000), "1h02m");
        assert_eq!(human_duration_ms(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }
    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(utc_time(1_750_000_000_123), "2025-06-15T15:06:40.123Z");
        assert_eq!(utc_time(0), "1970-01-01T00:00:00.000Z");
    }
    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(16 * 1024 * 1024 * 1024), "16.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }
}
