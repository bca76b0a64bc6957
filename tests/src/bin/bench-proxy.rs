//! Proxy benchmark (a program, not a test): in one run, against one real Debian sshd,
//! compares the Gatehouse proxy (recording on) with connecting directly, and prints ratios.
//!
//! - 1 GiB upload (`ssh host 'cat >/dev/null' < 1 GiB`) through the proxy vs direct;
//! - connect latency (`ssh host true`, median of N) through vs direct;
//! - proxy resident memory with 200 idle interactive (pty + shell) sessions open.
//!
//! Run with `make bench` (release builds of the operator and proxy, a fresh control plane).

use std::{
    io::Read,
    time::{Duration, Instant},
};

use gatehouse_crds::contract::secrets;
use gatehouse_tests::{Cmd, proxied_world::ProxiedWorld, sshd::CertSpec};

const GIB: u64 = 1 << 30;
/// Limit on one benchmark command (a 1 GiB upload on a slow machine).
const LONG: Duration = Duration::from_secs(1800);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How long `cmd` takes; it must succeed.
fn timed(cmd: Cmd) -> Duration {
    let started = Instant::now();
    let out = cmd.run();
    assert!(out.success, "{}: {}", out.command, out.stderr);
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
    let w = ProxiedWorld::with_local_store("bench").await;
    let cert = w.issue(w.request("bench")).await;
    let user = format!("{}@db1", w.login);

    // A certificate from the upstream CA (read as cluster admin) for the direct baseline.
    let ca_file =
        w.cp.ca_private_key(secrets::UPSTREAM_CA, w.dir.path())
            .await;
    let direct_cert = w.certificate_from(
        &ca_file,
        "direct",
        &CertSpec {
            key_id: "bench-direct",
            principals: &[&w.login],
            validity: "-5m:+2h",
            serial: 1,
        },
    );
    let direct = |args: &[&str]| {
        w.sshd
            .ssh(&w.login, &w.key, &direct_cert)
            .args(args)
            .timeout(LONG)
            .into_cmd()
    };
    let proxied = |args: &[&str]| w.ssh(&cert, &user, args).timeout(LONG).into_cmd();
    let warm = proxied(&["true"]).run();
    assert_eq!(
        warm.code,
        Some(0),
        "{}\n{}",
        warm.stderr,
        w.proxy.log_tail()
    );
    let warm = direct(&["true"]).run();
    assert_eq!(warm.code, Some(0), "{}", warm.stderr);

    println!("# Gatehouse proxy benchmark");
    let upload = |cmd: Cmd| timed(cmd.stdin_from(std::io::repeat(0x5a).take(transfer)));
    let via_proxy = upload(proxied(&["cat > /dev/null"]));
    let via_direct = upload(direct(&["cat > /dev/null"]));
    let mib = transfer as f64 / (1 << 20) as f64;
    println!(
        "upload {mib:.0} MiB: proxy {:.2} s ({:.0} MiB/s), direct {:.2} s ({:.0} MiB/s), proxy/direct time ratio {:.2}",
        via_proxy.as_secs_f64(),
        mib / via_proxy.as_secs_f64(),
        via_direct.as_secs_f64(),
        mib / via_direct.as_secs_f64(),
        via_proxy.as_secs_f64() / via_direct.as_secs_f64()
    );

    let proxy_connect = median((0..connects).map(|_| timed(proxied(&["true"]))).collect());
    let direct_connect = median((0..connects).map(|_| timed(direct(&["true"]))).collect());
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
    for _ in 0..idle {
        let shell = w.ssh(&cert, &user, &[]).flag("-tt").timeout(LONG);
        let mut session = shell.into_cmd().stdin_open().spawn();
        let started = Instant::now();
        loop {
            if active_sessions() > sessions.len() {
                sessions.push(session);
                break;
            }
            if session.has_exited() || started.elapsed() > Duration::from_secs(10) {
                failures.push(session.kill().stderr);
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
    for session in sessions {
        session.kill();
    }
}
