//! `kubectl gatehouse sessions`, `audit`, `audit verify` and `replay SESSION`: the auditor's
//! commands. Data comes from the aggregated API `audit.gatehouse.dev/v1alpha1` through the
//! user's kubeconfig (raw requests on the contract's paths, so the API server authenticates
//! and the audit API's SubjectAccessReview decides, exactly as for `kubectl get --raw`), and,
//! for `audit verify` only, from the recording store itself with read-only credentials
//! ([`store`]). It goes to standard output as tables or the API's JSON/YAML, or to the
//! sanitising player (`replay`), after the downloaded cast's SHA-256 matched the session's.

pub mod query;
mod store;
pub mod table;
pub mod verify;

use std::io::Write;

use futures::AsyncReadExt;
use jiff::Timestamp;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    cluster::Cluster,
    error::{Error, Result},
    view::Output,
};
use query::{EventFilter, Scope, SessionFilter};
pub use store::StoreFlags;

/// The longest list response read (sessions or events): a bound on what the API can make us
/// hold; narrow the query (`--from`, `--user`, `-n`) past it.
const MAX_LIST_BYTES: usize = 256 * 1024 * 1024;
/// The most list items gathered across pages (`metadata.continue`), for the same reason.
const MAX_LIST_ITEMS: usize = 1_000_000;

fn api_error(action: String, error: kube::Error) -> Error {
    if let kube::Error::Api(status) = &error
        && matches!(status.code, 404 | 503)
        && status
            .message
            .contains("the server could not find the requested resource")
    {
        return Error::Api {
            action,
            message: format!(
                "{} (is the audit API installed? `kubectl get apiservice v1alpha1.audit.gatehouse.dev`)",
                status.message
            ),
        };
    }
    Error::api(action, error)
}

async fn get_json(cluster: &Cluster, path: &str, action: String) -> Result<Value> {
    let request = http::Request::get(path)
        .header("Accept", "application/json")
        .body(Vec::new())
        .map_err(|e| Error::Usage(format!("{path}: {e}")))?;
    let text = cluster
        .client
        .request_text(request)
        .await
        .map_err(|e| api_error(action.clone(), e))?;
    if text.len() > MAX_LIST_BYTES {
        return Err(Error::Api {
            action,
            message: format!("the answer is over {MAX_LIST_BYTES} bytes: narrow the query"),
        });
    }
    serde_json::from_str(&text).map_err(|e| Error::Api {
        action,
        message: format!("the answer is not JSON: {e}"),
    })
}

/// Every item of a paged list at `path`, following `metadata.continue` up to
/// [`MAX_LIST_ITEMS`] (an error past it: a partial trail is not shown as the whole).
async fn get_all(cluster: &Cluster, path: &str, action: &str) -> Result<Value> {
    let mut items: Vec<Value> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = get_json(
            cluster,
            &query::next_page(path, token.as_deref()),
            action.to_owned(),
        )
        .await?;
        if let Some(more) = page.get("items").and_then(Value::as_array) {
            items.extend(more.iter().cloned());
        }
        if items.len() > MAX_LIST_ITEMS {
            return Err(Error::Api {
                action: action.to_owned(),
                message: format!(
                    "more than {MAX_LIST_ITEMS} items: narrow the query (--from/--to, --user, -n)"
                ),
            });
        }
        let next = page
            .pointer("/metadata/continue")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        match next {
            // A server that hands back the same token would loop forever.
            Some(next) if token.as_deref() != Some(next.as_str()) => token = Some(next),
            _ => break,
        }
    }
    Ok(serde_json::json!({ "items": items }))
}

fn print_list(kind: &str, items: Vec<Value>, output: Output) -> Result<()> {
    let list = serde_json::json!({
        "apiVersion": "audit.gatehouse.dev/v1alpha1",
        "kind": kind,
        "metadata": {},
        "items": items,
    });
    let text = match output {
        Output::Yaml => serde_saphyr::to_string(&list).map_err(|e| Error::Format(e.to_string()))?,
        _ => {
            let mut text =
                serde_json::to_string_pretty(&list).map_err(|e| Error::Format(e.to_string()))?;
            text.push('\n');
            text
        }
    };
    print!("{text}");
    Ok(())
}

fn scope(cluster: &Cluster, all_namespaces: bool) -> Result<Scope> {
    if all_namespaces {
        return Ok(Scope::All);
    }
    query::check_namespace(&cluster.namespace).map_err(|e| Error::Usage(e.to_string()))?;
    Ok(Scope::Namespace(cluster.namespace.clone()))
}

