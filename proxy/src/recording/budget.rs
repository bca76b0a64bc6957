//! The spool's budget: how many bytes one session may spool (`--spool-max-session-bytes`) and
//! how many the whole replica may hold (`--spool-max-bytes`, live sessions and recordings
//! waiting for the store together). Data comes from the recorders (every line before it is
//! written), the uploader (bytes freed when a stored recording's spool is deleted) and the spool
//! as found at start-up; decisions go back to the recorder, which refuses the write — and so
//! ends a session whose policy requires recording, with the recording kept up to that point.
//!
//! The chart sizes the spool volume and the pod's ephemeral storage above `--spool-max-bytes`,
//! so no session, however much it prints, can get the pod evicted.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::error::{Error, Result};

/// Which limit a write would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// The session's own limit.
    Session {
        /// `--spool-max-session-bytes`.
        limit: u64,
    },
    /// The replica's spool is full.
    Replica {
        /// `--spool-max-bytes`.
        limit: u64,
    },
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exceeded::Session { limit } => write!(
                f,
                "this session's recording reached its limit of {} (--spool-max-session-bytes)",
                human(*limit)
            ),
            Exceeded::Replica { limit } => write!(
                f,
                "the proxy's recording spool is full ({}, --spool-max-bytes)",
                human(*limit)
            ),
        }
    }
}

impl From<Exceeded> for Error {
    fn from(exceeded: Exceeded) -> Self {
        Error::SpoolBudget {
            message: exceeded.to_string(),
        }
    }
}

/// Whether `n` more bytes fit, for a session that spooled `session` bytes while the replica
/// holds `total`. Pure.
pub fn decide(
    total: u64,
    session: u64,
    n: u64,
    max_total: u64,
    max_session: u64,
) -> Result<(), Exceeded> {
    if session.saturating_add(n) > max_session {
        return Err(Exceeded::Session { limit: max_session });
    }
    if total.saturating_add(n) > max_total {
        return Err(Exceeded::Replica { limit: max_total });
    }
    Ok(())
}

/// The replica's spool budget, shared by every recorder and the uploader.
#[derive(Debug)]
pub struct SpoolBudget {
    max_total: u64,
    max_session: u64,
    used: AtomicU64,
}

impl SpoolBudget {
    /// A budget of `max_total` bytes for the spool and `max_session` per session, of which
    /// `used` are taken already (recordings found in the spool at start-up).
    pub fn new(max_total: u64, max_session: u64, used: u64) -> Arc<SpoolBudget> {
        Arc::new(SpoolBudget {
            max_total,
            max_session,
            used: AtomicU64::new(used),
        })
    }

    /// No limits (tests, and recorders made without a budget).
    pub fn unlimited() -> Arc<SpoolBudget> {
        Self::new(u64::MAX, u64::MAX, 0)
    }

    /// Bytes the spool holds now, by this budget's count.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether a new session can start recording: the spool is not full.
    pub fn admits_new(&self) -> Result<(), Exceeded> {
        decide(self.used(), 0, 1, self.max_total, self.max_session)
    }

