//! Gatehouse operator.
//!
//! Reads AccessRequests, AccessPolicies and HostGroups from the Kubernetes API server (a watch
//! per kind) and AdmissionReviews the API server sends to its webhook; writes request and
//! HostGroup status, Events, the CA Secrets it creates once, the ConfigMaps hosts and the proxy
//! read, and admission verdicts. Every replica serves the webhook; one replica, elected through
//! a Lease, runs the reconcilers. Logs are JSON lines on stderr; `/metrics`, `/healthz` and
//! `/readyz` are on `--metrics-addr`. With `--audit-store`, audit events also go durably to
//! the store (spooled in `--audit-spool-dir`).

mod audit_flags;

use std::{future::ready, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt;
use gatehouse_crds::{
    AccessPolicy, AccessRequest, HostGroup, Phase,
    contract::{
        managers,
        secrets::{UPSTREAM_CA, USER_CA},
    },
    duration,
};
use gatehouse_operator::{
    admission,
    controller::{self, Context},
    metrics::Metrics,
    publish::Publisher,
    revocations::Revocations,
    seal_keys::SharedSealKeys,
    secrets,
    webhook::{self, WebhookContext},
};
use gatehouse_runtime::{
    health::{Readiness, serve_health},
    http, logging, signals,
    watch::{KeepLabels, namespaced_or_all, reflect, reflect_for_controller, reflect_shaped},
};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource,
    runtime::{
        Controller,
        events::Reporter,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::{
    sync::Notify,
    task::{JoinHandle, JoinSet},
};

/// Command line (every flag also reads an environment variable).
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Gatehouse operator: certificates for approved AccessRequests, and their admission"
)]
struct Args {
    /// The operator's own namespace: CA Secrets, published ConfigMaps and the leader Lease live here.
    #[arg(long, env = "GATEHOUSE_NAMESPACE")]
    namespace: String,
    /// Reconcile only this namespace's Gatehouse objects (default: all namespaces).
    #[arg(long, env = "GATEHOUSE_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(long, env = "GATEHOUSE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// HTTPS address of the admission webhook.
    #[arg(long, env = "GATEHOUSE_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    webhook_addr: SocketAddr,
    /// Names (DNS or IP) in the webhook's serving certificate. Default: the in-cluster Service
    /// names `gatehouse-webhook.<namespace>.svc[.cluster.local]`, localhost and 127.0.0.1.
    #[arg(long, env = "GATEHOUSE_WEBHOOK_NAMES", value_delimiter = ',')]
    webhook_names: Vec<String>,
    /// PEM file with the CA of the client certificate the API server presents to webhooks (its
    /// AdmissionConfiguration `kubeConfigFile`). When set, callers without such a certificate
    /// are refused at the TLS handshake; strongly recommended wherever the control plane allows.
    #[arg(long, env = "GATEHOUSE_WEBHOOK_CLIENT_CA_FILE")]
    webhook_client_ca_file: Option<std::path::PathBuf>,
    /// MutatingWebhookConfiguration to keep the caBundle injected into ("" = none).
    #[arg(long, env = "GATEHOUSE_MUTATING_WEBHOOK", default_value = "gatehouse")]
    mutating_webhook: String,
    /// ValidatingWebhookConfiguration to keep the caBundle injected into ("" = none).
    #[arg(
        long,
        env = "GATEHOUSE_VALIDATING_WEBHOOK",
        default_value = "gatehouse"
    )]
    validating_webhook: String,
    /// Do not serve the admission webhook (reconcile only).
    #[arg(long, env = "GATEHOUSE_NO_WEBHOOK")]
    no_webhook: bool,
    /// Pending requests nobody approves expire after this long (Go duration, e.g. 24h).
    #[arg(long, env = "GATEHOUSE_PENDING_TTL", default_value = "24h", value_parser = parse_duration)]
    pending_ttl: Duration,
    /// Revoked Direct certificates (still valid) a namespace may hold on the revocation list
    /// before it gets no new Direct certificate until some expire.
    #[arg(long, env = "GATEHOUSE_MAX_REVOCATIONS_PER_NAMESPACE", default_value_t = gatehouse_operator::revocations::DEFAULT_PER_NAMESPACE_LIMIT)]
    max_revocations_per_namespace: usize,
    /// Rotate the key that seals decision records this often (annotate Secret
    /// gatehouse-admission with gatehouse.dev/rotate-seal-key to rotate now).
    #[arg(long, env = "GATEHOUSE_SEAL_ROTATION", default_value = "720h", value_parser = parse_duration)]
    seal_rotation: Duration,
    /// How long a retired seal key still verifies the records it sealed (longer than a request
    /// can wait and then be valid: pending TTL plus 24h).
    #[arg(long, env = "GATEHOUSE_SEAL_GRACE", default_value = "72h", value_parser = parse_duration)]
    seal_grace: Duration,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "GATEHOUSE_LEASE_NAME",
        default_value = "gatehouse-operator"
    )]
    lease_name: String,
    /// Seconds a leader's Lease stays valid without renewal (failover time).
    #[arg(long, env = "GATEHOUSE_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// This replica's identity in the Lease (default: the pod name, else random).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log format.
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
    /// The address (HOST or HOST:PORT) engineers reach the proxy at, published as `proxy_address`
    /// in ConfigMap `gatehouse-ssh` for `kubectl gatehouse` (chart value `proxy.publicAddress`).
    #[arg(long, env = "GATEHOUSE_PROXY_PUBLIC_ADDRESS")]
    proxy_public_address: Option<String>,
    #[command(flatten)]
    audit: audit_flags::AuditFlags,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    logging::init_logging(&args.log_format, "info,kube_lease_manager=warn");
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let metrics = Metrics::new()?;
    let readiness = Readiness::default();
    let health = http::bind(args.metrics_addr).await?;
    let render = {
        let metrics = metrics.clone();
        move || metrics.render()
    };
    tokio::spawn(serve_health(health, render, readiness.clone()));

    // The writer is the pod (each keeps its own chain); what an earlier run left is sealed
    // and uploaded first.
    let writer = args.identity.as_deref().unwrap_or("gatehouse-operator");
    let (audit, audit_task) = match args.audit.open(writer).await? {
        Some((audit, task)) => (Some(audit), Some(tokio::spawn(task))),
        None => (None, None),
    };
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &args.namespace);
    let user_ca = Arc::new(secrets::ensure_ca(&secrets_api, USER_CA).await?);
    let upstream_ca = secrets::ensure_ca(&secrets_api, UPSTREAM_CA).await?;
    let upstream_ca_line = upstream_ca.public_key_line()?;
    let proxy_host_key_line = secrets::ensure_proxy_host_key(&secrets_api)
        .await?
        .public_key_line()?;
    drop(upstream_ca);
    let admission = secrets::ensure_admission(&secrets_api, args.seal_grace).await?;
    let seal = SharedSealKeys::new(admission.seal);
    tokio::spawn(reload_seal_keys(
        secrets_api.clone(),
        seal.clone(),
        args.seal_grace,
    ));

    if !args.no_webhook {
        let names = if args.webhook_names.is_empty() {
            let ns = &args.namespace;
            vec![
                format!("gatehouse-webhook.{ns}.svc"),
                format!("gatehouse-webhook.{ns}.svc.cluster.local"),
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
            ]
        } else {
            args.webhook_names.clone()
        };
        let ca_pem = admission.webhook_ca.cert_pem.clone();
        let client_ca =
            match &args.webhook_client_ca_file {
                Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                    format!("reading --webhook-client-ca-file {}", path.display())
                })?),
                None => None,
            };
        let acceptor = webhook::tls_acceptor(admission.webhook_ca, names, client_ca.as_deref())?;
        let listener = http::bind(args.webhook_addr).await?;
        let ns = args.watch_namespace.as_deref();
        // The open-request cap counts from these, kept to the few fields it reads (the whole
        // request, trimmed, is ~3 KiB); a HostGroup's labels are its tags, which policy
        // matching reads.
        let (requests, drive_requests) = reflect_shaped(
            namespaced_or_all(&client, ns),
            KeepLabels::None,
            admission::keep_for_open_request_cap,
            || {},
        );
        let (policies, drive_policies) =
            reflect(namespaced_or_all(&client, ns), KeepLabels::Gatehouse, || {});
        let (host_groups, drive_host_groups) =
            reflect(namespaced_or_all(&client, ns), KeepLabels::All, || {});
        tokio::spawn(drive_requests);
        tokio::spawn(drive_policies);
        tokio::spawn(drive_host_groups);
        let ctx = WebhookContext {
            client: client.clone(),
            seal: seal.clone(),
            metrics: metrics.clone(),
            operator_username: own_username(&client).await?,
            caches: webhook::AdmissionCaches {
                requests,
                policies,
                host_groups,
            },
        };
        tokio::spawn(webhook::serve(listener, acceptor, ctx));
        webhook::inject_ca_bundle(
            &client,
            &ca_pem,
            &args.mutating_webhook,
            &args.validating_webhook,
        )
        .await?;
        tokio::spawn(webhook::inject_ca_bundle_forever(
            client.clone(),
            ca_pem,
            args.mutating_webhook.clone(),
            args.validating_webhook.clone(),
        ));
        tracing::info!(address = %args.webhook_addr, "admission webhook serving");
    }
    readiness.set_ready();

    let mut lease = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.namespace)
        .with_duration(args.lease_seconds)
        .with_grace(args.lease_seconds.div_ceil(3).max(1));
    if let Some(identity) = &args.identity {
        lease = lease.with_identity(identity);
    }
    let (mut leader, lease_task) = lease
        .build()
        .await
        .context("creating the leader Lease manager")?
        .watch()
        .await;
    let reporter = Reporter {
        controller: managers::OPERATOR.to_owned(),
        instance: args.identity.clone(),
    };
    let mut running: Option<JoinHandle<()>> = None;
    let shutdown = signals::termination();
    tokio::pin!(shutdown);
    loop {
        let is_leader = *leader.borrow_and_update();
        metrics.leader.set(i64::from(is_leader));
        match (is_leader, running.is_some()) {
            (true, false) => {
                tracing::info!(lease = %args.lease_name, "became leader; starting reconcilers");
                let lead = Lead {
                    client: client.clone(),
                    namespace: args.namespace.clone(),
                    watch_namespace: args.watch_namespace.clone(),
                    user_ca: Arc::clone(&user_ca),
                    upstream_ca_line: upstream_ca_line.clone(),
                    proxy_host_key_line: proxy_host_key_line.clone(),
                    proxy_address: args
                        .proxy_public_address
                        .clone()
                        .filter(|a| !a.trim().is_empty()),
                    seal: seal.clone(),
                    seal_rotation: args.seal_rotation,
                    seal_grace: args.seal_grace,
                    metrics: metrics.clone(),
                    pending_ttl: args.pending_ttl,
                    revocation_limit: args.max_revocations_per_namespace,
                    reporter: reporter.clone(),
                    audit: audit.clone(),
                };
                running = Some(tokio::spawn(lead.run()));
            }
            (false, true) => {
                tracing::warn!("lost leadership; stopping reconcilers");
                if let Some(task) = running.take() {
                    task.abort();
                }
            }
            _ => {}
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { anyhow::bail!("leader election stopped") },
            signal = &mut shutdown => { tracing::info!("{signal}: shutting down"); break }
        }
    }
    tracing::info!("shutting down");
    if let Some(task) = running.take() {
        task.abort();
    }
    // Dropping the receiver makes the lease task release the Lease, so a standby takes over now.
    drop(leader);
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    if let (Some(audit), Some(task)) = (audit, audit_task) {
        audit.shutdown().await;
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!(
                pending = audit.pending_batches(),
                "audit batches not stored yet stay in the spool for the next start"
            );
        }
    }
    Ok(())
}

