//! The seal keys in admission's Secret: their layout, which are in force, and when to rotate.
//! Pure; [`crate::secrets`] reads and writes the Secret.
//!
//! Layout of Secret `gatehouse-admission`: `seal.key` is version 1 (the key every install starts
//! with), `seal.key.v<N>` later versions; the highest version seals, and `seal.retired.v<N>`
//! records when version N stopped sealing. A retired key still verifies for a grace period, so
//! records written just before a rotation count; after it, the key is removed. The leader rotates
//! when the current key is older than the rotation period, or at once when the Secret carries
//! the annotation [`ROTATE_ANNOTATION`].

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use jiff::Timestamp;

use crate::decisions::{SealKey, SealKeys};

/// Annotate the admission Secret with this (any value) to rotate the seal key now.
pub const ROTATE_ANNOTATION: &str = "gatehouse.dev/rotate-seal-key";

/// The data key of seal key `version`.
pub fn key_name(version: u32) -> String {
    if version == 1 {
        "seal.key".to_owned()
    } else {
        format!("seal.key.v{version}")
    }
}

/// The data key recording when `version` stopped sealing.
pub fn retired_name(version: u32) -> String {
    format!("seal.retired.v{version}")
}

fn version_of(name: &str) -> Option<u32> {
    match name {
        "seal.key" => Some(1),
        other => other
            .strip_prefix("seal.key.v")?
            .parse()
            .ok()
            .filter(|v| *v > 1),
    }
}

fn retired_at(data: &BTreeMap<String, Vec<u8>>, version: u32) -> Option<Timestamp> {
    std::str::from_utf8(data.get(&retired_name(version))?)
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn versions(data: &BTreeMap<String, Vec<u8>>) -> Vec<u32> {
    let mut versions: Vec<u32> = data.keys().filter_map(|k| version_of(k)).collect();
    versions.sort_unstable();
    versions
}

fn within(since: Timestamp, span: Duration, now: Timestamp) -> bool {
    jiff::SignedDuration::try_from(span).is_ok_and(|span| since + span > now)
}

/// The keys in force at `now`: the highest version seals; older ones verify until `grace` after
/// their retirement (one without a retirement time verifies: it was never replaced properly).
pub fn in_force(
    data: &BTreeMap<String, Vec<u8>>,
    now: Timestamp,
    grace: Duration,
) -> Result<SealKeys, String> {
    let versions = versions(data);
    let Some(&current) = versions.last() else {
        return Err("holds no seal key (seal.key)".to_owned());
    };
    let key = |version: u32| -> Result<SealKey, String> {
        let bytes = &data[&key_name(version)];
        if bytes.len() < SealKey::LEN {
            return Err(format!(
                "{} must hold at least {} bytes",
                key_name(version),
                SealKey::LEN
            ));
        }
        Ok(SealKey::versioned(version, bytes.clone()))
    };
    let mut retired = Vec::new();
    for &version in &versions[..versions.len() - 1] {
        if retired_at(data, version).is_none_or(|at| within(at, grace, now)) {
            retired.push(key(version)?);
        }
    }
    Ok(SealKeys::new(key(current)?, retired))
}

/// A change to the Secret's data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rotation {
    /// The new key: (version, data key); its bytes are the caller's fresh randomness.
    pub new_key: Option<(u32, String)>,
    /// Data to set (retirement times).
    pub set: BTreeMap<String, String>,
    /// Data keys to remove (keys past their grace, and their retirement times).
    pub remove: Vec<String>,
}

/// What rotating and pruning at `now` changes, if anything. `created` is when the Secret (and
/// so version 1) was created; `requested` is the [`ROTATE_ANNOTATION`].
pub fn plan(
    data: &BTreeMap<String, Vec<u8>>,
    created: Timestamp,
    now: Timestamp,
    period: Duration,
    grace: Duration,
    requested: bool,
) -> Option<Rotation> {
    let versions = versions(data);
    let &current = versions.last()?;
    let current_since = if current == 1 {
        created
    } else {
        retired_at(data, current - 1).unwrap_or(created)
    };
    let mut rotation = Rotation::default();
    if requested || !within(current_since, period, now) {
        let next = current + 1;
        rotation.new_key = Some((next, key_name(next)));
        rotation.set.insert(retired_name(current), now.to_string());
    }
    for &version in &versions[..versions.len() - 1] {
        if retired_at(data, version).is_some_and(|at| !within(at, grace, now)) {
            rotation.remove.push(key_name(version));
            rotation.remove.push(retired_name(version));
        }
    }
    (rotation != Rotation::default()).then_some(rotation)
}

