//! Which sessions an AccessRequest's `status.sessions` keeps. Pure: data comes from the proxy
//! (the list as read, plus one new or updated entry); the list to write goes back to it.
//!
//! The list is bounded ([`MAX_SESSIONS`]), but it is not a ring: a ring lets 64 `ssh host true`
//! wash out what an engineer did first. What is kept, in this order of priority:
//! the first [`KEEP_FIRST`] sessions of the request (what access was first used for), every
//! live one, the most recent [`KEEP_FAILED`] failed ones (ended with a non-zero or no exit
//! status: cut off, killed, refused), and the most recent of the rest. `status.sessionsTotal`
//! counts every session ever recorded, so a reader sees how many were left out; their
//! recordings stay in the store (keys are dated and name the requester, host and session).

use crate::SessionRecord;

/// `status.sessions` keeps at most this many entries (the CRD's bound).
pub const MAX_SESSIONS: usize = 64;
/// The first sessions of a request are always kept.
pub const KEEP_FIRST: usize = 8;
/// At most this many failed sessions are kept beyond the first ones (the most recent).
pub const KEEP_FAILED: usize = 24;

/// Whether a session ended badly: a non-zero exit status, or none at all (a signal, a cut
/// connection, ended by the proxy). Port forwards have no exit status and never fail.
pub fn failed(entry: &SessionRecord) -> bool {
    entry.forward.is_none() && entry.end_time.is_some() && entry.exit_status != Some(0)
}

/// `entries` with `entry` merged in by id, then bounded by [`retain`]; and the new
/// `sessionsTotal` (`total` plus one when `entry` is a session not seen before; a list
/// written before the field existed counts from its length).
pub fn merge(
    mut entries: Vec<SessionRecord>,
    total: Option<i64>,
    entry: SessionRecord,
) -> (Vec<SessionRecord>, i64) {
    let mut total = total.unwrap_or(entries.len() as i64);
    let mut entry = entry;
    match entries.iter_mut().find(|e| e.id == entry.id) {
        Some(existing) => {
            entry.number = existing.number.or(entry.number);
            *existing = entry;
        }
        None => {
            total += 1;
            entry.number = Some(total);
            entries.push(entry);
        }
    }
    (retain(entries), total)
}

