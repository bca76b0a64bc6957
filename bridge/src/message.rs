//! What Slack shows for a request: the channel message (Block Kit), its fallback text, the
//! requester's DM and the deny modal. Pure.
//!
//! In: the AccessRequest (spec, status) and its governing AccessPolicy, as the watch caches hold
//! them. Out: JSON for `chat.postMessage`/`chat.update`/`views.open`. Text a requester wrote
//! (the reason) is escaped, so it can never mention `@channel` or forge a link.

use gatehouse_crds::{AccessPolicy, AccessRequest, EligibleApprovers, notify};
use serde_json::{Value, json};

/// `action_id` of the Approve button.
pub const APPROVE_ACTION: &str = "gatehouse_approve";
/// `action_id` of the Deny button.
pub const DENY_ACTION: &str = "gatehouse_deny";
/// `callback_id` of the deny modal.
pub const DENY_CALLBACK: &str = "gatehouse_deny_reason";
/// `block_id` / `action_id` of the modal's reason input.
pub const REASON_BLOCK: &str = "reason";
/// The reason input's action id.
pub const REASON_INPUT: &str = "reason_input";

/// The facts a message shows.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Namespace.
    pub namespace: String,
    /// Request name.
    pub name: String,
    /// Requester's user name.
    pub requester: String,
    /// `hostGroup` or `hostGroup/host`.
    pub target: String,
    /// Unix login.
    pub login: String,
    /// Requested duration (granted, once the operator clamped it).
    pub duration: String,
    /// Reason, if given.
    pub reason: Option<String>,
    /// Governing policy.
    pub policy: Option<String>,
    /// Approvals the policy requires.
    pub required: Option<i32>,
    /// Approvers so far.
    pub approvers: Vec<String>,
    /// Who RBAC lets approve (the operator's `status.eligibleApprovers`), if computed.
    pub eligible: Option<EligibleApprovers>,
    /// The notification stage ([`notify::stage`]).
    pub stage: String,
    /// The Ready condition's message (why it was denied, revoked, …).
    pub status_message: Option<String>,
}

impl View {
    /// The view of `request` under `policy`.
    pub fn of(request: &AccessRequest, policy: Option<&AccessPolicy>) -> Self {
        let status = request.status.as_ref();
        let target = match &request.spec.target.host {
            Some(host) => format!("{}/{host}", request.spec.target.host_group),
            None => request.spec.target.host_group.clone(),
        };
        Self {
            namespace: request.metadata.namespace.clone().unwrap_or_default(),
            name: request.metadata.name.clone().unwrap_or_default(),
            requester: request.spec.requester_name().to_owned(),
            target,
            login: request.spec.login.clone(),
            duration: status
                .and_then(|s| s.granted_duration.clone())
                .unwrap_or_else(|| request.spec.duration.clone()),
            reason: request.spec.reason.clone().filter(|r| !r.is_empty()),
            policy: status.and_then(|s| s.policy.clone()),
            required: policy.map(|p| p.spec.approval.required),
            approvers: status
                .map(|s| s.approvals.iter().map(|a| a.user.clone()).collect())
                .unwrap_or_default(),
            eligible: status.and_then(|s| s.eligible_approvers.clone()),
            stage: notify::stage(status),
            status_message: status
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|c| c.message.clone())
                .filter(|m| !m.is_empty()),
        }
    }

    /// `ns/name`: the buttons' value, so a click names the request it was shown for.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn state_line(&self) -> String {
        let approvals = format!(
            "{} of {} approvals",
            self.approvers.len(),
            self.required
                .map_or_else(|| "?".to_owned(), |r| r.to_string())
        );
        let by = if self.approvers.is_empty() {
            String::new()
        } else {
            format!(" (by {})", escape(&self.approvers.join(", ")))
        };
        let state = match self.stage.as_str() {
            s if s.starts_with("pending/") || s == "new" => "Pending",
            "issued" => "Issued",
            "denied" => "Denied",
            "revoked" => "Revoked",
            "expired" => "Expired",
            _ => "Failed",
        };
        let detail = match (&self.status_message, notify::is_decided(&self.stage)) {
            (Some(message), true) => format!(": {}", escape(message)),
            _ => String::new(),
        };
        let who = match (&self.eligible, state) {
            (Some(eligible), "Pending") => {
                format!(" · can approve: {}", escape(&can_approve(eligible)))
            }
            _ => String::new(),
        };
        format!("*{state}* · {approvals}{by}{who}{detail}")
    }
}

/// `bob, carol, group sre-leads` (`…` when the operator truncated the lists; `nobody` when RBAC
/// grants the approve verb to no one, which the policy's owner should hear about).
fn can_approve(eligible: &EligibleApprovers) -> String {
    let mut names: Vec<String> = eligible.users.clone();
    names.extend(eligible.groups.iter().map(|g| format!("group {g}")));
    if eligible.truncated {
        names.push("…".to_owned());
    }
    if names.is_empty() {
        "nobody".to_owned()
    } else {
        names.join(", ")
    }
}

