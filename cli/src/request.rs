//! `request` and `wait`: check the ask against what the user can see ([`crate::plan`]), create
//! one AccessRequest as the user, wait for it with a progress line, and write the certificate
//! next to the key.

use std::{io::Write, path::PathBuf, time::Duration};

use gatehouse_crds::{AccessRequest, Phase, duration};
use kube::{ResourceExt, api::PostParams};
use serde_json::json;

use crate::{
    cluster::Cluster,
    error::{Error, Result},
    keys::{self, Key},
    plan::{self, Plan, Target, Wish},
};

/// What `request` was asked.
#[derive(Debug, Clone)]
pub struct Ask {
    /// HOST, GROUP/HOST or GROUP.
    pub target: String,
    /// `--login`.
    pub login: Option<String>,
    /// `--for`.
    pub duration: String,
    /// `--reason`.
    pub reason: Option<String>,
    /// `--key`.
    pub key: Option<PathBuf>,
    /// `--no-wait`.
    pub no_wait: bool,
    /// `--name`: the request's name (default: generated from user and host).
    pub name: Option<String>,
}

/// The result of a successful request.
#[derive(Debug, Clone)]
pub struct Granted {
    /// The request.
    pub request: AccessRequest,
}

/// Check, create, and (unless `--no-wait`) wait.
pub async fn request(cluster: &Cluster, ask: &Ask) -> Result<Option<Granted>> {
    let me = cluster.whoami().await?;
    let groups = cluster.host_groups().await?;
    let policies = cluster.policies().await?;
    let target = plan::resolve(&groups, &cluster.namespace, &ask.target)?;
    let wish = Wish {
        login: ask.login.as_deref(),
        duration: &ask.duration,
        reason: ask.reason.as_deref(),
    };
    let planned = plan::plan(&groups, &policies, &cluster.namespace, &me, &target, &wish)?;
    let key = keys::choose(ask.key.as_deref())?;
    let created = create(cluster, &target, &planned, ask, &key, &me.username).await?;
    let name = created.name_any();
    eprintln!(
        "AccessRequest {}/{name} created: {} as {} for {} under AccessPolicy {} ({} approval{} needed)",
        cluster.namespace,
        target.display(),
        planned.login,
        duration::format(planned.duration),
        planned.policy,
        planned.required_approvals,
        if planned.required_approvals == 1 {
            ""
        } else {
            "s"
        },
    );
    if ask.no_wait {
        println!("{name}");
        eprintln!("not waiting; `kubectl gatehouse wait {name}` picks it up");
        return Ok(None);
    }
    let request = wait(cluster, &name).await?;
    finish(&request, &key)?;
    Ok(Some(Granted { request }))
}

async fn create(
    cluster: &Cluster,
    target: &Target,
    planned: &Plan,
    ask: &Ask,
    key: &Key,
    user: &str,
) -> Result<AccessRequest> {
    let mut spec = json!({
        "target": {"hostGroup": target.host_group},
        "login": planned.login,
        "duration": ask.duration,
        "publicKey": key.line,
    });
    if let Some(host) = &target.host {
        spec["target"]["host"] = json!(host);
    }
    if let Some(reason) = &ask.reason {
        spec["reason"] = json!(reason);
    }
    let metadata = match &ask.name {
        Some(name) => json!({"name": name}),
        None => json!({"generateName": dns_prefix(&[
            user,
            target.host.as_deref().unwrap_or(&target.host_group),
        ])}),
    };
    let object: AccessRequest = serde_json::from_value(json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "AccessRequest",
        "metadata": metadata,
        "spec": spec,
    }))
    .map_err(|e| Error::Format(e.to_string()))?;
    cluster
        .requests()
        .create(&PostParams::default(), &object)
        .await
        .map_err(|e| Error::api("creating the AccessRequest", e))
}

/// `alice-db1-`: a generateName from the parts, DNS-safe and short.
pub fn dns_prefix(parts: &[&str]) -> String {
    let mut out = String::new();
    for part in parts {
        for c in part.chars() {
            let c = c.to_ascii_lowercase();
            out.push(if c.is_ascii_alphanumeric() { c } else { '-' });
        }
        out.push('-');
    }
    let mut out: String = out.trim_start_matches('-').chars().take(40).collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    if !out.ends_with('-') {
        out.push('-');
    }
    if out == "-" {
        "request-".to_owned()
    } else {
        out
    }
}

