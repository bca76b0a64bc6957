//! `make up`: a local Gatehouse on this machine, started by the same harness code the
//! end-to-end tests and the benchmark use (`tests/src/bin/gatehouse-up.rs` runs it).
//!
//! In: the plane directory (`UP_DIR`), where recordings go (`GATEHOUSE_RECORDINGS=local|minio|s3`,
//! for s3 `GATEHOUSE_S3_*` and the AWS credentials), `examples/` (the demo namespace) and the
//! control plane `control-plane.sh up` starts there. Out: the chart, the operator, the proxy,
//! the demo target sshd and (minio) MinIO, detached with pid files in the plane directory so
//! `control-plane.sh down` (`make down`) stops them; `recordings.env` for `make demo` (mode 600:
//! it may hold S3 credentials), alice's key and `ssh_config`, and the summary (printed and kept
//! in `summary.txt`, which a second `make up` prints while everything runs).

use std::{
    fs,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use gatehouse_crds::contract::published;

use crate::{
    ControlPlane,
    binaries::Logs,
    command::Cmd,
    minio::{Credentials, Minio, REGION},
    net::LOOPBACK,
    process::Spec,
    proxy::{Proxy, ProxyConfig, S3Store, Storage},
    repo_root, scenario,
    sshd::{Sshd, SshdConfig, current_login, generate_key_as},
    users::{UserRow, rows},
};

/// The bucket `RECORDINGS=minio` creates.
const MINIO_BUCKET: &str = "gatehouse-recordings";
/// The demo's namespace (examples/ applied, made true for this machine).
const DEMO_NAMESPACE: &str = "demo";

/// Where recordings go, as `RECORDINGS=` chose.
#[derive(Debug, Clone)]
pub enum Recordings {
    /// `$UP_DIR/recordings/`.
    Local,
    /// A local MinIO with its data in `$UP_DIR/minio/`.
    Minio,
    /// The S3 store the `GATEHOUSE_S3_*` variables name.
    S3(S3Store),
}

impl Recordings {
    /// Read and check the choice before anything starts; the error is what `make up` says.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        // Like the shell's ${VAR:-default}: unset and empty are the same.
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        match var("GATEHOUSE_RECORDINGS").as_deref().unwrap_or("local") {
            "local" => Ok(Self::Local),
            "minio" => Ok(Self::Minio),
            "s3" => {
                let required = |name: &str| var(name).ok_or(format!("RECORDINGS=s3 needs {name}"));
                let endpoint = required("GATEHOUSE_S3_ENDPOINT")?;
                let bucket = required("GATEHOUSE_S3_BUCKET")?;
                let access_key = required("AWS_ACCESS_KEY_ID")?;
                let secret_key = required("AWS_SECRET_ACCESS_KEY")?;
                let path_style = match var("GATEHOUSE_S3_PATH_STYLE").as_deref().unwrap_or("true") {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(format!(
                            "GATEHOUSE_S3_PATH_STYLE must be true or false (got '{other}')"
                        ));
                    }
                };
                Ok(Self::S3(S3Store {
                    endpoint,
                    bucket,
                    region: var("GATEHOUSE_S3_REGION").unwrap_or_else(|| REGION.to_owned()),
                    prefix: var("GATEHOUSE_S3_PREFIX").unwrap_or_default(),
                    path_style,
                    access_key,
                    secret_key,
                }))
            }
            other => Err(format!(
                "RECORDINGS must be local, minio or s3 (got '{other}')"
            )),
        }
    }

    /// The `RECORDINGS=` value.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Minio => "minio",
            Self::S3(_) => "s3",
        }
    }
}

