#![allow(clippy::unwrap_used)]

use super::*;

fn string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// A packet: length, type, request id, fields.
fn packet(kind: u8, id: u32, fields: &[Vec<u8>]) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend(id.to_be_bytes());
    for f in fields {
        body.extend(f);
    }
    let mut p = (body.len() as u32).to_be_bytes().to_vec();
    p.extend(body);
    p
}

fn u32b(n: u32) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

#[test]
fn an_upload_and_a_download_are_audited_with_paths_flags_and_bytes() {
    let mut a = SftpAudit::new();
    let attrs = u32b(0);
    // put: open for write/create/truncate, two writes, close.
    let open = packet(3, 1, &[string(b"/tmp/up.txt"), u32b(0x1a), attrs.clone()]);
    assert_eq!(
        a.from_client(&open).unwrap(),
        [AuditEvent::Open {
            path: "/tmp/up.txt".into(),
            flags: "write,create,truncate".into()
        }]
    );
    a.from_server(&packet(102, 1, &[string(b"H1")])).unwrap();
    let write = |id, data: &[u8]| {
        packet(
            6,
            id,
            &[string(b"H1"), 0u64.to_be_bytes().to_vec(), string(data)],
        )
    };
    // Delivered in awkward pieces: one byte, then the rest with the next packet.
    let mut stream = write(2, &[b'x'; 1000]);
    stream.extend(write(3, &[b'y'; 24]));
    assert!(a.from_client(&stream[..1]).unwrap().is_empty());
    assert!(a.from_client(&stream[1..]).unwrap().is_empty());
    // The close is audited when the server answers it (replies before it still count).
    assert!(
        a.from_client(&packet(4, 4, &[string(b"H1")]))
            .unwrap()
            .is_empty()
    );
    let events = a.from_server(&packet(101, 4, &[u32b(0)])).unwrap();
    assert_eq!(
        events,
        [AuditEvent::Close {
            path: "/tmp/up.txt".into(),
            read: 0,
            written: 1024
        }]
    );
    // get: open for read, a read answered with 300 bytes, a read hitting EOF, close.
    a.from_client(&packet(3, 5, &[string(b"/etc/hosts"), u32b(1), attrs]))
        .unwrap();
    a.from_server(&packet(102, 5, &[string(b"H2")])).unwrap();
    a.from_client(&packet(5, 6, &[string(b"H2"), vec![0; 8], u32b(32768)]))
        .unwrap();
    a.from_server(&packet(103, 6, &[string(&[b'z'; 300])]))
        .unwrap();
    a.from_client(&packet(5, 7, &[string(b"H2"), vec![0; 8], u32b(32768)]))
        .unwrap();
    a.from_server(&packet(101, 7, &[u32b(1), string(b"EOF"), string(b"")]))
        .unwrap();
    a.from_client(&packet(4, 8, &[string(b"H2")])).unwrap();
    let events = a.from_server(&packet(101, 8, &[u32b(0)])).unwrap();
    assert_eq!(
        events[0].describe(),
        "sftp close /etc/hosts (read 300 bytes, wrote 0 bytes)"
    );
    assert!(
        a.files.is_empty() && a.reading.is_empty() && a.opening.is_empty() && a.closing.is_empty()
    );
}

#[test]
fn namespace_changes_are_audited() {
    let mut a = SftpAudit::new();
    for (packet, want) in [
        (packet(13, 1, &[string(b"/tmp/a")]), "sftp remove /tmp/a"),
        (
            packet(18, 2, &[string(b"/tmp/a"), string(b"/tmp/b")]),
            "sftp rename /tmp/a -> /tmp/b",
        ),
        (
            packet(14, 3, &[string(b"/tmp/d"), u32b(0)]),
            "sftp mkdir /tmp/d",
        ),
        (packet(15, 4, &[string(b"/tmp/d")]), "sftp rmdir /tmp/d"),
        (
            packet(9, 5, &[string(b"/tmp/b"), u32b(4), u32b(0o600)]),
            "sftp setstat /tmp/b",
        ),
        (
            packet(20, 6, &[string(b"/etc/passwd"), string(b"/tmp/l")]),
            "sftp symlink /etc/passwd /tmp/l",
        ),
        (
            packet(
                200,
                7,
                &[
                    string(b"posix-rename@openssh.com"),
                    string(b"/a"),
                    string(b"/b"),
                ],
            ),
            "sftp rename /a -> /b",
        ),
        (
            packet(
                200,
                8,
                &[
                    string(b"hardlink@openssh.com"),
                    string(b"/b"),
                    string(b"/c"),
                ],
            ),
            "sftp hardlink /b -> /c",
        ),
        (
            packet(
                200,
                9,
                &[string(b"lsetstat@openssh.com"), string(b"/c"), u32b(0)],
            ),
            "sftp setstat /c",
        ),
    ] {
        let events = a.from_client(&packet).unwrap();
        assert_eq!(events.len(), 1, "{want}");
        assert_eq!(events[0].describe(), want);
    }
    // Reads of directories and unknown packets say nothing.
    assert!(
        a.from_client(&packet(16, 7, &[string(b".")]))
            .unwrap()
            .is_empty()
    );
    assert!(a.from_client(&packet(201, 8, &[])).unwrap().is_empty());
    let statvfs = packet(200, 9, &[string(b"statvfs@openssh.com"), string(b"/")]);
    assert!(a.from_client(&statvfs).unwrap().is_empty());
}

