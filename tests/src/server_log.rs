//! Reading the server's log: the times of its `accepted` trace events (enabled per server with
//! `RUST_LOG=quire_server::http=trace`), and how connection attempts spread over time.

use std::time::Duration;

/// The environment that makes a server log every accepted TCP connection, uncoloured.
pub const ACCEPT_TRACE_ENV: &[(&str, &str)] = &[
    ("RUST_LOG", "info,quire_server::http=trace"),
    ("NO_COLOR", "1"),
];

/// When the server accepted each TCP connection in `log`, as time since the Unix epoch.
pub fn accept_times(log: &str) -> Vec<Duration> {
    log.lines()
        .map(strip_ansi)
        .filter(|line| line.contains("quire_server::http") && line.contains(" accepted"))
        .filter_map(|line| parse_rfc3339(line.split_whitespace().next()?))
        .collect()
}

/// Parses a UTC RFC 3339 timestamp as written by `tracing-subscriber`
/// (`2026-11-27T10:57:30.675357Z`).
pub fn parse_rfc3339(stamp: &str) -> Option<Duration> {
    let stamp = stamp.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let mut hms = time.split(':');
    let (h, min) = (
        hms.next()?.parse::<u64>().ok()?,
        hms.next()?.parse::<u64>().ok()?,
    );
    let secs: f64 = hms.next()?.parse().ok()?;
    let days = days_from_civil(y, m, d);
    let whole = u64::try_from(days).ok()? * 86_400 + h * 3600 + min * 60;
    Some(Duration::from_secs(whole) + Duration::from_secs_f64(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, ending with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// How a burst of connection attempts spread over time.
#[derive(Debug, Clone)]
pub struct Spread {
    pub attempts: usize,
    /// From the first attempt to the last.
    pub span: Duration,
    /// The most attempts inside any window of the given width.
    pub busiest_window: usize,
    /// Attempts per bucket from the first attempt on, as printable lines.
    pub histogram: String,
}

/// Measures the spread of `times` (any order) with a sliding `window` and `bucket`-wide bars.
pub fn spread(times: &[Duration], window: Duration, bucket: Duration) -> Spread {
    let mut times = times.to_vec();
    times.sort();
    let (Some(first), Some(last)) = (times.first().copied(), times.last().copied()) else {
        return Spread {
            attempts: 0,
            span: Duration::ZERO,
            busiest_window: 0,
            histogram: String::new(),
        };
    };
    let mut busiest_window = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window {
            start += 1;
        }
        busiest_window = busiest_window.max(end - start + 1);
    }
    let buckets = ((last - first).as_nanos() / bucket.as_nanos()) as usize + 1;
    let mut counts = vec![0usize; buckets];
    for t in &times {
        counts[((*t - first).as_nanos() / bucket.as_nanos()) as usize] += 1;
    }
    let histogram = counts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let from = bucket * i as u32;
            format!("{:>6} ms {:>4} {}\n", from.as_millis(), n, "#".repeat(*n))
        })
        .collect();
    Spread {
        attempts: times.len(),
        span: last - first,
        busiest_window,
        histogram,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tracing_timestamps_and_accept_lines() {
        let log = "\u{1b}[2m2026-11-27T10:57:30.675357Z\u{1b}[0m \u{1b}[35mTRACE\u{1b}[0m \
                   \u{1b}[2mquire_server::http\u{1b}[0m\u{1b}[2m:\u{1b}[0m accepted peer=1\n\
                   2026-11-27T10:57:31.000000Z  INFO quire_server::cli: serving\n\
                   2026-11-27T10:57:31.5Z TRACE quire_server::http: accepted peer=2\n";
        let times = accept_times(log);
        assert_eq!(times.len(), 2);
        assert_eq!(times[1] - times[0], Duration::from_micros(824_643));
        // 2026-11-27T00:00:00Z
        assert_eq!(
            parse_rfc3339("2026-11-27T00:00:00Z"),
            Some(Duration::from_secs(1_795_737_600))
        );
    }

    #[test]
    fn spread_finds_the_busiest_window() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        let s = spread(
            &ms(&[0, 10, 20, 500, 510, 1000]),
            Duration::from_millis(50),
            Duration::from_millis(100),
        );
        assert_eq!((s.attempts, s.busiest_window), (6, 3));
        assert_eq!(s.span, Duration::from_secs(1));
        assert_eq!(s.histogram.lines().count(), 11);
    }
}
