//! OpenSSH Key Revocation List (KRL) encoding. Pure: revoked certificates in, bytes out.
//!
//! The operator collects the certificates it has revoked under one user CA — their serial
//! numbers and key ids — and encodes them here as a binary KRL (OpenSSH `PROTOCOL.krl`). It
//! publishes the bytes in a ConfigMap as `binaryData`; hosts mount that file as sshd's
//! `RevokedKeys`, and `ssh-keygen -Q -f <file> <cert>` checks a certificate against it.
//!
//! sshd refuses every key when its `RevokedKeys` file does not parse, so the encoder drops
//! inputs OpenSSH would reject (serial 0, key ids or comment with NUL bytes) rather than emit
//! a file that locks everyone out.

use ssh_key::PublicKey;

/// `"SSHKRL\n\0"`, the first eight bytes of every KRL.
const KRL_MAGIC: &[u8; 8] = b"SSHKRL\n\0";
const KRL_FORMAT_VERSION: u32 = 1;
const KRL_SECTION_CERTIFICATES: u8 = 0x01;
const KRL_SECTION_CERT_SERIAL_LIST: u8 = 0x20;
const KRL_SECTION_CERT_KEY_ID: u8 = 0x23;

/// Encode a KRL revoking the certificates signed by `ca` whose serial is in `serials` or whose
/// key id is in `key_ids`.
///
/// `version` should grow with every change (OpenSSH only reports it); `generated_at_unix` is
/// the generation time in Unix seconds. Serials and key ids may be unsorted and repeated: the
/// output is sorted and deduplicated, so equal inputs give equal bytes. Serial 0 is skipped
/// (OpenSSH rejects a KRL listing it, and never revokes serial-0 certificates by serial), as are
/// key ids containing NUL; NUL bytes are removed from `comment`. With nothing to revoke the
/// result is a header-only KRL, which revokes nothing.
pub fn encode_krl(
    ca: &PublicKey,
    serials: &[u64],
    key_ids: &[String],
    version: u64,
    generated_at_unix: u64,
    comment: &str,
) -> Vec<u8> {
    // Encoding an in-memory key only fails past 4 GiB. Should it ever fail, an empty CA blob
    // means "any CA" to OpenSSH: revoking these certificates too widely beats not at all.
    let ca_blob = ca.to_bytes().unwrap_or_default();
    encode(
        &ca_blob,
        serials,
        key_ids,
        version,
        generated_at_unix,
        comment,
    )
}

