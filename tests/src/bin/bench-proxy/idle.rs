//! Memory: the proxy's resident set before and with N idle interactive sessions (`ssh -tt`,
//! pty + shell), opened in small batches (the harness's sshd allows the burst: `MaxStartups`).

use std::time::{Duration, Instant};

use gatehouse_tests::command::Running;

use crate::Bench;

/// Sessions opened at once (within the proxy's per-address limit on unauthenticated ones).
const BATCH: usize = 8;
/// How long one batch may take to be open.
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);

fn active_sessions(bench: &Bench<'_>) -> usize {
    bench
        .w
        .proxy
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_proxy_sessions_active "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as usize)
}

/// Open `count` idle sessions, measure, close them: the summary line.
pub async fn idle_sessions(bench: &Bench<'_>, count: usize) -> String {
    let before = bench.w.proxy.rss_kib().unwrap_or_default();
    let mut sessions: Vec<Running> = Vec::new();
    let mut failures = Vec::new();
    while sessions.len() < count && failures.len() < 10 {
        let batch: Vec<Running> = (0..BATCH.min(count - sessions.len()))
            .map(|_| {
                bench
                    .w
                    .ssh(&bench.cert, &bench.user, &[])
                    .flag("-tt")
                    .timeout(Duration::from_secs(3600))
                    .into_cmd()
                    .stdin_open()
                    .spawn()
            })
            .collect();
        let want = sessions.len() + batch.len();
        sessions.extend(batch);
        let started = Instant::now();
        while active_sessions(bench) < want && started.elapsed() < BATCH_TIMEOUT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Drop what died (and say why), so the count is what is really open.
        let mut alive = Vec::new();
        for mut session in sessions {
            if session.has_exited() {
                failures.push(session.kill().stderr);
            } else {
                alive.push(session);
            }
        }
        sessions = alive;
    }
    // Let the sessions settle (buffers, first prompt) before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let active = active_sessions(bench);
    let after = bench.w.proxy.rss_kib().unwrap_or_default();
    let mut line = format!(
        "idle interactive sessions: {active} open; proxy RSS {:.1} MiB before, {:.1} MiB with them ({:.1} KiB per session)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / active.max(1) as f64
    );
    if let Some(first) = failures.first() {
        line.push_str(&format!(
            "\n{} sessions failed to open; the first: {}",
            failures.len(),
            first.trim()
        ));
    }
    for session in sessions {
        session.kill();
    }
    line
}
