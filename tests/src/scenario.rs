//! A namespace set up the way a team would: a HostGroup, an AccessPolicy, the chart's roles
//! bound to the control plane's users, and helpers to request, approve and watch.
//!
//! Data goes into the real API server as the users themselves (alice requests, bob and carol
//! approve, through their own kubeconfigs); it comes back as typed AccessRequests read as admin.

use std::time::Duration;

use gatehouse_crds::{AccessRequest, HostGroup, Phase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use serde_json::{Value, json};

use crate::{CmdOutput, ControlPlane, Subject, User, net::LOOPBACK, sshd::Sshd, wait_for};

/// Policy every scenario creates.
pub const POLICY: &str = "oncall";
/// HostGroup every scenario creates.
pub const HOST_GROUP: &str = "db";

/// How a scenario's policy and host group look.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Approvals the policy requires.
    pub approvals: u32,
    /// Logins the policy allows.
    pub logins: Vec<String>,
    /// HostGroup mode (`Proxied` or `Direct`).
    pub mode: &'static str,
    /// HostGroup hosts: (name, address, port, host key line).
    pub hosts: Vec<(String, String, u16, String)>,
    /// Extra policy spec fields merged in.
    pub policy_extra: Value,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            approvals: 1,
            logins: vec!["ubuntu".to_owned()],
            mode: "Proxied",
            hosts: vec![(
                "db1".to_owned(),
                "127.0.0.1".to_owned(),
                22,
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBjMjrTwM1TVoZFKhZqYp/GfWQxyJsn6n6Dtdx1U3FvW root@db1"
                    .to_owned(),
            )],
            policy_extra: json!({}),
        }
    }
}

/// One test's namespace.
#[derive(Debug)]
pub struct Scenario {
    /// Namespace name.
    pub ns: String,
    /// AccessRequests in it, read as admin.
    pub requests: Api<AccessRequest>,
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, value) => *slot = value.clone(),
    }
}

/// The HostGroup manifest.
pub fn host_group(
    name: &str,
    mode: &str,
    env: &str,
    hosts: &[(String, String, u16, String)],
) -> Value {
    let hosts: Vec<Value> = hosts
        .iter()
        .map(|(name, address, port, key)| json!({"name": name, "address": address, "port": port, "hostKeys": [key]}))
        .collect();
    json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "HostGroup",
        "metadata": {"name": name, "labels": {"env": env}},
        "spec": {"mode": mode, "hosts": hosts},
    })
}

/// An AccessRequest manifest for `login` on the scenario's HostGroup.
pub fn request(name: &str, login: &str, public_key: &str) -> Value {
    json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessRequest",
        "metadata": {"name": name},
        "spec": {"target": {"hostGroup": HOST_GROUP}, "login": login, "duration": "30m", "publicKey": public_key},
    })
}

/// A fresh Ed25519 key pair from the real `ssh-keygen`: (private key path, public key line).
pub use crate::sshd::generate_key as keypair;

/// The condition of type `type_` (`Ready`, `Approved`, `Denied`) in `request`'s status.
pub fn condition(request: &AccessRequest, type_: &str) -> Option<Condition> {
    request
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// Host `name` of a HostGroup, served by the test `sshd`: (name, address, port, host key line).
pub fn sshd_host(name: &str, sshd: &Sshd) -> (String, String, u16, String) {
    (
        name.to_owned(),
        LOOPBACK.to_string(),
        sshd.port(),
        sshd.host_key().to_owned(),
    )
}

/// A fresh Ed25519 public key line, for requests whose certificates nobody logs in with (the
/// private half is thrown away).
pub fn public_key() -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    keypair(dir.path(), "alice").1
}

