//! `gatehouse-proxy`: the recording SSH proxy.
//!
//! Reads its keys from the Gatehouse namespace (the user CA's public key from ConfigMap
//! `gatehouse-ssh`, the upstream CA and its own host key from Secrets the operator creates),
//! watches AccessRequests, HostGroups and AccessPolicies, accepts engineers' certificate
//! logins on `--listen`, bridges them to targets and uploads recordings and audit batches
//! (spooled in `--audit-spool-dir`) to the configured store. Metrics and health on
//! `--metrics-addr`.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use clap::Parser;
use gatehouse_crds::contract::{
    published::{SSH_CONFIGMAP, USER_CA_PUB},
    secrets::{CA_PRIVATE_KEY, HOST_PRIVATE_KEY, PROXY_HOST_KEY, UPSTREAM_CA},
};
use gatehouse_proxy::{
    audit_log::AuditLog,
    context::{RecordingSettings, Shared},
    inventory::Inventory,
    listener,
    metrics::Metrics,
    network::AllowedTargets,
    preauth::{PreauthLimits, PreauthSlots},
    ratelimit::{Limits, RateLimiter},
    recording::{
        Store, Uploader,
        budget::{SpoolBudget, spool_usage},
        live::LiveUploads,
        segments::LiveSettings,
        store::{ObjectLockFlags, StorageKind, StoreFlags},
    },
    server::Proxy,
    session_history::SessionStatus,
};
use gatehouse_runtime::{
    health::{Readiness, serve_health},
    http, logging, signals,
};
use gatehouse_ssh_ca::CaKey;
use gatehouse_store::audit::AuditWriter;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use russh::{
    MethodKind, MethodSet,
    keys::{HashAlg, PrivateKey, PublicKey},
    server,
};