/// The operator's own user name as the API server authenticates it (admission lets only this
/// identity manage the finalizer). Asked with a SelfSubjectReview, which every user may create.
async fn own_username(client: &Client) -> anyhow::Result<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(
            &kube::api::PostParams::default(),
            &SelfSubjectReview::default(),
        )
        .await
        .context("asking the API server who the operator is (SelfSubjectReview)")?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|name| !name.is_empty())
        .context("the SelfSubjectReview named no user")
}

/// Keep the seal keys current on every replica, so a rotation by the leader reaches all of them.
async fn reload_seal_keys(api: Api<Secret>, seal: SharedSealKeys, grace: Duration) {
    loop {
        tokio::time::sleep(SEAL_RELOAD).await;
        match secrets::reload_seal_keys(&api, grace).await {
            Ok(keys) => seal.set(keys),
            Err(error) => {
                tracing::warn!(%error, "reloading the seal keys failed; keeping the ones loaded")
            }
        }
    }
}

/// How many AccessRequests are reconciled at once.
const RECONCILE_CONCURRENCY: u16 = 32;

/// How often every replica re-reads the seal keys.
const SEAL_RELOAD: Duration = Duration::from_secs(30);

/// Rotate and prune the seal keys (the leader only), then use the result at once.
async fn rotate_seal_keys(
    api: Api<Secret>,
    seal: SharedSealKeys,
    period: Duration,
    grace: Duration,
) {
    loop {
        match secrets::rotate_seal_keys(&api, period, grace).await {
            Ok(Some(_)) | Ok(None) => {
                if let Ok(keys) = secrets::reload_seal_keys(&api, grace).await {
                    seal.set(keys);
                }
            }
            Err(error) => tracing::warn!(%error, "rotating the seal key failed; retrying"),
        }
        // One GET of a Secret: cheap enough to notice an asked-for rotation within seconds.
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Everything the leader runs.
struct Lead {
    client: Client,
    namespace: String,
    watch_namespace: Option<String>,
    user_ca: Arc<gatehouse_ssh_ca::CaKey>,
    upstream_ca_line: String,
    proxy_host_key_line: String,
    proxy_address: Option<String>,
    seal: SharedSealKeys,
    seal_rotation: Duration,
    seal_grace: Duration,
    metrics: Metrics,
    pending_ttl: Duration,
    revocation_limit: usize,
    reporter: Reporter,
    /// Audit events made durable (`--audit-store`); none: the log only.
    audit: Option<gatehouse_store::audit::AuditWriter>,
}

/// Run a watch cache of `K` in `tasks`, nudging `nudge` on every change.
fn cache<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    labels: KeepLabels,
    nudge: Arc<Notify>,
) -> Store<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, drive) = reflect(api, labels, move || nudge.notify_one());
    tasks.spawn(drive);
    store
}

