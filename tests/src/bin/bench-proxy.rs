//! Proxy benchmark (a program, not a test): in one run, against one real Debian sshd,
//! compares the Gatehouse proxy (recording on) with connecting directly, and prints ratios.
//!
//! - 1 GiB upload (`ssh host 'cat >/dev/null' < 1 GiB`) through the proxy vs direct;
//! - connect latency (`ssh host true`, median of N) through vs direct;
//! - proxy resident memory with 200 idle interactive (pty + shell) sessions open.
//!
//! Run with `make bench` (release builds of the operator and proxy, a fresh control plane).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use gatehouse_tests::{
    User,
    engineer::{World, run, world},
    gatehouse::SYSTEM_NAMESPACE,
    proxy::Storage,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;

const GIB: u64 = 1 << 30;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `ssh` options for connecting straight to the target with an upstream-CA certificate.
fn direct_options(w: &World, cert: &Path) -> Vec<String> {
    vec![
        "-F".into(),
        "/dev/null".into(),
        "-i".into(),
        w.key.display().to_string(),
        "-o".into(),
        format!("CertificateFile={}", cert.display()),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", w.sshd.known_hosts().display()),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-p".into(),
        w.sshd.port().to_string(),
    ]
}

fn timed(mut command: Command, input_bytes: Option<u64>) -> Duration {
    let started = Instant::now();
    let mut child: Child = command
        .stdin(if input_bytes.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    if let (Some(bytes), Some(mut stdin)) = (input_bytes, child.stdin.take()) {
        let chunk = vec![0x5au8; 1 << 20];
        let mut left = bytes;
        use std::io::Write;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            stdin
                .write_all(&chunk[..n])
                .unwrap_or_else(|e| panic!("writing: {e}"));
            left -= n as u64;
        }
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() {
    let transfer = env_number("BENCH_TRANSFER_BYTES", GIB);
    let connects = env_number("BENCH_CONNECTS", 20) as usize;
    let idle = env_number("BENCH_IDLE_SESSIONS", 200) as usize;
    let w = world("bench", |dir| Storage::Local(dir.join("store")), json!({})).await;
    let cert = w.issue(w.request("bench")).await;
    let user = format!("{}@db1", w.login);

    // A certificate from the upstream CA (read as cluster admin) for the direct baseline.
    let secrets: Api<Secret> = Api::namespaced(w.cp.client(User::Admin).await, SYSTEM_NAMESPACE);
    let upstream = secrets
        .get("gatehouse-upstream-ca")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ca_file = w.dir.path().join("upstream-ca");
    let ca = upstream
        .data
        .unwrap_or_default()
        .remove("ca")
        .unwrap_or_else(|| panic!("no ca"));
    std::fs::write(&ca_file, ca.0).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(
        &ca_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let direct_pub = w.dir.path().join("direct.pub");
    std::fs::copy(w.key.with_extension("pub"), &direct_pub).unwrap_or_else(|e| panic!("{e}"));
    gatehouse_tests::sshd::ssh_keygen([
        "-q",
        "-s",
        &ca_file.display().to_string(),
        "-I",
        "bench-direct",
        "-n",
        &w.login,
        "-V",
        "-5m:+2h",
        &direct_pub.display().to_string(),
    ])
    .ok();
    let direct_cert = w.dir.path().join("direct-cert.pub");
    let direct = |args: &[&str]| {
        let mut c = Command::new("ssh");
        c.args(direct_options(&w, &direct_cert))
            .arg(format!("{}@127.0.0.1", w.login))
            .args(args);
        c
    };
    let proxied = |args: &[&str]| w.ssh(&cert, &user, args);
    let warm = run(proxied(&["true"]));
    assert_eq!(
        warm.code,
        Some(0),
        "{}\n{}",
        warm.stderr,
        w.proxy.log_tail()
    );
    let warm = run(direct(&["true"]));
    assert_eq!(warm.code, Some(0), "{}", warm.stderr);

    println!("# Gatehouse proxy benchmark");
    let via_proxy = timed(proxied(&["cat > /dev/null"]), Some(transfer));
    let via_direct = timed(direct(&["cat > /dev/null"]), Some(transfer));
    let mib = transfer as f64 / (1 << 20) as f64;
    println!(
        "upload {mib:.0} MiB: proxy {:.2} s ({:.0} MiB/s), direct {:.2} s ({:.0} MiB/s), proxy/direct time ratio {:.2}",
        via_proxy.as_secs_f64(),
        mib / via_proxy.as_secs_f64(),
        via_direct.as_secs_f64(),
        mib / via_direct.as_secs_f64(),
        via_proxy.as_secs_f64() / via_direct.as_secs_f64()
    );

    let proxy_connect = median(
        (0..connects)
            .map(|_| timed(proxied(&["true"]), None))
            .collect(),
    );
    let direct_connect = median(
        (0..connects)
            .map(|_| timed(direct(&["true"]), None))
            .collect(),
    );
    println!(
        "connect + `true` (median of {connects}): proxy {:.1} ms, direct {:.1} ms, ratio {:.2}",
        proxy_connect.as_secs_f64() * 1e3,
        direct_connect.as_secs_f64() * 1e3,
        proxy_connect.as_secs_f64() / direct_connect.as_secs_f64()
    );

    let active_sessions = || {
        w.proxy
            .metrics()
            .lines()
            .find_map(|l| l.strip_prefix("gatehouse_proxy_sessions_active "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    let before = w.proxy.rss_kib().unwrap_or_default();
    let mut sessions = Vec::new();
    let mut failures = Vec::new();
    // One at a time: a burst of logins would measure sshd's MaxStartups, not the proxy.
    for i in 0..idle {
        let err_path = w.dir.path().join(format!("session-{i}.err"));
        let err = std::fs::File::create(&err_path).unwrap_or_else(|e| panic!("{e}"));
        let mut shell = Command::new("ssh");
        shell
            .arg("-tt")
            .args(w.options(&cert))
            .arg("-p")
            .arg(w.proxy.port.to_string())
            .arg(format!("{user}@127.0.0.1"));
        let mut child = shell
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("session {i}: {e}"));
        let started = Instant::now();
        loop {
            if active_sessions() > sessions.len() {
                sessions.push(child);
                break;
            }
            if child.try_wait().ok().flatten().is_some()
                || started.elapsed() > Duration::from_secs(10)
            {
                let _ = child.kill();
                let _ = child.wait();
                failures.push(std::fs::read_to_string(&err_path).unwrap_or_default());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Let the sessions settle (buffers, first prompt) before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let active = active_sessions();
    let after = w.proxy.rss_kib().unwrap_or_default();
    println!(
        "idle interactive sessions: {active} open; proxy RSS {:.1} MiB before, {:.1} MiB with them ({:.1} KiB per session)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / active.max(1) as f64
    );
    if let Some(first) = failures.first() {
        println!(
            "{} sessions failed to open; the first: {}\nproxy log:\n{}",
            failures.len(),
            first.trim(),
            w.proxy.log_tail()
        );
    }
    for mut child in sessions {
        let _ = child.kill();
        let _ = child.wait();
    }
}