/// Bring everything up in `dir` (or, when it already runs there, print its summary), printing
/// progress. Harness failures panic with the log they concern; the error is a refusal.
pub async fn run(dir: &Path, recordings: Recordings) -> Result<(), String> {
    if let Some(summary) = running_summary(dir) {
        let running = fs::read_to_string(dir.join("recordings.env"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("GATEHOUSE_RECORDINGS="))
            .map_or_else(|| "local".to_owned(), str::to_owned);
        if running != recordings.name() {
            return Err(format!(
                "Gatehouse runs with RECORDINGS={running}; run make down first to switch to {}",
                recordings.name()
            ));
        }
        print!("{summary}");
        return Ok(());
    }
    let scripts = repo_root().join("tests/scripts");
    // A half-started or crashed earlier run: start clean.
    Cmd::new(scripts.join("control-plane.sh"))
        .arg("down")
        .arg(dir)
        .run();
    build_gatehouse()?;
    if !Cmd::new(scripts.join("control-plane.sh"))
        .arg("up")
        .arg(dir)
        .run_visible()
    {
        return Err("control-plane.sh up failed (above)".to_owned());
    }
    let cp = ControlPlane::from_env_file(dir).with_logs(Logs::Text);
    let dir = cp.dir();

    println!("[up] helm install gatehouse, and the operator its webhooks call");
    cp.install_gatehouse();
    let operator = cp.shared_operator();
    let upstream_ca = cp.published(published::UPSTREAM_CA_PUB).await;
    let proxy_known_hosts = cp.published(published::PROXY_KNOWN_HOSTS).await;

    let (storage, where_) = recording_store(&cp, &recordings);
    println!("[up] starting the proxy (recordings in {where_})");
    let proxy = Proxy::start_daemon(
        &cp,
        ProxyConfig {
            logs: Logs::Text,
            pod_name: "gatehouse-proxy-local".to_owned(),
            ..ProxyConfig::new(dir.to_path_buf(), storage)
        },
    );
    let (proxy_port, proxy_metrics) = (proxy.port, proxy.metrics_port);
    proxy.detach(&dir.join("proxy.pid"));

    println!("[up] starting the demo target prod-db-01 (sshd trusting only the upstream CA)");
    let demo = dir.join("demo");
    let sshd = Sshd::start_daemon(&SshdConfig {
        home: Some(demo.clone()),
        ..SshdConfig::trusting(upstream_ca.trim()).authorize(&current_login(), &[])
    });
    let (sshd_port, sshd_log) = (sshd.port(), sshd.log_path().to_path_buf());
    let login = current_login();
    apply_demo_namespace(&cp, &demo, &login, sshd_port, sshd.host_key());
    // Configured from what the operator publishes for this host, as a host admin would.
    let principals =
        scenario::authorized_principals(&cp, DEMO_NAMESPACE, "prod-db", "prod-db-01", &login).await;
    sshd.set_authorized_principals(&login, &principals);
    sshd.detach(&dir.join("demo-sshd.pid"));

    let alice = dir.join("alice");
    fs::create_dir_all(&alice).unwrap_or_else(|e| panic!("creating {}: {e}", alice.display()));
    if !alice.join("id_ed25519").is_file() {
        generate_key_as(&alice, "id_ed25519", "alice@gatehouse-demo");
    }
    write(&alice.join("known_hosts"), &proxy_known_hosts);
    write(
        &dir.join("ssh_config"),
        &ssh_config(dir, proxy_port, &login),
    );
    // `kubectl gatehouse` for the demo: the local proxy's address (a cluster publishes it as
    // `proxy_address`), and alice's CLI files inside the plane directory.
    write(
        &dir.join("cli.env"),
        &format!(
            "export GATEHOUSE_PROXY={LOOPBACK}:{proxy_port}\nexport XDG_CONFIG_HOME={}\n",
            alice.join("config").display()
        ),
    );

    let summary = format!(
        "
Gatehouse is up.
  API server   {server}   (Kubernetes {version})
  kubectl      {kubectl}
  operator     webhook https://{LOOPBACK}:{webhook}, metrics http://{LOOPBACK}:{metrics}/metrics, log {operator_log}
  proxy        ssh {LOOPBACK}:{proxy_port}, metrics http://{LOOPBACK}:{proxy_metrics}/metrics, log {dir}/proxy.log
  target       prod-db-01 = sshd on {LOOPBACK}:{sshd_port} (login {login}), HostGroup {DEMO_NAMESPACE}/prod-db, log {sshd_log}
  recordings   {where_}
{users}  ssh_config   {dir}/ssh_config (alice's key {dir}/alice/id_ed25519)
  CLI          PATH=$PWD/target/debug:$PATH; source {dir}/cli.env; kubectl gatehouse --kubeconfig {dir}/kubeconfigs/alice.kubeconfig -n {DEMO_NAMESPACE} hosts

Walk through it with: make demo     Stop everything with: make down
",
        server = cp.server(),
        version = cp.kubernetes_version(),
        kubectl = cp.kubectl_binary().display(),
        webhook = operator.webhook_port,
        metrics = operator.metrics_port,
        operator_log = operator.log.display(),
        sshd_log = sshd_log.display(),
        users = users_summary(dir, &rows()),
        dir = dir.display(),
    );
    write(&dir.join("summary.txt"), &summary);
    print!("{summary}");
    Ok(())
}

/// The summary, when everything a previous `make up` in `dir` started still runs.
fn running_summary(dir: &Path) -> Option<String> {
    let alive = |name: &str| {
        fs::read_to_string(dir.join(format!("{name}.pid")))
            .ok()
            .is_some_and(|pid| Path::new("/proc").join(pid.trim()).exists())
    };
    let daemons = ["apiserver", "operator", "proxy", "demo-sshd"];
    let minio_ok = !dir.join("minio.pid").exists() || alive("minio");
    (daemons.iter().all(|d| alive(d)) && minio_ok)
        .then(|| fs::read_to_string(dir.join("summary.txt")).ok())
        .flatten()
}

/// `cargo build` the operator and the proxy, unless prebuilt ones are named (the quickstart
/// test names them: it runs inside `cargo test`).
fn build_gatehouse() -> Result<(), String> {
    let named = ["GATEHOUSE_OPERATOR_BIN", "GATEHOUSE_PROXY_BIN"]
        .iter()
        .all(|v| std::env::var_os(v).is_some_and(|p| !p.is_empty()));
    if named {
        return Ok(());
    }
    println!(
        "[up] building the operator, the proxy and kubectl-gatehouse (cargo; the first build takes a few minutes)"
    );
    let built = Cmd::new("cargo")
        .args([
            "build",
            "-q",
            "-p",
            "gatehouse-operator",
            "-p",
            "gatehouse-proxy",
            "-p",
            "gatehouse-cli",
        ])
        .arg("--manifest-path")
        .arg(repo_root().join("Cargo.toml"))
        .timeout(std::time::Duration::from_secs(3600))
        .run_visible();
    built
        .then_some(())
        .ok_or_else(|| "cargo build failed".to_owned())
}

/// Where the proxy stores recordings, and how the summary says so; starts MinIO for `minio`
/// and writes `recordings.env`.
fn recording_store(cp: &ControlPlane, recordings: &Recordings) -> (Storage, String) {
    let dir = cp.dir();
    let store = match recordings {
        Recordings::Local => {
            write_private(&dir.join("recordings.env"), "GATEHOUSE_RECORDINGS=local\n");
            // Object keys start with recordings/: the store root is the plane directory.
            let where_ = dir.join("recordings").display().to_string();
            return (Storage::Local(dir.to_path_buf()), where_);
        }
        Recordings::Minio => {
            let data = dir.join("minio");
            let minio = Minio::start_with(
                cp,
                &data.join("data"),
                &dir.join("minio.log"),
                minio_credentials(),
                Spec::daemon,
            );
            println!(
                "[up] started MinIO on {} (data in {})",
                minio.endpoint(),
                data.join("data").display()
            );
            minio.create_bucket(MINIO_BUCKET);
            let store = minio.store(MINIO_BUCKET);
            minio.detach(&dir.join("minio.pid"));
            store
        }
        Recordings::S3(store) => store.clone(),
    };
    let vars = [
        ("GATEHOUSE_RECORDINGS", recordings.name()),
        ("GATEHOUSE_S3_ENDPOINT", &store.endpoint),
        ("GATEHOUSE_S3_BUCKET", &store.bucket),
        ("GATEHOUSE_S3_REGION", &store.region),
        (
            "GATEHOUSE_S3_PATH_STYLE",
            if store.path_style { "true" } else { "false" },
        ),
        ("GATEHOUSE_S3_PREFIX", &store.prefix),
        ("AWS_ACCESS_KEY_ID", &store.access_key),
        ("AWS_SECRET_ACCESS_KEY", &store.secret_key),
    ];
    let env: String = vars
        .iter()
        .map(|(k, v)| format!("{k}={}\n", shell_quote(v)))
        .collect();
    write_private(&dir.join("recordings.env"), &env);
    let where_ = format!(
        "s3://{}/{}recordings/ at {}",
        store.bucket, store.prefix, store.endpoint
    );
    (Storage::S3(store), where_)
}

/// Fresh root credentials for MinIO (`control-plane.sh up` started from an empty directory, so
/// its data is new too); `recordings.env` keeps them for the demo.
fn minio_credentials() -> Credentials {
    Credentials {
        access_key: format!("gatehouse-{}", random_hex(4)),
        secret_key: random_hex(20),
    }
}

/// `bytes` random bytes from the kernel, as hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Namespace `demo` with examples/hostgroup.yaml, policy.yaml and rbac.yaml, made true for this
/// machine: prod-db-01's address, port and host key are the demo sshd's, the login is `login`.
/// The rewritten files are kept in `demo/`.
fn apply_demo_namespace(cp: &ControlPlane, demo: &Path, login: &str, port: u16, host_key: &str) {
    let examples = repo_root().join("examples");
    let read = |name: &str| {
        let path = examples.join(name);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    };
    let mut host_group = read("hostgroup.yaml");
    host_group = replace_line(
        &host_group,
        "address: 10.20.0.11",
        &format!("address: {LOOPBACK}"),
    );
    host_group = replace_line(&host_group, "port: 22", &format!("port: {port}"));
    host_group = replace_line(
        &host_group,
        "- ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBjMjrTwM1TVoZFKhZqYp/GfWQxyJsn6n6Dtdx1U3FvW root@prod-db-01",
        &format!("- {host_key}"),
    );
    let policy = replace_line(
        &read("policy.yaml"),
        "logins: [ubuntu, postgres]",
        &format!("logins: [{login}]"),
    );
    write(&demo.join("hostgroup.yaml"), &host_group);
    write(&demo.join("policy.yaml"), &policy);
    let namespace = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEMO_NAMESPACE},
    });
    cp.kubectl(crate::users::User::Admin)
        .args(["apply", "-f", "-"])
        .stdin(namespace.to_string())
        .run()
        .ok();
    cp.kubectl(crate::users::User::Admin)
        .args(["-n", DEMO_NAMESPACE, "apply", "-f"])
        .arg(demo.join("hostgroup.yaml"))
        .arg("-f")
        .arg(demo.join("policy.yaml"))
        .arg("-f")
        .arg(examples.join("rbac.yaml"))
        .run()
        .ok();
}