#[test]
fn a_failed_open_tracks_nothing_and_truncated_packets_are_ignored() {
    let mut a = SftpAudit::new();
    a.from_client(&packet(3, 1, &[string(b"/root/x"), u32b(1), u32b(0)]))
        .unwrap();
    a.from_server(&packet(101, 1, &[u32b(3), string(b"denied"), string(b"")]))
        .unwrap();
    assert!(a.opening.is_empty() && a.files.is_empty());
    // A packet whose string runs past its end is skipped, not trusted.
    let mut bad = vec![13];
    bad.extend(1u32.to_be_bytes());
    bad.extend(1000u32.to_be_bytes());
    bad.extend(b"short");
    let mut p = (bad.len() as u32).to_be_bytes().to_vec();
    p.extend(bad);
    assert!(a.from_client(&p).unwrap().is_empty());
}

#[test]
fn oversized_packets_stop_the_audit_and_tracking_is_bounded() {
    let mut a = SftpAudit::new();
    let huge = ((MAX_PACKET + 1) as u32).to_be_bytes();
    assert!(a.from_client(&huge).is_err());
    assert!(a.from_client(&(u32::MAX).to_be_bytes()).is_err());
    // Only the packet in progress is buffered.
    let mut b = SftpAudit::new();
    let p = packet(6, 1, &[string(b"H"), vec![0; 8], string(&vec![0; 200_000])]);
    b.from_client(&p[..150_000]).unwrap();
    assert!(b.from_client.buf.len() <= MAX_PACKET + 4);
    b.from_client(&p[150_000..]).unwrap();
    assert!(b.from_client.buf.is_empty());

    // Past the bound the audit cannot follow: an error (which ends a required recording),
    // never a file silently untracked.
    let mut c = SftpAudit::new();
    for id in 0..MAX_TRACKED as u32 {
        c.from_client(&packet(3, id, &[string(b"/f"), u32b(1), u32b(0)]))
            .unwrap();
    }
    let full = c.from_client(&packet(3, 5000, &[string(b"/f"), u32b(1), u32b(0)]));
    assert!(full.unwrap_err().0.contains("more than 1024"));
    assert_eq!(c.opening.len(), MAX_TRACKED);
}

#[test]
fn a_reused_request_id_stops_the_audit() {
    // OPEN id 1 /secret, then OPEN id 1 /decoy before the reply: the handle could be
    // attributed to either path.
    let mut a = SftpAudit::new();
    a.from_client(&packet(3, 1, &[string(b"/secret"), u32b(1), u32b(0)]))
        .unwrap();
    let reused = a.from_client(&packet(3, 1, &[string(b"/decoy"), u32b(1), u32b(0)]));
    assert!(reused.unwrap_err().0.contains("reused SFTP request 1"));
}

#[test]
fn replies_to_reads_pipelined_before_the_close_still_count() {
    let mut a = SftpAudit::keeping(Some(64));
    a.from_client(&packet(3, 1, &[string(b"/etc/shadow"), u32b(1), u32b(0)]))
        .unwrap();
    a.from_server(&packet(102, 1, &[string(b"H9")])).unwrap();
    // Two READs and the CLOSE sent without waiting, then the replies.
    let mut burst = Vec::new();
    for (id, offset) in [(2u32, 0u64), (3, 5)] {
        burst.extend(packet(
            5,
            id,
            &[string(b"H9"), offset.to_be_bytes().to_vec(), u32b(5)],
        ));
    }
    burst.extend(packet(4, 4, &[string(b"H9")]));
    assert!(a.from_client(&burst).unwrap().is_empty());
    let mut replies = packet(103, 2, &[string(b"root:")]);
    replies.extend(packet(103, 3, &[string(b"x:0:0")]));
    replies.extend(packet(101, 4, &[u32b(0)]));
    let events = a.from_server(&replies).unwrap();
    assert_eq!(
        content_of(&events),
        [
            (Direction::Read, 0, b"root:".to_vec()),
            (Direction::Read, 5, b"x:0:0".to_vec())
        ]
    );
    assert_eq!(
        events.last(),
        Some(&AuditEvent::Close {
            path: "/etc/shadow".into(),
            read: 10,
            written: 0
        })
    );
}

