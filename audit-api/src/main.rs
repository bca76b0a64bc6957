//! `gatehouse-audit-api`: serves `audit.gatehouse.dev` behind the aggregation layer.
//!
//! Reads the requestheader settings from ConfigMap `kube-system/extension-apiserver-
//! authentication` (kubeconfig from `KUBECONFIG` or in-cluster), the audit batches and casts
//! from the recording store (a directory or S3, flags as the proxy's), serves HTTPS on
//! `--listen` with `--tls-cert-file`/`--tls-private-key-file`, and `/metrics`, `/healthz`,
//! `/readyz` on `--metrics-addr`. The serving certificate files are re-read every minute.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use gatehouse_audit_api::{
    authn,
    authz::SubjectAccessReviewer,
    index::DEFAULT_MAX_EVENTS,
    server::{self, Metrics, State},
    serving::{self, ServingCert},
};
use gatehouse_runtime::{
    health::{Readiness, serve_health},
    http, logging, signals,
};
use gatehouse_store::{StorageKind, StoreFlags};
use kube::Client;

/// Gatehouse audit API (audit.gatehouse.dev), served behind the Kubernetes aggregation layer.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// HTTPS address the aggregator connects to.
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Serving certificate (PEM, chain).
    #[arg(long, env = "GATEHOUSE_TLS_CERT_FILE")]
    tls_cert_file: PathBuf,
    /// Serving key (PEM).
    #[arg(long, env = "GATEHOUSE_TLS_PRIVATE_KEY_FILE")]
    tls_private_key_file: PathBuf,
    /// Address of /metrics, /healthz and /readyz (plain HTTP).
    #[arg(long, env = "GATEHOUSE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Recording store (audit batches under `audit/`, casts by the key their events name).
    #[arg(long, env = "GATEHOUSE_STORAGE", value_enum, default_value = "local")]
    storage: StorageKind,
    /// Where the store is (`--storage-dir`, the proxy's `--s3-*` flags; read-only
    /// credentials suffice).
    #[command(flatten)]
    store: StoreFlags,
    /// How often the store's `audit/` is re-listed for new batches (a lookup that misses
    /// re-lists at once, at most once a second).
    #[arg(long, env = "GATEHOUSE_AUDIT_REFRESH", default_value = "5s", value_parser = parse_duration)]
    refresh: Duration,
    /// Most audit events kept in memory (and most sessions); past it the oldest are dropped
    /// (counted in gatehouse_audit_api_events_dropped_total).
    #[arg(long, env = "GATEHOUSE_AUDIT_MAX_EVENTS", default_value_t = DEFAULT_MAX_EVENTS)]
    max_events: usize,
    /// Log format.
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = gatehouse_crds::duration::parse(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be more than 0s".to_owned());
    }
    Ok(duration)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    logging::init_logging(&args.log_format, "info");
    // kube, aws-sdk-s3 and the server all use rustls; they must agree on one provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let store = args.store.open(args.storage, None).context("--storage")?;
    let cert = std::fs::read(&args.tls_cert_file)
        .with_context(|| format!("reading {}", args.tls_cert_file.display()))?;
    let key = std::fs::read(&args.tls_private_key_file)
        .with_context(|| format!("reading {}", args.tls_private_key_file.display()))?;
    let serving = Arc::new(ServingCert::from_pem(&cert, &key)?);
    let config = authn::server_config(Arc::clone(&serving))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(serving::keep_fresh(
        serving,
        args.tls_cert_file.clone(),
        args.tls_private_key_file.clone(),
    ));

    let metrics = Metrics::new()?;
    let readiness = Readiness::default();
    let health = http::bind(args.metrics_addr).await?;
    let render = {
        let metrics = metrics.clone();
        move || metrics.render()
    };
    tokio::spawn(serve_health(health, render, readiness.clone()));

    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let front_proxy = server::read_front_proxy(&client)
        .await
        .context("reading kube-system/extension-apiserver-authentication")?;
    let state = State::new(
        store,
        front_proxy,
        SubjectAccessReviewer::new(client.clone()),
        metrics,
        args.max_events,
    );
    // The first index load: retried until the store answers, so /readyz tells the truth.
    loop {
        match state.refresh().await {
            Ok(added) => {
                tracing::info!(batches = added, "index loaded");
                break;
            }
            Err(error) => {
                tracing::warn!(%error, "loading the index failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    tokio::spawn(server::keep_index_fresh(Arc::clone(&state), args.refresh));
    tokio::spawn(server::keep_front_proxy_fresh(client, Arc::clone(&state)));
    let listener = http::bind(args.listen).await?;
    tracing::info!(listen = %args.listen, "audit API ready");
    readiness.set_ready();
    tokio::select! {
        () = server::serve(listener, acceptor, state) => {}
        signal = signals::termination() => {
            readiness.set_not_ready();
            tracing::info!("{signal}: stopping");
        }
    }
    Ok(())
}
