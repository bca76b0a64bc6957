//! OpenSSH user certificate building. Pure: a CA key and what a grant allows in, a signed
//! certificate out.

use std::time::Duration;

use gatehouse_crds::{
    CertificateExtension,
    contract::identity::{FORCE_COMMAND, SOURCE_ADDRESS},
};
use ssh_key::{
    Algorithm, Certificate, PublicKey,
    certificate::{Builder, CertType},
    getrandom::SysRng,
    rand_core::{Rng, UnwrapErr},
};

use crate::{
    ca::CaKey,
    error::{Error, Result},
};

/// Certificates start this long before issue so small clock skew between the operator and
/// the hosts does not reject a fresh certificate (Vault does the same).
pub const BACKDATE: Duration = Duration::from_secs(30);

/// Everything that goes into one user certificate.
#[derive(Debug, Clone)]
pub struct UserCertSpec<'a> {
    /// The requester's public key line.
    pub public_key: &'a str,
    /// Serial number.
    pub serial: u64,
    /// Key id (sshd logs it).
    pub key_id: String,
    /// Principals.
    pub principals: Vec<String>,
    /// Unix seconds.
    pub valid_after: u64,
    /// Unix seconds.
    pub valid_before: u64,
    /// Extensions to grant.
    pub extensions: &'a [CertificateExtension],
    /// `force-command` critical option.
    pub force_command: Option<&'a str>,
    /// `source-address` critical option entries.
    pub source_addresses: &'a [String],
}

/// Parse a requester's public key line; only Ed25519 and ECDSA keys (and their FIDO
/// variants) are accepted, matching the CRD rule.
pub fn parse_user_public_key(line: &str) -> Result<PublicKey> {
    let key =
        PublicKey::from_openssh(line.trim()).map_err(|e| Error::ParsePublicKey(e.to_string()))?;
    match key.algorithm() {
        Algorithm::Ed25519
        | Algorithm::SkEd25519
        | Algorithm::Ecdsa { .. }
        | Algorithm::SkEcdsaSha2NistP256 => Ok(key),
        other => Err(Error::ParsePublicKey(format!(
            "{other} keys are not accepted; use an Ed25519 or ECDSA key"
        ))),
    }
}

/// Sign a user certificate for `spec` with `ca`.
pub fn sign_user_cert(ca: &CaKey, spec: &UserCertSpec<'_>) -> Result<Certificate> {
    let subject = parse_user_public_key(spec.public_key)?;
    let mut builder = Builder::new_with_random_nonce(
        &mut UnwrapErr(SysRng),
        subject.key_data().clone(),
        spec.valid_after,
        spec.valid_before,
    )
    .map_err(Error::SignCertificate)?;
    builder
        .serial(spec.serial)
        .and_then(|b| b.cert_type(CertType::User))
        .and_then(|b| b.key_id(spec.key_id.clone()))
        .map_err(Error::SignCertificate)?;
    for principal in &spec.principals {
        builder
            .valid_principal(principal.clone())
            .map_err(Error::SignCertificate)?;
    }
    let mut extensions: Vec<&str> = spec.extensions.iter().map(|e| e.openssh_name()).collect();
    extensions.sort_unstable();
    extensions.dedup();
    for extension in extensions {
        builder
            .extension(extension, "")
            .map_err(Error::SignCertificate)?;
    }
    if let Some(command) = spec.force_command {
        builder
            .critical_option(FORCE_COMMAND, command)
            .map_err(Error::SignCertificate)?;
    }
    if !spec.source_addresses.is_empty() {
        builder
            .critical_option(SOURCE_ADDRESS, spec.source_addresses.join(","))
            .map_err(Error::SignCertificate)?;
    }
    builder.sign(&ca.key).map_err(Error::SignCertificate)
}

/// A random, non-zero serial number (`UnwrapErr` panics rather than return a weak value if
/// the OS has no randomness).
pub fn random_serial() -> u64 {
    let mut rng = UnwrapErr(SysRng);
    loop {
        let serial = rng.next_u64();
        if serial != 0 {
            return serial;
        }
    }
}

