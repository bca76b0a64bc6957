//! Target host identity: the key a host presents must be one of its pinned `hostKeys`, or a
//! host certificate signed by one of the group's `hostCAKeys` naming the host. Pure; no
//! trust on first use, ever.

use gatehouse_crds::Host;
use russh::keys::{
    HashAlg, PublicKey, PublicKeyOrCertificate,
    ssh_key::{Fingerprint, certificate::CertType},
};

fn parse_keys(lines: &[String]) -> Vec<PublicKey> {
    lines
        .iter()
        .filter_map(|line| PublicKey::from_openssh(line.trim()).ok())
        .collect()
}

/// Accept or refuse the key `host` presented at unix time `now`. The error says what was
/// presented and what was expected, for the log and the engineer.
pub fn verify(
    presented: &PublicKeyOrCertificate,
    host: &Host,
    host_ca_keys: &[String],
    now: u64,
) -> Result<(), String> {
    match presented {
        PublicKeyOrCertificate::PublicKey { key, .. } => {
            let pinned = parse_keys(&host.host_keys);
            if pinned.iter().any(|p| p.key_data() == key.key_data()) {
                return Ok(());
            }
            Err(format!(
                "host {} presented key {} which is not among its {} pinned hostKeys{}",
                host.name,
                key.fingerprint(HashAlg::Sha256),
                pinned.len(),
                if host_ca_keys.is_empty() {
                    ""
                } else {
                    " (and is not a host certificate)"
                }
            ))
        }
        PublicKeyOrCertificate::Certificate(cert) => {
            let cas: Vec<Fingerprint> = parse_keys(host_ca_keys)
                .iter()
                .map(|k| k.fingerprint(HashAlg::Sha256))
                .collect();
            if cas.is_empty() {
                return Err(format!(
                    "host {} presented a host certificate but its HostGroup has no hostCAKeys",
                    host.name
                ));
            }
            cert.validate_at(now, &cas).map_err(|e| {
                format!(
                    "host {} presented a host certificate that does not validate against hostCAKeys: {e}",
                    host.name
                )
            })?;
            if cert.cert_type() != CertType::Host {
                return Err(format!(
                    "host {} presented a user certificate as its host key",
                    host.name
                ));
            }
            // Only the address counts: it is where the proxy connects. The host's name in the
            // HostGroup is a label its namespace chose, so it proves nothing about the machine.
            if !cert.valid_principals().contains(&host.address) {
                return Err(format!(
                    "host {}: its host certificate names {:?}, not its address {:?}",
                    host.name,
                    cert.valid_principals(),
                    host.address
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use russh::keys::{
        Algorithm, PrivateKey,
        ssh_key::{certificate::Builder, getrandom::SysRng, rand_core::UnwrapErr},
    };

    fn key() -> PrivateKey {
        PrivateKey::random(&mut UnwrapErr(SysRng), Algorithm::Ed25519).unwrap()
    }

    fn host(pinned: &[&PrivateKey]) -> Host {
        Host {
            name: "db-1".into(),
            address: "127.0.0.1".into(),
            port: 22,
            host_keys: pinned
                .iter()
                .map(|k| k.public_key().to_openssh().unwrap())
                .collect(),
        }
    }

    fn plain(key: &PrivateKey) -> PublicKeyOrCertificate {
        PublicKeyOrCertificate::PublicKey {
            key: key.public_key().clone(),
            hash_alg: None,
        }
    }

    fn host_cert(
        ca: &PrivateKey,
        subject: &PrivateKey,
        kind: CertType,
        name: &str,
    ) -> PublicKeyOrCertificate {
        let mut b = Builder::new_with_random_nonce(
            &mut UnwrapErr(SysRng),
            subject.public_key().key_data().clone(),
            1_000,
            2_000,
        )
        .unwrap();
        b.cert_type(kind).unwrap();
        b.valid_principal(name).unwrap();
        PublicKeyOrCertificate::Certificate(b.sign(ca).unwrap())
    }

    #[test]
    fn pinned_key_accepted_other_key_refused() {
        let (good, bad) = (key(), key());
        let h = host(&[&good]);
        assert_eq!(verify(&plain(&good), &h, &[], 1_500), Ok(()));
        let err = verify(&plain(&bad), &h, &[], 1_500).unwrap_err();
        assert!(err.contains("not among its 1 pinned hostKeys"), "{err}");
    }

    #[test]
    fn host_certificate_needs_a_listed_ca_the_host_type_and_the_host_name() {
        let (ca, other_ca, subject) = (key(), key(), key());
        let h = host(&[]);
        let cas = vec![ca.public_key().to_openssh().unwrap()];
        let good = host_cert(&ca, &subject, CertType::Host, "127.0.0.1");
        assert_eq!(verify(&good, &h, &cas, 1_500), Ok(()));
        // The HostGroup's own name for the host is not an identity the certificate proves.
        let by_name = host_cert(&ca, &subject, CertType::Host, "db-1");
        assert!(
            verify(&by_name, &h, &cas, 1_500)
                .unwrap_err()
                .contains("not its address")
        );

        let wrong_ca = host_cert(&other_ca, &subject, CertType::Host, "127.0.0.1");
        assert!(verify(&wrong_ca, &h, &cas, 1_500).is_err());
        let user_cert = host_cert(&ca, &subject, CertType::User, "127.0.0.1");
        assert!(
            verify(&user_cert, &h, &cas, 1_500)
                .unwrap_err()
                .contains("user certificate")
        );
        let other_name = host_cert(&ca, &subject, CertType::Host, "10.0.0.2");
        assert!(
            verify(&other_name, &h, &cas, 1_500)
                .unwrap_err()
                .contains("names")
        );
        let expired = verify(&good, &h, &cas, 2_500);
        assert!(expired.is_err());
        assert!(
            verify(&good, &h, &[], 1_500)
                .unwrap_err()
                .contains("no hostCAKeys")
        );
    }
}
