//! Decision records: who approved, denied or revoked an AccessRequest, and when.
//!
//! Admission writes them (and only admission: it rejects any other change to the annotation)
//! into the `gatehouse.dev/decisions` annotation as a JSON list, each record sealed with an
//! HMAC-SHA256 over the request's UID and the record's fields. The key lives in a Secret only the
//! operator reads. The reconciler reads the annotation back and trusts only records whose seal
//! verifies, so a record written while admission was bypassed (webhook deleted, direct etcd
//! write) or copied from another request counts for nothing.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use gatehouse_crds::contract::annotations;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a decision record decides.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DecisionKind {
    /// One approval towards `approval.required`.
    Approve,
    /// Ends the request: Denied.
    Deny,
    /// Ends the request: Revoked (the certificate is published as revoked).
    Revoke,
}

impl DecisionKind {
    /// The annotation a user sets to ask for this decision.
    pub fn trigger_annotation(self) -> &'static str {
        match self {
            Self::Approve => annotations::APPROVE,
            Self::Deny => annotations::DENY,
            Self::Revoke => annotations::REVOKE,
        }
    }

    /// Lower-case verb, for messages.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
            Self::Revoke => "revoke",
        }
    }
}

/// One decision as admission recorded it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DecisionRecord {
    /// Approve, deny or revoke.
    pub kind: DecisionKind,
    /// The deciding user's name as the API server authenticated it.
    pub user: String,
    /// When admission accepted the decision, RFC 3339 UTC with seconds.
    pub time: String,
    /// The annotation's value: an approval note or a deny/revoke reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// base64 HMAC-SHA256 seal over the request UID and the fields above.
    pub seal: String,
}

/// The HMAC key that seals decision records. `Debug` never prints it.
#[derive(Clone)]
pub struct SealKey(zeroize::Zeroizing<Vec<u8>>);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

impl SealKey {
    /// Length of a freshly generated key.
    pub const LEN: usize = 32;

    /// Wrap key bytes read from the operator's Secret.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(zeroize::Zeroizing::new(bytes))
    }

    fn mac(
        &self,
        request_uid: &str,
        kind: DecisionKind,
        user: &str,
        time: &str,
        message: Option<&str>,
    ) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail; an empty key would still seal.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        // Length-prefix every field so no two different records share a byte string.
        for field in [
            request_uid,
            kind.verb(),
            user,
            time,
            message.unwrap_or("\u{0}none"),
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac
    }

    /// Build a sealed record for the request with `request_uid`.
    pub fn seal(
        &self,
        request_uid: &str,
        kind: DecisionKind,
        user: &str,
        time: &str,
        message: Option<&str>,
    ) -> DecisionRecord {
        let tag = self
            .mac(request_uid, kind, user, time, message)
            .finalize()
            .into_bytes();
        DecisionRecord {
            kind,
            user: user.to_owned(),
            time: time.to_owned(),
            message: message.map(str::to_owned),
            seal: STANDARD_NO_PAD.encode(tag),
        }
    }

    /// Whether `record` was sealed with this key for the request with `request_uid`.
    pub fn verify(&self, request_uid: &str, record: &DecisionRecord) -> bool {
        let Ok(tag) = STANDARD_NO_PAD.decode(&record.seal) else {
            return false;
        };
        self.mac(
            request_uid,
            record.kind,
            &record.user,
            &record.time,
            record.message.as_deref(),
        )
        .verify_slice(&tag)
        .is_ok()
    }
}

/// Parse the decisions annotation. A missing annotation is an empty list.
pub fn parse(annotation: Option<&str>) -> Result<Vec<DecisionRecord>, serde_json::Error> {
    match annotation {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text),
    }
}

/// Serialize records for the annotation.
pub fn render(records: &[DecisionRecord]) -> String {
    // A Vec of plain structs always serializes.
    serde_json::to_string(records).unwrap_or_else(|_| "[]".to_owned())
}

/// The decisions that count, read from an AccessRequest's annotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decisions {
    /// Approvals with a valid seal, one per user (the first), in order.
    pub approvals: Vec<DecisionRecord>,
    /// The first valid deny, if any.
    pub denied: Option<DecisionRecord>,
    /// The first valid revoke, if any.
    pub revoked: Option<DecisionRecord>,
    /// How many records failed verification (or the annotation did not parse): never trusted.
    pub untrusted: usize,
}

