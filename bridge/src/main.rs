//! Gatehouse approval bridge.
//!
//! Reads AccessRequests and AccessPolicies (watches), the identity mapping ConfigMap and
//! webhook key Secrets of its own namespace, and Slack interactions (HTTPS Request URL on
//! `--listen`, or Socket Mode with `--socket-mode`); writes Slack messages, signed webhook
//! events, `status.notifications` of AccessRequests, and decision annotations impersonating
//! the mapped identity of whoever clicked. Slack tokens come from the environment (a Secret).
//! Logs are JSON lines on stderr; `/metrics`, `/healthz` and `/readyz` are on `--metrics-addr`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use gatehouse_bridge::{
    context::Context,
    http_client::HttpClient,
    interact::Interactions,
    metrics::Metrics,
    notifier,
    records::Records,
    slack_api::{DEFAULT_API_URL, Slack},
    socket_mode, webhooks,
};
use gatehouse_crds::{AccessPolicy, AccessRequest};
use gatehouse_runtime::{
    health::{Readiness, serve_health},
    http, logging, signals,
    watch::{KeepLabels, namespaced_or_all, reflect},
};
use kube::Client;

/// Command line (every flag also reads an environment variable).
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Gatehouse approval bridge: AccessRequests to Slack and webhooks, Slack clicks to approvals"
)]
struct Args {
    /// The bridge's own namespace: its identity mapping ConfigMap and webhook key Secrets.
    #[arg(long, env = "GATEHOUSE_NAMESPACE")]
    namespace: String,
    /// Watch only this namespace's requests (default: all namespaces).
    #[arg(long, env = "GATEHOUSE_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(long, env = "GATEHOUSE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Address of the Slack Request URL server (`POST /slack/interactions`; TLS is the
    /// Ingress's). Off when not given.
    #[arg(long, env = "GATEHOUSE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Receive interactions over Socket Mode (needs SLACK_APP_TOKEN).
    #[arg(long, env = "GATEHOUSE_SOCKET_MODE")]
    socket_mode: bool,
    /// Slack's Web API base URL.
    #[arg(long, env = "GATEHOUSE_SLACK_API_URL", default_value = DEFAULT_API_URL)]
    slack_api_url: String,
    /// Bot token (`xoxb-…`). Without it, only webhooks are delivered.
    #[arg(long, env = "SLACK_BOT_TOKEN", hide_env_values = true)]
    slack_bot_token: Option<String>,
    /// Signing secret of the Slack app (checks Request URL payloads).
    #[arg(long, env = "SLACK_SIGNING_SECRET", hide_env_values = true)]
    slack_signing_secret: Option<String>,
    /// App-level token (`xapp-…`, scope connections:write) for Socket Mode.
    #[arg(long, env = "SLACK_APP_TOKEN", hide_env_values = true)]
    slack_app_token: Option<String>,
    /// Log format.
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
}

/// How often the identity mapping is read again.
const MAPPING_REFRESH: Duration = Duration::from_secs(15);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    logging::init_logging(&args.log_format, "info");
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if args.socket_mode && args.slack_app_token.is_none() {
        anyhow::bail!("--socket-mode needs SLACK_APP_TOKEN");
    }
    if args.listen.is_some() && args.slack_signing_secret.is_none() {
        anyhow::bail!(
            "--listen needs SLACK_SIGNING_SECRET: unsigned interactions are never accepted"
        );
    }
    let readiness = Readiness::default();
    let metrics = Metrics::new()?;
    let health = http::bind(args.metrics_addr).await?;
    let render = {
        let metrics = metrics.clone();
        move || metrics.render()
    };
    tokio::spawn(serve_health(health, render, readiness.clone()));

    let base_config = kube::Config::infer()
        .await
        .context("loading the Kubernetes configuration")?;
    let client = Client::try_from(base_config.clone()).context("building the Kubernetes client")?;
    let http_client = HttpClient::new()?;
    let slack = args.slack_bot_token.clone().map(|token| {
        Slack::new(
            http_client.clone(),
            &args.slack_api_url,
            token,
            args.slack_app_token.clone(),
        )
        .with_metrics(metrics.clone())
    });

    let nudge = Arc::new(tokio::sync::Notify::new());
    let (requests, drive_requests) = {
        let nudge = Arc::clone(&nudge);
        reflect(
            namespaced_or_all::<AccessRequest>(&client, args.watch_namespace.as_deref()),
            KeepLabels::Gatehouse,
            move || nudge.notify_one(),
        )
    };
    let (policies, drive_policies) = {
        let nudge = Arc::clone(&nudge);
        reflect(
            namespaced_or_all::<AccessPolicy>(&client, args.watch_namespace.as_deref()),
            KeepLabels::Gatehouse,
            move || nudge.notify_one(),
        )
    };
    tokio::spawn(drive_requests);
    tokio::spawn(drive_policies);

    let ctx = Arc::new(Context {
        client,
        base_config,
        namespace: args.namespace.clone(),
        slack,
        signing_secret: args.slack_signing_secret.map(String::into_bytes),
        http: http_client,
        requests: requests.clone(),
        policies: policies.clone(),
        mapping: Default::default(),
        records: Records::default(),
        metrics,
        webhooks: gatehouse_bridge::queue::Queue::default(),
        nudge: tokio::sync::Notify::new(),
    });
    // Watch changes nudge the notifier through the context's own Notify.
    {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            loop {
                nudge.notified().await;
                ctx.nudge.notify_one();
            }
        });
    }
    if let Err(error) = ctx.reload_mapping().await {
        tracing::error!(%error, "identity mapping not loaded: nobody can act from Slack until it is");
    }
    {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(MAPPING_REFRESH).await;
                if let Err(error) = ctx.reload_mapping().await {
                    tracing::warn!(%error, "reading the identity mapping failed");
                }
            }
        });
    }
    requests.wait_until_ready().await.ok();
    policies.wait_until_ready().await.ok();

    tokio::spawn(notifier::run(Arc::clone(&ctx)));
    tokio::spawn(webhooks::run(Arc::clone(&ctx)));
    let interactions = Interactions::new(Arc::clone(&ctx));
    if let Some(listen) = args.listen {
        let listener = http::bind(listen).await?;
        tokio::spawn(gatehouse_bridge::interact::serve(
            listener,
            interactions.clone(),
        ));
        tracing::info!(%listen, "serving the Slack Request URL");
    }
    if args.socket_mode {
        tokio::spawn(socket_mode::run(Arc::clone(&ctx), interactions));
    }
    ctx.nudge.notify_one();
    readiness.set_ready();
    tracing::info!("bridge ready");
    let signal = signals::termination().await;
    tracing::info!("{signal}: stopping");
    Ok(())
}