/// Gatehouse SSH proxy.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address engineers connect to.
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "0.0.0.0:2222")]
    listen: SocketAddr,
    /// Namespace Gatehouse is installed in (CA Secrets and the published ConfigMap).
    #[arg(long, env = "POD_NAMESPACE", default_value = "gatehouse")]
    namespace: String,
    /// Only serve AccessRequests of this namespace (default: every namespace).
    #[arg(long, env = "GATEHOUSE_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "GATEHOUSE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Where recordings are written while sessions run and kept until uploaded.
    #[arg(
        long,
        env = "GATEHOUSE_SPOOL_DIR",
        default_value = "/var/lib/gatehouse/spool"
    )]
    spool_dir: PathBuf,
    /// Where audit events are spooled (fsynced before a login or session goes on) until their
    /// batches are in the store (default: `audit-spool` next to `--spool-dir`, never inside
    /// it). Keep it on a volume that survives a container restart (the pod's emptyDir).
    #[arg(long, env = "GATEHOUSE_AUDIT_SPOOL_DIR")]
    audit_spool_dir: Option<PathBuf>,
    /// The most the spool may hold (live sessions and recordings waiting for the store): a
    /// session that would spool more ends (under `recording.required`) with its recording kept
    /// up to that point, and new ones are refused. Keep it below the spool volume's size.
    #[arg(long, env = "GATEHOUSE_SPOOL_MAX_BYTES", default_value = "8Gi", value_parser = parse_size)]
    spool_max_bytes: u64,
    /// The most one session may spool.
    #[arg(long, env = "GATEHOUSE_SPOOL_MAX_SESSION_BYTES", default_value = "1Gi", value_parser = parse_size)]
    spool_max_session_bytes: u64,
    /// While a session runs, its recording is stored in pieces at least this often (0s: only
    /// when the session ends), so a lost pod loses at most the last piece.
    #[arg(long, env = "GATEHOUSE_LIVE_UPLOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    live_upload_interval: Duration,
    /// ... and as soon as this much is waiting (the most a piece holds).
    #[arg(long, env = "GATEHOUSE_LIVE_UPLOAD_PIECE_BYTES", default_value = "8Mi", value_parser = parse_size)]
    live_upload_piece_bytes: u64,
    /// Recording store.
    #[arg(long, env = "GATEHOUSE_STORAGE", value_enum, default_value = "local")]
    storage: StorageKind,
    /// Where the store is (`--storage-dir`, the `--s3-*` flags).
    #[command(flatten)]
    store: StoreFlags,
    /// S3 Object Lock on every recording (and its live pieces, and the audit batches).
    #[command(flatten)]
    object_lock: ObjectLockFlags,
    /// Failed logins from one address (an IPv6 /64) or with one key before it is blocked.
    #[arg(long, env = "GATEHOUSE_MAX_AUTH_FAILURES", default_value_t = 10)]
    max_auth_failures: u32,
    /// How long a blocked address or key stays blocked.
    #[arg(long, env = "GATEHOUSE_AUTH_BLOCK", default_value = "5m", value_parser = parse_duration)]
    auth_block: Duration,
    /// Connections not logged in yet from one address (an IPv6 /64); more are closed at once.
    #[arg(long, env = "GATEHOUSE_MAX_PREAUTH_PER_ADDRESS", default_value_t = 16)]
    max_preauth_per_address: usize,
    /// Connections not logged in yet, in all; more are closed at once.
    #[arg(long, env = "GATEHOUSE_MAX_PREAUTH", default_value_t = 256)]
    max_preauth: usize,
    /// How long a connection may take to log in before it is closed.
    #[arg(long, env = "GATEHOUSE_LOGIN_GRACE", default_value = "60s", value_parser = parse_duration)]
    login_grace: Duration,
    /// Targets the proxy may connect to, as CIDR[:PORTS] entries (`10.0.0.0/8:22`,
    /// `[fd00::/8]:22-2222`); a HostGroup pointing anywhere else is refused with a message.
    /// Empty: anywhere.
    #[arg(long, env = "GATEHOUSE_ALLOWED_TARGETS", value_delimiter = ',')]
    allowed_targets: Vec<String>,
    /// This replica's name in Events and the writer of its audit batches (default: the pod
    /// name).
    #[arg(
        long,
        alias = "pod-name",
        env = "POD_NAME",
        default_value = "gatehouse-proxy"
    )]
    identity: String,
    /// Log format.
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
    /// On SIGTERM/SIGINT: how long to wait for sessions to close and recordings to upload
    /// (keep it below the pod's terminationGracePeriodSeconds).
    #[arg(long, env = "GATEHOUSE_SHUTDOWN_GRACE", default_value = "50s", value_parser = parse_duration)]
    shutdown_grace: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    gatehouse_crds::duration::parse(text).map_err(|e| e.to_string())
}

fn parse_size(text: &str) -> Result<u64, String> {
    gatehouse_proxy::recording::budget::parse_size(text)
}

