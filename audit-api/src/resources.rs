//! The JSON the API answers with. Pure: data comes from the [`crate::index`] (sessions and
//! events); it goes to the handlers as `serde_json` values shaped as Kubernetes objects:
//! discovery documents, `Session`/`SessionList`, `AuditEventList` and metav1 `Status`.

use gatehouse_crds::audit::AuditEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, GroupVersionForDiscovery, MicroTime, Time,
};
use serde_json::{Map, Value, json};

use crate::authz::{GROUP, VERSION};
use crate::index::{EventKey, Session};

/// `audit.gatehouse.dev/v1alpha1`.
pub fn group_version() -> String {
    format!("{GROUP}/{VERSION}")
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn micro(time: jiff::Timestamp) -> Value {
    to_value(&MicroTime(time))
}

/// `/apis/audit.gatehouse.dev`.
pub fn api_group() -> APIGroup {
    let version = GroupVersionForDiscovery {
        group_version: group_version(),
        version: VERSION.to_owned(),
    };
    APIGroup {
        name: GROUP.to_owned(),
        preferred_version: Some(version.clone()),
        versions: vec![version],
        server_address_by_client_cidrs: None,
    }
}

/// `/apis`: the one group.
pub fn api_group_list() -> Value {
    let mut list = to_value(&APIGroupList {
        groups: vec![api_group()],
    });
    typed(&mut list, "v1", "APIGroupList");
    list
}

/// `/apis/audit.gatehouse.dev`, with its kind.
pub fn api_group_value() -> Value {
    let mut group = to_value(&api_group());
    typed(&mut group, "v1", "APIGroup");
    group
}

/// `/apis/audit.gatehouse.dev/v1alpha1`.
pub fn api_resource_list() -> Value {
    let resource = |name: &str, singular: &str, kind: &str, verbs: &[&str]| APIResource {
        name: name.to_owned(),
        singular_name: singular.to_owned(),
        namespaced: true,
        kind: kind.to_owned(),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..APIResource::default()
    };
    let mut list = to_value(&APIResourceList {
        group_version: group_version(),
        resources: vec![
            resource("sessions", "session", "Session", &["get", "list"]),
            resource("sessions/recording", "", "Session", &["get"]),
            resource("sessions/events", "", "AuditEvent", &["get"]),
            resource("auditevents", "auditevent", "AuditEvent", &["list"]),
        ],
    });
    typed(&mut list, "v1", "APIResourceList");
    list
}

fn typed(value: &mut Value, api_version: &str, kind: &str) {
    if let Value::Object(map) = value {
        map.insert("apiVersion".to_owned(), api_version.into());
        map.insert("kind".to_owned(), kind.into());
    }
}

/// One Session.
pub fn session(session: &Session) -> Value {
    let mut spec = Map::new();
    if let Some(request) = &session.request {
        spec.insert(
            "request".to_owned(),
            json!({"name": request.name, "uid": request.uid}),
        );
    }
    let put = |map: &mut Map<String, Value>, key: &str, value: &Option<String>| {
        if let Some(value) = value {
            map.insert(key.to_owned(), value.clone().into());
        }
    };
    put(&mut spec, "user", &session.user);
    put(&mut spec, "host", &session.host);
    put(&mut spec, "login", &session.login);
    put(&mut spec, "sessionKind", &session.kind);
    let mut status = Map::new();
    if let Some(start) = session.start {
        status.insert("start".to_owned(), micro(start));
    }
    if let Some(end) = session.end {
        status.insert("end".to_owned(), micro(end));
    }
    let mut number = |key: &str, value: Option<u64>| {
        if let Some(value) = value {
            status.insert(key.to_owned(), value.into());
        }
    };
    number("bytesToTarget", session.bytes_to_target);
    number("bytesToClient", session.bytes_to_client);
    number("exitStatus", session.exit_status.map(u64::from));
    if let Some(recording) = &session.recording {
        status.insert(
            "recording".to_owned(),
            json!({"key": recording.key, "sha256": recording.sha256, "bytes": recording.bytes}),
        );
    }
    status.insert("commands".to_owned(), session.commands.into());
    status.insert("fileOperations".to_owned(), session.file_operations.into());
    status.insert("forwards".to_owned(), session.forwards.into());
    json!({
        "apiVersion": group_version(),
        "kind": "Session",
        "metadata": {
            "name": session.id,
            "namespace": session.namespace,
            "creationTimestamp": to_value(&Time(session.started())),
        },
        "spec": spec,
        "status": status,
    })
}

/// A SessionList.
pub fn session_list(sessions: &[&Session]) -> Value {
    json!({
        "apiVersion": group_version(),
        "kind": "SessionList",
        "metadata": {},
        "items": sessions.iter().map(|s| session(s)).collect::<Vec<_>>(),
    })
}

/// One AuditEvent item: the stored event's fields, plus its kind and metadata.
pub fn audit_event(key: &EventKey, event: &AuditEvent) -> Value {
    let mut value = to_value(event);
    if let Value::Object(map) = &mut value {
        let mut metadata = Map::new();
        metadata.insert("name".to_owned(), key.name().into());
        metadata.insert(
            "creationTimestamp".to_owned(),
            to_value(&Time(event.time.0)),
        );
        if let Some(namespace) = &event.namespace {
            metadata.insert("namespace".to_owned(), namespace.clone().into());
        }
        map.insert("apiVersion".to_owned(), group_version().into());
        map.insert("kind".to_owned(), "AuditEvent".into());
        map.insert("metadata".to_owned(), Value::Object(metadata));
    }
    value
}

/// An AuditEventList; `continue_token` when more follow.
pub fn audit_event_list(
    events: &[(&EventKey, &AuditEvent)],
    continue_token: Option<&str>,
) -> Value {
    let metadata = match continue_token {
        Some(token) => json!({"continue": token}),
        None => json!({}),
    };
    json!({
        "apiVersion": group_version(),
        "kind": "AuditEventList",
        "metadata": metadata,
        "items": events.iter().map(|(k, e)| audit_event(k, e)).collect::<Vec<_>>(),
    })
}

/// Whether an `Accept` header asks for a `meta.k8s.io` Table (as `kubectl get` does).
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=Table")
            && params.contains(&"g=meta.k8s.io")
            && (params.contains(&"v=v1") || params.contains(&"v=v1beta1"))
    })
}

