//! Watch caches: kube reflectors that keep every object of a kind in memory, so decisions read
//! a store instead of calling the API server. Data comes from the API server's list and watch
//! streams; it goes, trimmed to what Gatehouse reads ([`trim_metadata`]), to a [`Store`] and, on
//! every change, to a callback (a nudge) or a controller.
//!
//! Trimming matters because anyone who may create an AccessRequest writes into these caches:
//! managedFields, `kubectl.kubernetes.io/last-applied-configuration` and other annotations can
//! be tens of KiB per object, and every replica would keep them for every object.

use std::future::Future;

use futures::{Stream, StreamExt};
use kube::{
    Api, Client, Resource,
    core::{NamespaceResourceScope, ObjectMeta},
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;

/// An Api for one namespace, or for all of them.
pub fn namespaced_or_all<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Prefix of the labels and annotations Gatehouse writes and reads.
const GATEHOUSE_PREFIX: &str = "gatehouse.dev/";

/// Which labels a cache keeps. Annotations outside `gatehouse.dev/` and managedFields are
/// always dropped: no Gatehouse decision reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepLabels {
    /// Every label (a HostGroup's labels are the tags policies select on).
    All,
    /// Only `gatehouse.dev/` labels.
    Gatehouse,
    /// None (RBAC objects: their rules are read, never their labels).
    None,
}

/// Drop from `meta` what no Gatehouse decision reads.
pub fn trim_metadata(meta: &mut ObjectMeta, labels: KeepLabels) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with(GATEHOUSE_PREFIX));
    }
    match labels {
        KeepLabels::All => {}
        KeepLabels::Gatehouse => {
            if let Some(map) = meta.labels.as_mut() {
                map.retain(|key, _| key.starts_with(GATEHOUSE_PREFIX));
            }
        }
        KeepLabels::None => meta.labels = None,
    }
}

/// A trimmed watch of `api`, feeding `writer`'s store: each event's objects as the store keeps them.
fn trimmed_reflector<K>(
    api: Api<K>,
    labels: KeepLabels,
    shape: impl Fn(&mut K) + Send + 'static,
    writer: reflector::store::Writer<K>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(move |object: &mut K| {
            trim_metadata(object.meta_mut(), labels);
            shape(object);
        })
        .reflect(writer)
}

/// A store of every `K` that `api` lists, and the future that keeps it current (poll it, e.g.
/// in a task). `on_change` runs after every object the watch touches; watch errors are logged
/// and retried with backoff. Objects are stored trimmed ([`trim_metadata`]).
pub fn reflect<K>(
    api: Api<K>,
    labels: KeepLabels,
    on_change: impl Fn() + Send + 'static,
) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    reflect_shaped(api, labels, |_: &mut K| {}, on_change)
}

/// As [`reflect`], with each object also reduced by `shape` before it is stored: for a cache
/// whose reader needs a few fields of every object of a kind.
pub fn reflect_shaped<K>(
    api: Api<K>,
    labels: KeepLabels,
    shape: impl Fn(&mut K) + Send + 'static,
    on_change: impl Fn() + Send + 'static,
) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = trimmed_reflector(api, labels, shape, writer)
        .touched_objects()
        .for_each(move |event| {
            match event {
                Ok(_) => on_change(),
                Err(error) => {
                    tracing::warn!(%error, kind = %K::kind(&K::DynamicType::default()), "watch error; retrying");
                }
            }
            std::future::ready(())
        });
    (reader, stream)
}

/// A trimmed store of every `K` that `api` lists and the stream of objects it applies, for
/// `kube::runtime::Controller::for_stream` (the controller's own `Controller::new` would cache
/// untrimmed objects).
pub fn reflect_for_controller<K>(
    api: Api<K>,
    labels: KeepLabels,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    (
        reader,
        trimmed_reflector(api, labels, |_: &mut K| {}, writer).applied_objects(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::core::ObjectMeta;

    use super::{KeepLabels, trim_metadata};

    fn map(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn trim_keeps_only_what_gatehouse_reads() {
        let labels = [("team", "db"), ("gatehouse.dev/managed", "yes")];
        let annotations = [
            ("kubectl.kubernetes.io/last-applied-configuration", "{...}"),
            ("gatehouse.dev/decisions", "[]"),
            ("notes", "x"),
        ];
        let table = [
            (KeepLabels::All, map(&labels)),
            (
                KeepLabels::Gatehouse,
                map(&[("gatehouse.dev/managed", "yes")]),
            ),
            (KeepLabels::None, None),
        ];
        for (keep, want_labels) in table {
            let mut meta = ObjectMeta {
                name: Some("r".into()),
                labels: map(&labels),
                annotations: map(&annotations),
                managed_fields: Some(vec![Default::default()]),
                ..ObjectMeta::default()
            };
            trim_metadata(&mut meta, keep);
            assert_eq!(meta.labels, want_labels, "{keep:?}");
            assert_eq!(meta.annotations, map(&[("gatehouse.dev/decisions", "[]")]));
            assert_eq!(meta.managed_fields, None);
            assert_eq!(meta.name.as_deref(), Some("r"));
        }
    }
}