/// What host `host` of HostGroup `namespace/group` accepts for `login`: the lines of its
/// AuthorizedPrincipalsFile, as the operator publishes them in the group's status (waits up
/// to 15 s for them). A target configured from this and nothing else is what a host admin runs.
pub async fn authorized_principals(
    cp: &ControlPlane,
    namespace: &str,
    group: &str,
    host: &str,
    login: &str,
) -> Vec<String> {
    let groups: Api<HostGroup> = Api::namespaced(cp.client(User::Admin).await, namespace);
    let what = format!("HostGroup {namespace}/{group} to publish {host}'s principals for {login}");
    wait_for(Duration::from_secs(15), &what, || async {
        let group = groups.get(group).await.ok()?;
        let file = group
            .status?
            .hosts
            .into_iter()
            .find(|h| h.name == host)?
            .authorized_principals
            .remove(login)?;
        Some(file.lines().map(str::to_owned).collect())
    })
    .await
}

impl Scenario {
    /// Create the namespace: alice and bob's group may request, `sre-leads` (bob, carol) may
    /// approve policy [`POLICY`], the HostGroup is labelled `env=prod` and selected by the policy.
    pub async fn new(cp: &ControlPlane, prefix: &str, setup: &Setup) -> Scenario {
        cp.install_gatehouse();
        let ns = cp.namespace(prefix).await;
        cp.bind(&ns, "gatehouse-requester", Subject::Group("dev"));
        cp.allow_approve(&ns, POLICY, Subject::Group("sre-leads"));
        cp.apply_as(
            User::Admin,
            &ns,
            &host_group(HOST_GROUP, setup.mode, "prod", &setup.hosts),
        )
        .ok();
        let mut policy = json!({
            "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": POLICY},
            "spec": {
                "subjects": [{"kind": "Group", "name": "dev"}],
                "hostSelector": {"matchLabels": {"env": "prod"}},
                "logins": setup.logins,
                "maxDuration": "2h",
                "approval": {"required": setup.approvals},
            },
        });
        merge(&mut policy["spec"], &setup.policy_extra);
        cp.apply_as(User::Admin, &ns, &policy).ok();
        let requests = Api::namespaced(cp.client(User::Admin).await, &ns);
        Scenario { ns, requests }
    }

    /// `kubectl apply` a manifest as `user` in this namespace.
    pub fn apply(&self, cp: &ControlPlane, user: User, object: &Value) -> CmdOutput {
        cp.apply_as(user, &self.ns, object)
    }

    /// `kubectl annotate accessrequest NAME KEY=VALUE` as `user`.
    pub fn annotate(
        &self,
        cp: &ControlPlane,
        user: User,
        name: &str,
        key: &str,
        value: &str,
    ) -> CmdOutput {
        cp.kubectl(user)
            .args([
                "-n",
                &self.ns,
                "annotate",
                "accessrequest",
                name,
                &format!("{key}={value}"),
            ])
            .run()
    }

    /// Wait until request `name` is in `phase`.
    pub async fn wait_phase(&self, name: &str, phase: Phase, timeout: Duration) -> AccessRequest {
        let what = format!("AccessRequest {}/{name} to be {phase:?}", self.ns);
        wait_for(timeout, &what, || async {
            let request = self.requests.get(name).await.ok()?;
            (request.status.as_ref()?.phase == Some(phase)).then_some(request)
        })
        .await
    }

    /// The request now.
    pub async fn get(&self, name: &str) -> AccessRequest {
        self.requests
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get {name}: {e}"))
    }

    /// What host `host` of this namespace's HostGroup [`HOST_GROUP`] accepts for `login`.
    pub async fn authorized_principals(
        &self,
        cp: &ControlPlane,
        host: &str,
        login: &str,
    ) -> Vec<String> {
        authorized_principals(cp, &self.ns, HOST_GROUP, host, login).await
    }

    /// Event reasons recorded for request `name`, oldest first.
    pub fn event_reasons(&self, cp: &ControlPlane, name: &str) -> Vec<String> {
        let out = cp
            .kubectl(User::Admin)
            .args(["-n", &self.ns, "get", "events.events.k8s.io", "-o", "json"])
            .run();
        let list: Value = serde_json::from_str(out.ok()).unwrap();
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["regarding"]["name"] == name)
            .filter_map(|e| e["reason"].as_str().map(str::to_owned))
            .collect()
    }
}
