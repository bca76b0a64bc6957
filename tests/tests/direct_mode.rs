//! Direct mode end to end: the operator's certificates against a real Debian `sshd` configured
//! only from what the operator publishes (the user CA, the AuthorizedPrincipalsFile content for
//! the HostGroup and login, the KRL), and the real `ssh` client.

use std::time::Duration;

use gatehouse_crds::{
    Phase,
    contract::{annotations, identity, published},
};
use gatehouse_tests::{
    SYSTEM_NAMESPACE, User, control_plane,
    operator::libfaketime,
    scenario::{self, HOST_GROUP, Scenario, Setup, keypair},
    sshd::{Sshd, SshdConfig, current_login},
    wait_for,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::json;

#[tokio::test]
async fn direct_mode_certificates_log_in_to_a_real_sshd_only_where_granted() {
    let cp = control_plane();
    cp.install_gatehouse();
    let login = current_login();
    let config_maps: Api<ConfigMap> =
        Api::namespaced(cp.client(User::Admin).await, SYSTEM_NAMESPACE);
    let published = |key: String| async move { cp.published(&key).await };
    let user_ca = published(published::USER_CA_PUB.to_owned()).await;
    let dir = tempfile::tempdir().unwrap();
    let krl_file = dir.path().join(published::REVOKED_KRL);
    let write_krl = |config_map: &ConfigMap| {
        let krl = config_map
            .binary_data
            .as_ref()
            .and_then(|d| d.get(published::REVOKED_KRL))
            .map(|b| b.0.clone());
        std::fs::write(&krl_file, krl.expect("a KRL")).unwrap();
    };
    let initial = wait_for(Duration::from_secs(10), "the revocations", || async {
        config_maps.get(published::REVOCATIONS_CONFIGMAP).await.ok()
    })
    .await;
    write_krl(&initial);
    let config = SshdConfig {
        revoked_keys: Some(krl_file.clone()),
        authorized_principals: Some(Default::default()),
        ..SshdConfig::trusting(user_ca.trim())
    };
    let sshd = Sshd::start(&config);

    let host = scenario::sshd_host("db1", &sshd);
    let setup = Setup {
        approvals: 0,
        mode: "Direct",
        logins: vec![login.clone(), "postgres".to_owned()],
        hosts: vec![host.clone()],
        ..Setup::default()
    };
    let s = Scenario::new(cp, "direct", &setup).await;
    // A second direct group the same policy selects: its certificates name another principal.
    s.apply(
        cp,
        User::Admin,
        &scenario::host_group("other", "Direct", "prod", &[host]),
    )
    .ok();
    // The target installs what the operator published for this host and login.
    let principals = s.authorized_principals(cp, "db1", &login).await;
    assert_eq!(
        principals,
        [
            identity::direct_principal(&s.ns, HOST_GROUP, &login),
            identity::direct_host_principal(&s.ns, HOST_GROUP, "db1", &login),
        ]
    );
    sshd.set_authorized_principals(&login, &principals);

    let (key, public) = keypair(dir.path(), "alice");
    let mut other_group = scenario::request("r-other", &login, &public);
    other_group["spec"]["target"] = json!({"hostGroup": "other"});
    for request in [
        scenario::request("r-db", &login, &public),
        other_group,
        scenario::request("r-postgres", "postgres", &public),
    ] {
        s.apply(cp, User::Alice, &request).ok();
    }
    let mut certs = std::collections::BTreeMap::new();
    for name in ["r-db", "r-other", "r-postgres"] {
        let issued = s
            .wait_phase(name, Phase::Issued, Duration::from_secs(10))
            .await;
        let uid = issued.metadata.uid.clone().unwrap_or_default();
        let status = issued.status.unwrap_or_default();
        let file = dir.path().join(format!("{name}-cert.pub"));
        std::fs::write(&file, status.certificate.unwrap_or_default()).unwrap();
        certs.insert(
            name,
            (
                file,
                status.serial.unwrap_or_default(),
                status.key_id.unwrap_or_default(),
                uid,
            ),
        );
    }

    // The granted certificate logs in and runs a command; sshd's log names the human.
    let (db_cert, db_serial, db_key_id, db_uid) = &certs["r-db"];
    let out = sshd
        .ssh(&login, &key, db_cert)
        .arg("echo hello from $(whoami); exit 7")
        .run();
    assert_eq!(out.code, Some(7), "{out:?}\nsshd log:\n{}", sshd.log());
    assert_eq!(out.stdout.trim(), format!("hello from {login}"));
    sshd.expect_log(
        &format!("ID {db_key_id} (serial {db_serial})"),
        Duration::from_secs(5),
    );
    assert_eq!(
        db_key_id,
        &identity::user_key_id(&s.ns, "r-db", db_uid, User::Alice.username())
    );

    // Another HostGroup's certificate, and a certificate for another login, are refused.
    for name in ["r-other", "r-postgres"] {
        let (cert, serial, _, _) = &certs[name];
        let out = sshd.ssh(&login, &key, cert).arg("true").run();
        assert_eq!(out.code, Some(255), "{name} must be refused: {out:?}");
        assert!(
            out.stderr.contains("Permission denied (publickey)"),
            "{name}: {}",
            out.stderr
        );
        sshd.expect_log(&format!("(serial {serial})"), Duration::from_secs(5));
    }
    assert!(
        sshd.log()
            .contains("Certificate does not contain an authorized principal"),
        "{}",
        sshd.log()
    );

    // The same host 31 minutes from now (the request was for 30m): the certificate has expired.
    let later = Sshd::start(&SshdConfig {
        env: vec![
            ("LD_PRELOAD".to_owned(), libfaketime(false)),
            ("FAKETIME".to_owned(), "+31m".to_owned()),
        ],
        ..config.clone()
    });
    later.set_authorized_principals(&login, &principals);
    let out = later.ssh(&login, &key, db_cert).arg("true").run();
    assert_eq!(
        out.code,
        Some(255),
        "an expired certificate must be refused: {out:?}"
    );
    later.expect_log("Certificate invalid: expired", Duration::from_secs(5));
    drop(later);

    // Revoked: the operator's KRL, installed on the host as RevokedKeys, refuses it at once.
    s.annotate(cp, User::Alice, "r-db", annotations::REVOKE, "done")
        .ok();
    s.wait_phase("r-db", Phase::Revoked, Duration::from_secs(5))
        .await;
    let revocations = wait_for(
        Duration::from_secs(10),
        "the revocation to be published",
        || async {
            let cm = config_maps
                .get(published::REVOCATIONS_CONFIGMAP)
                .await
                .ok()?;
            cm.data
                .as_ref()?
                .get(published::REVOKED_JSON)?
                .contains(db_serial.as_str())
                .then_some(cm)
        },
    )
    .await;
    write_krl(&revocations);
    let out = sshd.ssh(&login, &key, db_cert).arg("true").run();
    assert_eq!(
        out.code,
        Some(255),
        "a revoked certificate must be refused: {out:?}"
    );
    sshd.expect_log("revoked by file", Duration::from_secs(5));
}
