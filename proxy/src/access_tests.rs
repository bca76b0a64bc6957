#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use gatehouse_crds::contract::identity::{proxied_principal, user_key_id as key_id};
use gatehouse_crds::{
    AccessPolicySpec, AccessRequestSpec, AccessRequestStatus, Approval, HostGroupSpec, Requester,
    Target,
};
use gatehouse_ssh_ca::{CaKey, UserCertSpec, sign_user_cert};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;
use russh::keys::{
    Algorithm, PrivateKey, ssh_key::getrandom::SysRng, ssh_key::rand_core::UnwrapErr,
};

use super::*;

const NOW: u64 = 1_800_000_000;
const SERIAL: u64 = 4242;

#[derive(Default)]
struct World {
    requests: BTreeMap<(String, String), Arc<AccessRequest>>,
    groups: BTreeMap<(String, String), Arc<HostGroup>>,
    policies: BTreeMap<(String, String), Arc<AccessPolicy>>,
}

impl Lookup for World {
    fn request(&self, ns: &str, name: &str) -> Option<Arc<AccessRequest>> {
        self.requests.get(&(ns.into(), name.into())).cloned()
    }
    fn host_group(&self, ns: &str, name: &str) -> Option<Arc<HostGroup>> {
        self.groups.get(&(ns.into(), name.into())).cloned()
    }
    fn policy(&self, ns: &str, name: &str) -> Option<Arc<AccessPolicy>> {
        self.policies.get(&(ns.into(), name.into())).cloned()
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("team".into()),
        uid: Some(format!("uid-{name}")),
        ..ObjectMeta::default()
    }
}

fn host(name: &str) -> Host {
    Host {
        name: name.into(),
        address: "127.0.0.1".into(),
        port: 22,
        host_keys: vec![],
    }
}

struct Fixture {
    ca: CaKey,
    user_key: PrivateKey,
    world: World,
}

fn fixture(target_host: Option<&str>, hosts: &[&str]) -> Fixture {
    let ca = CaKey::generate("user-ca").unwrap();
    let user_key = PrivateKey::random(&mut UnwrapErr(SysRng), Algorithm::Ed25519).unwrap();
    let mut world = World::default();
    let mut request = AccessRequest::new(
        "req",
        AccessRequestSpec {
            target: Target {
                host_group: "db".into(),
                host: target_host.map(Into::into),
            },
            login: "ubuntu".into(),
            duration: "1h".into(),
            reason: Some("INC-1".into()),
            public_key: user_key.public_key().to_openssh().unwrap(),
            requester: Some(Requester {
                username: "alice".into(),
                uid: None,
                groups: vec![],
            }),
        },
    );
    request.metadata = meta("req");
    request.status = Some(AccessRequestStatus {
        phase: Some(Phase::Issued),
        policy: Some("oncall".into()),
        serial: Some(SERIAL.to_string()),
        key_id: Some(key_id("team", "req", "uid-req", "alice")),
        valid_before: Some(Time(
            jiff::Timestamp::from_second(NOW as i64 + 3600).unwrap(),
        )),
        approvals: vec![Approval {
            user: "bob".into(),
            time: Time(jiff::Timestamp::from_second(NOW as i64).unwrap()),
            message: None,
        }],
        ..AccessRequestStatus::default()
    });
    world
        .requests
        .insert(("team".into(), "req".into()), Arc::new(request));
    let mut group = HostGroup::new(
        "db",
        HostGroupSpec {
            mode: HostGroupMode::Proxied,
            hosts: hosts.iter().map(|h| host(h)).collect(),
            host_ca_keys: vec![],
        },
    );
    group.metadata = meta("db");
    world
        .groups
        .insert(("team".into(), "db".into()), Arc::new(group));
    let mut policy: AccessPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": "oncall", "namespace": "team"},
        "spec": {"subjects": [{"kind": "User", "name": "alice"}], "hostSelector": {},
                 "logins": ["ubuntu"], "recording": {"recordInput": true, "required": false}}
    }))
    .unwrap();
    let _: &AccessPolicySpec = &policy.spec;
    policy.metadata = meta("oncall");
    world
        .policies
        .insert(("team".into(), "oncall".into()), Arc::new(policy));
    Fixture {
        ca,
        user_key,
        world,
    }
}

