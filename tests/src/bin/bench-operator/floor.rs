//! The floor (`BENCH_FLOOR=1`): where kube-apiserver's and etcd's CPU per auto-approved
//! AccessRequest goes, on the same control plane, client and `BENCH_PARALLEL`.
//!
//! Each round measures, in order, `BENCH_REQUESTS` (2,000) objects of every [`Case`]: ConfigMaps;
//! AccessRequests with everything on until all are Issued; then, with the chart's
//! Mutating/ValidatingWebhookConfigurations deleted and the operator paused (SIGSTOP, so it
//! neither answers nor reacts), AccessRequest creates, status applies of an Issued status on
//! those requests, the same status as a JSON merge patch (on requests created for it, not
//! measured) and Events like the operator's; the requests are deleted, the operator
//! resumed and the webhook configurations recreated as they were; then creates of two copies of
//! the CRD in another group ([`floor_copy`]), with and without the CEL rules. Before each case,
//! a ConfigMap batch shows the machine's state at that moment, and the API server is left to
//! go idle. `BENCH_FLOOR_ROUNDS` (2) rounds run one after the other, so each case is measured
//! twice, interleaved with the others. CPU is `/proc/PID/stat` of kube-apiserver and etcd
//! before and after each case, less what each uses idle over the same time (measured first),
//! per object.

use std::{
    collections::BTreeMap,
    future::Future,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use gatehouse_crds::{AccessRequest, Phase};
use gatehouse_tests::{ControlPlane, Subject, User, repo_root, scenario};
use k8s_openapi::{
    api::{
        admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
        core::v1::ConfigMap,
        events::v1::Event,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Resource,
    api::{
        ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
        PostParams,
    },
    runtime::watcher,
};
use serde_json::{Value, json};

use crate::{
    floor_copy::{SOURCE, cel_rules, crd_copy},
    floor_shares::{Case, Cost, Measured},
    metrics::{Snapshot, calls_line, cpu_seconds, snapshot},
    watch::{Seen, all_in, watch_phases},
};

/// The chart's webhook configurations (both kinds are named after the release).
const WEBHOOKS: &str = "gatehouse";
/// The label every object the floor creates carries, valued by case.
const CASE_LABEL: &str = "bench.gatehouse.dev/floor-case";
/// Groups of the CRD copies.
const COPY_GROUPS: [(&str, bool); 2] = [
    ("cel.floor.bench.gatehouse.dev", true),
    ("nocel.floor.bench.gatehouse.dev", false),
];
/// What the floor runs against.
pub struct Plane<'a> {
    pub cp: &'a ControlPlane,
    pub admin: &'a Client,
    pub alice: &'a Client,
    pub key: &'a str,
    /// The operator, kube-apiserver and etcd.
    pub pids: [u32; 3],
    pub operator_metrics: &'a dyn Fn() -> String,
    pub parallel: usize,
}

impl Plane<'_> {
    async fn snapshot(&self) -> Snapshot {
        snapshot(self.admin, self.operator_metrics, self.pids).await
    }
}

/// Run `f(0..n)` with `parallel` in flight.
async fn each<F, Fut>(n: usize, parallel: usize, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    stream::iter(0..n)
        .map(f)
        .buffer_unordered(parallel)
        .collect::<Vec<()>>()
        .await;
}

/// Create ConfigMaps `{prefix}-{i}` holding `key` (about an AccessRequest's size).
pub async fn create_config_maps(
    api: &Api<ConfigMap>,
    prefix: &str,
    count: usize,
    key: &str,
    parallel: usize,
) {
    each(count, parallel, |i| async move {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("{prefix}-{i:05}")),
                ..Default::default()
            },
            data: Some([("publicKey".to_owned(), key.to_owned())].into()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &cm)
            .await
            .unwrap_or_else(|e| panic!("creating ConfigMap {prefix}-{i}: {e}"));
    })
    .await;
}