/// Escape text for Slack mrkdwn (`&`, `<`, `>`), so user text cannot mention or link.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `ns/name` back from a button value or modal metadata.
pub fn parse_key(value: &str) -> Option<(String, String)> {
    let (ns, name) = value.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    (ok(ns) && ok(name)).then(|| (ns.to_owned(), name.to_owned()))
}

/// The fallback text (notifications, screen readers).
pub fn text(view: &View) -> String {
    format!(
        "AccessRequest {} by {}: {} on {} for {} — {}",
        view.key(),
        escape(&view.requester),
        escape(&view.login),
        escape(&view.target),
        escape(&view.duration),
        view.state_line().replace('*', "")
    )
}

/// The channel message: who asks for what and why, its state, and — while it waits for
/// approvals — Approve and Deny buttons. `notice` (a refused click, an unmapped user) is shown
/// under it until the next update.
pub fn blocks(view: &View, notice: Option<&str>) -> Value {
    let field = |label: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{label}*\n{}", escape(value))});
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!(
            "*{}* requests SSH access: `{}`", escape(&view.requester), escape(&view.key()))}}),
        json!({"type": "section", "fields": [
            field("Host", &view.target),
            field("Login", &view.login),
            field("Duration", &view.duration),
            field("Policy", view.policy.as_deref().unwrap_or("(not matched yet)")),
        ]}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!(
            "*Reason*\n{}", escape(view.reason.as_deref().unwrap_or("(none given)")))}}),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": view.state_line()}]}),
    ];
    if view.stage.starts_with("pending/") {
        blocks.push(json!({"type": "actions", "block_id": "gatehouse_decision", "elements": [
            {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": view.key(),
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": DENY_ACTION, "style": "danger", "value": view.key(),
             "text": {"type": "plain_text", "text": "Deny"}},
        ]}));
    }
    if let Some(notice) = notice {
        blocks.push(json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!(":warning: {}", escape(notice))}]}));
    }
    Value::Array(blocks)
}

/// The DM to the requester once their request is decided (or ends).
pub fn dm_text(view: &View) -> String {
    format!(
        "Your AccessRequest {} ({} on {}): {}",
        view.key(),
        escape(&view.login),
        escape(&view.target),
        view.state_line().replace('*', "")
    )
}

/// The modal a Deny click opens; `private_metadata` carries the request and the message.
pub fn deny_modal(key: &str, channel: &str, ts: &str) -> Value {
    json!({
        "type": "modal",
        "callback_id": DENY_CALLBACK,
        "private_metadata": json!({"request": key, "channel": channel, "ts": ts}).to_string(),
        "title": {"type": "plain_text", "text": "Deny access"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input", "block_id": REASON_BLOCK,
            "label": {"type": "plain_text", "text": format!("Why deny {key}?")},
            "element": {"type": "plain_text_input", "action_id": REASON_INPUT, "multiline": true, "max_length": 1000},
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(stage: &str) -> View {
        View {
            namespace: "team".into(),
            name: "r1".into(),
            requester: "alice".into(),
            target: "db".into(),
            login: "ubuntu".into(),
            duration: "30m".into(),
            reason: Some("<!channel> see <http://evil|docs> & more".into()),
            policy: Some("oncall".into()),
            required: Some(2),
            approvers: vec!["bob".into()],
            eligible: Some(EligibleApprovers {
                users: vec!["carol".into()],
                groups: vec!["sre-leads".into()],
                truncated: false,
            }),
            stage: stage.into(),
            status_message: Some("revoked by bob: done".into()),
        }
    }

    #[test]
    fn pending_messages_have_buttons_and_decided_ones_do_not() {
        let pending = blocks(&view("pending/1"), None).to_string();
        assert!(pending.contains(APPROVE_ACTION) && pending.contains(DENY_ACTION));
        assert!(pending.contains("1 of 2 approvals (by bob)"), "{pending}");
        assert!(
            pending.contains("can approve: carol, group sre-leads"),
            "{pending}"
        );
        assert!(pending.contains("team/r1"));
        let revoked = blocks(&view("revoked"), Some("alice may not approve")).to_string();
        assert!(!revoked.contains(APPROVE_ACTION));
        assert!(revoked.contains("*Revoked*") && revoked.contains("revoked by bob: done"));
        assert!(!revoked.contains("can approve"), "{revoked}");
        assert!(revoked.contains("alice may not approve"));
        assert!(dm_text(&view("issued")).starts_with("Your AccessRequest team/r1"));
    }

    #[test]
    fn requester_text_is_escaped() {
        let rendered = blocks(&view("pending/0"), None).to_string();
        assert!(!rendered.contains("<!channel>"), "{rendered}");
        assert!(rendered.contains("&lt;!channel&gt;") && rendered.contains("&amp; more"));
    }

    #[test]
    fn keys_round_trip_and_refuse_junk() {
        assert_eq!(
            parse_key("team/r1"),
            Some(("team".to_owned(), "r1".to_owned()))
        );
        for bad in ["team", "/r1", "team/", "Team/r1", "team/r1/x", "team/r 1"] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }
}
