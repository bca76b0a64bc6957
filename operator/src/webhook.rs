//! The admission webhook server: HTTPS endpoints the API server calls for AccessRequests.
//!
//! Data comes from the API server as AdmissionReview requests (`/mutate` before schema
//! validation, `/validate` after every mutation), plus SubjectAccessReviews the webhook asks for
//! approvers. It goes out as AdmissionReview responses built from the pure decisions in
//! [`crate::admission`]. The serving certificate is issued in memory from the webhook CA in
//! admission's Secret and re-issued before it expires; the CA's certificate is kept injected as
//! `caBundle` into the webhook configurations.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use gatehouse_crds::{AccessPolicy, AccessRequest, GROUP, HostGroup};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::{
            MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
        },
        authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
    },
};
use kube::{
    Api, Client,
    api::{DynamicObject, PostParams},
    core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
    runtime::reflector::Store,
};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::{
    admission::{self, Authority, Caller, Plan},
    decisions::DecisionKind,
    error::{Error, Result},
    metrics::Metrics,
    seal_keys::SharedSealKeys,
    secrets::WebhookCa,
};
use gatehouse_runtime::http::{self as serving, Full, text};

/// Largest AdmissionReview body accepted (the API server caps objects at ~3 MiB).
const MAX_BODY: usize = 4 << 20;
/// Serving certificates live this long and are re-issued when a third of it is left.
const SERVING_CERT_DAYS: i64 = 30;

/// What the webhook handlers share.
#[derive(Clone)]
pub struct WebhookContext {
    /// Client for SubjectAccessReviews.
    pub client: Client,
    /// Seal and verify decision records (replaced when the key rotates).
    pub seal: SharedSealKeys,
    /// Metrics.
    pub metrics: Metrics,
    /// The operator's own user name: it alone manages the finalizer.
    pub operator_username: String,
    /// Watch caches for the per-requester open-request cap (every replica serving the webhook
    /// keeps its own: no list per review).
    pub caches: AdmissionCaches,
}

/// What admission reads to enforce `spec.maxOpenRequestsPerRequester`.
#[derive(Clone)]
pub struct AdmissionCaches {
    /// AccessRequests (whose requester, phase and policy count).
    pub requests: Store<AccessRequest>,
    /// AccessPolicies (which one governs a new request, and its cap).
    pub policies: Store<AccessPolicy>,
    /// HostGroups (their labels select the policy).
    pub host_groups: Store<HostGroup>,
}

impl std::fmt::Debug for AdmissionCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionCaches").finish_non_exhaustive()
    }
}

/// How long a CREATE waits for the caches to be synced (after a restart) before it is refused.
const CACHE_SYNC_WAIT: Duration = Duration::from_secs(5);

impl AdmissionCaches {
    /// The refusal for a create beyond its policy's open-request cap, if any; a refusal too
    /// while the caches are not synced (fail closed: an unsynced cache counts nothing).
    async fn open_request_cap(
        &self,
        requester: &gatehouse_crds::Requester,
        object: &AccessRequest,
    ) -> Option<String> {
        let synced = tokio::time::timeout(CACHE_SYNC_WAIT, async {
            self.requests.wait_until_ready().await.is_ok()
                && self.policies.wait_until_ready().await.is_ok()
                && self.host_groups.wait_until_ready().await.is_ok()
        })
        .await;
        if synced != Ok(true) {
            return Some(
                "Gatehouse admission is still reading AccessRequests and AccessPolicies after a restart; retry in a few seconds".to_owned(),
            );
        }
        let policies = self.policies.state();
        let groups = self.host_groups.state();
        let requests = self.requests.state();
        admission::open_request_cap(
            requester,
            object,
            policies.iter().map(|p| &**p),
            groups.iter().map(|g| &**g),
            requests.iter().map(|r| &**r),
        )
    }
}

impl std::fmt::Debug for WebhookContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookContext").finish_non_exhaustive()
    }
}