/// An AccessRequest manifest of API group `group`, labelled with its case.
fn request(group: &str, name: &str, key: &str, case: &str) -> Value {
    let mut request = scenario::request(name, "ubuntu", key);
    request["apiVersion"] = Value::from(format!("{group}/v1alpha1"));
    request["metadata"]["labels"] = json!({ CASE_LABEL: case });
    request
}

/// Wait (up to 2 min) until the API server uses under 5% of a core over a second.
async fn settle(pid: u32) {
    let started = Instant::now();
    loop {
        let before = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let used = cpu_seconds(pid) - before;
        if used < 0.05 {
            return;
        }
        if started.elapsed() > Duration::from_secs(120) {
            println!("  (the API server did not settle: {used:.2} CPU-s per s)");
            return;
        }
    }
}

/// SIGSTOP a process; SIGCONT when dropped (also when the bench panics).
struct Paused(u32);

fn signal(name: &str, pid: u32) {
    let ok = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{name} {pid} failed");
}

impl Paused {
    fn new(pid: u32) -> Self {
        signal("STOP", pid);
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal("CONT", self.0);
    }
}

/// The chart's webhook configurations, deleted; [`Webhooks::restore`] creates them again.
struct Webhooks {
    mutating: MutatingWebhookConfiguration,
    validating: ValidatingWebhookConfiguration,
}

/// `object`'s metadata as a create needs it: name, labels, annotations.
fn fresh<K: Resource>(mut object: K) -> K {
    let meta = object.meta_mut();
    *meta = ObjectMeta {
        name: meta.name.take(),
        labels: meta.labels.take(),
        annotations: meta.annotations.take(),
        ..Default::default()
    };
    object
}

impl Webhooks {
    async fn remove(admin: &Client) -> Self {
        let mutating = Api::<MutatingWebhookConfiguration>::all(admin.clone());
        let validating = Api::<ValidatingWebhookConfiguration>::all(admin.clone());
        let removed = Webhooks {
            mutating: mutating.get(WEBHOOKS).await.expect("the mutating webhook"),
            validating: validating
                .get(WEBHOOKS)
                .await
                .expect("the validating webhook"),
        };
        let gone = DeleteParams::default();
        mutating.delete(WEBHOOKS, &gone).await.expect("deleting it");
        validating
            .delete(WEBHOOKS, &gone)
            .await
            .expect("deleting it");
        // The API server's admission reads the configurations from an informer.
        tokio::time::sleep(Duration::from_secs(2)).await;
        removed
    }

    async fn restore(self, admin: &Client) {
        let create = PostParams::default();
        Api::<MutatingWebhookConfiguration>::all(admin.clone())
            .create(&create, &fresh(self.mutating))
            .await
            .expect("recreating the mutating webhook");
        Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .create(&create, &fresh(self.validating))
            .await
            .expect("recreating the validating webhook");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Install the two CRD copies, let alice's group create their requests; their API resources.
async fn install_copies(p: &Plane<'_>, ns: &str) -> Vec<ApiResource> {
    let path = repo_root().join(SOURCE);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let crd: Value = serde_saphyr::from_str(&text).expect("the CRD parses");
    let crds: Api<CustomResourceDefinition> = Api::all(p.admin.clone());
    let mut resources = Vec::new();
    for (group, keep_cel) in COPY_GROUPS {
        let copy = crd_copy(&crd, group, keep_cel);
        let name = format!("accessrequests.{group}");
        println!("CRD copy {name}: {} CEL rules", cel_rules(&copy));
        let copy: CustomResourceDefinition = serde_json::from_value(copy).expect("a CRD");
        crds.create(&PostParams::default(), &copy)
            .await
            .unwrap_or_else(|e| panic!("creating CRD {name}: {e}"));
        resources.push(ApiResource {
            group: group.to_owned(),
            version: "v1alpha1".to_owned(),
            api_version: format!("{group}/v1alpha1"),
            kind: "AccessRequest".to_owned(),
            plural: "accessrequests".to_owned(),
        });
    }
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "bench-floor-copies"},
        "rules": [{
            "apiGroups": COPY_GROUPS.map(|(g, _)| g),
            "resources": ["accessrequests"],
            "verbs": ["create", "list"],
        }],
    });
    p.cp.apply_as(User::Admin, ns, &role).ok();
    p.cp.bind(ns, "bench-floor-copies", Subject::Group("dev"));
    // Established, served and authorized: alice can list them.
    for resource in &resources {
        let api: Api<DynamicObject> = Api::namespaced_with(p.alice.clone(), ns, resource);
        let started = Instant::now();
        while let Err(e) = api.list(&ListParams::default()).await {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{}: {e}",
                resource.api_version
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    resources
}

/// What cases c and d write: the status of an Issued request and its Event, from case b.
struct Templates {
    status: Value,
    event: Event,
}

async fn templates(admin: &Client, ns: &str, issued: &str) -> Templates {
    let requests: Api<AccessRequest> = Api::namespaced(admin.clone(), ns);
    let request = requests.get(issued).await.expect("an Issued request");
    let status = serde_json::to_value(request.status).expect("a status");
    let events: Api<Event> = Api::namespaced(admin.clone(), ns);
    let event = events
        .list(&ListParams::default())
        .await
        .expect("listing Events")
        .items
        .into_iter()
        .find(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(issued))
        .expect("the Issued request's Event");
    Templates { status, event }
}

/// Everything one round needs.
struct Round<'a> {
    p: &'a Plane<'a>,
    ns: &'a str,
    n: usize,
    round: usize,
    seen: &'a std::sync::Mutex<Seen>,
    copies: &'a [ApiResource],
    /// CPU seconds per second kube-apiserver and etcd use idle.
    idle: [f64; 2],
}