impl Lead {
    /// Run the reconcilers until the controller stops. Everything runs in one JoinSet owned by
    /// this future, so aborting the leader task (lost leadership) stops all of it.
    async fn run(self) {
        let mut tasks = JoinSet::new();
        let nudge = Arc::new(Notify::new());
        let ns = self.watch_namespace.as_deref();
        let policies = cache::<AccessPolicy>(
            &mut tasks,
            namespaced_or_all(&self.client, ns),
            KeepLabels::Gatehouse,
            Arc::clone(&nudge),
        );
        // A HostGroup's labels are the tags policies select on.
        let host_groups = cache::<HostGroup>(
            &mut tasks,
            namespaced_or_all(&self.client, ns),
            KeepLabels::All,
            Arc::clone(&nudge),
        );
        for ready_store in [
            policies.wait_until_ready().await,
            host_groups.wait_until_ready().await,
        ] {
            if let Err(error) = ready_store {
                tracing::error!(%error, "store never became ready");
                return;
            }
        }
        // Who may approve: RBAC read through watch caches (the chart grants list/watch).
        let rbac = gatehouse_operator::approvers::RbacCaches {
            roles: cache(
                &mut tasks,
                namespaced_or_all(&self.client, ns),
                KeepLabels::None,
                Arc::clone(&nudge),
            ),
            cluster_roles: cache(
                &mut tasks,
                Api::all(self.client.clone()),
                KeepLabels::None,
                Arc::clone(&nudge),
            ),
            role_bindings: cache(
                &mut tasks,
                namespaced_or_all(&self.client, ns),
                KeepLabels::None,
                Arc::clone(&nudge),
            ),
            cluster_role_bindings: cache(
                &mut tasks,
                Api::all(self.client.clone()),
                KeepLabels::None,
                Arc::clone(&nudge),
            ),
            ready: Arc::default(),
        };
        tasks.spawn(rbac.clone().mark_ready_when_synced());
        let requests_api: Api<AccessRequest> = namespaced_or_all(&self.client, ns);
        // The controller's cache is trimmed like the others (Controller::new would keep every
        // object whole, managedFields and client annotations included).
        let (requests, applied) = reflect_for_controller(requests_api, KeepLabels::Gatehouse);
        let controller = Controller::for_stream(applied, requests.clone());
        // A policy or HostGroup change may withdraw (or grant) access: look at the requests of
        // its namespace again.
        let in_namespace = |requests: Store<AccessRequest>| {
            move |namespace: Option<String>| {
                requests
                    .state()
                    .into_iter()
                    .filter(|r| r.metadata.namespace == namespace)
                    .map(|r| ObjectRef::from_obj(&*r))
                    .collect::<Vec<_>>()
            }
        };
        let for_policy = in_namespace(requests.clone());
        let for_group = in_namespace(requests.clone());
        let controller = controller
            .watches(
                namespaced_or_all::<AccessPolicy>(&self.client, ns),
                watcher::Config::default(),
                move |policy| for_policy(policy.metadata.namespace),
            )
            .watches(
                namespaced_or_all::<HostGroup>(&self.client, ns),
                watcher::Config::default(),
                move |group| for_group(group.metadata.namespace),
            );
        let revocations = Arc::new(Revocations::new(
            self.client.clone(),
            &self.namespace,
            Arc::clone(&self.user_ca),
            self.revocation_limit,
        ));
        let publisher = Publisher {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            user_ca: Arc::clone(&self.user_ca),
            upstream_ca_line: self.upstream_ca_line.clone(),
            proxy_host_key_line: self.proxy_host_key_line.clone(),
            proxy_address: self.proxy_address.clone(),
            host_groups: host_groups.clone(),
            policies: policies.clone(),
            requests: requests.clone(),
            revocations: Arc::clone(&revocations),
        };
        tasks.spawn(publisher.run(Arc::clone(&nudge)));
        tasks.spawn(count_phases(requests, self.metrics.clone()));
        tasks.spawn(rotate_seal_keys(
            Api::namespaced(self.client.clone(), &self.namespace),
            self.seal.clone(),
            self.seal_rotation,
            self.seal_grace,
        ));
        let ctx = Arc::new(Context {
            client: self.client.clone(),
            user_ca: self.user_ca,
            seal: self.seal,
            reporter: self.reporter,
            metrics: self.metrics,
            pending_ttl: self.pending_ttl,
            policies,
            host_groups,
            revocations,
            rbac,
            audit: self.audit,
        });
        controller
            // Bounded: a burst of thousands of requests is worked through, not all at once.
            .with_config(
                kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
            )
            .run(controller::reconcile, controller::error_policy, ctx)
            .for_each(|_| ready(()))
            .await;
    }
}

/// Keep the requests-by-phase gauge current from the controller's store.
async fn count_phases(requests: Store<AccessRequest>, metrics: Metrics) {
    let phases = [
        Phase::Pending,
        Phase::Issued,
        Phase::Denied,
        Phase::Expired,
        Phase::Revoked,
        Phase::Failed,
    ];
    loop {
        let state = requests.state();
        for phase in phases {
            let count = state
                .iter()
                .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(phase))
                .count();
            metrics
                .requests
                .with_label_values(&[&format!("{phase:?}")])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