/// A rustls certificate resolver whose certificate can be replaced while serving.
#[derive(Debug)]
pub struct RotatingCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|key| Arc::clone(&key))
    }
}

fn certified_key(ca: &WebhookCa, names: &[String]) -> Result<Arc<CertifiedKey>> {
    let serving = ca.issue(names, SERVING_CERT_DAYS)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(serving.key_der.to_vec()));
    let signer =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(Error::ConfigureTls)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(serving.cert_der)],
        signer,
    )))
}

/// Issue a serving certificate for `names` and build the TLS acceptor that serves it; a
/// background task re-issues it every `SERVING_CERT_DAYS / 3` days. With `client_ca_pem` (the
/// CA of the client certificate the API server presents, configured in its
/// AdmissionConfiguration), only callers holding such a certificate get an answer: whoever else
/// reaches the port cannot have decisions sealed.
pub fn tls_acceptor(
    ca: WebhookCa,
    names: Vec<String>,
    client_ca_pem: Option<&str>,
) -> Result<tokio_rustls::TlsAcceptor> {
    let resolver = Arc::new(RotatingCert(RwLock::new(certified_key(&ca, &names)?)));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(Error::ConfigureTls)?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| Error::ReadClientCa(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::ReadClientCa(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(Error::ReadClientCa("no certificate in the file".to_owned()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| Error::ReadClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio::spawn(async move {
        let period = Duration::from_secs(SERVING_CERT_DAYS.unsigned_abs() * 86_400 / 3);
        loop {
            tokio::time::sleep(period).await;
            match certified_key(&ca, &names) {
                Ok(fresh) => {
                    if let Ok(mut current) = resolver.0.write() {
                        *current = fresh;
                        tracing::info!("re-issued webhook serving certificate");
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "re-issuing webhook serving certificate failed")
                }
            }
        }
    });
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serve `/mutate` and `/validate` over TLS on `listener`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ctx: WebhookContext,
) {
    let handler = move |request: Request<Incoming>| {
        let ctx = ctx.clone();
        async move { handle(request, &ctx).await }
    };
    let accept = move |stream| {
        let acceptor = acceptor.clone();
        async move { acceptor.accept(stream).await }
    };
    serving::serve(listener, handler, accept).await;
}

async fn handle(request: Request<Incoming>, ctx: &WebhookContext) -> Response<Full> {
    let webhook = match (request.method(), request.uri().path()) {
        (&Method::POST, "/mutate") => "mutate",
        (&Method::POST, "/validate") => "validate",
        (_, "/healthz") => return text(StatusCode::OK, "ok\n"),
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    let started = Instant::now();
    let body = match http_body_util::Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return text(StatusCode::BAD_REQUEST, format!("reading body: {error}"));
        }
    };
    let (response, operation) = review(&body, webhook, ctx).await;
    let verdict = if response.allowed {
        "allowed"
    } else {
        "denied"
    };
    ctx.metrics
        .admission_reviews
        .with_label_values(&[webhook, &operation, verdict])
        .inc();
    ctx.metrics
        .admission_duration
        .observe(started.elapsed().as_secs_f64());
    match serde_json::to_vec(&response.into_review()) {
        Ok(json) => {
            let mut out = Response::new(Full::from(json));
            out.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            out
        }
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

async fn review(body: &[u8], webhook: &str, ctx: &WebhookContext) -> (AdmissionResponse, String) {
    let typed = serde_json::from_slice::<AdmissionReview<AccessRequest>>(body)
        .ok()
        .and_then(|review| TryInto::<AdmissionRequest<AccessRequest>>::try_into(review).ok());
    let Some(request) = typed else {
        // An object that does not parse as an AccessRequest fails the CRD schema right after the
        // mutating stage, with a better message than ours: let it through to that check.
        let generic = serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
            .ok()
            .and_then(|review| TryInto::<AdmissionRequest<DynamicObject>>::try_into(review).ok());
        return match generic {
            Some(request) if webhook == "mutate" => {
                (AdmissionResponse::from(&request), "unparsed".to_owned())
            }
            Some(request) => (
                AdmissionResponse::from(&request)
                    .deny("the object is not a valid gatehouse.dev AccessRequest"),
                "unparsed".to_owned(),
            ),
            None => (
                AdmissionResponse::invalid("malformed AdmissionReview"),
                "malformed".to_owned(),
            ),
        };
    };
    let operation = format!("{:?}", request.operation).to_uppercase();
    let response = if webhook == "mutate" {
        mutate(&request, ctx).await
    } else {
        validate(&request, ctx)
    };
    if !response.allowed {
        tracing::info!(
            webhook,
            operation = %operation,
            user = request.user_info.username.as_deref().unwrap_or_default(),
            namespace = request.namespace.as_deref().unwrap_or_default(),
            name = %request.name,
            message = %response.result.message,
            "admission denied"
        );
    }
    (response, operation)
}

fn validate(request: &AdmissionRequest<AccessRequest>, ctx: &WebhookContext) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(object) = &request.object else {
        return response;
    };
    let caller = Caller::from_user_info(&request.user_info, &ctx.operator_username);
    let old = if request.operation == Operation::Update {
        request.old_object.as_ref()
    } else {
        None
    };
    if request.operation == Operation::Update && old.is_none() {
        return response.deny("UPDATE without oldObject");
    }
    match admission::validate(&caller, old, object, &ctx.seal.get()) {
        None => response,
        Some(message) => response.deny(message),
    }
}

async fn mutate(
    request: &AdmissionRequest<AccessRequest>,
    ctx: &WebhookContext,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(object) = &request.object else {
        return response;
    };
    let caller = Caller::from_user_info(&request.user_info, &ctx.operator_username);
    let plan = match (&request.operation, &request.old_object) {
        (Operation::Create, _) => admission::plan_create(&caller, object),
        (Operation::Update, Some(old)) => {
            admission::plan_update(&caller, old, object, &ctx.seal.get())
        }
        _ => Plan::Allow,
    };
    let mutated = match plan {
        Plan::Allow => return response,
        Plan::Deny(message) => return response.deny(message),
        Plan::AllowIf(Authority::None) => return response,
        Plan::AllowIf(Authority::ApproverOf { policy }) => {
            let namespace = request.namespace.clone().unwrap_or_default();
            return match may_approve(&ctx.client, &request.user_info, &namespace, &policy).await {
                Ok(true) => response,
                Ok(false) => {
                    let old = request.old_object.as_ref().unwrap_or(object);
                    response.deny(admission::not_yours(&caller, old, &policy))
                }
                Err(error) => {
                    tracing::error!(%error, "SubjectAccessReview failed");
                    response.deny(format!(
                        "cannot check approval rights right now ({error}); retry"
                    ))
                }
            };
        }
        Plan::StampRequester(requester) => {
            if let Some(message) = ctx.caches.open_request_cap(&requester, object).await {
                return response.deny(message);
            }
            let mut out = object.clone();
            out.spec.requester = Some(requester);
            admission::add_revocation_finalizer(&mut out);
            out
        }
        Plan::Decide {
            kind,
            message,
            authority,
        } => {
            if let Authority::ApproverOf { policy } = &authority {
                let namespace = request.namespace.clone().unwrap_or_default();
                match may_approve(&ctx.client, &request.user_info, &namespace, policy).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return response.deny(admission::not_an_approver(
                            &caller, &namespace, policy, kind,
                        ));
                    }
                    Err(error) => {
                        tracing::error!(%error, "SubjectAccessReview failed");
                        return response.deny(format!(
                            "cannot check approval rights right now ({error}); retry"
                        ));
                    }
                }
            }
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            if !request.dry_run {
                log_decision(request, &caller, kind, message.as_deref());
            }
            admission::record_decision(
                object,
                &caller,
                kind,
                message.as_deref(),
                &now,
                &ctx.seal.get(),
            )
        }
    };
    match (serde_json::to_value(object), serde_json::to_value(&mutated)) {
        (Ok(before), Ok(after)) => match response
            .clone()
            .with_patch(json_patch::diff(&before, &after))
        {
            Ok(patched) => patched,
            Err(error) => response.deny(format!("building admission patch: {error}")),
        },
        _ => response.deny("serializing the AccessRequest for admission failed"),
    }
}

fn log_decision(
    request: &AdmissionRequest<AccessRequest>,
    caller: &Caller,
    kind: DecisionKind,
    message: Option<&str>,
) {
    tracing::info!(
        decision = kind.verb(),
        user = %caller.username,
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name = %request.name,
        message = message.unwrap_or_default(),
        "decision recorded"
    );
}

/// Ask the API server whether `user` holds verb `approve` on the governing AccessPolicy.
async fn may_approve(
    client: &Client,
    user: &k8s_openapi::api::authentication::v1::UserInfo,
    namespace: &str,
    policy: &str,
) -> Result<bool> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.to_owned()),
                resource: Some("accesspolicies".to_owned()),
                verb: Some("approve".to_owned()),
                namespace: Some(namespace.to_owned()),
                name: Some(policy.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|source| Error::ReviewAccess {
            user: user.username.clone().unwrap_or_default(),
            source,
        })?;
    Ok(answer.status.is_some_and(|status| status.allowed))
}

