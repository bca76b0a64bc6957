//! Audit events in the logs (issue 15, first slice), end to end: alice creates a request
//! with real kubectl, bob approves it, the real operator issues it, a real `ssh` session goes
//! through the real `gatehouse-proxy` to a real `sshd`, alice revokes it. The operator's and
//! the proxy's JSON logs carry one `gatehouse::audit` line per fact, each with the event's
//! JSON whole in its `event` field: requestCreated (alice), approved (bob), issued, revoked
//! (alice); loginAccepted, sessionStarted, sessionEnded for the request. A login with a
//! certificate from a CA of the attacker's own is a loginRefused naming the rule and the
//! source address. A session's acts are events too, each with the client's address and key:
//! an exec's command (exact), lines typed at a pty (rebuilt), sftp operations with their
//! paths, an `ssh -L` forward opened and closed with its bytes, and each stored recording
//! under the key and sha256 of the request's status.

use std::{
    io::{Read, Write},
    time::Duration,
};

use gatehouse_crds::{
    Phase,
    audit::LOG_TARGET,
    contract::{annotations, identity},
};
use gatehouse_tests::{
    User,
    proxied_world::ProxiedWorld,
    ssh_client::Client,
    sshd::{CertSpec, generate_key},
    wait_for,
};
use serde_json::{Value, json};

/// The audit events in a JSON log, parsed from each `gatehouse::audit` line's `event` field.
fn audit_events(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == LOG_TARGET)
        .map(|line| {
            let text = line["event"].as_str().unwrap_or_default().to_owned();
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("the event field is not one JSON event ({e}): {line}"))
        })
        .collect()
}

/// The events of request `name` in namespace `ns`.
fn of_request(events: &[Value], ns: &str, name: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["namespace"] == ns && e["request"]["name"] == name)
        .cloned()
        .collect()
}

