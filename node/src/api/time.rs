//! Times in query strings: Unix seconds (`1700000000.5`) or RFC 3339
//! (`2026-11-23T18:00:00Z`, `2026-11-23T19:00:00.25+01:00`).
//!
//! RFC 3339 is parsed by the `time` crate, strictly: a day the month does
//! not have, an offset past ±23:59 or a field that is not two digits is
//! an error, not a time.

use fogbank_taas::Timestamp;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn parse(raw: &str) -> Result<Timestamp, String> {
    let bad = || format!("{raw:?} is neither Unix seconds nor an RFC 3339 time");
    if let Ok(secs) = raw.parse::<f64>() {
        return Timestamp::from_secs_f64(secs).ok_or_else(bad);
    }
    rfc3339(raw).ok_or_else(bad)
}

fn rfc3339(s: &str) -> Option<Timestamp> {
    let time = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    // Before 1970 is before any reading.
    let micros = u64::try_from(time.unix_timestamp_nanos() / 1000).ok()?;
    Some(Timestamp(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms() {
        assert_eq!(
            parse("1700000000.5").unwrap(),
            Timestamp(1_700_000_000_500_000)
        );
        assert_eq!(
            parse("2023-11-14T22:13:20Z").unwrap(),
            Timestamp(1_700_000_000_000_000)
        );
        assert_eq!(
            parse("2023-11-14T23:13:20.25+01:00").unwrap(),
            Timestamp(1_700_000_000_250_000)
        );
        assert_eq!(
            parse("2023-11-14t22:13:20z").unwrap(),
            Timestamp(1_700_000_000_000_000)
        );
        assert_eq!(parse("1970-01-01T00:00:00Z").unwrap(), Timestamp(0));
        assert_eq!(
            parse("2000-02-29T00:00:00Z").unwrap(),
            Timestamp(951_782_400_000_000)
        );
    }

    #[test]
    fn impossible_times_are_errors() {
        for bad in [
            "",
            "yesterday",
            "2023-13-01T00:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "-5",
            "NaN",
            // Found by probing a gateway: each was taken as a time.
            "2024-01-01T00:00:00+99:99",
            "2024-02-31T00:00:00Z",
            "2024-+1-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2024-01-01T00:00:00+24:00",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
