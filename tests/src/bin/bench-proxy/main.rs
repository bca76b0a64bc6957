//! Proxy benchmark (a program, not a test): in one run, against one real Debian sshd,
//! compares the Gatehouse proxy (recording on) with connecting directly, and prints ratios.
//!
//! - transfers ([`transfer`]): upload and download × the ciphers pinned with `ssh -c` × direct
//!   and proxied, several runs each, interleaved: wall time and CPU per GiB of the proxy, of
//!   sshd's per-connection processes and of the `ssh` client ([`cpu`]);
//! - logins ([`logins`]): connect latency (`ssh host true`, median and p95) and logins per
//!   second with 16 clients in parallel;
//! - memory ([`idle`]): proxy resident memory with N idle interactive (pty + shell) sessions.
//!
//! Knobs (environment): `BENCH_TRANSFER_BYTES` (default 256 MiB), `BENCH_RUNS` (5),
//! `BENCH_CIPHERS` (`chacha20-poly1305@openssh.com,aes128-gcm@openssh.com`), `BENCH_CONNECTS`
//! (50), `BENCH_LOGINS` (160), `BENCH_IDLE_SESSIONS` (200; the issue's figure is 1000),
//! `BENCH_ONLY` (a comma list of `transfer`, `connect`, `logins`, `idle`; default all),
//! `BENCH_DIRECTIONS` (`upload,download`), `BENCH_PROXY_ARGS` (more proxy flags, space-separated,
//! e.g. `--live-upload-interval=0s` to measure without live upload), `BENCH_STORE` (where the
//! proxy stores recordings: `local`, a directory, the default; `minio`, a real MinIO bucket,
//! emptied between runs; `minio-locked`, a bucket with Object Lock and the proxy locking every
//! object in governance mode for 1 day, never emptied; with MinIO the report adds the server's
//! CPU per GiB until the recording is stored).
//!
//! Run with `make bench` (release builds of the operator and proxy, a fresh control plane).

use std::{path::PathBuf, time::Duration};

use gatehouse_crds::contract::{published, secrets};
use gatehouse_tests::{
    minio::Minio,
    proxied_world::ProxiedWorld,
    ssh_client::SshCommand,
    sshd::{CertSpec, Sshd, SshdConfig},
};
use serde_json::json;

mod cpu;
mod idle;
mod logins;
mod stats;
mod transfer;

/// Limit on one benchmark command (a 1 GiB transfer on a slow machine).
const LONG: Duration = Duration::from_secs(1800);
/// The target's sshd takes the benchmark's bursts of logins and idle sessions.
const SSHD_EXTRA: [&str; 2] = ["MaxStartups 4000", "MaxSessions 100"];
/// The proxy keeps whole recordings of the transfers (a download's is larger than its bytes).
const PROXY_ARGS: [&str; 2] = ["--spool-max-bytes=64Gi", "--spool-max-session-bytes=32Gi"];

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Which way a client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Straight to sshd, with a certificate from the upstream CA.
    Direct,
    /// Through the proxy, with a Gatehouse certificate.
    Proxy,
    /// What OpenSSH alone does in the proxy's place: an `sshd` "relay" host whose shell runs
    /// `ssh target COMMAND` (upstream-CA certificate on both legs, the same cipher pinned on
    /// both), so the bytes are decrypted and encrypted again in the middle, as the proxy must to
    /// record them, but nothing is recorded. Transfers only.
    Relay,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Relay => "openssh relay",
            Self::Proxy => "proxy",
        }
    }
}

/// The bucket the proxy stores recordings in when `BENCH_STORE` names MinIO.
const BUCKET: &str = "bench-recordings";

/// Where the proxy stores recordings (`BENCH_STORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// A directory of the world (`local`).
    Local,
    /// A MinIO bucket (`minio`).
    Minio,
    /// A MinIO bucket with Object Lock, every object locked (`minio-locked`).
    MinioLocked,
}

