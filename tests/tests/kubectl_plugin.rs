//! `kubectl gatehouse` end to end: the real kubectl finds the plugin on PATH, the plugin talks
//! to the real API server with each user's own kubeconfig (admission and RBAC decide), and
//! connects with the real OpenSSH clients through the real proxy to a real sshd.

use std::{path::Path, time::Duration};

use gatehouse_crds::Phase;
use gatehouse_tests::{
    Cmd, ControlPlane, User, control_plane,
    proxied_world::ProxiedWorld,
    repo_root,
    scenario::{Scenario, Setup, host_group, keypair},
    wait_for,
};
use kube::{ResourceExt, api::ListParams};
use serde_json::json;

/// `kubectl gatehouse ARGS` as `user` (KUBECONFIG), with `home` as HOME: the real plugin
/// mechanism, `kubectl-gatehouse` found on PATH.
fn gatehouse(cp: &ControlPlane, user: User, home: &Path) -> Cmd {
    let bin = repo_root().join("target/debug");
    assert!(
        bin.join("kubectl-gatehouse").exists(),
        "build it first: cargo build -p gatehouse-cli"
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Cmd::new(cp.kubectl_binary())
        .arg("gatehouse")
        .env("PATH", path)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("KUBECONFIG", cp.kubeconfig(user))
        .env("GATEHOUSE_PROXY", "")
        .timeout(Duration::from_secs(60))
}

/// A world whose policy needs one approval, with a HOME for the plugin, the engineer's public
/// key and the proxy's address.
async fn cli_world(prefix: &str) -> (ProxiedWorld, std::path::PathBuf, std::path::PathBuf, String) {
    let world = ProxiedWorld::start(
        prefix,
        ProxiedWorld::local_storage,
        json!({"approval": {"required": 1}}),
    )
    .await;
    let home = world.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap_or_else(|e| panic!("{}: {e}", home.display()));
    let key = world.key.with_extension("pub");
    let proxy = format!("127.0.0.1:{}", world.proxy.port);
    (world, home, key, proxy)
}

#[tokio::test]
async fn the_plugin_runs_through_kubectl() {
    let cp = control_plane();
    let home = tempfile::tempdir().unwrap();
    let out = gatehouse(cp, User::Alice, home.path()).arg("version").run();
    assert_eq!(
        out.ok().trim(),
        format!("kubectl-gatehouse {}", env!("CARGO_PKG_VERSION"))
    );
    let completion = gatehouse(cp, User::Alice, home.path())
        .args(["completion", "bash"])
        .run();
    assert!(
        completion.ok().contains("kubectl-gatehouse"),
        "{}",
        completion.stdout
    );
}

#[tokio::test]
async fn request_approve_ssh_scp_config_and_offboarding() {
    let (world, home, key, proxy) = cli_world("cli").await;
    let cp = world.cp;
    let ns = world.s.ns.clone();
    // `-n NS SUBCOMMAND --key KEY REST…`: the key is the subcommand's, before any `--`.
    let alice = |args: &[&str]| {
        gatehouse(cp, User::Alice, &home)
            .args(["-n", &ns, args[0], "--key"])
            .arg(&key)
            .args(&args[1..])
    };

    // Alice asks in one process and waits; bob approves in another.
    let asking = alice(&["request", "db1", "--reason", "INC-4711", "--for", "30m"])
        .timeout(Duration::from_secs(60))
        .spawn();
    let name = wait_for(
        Duration::from_secs(20),
        "alice's pending request",
        || async {
            let list = world.s.requests.list(&ListParams::default()).await.ok()?;
            let r = list.items.into_iter().next()?;
            let pending = r.status.as_ref()?.phase == Some(Phase::Pending)
                && r.status.as_ref()?.policy.is_some();
            pending.then(|| r.name_any())
        },
    )
    .await;
    let to_approve = gatehouse(cp, User::Bob, &home)
        .args(["ls", "--to-approve", "-n", &ns])
        .run();
    assert!(to_approve.ok().contains(&name), "{}", to_approve.stdout);
    gatehouse(cp, User::Bob, &home)
        .args(["approve", &name, "--reason", "ok, INC-4711", "-n", &ns])
        .run()
        .ok();
    let asked = asking.wait();
    asked.ok();
    for needle in [
        "under AccessPolicy oncall (1 approval needed)",
        "Issued: certificate written to",
        "serial=",
    ] {
        assert!(asked.stderr.contains(needle), "{needle}: {}", asked.stderr);
    }
    let certificate = std::fs::read_to_string(format!("{}-cert.pub", world.key.display())).unwrap();
    assert!(
        certificate.starts_with("ssh-ed25519-cert-v01@openssh.com "),
        "{certificate}"
    );
    let issued = world.s.get(&name).await;
    assert_eq!(issued.spec.target.host.as_deref(), Some("db1"));
    assert_eq!(issued.spec.requester.unwrap().username, "alice");

    // ssh through the proxy: prints the login, and the session is recorded.
    let ran = alice(&["ssh", "db1", "--proxy", &proxy, "--", "id", "-un"]).run();
    assert_eq!(ran.ok().trim(), world.login, "{}", ran.stderr);
    let sessions = world.recorded(&name, 1, Duration::from_secs(20)).await;
    assert_eq!(sessions[0].host, "db1");

    // scp a file to the target (the test sshd runs on this machine).
    let local = world.dir.path().join("upload.txt");
    std::fs::write(&local, "payload from kubectl gatehouse\n").unwrap();
    let remote = world.dir.path().join("uploaded.txt");
    alice(&["scp", "--proxy", &proxy, "--"])
        .arg(&local)
        .arg(format!("db1:{}", remote.display()))
        .run()
        .ok();
    assert_eq!(
        std::fs::read_to_string(&remote).unwrap(),
        "payload from kubectl gatehouse\n"
    );

    // `config`, then the plain OpenSSH client.
    let config = alice(&["config", "--proxy", &proxy]).run();
    let config_file = world.dir.path().join("ssh_config");
    std::fs::write(&config_file, config.ok()).unwrap();
    let plain = Cmd::new("ssh")
        .arg("-F")
        .arg(&config_file)
        .args(["-o", "BatchMode=yes", "db1", "id", "-un"])
        .timeout(Duration::from_secs(30))
        .run();
    assert_eq!(plain.ok().trim(), world.login, "{}", plain.stderr);

    // describe shows the timeline.
    let described = gatehouse(cp, User::Alice, &home)
        .args(["-n", &ns, "describe", &name])
        .run();
    for needle in [
        "created by alice",
        "approved by bob: ok, INC-4711",
        "issued: serial",
        "session ",
    ] {
        assert!(
            described.ok().contains(needle),
            "{needle}: {}",
            described.stdout
        );
    }

    // An address that is not the proxy (here the target's own sshd) fails the published pin:
    // the CLI never trusts a host key on first use.
    let impostor = format!("127.0.0.1:{}", world.sshd.port());
    let refused = alice(&["ssh", "db1", "--proxy", &impostor, "--", "id", "-un"]).run();
    assert!(
        !refused.success,
        "connected to an unpinned server: {}",
        refused.stdout
    );
    assert!(
        refused.stderr.contains("Host key verification failed")
            || refused
                .stderr
                .contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        refused.stderr
    );

    // Offboarding: bob revokes everything of alice's; her live session ends.
    let live = alice(&[
        "ssh",
        "db1",
        "--proxy",
        &proxy,
        "--",
        "echo started; sleep 120",
    ])
    .timeout(Duration::from_secs(60))
    .spawn();
    wait_for(Duration::from_secs(15), "the live session", || async {
        let sessions = world.sessions(&name).await;
        sessions.iter().any(|s| s.end_time.is_none()).then_some(())
    })
    .await;
    world
        .proxy
        .await_spooled_output("started", Duration::from_secs(5))
        .await;
    let revoked = gatehouse(cp, User::Bob, &home)
        .args([
            "revoke",
            "--user",
            "alice",
            "--all",
            "--reason",
            "offboarding",
            "-n",
            &ns,
        ])
        .run();
    assert!(
        revoked.ok().contains(&format!("revoked {ns}/{name}")),
        "{}",
        revoked.stdout
    );
    let ended = live.wait();
    assert!(!ended.success, "the session outlived the revocation");
    assert!(ended.stdout.contains("started"), "{}", ended.stdout);
    assert!(ended.stderr.contains("is Revoked"), "{}", ended.stderr);
    world
        .s
        .wait_phase(&name, Phase::Revoked, Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn approving_goes_through_admission() {
    let cp = control_plane();
    let s = Scenario::new(cp, "cli-mallory", &Setup::default()).await;
    let home = tempfile::tempdir().unwrap();
    let (key, _) = keypair(home.path(), "alice");
    let created = gatehouse(cp, User::Alice, home.path())
        .args([
            "request",
            "db1",
            "--no-wait",
            "--for",
            "30m",
            "-n",
            &s.ns,
            "--key",
        ])
        .arg(key.with_extension("pub"))
        .run();
    let name = created.ok().trim().to_owned();
    s.wait_phase(&name, Phase::Pending, Duration::from_secs(10))
        .await;
    let refused = gatehouse(cp, User::Mallory, home.path())
        .args(["approve", &name, "--reason", "trust me", "-n", &s.ns])
        .run();
    refused.fails_with(&["error: refused:", "mallory"]);
    assert_eq!(
        refused.stderr.trim().lines().count(),
        1,
        "{}",
        refused.stderr
    );
    let own = gatehouse(cp, User::Alice, home.path())
        .args(["approve", &name, "-n", &s.ns])
        .run();
    own.fails_with(&["error: refused:"]);
    let still = s.get(&name).await;
    assert_eq!(still.status.unwrap_or_default().phase, Some(Phase::Pending));
}

#[tokio::test]
async fn bad_input_is_one_line_and_creates_nothing() {
    let cp = control_plane();
    let setup = Setup {
        policy_extra: json!({"requireReason": true}),
        ..Setup::default()
    };
    let s = Scenario::new(cp, "cli-bad", &setup).await;
    // db1 is in two groups: a bare `db1` is ambiguous.
    let hosts = setup.hosts.clone();
    cp.apply_as(
        User::Admin,
        &s.ns,
        &host_group("db-replica", "Proxied", "prod", &hosts),
    )
    .ok();
    let home = tempfile::tempdir().unwrap();
    let (key, _) = keypair(home.path(), "alice");
    let key = key.with_extension("pub");
    let expired = cp.service_account_kubeconfig(&s.ns, "nobody", "not-a-valid-token");
    let run = |user: User, args: &[&str]| {
        gatehouse(cp, user, home.path())
            .args(args)
            .args(["-n", &s.ns, "--key"])
            .arg(&key)
            .run()
    };
    let cases: Vec<(&[&str], &str)> = vec![
        (
            &["request", "nohost", "-r", "x"],
            "error: unknown host nohost: it is in no HostGroup you can see in namespace",
        ),
        (
            &["request", "db1", "-r", "x"],
            "error: ambiguous host db1: it is in HostGroups db, db-replica; name one as GROUP/db1",
        ),
        (
            &["request", "db/db1", "--login", "root", "-r", "x"],
            "error: login root is not allowed on host group db (allowed: ubuntu)",
        ),
        (
            &["request", "db/db1", "--for", "3h", "-r", "x"],
            "error: duration 3h is over the maximum 2h of AccessPolicy oncall: pass --for 2h or less",
        ),
        (
            &["request", "db/db1"],
            "error: AccessPolicy oncall requires a reason: pass --reason",
        ),
        (
            &["ssh", "db/db1", "--", "true"],
            "error: the proxy address is not published (key proxy_address of ConfigMap gatehouse-system/gatehouse-ssh)",
        ),
    ];
    for (args, message) in cases {
        let out = run(User::Alice, args);
        out.fails_with(&[message]);
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            out.stderr
        );
    }
    let no_key = gatehouse(cp, User::Alice, home.path())
        .args([
            "request",
            "db/db1",
            "-r",
            "x",
            "-n",
            &s.ns,
            "--key",
            "/nonexistent/id.pub",
        ])
        .run();
    no_key.fails_with(&["error: no public key at /nonexistent/id.pub:"]);
    assert_eq!(no_key.stderr.trim().lines().count(), 1, "{}", no_key.stderr);
    let stale = gatehouse(cp, User::Alice, home.path())
        .env("KUBECONFIG", &expired)
        .args(["request", "db/db1", "-r", "x", "-n", &s.ns])
        .run();
    stale.fails_with(&[
        "error: the API server rejected your credentials",
        "log in again",
    ]);
    assert_eq!(stale.stderr.trim().lines().count(), 1, "{}", stale.stderr);
    // Nothing was created by any of them.
    let left = s.requests.list(&ListParams::default()).await.unwrap();
    assert!(
        left.items.is_empty(),
        "{:?}",
        left.items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>()
    );
}

/// What the first test leaves out: `hosts`, `deny`, `wait`, `sftp` and the machine formats
/// (`-o json|yaml`), each as the user who would run it.
#[tokio::test]
async fn hosts_deny_wait_sftp_and_machine_output() {
    let (world, home, key, proxy) = cli_world("cli-more").await;
    let cp = world.cp;
    let ns = world.s.ns.clone();
    let as_user = |user: User, args: &[&str]| {
        gatehouse(cp, user, &home)
            .args(["-n", &ns])
            .args(args)
            .run()
    };

    // What alice may ask for, as JSON and YAML.
    let hosts: serde_json::Value =
        serde_json::from_str(as_user(User::Alice, &["hosts", "-o", "json"]).ok()).unwrap();
    let db = hosts
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["hostGroup"] == "db"))
        .unwrap_or_else(|| panic!("no HostGroup db in {hosts}"));
    assert_eq!(db["hosts"], json!(["db1", "db2"]), "{db}");
    assert_eq!(db["approvals"], 1, "{db}");
    assert!(
        db["logins"]
            .as_array()
            .unwrap()
            .contains(&json!(world.login))
    );
    let yaml = as_user(User::Alice, &["hosts", "-o", "yaml"]);
    assert!(yaml.ok().contains("hostGroup: db"), "{}", yaml.stdout);

    // Denied by bob: alice sees who and why, in JSON.
    let key_arg = key.display().to_string();
    as_user(
        User::Alice,
        &[
            "request",
            "db1",
            "--key",
            &key_arg,
            "--no-wait",
            "--name",
            "r-deny",
        ],
    )
    .ok();
    world
        .s
        .wait_phase("r-deny", Phase::Pending, Duration::from_secs(10))
        .await;
    as_user(
        User::Bob,
        &["deny", "r-deny", "--reason", "not during the freeze"],
    )
    .ok();
    world
        .s
        .wait_phase("r-deny", Phase::Denied, Duration::from_secs(10))
        .await;
    let described: serde_json::Value =
        serde_json::from_str(as_user(User::Alice, &["describe", "r-deny", "-o", "json"]).ok())
            .unwrap();
    assert_eq!(described["status"]["phase"], "Denied", "{described}");
    assert!(
        described.to_string().contains("not during the freeze"),
        "{described}"
    );
    // A requester cannot deny (or approve) anyone's request but through admission: refused.
    as_user(
        User::Alice,
        &[
            "request",
            "db1",
            "--key",
            &key_arg,
            "--no-wait",
            "--name",
            "r-sftp",
        ],
    )
    .ok();
    as_user(User::Alice, &["deny", "r-sftp", "--reason", "mine"]).fails_with(&["r-sftp"]);

    // Approved; `wait` writes the certificate; sftp through the proxy puts a file.
    as_user(User::Bob, &["approve", "r-sftp"]).ok();
    let waited = as_user(User::Alice, &["wait", "r-sftp", "--key", &key_arg]);
    assert!(
        waited.ok().contains("Issued") || waited.stderr.contains("Issued"),
        "{}\n{}",
        waited.stdout,
        waited.stderr
    );
    let local = world.dir.path().join("sftp-upload.txt");
    std::fs::write(&local, "payload over sftp\n").unwrap();
    let remote = world.dir.path().join("sftp-uploaded.txt");
    let batch = world.dir.path().join("sftp-batch");
    std::fs::write(
        &batch,
        format!("put {} {}\n", local.display(), remote.display()),
    )
    .unwrap();
    gatehouse(cp, User::Alice, &home)
        .args([
            "-n", &ns, "sftp", "db1", "--key", &key_arg, "--proxy", &proxy, "--", "-b",
        ])
        .arg(&batch)
        .run()
        .ok();
    assert_eq!(
        std::fs::read_to_string(&remote).unwrap(),
        "payload over sftp\n"
    );

    // `ls -o json` is a kubectl-style List with both requests and their phases.
    let listed: serde_json::Value =
        serde_json::from_str(as_user(User::Alice, &["ls", "-o", "json"]).ok()).unwrap();
    assert_eq!(listed["kind"], "List");
    let phases: Vec<(String, String)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                r["status"]["phase"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for want in [("r-deny", "Denied"), ("r-sftp", "Issued")] {
        assert!(
            phases.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} in {phases:?}"
        );
    }
}
