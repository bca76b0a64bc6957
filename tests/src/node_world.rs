//! The world of the real-node test (`tests/tests/real_node.rs`): a recording store and a team
//! whose target the chart's own pods reach, and the engineer's way through the proxy pods.
//!
//! In: the plane ([`crate::control_plane`]), the node ([`Node`]: its address is on this machine's
//! loopback device and pods reach it through their bridge), and the chart installed by the test
//! with [`recording_store`]'s values and running. Out: MinIO on the node address with bucket
//! [`BUCKET`] and the Secret `gatehouse-s3` holding its keys; a [`NodeWorld`]: an sshd on the node
//! address trusting only the upstream CA the operator pods published, host `db1` of a Proxied
//! HostGroup in a fresh namespace where alice requests and bob approves; alice's key and the
//! proxy's published host key; requests issued with kubectl, `ssh` through a proxy pod or the
//! NodePort, sessions and recordings read back from status, MinIO and Events.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use gatehouse_crds::{
    AccessRequest, Phase, SessionRecord,
    contract::{annotations, published},
};
use kube::Api;
use serde_json::{Value, json};

use crate::{
    CmdOutput, ControlPlane, SYSTEM_NAMESPACE, Subject, User,
    minio::{Credentials, Minio},
    node::Node,
    scenario::{self, HOST_GROUP, POLICY, Scenario},
    sha256_hex,
    ssh_client::{Client, Server, SshCommand},
    sshd::{Sshd, SshdConfig, current_login},
    wait_for,
};

/// The bucket recordings go to.
pub const BUCKET: &str = "gatehouse-recordings";
/// The proxy Service's node port (kind-config.yaml uses the same).
pub const NODE_PORT: u16 = 32222;
/// The proxy's SSH port in its pod.
pub const POD_SSH_PORT: u16 = 2222;

/// MinIO on the node address (data and log in `dir`), namespace [`SYSTEM_NAMESPACE`] with Secret
/// `gatehouse-s3` holding its keys, and the chart's `--set` values that store recordings there,
/// expose the proxy on [`NODE_PORT`] and let it dial only the node address.
pub fn recording_store(cp: &ControlPlane, node: &Node, dir: &Path) -> (Minio, Vec<String>) {
    let minio = Minio::start_at(
        cp,
        node.ip,
        &dir.join("minio-data"),
        &dir.join("minio.log"),
        Credentials::for_tests(),
        |spec| spec,
    );
    minio.create_bucket(BUCKET);
    cp.kubectl(User::Admin)
        .args(["create", "namespace", SYSTEM_NAMESPACE])
        .run()
        .ok();
    // The keys go in a file, not on a command line `ps` shows.
    let credentials = dir.join("s3.env");
    let c = Credentials::for_tests();
    std::fs::write(
        &credentials,
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
            c.access_key, c.secret_key
        ),
    )
    .expect("writing the credentials file");
    cp.kubectl(User::Admin)
        .args([
            "-n",
            SYSTEM_NAMESPACE,
            "create",
            "secret",
            "generic",
            "gatehouse-s3",
        ])
        .arg(format!("--from-env-file={}", credentials.display()))
        .run()
        .ok();
    let sets = vec![
        "recording.storage.type=s3".to_owned(),
        format!("recording.storage.s3.endpoint={}", minio.endpoint()),
        format!("recording.storage.s3.bucket={BUCKET}"),
        "recording.storage.s3.pathStyle=true".to_owned(),
        "recording.storage.s3.credentialsSecret.name=gatehouse-s3".to_owned(),
        "proxy.service.type=NodePort".to_owned(),
        format!("proxy.service.nodePort={NODE_PORT}"),
        // The proxy may dial only this machine's node address (the target sshd).
        format!("proxy.allowedTargets={{{}/32}}", node.ip),
    ];
    (minio, sets)
}

/// What the steps share.
#[derive(Debug)]
pub struct NodeWorld {
    /// The control plane.
    pub cp: &'static ControlPlane,
    /// The node.
    pub node: Node,
    /// Keys, certificates, the MinIO data.
    pub dir: tempfile::TempDir,
    /// The recording store.
    pub minio: Minio,
    /// The `--set` values the chart was installed with.
    pub sets: Vec<String>,
    /// The team's namespace.
    pub s: Scenario,
    /// The target.
    pub sshd: Sshd,
    /// The login on the target (the unix user running the tests).
    pub login: String,
    /// Alice's private key.
    pub key: PathBuf,
    /// Alice's public key line.
    pub public: String,
    /// known_hosts pinning the proxy's published host key.
    pub known_hosts: PathBuf,
}