/// `kubectl gatehouse sessions`.
pub async fn sessions(
    cluster: &Cluster,
    all_namespaces: bool,
    filter: &SessionFilter,
    since: Option<&str>,
    output: Output,
) -> Result<()> {
    let scope = scope(cluster, all_namespaces)?;
    let since = since
        .map(|s| query::parse_time("--since", s, Timestamp::now()))
        .transpose()
        .map_err(|e| Error::Usage(e.to_string()))?;
    let path = query::sessions_path(&scope, filter);
    let list = get_all(cluster, &path, "listing sessions").await?;
    let items = table::started_since(table::list_items(&list), since);
    match output {
        Output::Json | Output::Yaml => print_list(
            "SessionList",
            items.into_iter().map(|(v, _)| v).collect(),
            output,
        ),
        Output::Table | Output::Wide => {
            let sessions: Vec<_> = items.into_iter().map(|(_, s)| s).collect();
            if sessions.is_empty() {
                eprintln!("No sessions found.");
                return Ok(());
            }
            let rows = table::session_rows(&sessions, scope == Scope::All, output == Output::Wide);
            print!("{}", table::render(&rows));
            Ok(())
        }
    }
}

/// `kubectl gatehouse audit`.
pub async fn events(
    cluster: &Cluster,
    all_namespaces: bool,
    filter: &EventFilter,
    output: Output,
) -> Result<()> {
    let scope = scope(cluster, all_namespaces)?;
    let path = query::events_path(&scope, filter);
    let list = get_all(cluster, &path, "listing audit events").await?;
    let items = table::list_items::<table::ListedEvent>(&list);
    match output {
        Output::Json | Output::Yaml => print_list(
            "AuditEventList",
            items.into_iter().map(|(v, _)| v).collect(),
            output,
        ),
        Output::Table | Output::Wide => {
            let events: Vec<_> = items.into_iter().map(|(_, e)| e).collect();
            if events.is_empty() {
                eprintln!("No audit events found.");
                return Ok(());
            }
            print!(
                "{}",
                table::render(&table::event_rows(&events, output == Output::Wide))
            );
            Ok(())
        }
    }
}

/// `kubectl gatehouse audit verify`: prints the report; an error when anything failed.
pub async fn verify(
    flags: &StoreFlags,
    allow_expired: bool,
    skip_recordings: bool,
    output: Output,
) -> Result<()> {
    let store = store::open(flags)?;
    let report = store::verify(&store, allow_expired, skip_recordings).await?;
    match output {
        Output::Json | Output::Yaml => {
            let text = if output == Output::Json {
                serde_json::to_string_pretty(&report)
                    .map(|t| t + "\n")
                    .map_err(|e| Error::Format(e.to_string()))?
            } else {
                serde_saphyr::to_string(&report).map_err(|e| Error::Format(e.to_string()))?
            };
            print!("{text}");
        }
        Output::Table | Output::Wide => print!("{}", report.render()),
    }
    if report.ok() {
        Ok(())
    } else {
        Err(Error::AuditVerify(report.problems.len()))
    }
}

/// Download `session`'s recording (in the cluster's namespace) to a temporary file, checked
/// against the SHA-256 and size the session records; returns the file.
pub async fn fetch_recording(cluster: &Cluster, session: &str) -> Result<tempfile::NamedTempFile> {
    let usage = |e: query::QueryError| Error::Usage(e.to_string());
    let session_path = query::session_path(&cluster.namespace, session, None).map_err(usage)?;
    let action = format!("reading session {}/{session}", cluster.namespace);
    let value = get_json(cluster, &session_path, action.clone()).await?;
    let described: table::Session = serde_json::from_value(value).map_err(|e| Error::Api {
        action: action.clone(),
        message: format!("not a Session: {e}"),
    })?;
    let Some(recording) = described.status.recording.filter(|r| !r.sha256.is_empty()) else {
        return Err(Error::Api {
            action,
            message: "the session has no stored recording (yet)".to_owned(),
        });
    };
    let path =
        query::session_path(&cluster.namespace, session, Some("recording")).map_err(usage)?;
    let request = http::Request::get(&path)
        .body(Vec::new())
        .map_err(|e| Error::Usage(format!("{path}: {e}")))?;
    let action = format!("downloading the recording of session {session}");
    let mut body = cluster
        .client
        .request_stream(request)
        .await
        .map_err(|e| api_error(action.clone(), e))?;
    let mut file = tempfile::NamedTempFile::new().map_err(|e| Error::File {
        path: std::env::temp_dir(),
        problem: e.to_string(),
    })?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut buf).await.map_err(|e| Error::Api {
            action: action.clone(),
            message: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        total += n as u64;
        // More than the session says is already a mismatch: stop reading.
        if total > recording.bytes {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| Error::File {
            path: file.path().to_path_buf(),
            problem: e.to_string(),
        })?;
    }
    let sha256 = gatehouse_store::hex(&hasher.finalize());
    if total != recording.bytes || sha256 != recording.sha256 {
        return Err(Error::RecordingMismatch {
            session: session.to_owned(),
            expected: format!("{} ({} bytes)", recording.sha256, recording.bytes),
            found: if total > recording.bytes {
                format!("more than {} bytes", recording.bytes)
            } else {
                format!("{sha256} ({total} bytes)")
            },
        });
    }
    eprintln!(
        "gatehouse: recording of session {}/{session} verified: sha256 {sha256} ({total} bytes)",
        cluster.namespace
    );
    Ok(file)
}

