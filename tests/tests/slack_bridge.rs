//! The approval bridge end to end: a real API server with the real admission webhook and
//! operator, the bridge as the chart's ServiceAccount with the chart's RBAC (impersonation
//! limited to the mapped users and groups), and a local Slack (`gatehouse_tests::slack`) that
//! answers the Web API as Slack documents it and signs interactive payloads as Slack does.
//!
//! What is proved: the channel message and its updates; a click by a mapped approver (bob) is
//! bob's approval, through admission, and the request is Issued; a click by the requester is
//! refused by admission and the message says so; an unmapped Slack user changes nothing; a bad,
//! stale or tampered signature is answered 401 and changes nothing; the requester is DMed when
//! the request is decided and never asked to approve their own; Deny asks for a reason in a
//! modal; Socket Mode carries clicks and reconnects on `disconnect`; the webhook receiver gets a
//! signed event for every transition (after a failed first delivery), and a key lent to another
//! namespace signs nothing here; a restarted bridge re-sends nothing; Slack down never blocks a
//! kubectl approval and the message is posted once it is back; the chart's bridge RBAC
//! impersonates only the mapped identities and reads no CA Secret.

#![allow(clippy::unwrap_used, reason = "tests report failure by panicking")]

use std::time::Duration;

use gatehouse_crds::{AccessRequest, Phase, contract::bridge as contract};
use gatehouse_tests::{
    User,
    bridge::{Bridge, BridgeConfig, install_bridge_rbac},
    control_plane,
    scenario::{self, Scenario, Setup, condition, public_key},
    slack::{self, FakeSlack, SIGNING_SECRET},
    wait_for,
};
use serde_json::{Value, json};

/// The webhook HMAC key Secret (bridge namespace) and its key.
const HOOK_SECRET: &str = "gatehouse-bridge-test-hook";
const HOOK_KEY: &str = "webhook-hmac-key-for-tests";
/// A key Secret lent to another namespace only: policies here cannot sign with it.
const OTHER_TEAMS_SECRET: &str = "gatehouse-bridge-test-hook-other-team";
const CHANNEL: &str = "CAPPROVERS";
const WAIT: Duration = Duration::from_secs(30);

struct World {
    scenario: Scenario,
    slack: FakeSlack,
    bridge: Bridge,
    _dir: tempfile::TempDir,
}

/// The value of one series in Prometheus text (0 when absent).
fn metric_value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

fn identities() -> Value {
    json!([
        {"slackUser": "UBOB", "username": "bob", "groups": ["sre-leads"]},
        {"slackUser": "UALICE", "username": "alice", "groups": ["dev"]},
        {"email": "carol@example.com", "username": "carol", "groups": ["sre-leads"]},
    ])
}

async fn world(prefix: &str, socket_mode: bool, fail_first_hooks: usize) -> World {
    let cp = control_plane();
    cp.install_gatehouse();
    // Once per test binary: the tests run in parallel and would race creating the same objects.
    static SETUP: std::sync::Once = std::sync::Once::new();
    SETUP.call_once(|| {
        for (name, lent_to) in [(HOOK_SECRET, "*"), (OTHER_TEAMS_SECRET, "another-team")] {
            let secret = json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "annotations": {contract::WEBHOOK_NAMESPACES_ANNOTATION: lent_to}},
                "stringData": {"hmac-key": HOOK_KEY},
            });
            cp.apply_as(User::Admin, gatehouse_tests::SYSTEM_NAMESPACE, &secret)
                .ok();
        }
        install_bridge_rbac(cp, &identities(), &[HOOK_SECRET, OTHER_TEAMS_SECRET]);
    });
    let slack = FakeSlack::start(&[("UCAROL", "carol@example.com")], fail_first_hooks).await;
    let setup = Setup {
        policy_extra: json!({"notify": {
            // UALICE is the requester's own DM: she is never asked to approve her own request.
            "slack": [{"channel": CHANNEL}, {"channel": "UALICE"}],
            "webhooks": [{"name": "audit", "url": slack.hook_url("audit"),
                          "secretRef": {"name": HOOK_SECRET, "key": "hmac-key"}},
                         {"name": "borrowed", "url": slack.hook_url("borrowed"),
                          "secretRef": {"name": OTHER_TEAMS_SECRET, "key": "hmac-key"}}],
        }}),
        ..Setup::default()
    };
    let scenario = Scenario::new(cp, prefix, &setup).await;
    let dir = tempfile::tempdir().unwrap();
    let bridge = Bridge::start(
        cp,
        &BridgeConfig {
            slack_api_url: slack.api_url(),
            request_url: !socket_mode,
            socket_mode,
            watch_namespace: scenario.ns.clone(),
            log: cp.dir().join(format!("bridge-{}.log", scenario.ns)),
        },
    );
    World {
        scenario,
        slack,
        bridge,
        _dir: dir,
    }
}