/// At most [`MAX_SESSIONS`] of `entries`, chosen as the module says, oldest first.
pub fn retain(mut entries: Vec<SessionRecord>) -> Vec<SessionRecord> {
    // `startTime` has whole seconds once read back from the API: `number` orders sessions
    // within one second (entries written before it existed sort first there).
    entries
        .sort_by(|a, b| (a.start_time.0, a.number, &a.id).cmp(&(b.start_time.0, b.number, &b.id)));
    if entries.len() <= MAX_SESSIONS {
        return entries;
    }
    let mut keep = vec![false; entries.len()];
    let mut kept = 0;
    let mut take = |i: usize, keep: &mut Vec<bool>| {
        if !keep[i] && kept < MAX_SESSIONS {
            keep[i] = true;
            kept += 1;
        }
    };
    for i in 0..KEEP_FIRST.min(entries.len()) {
        take(i, &mut keep);
    }
    let newest_first: Vec<usize> = (0..entries.len()).rev().collect();
    for &i in &newest_first {
        if entries[i].end_time.is_none() {
            take(i, &mut keep);
        }
    }
    let mut failed_kept = 0;
    for &i in &newest_first {
        if failed_kept < KEEP_FAILED && failed(&entries[i]) && !keep[i] {
            take(i, &mut keep);
            failed_kept += 1;
        }
    }
    for &i in &newest_first {
        take(i, &mut keep);
    }
    entries
        .into_iter()
        .zip(keep)
        .filter_map(|(e, k)| k.then_some(e))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(second: i64) -> Time {
        Time(jiff::Timestamp::from_second(second).unwrap_or_default())
    }

    /// Session `i`, started at second `1000 + i`; ended with `exit` unless live.
    fn entry(i: i64, exit: Option<Option<i64>>) -> SessionRecord {
        SessionRecord {
            id: format!("s{i:03}"),
            host: "db-1".into(),
            login: "ubuntu".into(),
            start_time: at(1_000 + i),
            number: None,
            end_time: exit.map(|_| at(2_000 + i)),
            exit_status: exit.flatten(),
            recording: None,
            forward: None,
        }
    }

    fn ids(list: &[SessionRecord]) -> Vec<String> {
        list.iter().map(|e| e.id.clone()).collect()
    }

    fn run(entries: impl IntoIterator<Item = SessionRecord>) -> (Vec<SessionRecord>, i64) {
        let mut list = Vec::new();
        let mut total = None;
        for e in entries {
            let (l, t) = merge(list, total, e);
            list = l;
            total = Some(t);
        }
        (list, total.unwrap_or(0))
    }

    #[test]
    fn a_flood_of_short_sessions_keeps_the_first_ones_and_the_newest() {
        let (list, total) = run((0..200).map(|i| entry(i, Some(Some(0)))));
        assert_eq!(total, 200);
        assert_eq!(list.len(), MAX_SESSIONS);
        let ids = ids(&list);
        let want: Vec<String> = (0..8).chain(144..200).map(|i| format!("s{i:03}")).collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn failed_and_live_sessions_outlast_successful_ones() {
        let mut sessions = vec![entry(0, Some(Some(0)))];
        sessions.push(entry(10, None)); // still live
        sessions.push(entry(11, Some(Some(3)))); // failed
        sessions.push(entry(12, Some(None))); // cut off: no exit status
        sessions.extend((20..40).map(|i| entry(i, Some(Some(1))))); // 20 more failures
        sessions.extend((100..300).map(|i| entry(i, Some(Some(0)))));
        let (list, total) = run(sessions);
        assert_eq!(total, 224);
        assert_eq!(list.len(), MAX_SESSIONS);
        let ids = ids(&list);
        for kept in ["s000", "s010", "s011", "s012", "s020", "s039", "s299"] {
            assert!(
                ids.contains(&kept.to_owned()),
                "{kept} missing from {ids:?}"
            );
        }
        // Oldest first, whatever was kept.
        assert!(
            list.windows(2)
                .all(|w| w[0].start_time.0 <= w[1].start_time.0)
        );
        // The failed ones beyond KEEP_FAILED go first: with 30 failures only 24 stay besides
        // the first eight.
        let (list, _) = run((0..8)
            .map(|i| entry(i, Some(Some(0))))
            .chain((10..40).map(|i| entry(i, Some(Some(1)))))
            .chain((100..200).map(|i| entry(i, Some(Some(0))))));
        let failed: Vec<String> = list
            .iter()
            .filter(|e| failed(e))
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(failed.len(), KEEP_FAILED, "{failed:?}");
        assert_eq!(failed[0], "s016");
    }

    #[test]
    fn an_update_replaces_its_entry_without_counting_twice() {
        let (list, total) = run([entry(1, None), entry(2, None)]);
        assert_eq!(total, 2);
        let (list, total) = merge(list, Some(total), entry(1, Some(Some(0))));
        assert_eq!(total, 2);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].exit_status, Some(0));
        assert_eq!(
            list[0].number,
            Some(1),
            "an update keeps the entry's number"
        );
        // A list written before sessionsTotal existed counts from its length.
        let (_, total) = merge(list, None, entry(3, None));
        assert_eq!(total, 3);
    }

    #[test]
    fn sessions_started_in_one_second_keep_their_order_of_arrival() {
        // 100 quick sessions in the same second, ids in no useful order (random per proxy):
        // the first eight kept are the first eight recorded, not the smallest ids.
        let sessions = (0..100).map(|i| SessionRecord {
            id: format!("{:03}", (i * 37) % 100),
            start_time: at(1_000),
            ..entry(i, Some(Some(0)))
        });
        let (list, total) = run(sessions);
        assert_eq!(total, 100);
        let first: Vec<String> = list.iter().take(KEEP_FIRST).map(|e| e.id.clone()).collect();
        let want: Vec<String> = (0..8).map(|i| format!("{:03}", (i * 37) % 100)).collect();
        assert_eq!(first, want);
        assert_eq!(list[0].number, Some(1));
        assert_eq!(list[63].number, Some(100));
    }

    #[test]
    fn more_live_sessions_than_the_bound_still_yield_a_bounded_list() {
        let (list, total) = run((0..100).map(|i| entry(i, None)));
        assert_eq!(total, 100);
        assert_eq!(list.len(), MAX_SESSIONS);
        assert_eq!(list[0].id, "s000");
        assert_eq!(list[63].id, "s099");
    }
}
