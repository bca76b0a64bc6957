//! The transfer matrix: {upload `cat > /dev/null`, download `cat FILE`} × ciphers pinned with
//! `ssh -c` × {direct, through the proxy with recording on, through an OpenSSH relay}, each
//! cell run several times with the routes interleaved (so machine noise hits all). Each run
//! measures the wall time and the CPU seconds of the box in the middle (the proxy, or the
//! relay's sshd and inner `ssh`), of the target's per-connection sshd processes and of the
//! `ssh` client, and the summaries say them per GiB. For the proxy it also measures its CPU
//! until the recording is stored (the spool empty again).

use std::{
    fs,
    io::{BufWriter, Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    Bench, Route,
    cpu::{self, Sampler},
    stats::Spread,
};

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;
/// How long the uploader may take to empty the spool after a proxied run.
const SPOOL_DRAIN: Duration = Duration::from_secs(300);

/// Which way the bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Engineer → target: `ssh host 'cat > /dev/null' < bytes`.
    Upload,
    /// Target → engineer: `ssh host cat FILE > /dev/null` (terminal output: recorded).
    Download,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Download => "download",
        }
    }
}

/// What one run cost, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    wall: f64,
    /// The proxy's CPU (or the OpenSSH relay's) while the transfer ran.
    proxy: f64,
    /// The proxy's CPU from the start until its recording was stored (0 for other routes).
    stored: f64,
    /// The store server's (MinIO's) CPU over the same time (0 without one).
    store_server: f64,
    sshd: f64,
    client: f64,
}

/// One cell of the matrix and its runs.
#[derive(Debug)]
pub struct Cell {
    direction: Direction,
    cipher: String,
    route: Route,
    samples: Vec<Sample>,
    /// Why a run failed (a cipher the server does not offer).
    failure: Option<String>,
}

/// The file a download reads: `bytes` of printable text in 100-byte lines, like a log.
pub fn download_file(dir: &Path, bytes: u64) -> PathBuf {
    let path = dir.join("download.txt");
    let line: Vec<u8> = (0..99u8)
        .map(|i| b'!' + ((u32::from(i) * 7) % 94) as u8)
        .chain([b'\n'])
        .collect();
    let block: Vec<u8> = line.iter().copied().cycle().take(1 << 20).collect();
    let file =
        fs::File::create(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let mut out = BufWriter::new(file);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        left -= n as u64;
    }
    out.flush()
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Run one transfer of `bytes` and measure it.
fn run_once(
    bench: &Bench<'_>,
    direction: Direction,
    route: Route,
    cipher: &str,
    bytes: u64,
    file: &Path,
) -> Result<Sample, String> {
    let remote = match direction {
        Direction::Upload => "cat > /dev/null".to_owned(),
        Direction::Download => format!("cat {}", file.display()),
    };
    let remote = match route {
        // The relay's shell runs the same command on the target, with the same cipher.
        Route::Relay => {
            let inner = bench.direct_ssh().flag("-c").flag(cipher).arg(remote);
            let words: Vec<String> = std::iter::once(inner.program().into())
                .chain(
                    inner
                        .command_args()
                        .iter()
                        .map(|a| a.to_string_lossy().into_owned()),
                )
                .map(|w| shell_quote(&w))
                .collect();
            words.join(" ")
        }
        Route::Direct | Route::Proxy => remote,
    };
    let ssh = bench.ssh(route, &[]).flag("-c").flag(cipher).arg(remote);
    let mut command = Command::new(ssh.program());
    command
        .args(ssh.command_args())
        .stdin(match direction {
            Direction::Upload => Stdio::piped(),
            Direction::Download => Stdio::null(),
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let proxy_pid = bench.w.proxy.pid().unwrap_or_default();
    let proxy_before = cpu::process_seconds(proxy_pid);
    let client_before = cpu::own_children_seconds();
    let sampler = Sampler::start(bench.w.sshd.pid(), "sshd");
    let relay = (route == Route::Relay).then(|| {
        [
            Sampler::start(bench.relay.pid(), "sshd"),
            Sampler::start(bench.relay.pid(), "ssh"),
        ]
    });
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("starting ssh: {e}"))?;
    let writer = child.stdin.take().map(|mut pipe| {
        thread::spawn(move || {
            let block = vec![0x5au8; 1 << 20];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                if pipe.write_all(&block[..n]).is_err() {
                    return;
                }
                left -= n as u64;
            }
        })
    });
    let mut stderr = child.stderr.take();
    let errors = thread::spawn(move || {
        let mut text = String::new();
        if let Some(pipe) = &mut stderr {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    });
    let status = child.wait().map_err(|e| format!("waiting for ssh: {e}"));
    let wall = started.elapsed().as_secs_f64();
    let sshd = sampler.stop();
    let proxy = match relay {
        Some(samplers) => samplers.into_iter().map(Sampler::stop).sum(),
        None if route == Route::Proxy => cpu::process_seconds(proxy_pid) - proxy_before,
        None => 0.0,
    };
    let client = cpu::own_children_seconds() - client_before;
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let errors = errors.join().unwrap_or_default();
    if !status?.success() {
        return Err(errors.trim().to_owned());
    }
    Ok(Sample {
        wall,
        proxy,
        stored: 0.0,
        store_server: 0.0,
        sshd,
        client,
    })
}

/// `word` as one POSIX shell word.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Delete what the local store holds (the bench's recordings add up to gigabytes).
pub fn clear_store(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            clear_store(&path);
        } else {
            let _ = fs::remove_file(&path);
        }
    }
}