impl World {
    fn request(&self, name: &str) {
        self.scenario
            .apply(
                control_plane(),
                User::Alice,
                &scenario::request(name, "ubuntu", &public_key()),
            )
            .ok();
    }

    /// Post a click signed as Slack signs it (now): the HTTP status.
    fn click(&self, payload: &Value) -> u16 {
        let now = jiff::Timestamp::now().as_second();
        let (body, ts, signature) = slack::signed_interaction(payload, SIGNING_SECRET, now);
        slack::post(
            self.bridge.listen_port,
            "/slack/interactions",
            &body,
            &ts,
            &signature,
        )
    }

    fn approve_click(&self, user: &str, name: &str, ts: &str) -> Value {
        slack::block_actions(
            user,
            "gatehouse_approve",
            &format!("{}/{name}", self.scenario.ns),
            CHANNEL,
            ts,
        )
    }

    /// Wait for the channel message of request `name`: its ts (as Slack answered) and blocks.
    async fn posted(&self, name: &str) -> (String, Value) {
        let key = format!("{}/{name}", self.scenario.ns);
        wait_for(WAIT, &format!("chat.postMessage for {key}"), || async {
            self.slack
                .calls_of("chat.postMessage")
                .into_iter()
                .find(|c| {
                    c.args["channel"] == CHANNEL && c.args["blocks"].to_string().contains(&key)
                })
                .map(|c| {
                    (
                        c.answer["ts"].as_str().unwrap().to_owned(),
                        c.args["blocks"].clone(),
                    )
                })
        })
        .await
    }

    /// Wait for a `chat.update` of `ts` whose blocks contain every one of `needles`.
    async fn updated(&self, ts: &str, needles: &[&str]) -> Value {
        let what = format!("chat.update of {ts} showing {needles:?}");
        wait_for(WAIT, &what, || async {
            self.slack
                .calls_of("chat.update")
                .into_iter()
                .filter(|c| c.args["ts"] == ts && c.args["channel"] == CHANNEL)
                .map(|c| c.args["blocks"].clone())
                .find(|b| needles.iter().all(|n| b.to_string().contains(n)))
        })
        .await
    }

    async fn get(&self, name: &str) -> AccessRequest {
        self.scenario.get(name).await
    }
}

