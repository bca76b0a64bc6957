//! Who a Slack user is in Kubernetes. Pure.
//!
//! In: the JSON list in ConfigMap `gatehouse-bridge-identities` (key `identities.json`), which
//! GitOps owns (the chart renders it from `bridge.identities`, together with the RBAC that lets
//! the bridge impersonate exactly these users and groups). Each entry maps a Slack user id
//! and/or an email (as `users.info` reports it) to a Kubernetes username and groups. Out: the
//! identity a click is made as, or none: an unmapped Slack user can do nothing, and nothing a
//! user types in chat is ever read as a name.

use serde::Deserialize;

/// The most entries a mapping may hold.
pub const MAX_ENTRIES: usize = 10_000;

/// One mapping entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entry {
    /// Slack user id (`U0123ABCD`).
    #[serde(default)]
    pub slack_user: Option<String>,
    /// Email of the Slack profile (matched case-insensitively; needs scope `users:read.email`).
    #[serde(default)]
    pub email: Option<String>,
    /// Kubernetes user name, exactly as the API server authenticates this person.
    pub username: String,
    /// Kubernetes groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The Kubernetes identity a Slack user acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name to impersonate.
    pub username: String,
    /// Groups to impersonate.
    pub groups: Vec<String>,
}

/// The whole mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    entries: Vec<Entry>,
}

impl Mapping {
    /// Parse and check the ConfigMap's JSON. Refused (the whole mapping, fail closed): more
    /// than [`MAX_ENTRIES`], an entry with neither Slack id nor email, an empty user name, a
    /// `system:` user or group (the bridge never acts as a component of the cluster), or one
    /// Slack id or email mapped twice.
    pub fn parse(json: &str) -> Result<Self, String> {
        let entries: Vec<Entry> =
            serde_json::from_str(json).map_err(|e| format!("not a JSON list of entries: {e}"))?;
        if entries.len() > MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, entry) in entries.iter().enumerate() {
            if entry.slack_user.is_none() && entry.email.is_none() {
                return Err(format!("entry {i} has neither slackUser nor email"));
            }
            if entry.username.trim().is_empty() {
                return Err(format!("entry {i} has an empty username"));
            }
            if entry.username.starts_with("system:")
                || entry.groups.iter().any(|g| g.starts_with("system:"))
            {
                return Err(format!(
                    "entry {i} maps to a system: user or group, which the bridge never impersonates"
                ));
            }
            let keys = entry.slack_user.iter().map(|id| format!("id:{id}")).chain(
                entry
                    .email
                    .iter()
                    .map(|e| format!("email:{}", e.to_lowercase())),
            );
            for key in keys {
                if !seen.insert(key.clone()) {
                    return Err(format!("entry {i}: {key} is mapped twice"));
                }
            }
        }
        Ok(Self { entries })
    }

    fn identity(entry: &Entry) -> Identity {
        Identity {
            username: entry.username.clone(),
            groups: entry.groups.clone(),
        }
    }

    /// The identity of Slack user `id`, by id.
    pub fn by_slack_user(&self, id: &str) -> Option<Identity> {
        self.entries
            .iter()
            .find(|e| e.slack_user.as_deref() == Some(id))
            .map(Self::identity)
    }

    /// The identity whose entry has `email` (case-insensitive) and no Slack id of its own
    /// (an entry with an id matches only that id).
    pub fn by_email(&self, email: &str) -> Option<Identity> {
        self.entries
            .iter()
            .filter(|e| e.slack_user.is_none())
            .find(|e| {
                e.email
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(email))
            })
            .map(Self::identity)
    }

    /// Whether some entry matches by email only (so an unknown id is worth a `users.info`).
    pub fn has_email_entries(&self) -> bool {
        self.entries.iter().any(|e| e.slack_user.is_none())
    }

    /// The Slack user id of Kubernetes user `username`, if its entry names one (for the
    /// requester's DM and for never notifying a requester as an approver).
    pub fn slack_user_of(&self, username: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.username == username)
            .and_then(|e| e.slack_user.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_by_id_then_email_and_refuses_what_it_must() {
        let mapping = Mapping::parse(
            r#"[{"slackUser": "UBOB", "username": "bob", "groups": ["sre-leads"]},
                {"email": "Carol@Example.com", "username": "carol", "groups": ["sre-leads"]}]"#,
        )
        .unwrap();
        assert_eq!(
            mapping.by_slack_user("UBOB"),
            Some(Identity {
                username: "bob".into(),
                groups: vec!["sre-leads".into()]
            })
        );
        assert_eq!(mapping.by_slack_user("UMALLORY"), None);
        assert_eq!(
            mapping.by_email("carol@example.com").map(|i| i.username),
            Some("carol".into())
        );
        assert_eq!(mapping.by_email("mallory@example.com"), None);
        assert!(mapping.has_email_entries());
        assert_eq!(mapping.slack_user_of("bob"), Some("UBOB"));
        assert_eq!(mapping.slack_user_of("carol"), None);

        for bad in [
            "{}",
            r#"[{"username": "bob"}]"#,
            r#"[{"slackUser": "U1", "username": ""}]"#,
            r#"[{"slackUser": "U1", "username": "system:admin"}]"#,
            r#"[{"slackUser": "U1", "username": "eve", "groups": ["system:masters"]}]"#,
            r#"[{"slackUser": "U1", "username": "a"}, {"slackUser": "U1", "username": "b"}]"#,
            r#"[{"email": "A@x", "username": "a"}, {"email": "a@X", "username": "b"}]"#,
            r#"[{"slackUser": "U1", "username": "a", "extra": 1}]"#,
        ] {
            assert!(Mapping::parse(bad).is_err(), "{bad}");
        }
    }
}