fn content_of(events: &[AuditEvent]) -> Vec<(Direction, u64, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            AuditEvent::Content {
                direction,
                offset,
                data,
                ..
            } => Some((*direction, *offset, data.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn content_is_kept_only_when_asked_bounded_per_file_and_direction() {
    let write = |id, offset: u64, data: &[u8]| {
        packet(
            6,
            id,
            &[string(b"H1"), offset.to_be_bytes().to_vec(), string(data)],
        )
    };
    let open = packet(3, 1, &[string(b"/tmp/up"), u32b(0x1a), u32b(0)]);
    // (bound, writes, content kept, a cut reported?)
    type Case<'a> = (Option<u64>, Vec<&'a [u8]>, Vec<(u64, &'a [u8])>, bool);
    let cases: Vec<Case<'_>> = vec![
        (None, vec![b"hello", b"world"], vec![], false),
        (
            Some(100),
            vec![b"hello", b"world"],
            vec![(0, b"hello"), (5, b"world")],
            false,
        ),
        (
            Some(7),
            vec![b"hello", b"world"],
            vec![(0, b"hello"), (5, b"wo")],
            true,
        ),
        (
            Some(5),
            vec![b"hello", b"world", b"again"],
            vec![(0, b"hello")],
            true,
        ),
    ];
    for (bound, writes, want, cut) in cases {
        let mut a = SftpAudit::keeping(bound);
        a.from_client(&open).unwrap();
        a.from_server(&packet(102, 1, &[string(b"H1")])).unwrap();
        let mut events = Vec::new();
        let mut offset = 0;
        for (i, data) in writes.iter().enumerate() {
            events.extend(a.from_client(&write(2 + i as u32, offset, data)).unwrap());
            offset += data.len() as u64;
        }
        let kept: Vec<(u64, Vec<u8>)> = content_of(&events)
            .into_iter()
            .map(|(d, o, data)| {
                assert_eq!(d, Direction::Write);
                (o, data)
            })
            .collect();
        let want: Vec<(u64, Vec<u8>)> = want.iter().map(|(o, d)| (*o, d.to_vec())).collect();
        assert_eq!(kept, want, "bound {bound:?}");
        let cuts: Vec<String> = events
            .iter()
            .filter(|e| matches!(e, AuditEvent::ContentCut { .. }))
            .map(AuditEvent::describe)
            .collect();
        assert_eq!(cuts.len(), usize::from(cut), "bound {bound:?}: {cuts:?}");
        if cut {
            assert_eq!(
                cuts[0],
                format!("sftp content-cut write {} /tmp/up", bound.unwrap())
            );
        }
        // The close still counts every byte.
        a.from_client(&packet(4, 9, &[string(b"H1")])).unwrap();
        let close = a.from_server(&packet(101, 9, &[u32b(0)])).unwrap();
        assert_eq!(
            close[0],
            AuditEvent::Close {
                path: "/tmp/up".into(),
                read: 0,
                written: offset
            }
        );
    }
}

#[test]
fn read_content_comes_from_data_replies_at_the_requested_offset() {
    let mut a = SftpAudit::keeping(Some(4));
    a.from_client(&packet(3, 1, &[string(b"/etc/motd"), u32b(1), u32b(0)]))
        .unwrap();
    a.from_server(&packet(102, 1, &[string(b"H2")])).unwrap();
    a.from_client(&packet(
        5,
        2,
        &[string(b"H2"), 10u64.to_be_bytes().to_vec(), u32b(32768)],
    ))
    .unwrap();
    let events = a
        .from_server(&packet(103, 2, &[string(b"abcdef")]))
        .unwrap();
    assert_eq!(
        content_of(&events),
        [(Direction::Read, 10, b"abcd".to_vec())]
    );
    assert_eq!(
        events[0].describe(),
        "sftp content read 10 YWJjZA== /etc/motd"
    );
    assert!(!events[0].logged(), "content never goes to the log");
    assert_eq!(events[1].describe(), "sftp content-cut read 4 /etc/motd");
    assert!(events[1].logged());
    // Without the option, replies say nothing.
    let mut b = SftpAudit::new();
    b.from_client(&packet(3, 1, &[string(b"/etc/motd"), u32b(1), u32b(0)]))
        .unwrap();
    b.from_server(&packet(102, 1, &[string(b"H2")])).unwrap();
    b.from_client(&packet(5, 2, &[string(b"H2"), vec![0; 8], u32b(32768)]))
        .unwrap();
    assert!(
        b.from_server(&packet(103, 2, &[string(b"abcdef")]))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn kept_content_is_charged_to_the_sessions_spool_budget() {
    use crate::recording::{Recorder, SessionKind, budget::SpoolBudget, tests::meta};
    let upload = |keep: Option<u64>| {
        let dir = tempfile::tempdir().unwrap();
        let mut m = meta("c0ffee00c0ffee00");
        m.kind = SessionKind::Subsystem {
            name: "sftp".into(),
        };
        m.sftp_content_bytes = keep;
        let budget = SpoolBudget::new(u64::MAX, 8 * 1024, 0);
        let mut rec = Recorder::create_within(dir.path(), m, budget).unwrap();
        rec.input(&packet(3, 1, &[string(b"/tmp/big"), u32b(0x1a), u32b(0)]))
            .unwrap();
        rec.subsystem_output(&packet(102, 1, &[string(b"H1")]))
            .unwrap();
        // Four writes of 3000 bytes: 12 000 bytes of content, 16 000 in base64.
        let results: Vec<bool> = (0..4u64)
            .map(|i| {
                let write = packet(
                    6,
                    2 + i as u32,
                    &[
                        string(b"H1"),
                        (i * 3000).to_be_bytes().to_vec(),
                        string(&[b'q'; 3000]),
                    ],
                );
                rec.input(&write).is_ok()
            })
            .collect();
        let over = rec.over_budget();
        let finished = rec.finish(Some(0)).unwrap();
        let cast = std::fs::read_to_string(&finished.cast_path).unwrap();
        (results, over, cast)
    };
    // Without content an upload costs its audit lines only.
    let (results, over, cast) = upload(None);
    assert!(results.iter().all(|ok| *ok) && !over);
    assert!(!cast.contains("sftp content"));
    // With it, the content fills the 8 KiB session budget (header and open, then 4000 bytes of
    // base64 per write): the second write breaks it and fails (the session ends under
    // recording.required); what came before stays in the recording, later writes are dropped.
    let (results, over, cast) = upload(Some(1 << 20));
    assert_eq!(results, [true, false, true, true]);
    assert!(over);
    assert_eq!(cast.matches("sftp content write").count(), 1, "{cast}");
}

#[test]
fn the_recorder_tells_its_hook_each_file_operation_but_not_content() {
    use std::sync::{Arc, Mutex};

    use crate::recording::{Recorder, SessionKind, tests::meta};
    let dir = tempfile::tempdir().unwrap();
    let mut m = meta("c0ffee00c0ffee01");
    m.kind = SessionKind::Subsystem {
        name: "sftp".into(),
    };
    m.sftp_content_bytes = Some(1024);
    let mut rec = Recorder::create(dir.path(), m).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    rec.on_file_operation(move |op| into.lock().unwrap().push(op.describe()));
    rec.input(&packet(3, 1, &[string(b"/tmp/up"), u32b(0x1a), u32b(0)]))
        .unwrap();
    rec.subsystem_output(&packet(102, 1, &[string(b"H1")]))
        .unwrap();
    rec.input(&packet(
        6,
        2,
        &[string(b"H1"), 0u64.to_be_bytes().to_vec(), string(b"data")],
    ))
    .unwrap();
    rec.input(&packet(4, 3, &[string(b"H1")])).unwrap();
    rec.subsystem_output(&packet(101, 3, &[u32b(0)])).unwrap();
    rec.input(&packet(18, 4, &[string(b"/tmp/up"), string(b"/tmp/moved")]))
        .unwrap();
    rec.input(&packet(13, 5, &[string(b"/tmp/moved")])).unwrap();
    let cast = std::fs::read_to_string(rec.finish(Some(0)).unwrap().cast_path).unwrap();
    assert!(cast.contains("sftp content write"), "{cast}");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "sftp open /tmp/up (write,create,truncate)",
            "sftp close /tmp/up (read 0 bytes, wrote 4 bytes)",
            "sftp rename /tmp/up -> /tmp/moved",
            "sftp remove /tmp/moved",
        ]
    );
}