impl NodeWorld {
    /// The team, once the chart runs: its target, namespace, HostGroup, policy and bindings.
    pub async fn team(
        cp: &'static ControlPlane,
        node: Node,
        dir: tempfile::TempDir,
        minio: Minio,
        sets: Vec<String>,
    ) -> NodeWorld {
        // The team: a HostGroup whose one host is an sshd on this machine's node address, trusting
        // only the upstream CA the operator pods published; alice may request, bob approves.
        let upstream_ca = cp.published(published::UPSTREAM_CA_PUB).await;
        let login = current_login();
        let sshd = Sshd::start(&SshdConfig {
            listen: node.ip,
            ..SshdConfig::trusting(upstream_ca.trim()).authorize(&login, &[])
        });
        let ns = cp.namespace("node").await;
        cp.bind(&ns, "gatehouse-requester", Subject::Group("dev"));
        cp.allow_approve(&ns, POLICY, Subject::Group("sre-leads"));
        let host = (
            "db1".to_owned(),
            node.ip.to_string(),
            sshd.port(),
            sshd.host_key().to_owned(),
        );
        cp.apply_as(
            User::Admin,
            &ns,
            &scenario::host_group(HOST_GROUP, "Proxied", "prod", &[host]),
        )
        .ok();
        cp.apply_as(
            User::Admin,
            &ns,
            &json!({
                "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessPolicy",
                "metadata": {"name": POLICY},
                "spec": {
                    "subjects": [{"kind": "Group", "name": "dev"}],
                    "hostSelector": {"matchLabels": {"env": "prod"}},
                    "logins": [login],
                    "maxDuration": "2h",
                    "approval": {"required": 1},
                },
            }),
        )
        .ok();
        let principals = scenario::authorized_principals(cp, &ns, HOST_GROUP, "db1", &login).await;
        sshd.set_authorized_principals(&login, &principals);
        let requests: Api<AccessRequest> = Api::namespaced(cp.client(User::Admin).await, &ns);
        let s = Scenario { ns, requests };
        let (key, public) = scenario::keypair(dir.path(), "alice");
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(
            &known_hosts,
            cp.published(published::PROXY_KNOWN_HOSTS).await,
        )
        .expect("writing known_hosts");
        NodeWorld {
            cp,
            node,
            dir,
            minio,
            sets,
            s,
            sshd,
            login,
            key,
            public,
            known_hosts,
        }
    }

    /// Alice's request, made with kubectl, approved by bob: returns its certificate file.
    pub async fn issue(&self, name: &str) -> PathBuf {
        let request = scenario::request(name, &self.login, &self.public);
        self.s.apply(self.cp, User::Alice, &request).ok();
        // Approval needs the governing policy in status (admission says so otherwise); after an
        // upgrade or a failover the new leader may still be syncing its caches.
        self.s
            .wait_phase(name, Phase::Pending, Duration::from_secs(60))
            .await;
        self.s
            .annotate(self.cp, User::Bob, name, annotations::APPROVE, "real node")
            .ok();
        let issued = self
            .s
            .wait_phase(name, Phase::Issued, Duration::from_secs(30))
            .await;
        let file = self.dir.path().join(format!("{name}-cert.pub"));
        std::fs::write(
            &file,
            issued
                .status
                .unwrap_or_default()
                .certificate
                .unwrap_or_default(),
        )
        .expect("writing the certificate");
        file
    }

    /// `ssh` as alice at `address:port` (the NodePort, or a pod) as `LOGIN@db1`.
    pub fn ssh(
        &self,
        address: std::net::Ipv4Addr,
        port: u16,
        cert: &Path,
        args: &[&str],
    ) -> SshCommand {
        let server = Server {
            address,
            port,
            known_hosts: self.known_hosts.clone(),
        };
        SshCommand::new(
            Client::Ssh,
            &server,
            &format!("{}@db1", self.login),
            &self.key,
            cert,
        )
        .option("HostKeyAlias", published::PROXY_HOST_KEY_ALIAS)
        .args(args)
    }

    pub async fn sessions(&self, name: &str) -> Vec<SessionRecord> {
        self.s.get(name).await.status.unwrap_or_default().sessions
    }

    /// Wait until session `id` of request `name` has its recording in status; check the object in
    /// MinIO against it and return its text.
    pub async fn stored_recording(&self, name: &str, id: &str) -> String {
        let recording = wait_for(
            Duration::from_secs(30),
            &format!("session {id} recorded in {name}'s status"),
            || async {
                self.sessions(name)
                    .await
                    .into_iter()
                    .find(|s| s.id == id)?
                    .recording
            },
        )
        .await;
        let bytes = self
            .minio
            .get(BUCKET, &recording.key)
            .unwrap_or_else(|| panic!("{} is not in MinIO bucket {BUCKET}", recording.key));
        assert_eq!(sha256_hex(&bytes), recording.sha256, "{}", recording.key);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The session ids of request `name` not in `before`.
    pub async fn new_sessions(&self, name: &str, before: &[SessionRecord]) -> Vec<String> {
        self.sessions(name)
            .await
            .into_iter()
            .filter(|s| before.iter().all(|b| b.id != s.id))
            .map(|s| s.id)
            .collect()
    }

    /// Event `SessionRecorded` of request `name` for session `id`: the proxy pod that reported it.
    pub fn recorded_by(&self, name: &str, id: &str) -> Option<String> {
        let out = self
            .cp
            .kubectl(User::Admin)
            .args([
                "-n",
                &self.s.ns,
                "get",
                "events.events.k8s.io",
                "-o",
                "json",
            ])
            .run();
        let list: Value = serde_json::from_str(out.ok()).ok()?;
        list["items"]
            .as_array()?
            .iter()
            .filter(|e| e["regarding"]["name"] == name && e["reason"] == "SessionRecorded")
            .find(|e| e["note"].as_str().is_some_and(|n| n.contains(id)))
            .and_then(|e| e["reportingInstance"].as_str().map(str::to_owned))
    }
}

/// Run `ssh` with a verbose log (`-vvv -E FILE`) whose lines are stamped with the time they
/// appeared, so a slow login shows where it waited; returns what ssh printed and the stamped log.
pub async fn traced(cmd: SshCommand, log: &Path) -> (CmdOutput, Vec<(Duration, String)>) {
    let start = Instant::now();
    let mut running = cmd.flag("-vvv").flag("-E").flag(log).spawn();
    let mut lines: Vec<(Duration, String)> = Vec::new();
    loop {
        let exited = running.has_exited();
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().skip(lines.len()) {
            lines.push((start.elapsed(), line.to_owned()));
        }
        if exited {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = tokio::task::spawn_blocking(move || running.wait())
        .await
        .expect("ssh");
    (out, lines)
}
