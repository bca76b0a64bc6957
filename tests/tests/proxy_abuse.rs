//! One attacker cannot lock out everyone, or make the proxy hold what it sends before login
//! (issue 20 §3), with the real `ssh` from several loopback source addresses (`BindAddress
//! 127.0.0.N`) against `gatehouse-proxy` and a real `sshd`.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use gatehouse_crds::contract::identity;
use gatehouse_tests::{
    proxied_world::ProxiedWorld,
    proxy::{Proxy, ProxyConfig},
    ssh_client::Client,
    sshd::{CertSpec, generate_key, sign_user_key},
};
use tokio::{
    io::AsyncReadExt,
    net::{TcpSocket, TcpStream},
};

/// Self-signed certificates for the engineer's `login@db1` from ten addresses, twice each:
/// the attacker's key is blocked, the engineer (from one of those addresses too) is not.
/// Counting failures per user name, as the proxy did, blocked `login@db1` for everyone.
#[tokio::test]
async fn self_signed_certificates_from_ten_addresses_do_not_lock_out_the_engineer() {
    let w = ProxiedWorld::with_local_store("abuse-lockout").await;
    let cert = w.issue(w.request("victim")).await;
    let user = format!("{}@db1", w.login);
    let (rogue_ca, _) = generate_key(w.dir.path(), "rogue-ca");
    let (attacker, _) = generate_key(w.dir.path(), "attacker");
    let forged = sign_user_key(
        &rogue_ca,
        &attacker.with_file_name("attacker.pub"),
        &CertSpec {
            key_id: "forged",
            principals: &[&identity::proxied_principal(&w.s.ns, "victim")],
            validity: "-5m:+1h",
            serial: 1,
        },
    );
    let attempt = |from: &str| {
        w.proxy
            .client(Client::Ssh, &user, &attacker, &forged, &w.known_hosts)
            .option("BindAddress", from)
            .arg("true")
            .run()
    };
    for round in 0..2 {
        for n in 2..12 {
            let out = attempt(&format!("127.0.0.{n}"));
            assert_eq!(
                out.code,
                Some(255),
                "round {round} from .{n}: {}",
                out.stderr
            );
        }
    }
    // The engineer, from the proxy's usual address and from one the attacker used.
    for from in ["127.0.0.1", "127.0.0.5"] {
        let out = w
            .ssh(&cert, &user, &["echo engineer-$((6*7))"])
            .option("BindAddress", from)
            .run();
        assert_eq!(
            (out.code, out.stdout.trim()),
            (Some(0), "engineer-42"),
            "the engineer is locked out from {from}: {}\n{}",
            out.stderr,
            w.proxy.log_tail()
        );
    }

    let log = w.proxy.log_text();
    assert!(
        log.contains("too many failed logins: blocked") && log.contains("\"key_blocked\":true"),
        "the attacker's key was not blocked:\n{}",
        w.proxy.log_tail()
    );

    // A user name far beyond any LOGIN@HOST is refused before it is parsed or logged.
    let long = format!("{}@db1", "x".repeat(4096));
    let out = w.ssh(&cert, &long, &["true"]).run();
    assert_eq!(out.code, Some(255), "{}", out.stderr);
    let log = w.proxy.log_text();
    assert!(
        log.contains("user name longer than 256 bytes"),
        "{}",
        w.proxy.log_tail()
    );
    assert!(!log.contains(&"x".repeat(300)), "the long name was logged");
}

/// Open `count` TCP connections to `port` from `from` and sort them: those the proxy greets
/// with its SSH banner (held, still open) and those it closes at once.
async fn flood(port: u16, from: [u8; 4], count: usize) -> (Vec<TcpStream>, usize) {
    let mut held = Vec::new();
    let mut closed = 0;
    for _ in 0..count {
        let socket = TcpSocket::new_v4().unwrap_or_else(|e| panic!("socket: {e}"));
        socket
            .bind(SocketAddr::from((from, 0)))
            .unwrap_or_else(|e| panic!("bind {from:?}: {e}"));
        let mut stream = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let mut banner = [0u8; 8];
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut banner)).await {
            Ok(Ok(n)) if n > 0 && banner.starts_with(b"SSH-2.0") => held.push(stream),
            Ok(Ok(_)) | Ok(Err(_)) => closed += 1,
            Err(_) => panic!("the proxy neither greeted nor closed a connection"),
        }
    }
    (held, closed)
}

/// A flood of connections that never log in: one address holds at most 16, everyone at most
/// the total, and each goes after the login grace time. The engineer logs in meanwhile from
/// another address (and, once the grace time has cleared the flood, after a total flood).
#[tokio::test]
async fn preauth_flood_is_capped_and_timed_out_while_the_engineer_logs_in() {
    let w = ProxiedWorld::with_local_store("abuse-preauth").await;
    let cert = w.issue(w.request("flooded")).await;
    let user = format!("{}@db1", w.login);
    let mut config = ProxyConfig::new(
        w.dir.path().join("capped-proxy"),
        ProxiedWorld::local_storage(w.dir.path()),
    );
    config.args = ["--max-preauth=40", "--login-grace=15s"]
        .map(str::to_owned)
        .to_vec();
    let proxy = Proxy::start(w.cp, config);
    let login = |from: &str| {
        proxy
            .client(Client::Ssh, &user, &w.key, &cert, &w.known_hosts)
            .option("BindAddress", from)
            .arg("echo engineer-$((6*7))")
            .run()
    };

    // One address: 16 held, the rest closed at once; the engineer gets in from another.
    let (held, closed) = flood(proxy.port, [127, 0, 0, 20], 60).await;
    assert_eq!((held.len(), closed), (16, 44), "{}", proxy.log_tail());
    let out = login("127.0.0.1");
    assert_eq!(
        (out.code, out.stdout.trim()),
        (Some(0), "engineer-42"),
        "{}\n{}",
        out.stderr,
        proxy.log_tail()
    );
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("gatehouse_proxy_auth_failures_total{reason=\"preauth_per_address\"} 44"),
        "{metrics}"
    );

    // Many addresses: at most 40 in all.
    let mut all = held;
    for last in 21..24 {
        let (held, _) = flood(proxy.port, [127, 0, 0, last], 16).await;
        all.extend(held);
    }
    assert_eq!(all.len(), 40, "{}", proxy.log_tail());
    let refused = login("127.0.0.2");
    assert_eq!(refused.code, Some(255), "{}", refused.stdout);

    // The login grace time closes the idle ones; then the engineer gets in again.
    let started = Instant::now();
    for mut stream in all {
        let mut rest = [0u8; 512];
        loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut rest)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => panic!("an idle connection outlived the login grace time"),
            }
        }
    }
    eprintln!("idle connections closed after {:?}", started.elapsed());
    let out = login("127.0.0.2");
    assert_eq!(
        (out.code, out.stdout.trim()),
        (Some(0), "engineer-42"),
        "{}\n{}",
        out.stderr,
        proxy.log_tail()
    );
}
