//! CPU time of processes, read from `/proc` (Linux): a process's own `utime + stime`, what its
//! reaped children used (`cutime + cstime`: how the benchmark charges the `ssh` client it
//! waited for), and a [`Sampler`] that follows the per-connection `sshd` processes under the
//! listener while a transfer runs (they are not our children, and exit with the connection).

use std::{
    collections::HashMap,
    fs,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

/// `USER_HZ`: the unit of the `/proc/PID/stat` times (100 on every Linux the bench runs on).
const TICK_SECONDS: f64 = 0.01;
/// How often the sampler reads the known processes' times.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// How often (in samples) it looks for new per-connection processes.
const DISCOVER_EVERY: u32 = 3;

/// What `/proc/PID/stat` says about one process.
#[derive(Debug, Clone)]
pub struct Stat {
    /// Parent process id.
    pub ppid: u32,
    /// The command name (`sshd`, `cat`, …).
    pub comm: String,
    /// Its own user + system time, in ticks.
    pub ticks: u64,
    /// User + system time of its children that it waited for, in ticks.
    pub child_ticks: u64,
}

/// Parse a `/proc/PID/stat` line (the name may hold spaces and parentheses).
pub fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(number(1)?).ok()?,
        comm,
        ticks: number(11)? + number(12)?,
        child_ticks: number(13)? + number(14)?,
    })
}

/// The stat of `pid` (`"self"` for the benchmark itself), while it exists.
pub fn stat(pid: &str) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Ticks as seconds.
pub fn seconds(ticks: u64) -> f64 {
    ticks as f64 * TICK_SECONDS
}

/// CPU seconds `pid` used so far (0 once it is gone).
pub fn process_seconds(pid: u32) -> f64 {
    stat(&pid.to_string()).map_or(0.0, |s| seconds(s.ticks))
}

/// CPU seconds of the children this benchmark waited for so far.
pub fn own_children_seconds() -> f64 {
    stat("self").map_or(0.0, |s| seconds(s.child_ticks))
}

/// Every process below `root` whose name is `name`, with its stat.
fn descendants(root: u32, name: &str) -> Vec<(u32, Stat)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let all: Vec<(u32, Stat)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat(&pid.to_string())?)))
        .collect();
    let parents: HashMap<u32, u32> = all.iter().map(|(pid, s)| (*pid, s.ppid)).collect();
    let below = |mut pid: u32| {
        for _ in 0..16 {
            match parents.get(&pid) {
                Some(&parent) if parent == root => return true,
                Some(&parent) if parent > 1 => pid = parent,
                _ => return false,
            }
        }
        false
    };
    all.into_iter()
        .filter(|(pid, s)| s.comm == name && below(*pid))
        .collect()
}

/// Follows the `name` processes below `root` (sshd's per-connection processes under its
/// listener) from [`Sampler::start`] to [`Sampler::stop`], summing the CPU each used meanwhile.
/// A process is read every 10 ms, so at most its last 10 ms before exiting are missed.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<f64>,
}

impl Sampler {
    /// Start following.
    pub fn start(root: u32, name: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            // pid → (ticks when first seen if it ran before the start, else 0; latest ticks).
            let mut seen: HashMap<u32, (u64, u64)> = descendants(root, name)
                .into_iter()
                .map(|(pid, s)| (pid, (s.ticks, s.ticks)))
                .collect();
            let mut round = 0u32;
            loop {
                let last = flag.load(Ordering::Relaxed);
                if round.is_multiple_of(DISCOVER_EVERY) || last {
                    for (pid, s) in descendants(root, name) {
                        seen.entry(pid).or_insert((0, s.ticks)).1 = s.ticks;
                    }
                }
                for (pid, (_, latest)) in &mut seen {
                    if let Some(s) = stat(&pid.to_string())
                        && s.comm == name
                    {
                        *latest = (*latest).max(s.ticks);
                    }
                }
                if last {
                    break;
                }
                round += 1;
                thread::sleep(SAMPLE_EVERY);
            }
            seconds(seen.values().map(|(base, latest)| latest - base).sum())
        });
        Self { stop, thread }
    }

    /// Stop; the CPU seconds the followed processes used while it ran.
    pub fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parentheses() {
        let line = "4242 (sshd: me (x)) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 3 4 20 0 1 0";
        let s = parse_stat(line).expect("a stat line");
        assert_eq!(s.comm, "sshd: me (x)");
        assert_eq!(s.ppid, 17);
        assert_eq!(s.ticks, 325);
        assert_eq!(s.child_ticks, 7);
    }

    #[test]
    fn reads_this_process() {
        let s = stat("self").expect("our own stat");
        assert!(s.ppid > 0);
    }
}