/// The seal keys every handler reads, replaced when the Secret changes.
#[derive(Debug, Clone)]
pub struct SharedSealKeys(Arc<RwLock<Arc<SealKeys>>>);

impl SharedSealKeys {
    /// Start with `keys`.
    pub fn new(keys: SealKeys) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(keys))))
    }

    /// The keys in force now.
    pub fn get(&self) -> Arc<SealKeys> {
        match self.0.read() {
            Ok(keys) => Arc::clone(&keys),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replace them.
    pub fn set(&self, keys: SealKeys) {
        match self.0.write() {
            Ok(mut slot) => *slot = Arc::new(keys),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::DecisionKind;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn a_rotation_keeps_old_records_valid_for_the_grace_period_only() {
        let t0 = 1_800_000_000;
        let mut data: BTreeMap<String, Vec<u8>> = [("seal.key".to_owned(), vec![1; 32])].into();
        // Version 1, created at t0, is due after 30 days, or when asked.
        assert_eq!(
            plan(&data, at(t0), at(t0 + 86_000), 30 * DAY, 3 * DAY, false),
            None
        );
        let rotation = plan(&data, at(t0), at(t0 + 100), 30 * DAY, 3 * DAY, true).unwrap();
        assert_eq!(rotation.new_key, Some((2, "seal.key.v2".to_owned())));
        assert_eq!(
            rotation.set,
            [("seal.retired.v1".to_owned(), at(t0 + 100).to_string())].into()
        );
        let before = in_force(&data, at(t0 + 100), 3 * DAY).unwrap();
        let old_record = before.seal("uid", DecisionKind::Approve, "bob", "t", None);

        data.insert("seal.key.v2".into(), vec![2; 32]);
        data.insert(
            "seal.retired.v1".into(),
            at(t0 + 100).to_string().into_bytes(),
        );
        let after = in_force(&data, at(t0 + 200), 3 * DAY).unwrap();
        assert_eq!(after.current_version(), 2);
        let new_record = after.seal("uid", DecisionKind::Approve, "carol", "t", None);
        assert_eq!(new_record.key_version, 2);
        assert!(
            after.verify("uid", &old_record),
            "old records count during the grace period"
        );
        assert!(after.verify("uid", &new_record));
        assert!(
            !before.verify("uid", &new_record),
            "keys loaded before the rotation cannot verify a version-2 record (until reloaded)"
        );

        // After the grace period the old key no longer verifies and is pruned.
        let later = at(t0 + 100 + 3 * 86_400);
        assert!(
            !in_force(&data, later, 3 * DAY)
                .unwrap()
                .verify("uid", &old_record)
        );
        let prune = plan(&data, at(t0), later, 30 * DAY, 3 * DAY, false).unwrap();
        assert_eq!(prune.new_key, None);
        assert_eq!(prune.remove, ["seal.key", "seal.retired.v1"]);

        // Version 2 is due 30 days after it started sealing.
        let mut pruned = data.clone();
        pruned.remove("seal.key");
        pruned.remove("seal.retired.v1");
        assert_eq!(
            plan(
                &pruned,
                at(t0),
                at(t0 + 20 * 86_400),
                30 * DAY,
                3 * DAY,
                false
            ),
            None
        );
        assert!(
            in_force(&pruned, later, 3 * DAY)
                .unwrap()
                .verify("uid", &new_record)
        );
    }

    #[test]
    fn a_record_claiming_another_version_does_not_verify() {
        let data: BTreeMap<String, Vec<u8>> = [
            ("seal.key".to_owned(), vec![1; 32]),
            ("seal.key.v2".to_owned(), vec![2; 32]),
        ]
        .into();
        let keys = in_force(&data, at(1_800_000_000), DAY).unwrap();
        let mut record = keys.seal("uid", DecisionKind::Approve, "bob", "t", None);
        record.key_version = 1;
        assert!(!keys.verify("uid", &record));
        assert!(in_force(&BTreeMap::new(), at(0), DAY).is_err());
        let short: BTreeMap<String, Vec<u8>> = [("seal.key".to_owned(), vec![1; 8])].into();
        assert!(
            in_force(&short, at(0), DAY)
                .unwrap_err()
                .contains("at least 32 bytes")
        );
    }
}