impl StoreKind {
    fn from_env() -> StoreKind {
        match std::env::var("BENCH_STORE").unwrap_or_default().trim() {
            "" | "local" => StoreKind::Local,
            "minio" => StoreKind::Minio,
            "minio-locked" => StoreKind::MinioLocked,
            other => panic!("BENCH_STORE: {other:?} is none of local, minio, minio-locked"),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            StoreKind::Local => "a local directory",
            StoreKind::Minio => "MinIO (emptied between runs)",
            StoreKind::MinioLocked => {
                "MinIO with Object Lock, every object locked (GOVERNANCE, 1d; never emptied)"
            }
        }
    }
}

/// The world and the two ways into it.
#[derive(Debug)]
pub struct Bench<'a> {
    w: &'a ProxiedWorld,
    /// Where recordings go, and the MinIO server when that is where.
    store: StoreKind,
    minio: Option<&'a Minio>,
    /// The Gatehouse certificate (through the proxy).
    cert: PathBuf,
    /// A certificate from the upstream CA (direct).
    direct_cert: PathBuf,
    /// `LOGIN@db1`, the proxy's SSH user.
    user: String,
    /// The OpenSSH relay host (another sshd trusting the upstream CA).
    relay: Sshd,
}

impl Bench<'_> {
    /// Delete what the store holds (the bench's recordings add up to gigabytes); a locked
    /// bucket keeps everything.
    fn clear_store(&self) {
        match (self.store, self.minio) {
            (StoreKind::Minio, Some(minio)) => {
                for key in minio.list(BUCKET, "") {
                    let out = minio.s3_request("DELETE", &format!("{BUCKET}/{key}"), &[], None);
                    assert!(
                        out.success,
                        "deleting {BUCKET}/{key}: {}{}",
                        out.stdout, out.stderr
                    );
                }
            }
            (StoreKind::Local, _) => transfer::clear_store(&self.w.local_store()),
            _ => {}
        }
    }

    /// CPU seconds of the MinIO server so far (0 without one).
    fn store_server_seconds(&self) -> f64 {
        self.minio
            .and_then(Minio::pid)
            .map_or(0.0, cpu::process_seconds)
    }

    /// `ssh` straight to the target with the upstream-CA certificate (no arguments yet).
    fn direct_ssh(&self) -> SshCommand {
        self.w
            .sshd
            .ssh(&self.w.login, &self.w.key, &self.direct_cert)
            .timeout(LONG)
    }

    /// `ssh` by `route` running `args`.
    fn ssh(&self, route: Route, args: &[&str]) -> SshCommand {
        match route {
            Route::Direct => self
                .w
                .sshd
                .ssh(&self.w.login, &self.w.key, &self.direct_cert)
                .args(args),
            Route::Proxy => self.w.ssh(&self.cert, &self.user, args),
            Route::Relay => self
                .relay
                .ssh(&self.w.login, &self.w.key, &self.direct_cert)
                .args(args),
        }
        .timeout(LONG)
    }
}

