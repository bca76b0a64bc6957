//! The audit API in-process: a real TLS listener on 127.0.0.1, certificates from generated
//! CAs (the front proxy's, another one), a directory store with hand-written batches, and a
//! stub authorizer (the end-to-end test uses the real API server's SubjectAccessReviews).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gatehouse_audit_api::{
    authn::{FrontProxy, RequestHeaderConfig, UserInfo, server_config},
    authz::Authorizer,
    index::batch_key,
    server::{Metrics, State, serve},
    serving::ServingCert,
};
use gatehouse_crds::audit::{
    Actor, AuditEvent, BatchHeader, EventType, RecordingDetail, RequestRef, render_batch,
};
use gatehouse_store::{LocalStore, Store};
use k8s_openapi::api::authorization::v1::ResourceAttributes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert,
        issuer: Issuer::new(params, key),
    }
}

/// (certificate chain, key) issued by `ca`.
fn issue(
    ca: &Ca,
    cn: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    String,
    String,
) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (
        vec![cert.der().clone()],
        der,
        cert.pem(),
        key.serialize_pem(),
    )
}

/// Allows alice in group auditors; "broken" gets no answer; everyone else is denied.
#[derive(Default, Clone)]
struct Stub {
    seen: Arc<Mutex<Vec<(UserInfo, ResourceAttributes)>>>,
}

impl Authorizer for Stub {
    async fn allowed(
        &self,
        user: &UserInfo,
        attributes: &ResourceAttributes,
    ) -> gatehouse_audit_api::Result<bool> {
        self.seen
            .lock()
            .unwrap()
            .push((user.clone(), attributes.clone()));
        if user.name == "broken" {
            return Err(gatehouse_audit_api::Error::ReadRequestHeaderConfig(
                "stub: no answer".to_owned(),
            ));
        }
        Ok(user.name == "alice" && user.groups.iter().any(|g| g == "auditors"))
    }
}

fn at(seconds: i64) -> MicroTime {
    MicroTime(jiff::Timestamp::from_second(1_780_000_000 + seconds).unwrap())
}

fn session_event(seconds: i64, type_: EventType, id: &str) -> AuditEvent {
    let mut e = AuditEvent::new(at(seconds), type_);
    e.namespace = Some("team".into());
    e.session_id = Some(id.into());
    e.actor = Some(Actor::ssh(Some("SHA256:k"), Some("alice")));
    e.request = Some(RequestRef {
        name: "alice-db".into(),
        uid: "u1".into(),
    });
    e.host = Some("prod-db-01".into());
    e.login = Some("root".into());
    e
}

fn write_batch(dir: &std::path::Path, writer: &str, sequence: u64, events: &[AuditEvent]) {
    let header = BatchHeader {
        writer: writer.into(),
        sequence,
        previous_batch_sha256: String::new(),
        count: 0,
    };
    let path = dir.join(batch_key(writer, sequence));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, render_batch(&header, events)).unwrap();
}

struct World {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    addr: std::net::SocketAddr,
    serving_ca: Ca,
    front: Ca,
    other: Ca,
    stub: Stub,
    cast: Vec<u8>,
    metrics: Metrics,
}