/// Read `key` of Secret or ConfigMap data, waiting for the operator to create it.
async fn wait_for<T>(
    what: &str,
    mut read: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let mut warned = false;
    loop {
        if let Some(value) = read().await? {
            return Ok(value);
        }
        if !warned {
            tracing::info!("waiting for {what} (the operator creates it)");
            warned = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn secret_text(api: &Api<Secret>, name: &str, key: &str) -> anyhow::Result<Option<String>> {
    let Some(secret) = api
        .get_opt(name)
        .await
        .with_context(|| format!("reading Secret {name}"))?
    else {
        return Ok(None);
    };
    let bytes = secret
        .data
        .and_then(|d| d.get(key).cloned())
        .with_context(|| format!("Secret {name} has no data key {key:?}"))?;
    Ok(Some(String::from_utf8(bytes.0).with_context(|| {
        format!("Secret {name} key {key:?} is not UTF-8")
    })?))
}

/// `--audit-spool-dir`, or `audit-spool` next to the recording spool; never inside it (the
/// recording spool's start-up clean-up and budget are for recordings only).
fn audit_spool_dir(args: &Args) -> anyhow::Result<PathBuf> {
    let dir = match &args.audit_spool_dir {
        Some(dir) => dir.clone(),
        None => match args.spool_dir.parent() {
            Some(parent) => parent.join("audit-spool"),
            None => PathBuf::from("audit-spool"),
        },
    };
    if dir.starts_with(&args.spool_dir) {
        bail!(
            "--audit-spool-dir {} must not be inside --spool-dir {}",
            dir.display(),
            args.spool_dir.display()
        );
    }
    Ok(dir)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    logging::init_logging(&args.log_format, "info,russh=warn");
    // kube and aws-sdk-s3 both use rustls; they must agree on one provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let store = args
        .store
        .open(args.storage, args.object_lock.lock()?)
        .context("--storage")?;
    // Fail closed: recordings must not land unlocked in a bucket that cannot lock them.
    store.check_object_lock().await?;
    if let Store::S3(s3) = &store
        && let Some(lock) = s3.object_lock()
    {
        tracing::info!(mode = %lock.mode, retention_secs = lock.retention.as_secs(), "S3 Object Lock on every stored object");
    }
    let allowed_targets = AllowedTargets::parse(&args.allowed_targets)
        .map_err(|e| anyhow::anyhow!("--allowed-targets: {e}"))?;
    std::fs::create_dir_all(&args.spool_dir)
        .with_context(|| format!("creating spool directory {}", args.spool_dir.display()))?;
    // No session runs yet, so every partial file is an earlier run's.
    gatehouse_proxy::recording::spool::remove_leftovers(&args.spool_dir)?;
    // Before anything can log in: what an earlier run left is sealed and uploaded first.
    let audit_dir = audit_spool_dir(&args)?;
    let (audit_writer, audit_task) =
        AuditWriter::open(&audit_dir, &args.identity, store.clone())
            .with_context(|| format!("opening the audit spool {}", audit_dir.display()))?;
    let audit_task = tokio::spawn(audit_task);
    let budget = SpoolBudget::new(
        args.spool_max_bytes,
        args.spool_max_session_bytes,
        spool_usage(&args.spool_dir)?,
    );

    let metrics = Metrics::new()?;
    let readiness = Readiness::default();
    let health = http::bind(args.metrics_addr).await?;
    let render = {
        let metrics = metrics.clone();
        let audit = audit_writer.clone();
        move || {
            let pending = i64::try_from(audit.pending_batches()).unwrap_or(i64::MAX);
            metrics.audit_pending_batches.set(pending);
            metrics.render()
        }
    };
    tokio::spawn(serve_health(health, render, readiness.clone()));

    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &args.namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &args.namespace);
    let user_ca_line = wait_for("the user CA public key", async || {
        Ok(config_maps
            .get_opt(SSH_CONFIGMAP)
            .await
            .with_context(|| format!("reading ConfigMap {SSH_CONFIGMAP}"))?
            .and_then(|c| c.data)
            .and_then(|d| d.get(USER_CA_PUB).cloned()))
    })
    .await?;
    let user_ca = PublicKey::from_openssh(user_ca_line.trim())
        .with_context(|| {
            format!("ConfigMap {SSH_CONFIGMAP} {USER_CA_PUB} is not an OpenSSH public key")
        })?
        .fingerprint(HashAlg::Sha256);
    let upstream_ca = wait_for("the upstream CA", async || {
        secret_text(&secrets, UPSTREAM_CA, CA_PRIVATE_KEY).await
    })
    .await?;
    let upstream_ca = CaKey::from_openssh(&upstream_ca, UPSTREAM_CA)?;
    let host_key = wait_for("the proxy host key", async || {
        secret_text(&secrets, PROXY_HOST_KEY, HOST_PRIVATE_KEY).await
    })
    .await?;
    let host_key = PrivateKey::from_openssh(&host_key)
        .with_context(|| format!("Secret {PROXY_HOST_KEY} holds no OpenSSH private key"))?;
    tracing::info!(
        user_ca = %user_ca,
        upstream_ca = %upstream_ca.fingerprint(),
        host_key = %host_key.fingerprint(HashAlg::Sha256),
        "keys loaded"
    );

    let (inventory, watches) =
        Inventory::start(client.clone(), args.watch_namespace.as_deref()).await;
    tokio::spawn(watches);
    inventory
        .ready()
        .await
        .context("waiting for the first lists")?;

    let audit = AuditLog::new(Some(audit_writer.clone()));
    let status = SessionStatus::new(client.clone(), args.identity.clone(), audit.clone());
    let live = LiveUploads::new(
        store.clone(),
        LiveSettings {
            interval: args.live_upload_interval,
            piece_bytes: args.live_upload_piece_bytes,
        },
        metrics.clone(),
    );
    let (uploader, queue) = Uploader::new(store, status.clone(), metrics.clone());
    let uploader = uploader.with_budget(budget.clone());
    let uploads = tokio::spawn(uploader.run(args.spool_dir.clone()));
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);

    let shared = Arc::new(Shared {
        inventory,
        user_ca,
        upstream_ca,
        allowed_targets,
        limiter: std::sync::Mutex::new(RateLimiter::new(Limits {
            failures: args.max_auth_failures,
            block: args.auth_block,
            ..Limits::default()
        })),
        metrics: metrics.clone(),
        recording: RecordingSettings {
            spool_dir: args.spool_dir.clone(),
            queue,
            budget,
            live,
        },
        status,
        audit,
        request_sessions: Default::default(),
        shutdown,
    });
    let config = server::Config {
        keys: vec![host_key],
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        // AES-GCM offered and first, no compression at all (so none before authentication:
        // zlib on untrusted input is attack surface the proxy does not need), a larger window
        // and packets: see `transport`.
        preferred: gatehouse_proxy::transport::preferred(),
        window_size: gatehouse_proxy::transport::ENGINEER_WINDOW,
        maximum_packet_size: gatehouse_proxy::transport::ENGINEER_MAX_PACKET,
        ..server::Config::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "proxy ready");
    readiness.set_ready();
    // Every connection's handler and task hold `shared`, as does `proxy`: a count of one means
    // every engineer got their goodbye on the wire.
    let connections = Arc::downgrade(&shared);
    let proxy = Proxy { shared };
    let slots = PreauthSlots::new(PreauthLimits {
        per_address: args.max_preauth_per_address,
        total: args.max_preauth,
        grace: args.login_grace,
    });
    let mut running = Box::pin(listener::serve(proxy, Arc::new(config), listener, slots));
    tokio::select! {
        () = &mut running => return Ok(()),
        signal = signals::termination() => tracing::info!("{signal}: stopping"),
    }
    // Stop taking logins (the server is no longer polled), end every session with a message,
    // and upload what they recorded: a pod's spool is an emptyDir, gone once the process exits.
    // The server must outlive the sessions: dropping it disconnects them without a word.
    readiness.set_not_ready();
    let _ = shutdown_tx.send(true);
    let deadline = tokio::time::Instant::now() + args.shutdown_grace;
    let closed = tokio::time::timeout_at(deadline, async {
        while connections.strong_count() > 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Sessions run in tasks of their own: this stops the accept loop only.
    drop(running);
    // The uploader returns once nothing holds its queue and nothing is pending.
    let drained = match closed {
        Ok(()) => tokio::time::timeout_at(deadline, uploads).await.map(|_| ()),
        Err(elapsed) => Err(elapsed),
    };
    // Every session has ended (and written its event): seal the last batch and store it.
    audit_writer.shutdown().await;
    let drained = match drained {
        Ok(()) => tokio::time::timeout_at(deadline, audit_task)
            .await
            .map(|_| ()),
        Err(elapsed) => Err(elapsed),
    };
    match drained {
        Ok(()) => tracing::info!(
            audit_events = "stored",
            "sessions closed and recordings stored; stopped"
        ),
        Err(_) => tracing::warn!(
            connections = connections.strong_count(),
            pending = metrics.recordings_pending.get(),
            audit_batches_pending = audit_writer.pending_batches(),
            "shutdown grace ran out; what is left in the spool is uploaded by the next start"
        ),
    }
    Ok(())
}
