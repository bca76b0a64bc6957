//! Go-style durations (`30m`, `1h30m`, `90s`), the format Kubernetes uses in CEL `duration()`
//! and that Gatehouse uses in `spec.duration` and `spec.maxDuration`.
//!
//! The grammar is the one the CRD's CEL rule checks: one or more `<number><unit>` with units
//! `ns`, `us`, `ms`, `s`, `m`, `h` and an optional decimal fraction. Parsing here must accept
//! exactly what the API server accepted, so the operator never fails on an admitted object.

use std::time::Duration;

/// The shortest access Gatehouse grants.
pub const MIN_ACCESS: Duration = Duration::from_secs(5 * 60);
/// The longest access Gatehouse grants.
pub const MAX_ACCESS: Duration = Duration::from_secs(24 * 60 * 60);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing to parse.
    #[error("empty duration: write it like 30m, 2h or 1h30m")]
    Empty,
    /// A character that is not part of the grammar.
    #[error(
        "invalid duration {text:?}: expected <number><unit> pairs with units ns, us, ms, s, m, h (like 1h30m)"
    )]
    Syntax {
        /// The input.
        text: String,
    },
    /// The value does not fit in a `Duration`.
    #[error("duration {text:?} is too large")]
    Overflow {
        /// The input.
        text: String,
    },
}

/// Parse a Go-style duration such as `1h30m` or `1.5h`.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let syntax = || DurationError::Syntax {
        text: text.to_owned(),
    };
    let overflow = || DurationError::Overflow {
        text: text.to_owned(),
    };
    let mut rest = text;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if int_len == 0 {
            return Err(syntax());
        }
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                if frac_len == 0 {
                    return Err(syntax());
                }
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        let unit_len = after_number
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let (unit, after_unit) = after_number.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => return Err(syntax()),
        };
        let int_value: u128 = int_part.parse().map_err(|_| overflow())?;
        let mut nanos = int_value.checked_mul(unit_nanos).ok_or_else(overflow)?;
        if !frac_part.is_empty() {
            // Fractions beyond nanosecond precision are dropped, as Go does.
            let digits = frac_part.len().min(30);
            let frac_value: u128 = frac_part[..digits].parse().map_err(|_| overflow())?;
            let scale = 10u128.pow(u32::try_from(digits).map_err(|_| overflow())?);
            nanos = nanos
                .checked_add(frac_value.checked_mul(unit_nanos).ok_or_else(overflow)? / scale)
                .ok_or_else(overflow)?;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(overflow)?;
        rest = after_unit;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| overflow())?;
    let sub = u32::try_from(total_nanos % 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, sub))
}

/// Format a duration compactly in the same grammar: `1h30m`, `45m`, `90s` → `1m30s`.
/// Sub-second parts are dropped; zero is `0s`.
pub fn format(duration: Duration) -> String {
    let total = duration.as_secs();
    if total == 0 {
        return "0s".to_owned();
    }
    let (hours, minutes, seconds) = (total / 3600, (total % 3600) / 60, total % 60);
    let mut out = String::new();
    for (value, unit) in [(hours, "h"), (minutes, "m"), (seconds, "s")] {
        if value > 0 {
            out.push_str(&value.to_string());
            out.push_str(unit);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        match parse(text) {
            Ok(d) => d,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn parses_the_forms_users_write() {
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("24h"), Duration::from_secs(86_400));
        assert_eq!(ok("1h30m"), Duration::from_secs(5_400));
        assert_eq!(ok("1.5h"), Duration::from_secs(5_400));
        assert_eq!(ok("90s"), Duration::from_secs(90));
        assert_eq!(ok("2h0m0s"), Duration::from_secs(7_200));
        assert_eq!(ok("1500ms"), Duration::from_millis(1_500));
        assert_eq!(ok("3us"), Duration::from_micros(3));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
    }

    #[test]
    fn refuses_what_the_crd_rule_refuses() {
        for bad in [
            "", "5", "m", "-5m", "5 m", "1h 30m", "1d", "5M", ".5h", "5.h", "1h-", "+5m",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert!(matches!(parse("1d"), Err(DurationError::Syntax { .. })));
    }

    #[test]
    fn refuses_overflow_instead_of_wrapping() {
        let huge = format!("{}h", u128::MAX);
        assert!(matches!(parse(&huge), Err(DurationError::Overflow { .. })));
    }

    #[test]
    fn formats_compactly_and_round_trips() {
        assert_eq!(format(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format(Duration::from_secs(300)), "5m");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::ZERO), "0s");
        for secs in [1, 59, 60, 61, 3_599, 3_600, 86_400, 86_399] {
            let d = Duration::from_secs(secs);
            assert_eq!(ok(&format(d)), d);
        }
    }

    #[test]
    fn bounds_are_five_minutes_to_a_day() {
        assert_eq!(ok("5m"), MIN_ACCESS);
        assert_eq!(ok("24h"), MAX_ACCESS);
    }
}
