//! File transfers are audited (issue 20 §1, SFTP): the real `sftp` client → `gatehouse-proxy`
//! → a real `sshd`'s sftp-server. Every operation is an audit event (`"m"`) in the stored
//! recording and a log line, with paths, flags and byte counts; the files' content is not.

use std::time::Duration;

use gatehouse_tests::{proxied_world::ProxiedWorld, ssh_client::Client};

#[tokio::test]
async fn an_sftp_session_records_each_operation_with_paths_and_bytes_but_no_content() {
    let w = ProxiedWorld::with_local_store("sftp-audit").await;
    let cert = w.issue(w.request("sftp")).await;
    let user = format!("{}@db1", w.login);

    let content = "SECRET-CONTENT-".repeat(1000); // 15000 bytes
    let local = w.dir.path().join("up.txt");
    std::fs::write(&local, &content).unwrap();
    let remote = w.dir.path().join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    let r = remote.display();
    let back = w.dir.path().join("back.txt");
    let batch = format!(
        "put {local} {r}/up.txt\nget {r}/up.txt {back}\nrename {r}/up.txt {r}/moved.txt\n\
         chmod 600 {r}/moved.txt\nmkdir {r}/newdir\nrmdir {r}/newdir\nrm {r}/moved.txt\n",
        local = local.display(),
        back = back.display(),
    );
    let out = w.client(Client::Sftp, &cert, &user).stdin(batch).run();
    assert_eq!(
        out.code,
        Some(0),
        "sftp: {}\n{}",
        out.stderr,
        w.proxy.log_tail()
    );
    assert_eq!(std::fs::read_to_string(&back).unwrap(), content);
    assert!(!remote.join("moved.txt").exists());

    let sessions = w.recorded("sftp", 1, Duration::from_secs(30)).await;
    let key = sessions[0].recording.clone().unwrap().key;
    let cast = std::fs::read_to_string(w.local_store().join(&key)).unwrap();
    let marks: Vec<String> = cast
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e[1] == "m")
        .map(|e| e[2].as_str().unwrap_or_default().to_owned())
        .collect();
    let want = [
        format!("sftp open {r}/up.txt (write,create,truncate)"),
        format!("sftp close {r}/up.txt (read 0 bytes, wrote 15000 bytes)"),
        format!("sftp open {r}/up.txt (read)"),
        format!("sftp close {r}/up.txt (read 15000 bytes, wrote 0 bytes)"),
        format!("sftp rename {r}/up.txt -> {r}/moved.txt"),
        format!("sftp setstat {r}/moved.txt"),
        format!("sftp mkdir {r}/newdir"),
        format!("sftp rmdir {r}/newdir"),
        format!("sftp remove {r}/moved.txt"),
    ];
    // In this order (the client may add a setstat after a put, which preserves nothing here).
    let mut at = 0;
    for event in &want {
        let found = marks[at..].iter().position(|m| m == event);
        let Some(found) = found else {
            panic!("{event:?} not in the recording's audit events (after #{at}): {marks:#?}");
        };
        at += found + 1;
    }
    assert!(
        !cast.contains("SECRET-CONTENT"),
        "file content in the recording"
    );

    // The same events are log lines naming the request and the session.
    let log = w.proxy.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"message\":\"sftp\""))
        .collect();
    for event in &want {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&serde_json::Value::from(event.as_str()).to_string())),
            "{event} not logged:\n{lines:#?}"
        );
    }
    assert!(
        lines.iter().all(|l| l.contains(&sessions[0].id)),
        "{lines:#?}"
    );
}
