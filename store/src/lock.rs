//! S3 Object Lock settings, pure: they come from the binaries' flags
//! (`--s3-object-lock-mode`, `--s3-object-lock-retention`, parsed here) and go to the
//! [`S3Store`](crate::S3Store), which puts a retention (mode and retain-until date, computed
//! here) and an `x-amz-checksum-sha256` of the content (S3 requires a checksum on locked
//! writes; base64 here) on every PutObject and CreateMultipartUpload. Also the decisions of
//! the start-up check (is Object Lock enabled on the bucket?) and of write-once puts (was a
//! write refused by `If-None-Match: *`?); the I/O is in [`crate::once`] and the objects module.
//!
//! Live recording pieces (`KEY.parts/NNNNNN`, [`Store::put_object`](crate::Store::put_object))
//! are locked like everything else, but are plain writes (a piece may be re-sent with more
//! data after a failure). Removing them after the final object lands only adds delete markers
//! in a locked (hence versioned) bucket; their locked versions stay until the retention ends
//! and a lifecycle rule (`NoncurrentVersionExpiration`) removes them. So while a session runs,
//! its pieces are as hard to delete as the final recording will be.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockMode};

use crate::error::{Error, Result};

/// The flag naming the lock mode (errors name it).
pub const MODE_FLAG: &str = "--s3-object-lock-mode";
/// The flag naming the retention (errors name it).
pub const RETENTION_FLAG: &str = "--s3-object-lock-retention";
/// The longest retention accepted: a typo of a few zeros must not lock a bucket for ages.
pub const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Who may shorten or lift a retention before it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` may (the bypass header is needed).
    Governance,
    /// Nobody, not even the bucket's root user.
    Compliance,
}

impl LockMode {
    pub(crate) fn sdk(self) -> ObjectLockMode {
        match self {
            LockMode::Governance => ObjectLockMode::Governance,
            LockMode::Compliance => ObjectLockMode::Compliance,
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        })
    }
}

/// Object Lock retention put on every object the store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// Governance or compliance.
    pub mode: LockMode,
    /// How long after its write an object stays locked.
    pub retention: Duration,
}

/// The Object Lock flags of every store writer (the proxy, the operator's audit writer), as
/// given; [`ObjectLockFlags::lock`] parses them.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ObjectLockFlags {
    /// S3 Object Lock on every object written: none, governance or compliance. The bucket
    /// must have Object Lock enabled, or the writer does not start.
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "s3-object-lock-mode",
            env = "GATEHOUSE_S3_OBJECT_LOCK_MODE",
            default_value = "none"
        )
    )]
    pub mode: String,
    /// How long each object stays locked after it is written, like 30d or 1d12h (units s, m,
    /// h, d); needed when the mode is not none.
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "s3-object-lock-retention",
            env = "GATEHOUSE_S3_OBJECT_LOCK_RETENTION",
            default_value = ""
        )
    )]
    pub retention: String,
}

impl ObjectLockFlags {
    /// The lock they name ([`ObjectLock::parse`]).
    pub fn lock(&self) -> Result<Option<ObjectLock>> {
        ObjectLock::parse(&self.mode, &self.retention)
    }
}

impl ObjectLock {
    /// The lock named by the flags' values: `mode` is `none` (or empty: no lock, the
    /// retention is then ignored), `governance` or `compliance` (any case); `retention` is
    /// one or more `<number><unit>` with units `s`, `m`, `h`, `d` (`30d`, `1d12h`), more than
    /// zero and at most [`MAX_RETENTION`]. Errors name the flag.
    pub fn parse(mode: &str, retention: &str) -> Result<Option<ObjectLock>> {
        let mode = match mode.trim().to_ascii_lowercase().as_str() {
            "" | "none" => return Ok(None),
            "governance" => LockMode::Governance,
            "compliance" => LockMode::Compliance,
            other => {
                return Err(config_error(
                    MODE_FLAG,
                    format!("{other:?} is not one of none, governance, compliance"),
                ));
            }
        };
        let retention = parse_retention(retention.trim())?;
        Ok(Some(ObjectLock { mode, retention }))
    }

    /// The retain-until date of an object written at `now`: `now + retention`, whole
    /// seconds rounded up (never shorter than asked).
    pub fn retain_until(&self, now: SystemTime) -> Result<DateTime> {
        retain_until(now, self.retention)
    }
}

/// `now + retention` as an S3 timestamp, rounded up to a whole second.
fn retain_until(now: SystemTime, retention: Duration) -> Result<DateTime> {
    let overflow = || config_error(RETENTION_FLAG, "the retain-until date overflows".to_owned());
    let until = now.checked_add(retention).ok_or_else(overflow)?;
    let since_epoch = until.duration_since(UNIX_EPOCH).map_err(|_| overflow())?;
    let secs = since_epoch.as_secs() + u64::from(since_epoch.subsec_nanos() > 0);
    Ok(DateTime::from_secs(
        i64::try_from(secs).map_err(|_| overflow())?,
    ))
}

/// `30d`, `12h`, `1d12h`, `90m`, `3600s`.
fn parse_retention(text: &str) -> Result<Duration> {
    let invalid = || {
        config_error(
            RETENTION_FLAG,
            format!(
                "{text:?} is not a retention: write <number><unit> with units s, m, h, d (like 30d)"
            ),
        )
    };
    if text.is_empty() {
        return Err(config_error(
            RETENTION_FLAG,
            format!("needed when {MODE_FLAG} is governance or compliance (like 30d)"),
        ));
    }
    let mut rest = text;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return Err(invalid());
        }
        let (number, after) = rest.split_at(digits);
        let mut chars = after.chars();
        let unit: u64 = match chars.next() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            Some('d') => 86_400,
            _ => return Err(invalid()),
        };
        let number: u64 = number.parse().map_err(|_| invalid())?;
        total = number
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(invalid)?;
        rest = chars.as_str();
    }
    let retention = Duration::from_secs(total);
    if retention.is_zero() {
        return Err(config_error(
            RETENTION_FLAG,
            format!("{text:?} is zero; use {MODE_FLAG} none for no lock"),
        ));
    }
    if retention > MAX_RETENTION {
        return Err(config_error(
            RETENTION_FLAG,
            format!("{text:?} is longer than 100 years"),
        ));
    }
    Ok(retention)
}

fn config_error(flag: &'static str, message: String) -> Error {
    Error::ObjectLockConfig { flag, message }
}

/// Whether a bucket's `ObjectLockEnabled` allows locked writes; the error says what to do.
pub(crate) fn check_lock_enabled(bucket: &str, enabled: Option<&ObjectLockEnabled>) -> Result<()> {
    match enabled {
        Some(ObjectLockEnabled::Enabled) => Ok(()),
        other => Err(Error::CheckObjectLock {
            bucket: bucket.to_owned(),
            message: format!(
                "Object Lock is configured ({MODE_FLAG}) but the bucket does not have it enabled \
                 (ObjectLockEnabled: {}); create the bucket with Object Lock, or set {MODE_FLAG} none",
                other.map_or("unset", |e| e.as_str())
            ),
        }),
    }
}

/// Base64 (standard alphabet, padded): how S3 wants checksums.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A write refused because of `If-None-Match: *` (HTTP 412).
pub(crate) fn is_precondition_failed<E>(error: &SdkError<E>) -> bool {
    error
        .raw_response()
        .is_some_and(|r| r.status().as_u16() == 412)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use sha2::{Digest, Sha256};

    const DAY: u64 = 86_400;

    #[test]
    fn parse_reads_mode_and_retention_and_names_the_flag() {
        let lock = |mode, secs| {
            Some(ObjectLock {
                mode,
                retention: Duration::from_secs(secs),
            })
        };
        let ok: &[(&str, &str, Option<ObjectLock>)] = &[
            ("", "", None),
            ("none", "", None),
            ("NONE", "garbage", None),
            ("governance", "30d", lock(LockMode::Governance, 30 * DAY)),
            (
                "GOVERNANCE",
                "1d12h",
                lock(LockMode::Governance, DAY + 12 * 3600),
            ),
            (" compliance ", "90m", lock(LockMode::Compliance, 90 * 60)),
            ("Compliance", "3600s", lock(LockMode::Compliance, 3600)),
            (
                "compliance",
                "36500d",
                lock(LockMode::Compliance, 36500 * DAY),
            ),
        ];
        for (mode, retention, want) in ok {
            assert_eq!(
                ObjectLock::parse(mode, retention).unwrap(),
                *want,
                "{mode:?} {retention:?}"
            );
        }
        let bad: &[(&str, &str, &str, &str)] = &[
            (
                "legal-hold",
                "30d",
                MODE_FLAG,
                "not one of none, governance",
            ),
            ("governance", "", RETENTION_FLAG, "needed when"),
            ("governance", "30", RETENTION_FLAG, "is not a retention"),
            ("governance", "d", RETENTION_FLAG, "is not a retention"),
            ("governance", "30days", RETENTION_FLAG, "is not a retention"),
            ("governance", "1y", RETENTION_FLAG, "is not a retention"),
            ("governance", "-1d", RETENTION_FLAG, "is not a retention"),
            ("governance", "1.5d", RETENTION_FLAG, "is not a retention"),
            ("governance", "0d", RETENTION_FLAG, "is zero"),
            (
                "governance",
                "36501d",
                RETENTION_FLAG,
                "longer than 100 years",
            ),
            (
                "compliance",
                "999999999999d",
                RETENTION_FLAG,
                "longer than 100 years",
            ),
            (
                "compliance",
                "9999999999999d",
                RETENTION_FLAG,
                "is not a retention",
            ),
        ];
        for (mode, retention, flag, message) in bad {
            let err = ObjectLock::parse(mode, retention).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(&err, Error::ObjectLockConfig { flag: f, .. } if f == flag),
                "{mode:?} {retention:?}: {text}"
            );
            assert!(text.starts_with(flag), "{text}");
            assert!(text.contains(message), "{mode:?} {retention:?}: {text}");
        }
    }

    #[test]
    fn retain_until_is_now_plus_retention_rounded_up() {
        let at = |secs, nanos| UNIX_EPOCH + Duration::new(secs, nanos);
        let cases: &[(SystemTime, Duration, i64)] = &[
            (
                at(1_700_000_000, 0),
                Duration::from_secs(DAY),
                1_700_086_400,
            ),
            (at(1_700_000_000, 1), Duration::from_secs(60), 1_700_000_061),
            (
                at(1_700_000_000, 999_999_999),
                Duration::from_secs(1),
                1_700_000_002,
            ),
            (at(0, 0), Duration::from_secs(30 * DAY), 30 * DAY as i64),
        ];
        for (now, retention, want) in cases {
            let until = retain_until(*now, *retention).unwrap();
            assert_eq!(until, DateTime::from_secs(*want), "{now:?} + {retention:?}");
        }
        let lock = ObjectLock {
            mode: LockMode::Governance,
            retention: Duration::from_secs(10),
        };
        let before = SystemTime::now();
        let until = lock.retain_until(before).unwrap();
        assert!(until.secs() >= before.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 + 10);
    }

    #[test]
    fn lock_enabled_check_fails_closed() {
        assert!(check_lock_enabled("b", Some(&ObjectLockEnabled::Enabled)).is_ok());
        for enabled in [None, Some(ObjectLockEnabled::from("Disabled"))] {
            let err = check_lock_enabled("recordings", enabled.as_ref()).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::CheckObjectLock { .. }), "{text}");
            assert!(text.contains("recordings"), "{text}");
            assert!(text.contains(MODE_FLAG), "{text}");
        }
    }

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        let cases: &[(&[u8], &str)] = &[
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
            (&[0xfb, 0xff, 0xfe], "+//+"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input), *want, "{input:?}");
        }
        // SHA-256 of "" as S3 shows it.
        assert_eq!(
            base64(&Sha256::digest(b"")),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}