impl Round<'_> {
    /// Create `n` AccessRequests `{prefix}{i}` as alice, labelled `label`.
    async fn create_requests(&self, prefix: &str, label: &str) {
        let p = self.p;
        let requests: Api<AccessRequest> = Api::namespaced(p.alice.clone(), self.ns);
        each(self.n, p.parallel, |i| {
            let (requests, name) = (&requests, format!("{prefix}{i:05}"));
            async move {
                let object = request("gatehouse.dev", &name, p.key, label);
                let object: AccessRequest = serde_json::from_value(object).unwrap();
                requests
                    .create(&PostParams::default(), &object)
                    .await
                    .unwrap_or_else(|e| panic!("creating {name}: {e}"));
            }
        })
        .await;
    }

    /// The ConfigMap baseline, then `case` measured.
    async fn measure(&self, case: Case, templates: Option<&Templates>) -> Measured {
        let p = self.p;
        if case == Case::StatusMerge {
            // Requests without a status for the merge patches (not measured).
            self.create_requests(&format!("plain-{}-", self.round), "bare")
                .await;
        }
        let config_maps: Api<ConfigMap> = Api::namespaced(p.admin.clone(), self.ns);
        let batch = self.n.min(1_000);
        let tag = format!("r{}-{case:?}", self.round).to_lowercase();
        let baseline = self
            .timed(batch, || async {
                let started = Instant::now();
                let prefix = format!("cm-{tag}");
                create_config_maps(&config_maps, &prefix, batch, p.key, p.parallel).await;
                started.elapsed()
            })
            .await
            .0;
        let (cost, calls) = self.timed(self.n, || self.work(case, templates)).await;
        println!(
            "round {} {:<42} {:>5.0}/s  apiserver {:>6.2} ms  etcd {:>5.2} ms per object | ConfigMaps just before {:>5.0}/s, {:.2} / {:.2} ms",
            self.round,
            case.label(),
            cost.per_second,
            cost.api_ms,
            cost.etcd_ms,
            baseline.per_second,
            baseline.api_ms,
            baseline.etcd_ms
        );
        println!("        {calls}");
        Measured { cost, baseline }
    }

    /// Settle, then run `work` (which returns when its last write returned, or when what it
    /// waits for is done) between two snapshots; its cost per object of `count`.
    async fn timed<F, Fut>(&self, count: usize, work: F) -> (Cost, String)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Duration>,
    {
        settle(self.p.pids[1]).await;
        let before = self.p.snapshot().await;
        let started = Instant::now();
        let writes = work().await;
        let after = self.p.snapshot().await;
        let window = started.elapsed().as_secs_f64();
        // Net of what the process uses idle over the same time (leases, compaction, …).
        let per = |i: usize| {
            (after.cpu[i] - before.cpu[i] - self.idle[i - 1] * window) * 1e3 / count as f64
        };
        let cost = Cost {
            api_ms: per(1),
            etcd_ms: per(2),
            per_second: count as f64 / writes.as_secs_f64().max(1e-9),
        };
        (cost, calls_line(&before, &after, count))
    }

    /// One case's writes; how long until the last write returned.
    async fn work(&self, case: Case, templates: Option<&Templates>) -> Duration {
        let (p, n, r, ns) = (self.p, self.n, self.round, self.ns);
        let started = Instant::now();
        match case {
            Case::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(p.admin.clone(), ns);
                create_config_maps(&api, &format!("cm-r{r}"), n, p.key, p.parallel).await;
            }
            Case::Full | Case::NoWebhooks => {
                let (prefix, label) = match case {
                    Case::Full => (format!("full-{r}-"), "full"),
                    _ => (format!("bare-{r}-"), "bare"),
                };
                self.create_requests(&prefix, label).await;
                let created = started.elapsed();
                if case == Case::Full {
                    let timeout = Duration::from_secs(1800);
                    all_in(self.seen, Phase::Issued, &prefix, n, timeout).await;
                    // Let the trailing Events land before counting.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    println!(
                        "        (b: all Issued {:.1} s after the first create)",
                        started.elapsed().as_secs_f64()
                    );
                }
                return created;
            }
            Case::StatusApply | Case::StatusMerge => {
                let status = &templates.expect("templates").status;
                let admin: Api<AccessRequest> = Api::namespaced(p.admin.clone(), ns);
                let (prefix, params, patch) = match case {
                    Case::StatusApply => (
                        "bare",
                        PatchParams::apply(gatehouse_crds::contract::managers::OPERATOR).force(),
                        Patch::Apply(json!({
                            "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessRequest",
                            "status": status,
                        })),
                    ),
                    _ => (
                        "plain",
                        PatchParams::default(),
                        Patch::Merge(json!({ "status": status })),
                    ),
                };
                each(n, p.parallel, |i| {
                    let (admin, params, patch) = (&admin, &params, &patch);
                    let name = format!("{prefix}-{r}-{i:05}");
                    async move {
                        admin
                            .patch_status(&name, params, patch)
                            .await
                            .unwrap_or_else(|e| panic!("writing the status of {name}: {e}"));
                    }
                })
                .await;
            }
            Case::Event => {
                let template = &templates.expect("templates").event;
                let events: Api<Event> = Api::namespaced(p.admin.clone(), ns);
                each(n, p.parallel, |i| {
                    let events = &events;
                    async move {
                        let mut event = template.clone();
                        event.metadata = ObjectMeta {
                            name: Some(format!("floor-{r}-{i:05}")),
                            labels: Some([(CASE_LABEL.to_owned(), "event".to_owned())].into()),
                            ..Default::default()
                        };
                        if let Some(regarding) = event.regarding.as_mut() {
                            regarding.name = Some(format!("bare-{r}-{i:05}"));
                        }
                        events
                            .create(&PostParams::default(), &event)
                            .await
                            .unwrap_or_else(|e| panic!("creating Event {i}: {e}"));
                    }
                })
                .await;
            }
            Case::CopyWithCel | Case::CopyWithoutCel | Case::CopyWatched => {
                let resource = &self.copies[usize::from(case == Case::CopyWithoutCel)];
                let prefix = match case {
                    Case::CopyWatched => "watched",
                    _ => "copy",
                };
                let api: Api<DynamicObject> = Api::namespaced_with(p.alice.clone(), ns, resource);
                each(n, p.parallel, |i| {
                    let (api, name) = (&api, format!("{prefix}-{r}-{i:05}"));
                    async move {
                        let object = request(&resource.group, &name, p.key, "copy");
                        let object: DynamicObject = serde_json::from_value(object).unwrap();
                        api.create(&PostParams::default(), &object)
                            .await
                            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
                    }
                })
                .await;
            }
        }
        started.elapsed()
    }
}

