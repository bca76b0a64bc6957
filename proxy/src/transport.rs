//! How the proxy's two SSH legs are tuned: the algorithms each offers and the channel window
//! and packet sizes. Data comes from nothing but these constants; it goes into the
//! engineer-facing `server::Config` (main.rs) and the upstream `client::Config`
//! ([`crate::upstream`]). Measured in docs/benchmarks.md.
//!
//! - Ciphers: AES-GCM first (AES-NI makes it about 1.5× faster per byte than
//!   chacha20-poly1305 here), chacha20-poly1305 next, the CTR modes (RustCrypto with a separate
//!   HMAC: slow) last for old clients. On the upstream leg the proxy is the client, so its first
//!   choice wins. On the engineer leg the engineer's `ssh` chooses (the server takes the
//!   client's first choice it supports): OpenSSH prefers chacha20-poly1305 unless told
//!   otherwise, and `kubectl gatehouse` writes a `Ciphers` line that puts AES-GCM first.
//! - Compression: none on either leg, so no zlib on untrusted input before (or after)
//!   authentication.
//! - Windows and packets: the engineer may send 64 KiB packets into an 8 MiB window (fewer
//!   packets: fewer AEAD calls, copies and queue hops per byte); upstream, sshd sends up to
//!   64 KiB packets (russh's client warns above 65535).

use std::borrow::Cow;

use russh::{Preferred, cipher, compression};

/// Ciphers, best first (both legs).
pub const CIPHERS: &[cipher::Name] = &[
    cipher::AES_128_GCM,
    cipher::AES_256_GCM,
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_CTR,
    cipher::AES_192_CTR,
    cipher::AES_128_CTR,
];

/// Compression: none.
pub const COMPRESSION: &[compression::Name] = &[compression::NONE];

/// The channel window the proxy grants the engineer.
pub const ENGINEER_WINDOW: u32 = 8 << 20;
/// The largest packet the proxy accepts from the engineer.
pub const ENGINEER_MAX_PACKET: u32 = 65535;
/// The channel window the proxy grants the target.
pub const UPSTREAM_WINDOW: u32 = 8 << 20;
/// The largest packet the proxy accepts from the target.
pub const UPSTREAM_MAX_PACKET: u32 = 65535;

/// The algorithms offered on either leg (key exchange and keys: russh's defaults).
pub fn preferred() -> Preferred {
    Preferred {
        cipher: Cow::Borrowed(CIPHERS),
        compression: Cow::Borrowed(COMPRESSION),
        ..Preferred::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcm_first_no_compression_and_no_weak_ciphers() {
        let p = preferred();
        assert_eq!(p.cipher.first(), Some(&cipher::AES_128_GCM));
        assert!(p.cipher.contains(&cipher::CHACHA20_POLY1305));
        assert_eq!(&*p.compression, &[compression::NONE]);
        for name in p.cipher.iter() {
            let name = name.as_ref();
            assert!(
                !name.contains("cbc") && !name.contains("none") && !name.contains("3des"),
                "{name}"
            );
        }
        // russh's client refuses to go beyond what one TCP packet carries.
        const { assert!(ENGINEER_MAX_PACKET <= 65535 && UPSTREAM_MAX_PACKET <= 65535) };
    }
}