/// Keep `ca_pem` injected as the caBundle of every webhook in the named configurations; checks
/// every 30 s so a `helm upgrade` that resets it is repaired quickly.
pub async fn inject_ca_bundle_forever(
    client: Client,
    ca_pem: String,
    mutating: String,
    validating: String,
) {
    loop {
        if let Err(error) = inject_ca_bundle(&client, &ca_pem, &mutating, &validating).await {
            tracing::warn!(%error, "caBundle injection failed; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// Inject once. Missing configurations are skipped (the chart may not install one).
pub async fn inject_ca_bundle(
    client: &Client,
    ca_pem: &str,
    mutating: &str,
    validating: &str,
) -> Result<()> {
    let bundle = ByteString(ca_pem.as_bytes().to_vec());
    inject_into(
        Api::<MutatingWebhookConfiguration>::all(client.clone()),
        "MutatingWebhookConfiguration",
        mutating,
        &bundle,
        |config| {
            config
                .webhooks
                .iter_mut()
                .flatten()
                .map(|h| &mut h.client_config)
                .collect()
        },
    )
    .await?;
    inject_into(
        Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        "ValidatingWebhookConfiguration",
        validating,
        &bundle,
        |config| {
            config
                .webhooks
                .iter_mut()
                .flatten()
                .map(|h| &mut h.client_config)
                .collect()
        },
    )
    .await
}

/// Set `bundle` in every client config of configuration `name` of kind `K`, if any differs.
async fn inject_into<K>(
    api: Api<K>,
    kind: &'static str,
    name: &str,
    bundle: &ByteString,
    client_configs: fn(&mut K) -> Vec<&mut WebhookClientConfig>,
) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    if name.is_empty() {
        return Ok(());
    }
    let err = |source| Error::InjectCaBundle {
        kind,
        name: name.to_owned(),
        source,
    };
    let Some(mut config) = api.get_opt(name).await.map_err(err)? else {
        return Ok(());
    };
    let mut configs = client_configs(&mut config);
    if configs.iter().all(|c| c.ca_bundle.as_ref() == Some(bundle)) {
        return Ok(());
    }
    for client_config in &mut configs {
        client_config.ca_bundle = Some(bundle.clone());
    }
    api.replace(name, &PostParams::default(), &config)
        .await
        .map_err(err)?;
    tracing::info!(configuration = name, kind, "injected caBundle");
    Ok(())
}