async fn world() -> World {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let cast =
        b"{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"o\",\"hello \\u001b[31mred\"]\n"
            .to_vec();
    std::fs::create_dir_all(dir.join("recordings")).unwrap();
    std::fs::write(dir.join("recordings/s1.cast"), &cast).unwrap();
    let mut stored = session_event(30, EventType::RecordingStored, "s1");
    stored.recording = Some(RecordingDetail {
        key: "recordings/s1.cast".into(),
        sha256: gatehouse_store::hex(&Sha256::digest(&cast)),
        bytes: cast.len() as u64,
    });
    let mut approved = AuditEvent::new(at(5), EventType::Approved);
    approved.namespace = Some("team".into());
    approved.actor = Some(Actor::kubernetes("bob", &[]));
    write_batch(
        &dir,
        "gatehouse-proxy-1",
        0,
        &[
            approved,
            session_event(10, EventType::SessionStarted, "s1"),
            session_event(20, EventType::SessionEnded, "s1"),
            stored,
        ],
    );
    // A broken batch beside it is skipped, not fatal.
    std::fs::write(dir.join(batch_key("gatehouse-proxy-1", 1)), "garbage\n").unwrap();

    let serving_ca = ca("serving-ca");
    let front = ca("front-proxy-ca");
    let other = ca("other-ca");
    let (_, _, cert_pem, key_pem) = issue(
        &serving_ca,
        "audit-api",
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let data: BTreeMap<String, String> = [
        ("requestheader-client-ca-file", front.cert.pem()),
        (
            "requestheader-allowed-names",
            r#"["front-proxy-client"]"#.into(),
        ),
        (
            "requestheader-username-headers",
            r#"["X-Remote-User"]"#.into(),
        ),
        (
            "requestheader-group-headers",
            r#"["X-Remote-Group"]"#.into(),
        ),
        (
            "requestheader-extra-headers-prefix",
            r#"["X-Remote-Extra-"]"#.into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let front_proxy = FrontProxy::new(RequestHeaderConfig::from_data(&data).unwrap()).unwrap();
    let stub = Stub::default();
    let metrics = Metrics::new().unwrap();
    let state = State::new(
        Store::Local(LocalStore::new(&dir)),
        front_proxy,
        stub.clone(),
        metrics.clone(),
        1000,
    );
    assert_eq!(state.refresh().await.unwrap(), 1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = Arc::new(ServingCert::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap());
    let config = server_config(serving).unwrap();
    tokio::spawn(serve(
        listener,
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        state,
    ));
    World {
        _dir: tmp,
        dir,
        addr,
        serving_ca,
        front,
        other,
        stub,
        cast,
        metrics,
    }
}

struct Answer {
    code: u16,
    headers: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

impl World {
    /// A TLS connection presenting a certificate for `cn` from `ca` (or none).
    async fn connect(
        &self,
        client: Option<(&Ca, &str)>,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.serving_ca.cert.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match client {
            Some((ca, cn)) => {
                let (chain, key, _, _) = issue(ca, cn, &[], ExtendedKeyUsagePurpose::ClientAuth);
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// `method path` with `headers`, presenting a certificate for `cn` from `ca` (or none).
    async fn call(
        &self,
        client: Option<(&Ca, &str)>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut tls = self.connect(client).await;
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let headers = String::from_utf8(raw[..split].to_vec()).unwrap();
        let code = headers[9..12].parse().unwrap();
        Answer {
            code,
            headers: headers.to_ascii_lowercase(),
            body: raw[split + 4..].to_vec(),
        }
    }

    async fn as_user(&self, path: &str, user: &str) -> Answer {
        self.call(
            Some((&self.front, "front-proxy-client")),
            "GET",
            path,
            &[("X-Remote-User", user), ("X-Remote-Group", "auditors")],
        )
        .await
    }
}

const V: &str = "/apis/audit.gatehouse.dev/v1alpha1";

#[tokio::test]
async fn the_front_proxy_gets_sessions_recordings_and_events() {
    let w = world().await;
    let list = w
        .as_user(&format!("{V}/namespaces/team/sessions"), "alice")
        .await;
    assert_eq!(list.code, 200, "{}", String::from_utf8_lossy(&list.body));
    let list = list.json();
    assert_eq!(list["kind"], "SessionList");
    assert_eq!(list["items"][0]["metadata"]["name"], "s1");
    assert_eq!(list["items"][0]["spec"]["user"], "alice");
    assert_eq!(
        list["items"][0]["status"]["recording"]["key"],
        "recordings/s1.cast"
    );
    let all = w
        .as_user(
            &format!("{V}/sessions?fieldSelector=spec.host%3Dprod-db-01"),
            "alice",
        )
        .await;
    assert_eq!(all.json()["items"].as_array().unwrap().len(), 1);
    let none = w
        .as_user(
            &format!("{V}/sessions?fieldSelector=spec.user%3Dbob"),
            "alice",
        )
        .await;
    assert_eq!(none.json()["items"], serde_json::json!([]));

    let recording = w
        .as_user(
            &format!("{V}/namespaces/team/sessions/s1/recording"),
            "alice",
        )
        .await;
    assert_eq!(recording.code, 200);
    assert_eq!(recording.body, w.cast, "the cast byte for byte");
    assert!(
        recording
            .headers
            .contains("content-type: application/x-asciicast")
    );
    let sha = gatehouse_store::hex(&Sha256::digest(&w.cast));
    assert!(
        recording
            .headers
            .contains(&format!("x-gatehouse-sha256: {sha}")),
        "{}",
        recording.headers
    );

    let events = w
        .as_user(&format!("{V}/namespaces/team/sessions/s1/events"), "alice")
        .await;
    let names: Vec<String> = events.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "gatehouse-proxy-1.0.1",
            "gatehouse-proxy-1.0.2",
            "gatehouse-proxy-1.0.3"
        ]
    );
    let audit = w
        .as_user(
            &format!("{V}/namespaces/team/auditevents?user=bob&type=approved"),
            "alice",
        )
        .await;
    assert_eq!(audit.code, 200);
    assert_eq!(
        audit.json()["items"][0]["metadata"]["name"],
        "gatehouse-proxy-1.0.0"
    );
    assert_eq!(audit.json()["items"][0]["kind"], "AuditEvent");

    let discovery = w
        .call(Some((&w.front, "front-proxy-client")), "GET", V, &[])
        .await;
    assert_eq!(discovery.code, 200);
    assert_eq!(discovery.json()["kind"], "APIResourceList");

    // What was asked of the authorizer.
    let seen = w.stub.seen.lock().unwrap().clone();
    let (user, attributes) = &seen[0];
    assert_eq!(user.name, "alice");
    assert_eq!(user.groups, ["auditors"]);
    assert_eq!(attributes.resource.as_deref(), Some("sessions"));
    assert_eq!(attributes.verb.as_deref(), Some("list"));
    assert_eq!(attributes.namespace.as_deref(), Some("team"));
    assert!(
        seen.iter()
            .any(|(_, a)| a.subresource.as_deref() == Some("recording")
                && a.name.as_deref() == Some("s1"))
    );
}

#[tokio::test]
async fn without_the_front_proxy_certificate_the_headers_count_for_nothing() {
    let w = world().await;
    let forged = [("X-Remote-User", "alice"), ("X-Remote-Group", "auditors")];
    let path = format!("{V}/namespaces/team/sessions/s1/recording");
    let callers: [(Option<(&Ca, &str)>, &str); 3] = [
        (None, "no client certificate"),
        (
            Some((&w.other, "front-proxy-client")),
            "not the front proxy's",
        ),
        (
            Some((&w.front, "someone-else")),
            "not in requestheader-allowed-names",
        ),
    ];
    for (client, why) in callers {
        for path in [path.as_str(), V, "/apis"] {
            let answer = w.call(client, "GET", path, &forged).await;
            assert_eq!(answer.code, 401, "{why}: {path}");
            let status = answer.json();
            assert_eq!(status["kind"], "Status");
            assert_eq!(status["reason"], "Unauthorized");
            assert!(
                status["message"].as_str().unwrap().contains(why),
                "{status}"
            );
        }
    }
    // The authorizer was never asked: nothing of the request was believed.
    assert!(w.stub.seen.lock().unwrap().is_empty());
    let text = w.metrics.render().unwrap();
    assert!(
        text.contains(
            r#"gatehouse_audit_api_requests_total{code="401",route="unauthenticated"} 9"#
        ),
        "{text}"
    );
    // The world's store holds one broken batch beside the good one.
    assert!(
        text.contains("gatehouse_audit_api_batches_broken_total 1"),
        "{text}"
    );
    assert!(text.contains("gatehouse_audit_api_events 4"), "{text}");
    assert!(text.contains("gatehouse_audit_api_sessions 1"), "{text}");
}

#[tokio::test]
async fn refusals_are_statuses_and_fail_closed() {
    let w = world().await;
    let front = Some((&w.front, "front-proxy-client"));
    let sessions = format!("{V}/namespaces/team/sessions");
    // The front proxy without a user: discovery only.
    assert_eq!(w.call(front, "GET", &sessions, &[]).await.code, 401);
    let bob = w.as_user(&sessions, "bob").await;
    assert_eq!(bob.code, 403);
    assert_eq!(
        w.as_user(&format!("{sessions}/s1/player"), "bob")
            .await
            .code,
        403
    );
    assert_eq!(
        w.as_user(&format!("{sessions}/s1/recording"), "bob")
            .await
            .code,
        403
    );
    assert_eq!(bob.json()["reason"], "Forbidden");
    let broken = w.as_user(&sessions, "broken").await;
    assert_eq!(broken.code, 503, "no SubjectAccessReview answer: refused");
    let cases = [
        ("POST", sessions.clone(), 405),
        ("DELETE", format!("{sessions}/s1"), 405),
        ("GET", format!("{sessions}?watch=true"), 405),
        (
            "GET",
            format!("{sessions}?fieldSelector=spec.login%3Droot"),
            400,
        ),
        ("GET", format!("{sessions}/nope"), 404),
        ("GET", format!("{sessions}/..%2F..%2Fsecret/recording"), 404),
        ("GET", format!("{sessions}/s1/recording/../../x"), 404),
        (
            "GET",
            format!("{V}/namespaces/ops/sessions/s1/recording"),
            404,
        ),
        ("GET", format!("{V}/auditevents?from=yesterday"), 400),
    ];
    let headers = [("X-Remote-User", "alice"), ("X-Remote-Group", "auditors")];
    for (method, path, code) in cases {
        let answer = w.call(front, method, &path, &headers).await;
        assert_eq!(answer.code, code, "{method} {path}");
        assert_eq!(answer.json()["kind"], "Status", "{method} {path}");
    }
    let bad = w
        .as_user(
            &format!("{sessions}?fieldSelector=spec.login%3Droot"),
            "alice",
        )
        .await;
    assert!(
        bad.json()["message"]
            .as_str()
            .unwrap()
            .contains("spec.login")
    );
}

#[tokio::test]
async fn a_session_written_after_the_last_refresh_is_found_on_a_miss() {
    let w = world().await;
    write_batch(
        &w.dir,
        "gatehouse-proxy-2",
        0,
        &[session_event(40, EventType::SessionStarted, "s2")],
    );
    // A miss re-lists the store at most once a second; the world's own load was just now.
    tokio::time::sleep(gatehouse_audit_api::server::MISS_INTERVAL).await;
    let found = w
        .as_user(&format!("{V}/namespaces/team/sessions/s2"), "alice")
        .await;
    assert_eq!(found.code, 200, "{}", String::from_utf8_lossy(&found.body));
    assert_eq!(found.json()["metadata"]["name"], "s2");
    // s2 has no recording yet.
    let cast = w
        .as_user(
            &format!("{V}/namespaces/team/sessions/s2/recording"),
            "alice",
        )
        .await;
    assert_eq!(cast.code, 404);
}

#[tokio::test]
async fn a_stranger_gets_one_answer_and_the_connection_closes() {
    let w = world().await;
    let request = "GET /apis HTTP/1.1\r\nHost: localhost\r\nX-Remote-User: alice\r\n\r\n";
    // Keep-alive asked for, two requests pipelined: a stranger gets one 401, then EOF.
    let mut tls = w.connect(None).await;
    tls.write_all(format!("{request}{request}").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), tls.read_to_end(&mut raw))
        .await
        .expect("the server closes a stranger's connection")
        .ok();
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 401").count(), 1, "{text}");
    // The front proxy's connection stays open for the next request.
    let mut tls = w.connect(Some((&w.front, "front-proxy-client"))).await;
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let open =
        tokio::time::timeout(std::time::Duration::from_millis(500), tls.read(&mut buf)).await;
    assert!(open.is_err(), "still open, waiting for the next request");
}
