//! The revocation list as plain values: what is listed, for how long, and what is refused.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap()
}

fn status(phase: Phase, principal: &str, serial: &str, until: i64) -> AccessRequestStatus {
    AccessRequestStatus {
        phase: Some(phase),
        serial: Some(serial.into()),
        principals: vec![principal.into()],
        valid_before: Some(Time(at(until))),
        ..AccessRequestStatus::default()
    }
}

fn request(name: &str, status: AccessRequestStatus) -> Arc<AccessRequest> {
    let mut r: AccessRequest = serde_json::from_value(json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessRequest",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"target": {"hostGroup": "db"}, "login": "u", "publicKey": "k"},
    }))
    .unwrap();
    r.status = Some(status);
    Arc::new(r)
}

#[test]
fn only_revoked_still_valid_direct_certificates_are_listed() {
    let now = at(1_800_000_000);
    let direct = "gatehouse:team/db:u";
    let requests = [
        request(
            "revoked",
            status(Phase::Revoked, direct, "9", 1_800_000_100),
        ),
        request(
            "revoked-expired",
            status(Phase::Revoked, direct, "8", 1_799_999_000),
        ),
        request("issued", status(Phase::Issued, direct, "7", 1_800_000_100)),
        // A proxied certificate opens nothing without the proxy: never listed.
        request(
            "proxied",
            status(
                Phase::Revoked,
                "gatehouse-proxy:team/proxied",
                "6",
                1_800_000_100,
            ),
        ),
    ];
    assert_eq!(
        revoked(&requests, now),
        [Revoked {
            namespace: "team".into(),
            serial: 9,
            valid_before: at(1_800_000_100)
        }]
    );
}

#[test]
fn entries_are_kept_once_per_serial_until_their_certificate_expires() {
    let entry = |serial, until| Revoked {
        namespace: "team".into(),
        serial,
        valid_before: at(until),
    };
    let list = merged(
        vec![entry(3, 200)],
        vec![entry(3, 200), entry(1, 150), entry(2, 90)],
        at(100),
    );
    assert_eq!(list, [entry(1, 150), entry(3, 200)]);
    assert_eq!(merged(list, vec![], at(160)), [entry(3, 200)]);
}

#[test]
fn the_stored_list_parses_strictly_and_reads_the_old_format() {
    assert_eq!(parse(None).unwrap(), []);
    let old = r#"[{"namespace":"team","name":"r1","serial":42,"keyId":"gatehouse:team/r1 uid=u requester=alice","validBefore":"2027-01-01T00:00:00Z"}]"#;
    let list = parse(Some(old)).unwrap();
    assert_eq!((list[0].serial, list[0].namespace.as_str()), (42, "team"));
    for corrupt in ["{not json", "[{\"serial\": \"x\"}]", ""] {
        let error = parse(Some(corrupt)).unwrap_err().to_string();
        assert!(error.contains("does not parse"), "{corrupt:?}: {error}");
    }
    // Serials are written as strings and read back exactly, even above 2^53.
    let big = Revoked {
        namespace: "team".into(),
        serial: u64::MAX - 1,
        valid_before: at(2_000_000_000),
    };
    let text = serde_json::to_string(std::slice::from_ref(&big)).unwrap();
    assert!(text.contains("\"18446744073709551614\""), "{text}");
    assert_eq!(parse(Some(&text)).unwrap(), [big]);
}

#[test]
fn a_list_too_large_for_a_configmap_is_refused_not_truncated() {
    let ca = CaKey::generate("user-ca").unwrap();
    let entries: Vec<Revoked> = (1..=12_000)
        .map(|serial| Revoked {
            namespace: "a-rather-long-namespace-name-for-the-test".into(),
            serial,
            valid_before: at(2_000_000_000),
        })
        .collect();
    let (json, krl) = render(&entries[..1000], &ca, at(1_900_000_000)).unwrap();
    // About 110 bytes an entry with a 41-character namespace: a ConfigMap holds 8,000 of them.
    assert!(
        json.len() < 128 * 1024 && krl.len() < 10 * 1024,
        "compact: {} + {}",
        json.len(),
        krl.len()
    );
    let error = render(&entries, &ca, at(1_900_000_000))
        .unwrap_err()
        .to_string();
    assert!(error.contains("12000 entries"), "{error}");
}
