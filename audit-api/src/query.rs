//! Query strings of list requests, parsed strictly. Pure: data comes from the request's query
//! (client-written, so every unknown key, operator or value is an error naming it); it goes to
//! the [`crate::index`] queries as [`SessionField`]s and an [`EventQuery`].

use gatehouse_crds::audit::EventType;
use jiff::Timestamp;

use crate::index::{EventKey, EventQuery, SessionField};

/// Most requirements in one field selector, and most `type` values in one query.
pub const MAX_TERMS: usize = 32;
/// Most items in one page of an `auditevents` list (and what `limit` is capped at); a longer
/// list ends with `metadata.continue`.
pub const MAX_PAGE: usize = 10_000;

/// Why a query was refused (a 400, or a 405 for `watch`): a decision, not an error of this
/// server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// A bad parameter or value; the message names it.
    Invalid(String),
    /// `watch=true`: these resources cannot be watched.
    Watch,
}

impl QueryError {
    /// What to tell the client.
    pub fn message(&self) -> String {
        match self {
            QueryError::Invalid(message) => message.clone(),
            QueryError::Watch => "watch is not supported on audit.gatehouse.dev".to_owned(),
        }
    }
}

/// Parameters every Kubernetes client may send on a list, which these lists ignore.
const IGNORED: &[&str] = &[
    "resourceVersion",
    "resourceVersionMatch",
    "timeout",
    "timeoutSeconds",
    "pretty",
    "allowWatchBookmarks",
    "sendInitialEvents",
];

fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The common checks: `watch` refused, label selectors refused (these objects carry no
/// labels), known list parameters ignored (`limit` and `continue` too, except where a list
/// allows them), `allowed` returned, anything else refused.
fn common(query: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, String)>, QueryError> {
    let mut kept = Vec::new();
    for (key, value) in pairs(query) {
        match key.as_str() {
            "watch" if matches!(value.as_str(), "" | "false" | "0") => {}
            "watch" => return Err(QueryError::Watch),
            "labelSelector" if value.is_empty() => {}
            "labelSelector" => {
                return Err(QueryError::Invalid(
                    "labelSelector: these objects have no labels".to_owned(),
                ));
            }
            k if allowed.contains(&k) => kept.push((key, value)),
            k if IGNORED.contains(&k) || k == "limit" || k == "continue" => {}
            k => {
                return Err(QueryError::Invalid(format!(
                    "unknown query parameter {k:?}"
                )));
            }
        }
    }
    Ok(kept)
}

/// A get (one session, its recording or events): only the common parameters.
pub fn get_query(query: Option<&str>) -> Result<(), QueryError> {
    common(query, &[]).map(|_| ())
}

/// The field selector of a `sessions` list: `spec.user`, `spec.host` and `spec.request`
/// with `=` or `==`, comma-separated.
pub fn session_fields(query: Option<&str>) -> Result<Vec<SessionField>, QueryError> {
    let mut fields = Vec::new();
    for (_, selector) in common(query, &["fieldSelector"])? {
        fields.extend(parse_field_selector(&selector)?);
    }
    if fields.len() > MAX_TERMS {
        return Err(QueryError::Invalid(format!(
            "fieldSelector: at most {MAX_TERMS} requirements"
        )));
    }
    Ok(fields)
}

/// Parse one field selector (empty: no requirement).
pub fn parse_field_selector(selector: &str) -> Result<Vec<SessionField>, QueryError> {
    let mut fields = Vec::new();
    if selector.is_empty() {
        return Ok(fields);
    }
    for term in selector.split(',') {
        let invalid = |m: String| QueryError::Invalid(format!("fieldSelector: {m}"));
        let Some(at) = term.find(['=', '!']) else {
            return Err(invalid(format!("{term:?} has no operator (use key=value)")));
        };
        let (key, rest) = term.split_at(at);
        let key = key.trim();
        let value = if let Some(v) = rest.strip_prefix("==") {
            v
        } else if let Some(v) = rest.strip_prefix('=') {
            v
        } else {
            return Err(invalid(format!(
                "{key:?}: only = and == are supported (not {:?})",
                rest.get(..2).unwrap_or(rest)
            )));
        };
        if value.contains(['=', '!']) {
            return Err(invalid(format!("{key:?}: the value holds an operator")));
        }
        let value = value.to_owned();
        fields.push(match key {
            "spec.user" => SessionField::User(value),
            "spec.host" => SessionField::Host(value),
            "spec.request" => SessionField::Request(value),
            other => {
                return Err(invalid(format!(
                    "field {other:?} is not supported (spec.user, spec.host, spec.request)"
                )));
            }
        });
    }
    Ok(fields)
}

/// The filters of an `auditevents` list: `user`, `type` (repeated or comma-separated),
/// `from` (inclusive) and `to` (exclusive) in RFC 3339, and the page: `limit` (at most
/// [`MAX_PAGE`]) and `continue`. `namespace` comes from the path. Returns the filter and the
/// page size.
pub fn event_query(
    query: Option<&str>,
    namespace: Option<&str>,
) -> Result<(EventQuery, usize), QueryError> {
    let mut page = MAX_PAGE;
    let mut out = EventQuery {
        namespace: namespace.map(str::to_owned),
        ..EventQuery::default()
    };
    let invalid = |m: String| QueryError::Invalid(m);
    let allowed = [
        "user",
        "type",
        "from",
        "to",
        "fieldSelector",
        "limit",
        "continue",
    ];
    for (key, value) in common(query, &allowed)? {
        match key.as_str() {
            "limit" => {
                let limit: usize = value
                    .parse()
                    .map_err(|_| invalid(format!("limit: {value:?} is not a number")))?;
                if limit > 0 {
                    page = limit.min(MAX_PAGE);
                }
            }
            "continue" if value.is_empty() => {}
            "continue" => {
                let after = EventKey::from_token(&value).ok_or_else(|| {
                    invalid("continue: not a token this server issued".to_owned())
                })?;
                out.after = Some(after);
            }
            "fieldSelector" if value.is_empty() => {}
            "fieldSelector" => {
                return Err(invalid(
                    "fieldSelector is not supported on auditevents (use user, type, from, to)"
                        .to_owned(),
                ));
            }
            "user" if out.user.is_some() => return Err(invalid("user: given twice".to_owned())),
            "user" => out.user = Some(value),
            "type" => {
                for name in value.split(',').filter(|t| !t.is_empty()) {
                    let type_: EventType = serde_json::from_value(name.into())
                        .map_err(|_| invalid(format!("type: unknown event type {name:?}")))?;
                    if !out.types.contains(&type_) {
                        out.types.push(type_);
                    }
                    if out.types.len() > MAX_TERMS {
                        return Err(invalid(format!("type: at most {MAX_TERMS} types")));
                    }
                }
            }
            "from" | "to" => {
                let time: Timestamp = value
                    .parse()
                    .map_err(|_| invalid(format!("{key}: {value:?} is not an RFC 3339 time")))?;
                let slot = if key == "from" {
                    &mut out.from
                } else {
                    &mut out.to
                };
                if slot.replace(time).is_some() {
                    return Err(invalid(format!("{key}: given twice")));
                }
            }
            _ => {}
        }
    }
    Ok((out, page))
}

#[cfg(test)]
#[path = "query_tests.rs"]
mod tests;