#[tokio::main]
async fn main() {
    let bytes = env_number("BENCH_TRANSFER_BYTES", 256 << 20);
    let runs = env_number("BENCH_RUNS", 5) as usize;
    let connects = env_number("BENCH_CONNECTS", 50) as usize;
    let total_logins = env_number("BENCH_LOGINS", 160) as usize;
    let idle = env_number("BENCH_IDLE_SESSIONS", 200) as usize;
    let ciphers: Vec<String> = std::env::var("BENCH_CIPHERS")
        .unwrap_or_else(|_| "chacha20-poly1305@openssh.com,aes128-gcm@openssh.com".to_owned())
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    let directions: Vec<transfer::Direction> = std::env::var("BENCH_DIRECTIONS")
        .unwrap_or_else(|_| "upload,download".to_owned())
        .split(',')
        .filter_map(|d| match d.trim() {
            "upload" => Some(transfer::Direction::Upload),
            "download" => Some(transfer::Direction::Download),
            "" => None,
            other => panic!("BENCH_DIRECTIONS: {other:?} is neither upload nor download"),
        })
        .collect();
    let extra_proxy_args = std::env::var("BENCH_PROXY_ARGS").unwrap_or_default();
    let proxy_args: Vec<&str> = PROXY_ARGS
        .iter()
        .copied()
        .chain(extra_proxy_args.split_whitespace())
        .collect();
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);

    let store = StoreKind::from_env();
    let mut proxy_args = proxy_args;
    if store == StoreKind::MinioLocked {
        proxy_args.extend([
            "--s3-object-lock-mode=governance",
            "--s3-object-lock-retention=1d",
        ]);
    }
    // MinIO keeps its data (gigabytes) in a temporary directory of its own, removed when the
    // bench ends: after the server, dropped before it, and the proxy (the world, dropped first).
    let minio_dir =
        tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory for MinIO: {e}"));
    let mut minio = None;
    let w = ProxiedWorld::start_with_sshd(
        "bench",
        |dir| match store {
            StoreKind::Local => ProxiedWorld::local_storage(dir),
            StoreKind::Minio | StoreKind::MinioLocked => {
                let server = Minio::start(minio_dir.path());
                if store == StoreKind::MinioLocked {
                    server.create_locked_bucket(BUCKET);
                } else {
                    server.create_bucket(BUCKET);
                }
                let storage = server.storage(BUCKET);
                minio = Some(server);
                storage
            }
        },
        json!({}),
        &proxy_args,
        &SSHD_EXTRA,
    )
    .await;
    let cert = w.issue(w.request("bench")).await;
    // A certificate from the upstream CA (read as cluster admin) for the direct baseline.
    let ca_file =
        w.cp.ca_private_key(secrets::UPSTREAM_CA, w.dir.path())
            .await;
    // The target accepts only the principals its HostGroup publishes (never the bare login).
    let principal =
        w.s.authorized_principals(w.cp, "db1", &w.login)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("db1 publishes no authorized principal"));
    let direct_cert = w.certificate_from(
        &ca_file,
        "direct",
        &CertSpec {
            key_id: "bench-direct",
            principals: &[&principal],
            validity: "-5m:+2h",
            serial: 1,
        },
    );
    let upstream_ca = w.cp.published(published::UPSTREAM_CA_PUB).await;
    let mut relay_config =
        SshdConfig::trusting(upstream_ca.trim()).authorize(&w.login, &[&principal]);
    relay_config
        .extra_config
        .extend(SSHD_EXTRA.iter().map(|l| (*l).to_owned()));
    let relay = Sshd::start(&relay_config);
    let bench = Bench {
        user: format!("{}@db1", w.login),
        w: &w,
        store,
        minio: minio.as_ref(),
        cert,
        direct_cert,
        relay,
    };
    for route in [Route::Proxy, Route::Direct] {
        let warm = bench.ssh(route, &["true"]).run();
        assert_eq!(
            warm.code,
            Some(0),
            "{}: {}\n{}",
            route.name(),
            warm.stderr,
            w.proxy.log_tail()
        );
    }

    println!("# Gatehouse proxy benchmark");
    println!("recordings stored in {}", store.describe());
    if wanted("transfer") {
        let cells = transfer::matrix(&bench, &directions, &ciphers, bytes, runs).await;
        println!(
            "{}",
            transfer::report(&cells, bytes, runs, store != StoreKind::Local)
        );
    }
    if wanted("connect") {
        println!("{}", logins::latency(&bench, connects));
    }
    if wanted("logins") {
        println!("{}", logins::parallel(&bench, total_logins));
    }
    if wanted("idle") {
        println!("{}", idle::idle_sessions(&bench, idle).await);
    }
}