/// Verify and tally the records in `annotation` for the request with `request_uid`, ignoring
/// approvals by `requester` (admission refuses them; a forged one must not count either).
pub fn tally(
    key: &SealKey,
    request_uid: &str,
    requester: Option<&str>,
    annotation: Option<&str>,
) -> Decisions {
    let mut decisions = Decisions::default();
    let records = match parse(annotation) {
        Ok(records) => records,
        Err(_) => {
            decisions.untrusted = 1;
            return decisions;
        }
    };
    for record in records {
        if !key.verify(request_uid, &record) {
            decisions.untrusted += 1;
            continue;
        }
        match record.kind {
            DecisionKind::Approve => {
                let own = requester == Some(record.user.as_str());
                let repeated = decisions.approvals.iter().any(|a| a.user == record.user);
                if !own && !repeated {
                    decisions.approvals.push(record);
                }
            }
            DecisionKind::Deny => {
                decisions.denied.get_or_insert(record);
            }
            DecisionKind::Revoke => {
                decisions.revoked.get_or_insert(record);
            }
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealKey {
        SealKey::new(vec![7; SealKey::LEN])
    }

    #[test]
    fn sealed_records_verify_only_for_their_request_and_content() {
        let record = key().seal(
            "uid-1",
            DecisionKind::Approve,
            "bob",
            "2026-11-22T10:00:00Z",
            Some("ok"),
        );
        assert!(key().verify("uid-1", &record));
        assert!(
            !key().verify("uid-2", &record),
            "a record copied to another request"
        );
        assert!(
            !SealKey::new(vec![8; 32]).verify("uid-1", &record),
            "another key"
        );
        for tampered in [
            DecisionRecord {
                user: "carol".into(),
                ..record.clone()
            },
            DecisionRecord {
                kind: DecisionKind::Deny,
                ..record.clone()
            },
            DecisionRecord {
                message: None,
                ..record.clone()
            },
            DecisionRecord {
                time: "2026-11-22T10:00:01Z".into(),
                ..record.clone()
            },
            DecisionRecord {
                seal: "AAAA".into(),
                ..record.clone()
            },
            DecisionRecord {
                seal: "not base64!".into(),
                ..record.clone()
            },
        ] {
            assert!(!key().verify("uid-1", &tampered), "{tampered:?}");
        }
    }

    #[test]
    fn field_boundaries_are_part_of_the_seal() {
        let a = key().seal("uid", DecisionKind::Approve, "bo", "b", None);
        let moved = DecisionRecord {
            user: "bob".into(),
            time: String::new(),
            ..a.clone()
        };
        assert!(!key().verify("uid", &moved));
        let empty = key().seal("uid", DecisionKind::Approve, "bob", "t", Some(""));
        assert!(!key().verify(
            "uid",
            &DecisionRecord {
                message: None,
                ..empty
            }
        ));
    }

    #[test]
    fn tally_counts_distinct_sealed_approvals_and_ignores_the_rest() {
        let k = key();
        let records = vec![
            k.seal("u", DecisionKind::Approve, "bob", "t1", None),
            k.seal("u", DecisionKind::Approve, "bob", "t2", Some("again")),
            k.seal("u", DecisionKind::Approve, "alice", "t3", None),
            SealKey::new(vec![1; 32]).seal("u", DecisionKind::Approve, "mallory", "t4", None),
            k.seal("u", DecisionKind::Approve, "carol", "t5", None),
        ];
        let decisions = tally(&k, "u", Some("alice"), Some(&render(&records)));
        let users: Vec<_> = decisions
            .approvals
            .iter()
            .map(|a| a.user.as_str())
            .collect();
        assert_eq!(users, ["bob", "carol"]);
        assert_eq!(
            decisions.approvals[0].time, "t1",
            "the first approval by a user counts"
        );
        assert_eq!(decisions.untrusted, 1);
        assert_eq!(decisions.denied, None);
    }

    #[test]
    fn tally_finds_deny_and_revoke_and_distrusts_garbage() {
        let k = key();
        let records = vec![
            k.seal("u", DecisionKind::Deny, "bob", "t1", Some("not now")),
            k.seal("u", DecisionKind::Revoke, "alice", "t2", Some("done")),
        ];
        let decisions = tally(&k, "u", Some("alice"), Some(&render(&records)));
        assert_eq!(decisions.denied.map(|d| d.user), Some("bob".into()));
        assert_eq!(
            decisions.revoked.and_then(|d| d.message),
            Some("done".into())
        );
        let garbage = tally(&k, "u", None, Some("{not json"));
        assert_eq!(garbage.untrusted, 1);
        assert!(garbage.approvals.is_empty());
        assert_eq!(tally(&k, "u", None, None), Decisions::default());
    }

    #[test]
    fn debug_redacts_the_key() {
        assert_eq!(format!("{:?}", key()), "SealKey(<redacted>)");
    }
}
