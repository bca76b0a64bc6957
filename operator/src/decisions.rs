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
    /// Which version of the seal key sealed it (1: the first key; records written before
    /// keys were versioned carry no version and are version 1).
    #[serde(
        default = "first_version",
        skip_serializing_if = "is_first_version",
        rename = "keyVersion"
    )]
    pub key_version: u32,
    /// base64 HMAC-SHA256 seal over the request UID and the fields above.
    pub seal: String,
}

fn first_version() -> u32 {
    1
}

fn is_first_version(version: &u32) -> bool {
    *version == 1
}

/// One version of the HMAC key that seals decision records. `Debug` never prints it.
#[derive(Clone)]
pub struct SealKey {
    version: u32,
    bytes: zeroize::Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealKey(v{}, <redacted>)", self.version)
    }
}

impl SealKey {
    /// Length of a freshly generated key.
    pub const LEN: usize = 32;

    /// Wrap key bytes read from the operator's Secret, as the first version.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self::versioned(1, bytes)
    }

    /// Wrap key bytes of a given version.
    pub fn versioned(version: u32, bytes: Vec<u8>) -> Self {
        Self {
            version,
            bytes: zeroize::Zeroizing::new(bytes),
        }
    }

    /// Its version.
    pub fn version(&self) -> u32 {
        self.version
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
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.bytes)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        // Later versions seal their version too (the first predates versions).
        if self.version > 1 {
            let version = format!("v{}", self.version);
            mac.update(&(version.len() as u64).to_be_bytes());
            mac.update(version.as_bytes());
        }
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
            key_version: self.version,
            seal: STANDARD_NO_PAD.encode(tag),
        }
    }

    /// Whether `record` was sealed with this key for the request with `request_uid`.
    pub fn verify(&self, request_uid: &str, record: &DecisionRecord) -> bool {
        if record.key_version != self.version {
            return false;
        }
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

/// The seal keys in force: the current one seals, it and the keys retired less than a grace
/// period ago verify, so records sealed just before a rotation still count.
#[derive(Debug, Clone)]
pub struct SealKeys {
    current: SealKey,
    verifying: Vec<SealKey>,
}

impl SealKeys {
    /// `current` seals; `current` and `retired` verify.
    pub fn new(current: SealKey, retired: Vec<SealKey>) -> Self {
        let mut verifying = retired;
        verifying.push(current.clone());
        Self { current, verifying }
    }

    /// Just one key.
    pub fn single(key: SealKey) -> Self {
        Self::new(key, Vec::new())
    }

    /// The version new records are sealed with.
    pub fn current_version(&self) -> u32 {
        self.current.version
    }

    /// Seal a record with the current key.
    pub fn seal(
        &self,
        request_uid: &str,
        kind: DecisionKind,
        user: &str,
        time: &str,
        message: Option<&str>,
    ) -> DecisionRecord {
        self.current.seal(request_uid, kind, user, time, message)
    }

    /// Whether `record` was sealed for the request with `request_uid` by a key still in force.
    pub fn verify(&self, request_uid: &str, record: &DecisionRecord) -> bool {
        self.verifying
            .iter()
            .any(|key| key.verify(request_uid, record))
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
    key: &SealKeys,
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
        let decisions = tally(
            &SealKeys::single(k.clone()),
            "u",
            Some("alice"),
            Some(&render(&records)),
        );
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
        let decisions = tally(
            &SealKeys::single(k.clone()),
            "u",
            Some("alice"),
            Some(&render(&records)),
        );
        assert_eq!(decisions.denied.map(|d| d.user), Some("bob".into()));
        assert_eq!(
            decisions.revoked.and_then(|d| d.message),
            Some("done".into())
        );
        let garbage = tally(&SealKeys::single(k.clone()), "u", None, Some("{not json"));
        assert_eq!(garbage.untrusted, 1);
        assert!(garbage.approvals.is_empty());
        assert_eq!(
            tally(&SealKeys::single(k.clone()), "u", None, None),
            Decisions::default()
        );
    }

    #[test]
    fn debug_redacts_the_key() {
        assert_eq!(format!("{:?}", key()), "SealKey(v1, <redacted>)");
    }
}
