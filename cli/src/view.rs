//! `ls`, `describe`, `hosts`, and the decisions `approve`, `deny`, `revoke`: read what the user
//! may read and print it like kubectl (`-o json|yaml|wide`), or set the decision annotation
//! as the user so admission decides.

use gatehouse_crds::{AccessRequest, Phase, contract::annotations, policy};
use kube::ResourceExt;

use crate::{
    cluster::Cluster,
    error::{Error, Result},
};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table.
    Table,
    /// A wider table.
    Wide,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

fn phase(r: &AccessRequest) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}"))
}

fn requester(r: &AccessRequest) -> String {
    r.spec
        .requester
        .as_ref()
        .map(|q| q.username.clone())
        .unwrap_or_default()
}

/// Print `items` as `output` says.
pub fn print_requests(items: &[AccessRequest], output: Output) -> Result<()> {
    match output {
        Output::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            println!(
                "{}",
                serde_json::to_string_pretty(&list).map_err(|e| Error::Format(e.to_string()))?
            );
        }
        Output::Yaml => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            print!(
                "{}",
                serde_saphyr::to_string(&list).map_err(|e| Error::Format(e.to_string()))?
            );
        }
        Output::Table | Output::Wide => {
            let wide = output == Output::Wide;
            let mut rows = vec![{
                let mut h = vec!["NAME", "REQUESTER", "TARGET", "LOGIN", "PHASE", "EXPIRES"];
                if wide {
                    h.extend(["POLICY", "APPROVALS", "REASON"]);
                }
                h.into_iter().map(str::to_owned).collect::<Vec<_>>()
            }];
            for r in items {
                let status = r.status.clone().unwrap_or_default();
                let target = match &r.spec.target.host {
                    Some(h) => format!("{}/{h}", r.spec.target.host_group),
                    None => r.spec.target.host_group.clone(),
                };
                let mut row = vec![
                    r.name_any(),
                    requester(r),
                    target,
                    r.spec.login.clone(),
                    phase(r),
                    status
                        .valid_before
                        .map(|t| t.0.to_string())
                        .unwrap_or_else(|| "-".to_owned()),
                ];
                if wide {
                    row.push(status.policy.unwrap_or_default());
                    row.push(
                        status
                            .approvals
                            .iter()
                            .map(|a| a.user.clone())
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                    row.push(r.spec.reason.clone().unwrap_or_default());
                }
                rows.push(row);
            }
            print_table(&rows);
        }
    }
    Ok(())
}

fn print_table(rows: &[Vec<String>]) {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

/// Which requests `ls` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The user's.
    Mine,
    /// Everyone's in the namespace.
    All,
    /// Pending ones the user may approve.
    ToApprove,
}

/// `ls`.
pub async fn ls(cluster: &Cluster, which: Which, output: Output) -> Result<()> {
    let me = cluster.whoami().await?;
    let all = cluster.list_requests().await?;
    let mut shown = Vec::new();
    for r in all {
        let keep = match which {
            Which::All => true,
            Which::Mine => requester(&r) == me.username,
            Which::ToApprove => {
                let pending = r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Pending);
                let policy = r.status.as_ref().and_then(|s| s.policy.clone());
                match policy {
                    Some(policy) if pending && requester(&r) != me.username => {
                        cluster.may_approve(&policy).await?
                    }
                    _ => false,
                }
            }
        };
        if keep {
            shown.push(r);
        }
    }
    print_requests(&shown, output)
}

/// `describe NAME`: the request and its timeline.
pub async fn describe(cluster: &Cluster, name: &str, output: Output) -> Result<()> {
    let r = cluster.request(name).await?;
    if matches!(output, Output::Json | Output::Yaml) {
        let text = if output == Output::Json {
            serde_json::to_string_pretty(&r).map_err(|e| Error::Format(e.to_string()))?
        } else {
            serde_saphyr::to_string(&r).map_err(|e| Error::Format(e.to_string()))?
        };
        println!("{}", text.trim_end());
        return Ok(());
    }
    print!("{}", timeline(&r));
    Ok(())
}