/// [`encode_krl`] with the CA already in wire format (empty: revocations apply to every CA).
fn encode(
    ca_blob: &[u8],
    serials: &[u64],
    key_ids: &[String],
    version: u64,
    generated_at_unix: u64,
    comment: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(KRL_MAGIC);
    put_u32(&mut out, KRL_FORMAT_VERSION);
    put_u64(&mut out, version);
    put_u64(&mut out, generated_at_unix);
    put_u64(&mut out, 0); // flags: none defined
    put_string(&mut out, &[]); // reserved
    put_string(&mut out, comment.replace('\0', "").as_bytes());

    let mut serials: Vec<u64> = serials.iter().copied().filter(|&s| s != 0).collect();
    serials.sort_unstable();
    serials.dedup();
    // OpenSSH keeps key ids in a tree ordered by strcmp, which is byte order like `str`'s.
    let mut key_ids: Vec<&str> = key_ids
        .iter()
        .map(String::as_str)
        .filter(|id| !id.contains('\0'))
        .collect();
    key_ids.sort_unstable();
    key_ids.dedup();
    if serials.is_empty() && key_ids.is_empty() {
        return out;
    }

    let mut certs = Vec::new();
    put_string(&mut certs, ca_blob);
    put_string(&mut certs, &[]); // reserved
    if !serials.is_empty() {
        let mut list = Vec::with_capacity(serials.len() * 8);
        for serial in serials {
            put_u64(&mut list, serial);
        }
        certs.push(KRL_SECTION_CERT_SERIAL_LIST);
        put_string(&mut certs, &list);
    }
    if !key_ids.is_empty() {
        let mut list = Vec::new();
        for key_id in key_ids {
            put_string(&mut list, key_id.as_bytes());
        }
        certs.push(KRL_SECTION_CERT_KEY_ID);
        put_string(&mut certs, &list);
    }
    out.push(KRL_SECTION_CERTIFICATES);
    put_string(&mut out, &certs);
    out
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// SSH `string`: uint32 length, then the bytes.
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    // A ConfigMap holds at most 1 MiB, so no published KRL comes near a 4 GiB field.
    put_u32(out, u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(bytes);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::{fs, path::Path, process::Command};

    use ssh_key::HashAlg;
    use tempfile::TempDir;

    use super::*;

    /// Run `ssh-keygen` in `dir`; returns (exit success, stdout + stderr).
    fn keygen(dir: &Path, args: &[&str]) -> (bool, String) {
        let out = Command::new("ssh-keygen")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run ssh-keygen (Debian package openssh-client)");
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text.into_owned())
    }

    /// A new Ed25519 key pair `dir/name{,.pub}`.
    fn new_key(dir: &Path, name: &str) {
        let (ok, text) = keygen(
            dir,
            &["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", name],
        );
        assert!(ok, "ssh-keygen {name}: {text}");
    }

    /// A temporary directory holding the CA key pair `ca{,.pub}`.
    fn ca_dir() -> TempDir {
        let dir = TempDir::new().unwrap();
        new_key(dir.path(), "ca");
        dir
    }

    fn public_key(dir: &Path, name: &str) -> PublicKey {
        let text = fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap();
        PublicKey::from_openssh(&text).unwrap()
    }

    /// A fresh user key `name` certified by `ca`; returns the certificate's file name.
    fn cert(dir: &Path, ca: &str, name: &str, key_id: &str, serial: u64) -> String {
        new_key(dir, name);
        let serial = serial.to_string();
        let public = format!("{name}.pub");
        let args = [
            "-q", "-s", ca, "-I", key_id, "-n", "ubuntu", "-z", &serial, &public,
        ];
        let (ok, text) = keygen(dir, &args);
        assert!(ok, "sign {name}: {text}");
        format!("{name}-cert.pub")
    }

    /// `ssh-keygen -Q` against `dir/krl`: true when revoked, false when ok; panics on anything
    /// else (the KRL did not load).
    fn revoked(dir: &Path, cert: &str) -> bool {
        let (ok, text) = keygen(dir, &["-Q", "-f", "krl", cert]);
        if ok {
            assert!(text.contains(": ok"), "{cert}: {text}");
            false
        } else {
            assert!(text.contains("REVOKED"), "{cert}: {text}");
            true
        }
    }

    /// Magic, format version, krl_version, generated_date, flags, reserved, comment "".
    const HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8 + 4 + 4;

    #[test]
    fn ssh_keygen_revokes_by_serial() {
        let dir = ca_dir();
        let d = dir.path();
        let hit = cert(d, "ca", "alice", "alice", 7);
        let miss = cert(d, "ca", "bob", "bob", 8);
        let bytes = encode_krl(&public_key(d, "ca"), &[42, 7, 7], &[], 1, 1_700_000_000, "");
        fs::write(d.join("krl"), &bytes).unwrap();
        assert!(revoked(d, &hit));
        assert!(!revoked(d, &miss));
    }

    #[test]
    fn ssh_keygen_revokes_by_key_id() {
        let dir = ca_dir();
        let d = dir.path();
        let id = "gatehouse:team/req-1 uid=1234 requester=alice";
        let hit = cert(d, "ca", "alice", id, 7);
        let miss = cert(d, "ca", "bob", "gatehouse:team/req-2", 8);
        let bytes = encode_krl(&public_key(d, "ca"), &[], &[id.to_owned()], 1, 0, "");
        fs::write(d.join("krl"), &bytes).unwrap();
        assert!(revoked(d, &hit));
        assert!(!revoked(d, &miss));
    }

    #[test]
    fn revocations_are_scoped_to_the_ca() {
        let dir = ca_dir();
        let d = dir.path();
        new_key(d, "other-ca");
        let ours = cert(d, "ca", "alice", "alice", 7);
        let theirs = cert(d, "other-ca", "bob", "alice", 7);
        let ids = ["alice".to_owned()];
        let bytes = encode_krl(&public_key(d, "ca"), &[7], &ids, 1, 0, "");
        fs::write(d.join("krl"), &bytes).unwrap();
        assert!(revoked(d, &ours));
        assert!(!revoked(d, &theirs));
        // The fallback when the CA cannot be encoded: an empty CA blob means any CA.
        fs::write(d.join("krl"), encode(&[], &[7], &[], 1, 0, "")).unwrap();
        assert!(revoked(d, &ours));
        assert!(revoked(d, &theirs));
    }

    #[test]
    fn empty_krl_loads_and_revokes_nothing() {
        let dir = ca_dir();
        let d = dir.path();
        let alice = cert(d, "ca", "alice", "alice", 7);
        let bytes = encode_krl(&public_key(d, "ca"), &[], &[], 0, 0, "");
        assert_eq!(bytes.len(), HEADER_LEN, "header only");
        fs::write(d.join("krl"), &bytes).unwrap();
        assert!(!revoked(d, &alice));
    }

    #[test]
    fn inputs_openssh_rejects_are_dropped_and_the_krl_still_loads() {
        let dir = ca_dir();
        let d = dir.path();
        let alice = cert(d, "ca", "alice", "alice", 7);
        let bob = cert(d, "ca", "bob", "bob", 8);
        let ids = ["a\0b".to_owned(), "bob".to_owned()];
        let bytes = encode_krl(&public_key(d, "ca"), &[0, 7], &ids, 1, 0, "x\0y");
        fs::write(d.join("krl"), &bytes).unwrap();
        assert!(revoked(d, &alice));
        assert!(revoked(d, &bob));
        // Serial 0 and the NUL key id alone leave nothing to revoke: a header-only KRL.
        let bytes = encode_krl(&public_key(d, "ca"), &[0], &ids[..1], 1, 0, "");
        assert_eq!(bytes.len(), HEADER_LEN);
    }

    #[test]
    fn ssh_keygen_lists_the_contents() {
        let dir = ca_dir();
        let d = dir.path();
        let ca = public_key(d, "ca");
        let ids = ["gatehouse:team/req-1".to_owned()];
        let bytes = encode_krl(&ca, &[1000, 7], &ids, 42, 1_700_000_000, "gatehouse");
        fs::write(d.join("krl"), &bytes).unwrap();
        let (ok, text) = keygen(d, &["-Q", "-l", "-f", "krl"]);
        if !ok && text.contains("usage") {
            eprintln!("this ssh-keygen cannot list KRLs (-Q -l); skipped");
            return;
        }
        assert!(ok, "{text}");
        let fingerprint = ca.fingerprint(HashAlg::Sha256).to_string();
        for line in [
            "# KRL version 42".to_owned(),
            "# Comment: gatehouse".to_owned(),
            format!("# CA key ssh-ed25519 {fingerprint}"),
            "serial: 7\nserial: 1000\nid: gatehouse:team/req-1".to_owned(),
        ] {
            assert!(text.contains(&line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn matches_ssh_keygen_byte_for_byte() {
        let dir = ca_dir();
        let d = dir.path();
        // Sparse serials, so ssh-keygen also picks a serial list (not a range or bitmap).
        fs::write(
            d.join("spec"),
            "serial: 1000\nserial: 7\nid: bob\nid: alice\n",
        )
        .unwrap();
        let (ok, text) = keygen(
            d,
            &["-k", "-f", "theirs", "-s", "ca.pub", "-z", "3", "spec"],
        );
        assert!(ok, "ssh-keygen -k: {text}");
        let theirs = fs::read(d.join("theirs")).unwrap();
        // ssh-keygen stamps the current time; reuse it.
        let generated = u64::from_be_bytes(theirs[20..28].try_into().unwrap());
        let ids = ["bob".to_owned(), "alice".to_owned()];
        let ours = encode_krl(&public_key(d, "ca"), &[7, 1000], &ids, 3, generated, "");
        assert_eq!(ours, theirs);
    }
}