fn sign(
    f: &Fixture,
    ca: &CaKey,
    principals: &[&str],
    options: (Option<&str>, &[String]),
) -> Certificate {
    sign_user_cert(
        ca,
        &UserCertSpec {
            public_key: &f.user_key.public_key().to_openssh().unwrap(),
            serial: SERIAL,
            key_id: key_id("team", "req", "uid-req", "alice"),
            principals: principals.iter().map(|p| p.to_string()).collect(),
            valid_after: NOW - 30,
            valid_before: NOW + 3600,
            extensions: &[CertificateExtension::PermitPty],
            force_command: options.0,
            source_addresses: options.1,
        },
    )
    .unwrap()
}

fn good_cert(f: &Fixture) -> Certificate {
    sign(f, &f.ca, &[&proxied_principal("team", "req")], (None, &[]))
}

fn peer() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

fn fp(f: &Fixture) -> Fingerprint {
    f.ca.public_key().fingerprint(HashAlg::Sha256)
}

fn refused(f: &Fixture, cert: &Certificate, user: &str, now: u64) -> Refusal {
    authorize(cert, user, peer(), now, &fp(f), &f.world).unwrap_err()
}

#[test]
fn issued_request_grants_its_login_on_a_host_of_its_group() {
    let f = fixture(None, &["db-1", "db-2"]);
    let grant = authorize(
        &good_cert(&f),
        "ubuntu@db-2",
        peer(),
        NOW,
        &fp(&f),
        &f.world,
    )
    .unwrap();
    assert_eq!(grant.request.to_string(), "team/req");
    assert_eq!(grant.request.uid, "uid-req");
    assert_eq!(grant.host.name, "db-2");
    assert_eq!(grant.login, "ubuntu");
    assert_eq!(grant.requester, "alice");
    assert_eq!(grant.approvers, vec!["bob".to_owned()]);
    assert_eq!(grant.valid_before, NOW + 3600);
    assert!(grant.permits(CertificateExtension::PermitPty));
    assert!(!grant.permits(CertificateExtension::PermitPortForwarding));
    assert!(grant.record_input && !grant.recording_required);
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let f = fixture(None, &["db-1"]);
    let rogue = CaKey::generate("rogue").unwrap();
    let cert = sign(
        &f,
        &rogue,
        &[&proxied_principal("team", "req")],
        (None, &[]),
    );
    let r = refused(&f, &cert, "ubuntu@db-1", NOW);
    assert_eq!(r.reason, "untrusted_ca", "{}", r.message);
}

#[test]
fn expired_certificate_is_refused() {
    let f = fixture(None, &["db-1"]);
    let r = refused(&f, &good_cert(&f), "ubuntu@db-1", NOW + 3601);
    assert_eq!(r.reason, "untrusted_ca", "{}", r.message);
}

#[test]
fn direct_mode_principal_does_not_open_the_proxy() {
    let f = fixture(None, &["db-1"]);
    let cert = sign(&f, &f.ca, &["gatehouse:team/db:ubuntu"], (None, &[]));
    assert_eq!(refused(&f, &cert, "ubuntu@db-1", NOW).reason, "principal");
}

#[test]
fn other_login_other_host_and_missing_host_are_refused_with_the_rule() {
    let f = fixture(None, &["db-1", "db-2"]);
    let cert = good_cert(&f);
    let r = refused(&f, &cert, "root@db-1", NOW);
    assert_eq!(r.reason, "login");
    assert!(r.message.contains("\"ubuntu\""), "{}", r.message);
    let r = refused(&f, &cert, "ubuntu@web-1", NOW);
    assert_eq!(r.reason, "host");
    assert!(r.message.contains("db-1, db-2"), "{}", r.message);
    let r = refused(&f, &cert, "ubuntu", NOW);
    assert!(r.message.contains("LOGIN@HOST"), "{}", r.message);
}

