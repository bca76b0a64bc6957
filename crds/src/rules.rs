//! CEL rules and patterns the API server enforces on Gatehouse objects, with the messages it
//! returns. They live here as constants so the schema, the docs and the tests agree.
//!
//! Kubernetes prefixes every message with the field path (for example
//! `spec.duration: Invalid value: "string": …`), so messages say the rule, not the field.

/// Durations are written as Go durations (`90s`, `30m`, `1h30m`: the grammar of Kubernetes' CEL
/// `duration()` and of [`crate::duration::parse`]) and bounded to 5m..24h: long enough to do work, short enough to stay just-in-time.
pub const DURATION_BOUNDS_RULE: &str = r"self.matches('^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('5m') && duration(self) <= duration('24h')";
/// Message for [`DURATION_BOUNDS_RULE`].
pub const DURATION_BOUNDS_MESSAGE: &str =
    "must be a duration from 5m to 24h, written like 30m, 2h or 1h30m";

/// A session idle timeout: a Go-style duration from 5s to 24h.
pub const IDLE_TIMEOUT_RULE: &str = r"self.matches('^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('5s') && duration(self) <= duration('24h')";
/// Message for [`IDLE_TIMEOUT_RULE`].
pub const IDLE_TIMEOUT_MESSAGE: &str =
    "must be a duration from 5s to 24h, written like 30s, 15m or 1h";

/// An OpenSSH public key line for a user key: Ed25519 or ECDSA (P-256/384/521), including the
/// FIDO (`sk-`) variants, base64 blob whose embedded algorithm name matches the line's, and an
/// optional comment. RSA and DSA are refused. The operator parses the key fully before signing.
pub const USER_PUBLIC_KEY_RULE: &str = concat!(
    r"self.matches('^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]{43}( [^\\n]*)?$')",
    r" || self.matches('^ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAy[A-Za-z0-9+/]+={0,2}( [^\\n]*)?$')",
    r" || self.matches('^ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAz[A-Za-z0-9+/]+={0,2}( [^\\n]*)?$')",
    r" || self.matches('^ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1[A-Za-z0-9+/]+={0,2}( [^\\n]*)?$')",
    r" || self.matches('^sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t[A-Za-z0-9+/]+={0,2}( [^\\n]*)?$')",
    r" || self.matches('^sk-ecdsa-sha2-nistp256@openssh.com AAAAInNrLWVjZHNhLXNoYTItbmlzdHAyNTZAb3BlbnNzaC5j[A-Za-z0-9+/]+={0,2}( [^\\n]*)?$')",
);
/// Message for [`USER_PUBLIC_KEY_RULE`].
pub const USER_PUBLIC_KEY_MESSAGE: &str = "must be one OpenSSH public key line (the contents of id_ed25519.pub): type ssh-ed25519, ecdsa-sha2-nistp256/384/521 or their sk- security-key variants, then the base64 key of that type, then an optional comment; RSA and DSA keys are not accepted";

/// An OpenSSH public key line for a host key or host CA key (RSA allowed: many hosts have one).
pub const HOST_PUBLIC_KEY_PATTERN: &str = r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) [A-Za-z0-9+/]+={0,2}( .*)?$";

/// A unix login name as `useradd` accepts by default (and OpenSSH principals can carry).
pub const LOGIN_PATTERN: &str = r"^[a-z_][a-z0-9_-]{0,31}$";

/// A DNS-1123 label: host names inside a HostGroup, used in `ssh login@host@proxy`.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

/// A DNS-1123 subdomain: names of Kubernetes objects.
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A host address: an IPv4/IPv6 literal or a DNS name; no scheme, no port.
pub const ADDRESS_RULE: &str = r"isIP(self) || self.matches('^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$')";
/// Message for [`ADDRESS_RULE`].
pub const ADDRESS_MESSAGE: &str =
    "must be an IP address or a DNS name, without scheme or port (set the port in port)";

/// A reason, when given, must say something.
pub const NON_BLANK_RULE: &str = "self.trim() != ''";
/// Message for [`NON_BLANK_RULE`].
pub const NON_BLANK_MESSAGE: &str = "must not be empty or only white space";

/// The spec of an AccessRequest is what was approved: it may never change.
pub const IMMUTABLE_RULE: &str = "self == oldSelf";
/// Message for [`IMMUTABLE_RULE`] on AccessRequest specs.
pub const IMMUTABLE_SPEC_MESSAGE: &str =
    "is immutable: an AccessRequest is approved as written; create a new AccessRequest instead";