/// Wait until `name` is Issued (returned) or ends otherwise (an error saying why). Ctrl-C
/// stops waiting and leaves the request.
pub async fn wait(cluster: &Cluster, name: &str) -> Result<AccessRequest> {
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut last_line = String::new();
    let mut named_approvers = false;
    loop {
        let request = cluster.request(name).await?;
        let status = request.status.clone().unwrap_or_default();
        let phase = status.phase.unwrap_or(Phase::Pending);
        if phase == Phase::Pending
            && !named_approvers
            && let Some(line) = approvers_line(&status)
        {
            if !last_line.is_empty() {
                eprintln!();
                last_line.clear();
            }
            eprintln!("{line}");
            named_approvers = true;
        }
        match phase {
            Phase::Issued if status.certificate.is_some() => {
                eprintln!();
                return Ok(request);
            }
            Phase::Denied => {
                eprintln!();
                return Err(denied(&request));
            }
            p if p.is_terminal() => {
                eprintln!();
                return Err(Error::Ended {
                    name: name.to_owned(),
                    phase: format!("{p:?}"),
                    message: ready_message(&request),
                });
            }
            _ => {}
        }
        let line = format!(
            "waiting for {name}: {:?}, {} approval(s) so far (Ctrl-C stops waiting; the request stays)",
            phase,
            status.approvals.len()
        );
        if line != last_line {
            eprint!("\r{line}");
            std::io::stderr().flush().ok();
            last_line = line;
        }
        tokio::select! {
            _ = &mut interrupt => {
                eprintln!();
                return Err(Error::Interrupted { name: name.to_owned() });
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// `who can approve: …`, from `status.eligibleApprovers` (computed by the operator from RBAC).
pub fn approvers_line(status: &gatehouse_crds::AccessRequestStatus) -> Option<String> {
    let approvers = status.eligible_approvers.as_ref()?;
    let policy = status.policy.as_deref().unwrap_or_default();
    if approvers.users.is_empty() && approvers.groups.is_empty() {
        return Some(format!(
            "who can approve: nobody is granted the RBAC verb approve on accesspolicies/{policy}; ask an admin"
        ));
    }
    let mut parts = Vec::new();
    if !approvers.users.is_empty() {
        parts.push(format!("users {}", approvers.users.join(", ")));
    }
    if !approvers.groups.is_empty() {
        parts.push(format!("groups {}", approvers.groups.join(", ")));
    }
    let more = if approvers.truncated { " and more" } else { "" };
    Some(format!("who can approve: {}{more}", parts.join("; ")))
}

fn ready_message(request: &AccessRequest) -> String {
    request
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn denied(request: &AccessRequest) -> Error {
    let annotation = request
        .annotations()
        .get(gatehouse_crds::contract::annotations::DENY)
        .cloned();
    let condition = request
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Denied"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    Error::Denied {
        name: request.name_any(),
        by: String::new(),
        reason: if condition.is_empty() {
            annotation.unwrap_or_default()
        } else {
            condition
        },
    }
}

/// Write the certificate next to the key and say what it grants.
pub fn finish(request: &AccessRequest, key: &Key) -> Result<PathBuf> {
    let status = request.status.clone().unwrap_or_default();
    let certificate = status.certificate.unwrap_or_default();
    let path = key.certificate_path();
    keys::write(&path, &format!("{}\n", certificate.trim()), 0o644)?;
    let ttl = status
        .valid_before
        .map(|t| {
            let left = t.0.as_second() - jiff::Timestamp::now().as_second();
            duration::format(Duration::from_secs(u64::try_from(left.max(0)).unwrap_or(0)))
        })
        .unwrap_or_default();
    eprintln!(
        "Issued: certificate written to {} ttl={ttl} principals=[{}] serial={}",
        path.display(),
        status.principals.join(","),
        status.serial.unwrap_or_default()
    );
    Ok(path)
}

/// `wait NAME`: wait for an existing request and write its certificate next to `key`.
pub async fn wait_command(
    cluster: &Cluster,
    name: &str,
    key: Option<&std::path::Path>,
) -> Result<()> {
    let request = wait(cluster, name).await?;
    let key = match key {
        Some(path) => keys::read(path)?,
        None => keys::choose(None)?,
    };
    if key.line.split_whitespace().nth(1) != request.spec.public_key.split_whitespace().nth(1) {
        return Err(Error::Usage(format!(
            "AccessRequest {name} certifies another key than {}: pass --key with the key it was requested for",
            key.public_path.display()
        )));
    }
    finish(&request, &key).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::dns_prefix;

    #[test]
    fn generate_names_are_dns_labels() {
        assert_eq!(dns_prefix(&["alice", "db1"]), "alice-db1-");
        assert_eq!(
            dns_prefix(&["system:serviceaccount:ns:sa", "h"]),
            "system-serviceaccount-ns-sa-h-"
        );
        assert_eq!(dns_prefix(&["Bob@Example.com", "x"]), "bob-example-com-x-");
        assert!(dns_prefix(&[&"a".repeat(100), "b"]).len() <= 41);
    }
}