/// Every cell of the matrix, `runs` times each, direct and proxied runs interleaved.
pub async fn matrix(
    bench: &Bench<'_>,
    directions: &[Direction],
    ciphers: &[String],
    bytes: u64,
    runs: usize,
) -> Vec<Cell> {
    let file = download_file(bench.w.dir.path(), bytes);
    let mut cells = Vec::new();
    for &direction in directions {
        for cipher in ciphers {
            let mut pair = [Route::Direct, Route::Proxy, Route::Relay].map(|route| Cell {
                direction,
                cipher: cipher.clone(),
                route,
                samples: Vec::new(),
                failure: None,
            });
            for _ in 0..runs {
                for cell in &mut pair {
                    if cell.failure.is_some() {
                        continue;
                    }
                    let proxy_pid = bench.w.proxy.pid().unwrap_or_default();
                    let proxy_before = cpu::process_seconds(proxy_pid);
                    let server_before = bench.store_server_seconds();
                    let run = run_once(bench, direction, cell.route, cipher, bytes, &file);
                    let mut stored = (0.0, 0.0);
                    if cell.route == Route::Proxy {
                        bench.w.proxy.await_empty_spool(SPOOL_DRAIN).await;
                        stored = (
                            cpu::process_seconds(proxy_pid) - proxy_before,
                            bench.store_server_seconds() - server_before,
                        );
                        bench.clear_store();
                    }
                    match run {
                        Ok(mut sample) => {
                            (sample.stored, sample.store_server) = stored;
                            cell.samples.push(sample);
                        }
                        Err(why) => cell.failure = Some(why),
                    }
                }
            }
            cells.extend(pair);
        }
    }
    let _ = fs::remove_file(&file);
    cells
}

/// Per-GiB spreads of one cell: wall seconds, MiB/s, proxy, sshd and client CPU seconds.
struct PerGib {
    wall: Spread,
    rate: Spread,
    proxy: Spread,
    stored: Spread,
    store_server: Spread,
    sshd: Spread,
    client: Spread,
}

fn per_gib(cell: &Cell, bytes: u64) -> Option<PerGib> {
    let gib = bytes as f64 / GIB;
    let spread =
        |f: &dyn Fn(&Sample) -> f64| Spread::of(&cell.samples.iter().map(f).collect::<Vec<_>>());
    Some(PerGib {
        wall: spread(&|s| s.wall)?,
        rate: spread(&|s| bytes as f64 / MIB / s.wall)?,
        proxy: spread(&|s| s.proxy / gib)?,
        stored: spread(&|s| s.stored / gib)?,
        store_server: spread(&|s| s.store_server / gib)?,
        sshd: spread(&|s| s.sshd / gib)?,
        client: spread(&|s| s.client / gib)?,
    })
}

/// The table (markdown, as docs/benchmarks.md shows it) and the ratios of each direct/proxy pair;
/// `with_server` adds the store server's CPU until stored (MinIO's).
pub fn report(cells: &[Cell], bytes: u64, runs: usize, with_server: bool) -> String {
    let mib = bytes as f64 / MIB;
    let (server_head, server_rule) = if with_server {
        (" store server CPU until stored |", "---|")
    } else {
        ("", "")
    };
    let mut out = format!(
        "transfers of {mib:.0} MiB, {runs} runs each (median (min–max)); CPU in seconds per GiB\n\n\
         | transfer | cipher (-c) | path | wall s | MiB/s | middle CPU | proxy CPU until stored |{server_head} sshd CPU | client CPU |\n\
         |---|---|---|---|---|---|---|{server_rule}---|---|\n"
    );
    for cell in cells {
        let head = format!(
            "| {} | {} | {} |",
            cell.direction.name(),
            cell.cipher,
            cell.route.name()
        );
        let proxy_only = |spread: &Spread| {
            if cell.route == Route::Proxy {
                spread.show(2)
            } else {
                "–".to_owned()
            }
        };
        match (per_gib(cell, bytes), &cell.failure) {
            (Some(g), _) => out.push_str(&format!(
                "{head} {} | {:.0} | {} | {} |{} {} | {} |\n",
                g.wall.show(2),
                g.rate.median,
                if cell.route == Route::Direct {
                    "–".to_owned()
                } else {
                    g.proxy.show(2)
                },
                proxy_only(&g.stored),
                if with_server {
                    format!(" {} |", proxy_only(&g.store_server))
                } else {
                    String::new()
                },
                g.sshd.show(2),
                g.client.show(2)
            )),
            (None, failure) => out.push_str(&format!(
                "{head} failed: {} | | | | |{} | |\n",
                failure
                    .as_deref()
                    .unwrap_or("no runs")
                    .lines()
                    .last()
                    .unwrap_or_default(),
                if with_server { " |" } else { "" }
            )),
        }
    }
    out.push('\n');
    for cells in cells.chunks(3) {
        let [direct, proxy, relay] = cells else {
            continue;
        };
        let (Some(d), Some(p)) = (per_gib(direct, bytes), per_gib(proxy, bytes)) else {
            continue;
        };
        out.push_str(&format!(
            "{} {}: wall proxy/direct {:.2}; proxy CPU / direct sshd CPU {:.2} (until stored {:.2}); sshd CPU behind the proxy / direct {:.2}; client CPU proxy/direct {:.2}",
            direct.direction.name(),
            direct.cipher,
            p.wall.median / d.wall.median,
            p.proxy.median / d.sshd.median,
            p.stored.median / d.sshd.median,
            p.sshd.median / d.sshd.median,
            p.client.median / d.client.median,
        ));
        if let Some(r) = per_gib(relay, bytes) {
            out.push_str(&format!(
                "; proxy CPU / OpenSSH relay CPU {:.2} (until stored {:.2}); wall proxy/relay {:.2}",
                p.proxy.median / r.proxy.median,
                p.stored.median / r.proxy.median,
                p.wall.median / r.wall.median,
            ));
        }
        out.push('\n');
    }
    out
}
