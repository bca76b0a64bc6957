//! Gatehouse's SSH certificate authority. Pure: keys and inputs in, signed certificates and
//! revocation lists out; no I/O.
//!
//! Data comes from the operator and the proxy: CA private keys read from their Secrets (as
//! OpenSSH text), the requester's public key line, and what a grant allows (principals, key
//! id, validity, extensions, critical options). It goes out as OpenSSH certificates — the
//! engineer's (signed by the user CA, written into the AccessRequest's status by the operator)
//! and the proxy's one-minute upstream certificates (signed by the upstream CA) — and as
//! OpenSSH KRL bytes the operator publishes for Direct hosts' `RevokedKeys`.
//!
//! Principal and key-id formats are contracts between components and live in
//! [`gatehouse_crds::contract::identity`]; this crate only signs what it is given.

pub mod ca;
pub mod cert;
pub mod error;
pub mod krl;

pub use ca::CaKey;
pub use cert::{
    BACKDATE, UserCertSpec, parse_user_public_key, random_serial, sign_user_cert, validity,
};
pub use error::{Error, Result};
pub use krl::encode_krl;