/// Watch `api` and drop what arrives, until aborted.
fn drain(api: Api<DynamicObject>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default());
        futures::pin_mut!(stream);
        while let Some(Ok(_)) = stream.next().await {}
    })
}

/// Wait (up to 60 s) until the resumed operator holds the leader Lease again.
async fn until_leader(p: &Plane<'_>) {
    let started = Instant::now();
    while !(p.operator_metrics)()
        .lines()
        .any(|l| l == "gatehouse_operator_leader 1")
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the operator is not leader again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Run the floor: `n` objects per case, `rounds` rounds; print every measurement and a summary.
pub async fn run(p: &Plane<'_>, n: usize, rounds: usize) {
    println!("# Gatehouse operator benchmark: the floor");
    println!(
        "{n} objects per case, {rounds} rounds, {} API calls in flight; {} ConfigMaps before each case",
        p.parallel,
        n.min(1_000)
    );
    settle(p.pids[1]).await;
    let idle = {
        let before = [cpu_seconds(p.pids[1]), cpu_seconds(p.pids[2])];
        tokio::time::sleep(Duration::from_secs(10)).await;
        [
            (cpu_seconds(p.pids[1]) - before[0]) / 10.0,
            (cpu_seconds(p.pids[2]) - before[1]) / 10.0,
        ]
    };
    println!(
        "idle: apiserver {:.1}%, etcd {:.1}% of a core over 10 s; every figure is net of it (idle rate × its duration)",
        idle[0] * 100.0,
        idle[1] * 100.0
    );
    let scenario = crate::scenario_with(p.cp, "bench-floor", 0).await;
    let ns = scenario.ns.as_str();
    let seen = watch_phases(p.admin.clone(), ns);
    let copies = install_copies(p, ns).await;
    let mut results: BTreeMap<Case, Vec<Measured>> = BTreeMap::new();
    let mut templates_from: Option<Templates> = None;
    for round in 1..=rounds {
        let r = Round {
            p,
            ns,
            n,
            round,
            seen: &seen,
            copies: &copies,
            idle,
        };
        let mut record = |case: Case, m: Measured| results.entry(case).or_default().push(m);
        record(Case::ConfigMap, r.measure(Case::ConfigMap, None).await);
        record(Case::Full, r.measure(Case::Full, None).await);
        if templates_from.is_none() {
            templates_from = Some(templates(p.admin, ns, &format!("full-{round}-00000")).await);
        }
        let templates = templates_from.as_ref();
        let webhooks = Webhooks::remove(p.admin).await;
        let paused = Paused::new(p.pids[0]);
        for case in [
            Case::NoWebhooks,
            Case::StatusApply,
            Case::StatusMerge,
            Case::Event,
        ] {
            record(case, r.measure(case, templates).await);
        }
        let requests: Api<AccessRequest> = Api::namespaced(p.admin.clone(), ns);
        requests
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&format!("{CASE_LABEL}=bare")),
            )
            .await
            .expect("deleting the requests created without webhooks");
        drop(paused);
        webhooks.restore(p.admin).await;
        until_leader(p).await;
        for case in [Case::CopyWithCel, Case::CopyWithoutCel] {
            record(case, r.measure(case, None).await);
        }
        let watches = [
            Api::all_with(p.admin.clone(), &copies[0]),
            Api::namespaced_with(p.admin.clone(), ns, &copies[0]),
        ]
        .map(drain);
        tokio::time::sleep(Duration::from_secs(1)).await;
        record(Case::CopyWatched, r.measure(Case::CopyWatched, None).await);
        watches.iter().for_each(tokio::task::JoinHandle::abort);
    }
    crate::floor_report::summary(&results);
}