fn approvers(request: &AccessRequest) -> Vec<String> {
    request
        .status
        .as_ref()
        .map(|s| s.approvals.iter().map(|a| a.user.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_is_an_approval_by_that_person_checked_by_admission() {
    let w = world("slack-approve", false, 1).await;
    let ns = w.scenario.ns.clone();
    w.request("r1");
    w.scenario.wait_phase("r1", Phase::Pending, WAIT).await;

    // The message: who, what, why, under which policy, how many approvals, and the buttons.
    let (ts, blocks) = w.posted("r1").await;
    let text = blocks.to_string();
    for needle in [
        "*alice* requests SSH access",
        "ubuntu",
        "db",
        "30m",
        "oncall",
        "0 of 1 approvals",
        "gatehouse_approve",
        "gatehouse_deny",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text}");
    }
    // Never to the requester's own DM.
    assert!(
        w.slack
            .calls_of("chat.postMessage")
            .iter()
            .all(|c| c.args["channel"] != "UALICE"),
        "{:?}",
        w.slack.calls_of("chat.postMessage")
    );
    // The message is recorded on the request (a restart finds it).
    let recorded = wait_for(
        WAIT,
        "status.notifications to record the message",
        || async {
            let request = w.get("r1").await;
            request
                .status?
                .notifications
                .into_iter()
                .find(|r| r.target == format!("slack:{CHANNEL}") && r.ts.is_some())
        },
    )
    .await;
    assert_eq!(recorded.ts.as_deref(), Some(ts.as_str()));

    // Bad, stale and tampered signatures: 401, and nothing changes.
    let click = w.approve_click("UBOB", "r1", &ts);
    let now = jiff::Timestamp::now().as_second();
    let (body, t, _) = slack::signed_interaction(&click, SIGNING_SECRET, now);
    let (_, _, wrong) = slack::signed_interaction(&click, "not-the-signing-secret", now);
    assert_eq!(
        slack::post(
            w.bridge.listen_port,
            "/slack/interactions",
            &body,
            &t,
            &wrong
        ),
        401
    );
    let (body, t, sig) = slack::signed_interaction(&click, SIGNING_SECRET, now - 301);
    assert_eq!(
        slack::post(w.bridge.listen_port, "/slack/interactions", &body, &t, &sig),
        401
    );
    let (_, t, sig) = slack::signed_interaction(&click, SIGNING_SECRET, now);
    let (other, _, _) =
        slack::signed_interaction(&w.approve_click("UBOB", "r2", &ts), SIGNING_SECRET, now);
    assert_eq!(
        slack::post(
            w.bridge.listen_port,
            "/slack/interactions",
            &other,
            &t,
            &sig
        ),
        401
    );
    assert_eq!(
        slack::post(w.bridge.listen_port, "/slack/interactions", &body, &t, ""),
        401
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let request = w.get("r1").await;
    assert!(approvers(&request).is_empty(), "{:?}", request.status);
    assert_eq!(
        request.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Pending)
    );
    assert!(
        w.slack.calls_of("chat.update").is_empty(),
        "{:?}",
        w.slack.calls_of("chat.update")
    );

    // An unmapped Slack user: nothing changes, and the message says why.
    assert_eq!(w.click(&w.approve_click("UMALLORY", "r1", &ts)), 200);
    w.updated(
        &ts,
        &[
            "UMALLORY is not mapped to a Kubernetes identity",
            contract_configmap(),
        ],
    )
    .await;

    // The requester clicking Approve: admission refuses (four-eyes), the message shows it.
    assert_eq!(w.click(&w.approve_click("UALICE", "r1", &ts)), 200);
    w.updated(
        &ts,
        &[
            "approval by alice refused",
            "alice requested AccessRequest",
            "cannot approve it",
        ],
    )
    .await;
    let request = w.get("r1").await;
    assert!(approvers(&request).is_empty(), "{:?}", request.status);
    assert_eq!(
        request.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Pending)
    );

    // Bob's click is bob's approval, recorded by admission with bob's name.
    assert_eq!(w.click(&w.approve_click("UBOB", "r1", &ts)), 200);
    let issued = w.scenario.wait_phase("r1", Phase::Issued, WAIT).await;
    assert_eq!(approvers(&issued), ["bob"]);
    let message = issued.status.as_ref().unwrap().approvals[0].message.clone();
    assert_eq!(message.as_deref(), Some("via Slack UBOB"));
    let blocks = w
        .updated(&ts, &["*Issued*", "1 of 1 approvals (by bob)"])
        .await;
    assert!(
        !blocks.to_string().contains("gatehouse_approve"),
        "{blocks}"
    );

    // The requester hears about it in a DM.
    wait_for(WAIT, "a DM to alice", || async {
        let opened = w
            .slack
            .calls_of("conversations.open")
            .iter()
            .any(|c| c.args["users"] == "UALICE");
        let sent = w.slack.calls_of("chat.postMessage").into_iter().any(|c| {
            c.args["channel"] == "DUALICE"
                && c.args["text"].as_str().is_some_and(|t| {
                    t.contains(&format!("Your AccessRequest {ns}/r1")) && t.contains("Issued")
                })
        });
        (opened && sent).then_some(())
    })
    .await;

    // Revoked by kubectl: the same message follows.
    w.scenario
        .annotate(
            control_plane(),
            User::Alice,
            "r1",
            "gatehouse.dev/revoke",
            "done",
        )
        .ok();
    w.scenario.wait_phase("r1", Phase::Revoked, WAIT).await;
    w.updated(&ts, &["*Revoked*"]).await;

    // The webhook got a signed event for every transition, the first one after a retry.
    let uid = w.get("r1").await.metadata.uid.unwrap();
    let hooks = wait_for(
        WAIT,
        "webhook events pending/0, issued, revoked",
        || async {
            let accepted: Vec<_> = w
                .slack
                .hooks()
                .into_iter()
                .filter(|h| h.accepted && h.path == "/hooks/audit")
                .collect();
            let stages: Vec<String> = accepted
                .iter()
                .filter_map(|h| serde_json::from_slice::<Value>(&h.body).ok())
                .filter_map(|v| v["stage"].as_str().map(str::to_owned))
                .collect();
            (stages == ["pending/0", "issued", "revoked"]).then_some(accepted)
        },
    )
    .await;
    for hook in &hooks {
        assert!(
            slack::hook_signature_valid(hook, HOOK_KEY.as_bytes()),
            "{hook:?}"
        );
        assert!(!slack::hook_signature_valid(hook, b"another key"));
        let event: Value = serde_json::from_slice(&hook.body).unwrap();
        assert_eq!(event["type"], "gatehouse.accessrequest.transition");
        assert_eq!(event["request"]["name"], "r1");
        assert_eq!(event["request"]["requester"], "alice");
        assert_eq!(
            hook.headers[contract::EVENT_ID_HEADER],
            format!("{uid}/{}", event["stage"].as_str().unwrap())
        );
    }
    // A key another namespace's receiver trusts never signs this namespace's events.
    let paths: Vec<String> = w.slack.hooks().into_iter().map(|h| h.path).collect();
    assert!(paths.iter().all(|p| p != "/hooks/borrowed"), "{paths:?}");
    assert!(
        w.bridge.log_text().contains("does not list namespace"),
        "{}",
        w.bridge.log_text()
    );
    let all = w.slack.hooks();
    assert!(
        !all[0].accepted
            && all[1].accepted
            && all[0].headers[contract::EVENT_ID_HEADER]
                == all[1].headers[contract::EVENT_ID_HEADER],
        "{paths:?}"
    );

    // The bridge counts what happened, with fixed labels only.
    let (status, metrics) =
        gatehouse_tests::net::http_get(w.bridge.metrics_port, "/metrics").expect("bridge /metrics");
    assert_eq!(status, 200, "{metrics}");
    for (series, at_least) in [
        (
            "gatehouse_bridge_decisions_total{outcome=\"recorded\",verb=\"approval\"}",
            1,
        ),
        (
            "gatehouse_bridge_decisions_total{outcome=\"refused\",verb=\"approval\"}",
            1,
        ),
        (
            "gatehouse_bridge_decisions_total{outcome=\"unmapped\",verb=\"approval\"}",
            1,
        ),
        (
            "gatehouse_bridge_interactions_total{outcome=\"bad_signature\"}",
            1,
        ),
        (
            "gatehouse_bridge_interactions_total{outcome=\"accepted\"}",
            3,
        ),
        (
            "gatehouse_bridge_slack_calls_total{method=\"chat.postMessage\",outcome=\"ok\"}",
            1,
        ),
        (
            "gatehouse_bridge_webhook_deliveries_total{outcome=\"retried\"}",
            1,
        ),
        (
            "gatehouse_bridge_webhook_deliveries_total{outcome=\"delivered\"}",
            3,
        ),
    ] {
        let value = metric_value(&metrics, series);
        assert!(
            value >= at_least,
            "{series} = {value}, expected ≥ {at_least}:\n{metrics}"
        );
    }

    // A restarted bridge finds its records on the request and sends nothing again.
    let before = (w.slack.calls().len(), w.slack.hooks().len());
    let mut w = w;
    w.bridge.restart();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        (w.slack.calls().len(), w.slack.hooks().len()),
        before,
        "{:#?}\n{}",
        w.slack.calls(),
        w.bridge.log_text()
    );
}