/// Sessions as a `meta.k8s.io/v1` Table: NAME, USER, HOST, START (what `kubectl get` prints).
pub fn session_table(sessions: &[&Session]) -> Value {
    let column = |name: &str, format: &str, description: &str| {
        json!({"name": name, "type": "string", "format": format,
               "description": description, "priority": 0})
    };
    let rows: Vec<Value> = sessions
        .iter()
        .map(|s| {
            let object = session(s);
            json!({
                "cells": [
                    s.id,
                    s.user.clone().unwrap_or_default(),
                    s.host.clone().unwrap_or_default(),
                    object["status"].get("start").cloned().unwrap_or_default(),
                ],
                "object": {
                    "apiVersion": "meta.k8s.io/v1",
                    "kind": "PartialObjectMetadata",
                    "metadata": object["metadata"],
                },
            })
        })
        .collect();
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "Table",
        "metadata": {},
        "columnDefinitions": [
            column("Name", "name", "The proxy's session id."),
            column("User", "", "Whose session it is."),
            column("Host", "", "The target host."),
            column("Start", "date-time", "When the session started."),
        ],
        "rows": rows,
    })
}

/// Audit events as a `meta.k8s.io/v1` Table: NAME, TIME, TYPE, USER, HOST, OUTCOME.
pub fn audit_event_table(
    events: &[(&EventKey, &AuditEvent)],
    continue_token: Option<&str>,
) -> Value {
    let column = |name: &str, format: &str, description: &str| {
        json!({"name": name, "type": "string", "format": format,
               "description": description, "priority": 0})
    };
    let rows: Vec<Value> = events
        .iter()
        .map(|(key, event)| {
            let object = audit_event(key, event);
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            json!({
                "cells": [
                    key.name(),
                    text(&object["time"]),
                    text(&object["type"]),
                    event.actor.as_ref().and_then(|a| a.user.clone()).unwrap_or_default(),
                    event.host.clone().unwrap_or_default(),
                    event.outcome.clone().unwrap_or_default(),
                ],
                "object": {
                    "apiVersion": "meta.k8s.io/v1",
                    "kind": "PartialObjectMetadata",
                    "metadata": object["metadata"],
                },
            })
        })
        .collect();
    let metadata = match continue_token {
        Some(token) => json!({"continue": token}),
        None => json!({}),
    };
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "Table",
        "metadata": metadata,
        "columnDefinitions": [
            column("Name", "name", "writer.sequence.index of the stored event."),
            column("Time", "date-time", "When it happened."),
            column("Type", "", "What happened."),
            column("User", "", "Who did it."),
            column("Host", "", "The target host."),
            column("Outcome", "", "The rule or reason."),
        ],
        "rows": rows,
    })
}

/// A metav1 Status for a failed request: `code` with its `reason` and `message`.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
