//! Times in query strings: Unix seconds (`1700000000.5`) or RFC 3339
//! (`2026-11-23T18:00:00Z`, `2026-11-23T19:00:00.25+01:00`).

use fogbank_taas::Timestamp;

pub fn parse(raw: &str) -> Result<Timestamp, String> {
    let bad = || format!("{raw:?} is neither Unix seconds nor an RFC 3339 time");
    if let Ok(secs) = raw.parse::<f64>() {
        return Timestamp::from_secs_f64(secs).ok_or_else(bad);
    }
    rfc3339(raw).ok_or_else(bad)
}

fn rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded: String = fraction[..digits]
            .chars()
            .chain(std::iter::repeat('0'))
            .take(6)
            .collect();
        micros = padded.parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    if secs < 0 {
        return None;
    }
    Some(Timestamp(secs as u64 * 1_000_000 + micros as u64))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
        assert_eq!(parse("1970-01-01T00:00:00Z").unwrap(), Timestamp(0));
        assert_eq!(
            parse("2000-02-29T00:00:00Z").unwrap(),
            Timestamp(951_782_400_000_000)
        );
        for bad in [
            "",
            "yesterday",
            "2023-13-01T00:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "-5",
            "NaN",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
