//! Which host and login an engineer asks for, read from the SSH user name. Pure.
//!
//! Syntax: `LOGIN@HOST` (`ssh -p 2222 ubuntu@prod-db-01@proxy.example`; ssh splits the
//! destination at its last `@`), or just `LOGIN` when the request names one host or its
//! HostGroup has exactly one.

use std::fmt;

/// The longest SSH user name the proxy reads, in bytes: a login (≤ 32 on Linux) and a host name
/// (≤ 253) fit; anything longer is refused before it is parsed, logged or kept.
pub const MAX_LEN: usize = 256;

/// The parsed SSH user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetName {
    /// Unix login on the target.
    pub login: String,
    /// Host name inside the HostGroup, when given.
    pub host: Option<String>,
}

/// Why a user name cannot name a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTargetName(pub String);

impl fmt::Display for BadTargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parse `LOGIN@HOST` or `LOGIN`.
pub fn parse(user: &str) -> Result<TargetName, BadTargetName> {
    if user.len() > MAX_LEN {
        return Err(BadTargetName(format!(
            "the user name is longer than {MAX_LEN} bytes; use LOGIN@HOST"
        )));
    }
    let (login, host) = match user.split_once('@') {
        Some((login, host)) => (login, Some(host)),
        None => (user, None),
    };
    if login.is_empty() {
        return Err(BadTargetName(format!(
            "user name {user:?}: the login is empty; use LOGIN@HOST"
        )));
    }
    if let Some(host) = host
        && (host.is_empty() || host.contains('@'))
    {
        return Err(BadTargetName(format!(
            "user name {user:?}: use LOGIN@HOST with one host name"
        )));
    }
    Ok(TargetName {
        login: login.to_owned(),
        host: host.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_and_host() {
        assert_eq!(
            parse("ubuntu@prod-db-01"),
            Ok(TargetName {
                login: "ubuntu".into(),
                host: Some("prod-db-01".into())
            })
        );
        assert_eq!(
            parse("postgres"),
            Ok(TargetName {
                login: "postgres".into(),
                host: None
            })
        );
    }

    #[test]
    fn malformed_names_say_what_to_write() {
        let long = format!("ubuntu@{}", "h".repeat(MAX_LEN));
        for bad in ["@host", "ubuntu@", "a@b@c", "", long.as_str()] {
            let error = parse(bad).err().map(|e| e.0).unwrap_or_default();
            assert!(error.contains("LOGIN@HOST"), "{bad:?}: {error}");
        }
    }
}