/// Validity window for a certificate issued at `now` (unix seconds) for `granted`.
pub fn validity(now: u64, granted: Duration) -> (u64, u64) {
    (
        now.saturating_sub(BACKDATE.as_secs()),
        now.saturating_add(granted.as_secs()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_crds::contract::identity;
    use ssh_key::HashAlg;

    const ALICE: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIISa1AY8mpx0OMvpQM9rRmi9MFzv63hBz+TstwkC/lzx alice@laptop";

    fn spec<'a>(extensions: &'a [CertificateExtension], sources: &'a [String]) -> UserCertSpec<'a> {
        UserCertSpec {
            public_key: ALICE,
            serial: 42,
            key_id: identity::user_key_id("team", "r1", "0000-1111", "alice"),
            principals: vec![identity::direct_principal("team", "prod-db", "ubuntu")],
            valid_after: 1_700_000_000,
            valid_before: 1_700_003_600,
            extensions,
            force_command: None,
            source_addresses: sources,
        }
    }

    #[test]
    fn certificate_carries_exactly_what_was_granted() {
        let ca = CaKey::generate("user-ca").unwrap();
        let ext = [
            CertificateExtension::PermitPty,
            CertificateExtension::PermitPortForwarding,
        ];
        let sources = vec!["10.0.0.0/8".to_owned(), "192.0.2.7".to_owned()];
        let mut s = spec(&ext, &sources);
        s.force_command = Some("/usr/bin/psql");
        let cert = sign_user_cert(&ca, &s).unwrap();
        assert_eq!(cert.cert_type(), CertType::User);
        assert_eq!(cert.serial(), 42);
        assert_eq!(
            cert.key_id(),
            "gatehouse:team/r1 uid=0000-1111 requester=alice"
        );
        assert_eq!(cert.valid_principals(), ["gatehouse:team/prod-db:ubuntu"]);
        assert_eq!(cert.valid_after(), 1_700_000_000);
        assert_eq!(cert.valid_before(), 1_700_003_600);
        let exts: Vec<&String> = cert.extensions().keys().collect();
        assert_eq!(exts, ["permit-port-forwarding", "permit-pty"]);
        assert_eq!(
            cert.critical_options()
                .get("force-command")
                .map(String::as_str),
            Some("/usr/bin/psql")
        );
        assert_eq!(
            cert.critical_options()
                .get("source-address")
                .map(String::as_str),
            Some("10.0.0.0/8,192.0.2.7")
        );
        // Signed by this CA and by no other.
        let fingerprint = ca.public_key().fingerprint(HashAlg::Sha256);
        assert!(cert.validate_at(1_700_000_100, [&fingerprint]).is_ok());
        let other = CaKey::generate("other").unwrap();
        assert!(
            cert.validate_at(
                1_700_000_100,
                [&other.public_key().fingerprint(HashAlg::Sha256)]
            )
            .is_err()
        );
        assert!(
            cert.validate_at(1_700_003_601, [&fingerprint]).is_err(),
            "expired"
        );
        // The certified key is the requester's.
        let alice = PublicKey::from_openssh(ALICE).unwrap();
        assert_eq!(cert.public_key(), alice.key_data());
    }

    #[test]
    fn only_ed25519_and_ecdsa_keys_are_accepted() {
        // A real, well-formed 3072-bit RSA key: refused for its algorithm, not its encoding.
        let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQDoM5Ov8K4bH9QFAFIMsumvFei3RTkI9LK6hwqJ+/C6CEbznBNYPRophtqAl3aD5lN5SpArxA9cRTudZTjRGkpMMVXjfaXp2hZA1wxL9eRiyz0w+E+J4in58esv5GVurDEUHrEvJTPyJb0w3ZzOjNgtEz5foMd/cq/65CPSauoKcNmMtvLGM80XPWitM6UV/tmYBkIfknx58AffQoXJG7RtJAtYa8pmEPDKEc5uQsEZoJOIdhOil8WZVw/W5Md/fPkqPunXbIpf8cGdjDB5HBJ4aQQ4CqEWIWjmcwm8dccO4+pjhNerhHmwZnrkluFwYy4VchabufPRlKBoq/UZmIpof2RGcrQ7GXlxRoZZ/84Cd1FKxxOcSz+Sq72TuKCYD4rQduG2GG2Zq1/CqiVu2CdCmkEoE0pMLRaHlAkNXEwBEIXCg/hUq0s83sJW9jikTYQAX727e35+YpzdKeNxJwsFB9EGfSemTTBeU9z5J6FTeBRykNkl1gfOihwLx4h3Pj8= old@laptop";
        let refusal = parse_user_public_key(rsa).err().map(|e| e.to_string());
        assert!(
            refusal
                .as_deref()
                .is_some_and(|m| m.contains("ssh-rsa keys are not accepted")),
            "{refusal:?}"
        );
        assert!(parse_user_public_key("ssh-ed25519 AAAA").is_err());
        assert!(parse_user_public_key(ALICE).is_ok());
        let ecdsa = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBPXbKAXACuaeUP9BRc7xsQsuF2tB25Ey9i9knvXAOWHpex/gyp90TW+ooIlKTg5KGdPHK6VnCGL1DIOZmvh7rBZm97GKq4PwNAsB1Sc8TqJvrFkhbvG/U06APYAZynRgoA== bob@yubikey";
        assert!(parse_user_public_key(ecdsa).is_ok());
    }

    #[test]
    fn validity_is_backdated_and_bounded() {
        assert_eq!(validity(1_000, Duration::from_secs(3_600)), (970, 4_600));
        assert_ne!(random_serial(), 0);
        assert_ne!(random_serial(), random_serial());
    }
}
