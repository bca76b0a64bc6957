//! Watch caches: kube reflectors that keep every object of a kind in memory, so decisions read
//! a store instead of calling the API server. Data comes from the API server's list and watch
//! streams; it goes to a [`Store`] and, on every change, to a callback (a nudge).

use std::future::Future;

use futures::StreamExt;
use kube::{
    Api, Client, Resource,
    core::NamespaceResourceScope,
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

/// A store of every `K` that `api` lists, and the future that keeps it current (poll it, e.g.
/// in a task). `on_change` runs after every object the watch touches; watch errors are logged
/// and retried with backoff.
pub fn reflect<K>(
    api: Api<K>,
    on_change: impl Fn() + Send + 'static,
) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
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