/// Without pinned keys or a host CA we could only trust on first use, which we never do.
pub const HOST_TRUST_RULE: &str = "(has(self.hostCAKeys) && size(self.hostCAKeys) > 0) || self.hosts.all(h, has(h.hostKeys) && size(h.hostKeys) > 0)";
/// Message for [`HOST_TRUST_RULE`].
pub const HOST_TRUST_MESSAGE: &str = "every entry of hosts needs hostKeys (its pinned OpenSSH host public keys) unless hostCAKeys is set: Gatehouse never trusts a host key on first use";

/// `namespace` (escaped in CEL, it is a reserved word) only means something for ServiceAccounts.
pub const SUBJECT_NAMESPACE_RULE: &str =
    "!has(self.__namespace__) || self.kind == 'ServiceAccount'";
/// Message for [`SUBJECT_NAMESPACE_RULE`].
pub const SUBJECT_NAMESPACE_MESSAGE: &str = "namespace may only be set when kind is ServiceAccount";

/// source-address entries as OpenSSH reads them: addresses or CIDR blocks.
pub const SOURCE_ADDRESSES_RULE: &str = "self.all(a, isIP(a) || isCIDR(a))";
/// Message for [`SOURCE_ADDRESSES_RULE`].
pub const SOURCE_ADDRESS_MESSAGE: &str =
    "must be an IP address or a CIDR block such as 10.0.0.0/8 or 2001:db8::/32";

/// The part of [`FORWARDS_RECORDED_RULE`] that says whether a policy spec is coherent: a
/// policy that grants `permit-port-forwarding` while requiring recording (the default) must
/// allow forwards explicitly, or the proxy refuses every forward its certificates permit.
/// Fields may be absent (before defaulting): absent `required` is true. Mirrored by
/// `AccessPolicySpec::grants_unrecordable_forwards`.
pub const FORWARDS_RECORDED_SELF: &str = concat!(
    "(!has(self.certificate) || !has(self.certificate.extensions) || ",
    "!self.certificate.extensions.exists(e, e == 'permit-port-forwarding'))",
    " || (has(self.recording) && ((has(self.recording.required) && !self.recording.required)",
    " || (has(self.recording.allowForwards) && self.recording.allowForwards)))"
);

/// The ratchet of [`FORWARDS_RECORDED_RULE`]: an update that leaves `certificate` and
/// `recording` as they were cannot introduce the breach, so it passes even when the stored
/// policy breaks the rule (it was stored before the rule existed). The API server's own
/// ratcheting would spare only updates that leave all of `spec` unchanged (the rule sits on
/// `spec`), so a new `maxDuration` would be refused. (Comparing whole objects keeps the CEL
/// cost estimate bounded; iterating `oldSelf.value()`'s lists does not: its type is dynamic.)
pub const FORWARDS_RECORDED_RATCHET: &str = "oldSelf.hasValue() && oldSelf.value().certificate == self.certificate && oldSelf.value().recording == self.recording";

/// An AccessPolicy that grants port forwarding under `recording.required` must set
/// `recording.allowForwards`. On the whole spec, with `optionalOldSelf` (so it runs on create
/// too): a new policy, or an edit of `certificate`/`recording` that leaves the breach, is
/// refused; a stored policy stays updatable otherwise.
pub const FORWARDS_RECORDED_RULE: &str = concat!(
    "(",
    "(!has(self.certificate) || !has(self.certificate.extensions) || ",
    "!self.certificate.extensions.exists(e, e == 'permit-port-forwarding'))",
    " || (has(self.recording) && ((has(self.recording.required) && !self.recording.required)",
    " || (has(self.recording.allowForwards) && self.recording.allowForwards)))",
    ") || (",
    "oldSelf.hasValue() && oldSelf.value().certificate == self.certificate && oldSelf.value().recording == self.recording",
    ")"
);
/// Message for [`FORWARDS_RECORDED_RULE`].
pub const FORWARDS_RECORDED_MESSAGE: &str = "certificate.extensions grants permit-port-forwarding but recording.required is on (the default) and the proxy does not record forwards: set recording.allowForwards: true to allow them unrecorded, or drop permit-port-forwarding";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwards_rule_is_the_check_or_the_ratchet() {
        assert_eq!(
            FORWARDS_RECORDED_RULE,
            format!("({FORWARDS_RECORDED_SELF}) || ({FORWARDS_RECORDED_RATCHET})")
        );
        // Every optional field is guarded with has(): objects may lack them.
        for field in [
            "self.certificate)",
            "self.certificate.extensions)",
            "self.recording)",
            "self.recording.required)",
            "self.recording.allowForwards)",
        ] {
            assert!(
                FORWARDS_RECORDED_SELF.contains(&format!("has({field}")),
                "{field}"
            );
        }
        assert!(FORWARDS_RECORDED_MESSAGE.contains("recording.allowForwards: true"));
        assert!(FORWARDS_RECORDED_MESSAGE.contains("drop permit-port-forwarding"));
    }
}