/// (type, actor user) of each event.
fn story(events: &[Value]) -> Vec<(String, Option<String>)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["actor"]["user"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn pair(t: &str, user: Option<&str>) -> (String, Option<String>) {
    (t.to_owned(), user.map(str::to_owned))
}

#[tokio::test]
async fn a_request_story_and_a_refused_login_are_audit_events_in_the_logs() {
    let w = ProxiedWorld::start(
        "audit",
        ProxiedWorld::local_storage,
        json!({"approval": {"required": 1}}),
    )
    .await;
    let ns = w.s.ns.clone();
    let operator_log = w.cp.dir().join("operator.log");

    w.s.apply(w.cp, User::Alice, &w.request("story")).ok();
    w.s.wait_phase("story", Phase::Pending, Duration::from_secs(10))
        .await;
    w.s.annotate(w.cp, User::Bob, "story", annotations::APPROVE, "lgtm")
        .ok();
    let issued =
        w.s.wait_phase("story", Phase::Issued, Duration::from_secs(10))
            .await;
    let status = issued.status.clone().unwrap_or_default();
    let uid = issued.metadata.uid.clone().unwrap_or_default();
    let cert = w.dir.path().join("story-cert.pub");
    std::fs::write(&cert, status.certificate.clone().unwrap_or_default()).unwrap();

    let user = format!("{}@db1", w.login);
    let out = w.ssh(&cert, &user, &["echo audit-hello; exit 3"]).run();
    assert_eq!(out.stdout.trim(), "audit-hello", "{out:?}");
    assert_eq!(out.code, Some(3), "{out:?}");

    w.s.annotate(w.cp, User::Alice, "story", annotations::REVOKE, "done")
        .ok();
    w.s.wait_phase("story", Phase::Revoked, Duration::from_secs(10))
        .await;

    // The operator's story, in order, with who did what.
    let operator = wait_for(
        Duration::from_secs(10),
        "the operator's audit events of the story",
        || async {
            let log = std::fs::read_to_string(&operator_log).unwrap_or_default();
            let events = of_request(&audit_events(&log), &ns, "story");
            (events.len() >= 4).then_some(events)
        },
    )
    .await;
    assert_eq!(
        story(&operator),
        vec![
            pair("requestCreated", Some("alice")),
            pair("approved", Some("bob")),
            pair("issued", None),
            pair("revoked", Some("alice")),
        ],
        "{operator:#?}"
    );
    for event in &operator {
        assert_eq!(event["request"]["uid"], uid.as_str(), "{event}");
        assert!(
            event["time"]
                .as_str()
                .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()),
            "time is not RFC 3339: {event}"
        );
    }
    assert_eq!(operator[0]["actor"]["kind"], "kubernetes");
    assert!(
        operator[0]["actor"]["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "dev")),
        "{}",
        operator[0]
    );
    assert_eq!(operator[1]["message"], "lgtm");
    assert_eq!(operator[3]["outcome"], "Revoked");

    // The proxy's: the login for the request, the session with its exit status and bytes.
    let proxy = wait_for(
        Duration::from_secs(10),
        "the proxy's audit events of the session",
        || async {
            let events = of_request(&audit_events(&w.proxy.log_text()), &ns, "story");
            events
                .iter()
                .any(|e| e["type"] == "sessionEnded")
                .then_some(events)
        },
    )
    .await;
    // The recording's upload races the end (its recordingStored is checked below).
    let proxy: Vec<Value> = proxy
        .into_iter()
        .filter(|e| e["type"] != "recordingStored")
        .collect();
    assert_eq!(
        story(&proxy),
        vec![
            pair("loginAccepted", Some("alice")),
            pair("sessionStarted", Some("alice")),
            pair("command", Some("alice")),
            pair("sessionEnded", Some("alice")),
        ],
        "{proxy:#?}"
    );
    assert_eq!(
        proxy[2]["command"],
        json!({"line": "echo audit-hello; exit 3", "exact": true})
    );
    let login = &proxy[0];
    assert_eq!(login["actor"]["kind"], "ssh");
    assert!(
        login["actor"]["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("SHA256:")),
        "{login}"
    );
    assert!(
        login["sourceAddress"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{login}"
    );
    assert_eq!(login["request"]["uid"], uid.as_str());
    assert_eq!(login["host"], "db1");
    assert_eq!(login["login"], w.login.as_str());
    let ended = &proxy[3];
    assert_eq!(ended["sessionId"], proxy[1]["sessionId"]);
    assert_eq!(ended["outcome"], "exit 3", "{ended}");
    let message = ended["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("12 bytes to the client"),
        "`audit-hello\\n` is 12 bytes: {message}"
    );

    // An attacker's own CA: refused, with the rule and where it came from.
    let (rogue_ca, _) = generate_key(w.dir.path(), "rogue-ca");
    let principal = identity::proxied_principal(&ns, "story");
    let rogue = w.certificate_from(
        &rogue_ca,
        "rogue",
        &CertSpec {
            key_id: status.key_id.as_deref().unwrap_or_default(),
            principals: &[&principal],
            validity: "-5m:+1h",
            serial: 1,
        },
    );
    let out = w.ssh(&rogue, &user, &["true"]).run();
    assert_eq!(out.code, Some(255), "{out:?}");
    let refused = wait_for(Duration::from_secs(10), "a loginRefused event", || async {
        audit_events(&w.proxy.log_text())
            .into_iter()
            .find(|e| e["type"] == "loginRefused" && e["actor"]["user"] == user.as_str())
    })
    .await;
    assert!(
        refused["sourceAddress"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{refused}"
    );
    assert!(
        refused["outcome"].as_str().is_some_and(|o| !o.is_empty()),
        "the rule is named: {refused}"
    );
    assert!(
        refused["actor"]["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("SHA256:")),
        "{refused}"
    );
    assert!(refused.get("request").is_none(), "{refused}");
}

/// The events of `type_` among `events`.
fn of_type<'a>(events: &'a [Value], type_: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == type_).collect()
}

/// Wait until request `name`'s proxy events hold at least `count` of `type_`; all of them.
async fn proxy_events(w: &ProxiedWorld, name: &str, type_: &str, count: usize) -> Vec<Value> {
    let ns = w.s.ns.clone();
    wait_for(
        Duration::from_secs(20),
        &format!("{count} {type_} event(s) of {name}"),
        || async {
            let events = of_request(&audit_events(&w.proxy.log_text()), &ns, name);
            (of_type(&events, type_).len() >= count).then_some(events)
        },
    )
    .await
}

/// Every session event names where the engineer came from and the key it used.
fn assert_origin(event: &Value) {
    assert!(
        event["sourceAddress"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{event}"
    );
    assert!(
        event["actor"]["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("SHA256:")),
        "{event}"
    );
    assert_eq!(event["actor"]["user"], "alice", "{event}");
    assert!(event["sessionId"].as_str().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn commands_file_operations_forwards_and_stored_recordings_are_audit_events() {
    let w = ProxiedWorld::start(
        "audit-acts",
        ProxiedWorld::local_storage,
        json!({"certificate": {"extensions": ["permit-pty", "permit-port-forwarding"]},
               "recording": {"recordInput": true, "allowForwards": true}}),
    )
    .await;
    let cert = w.issue(w.request("acts")).await;
    let user = format!("{}@db1", w.login);

    // An exec request: its command line, exactly.
    let out = w.ssh(&cert, &user, &["echo hi"]).run();
    assert_eq!(out.stdout.trim(), "hi", "{out:?}");
    let events = proxy_events(&w, "acts", "command", 1).await;
    let exec = of_type(&events, "command")[0];
    assert_eq!(
        exec["command"],
        json!({"line": "echo hi", "exact": true}),
        "{exec}"
    );
    assert_origin(exec);
    let started = of_type(&events, "sessionStarted");
    assert_eq!(exec["sessionId"], started[0]["sessionId"], "{events:#?}");

    // An interactive shell at a real pty: the typed lines, rebuilt (best effort).
    let out = w.pty_session(
        &cert,
        &user,
        &json!([
            {"send": "echo one\r"},
            {"expect": "one"},
            {"sleep": 0.3},
            {"send": "exit\r"},
        ]),
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, w.proxy.log_tail());
    let events = proxy_events(&w, "acts", "command", 3).await;
    let typed: Vec<&Value> = of_type(&events, "command")
        .into_iter()
        .filter(|e| e["command"]["exact"] == false)
        .collect();
    assert_eq!(
        typed
            .iter()
            .map(|e| &e["command"]["line"])
            .collect::<Vec<_>>(),
        ["echo one", "exit"],
        "{typed:#?}"
    );
    let shell = of_type(&events, "sessionStarted")
        .into_iter()
        .find(|e| e["outcome"] == "shell")
        .unwrap_or_else(|| panic!("no shell session: {events:#?}"));
    for event in &typed {
        assert_eq!(event["sessionId"], shell["sessionId"], "{event}");
        assert_origin(event);
    }

    // sftp -b: put, rename, remove; one fileOperation each, with the paths.
    let local = w.dir.path().join("up.txt");
    std::fs::write(&local, "twelve bytes").unwrap();
    let remote = w.dir.path().join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    let r = remote.display();
    let batch = format!(
        "put {} {r}/up.txt\nrename {r}/up.txt {r}/moved.txt\nrm {r}/moved.txt\n",
        local.display()
    );
    let out = w.client(Client::Sftp, &cert, &user).stdin(batch).run();
    assert_eq!(out.code, Some(0), "{out:?}\n{}", w.proxy.log_tail());
    let events = proxy_events(&w, "acts", "fileOperation", 4).await;
    let files: Vec<Value> = of_type(&events, "fileOperation")
        .iter()
        .map(|e| e["file"].clone())
        .collect();
    let want = [
        json!({"operation": "open", "path": format!("{r}/up.txt")}),
        json!({"operation": "close", "path": format!("{r}/up.txt"), "bytes": 12}),
        json!({"operation": "rename", "path": format!("{r}/up.txt"),
               "targetPath": format!("{r}/moved.txt")}),
        json!({"operation": "remove", "path": format!("{r}/moved.txt")}),
    ];
    // In this order (the client may add a setstat after the put).
    let mut at = 0;
    for file in &want {
        let Some(found) = files[at..].iter().position(|f| f == file) else {
            panic!("{file} not among the fileOperation events (after #{at}): {files:#?}");
        };
        at += found + 1;
    }
    let sftp = of_type(&events, "sessionStarted")
        .into_iter()
        .find(|e| e["outcome"] == "subsystem")
        .unwrap_or_else(|| panic!("no sftp session: {events:#?}"));
    for event in of_type(&events, "fileOperation") {
        assert_eq!(event["sessionId"], sftp["sessionId"], "{event}");
        assert_origin(event);
    }
    // No command events from the sftp session: its input is a binary protocol.
    assert!(
        of_type(&events, "command")
            .iter()
            .all(|e| e["sessionId"] != sftp["sessionId"]),
        "{events:#?}"
    );

    // ssh -L, used once: opened, then closed with the bytes each way.
    let port = gatehouse_tests::net::free_port();
    let to = format!("127.0.0.1:{}", w.sshd.port());
    let forwarding = w
        .ssh(&cert, &user, &[])
        .flag("-N")
        .flag("-o")
        .flag("ExitOnForwardFailure=yes")
        .flag("-L")
        .flag(format!("127.0.0.1:{port}:{to}"))
        .spawn();
    let mut stream = wait_for(Duration::from_secs(15), "the -L listener", || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .await;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"SSH-2.0-forward-test\r\n").unwrap();
    let mut banner = [0u8; 7];
    stream.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0");
    drop(stream);
    let events = proxy_events(&w, "acts", "forwardClosed", 1).await;
    let _ = forwarding.kill();
    let opened = of_type(&events, "forwardOpened");
    let closed = of_type(&events, "forwardClosed");
    assert_eq!(opened.len(), 1, "{events:#?}");
    let sshd_port = u64::from(w.sshd.port());
    assert_eq!(
        opened[0]["forward"],
        json!({"direction": "local", "host": "127.0.0.1", "port": sshd_port}),
        "{}",
        opened[0]
    );
    let forward = &closed[0]["forward"];
    assert_eq!(forward["host"], "127.0.0.1");
    assert_eq!(forward["port"], sshd_port);
    assert!(
        forward["bytesToTarget"].as_u64().is_some_and(|n| n >= 22),
        "{forward}"
    );
    assert!(
        forward["bytesToClient"].as_u64().is_some_and(|n| n >= 7),
        "{forward}"
    );
    assert_eq!(opened[0]["sessionId"], closed[0]["sessionId"]);
    assert_origin(opened[0]);
    assert_origin(closed[0]);

    // Each recorded session's recordingStored names exactly the key and sha256 of the
    // request's status: the audit API serves recordings by this key only.
    let sessions = w.recorded("acts", 3, Duration::from_secs(30)).await;
    let events = proxy_events(&w, "acts", "recordingStored", 3).await;
    let stored = of_type(&events, "recordingStored");
    for session in &sessions {
        let Some(recording) = session.recording.clone() else {
            continue;
        };
        let event = stored
            .iter()
            .find(|e| e["sessionId"] == session.id.as_str())
            .unwrap_or_else(|| panic!("no recordingStored for {}: {stored:#?}", session.id));
        assert_eq!(
            event["recording"],
            json!({"key": recording.key, "sha256": recording.sha256, "bytes": recording.bytes}),
            "{event}"
        );
        let object = std::fs::read(w.local_store().join(&recording.key)).unwrap();
        assert_eq!(object.len() as i64, recording.bytes);
    }
    assert_eq!(
        stored.len(),
        3,
        "one per recording, none for forwards: {stored:#?}"
    );
}

#[tokio::test]
async fn keystrokes_a_policy_keeps_out_of_the_recording_are_no_command_events() {
    // The default policy: recordInput off, so what is typed at a terminal (passwords too) is
    // neither recorded nor audited; an exec's command line still is.
    let w = ProxiedWorld::with_local_store("audit-private").await;
    let cert = w.issue(w.request("private")).await;
    let user = format!("{}@db1", w.login);
    let out = w.pty_session(
        &cert,
        &user,
        &json!([
            {"send": "echo typed-$((6*7))\r"},
            {"expect": "typed-42"},
            {"sleep": 0.3},
            {"send": "exit\r"},
        ]),
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, w.proxy.log_tail());
    let out = w.ssh(&cert, &user, &["echo exec-line"]).run();
    assert_eq!(out.stdout.trim(), "exec-line", "{out:?}");
    let events = proxy_events(&w, "private", "sessionEnded", 2).await;
    let commands: Vec<&Value> = of_type(&events, "command");
    assert_eq!(
        commands
            .iter()
            .map(|e| e["command"].clone())
            .collect::<Vec<_>>(),
        [json!({"line": "echo exec-line", "exact": true})],
        "{events:#?}"
    );
    let log = w.proxy.log_text();
    assert!(
        !audit_events(&log)
            .iter()
            .any(|e| e.to_string().contains("typed-$")),
        "the typed line is in an audit event"
    );
}