#[test]
fn request_for_one_host_allows_only_that_host_and_is_the_default() {
    let f = fixture(Some("db-2"), &["db-1", "db-2"]);
    let cert = good_cert(&f);
    assert_eq!(refused(&f, &cert, "ubuntu@db-1", NOW).reason, "host");
    let grant = authorize(&cert, "ubuntu", peer(), NOW, &fp(&f), &f.world).unwrap();
    assert_eq!(grant.host.name, "db-2");
}

#[test]
fn revoked_deleted_or_reissued_requests_refuse_the_certificate() {
    let mut f = fixture(None, &["db-1"]);
    let cert = good_cert(&f);
    let key = ("team".to_owned(), "req".to_owned());
    let mut revoked = (*f.world.requests[&key]).clone();
    revoked.status.as_mut().unwrap().phase = Some(Phase::Revoked);
    f.world.requests.insert(key.clone(), Arc::new(revoked));
    let r = refused(&f, &cert, "ubuntu@db-1", NOW);
    assert_eq!(r.reason, "not_issued");
    assert!(r.message.contains("Revoked"), "{}", r.message);

    let mut other = fixture(None, &["db-1"]);
    let cert = good_cert(&other);
    let mut reissued = (*other.world.requests[&key]).clone();
    reissued.status.as_mut().unwrap().serial = Some("7".into());
    other.world.requests.insert(key.clone(), Arc::new(reissued));
    assert_eq!(
        refused(&other, &cert, "ubuntu@db-1", NOW).reason,
        "stale_certificate"
    );

    other.world.requests.clear();
    assert_eq!(
        refused(&other, &cert, "ubuntu@db-1", NOW).reason,
        "no_request"
    );
}

#[test]
fn critical_options_are_enforced() {
    let f = fixture(None, &["db-1"]);
    let forced = sign(
        &f,
        &f.ca,
        &[&proxied_principal("team", "req")],
        (Some("uptime"), &[]),
    );
    let grant = authorize(&forced, "ubuntu@db-1", peer(), NOW, &fp(&f), &f.world).unwrap();
    assert_eq!(grant.force_command.as_deref(), Some("uptime"));

    let elsewhere = vec!["10.0.0.0/8".to_owned()];
    let cert = sign(
        &f,
        &f.ca,
        &[&proxied_principal("team", "req")],
        (None, &elsewhere),
    );
    assert_eq!(
        refused(&f, &cert, "ubuntu@db-1", NOW).reason,
        "source_address"
    );
    let here = vec!["10.0.0.0/8".to_owned(), "127.0.0.0/8".to_owned()];
    let cert = sign(
        &f,
        &f.ca,
        &[&proxied_principal("team", "req")],
        (None, &here),
    );
    assert!(authorize(&cert, "ubuntu@db-1", peer(), NOW, &fp(&f), &f.world).is_ok());
}

