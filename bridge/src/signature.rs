//! Request signatures, both directions. Pure.
//!
//! In: Slack's `X-Slack-Request-Timestamp` and `X-Slack-Signature` headers and the raw request
//! body, checked before anything parses the body; out: accept or the reason to answer 401.
//! Out: the `X-Gatehouse-Signature` the bridge puts on its own webhook POSTs.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How far a Slack request's timestamp may be from now (Slack's documented window).
pub const MAX_SKEW_SECS: i64 = 5 * 60;

/// Why a Slack request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A signature header is missing.
    MissingHeader,
    /// The timestamp is not a number of seconds.
    BadTimestamp,
    /// The timestamp is more than five minutes from now (a replay, or a wrong clock).
    Stale,
    /// The signature is malformed or does not match.
    BadSignature,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MissingHeader => "missing X-Slack-Request-Timestamp or X-Slack-Signature",
            Self::BadTimestamp => "X-Slack-Request-Timestamp is not a Unix time",
            Self::Stale => "X-Slack-Request-Timestamp is more than 5 minutes from now",
            Self::BadSignature => "X-Slack-Signature does not match",
        })
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; the fallback is unreachable but keeps this total.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
    for part in parts {
        mac.update(part);
    }
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Check a Slack request: `v0=` + hex HMAC-SHA256(signing secret, `v0:{timestamp}:{body}`),
/// timestamp within [`MAX_SKEW_SECS`] of `now_unix`, compared in constant time.
pub fn verify_slack(
    signing_secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), Rejection> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(Rejection::MissingHeader);
    };
    let seconds: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Rejection::BadTimestamp)?;
    if (now_unix - seconds).abs() > MAX_SKEW_SECS {
        return Err(Rejection::Stale);
    }
    let tag = signature
        .strip_prefix("v0=")
        .and_then(unhex)
        .ok_or(Rejection::BadSignature)?;
    mac(
        signing_secret,
        &[b"v0:", timestamp.trim().as_bytes(), b":", body],
    )
    .verify_slice(&tag)
    .map_err(|_| Rejection::BadSignature)
}

/// What Slack would put in `X-Slack-Signature` (for the bridge's own tests).
pub fn sign_slack(signing_secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let tag = mac(signing_secret, &[b"v0:", timestamp.as_bytes(), b":", body])
        .finalize()
        .into_bytes();
    format!("v0={}", hex(&tag))
}

/// The `X-Gatehouse-Signature` of a webhook POST: `sha256=` + hex HMAC-SHA256(key,
/// `{timestamp}.{body}`), where timestamp is the `X-Gatehouse-Timestamp` header.
pub fn sign_webhook(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let tag = mac(key, &[timestamp.as_bytes(), b".", body])
        .finalize()
        .into_bytes();
    format!("sha256={}", hex(&tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";

    #[test]
    fn slack_signatures_verify_only_when_exact_and_fresh() {
        let body = b"payload=%7B%22type%22%3A%22block_actions%22%7D";
        let now = 1_700_000_000;
        let ts = now.to_string();
        let good = sign_slack(SECRET, &ts, body);
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            &'a [u8],
            i64,
            Result<(), Rejection>,
        );
        let table: Vec<Case> = vec![
            (Some(&ts), Some(&good), body, now, Ok(())),
            (Some(&ts), Some(&good), body, now + MAX_SKEW_SECS, Ok(())),
            (
                Some(&ts),
                Some(&good),
                body,
                now + MAX_SKEW_SECS + 1,
                Err(Rejection::Stale),
            ),
            (
                Some(&ts),
                Some(&good),
                body,
                now - MAX_SKEW_SECS - 1,
                Err(Rejection::Stale),
            ),
            (
                Some(&ts),
                Some(&good),
                b"payload=other",
                now,
                Err(Rejection::BadSignature),
            ),
            (None, Some(&good), body, now, Err(Rejection::MissingHeader)),
            (Some(&ts), None, body, now, Err(Rejection::MissingHeader)),
            (
                Some("soon"),
                Some(&good),
                body,
                now,
                Err(Rejection::BadTimestamp),
            ),
            (
                Some(&ts),
                Some("v1=00"),
                body,
                now,
                Err(Rejection::BadSignature),
            ),
            (
                Some(&ts),
                Some("v0=zz"),
                body,
                now,
                Err(Rejection::BadSignature),
            ),
            (
                Some(&ts),
                Some(&good[..good.len() - 2]),
                body,
                now,
                Err(Rejection::BadSignature),
            ),
        ];
        for (i, (ts, sig, body, now, want)) in table.into_iter().enumerate() {
            assert_eq!(verify_slack(SECRET, ts, sig, body, now), want, "case {i}");
        }
        // Another secret never verifies.
        assert_eq!(
            verify_slack(b"other", Some(&ts), Some(&good), body, now),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn slack_documented_example_verifies() {
        // The worked example of Slack's "Verifying requests from Slack" guide.
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let signature = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert_eq!(sign_slack(SECRET, "1531420618", body.as_bytes()), signature);
        assert_eq!(
            verify_slack(
                SECRET,
                Some("1531420618"),
                Some(signature),
                body.as_bytes(),
                1_531_420_618 + 60
            ),
            Ok(())
        );
    }

    #[test]
    fn webhook_signature_covers_timestamp_and_body() {
        let a = sign_webhook(b"k", "1", b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64, "{a}");
        assert_ne!(a, sign_webhook(b"k", "2", b"{}"));
        assert_ne!(a, sign_webhook(b"k", "1", b"{ }"));
        assert_ne!(a, sign_webhook(b"j", "1", b"{}"));
    }
}