fn contract_configmap() -> &'static str {
    contract::IDENTITIES_CONFIGMAP
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_asks_for_a_reason_and_is_made_by_the_person_mapped_by_email() {
    let w = world("slack-deny", false, 0).await;
    w.request("r1");
    w.scenario.wait_phase("r1", Phase::Pending, WAIT).await;
    let (ts, _) = w.posted("r1").await;

    // Carol is mapped by her Slack profile email (users.info), not by id.
    let key = format!("{}/r1", w.scenario.ns);
    let click = slack::block_actions("UCAROL", "gatehouse_deny", &key, CHANNEL, &ts);
    assert_eq!(w.click(&click), 200);
    let view = wait_for(WAIT, "views.open with the deny modal", || async {
        w.slack
            .calls_of("views.open")
            .into_iter()
            .find(|c| c.args["trigger_id"] == click["trigger_id"])
            .map(|c| c.args["view"].clone())
    })
    .await;
    assert_eq!(view["type"], "modal");
    // Nothing is decided by opening the modal.
    assert_eq!(
        w.get("r1").await.status.unwrap().phase,
        Some(Phase::Pending)
    );

    let values = json!({"reason": {"reason_input": {"type": "plain_text_input", "value": "change freeze until Monday"}}});
    assert_eq!(
        w.click(&slack::view_submission("UCAROL", &view, values)),
        200
    );
    let denied = w.scenario.wait_phase("r1", Phase::Denied, WAIT).await;
    let ready = condition(&denied, "Ready").unwrap();
    assert!(
        ready.message.contains("carol") && ready.message.contains("change freeze until Monday"),
        "{ready:?}"
    );
    w.updated(&ts, &["*Denied*", "change freeze until Monday"])
        .await;
    assert!(
        w.slack
            .calls_of("users.info")
            .iter()
            .any(|c| c.args["user"] == "UCAROL"),
        "{:?}",
        w.slack.calls()
    );
    wait_for(WAIT, "a DM to alice saying Denied", || async {
        w.slack
            .calls_of("chat.postMessage")
            .into_iter()
            .any(|c| {
                c.args["channel"] == "DUALICE"
                    && c.args["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("Denied"))
            })
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_carries_clicks_without_an_ingress() {
    let w = world("slack-socket", true, 0).await;
    wait_for(
        WAIT,
        "the bridge to open a Socket Mode connection",
        || async { (w.slack.sockets() > 0).then_some(()) },
    )
    .await;
    assert!(
        w.slack.calls_of("apps.connections.open").len() == 1,
        "{:?}",
        w.slack.calls()
    );
    w.request("r1");
    w.scenario.wait_phase("r1", Phase::Pending, WAIT).await;
    let (ts, _) = w.posted("r1").await;
    w.slack
        .push_interactive("env-bob-1", &w.approve_click("UBOB", "r1", &ts));
    wait_for(WAIT, "the envelope's acknowledgement", || async {
        w.slack
            .acks()
            .contains(&"env-bob-1".to_owned())
            .then_some(())
    })
    .await;
    let issued = w.scenario.wait_phase("r1", Phase::Issued, WAIT).await;
    assert_eq!(approvers(&issued), ["bob"]);
    w.updated(&ts, &["*Issued*"]).await;

    // Slack asks the client to reconnect: the bridge opens a new connection.
    w.slack
        .push_raw(&json!({"type": "disconnect", "reason": "refresh_requested",
        "debug_info": {"host": "applink-test"}}));
    wait_for(WAIT, "a second apps.connections.open", || async {
        (w.slack.calls_of("apps.connections.open").len() == 2 && w.slack.sockets() == 1)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_down_never_blocks_kubectl_and_messages_are_retried() {
    let w = world("slack-down", false, 0).await;
    w.slack.set_down(true);
    w.request("r1");
    w.scenario.wait_phase("r1", Phase::Pending, WAIT).await;
    // With Slack unreachable, approving with kubectl works as ever.
    w.scenario
        .annotate(
            control_plane(),
            User::Bob,
            "r1",
            "gatehouse.dev/approve",
            "INC-1",
        )
        .ok();
    let issued = w.scenario.wait_phase("r1", Phase::Issued, WAIT).await;
    assert_eq!(approvers(&issued), ["bob"]);
    assert!(w.slack.calls_of("chat.postMessage").is_empty());
    // Slack back: the next pass (every 10 s) posts the message, already showing Issued.
    w.slack.set_down(false);
    let (_, blocks) = w.posted("r1").await;
    assert!(blocks.to_string().contains("*Issued*"), "{blocks}");
    assert!(
        !blocks.to_string().contains("gatehouse_approve"),
        "{blocks}"
    );
    assert!(
        w.bridge.log_text().contains("Slack is unavailable"),
        "{}",
        w.bridge.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_lets_the_bridge_impersonate_only_the_mapped_identities() {
    let w = world("slack-rbac", false, 0).await;
    let cp = control_plane();
    let sa = format!(
        "system:serviceaccount:{}:gatehouse-bridge",
        gatehouse_tests::SYSTEM_NAMESPACE
    );
    let can = |args: &[&str]| {
        let out = cp
            .kubectl(User::Admin)
            .args(["auth", "can-i", "--as", &sa])
            .args(args)
            .run();
        out.stdout.trim() == "yes"
    };
    let system = gatehouse_tests::SYSTEM_NAMESPACE;
    // Exactly the mapped users and groups.
    assert!(can(&["impersonate", "users/bob"]));
    assert!(can(&["impersonate", "users/carol"]));
    assert!(can(&["impersonate", "groups/sre-leads"]));
    assert!(!can(&["impersonate", "users/dave"]));
    assert!(!can(&["impersonate", "users/gatehouse-admin"]));
    assert!(!can(&["impersonate", "groups/system:masters"]));
    assert!(!can(&[
        "impersonate",
        "serviceaccounts/gatehouse-operator",
        "-n",
        system
    ]));
    // Never the CA or seal-key Secrets; only the webhook key it was given.
    assert!(!can(&["get", "secrets/gatehouse-user-ca", "-n", system]));
    assert!(!can(&["get", "secrets/gatehouse-admission", "-n", system]));
    assert!(!can(&["list", "secrets", "-n", system]));
    assert!(can(&[
        "get",
        &format!("secrets/{HOOK_SECRET}"),
        "-n",
        system
    ]));
    // Requests: read, and only their status written; never their spec or metadata itself.
    assert!(can(&[
        "patch",
        "accessrequests.gatehouse.dev",
        "--subresource=status",
        "-n",
        &w.scenario.ns
    ]));
    assert!(!can(&[
        "patch",
        "accessrequests.gatehouse.dev",
        "-n",
        &w.scenario.ns
    ]));
    assert!(!can(&[
        "approve",
        "accesspolicies.gatehouse.dev",
        "-n",
        &w.scenario.ns
    ]));

    // The public Request URL drops a client that sends nothing (10 s for the headers).
    use std::io::Read as _;
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", w.bridge.listen_port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let start = std::time::Instant::now();
    let read = idle.read(&mut [0u8; 512]);
    let waited = start.elapsed();
    assert!(
        read.is_ok() && waited >= Duration::from_secs(9) && waited < Duration::from_secs(20),
        "{read:?} after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_renders_a_valid_bridge_and_refuses_bad_values() {
    let cp = control_plane();
    cp.install_gatehouse();
    let chart = gatehouse_tests::repo_root().join("charts/gatehouse");
    let template = |sets: &[&str]| {
        let mut helm = cp
            .helm()
            .args(["template", "gatehouse"])
            .arg(&chart)
            .args(["-n", gatehouse_tests::SYSTEM_NAMESPACE]);
        for set in sets {
            helm = helm.args(["--set", set]);
        }
        helm.run()
    };
    let good = [
        "bridge.enabled=true",
        "bridge.slack.secretName=gatehouse-slack",
        "bridge.slack.socketMode=true",
        "bridge.ingress.enabled=true",
        "bridge.ingress.host=gatehouse-bridge.example.com",
        "bridge.ingress.tlsSecretName=bridge-tls",
        "bridge.identities[0].slackUser=U0BOB",
        "bridge.identities[0].username=bob",
        "bridge.identities[0].groups[0]=sre-leads",
        "bridge.webhookSecrets[0]=hook-key",
    ];
    let rendered = cp
        .helm()
        .args(["template", "gatehouse"])
        .arg(&chart)
        .args(["-n", gatehouse_tests::SYSTEM_NAMESPACE])
        .args(good.iter().flat_map(|s| ["--set", s]))
        .args([
            "--show-only",
            "templates/bridge.yaml",
            "--show-only",
            "templates/bridge-rbac.yaml",
        ])
        .run();
    let yaml = rendered.ok();
    for kind in [
        "kind: Deployment",
        "kind: Ingress",
        "path: /slack/interactions",
        "--socket-mode",
    ] {
        assert!(yaml.contains(kind), "{kind} missing");
    }
    cp.kubectl(User::Admin)
        .args(["apply", "--dry-run=server", "-f", "-"])
        .stdin(yaml.to_owned())
        .run()
        .ok();
    // Off by default: nothing of the bridge is rendered.
    assert!(!template(&[]).ok().contains("gatehouse-bridge"));
    // Without the Slack Secret, or mapping a system: identity, the chart refuses to render.
    template(&["bridge.enabled=true"]).fails_with(&["bridge.slack.secretName"]);
    template(&[
        "bridge.enabled=true",
        "bridge.slack.secretName=s",
        "bridge.identities[0].slackUser=U1",
        "bridge.identities[0].username=system:admin",
    ])
    .fails_with(&["must not start with system:"]);
    template(&[
        "bridge.enabled=true",
        "bridge.slack.secretName=s",
        "bridge.identities[0].slackUser=U1",
        "bridge.identities[0].username=eve",
        "bridge.identities[0].groups[0]=system:masters",
    ])
    .fails_with(&["system:masters"]);
    // No identities: no impersonation rule at all (an empty resourceNames would mean "any").
    let none = template(&["bridge.enabled=true", "bridge.slack.secretName=s"]);
    assert!(!none.ok().contains("verbs: [impersonate]"), "{}", none.ok());
    assert!(good_has_impersonation(yaml));
}

fn good_has_impersonation(yaml: &str) -> bool {
    yaml.contains("verbs: [impersonate]") && yaml.contains(r#"resourceNames: ["bob"]"#)
}