#[test]
fn grant_ends_on_revoke_delete_recreate_and_valid_before() {
    let mut f = fixture(None, &["db-1"]);
    let grant = authorize(
        &good_cert(&f),
        "ubuntu@db-1",
        peer(),
        NOW,
        &fp(&f),
        &f.world,
    )
    .unwrap();
    assert!(still_valid(&grant, &f.world, NOW).is_ok());
    assert_eq!(
        still_valid(&grant, &f.world, NOW + 3600)
            .unwrap_err()
            .reason,
        "expired"
    );

    let key = ("team".to_owned(), "req".to_owned());
    let original = f.world.requests[&key].clone();
    let mut revoked = (*original).clone();
    revoked.status.as_mut().unwrap().phase = Some(Phase::Revoked);
    f.world.requests.insert(key.clone(), Arc::new(revoked));
    let ended = still_valid(&grant, &f.world, NOW).unwrap_err();
    assert_eq!(
        (ended.reason, ended.message.as_str()),
        ("revoked", "AccessRequest team/req is Revoked")
    );

    let mut recreated = (*original).clone();
    recreated.metadata.uid = Some("another".into());
    f.world.requests.insert(key.clone(), Arc::new(recreated));
    assert!(
        still_valid(&grant, &f.world, NOW)
            .unwrap_err()
            .message
            .contains("deleted")
    );
    f.world.requests.clear();
    assert!(
        still_valid(&grant, &f.world, NOW)
            .unwrap_err()
            .message
            .contains("deleted")
    );
}

#[test]
fn a_request_being_deleted_grants_nothing_even_while_still_issued() {
    // The operator may be down: its finalizer keeps the object, still Issued, after a delete.
    let mut f = fixture(None, &["db-1"]);
    let grant = authorize(
        &good_cert(&f),
        "ubuntu@db-1",
        peer(),
        NOW,
        &fp(&f),
        &f.world,
    )
    .unwrap();
    let key = ("team".to_owned(), "req".to_owned());
    let mut deleting = (*f.world.requests[&key]).clone();
    deleting.metadata.deletion_timestamp =
        Some(Time(jiff::Timestamp::from_second(NOW as i64).unwrap()));
    f.world.requests.insert(key, Arc::new(deleting));
    let ended = still_valid(&grant, &f.world, NOW).unwrap_err();
    assert_eq!(
        (ended.reason, ended.message.as_str()),
        ("revoked", "AccessRequest team/req was deleted")
    );
    assert_eq!(
        refused(&f, &good_cert(&f), "ubuntu@db-1", NOW).reason,
        "revoked"
    );
}

#[test]
fn removing_access_in_git_ends_the_grant_without_the_operator() {
    type Change = Box<dyn Fn(&mut World)>;
    let key = || ("team".to_owned(), "oncall".to_owned());
    let edit_policy = |edit: fn(&mut AccessPolicy)| -> Change {
        Box::new(move |w: &mut World| {
            let mut p = (*w.policies[&key()]).clone();
            edit(&mut p);
            w.policies.insert(key(), Arc::new(p));
        })
    };
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(move |w: &mut World| {
                w.policies.remove(&key());
            }),
            "access withdrawn: AccessPolicy team/oncall was deleted",
        ),
        (
            edit_policy(|p| p.spec.logins = vec!["postgres".into()]),
            "access withdrawn: AccessPolicy team/oncall no longer allows login ubuntu",
        ),
        (
            edit_policy(|p| p.spec.subjects[0].name = "mallory".into()),
            "access withdrawn: AccessPolicy team/oncall no longer names alice among its subjects",
        ),
        (
            Box::new(|w: &mut World| {
                w.groups.clear();
            }),
            "access withdrawn: HostGroup team/db was deleted",
        ),
        (
            Box::new(|w: &mut World| {
                let key = ("team".to_owned(), "db".to_owned());
                let mut g = (*w.groups[&key]).clone();
                g.spec.hosts[0].address = "10.9.9.9".into();
                w.groups.insert(key, Arc::new(g));
            }),
            "access withdrawn: host db-1 is no longer in HostGroup team/db at 127.0.0.1:22",
        ),
    ];
    for (change, message) in cases {
        let mut f = fixture(None, &["db-1"]);
        let grant = authorize(
            &good_cert(&f),
            "ubuntu@db-1",
            peer(),
            NOW,
            &fp(&f),
            &f.world,
        )
        .unwrap();
        change(&mut f.world);
        let ended = still_valid(&grant, &f.world, NOW).unwrap_err();
        assert_eq!(ended.message, message);
        assert_eq!(ended.reason, "withdrawn", "{message}");
    }
}
