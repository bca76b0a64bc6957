//! Authorization. Data comes from the request line (method and raw path, client-written) and
//! the authenticated user ([`crate::authn::UserInfo`]); it goes to the API server as a
//! SubjectAccessReview, whose answer decides. The route is a pure function ([`route`]): only
//! the exact paths of `audit.gatehouse.dev/v1alpha1` map to resources, every name is checked
//! before it reaches a lookup, and nothing is percent-decoded (a `%` anywhere is a 404), so
//! `..`, encoded slashes and the like never name anything. Only GET is served.

use std::collections::BTreeMap;
use std::future::Future;

use http::Method;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::{Api, Client, api::PostParams};

use crate::authn::UserInfo;
use crate::error::Result;

/// The API group served.
pub const GROUP: &str = "audit.gatehouse.dev";
/// Its one version.
pub const VERSION: &str = "v1alpha1";
/// Longest name accepted in a path (a DNS subdomain).
const MAX_NAME_BYTES: usize = 253;
/// Longest namespace (a DNS label).
const MAX_NAMESPACE_BYTES: usize = 63;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/apis`: the APIGroupList.
    Groups,
    /// `/apis/audit.gatehouse.dev`: the APIGroup.
    Group,
    /// `/apis/audit.gatehouse.dev/v1alpha1`: the APIResourceList.
    Resources,
    /// A SessionList of one namespace, or of all (`None`).
    Sessions {
        /// The namespace.
        namespace: Option<String>,
    },
    /// One Session.
    Session {
        /// The namespace.
        namespace: String,
        /// The session id.
        name: String,
    },
    /// A session's recording (the cast).
    Recording {
        /// The namespace.
        namespace: String,
        /// The session id.
        name: String,
    },
    /// The web player page of a session (`get sessions/player`; the page fetches the cast
    /// from the `recording` subresource, which its reader needs too).
    Player {
        /// The namespace.
        namespace: String,
        /// The session id.
        name: String,
    },
    /// A session's audit events.
    SessionEvents {
        /// The namespace.
        namespace: String,
        /// The session id.
        name: String,
    },
    /// One of the web player's fixed files under a session's page
    /// (`…/sessions/{id}/player/{file}`, [`crate::player::asset`]), authorized like the page.
    Asset {
        /// The namespace.
        namespace: String,
        /// The session id.
        name: String,
        /// The file name.
        file: String,
    },
    /// An AuditEventList of one namespace, or of all (`None`).
    AuditEvents {
        /// The namespace.
        namespace: Option<String>,
    },
}

/// Why a request is refused before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such path (404).
    NotFound,
    /// The path exists, the method is not served (405).
    MethodNotAllowed,
}

fn is_namespace(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAMESPACE_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !s.starts_with('.')
}

/// The route of `method` on the raw (not decoded) `path`.
pub fn route(method: &Method, path: &str) -> Result<Route, Refusal> {
    let found = route_path(path).ok_or(Refusal::NotFound)?;
    if method != Method::GET {
        return Err(Refusal::MethodNotAllowed);
    }
    found.map_err(|()| Refusal::MethodNotAllowed)
}

/// The route of `path`: `None` for no such path, `Some(Err)` for a path that exists but is not
/// readable with GET (a single audit event: `auditevents` are listed only).
fn route_path(path: &str) -> Option<Result<Route, ()>> {
    if path.contains('%') {
        return None;
    }
    let rest = path.strip_prefix("/apis")?;
    if rest.is_empty() {
        return Some(Ok(Route::Groups));
    }
    let rest = rest.strip_prefix('/')?.strip_prefix(GROUP)?;
    if rest.is_empty() {
        return Some(Ok(Route::Group));
    }
    let rest = rest.strip_prefix('/')?.strip_prefix(VERSION)?;
    if rest.is_empty() {
        return Some(Ok(Route::Resources));
    }
    let parts: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
    let ns = |s: &str| is_namespace(s).then(|| s.to_owned());
    let name = |s: &str| is_name(s).then(|| s.to_owned());
    Some(Ok(match parts.as_slice() {
        ["sessions"] => Route::Sessions { namespace: None },
        ["auditevents"] => Route::AuditEvents { namespace: None },
        ["namespaces", n, "sessions"] => Route::Sessions {
            namespace: Some(ns(n)?),
        },
        ["namespaces", n, "auditevents"] => Route::AuditEvents {
            namespace: Some(ns(n)?),
        },
        ["namespaces", n, "auditevents", e] => {
            ns(n)?;
            name(e)?;
            return Some(Err(()));
        }
        ["namespaces", n, "sessions", s] => Route::Session {
            namespace: ns(n)?,
            name: name(s)?,
        },
        ["namespaces", n, "sessions", s, "recording"] => Route::Recording {
            namespace: ns(n)?,
            name: name(s)?,
        },
        ["namespaces", n, "sessions", s, "player"] => Route::Player {
            namespace: ns(n)?,
            name: name(s)?,
        },
        ["namespaces", n, "sessions", s, "player", f] if crate::player::asset(f).is_some() => {
            Route::Asset {
                namespace: ns(n)?,
                name: name(s)?,
                file: (*f).to_owned(),
            }
        }
        ["namespaces", n, "sessions", s, "events"] => Route::SessionEvents {
            namespace: ns(n)?,
            name: name(s)?,
        },
        _ => return None,
    }))
}

impl Route {
    /// What to ask the API server about; `None` for discovery, which every caller the
    /// front proxy vouches for may read (as `system:discovery` allows on the API server).
    pub fn attributes(&self) -> Option<ResourceAttributes> {
        let attrs = |resource: &str,
                     subresource: &str,
                     verb: &str,
                     namespace: Option<&str>,
                     name: Option<&str>| ResourceAttributes {
            group: Some(GROUP.to_owned()),
            version: Some(VERSION.to_owned()),
            resource: Some(resource.to_owned()),
            subresource: Some(subresource.to_owned()).filter(|s| !s.is_empty()),
            verb: Some(verb.to_owned()),
            namespace: Some(namespace.unwrap_or("").to_owned()),
            name: name.map(str::to_owned),
            ..ResourceAttributes::default()
        };
        Some(match self {
            Route::Groups | Route::Group | Route::Resources => return None,
            Route::Sessions { namespace } => {
                attrs("sessions", "", "list", namespace.as_deref(), None)
            }
            Route::Session { namespace, name } => {
                attrs("sessions", "", "get", Some(namespace), Some(name))
            }
            Route::Recording { namespace, name } => {
                attrs("sessions", "recording", "get", Some(namespace), Some(name))
            }
            // What the API server checked before forwarding (its request info names the
            // subresource); the page is useless without `recording` as well.
            Route::Player { namespace, name }
            | Route::Asset {
                namespace, name, ..
            } => attrs("sessions", "player", "get", Some(namespace), Some(name)),
            Route::SessionEvents { namespace, name } => {
                attrs("sessions", "events", "get", Some(namespace), Some(name))
            }
            Route::AuditEvents { namespace } => {
                attrs("auditevents", "", "list", namespace.as_deref(), None)
            }
        })
    }
}

/// What a 403 says: who may not do what, where.
pub fn forbidden_message(user: &UserInfo, attributes: &ResourceAttributes) -> String {
    let field = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut resource = field(&attributes.resource);
    if let Some(subresource) = &attributes.subresource {
        resource = format!("{resource}/{subresource}");
    }
    let name = attributes
        .name
        .as_ref()
        .map(|n| format!(" {n:?}"))
        .unwrap_or_default();
    let scope = match attributes.namespace.as_deref() {
        Some("") | None => "at the cluster scope".to_owned(),
        Some(ns) => format!("in the namespace {ns:?}"),
    };
    format!(
        "User {:?} cannot {} {resource}{name} in API group {GROUP:?} {scope}",
        user.name,
        field(&attributes.verb),
    )
}

/// Who decides whether a user may do what [`Route::attributes`] says.
pub trait Authorizer: Send + Sync + 'static {
    /// `Ok(true)` if allowed, `Ok(false)` if not, `Err` if no answer could be had (the
    /// caller then refuses: fail closed).
    fn allowed(
        &self,
        user: &UserInfo,
        attributes: &ResourceAttributes,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// The API server's answer, by SubjectAccessReview.
#[derive(Clone)]
pub struct SubjectAccessReviewer {
    client: Client,
}

impl std::fmt::Debug for SubjectAccessReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectAccessReviewer")
            .finish_non_exhaustive()
    }
}

impl SubjectAccessReviewer {
    /// Reviews through `client` (needs `create` on `subjectaccessreviews`).
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// The SubjectAccessReview for `user` doing `attributes`.
pub fn review_for(user: &UserInfo, attributes: &ResourceAttributes) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: user.uid.clone(),
            groups: Some(user.groups.clone()),
            extra: Some(
                user.extra
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<BTreeMap<_, _>>(),
            )
            .filter(|e| !e.is_empty()),
            resource_attributes: Some(attributes.clone()),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

impl Authorizer for SubjectAccessReviewer {
    async fn allowed(&self, user: &UserInfo, attributes: &ResourceAttributes) -> Result<bool> {
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let review = api
            .create(&PostParams::default(), &review_for(user, attributes))
            .await?;
        Ok(review.status.is_some_and(|s| s.allowed))
    }
}

#[cfg(test)]
#[path = "authz_tests.rs"]
mod tests;
