//! Logins: connect latency (`ssh host true`, a new connection each time, direct and proxied runs
//! interleaved; median and p95) and logins per second with 16 clients in parallel.

use std::{thread, time::Instant};

use crate::{Bench, Route, stats};

/// Clients logging in at once for [`parallel`].
pub const PARALLEL: usize = 16;

/// How long one `ssh host true` takes, in seconds; it must succeed.
fn connect_once(bench: &Bench<'_>, route: Route) -> f64 {
    let cmd = bench.ssh(route, &["true"]).into_cmd();
    let started = Instant::now();
    let out = cmd.run();
    assert!(out.success, "{}: {}", out.command, out.stderr);
    started.elapsed().as_secs_f64()
}

/// Connect latency, `count` of each route: the summary lines.
pub fn latency(bench: &Bench<'_>, count: usize) -> String {
    let mut direct = Vec::new();
    let mut proxy = Vec::new();
    for _ in 0..count {
        proxy.push(connect_once(bench, Route::Proxy) * 1e3);
        direct.push(connect_once(bench, Route::Direct) * 1e3);
    }
    let median = |s: &[f64]| stats::percentile(s, 50.0);
    let p95 = |s: &[f64]| stats::percentile(s, 95.0);
    format!(
        "connect + `true` ({count} each, interleaved): proxy median {:.1} ms p95 {:.1} ms, direct median {:.1} ms p95 {:.1} ms, ratio {:.2} (p95 {:.2})",
        median(&proxy),
        p95(&proxy),
        median(&direct),
        p95(&direct),
        median(&proxy) / median(&direct),
        p95(&proxy) / p95(&direct)
    )
}

/// `total` logins (`ssh host true`) by [`PARALLEL`] clients at once: logins per second and
/// how many failed.
fn logins_per_second(bench: &Bench<'_>, route: Route, total: usize) -> (f64, usize) {
    let started = Instant::now();
    let failed: usize = thread::scope(|scope| {
        let workers: Vec<_> = (0..PARALLEL)
            .map(|worker| {
                scope.spawn(move || {
                    (worker..total)
                        .step_by(PARALLEL)
                        .filter(|_| !bench.ssh(route, &["true"]).into_cmd().run().success)
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(total)).sum()
    });
    let seconds = started.elapsed().as_secs_f64();
    ((total - failed.min(total)) as f64 / seconds, failed)
}

/// Logins per second at [`PARALLEL`] in parallel, proxy then direct: the summary line.
pub fn parallel(bench: &Bench<'_>, total: usize) -> String {
    let (proxy, proxy_failed) = logins_per_second(bench, Route::Proxy, total);
    let (direct, direct_failed) = logins_per_second(bench, Route::Direct, total);
    format!(
        "logins, {total} by {PARALLEL} clients in parallel: proxy {proxy:.1}/s ({proxy_failed} failed), direct {direct:.1}/s ({direct_failed} failed), ratio {:.2}",
        proxy / direct
    )
}
