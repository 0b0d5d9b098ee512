//! Times and durations on the command line: `--since 2h` or `--since 2026-01-02T03:04:05Z`,
//! `--timeout 90s`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentry_core::time::{DurationMicros, UnixMicros};

use super::{Failure, status::fail};

/// `90s`, `15m`, `2h`, `7d`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, Failure> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| fail!("{text:?} is not a duration such as 90s, 15m, 2h or 7d"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(fail!(
                "{text:?} is not a duration such as 90s, 15m, 2h or 7d"
            ));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

pub fn now_micros() -> UnixMicros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as UnixMicros)
}

/// An RFC 3339 time, or a duration before now.
pub fn parse_time(text: &str) -> Result<UnixMicros, Failure> {
    if let Some(micros) = crate::convert::rfc3339_micros(text) {
        return Ok(micros);
    }
    let ago = parse_duration(text)
        .map_err(|_| fail!("{text:?} is neither an RFC 3339 time nor a duration such as 2h"))?;
    Ok(now_micros() - ago.as_micros() as DurationMicros)
}

/// `2026-01-02T03:04:05.000006Z`.
pub fn rfc3339(micros: UnixMicros) -> String {
    let secs = micros.div_euclid(1_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        micros.rem_euclid(1_000_000)
    )
}

pub fn timestamp(micros: UnixMicros) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

pub fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_parse_and_format() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("soon").is_err());
        assert_eq!(
            rfc3339(1_700_000_000_500_000),
            "2023-11-14T22:13:20.500000Z"
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20.5Z").unwrap(),
            1_700_000_000_500_000
        );
        let hour_ago = parse_time("1h").unwrap();
        assert!((now_micros() - hour_ago - 3_600_000_000).abs() < 5_000_000);
    }
}