/// `text` with the one line whose trimmed content is `old` replaced by `new` (indentation kept).
fn replace_line(text: &str, old: &str, new: &str) -> String {
    let matching = text.lines().filter(|l| l.trim() == old).count();
    assert_eq!(
        matching, 1,
        "examples/: expected one line {old:?}, found {matching}"
    );
    let mut out: String = text
        .lines()
        .map(|line| match line.trim() == old {
            true => format!("{}{new}", &line[..line.len() - line.trim_start().len()]),
            false => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

/// alice's way to prod-db-01 through the proxy (`ssh -F DIR/ssh_config prod-db-01`).
fn ssh_config(dir: &Path, proxy_port: u16, login: &str) -> String {
    let dir = dir.display();
    format!(
        "# Reach prod-db-01 through the local Gatehouse proxy as alice (ssh -F {dir}/ssh_config prod-db-01).
Host prod-db-01
  HostName {LOOPBACK}
  Port {proxy_port}
  User {login}@prod-db-01
  HostKeyAlias {alias}
  UserKnownHostsFile {dir}/alice/known_hosts
  StrictHostKeyChecking yes
  IdentityFile {dir}/alice/id_ed25519
  CertificateFile {dir}/alice/id_ed25519-cert.pub
  IdentitiesOnly yes
  BatchMode yes
",
        alias = published::PROXY_HOST_KEY_ALIAS,
    )
}

/// The kubeconfigs lines of the summary, from `tests/users.tsv`: users with the same groups and
/// role share a line.
fn users_summary(dir: &Path, rows: &[UserRow]) -> String {
    let names: Vec<&str> = rows.iter().map(|r| r.kubeconfig).collect();
    let mut out = format!(
        "  kubeconfigs  {}/kubeconfigs/{{{}}}.kubeconfig\n",
        dir.display(),
        names.join(",")
    );
    let mut lines: Vec<(Vec<&str>, &UserRow)> = Vec::new();
    for row in rows {
        match lines
            .iter_mut()
            .find(|(_, r)| r.groups == row.groups && r.role == row.role)
        {
            Some((users, _)) => users.push(row.kubeconfig),
            None => lines.push((vec![row.kubeconfig], row)),
        }
    }
    for (users, row) in lines {
        let groups = match row.groups.as_slice() {
            [] => "no groups".to_owned(),
            groups => groups.join(", "),
        };
        out.push_str(&format!(
            "               {}: {groups} ({})\n",
            users.join(", "),
            row.role
        ));
    }
    out
}

/// `value` as one word for `source`.
fn shell_quote(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Write a file only its owner may read (credentials).
fn write_private(path: &Path, text: &str) {
    write(path, "");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod 600 {}: {e}", path.display()));
    write(path, text);
}

/// The plane directory `make up` was given, as a path.
pub fn plane_dir(arg: Option<String>) -> Result<PathBuf, String> {
    arg.filter(|a| !a.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| "usage: gatehouse-up DIR".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recordings(vars: &[(&str, &str)]) -> Result<Recordings, String> {
        Recordings::from_env(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn recordings_are_checked_before_anything_starts() {
        assert_eq!(recordings(&[]).unwrap().name(), "local");
        assert_eq!(
            recordings(&[("GATEHOUSE_RECORDINGS", "")]).unwrap().name(),
            "local"
        );
        assert_eq!(
            recordings(&[("GATEHOUSE_RECORDINGS", "minio")])
                .unwrap()
                .name(),
            "minio"
        );
        assert_eq!(
            recordings(&[("GATEHOUSE_RECORDINGS", "nfs")]).unwrap_err(),
            "RECORDINGS must be local, minio or s3 (got 'nfs')"
        );
        let s3 = [
            ("GATEHOUSE_RECORDINGS", "s3"),
            ("GATEHOUSE_S3_ENDPOINT", "https://s3.example"),
            ("GATEHOUSE_S3_BUCKET", "rec"),
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
        ];
        assert_eq!(
            recordings(&s3[..2]).unwrap_err(),
            "RECORDINGS=s3 needs GATEHOUSE_S3_BUCKET"
        );
        let Recordings::S3(store) = recordings(&s3).unwrap() else {
            panic!("not s3")
        };
        assert_eq!(
            (store.region.as_str(), store.path_style),
            ("us-east-1", true)
        );
        let mut bad = s3.to_vec();
        bad.push(("GATEHOUSE_S3_PATH_STYLE", "yes"));
        assert_eq!(
            recordings(&bad).unwrap_err(),
            "GATEHOUSE_S3_PATH_STYLE must be true or false (got 'yes')"
        );
    }

    #[test]
    fn examples_lines_are_replaced_exactly_once_keeping_indentation() {
        let text = "spec:\n  hosts:\n  - name: a\n    port: 22\n";
        assert_eq!(
            replace_line(text, "port: 22", "port: 2200"),
            "spec:\n  hosts:\n  - name: a\n    port: 2200\n"
        );
        let examples = repo_root().join("examples");
        let group = fs::read_to_string(examples.join("hostgroup.yaml")).unwrap();
        for line in [
            "address: 10.20.0.11",
            "port: 22",
            "- ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBjMjrTwM1TVoZFKhZqYp/GfWQxyJsn6n6Dtdx1U3FvW root@prod-db-01",
        ] {
            replace_line(&group, line, "x");
        }
        let policy = fs::read_to_string(examples.join("policy.yaml")).unwrap();
        replace_line(&policy, "logins: [ubuntu, postgres]", "x");
    }

    #[test]
    fn the_summary_lists_every_user_of_the_table() {
        let text = users_summary(Path::new("/up"), &rows());
        assert!(
            text.starts_with(
                "  kubeconfigs  /up/kubeconfigs/{admin,alice,bob,carol,dave,mallory}.kubeconfig\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("               bob, carol: sre-leads (approver)\n"),
            "{text}"
        );
        assert!(text.contains("mallory: no groups ("), "{text}");
    }

    #[test]
    fn shell_quoting_survives_source() {
        assert_eq!(
            shell_quote("http://127.0.0.1:9000"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's $x"), r"'it'\''s $x'");
    }
}
