//! Loopback networking for the processes the harness starts: every one listens on 127.0.0.1
//! (in the real-node test, some on the node's address, which is on the loopback device too).
//!
//! In: the kernel's free ports and plain-HTTP health/metrics ports. Out: a port nobody
//! listens on yet, and the status code and body of a `GET` (health probes, `/metrics`).

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

/// The address every process of the harness listens on.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A loopback port nobody listens on right now (another process may take it before the caller
/// binds it; sshd's start retries for that reason).
pub fn free_port() -> u16 {
    TcpListener::bind((LOOPBACK, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// A minimal blocking HTTP/1.0 `GET` on loopback: (status code, body), or None when nothing
/// answers (yet).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_at(SocketAddr::from((LOOPBACK, port)), path)
}

/// [`http_get`] on any local address (the real node's address, a pod's).
pub fn http_get_at(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}