/// The address `kubectl proxy` serves on, from its first line ("Starting to serve on
/// 127.0.0.1:PORT"); `None` for any other line.
pub fn proxy_address(line: &str) -> Option<&str> {
    let address = line.trim().strip_prefix("Starting to serve on ")?;
    let (host, port) = address.rsplit_once(':')?;
    (matches!(host, "127.0.0.1" | "localhost" | "[::1]") && port.parse::<u16>().is_ok())
        .then_some(address)
}

/// `kubectl gatehouse replay --web SESSION`: the session's web player page served by the
/// audit API, reached through a `kubectl proxy` on loopback as the user (the same kubeconfig
/// and context): prints its URL and serves until interrupted.
pub async fn replay_web(
    cluster: &Cluster,
    connection: &crate::cluster::Connection,
    session: &str,
) -> Result<()> {
    use tokio::io::AsyncBufReadExt;

    let usage = |e: query::QueryError| Error::Usage(e.to_string());
    // The session must exist and be readable: a clear error now, not a 403 in the browser.
    let session_path = query::session_path(&cluster.namespace, session, None).map_err(usage)?;
    get_json(
        cluster,
        &session_path,
        format!("reading session {}/{session}", cluster.namespace),
    )
    .await?;
    let page = query::session_path(&cluster.namespace, session, Some("player")).map_err(usage)?;
    let mut command = tokio::process::Command::new("kubectl");
    command.args(["proxy", "--port=0", "--address=127.0.0.1"]);
    if let Some(kubeconfig) = &connection.kubeconfig {
        command.arg(format!("--kubeconfig={}", kubeconfig.display()));
    }
    if let Some(context) = &connection.context {
        command.arg(format!("--context={context}"));
    }
    let spawn_failed = |e: std::io::Error| Error::Api {
        action: "starting kubectl proxy".to_owned(),
        message: e.to_string(),
    };
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_failed)?;
    let Some(stdout) = child.stdout.take() else {
        return Err(Error::Api {
            action: "starting kubectl proxy".to_owned(),
            message: "no output".to_owned(),
        });
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await;
    let address = match first {
        Ok(Ok(Some(line))) => proxy_address(&line).map(str::to_owned),
        _ => None,
    };
    let Some(address) = address else {
        return Err(Error::Api {
            action: "starting kubectl proxy".to_owned(),
            message: "it did not say where it serves".to_owned(),
        });
    };
    println!("http://{address}{page}");
    eprintln!("serving the player through kubectl proxy; press Ctrl-C to stop");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        status = child.wait() => match status {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(Error::Api { action: "kubectl proxy".to_owned(), message: format!("exited with {status}") }),
            Err(e) => Err(spawn_failed(e)),
        },
    }
}

#[cfg(test)]
mod web_tests {
    use super::proxy_address;

    #[test]
    fn only_a_loopback_kubectl_proxy_address_is_taken() {
        let cases = [
            (
                "Starting to serve on 127.0.0.1:41234\n",
                Some("127.0.0.1:41234"),
            ),
            ("Starting to serve on [::1]:8001", Some("[::1]:8001")),
            ("Starting to serve on 0.0.0.0:8001", None),
            ("Starting to serve on 127.0.0.1:http", None),
            ("W1203 warning: something", None),
            ("", None),
        ];
        for (line, want) in cases {
            assert_eq!(proxy_address(line), want, "{line:?}");
        }
    }
}