/// The human description of a request: what it asks, then what happened, in order.
pub fn timeline(r: &AccessRequest) -> String {
    let status = r.status.clone().unwrap_or_default();
    let mut out = format!(
        "Name:       {}/{}\nRequester:  {}\nTarget:     {}{}\nLogin:      {}\nDuration:   {} (granted {})\nReason:     {}\nPolicy:     {}\nPhase:      {}\n",
        r.namespace().unwrap_or_default(),
        r.name_any(),
        requester(r),
        r.spec.target.host_group,
        r.spec
            .target
            .host
            .as_ref()
            .map(|h| format!("/{h}"))
            .unwrap_or_default(),
        r.spec.login,
        r.spec.duration,
        status
            .granted_duration
            .clone()
            .unwrap_or_else(|| "-".into()),
        r.spec.reason.clone().unwrap_or_else(|| "-".into()),
        status.policy.clone().unwrap_or_else(|| "-".into()),
        phase(r),
    );
    if let Some(line) = crate::request::approvers_line(&status)
        && status.phase == Some(Phase::Pending)
    {
        out.push_str(&format!(
            "Approvers:  {}\n",
            line.trim_start_matches("who can approve: ")
        ));
    }
    let mut events: Vec<(String, String)> = Vec::new();
    if let Some(t) = &r.metadata.creation_timestamp {
        events.push((t.0.to_string(), format!("created by {}", requester(r))));
    }
    for a in &status.approvals {
        events.push((
            a.time.0.to_string(),
            format!(
                "approved by {}{}",
                a.user,
                a.message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        ));
    }
    for c in &status.conditions {
        let what = match (c.type_.as_str(), c.reason.as_str()) {
            ("Denied", _) => format!("denied: {}", c.message),
            ("Ready", "Issued") => format!(
                "issued: serial {} until {}",
                status.serial.clone().unwrap_or_default(),
                status
                    .valid_before
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default()
            ),
            ("Ready", reason @ ("Revoked" | "Expired" | "Failed")) => {
                format!("{}: {}", reason.to_lowercase(), c.message)
            }
            _ => continue,
        };
        events.push((c.last_transition_time.0.to_string(), what));
    }
    for s in &status.sessions {
        let recording = s
            .recording
            .as_ref()
            .map(|rec| format!(", recording {} (sha256 {})", rec.key, rec.sha256))
            .unwrap_or_default();
        events.push((
            s.start_time.0.to_string(),
            format!(
                "session {} to {} as {}{}{}",
                s.id,
                s.host,
                s.login,
                s.end_time
                    .as_ref()
                    .map(|t| format!(", ended {}", t.0))
                    .unwrap_or_else(|| ", live".into()),
                recording
            ),
        ));
    }
    events.sort();
    out.push_str("Timeline:\n");
    for (time, what) in events {
        out.push_str(&format!("  {time}  {what}\n"));
    }
    out
}

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Approve.
    Approve,
    /// Deny.
    Deny,
    /// Revoke.
    Revoke,
}

impl Decision {
    fn annotation(self) -> &'static str {
        match self {
            Self::Approve => annotations::APPROVE,
            Self::Deny => annotations::DENY,
            Self::Revoke => annotations::REVOKE,
        }
    }
}

/// `approve|deny|revoke NAME --reason`.
pub async fn decide(cluster: &Cluster, name: &str, decision: Decision, reason: &str) -> Result<()> {
    let r = cluster
        .annotate(name, decision.annotation(), reason)
        .await?;
    let after = match decision {
        Decision::Approve => "approved",
        Decision::Deny => "denied",
        Decision::Revoke => "revoked",
    };
    println!(
        "AccessRequest {}/{} {after} ({})",
        cluster.namespace,
        r.name_any(),
        phase(&r)
    );
    Ok(())
}

/// `revoke --user U --all`: revoke every live request of `user` the caller may revoke,
/// reporting each.
pub async fn revoke_all(cluster: &Cluster, user: &str, reason: &str) -> Result<()> {
    let live: Vec<AccessRequest> = cluster
        .list_requests()
        .await?
        .into_iter()
        .filter(|r| requester(r) == user)
        .filter(|r| {
            let p = r.status.as_ref().and_then(|s| s.phase);
            p.is_none() || p.is_some_and(|p| !p.is_terminal())
        })
        .collect();
    if live.is_empty() {
        println!("no live AccessRequests of {user} in {}", cluster.namespace);
        return Ok(());
    }
    let mut failed = 0;
    for r in live {
        let name = r.name_any();
        match cluster.annotate(&name, annotations::REVOKE, reason).await {
            Ok(_) => println!("revoked {}/{name}", cluster.namespace),
            Err(e) => {
                failed += 1;
                println!("not revoked {}/{name}: {e}", cluster.namespace);
            }
        }
    }
    if failed > 0 {
        return Err(Error::PartialRevoke(failed));
    }
    Ok(())
}

/// `hosts`: what the user can request, from the policies naming them.
pub async fn hosts(cluster: &Cluster, output: Output) -> Result<()> {
    let me = cluster.whoami().await?;
    let groups = cluster.host_groups().await?;
    let policies = cluster.policies().await?;
    let mut rows = vec![
        ["HOSTGROUP", "HOSTS", "LOGINS", "MAX", "APPROVALS", "POLICY"]
            .map(str::to_owned)
            .to_vec(),
    ];
    let mut json_rows = Vec::new();
    for p in policies
        .iter()
        .filter(|p| policy::names_requester(p, &cluster.namespace, &me))
    {
        for g in groups
            .iter()
            .filter(|g| policy::selector_matches(&p.spec.host_selector, g.labels()))
        {
            let hosts: Vec<String> = g.spec.hosts.iter().map(|h| h.name.clone()).collect();
            json_rows.push(serde_json::json!({
                "hostGroup": g.name_any(), "hosts": hosts, "logins": p.spec.logins,
                "maxDuration": p.spec.max_duration, "approvals": p.spec.approval.required,
                "policy": p.name_any(),
            }));
            rows.push(vec![
                g.name_any(),
                hosts.join(","),
                p.spec.logins.join(","),
                p.spec.max_duration.clone(),
                p.spec.approval.required.to_string(),
                p.name_any(),
            ]);
        }
    }
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json_rows).map_err(|e| Error::Format(e.to_string()))?
        ),
        Output::Yaml => print!(
            "{}",
            serde_saphyr::to_string(&json_rows).map_err(|e| Error::Format(e.to_string()))?
        ),
        Output::Table | Output::Wide => print_table(&rows),
    }
    Ok(())
}