    /// Take `n` bytes for a session that has spooled `session`, or say which limit forbids it.
    fn take(&self, session: u64, n: u64) -> Result<(), Exceeded> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                decide(total, session, n, self.max_total, self.max_session)
                    .ok()
                    .map(|()| total + n)
            })
            .map(|_| ())
            .map_err(|total| {
                decide(total, session, n, self.max_total, self.max_session)
                    .err()
                    .unwrap_or(Exceeded::Replica {
                        limit: self.max_total,
                    })
            })
    }

    /// Count `n` bytes whatever the limits (the proxy's own closing note: a few hundred bytes,
    /// once per session).
    fn take_anyway(&self, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` bytes left the spool (a stored recording's files were deleted).
    pub fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(n))
            });
    }
}

/// What a recorder should do with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Write it.
    Write,
    /// The budget was exceeded just now: don't write, and report it (once).
    Exceeded(Exceeded),
    /// The budget was exceeded earlier: don't write, say nothing more.
    Drop,
}

/// One session's share of the [`SpoolBudget`].
#[derive(Debug)]
pub struct SessionBudget {
    shared: Arc<SpoolBudget>,
    used: u64,
    exceeded: bool,
}

impl SessionBudget {
    /// A new session's account.
    pub fn new(shared: Arc<SpoolBudget>) -> Self {
        SessionBudget {
            shared,
            used: 0,
            exceeded: false,
        }
    }

    /// Ask for `n` bytes. Once refused, every later line is dropped: a recording that stops
    /// at the limit is complete up to it, one with holes would not be.
    pub fn charge(&mut self, n: u64) -> Charge {
        if self.exceeded {
            return Charge::Drop;
        }
        match self.shared.take(self.used, n) {
            Ok(()) => {
                self.used += n;
                Charge::Write
            }
            Err(exceeded) => {
                self.exceeded = true;
                Charge::Exceeded(exceeded)
            }
        }
    }

    /// Count the proxy's own note (why the session ended), which is written even over budget.
    pub fn charge_note(&mut self, n: u64) {
        self.used += n;
        self.shared.take_anyway(n);
    }

    /// Whether a limit was reached.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }
}

/// A budget refusal while finishing a recording only means its tail is not recorded.
pub(super) fn within_budget(result: Result<()>) -> Result<()> {
    match result {
        Err(Error::SpoolBudget { .. }) => Ok(()),
        other => other,
    }
}

/// Bytes of the recordings in `spool_dir` (its `.cast` files): what a restarted proxy finds
/// there and still has to upload counts against the spool's budget.
pub fn spool_usage(spool_dir: &Path) -> Result<u64> {
    let read_err = |source| Error::ReadSpool {
        path: spool_dir.to_owned(),
        source,
    };
    let mut used = 0;
    for entry in std::fs::read_dir(spool_dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        if entry.path().extension().is_some_and(|e| e == "cast") {
            used += entry.metadata().map_err(read_err)?.len();
        }
    }
    Ok(used)
}

/// A byte size as flags and the chart give it: `1048576`, `512Ki`, `8Mi`, `1Gi`, `2Ti`, or the
/// decimal `k`, `M`, `G`, `T`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 512Mi or 8Gi"))?;
    let factor: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use Ki, Mi, Gi or Ti)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `n` bytes for people: `1.0 MiB`, `8.0 GiB`, `512 B`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn decide_names_the_limit_a_write_would_break() {
        let s = |limit| Err(Exceeded::Session { limit });
        let r = |limit| Err(Exceeded::Replica { limit });
        for (total, session, n, want) in [
            (0, 0, 10, Ok(())),
            (90, 0, 10, Ok(())), // exactly full
            (91, 0, 10, r(100)), // the replica is full
            (0, 45, 5, Ok(())),  // exactly the session's limit
            (0, 46, 5, s(50)),   // over the session's limit
            (99, 49, 5, s(50)),  // both: the session's is named
            (u64::MAX, 0, 1, r(100)),
        ] {
            assert_eq!(
                decide(total, session, n, 100, 50),
                want,
                "{total} {session} {n}"
            );
        }
    }

    #[test]
    fn a_session_is_cut_at_its_limit_once_and_then_drops_quietly() {
        let shared = SpoolBudget::new(1000, 100, 0);
        let mut a = SessionBudget::new(shared.clone());
        assert_eq!(a.charge(60), Charge::Write);
        assert_eq!(a.charge(40), Charge::Write);
        assert_eq!(
            a.charge(1),
            Charge::Exceeded(Exceeded::Session { limit: 100 })
        );
        assert_eq!(a.charge(1), Charge::Drop);
        assert!(a.exceeded());
        a.charge_note(30);
        assert_eq!(shared.used(), 130);
        // Another session still has its own budget.
        let mut b = SessionBudget::new(shared.clone());
        assert_eq!(b.charge(100), Charge::Write);
        assert_eq!(shared.used(), 230);
    }

    #[test]
    fn the_replica_budget_is_shared_and_freed_by_uploads() {
        let shared = SpoolBudget::new(100, 80, 30); // 30 found at start-up
        let mut a = SessionBudget::new(shared.clone());
        let mut b = SessionBudget::new(shared.clone());
        assert_eq!(a.charge(40), Charge::Write);
        assert_eq!(b.charge(30), Charge::Write);
        assert_eq!(shared.admits_new(), Err(Exceeded::Replica { limit: 100 }));
        assert_eq!(
            b.charge(1),
            Charge::Exceeded(Exceeded::Replica { limit: 100 })
        );
        shared.release(30);
        assert_eq!(shared.admits_new(), Ok(()));
        assert_eq!(a.charge(30), Charge::Write);
        shared.release(1000);
        assert_eq!(shared.used(), 0);
    }

    #[test]
    fn a_recorder_over_budget_keeps_what_came_before_says_why_and_finishes() {
        use crate::recording::{Recorder, tests::meta};
        let dir = tempfile::tempdir().unwrap();
        let shared = SpoolBudget::new(1 << 20, 2_000, 0);
        let mut rec =
            Recorder::create_within(dir.path(), meta("ffff000000000001"), shared.clone()).unwrap();
        rec.output(b"EVIDENCE\r\n").unwrap();
        let flood = vec![b'x'; 300];
        let mut refused = None;
        for _ in 0..20 {
            if let Err(error) = rec.output(&flood) {
                refused = Some(error);
                break;
            }
        }
        let refused = refused.expect("the flood is refused at the session's limit");
        assert!(
            matches!(
                &refused,
                Error::SpoolBudget { message } if message.contains("limit of 2.0 KiB")
            ),
            "{refused}"
        );
        assert!(rec.over_budget());
        // Later output is dropped quietly; the proxy's note still goes in.
        rec.output(b"AFTER-THE-LIMIT").unwrap();
        rec.note("gatehouse: limit reached; session closed")
            .unwrap();
        let done = rec.finish(Some(0)).unwrap();
        let text = std::fs::read_to_string(&done.cast_path).unwrap();
        assert!(text.contains("EVIDENCE"), "{text}");
        assert!(text.contains("limit reached"), "{text}");
        assert!(!text.contains("AFTER-THE-LIMIT"), "{text}");
        assert!(text.len() <= 2_000 + 200, "{}", text.len());
        assert_eq!(shared.used(), text.len() as u64);
        assert_eq!(spool_usage(dir.path()).unwrap(), text.len() as u64);
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }

        // A full spool refuses a new recording outright.
        let full = SpoolBudget::new(10, 10, 10);
        let err = Recorder::create_within(dir.path(), meta("ffff000000000002"), full).unwrap_err();
        assert!(err.to_string().contains("--spool-max-bytes"), "{err}");
        assert!(!dir.path().join("ffff000000000002.cast").exists());
    }

    #[test]
    fn sizes_parse_like_kubernetes_quantities_and_print_for_people() {
        for (text, want) in [
            ("1048576", Ok(1 << 20)),
            ("512Ki", Ok(512 << 10)),
            ("8Mi", Ok(8 << 20)),
            ("1Gi", Ok(1 << 30)),
            ("8Gi", Ok(8 << 30)),
            ("2Ti", Ok(2 << 40)),
            ("5M", Ok(5_000_000)),
            (" 3k ", Ok(3_000)),
        ] {
            assert_eq!(parse_size(text), want, "{text}");
        }
        for bad in ["", "Gi", "1.5Gi", "8GB", "-1", "99999999999Ti"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1 << 20), "1.0 MiB");
        assert_eq!(human(8 << 30), "8.0 GiB");
        assert_eq!(
            Exceeded::Session { limit: 1 << 30 }.to_string(),
            "this session's recording reached its limit of 1.0 GiB (--spool-max-session-bytes)"
        );
    }
}
