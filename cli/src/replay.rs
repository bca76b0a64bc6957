//! `kubectl gatehouse replay FILE|-`: play a stored recording on the auditor's terminal,
//! safely.
//!
//! Data comes from an asciicast v2 file or standard input, read one bounded line at a time
//! (at most [`MAX_LINE_BYTES`], so a hostile file cannot grow memory); it goes to standard
//! output (the `o` events, at their pace or at once with `--cat`, and with `--input` the `i`
//! events, marked) and standard error (the header: who, where, which request; and the audit
//! markers). Everything printed passes [`gatehouse_crds::cast`]'s sanitiser, with one
//! [`Sanitiser`] for the whole output stream, so a recording cannot set the auditor's window
//! title, write their clipboard or make their terminal answer, even with a sequence split
//! across events. Bad input stops with an error naming the line; `main` exits 1.

use std::{
    io::{self, BufRead, Read, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use gatehouse_crds::cast::{
    self, EventCode, MAX_LINE_BYTES, Sanitiser, describe_header, printable, sanitise_for_replay,
};

use crate::error::{Error, Result};

/// How to play.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The recording; `-` is standard input.
    pub file: PathBuf,
    /// Playback speed (2 is twice as fast).
    pub speed: f64,
    /// The longest pause, in seconds (default: the header's `idle_time_limit`, else none).
    pub idle_limit: Option<f64>,
    /// Print the output at once, without timing.
    pub cat: bool,
    /// Also show what the engineer sent (`i` events), marked.
    pub input: bool,
}

/// `--speed`: a number above 0 (and not absurdly large).
pub fn parse_speed(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(speed) if speed.is_finite() && speed > 0.0 && speed <= 1_000_000.0 => Ok(speed),
        _ => Err(format!(
            "{text:?} is not a speed: give a number above 0 and at most 1000000 (2 plays twice as fast, 0.5 half as fast)"
        )),
    }
}

/// `--idle-limit`: a number of seconds above 0.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => Ok(seconds),
        _ => Err(format!(
            "{text:?} is not a number of seconds above 0 (like 2 or 0.5)"
        )),
    }
}

/// Play `options.file` on standard output and standard error.
pub fn replay(options: &Options) -> Result<()> {
    let stdout = io::stdout();
    let stderr = io::stderr();
    let sleep = |pause: Duration| std::thread::sleep(pause);
    let outcome = if options.file == Path::new("-") {
        play(
            &mut io::stdin().lock(),
            &mut stdout.lock(),
            &mut stderr.lock(),
            options,
            sleep,
        )
    } else {
        let file = std::fs::File::open(&options.file).map_err(|e| Error::File {
            path: options.file.clone(),
            problem: e.to_string(),
        })?;
        play(
            &mut io::BufReader::new(file),
            &mut stdout.lock(),
            &mut stderr.lock(),
            options,
            sleep,
        )
    };
    match outcome {
        Ok(()) => Ok(()),
        // The reader of our output went away (`| head`): nothing more to show.
        Err(Failure::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(Failure::Write(e)) => Err(Error::File {
            path: PathBuf::from("standard output"),
            problem: e.to_string(),
        }),
        Err(Failure::Read(e)) => Err(Error::File {
            path: source_name(&options.file),
            problem: e.to_string(),
        }),
        Err(Failure::Cast(e)) => Err(Error::File {
            path: source_name(&options.file),
            problem: format!("{e} (is this an asciicast v2 recording?)"),
        }),
    }
}

fn source_name(file: &Path) -> PathBuf {
    if file == Path::new("-") {
        PathBuf::from("standard input")
    } else {
        file.to_path_buf()
    }
}

/// Why playing stopped.
#[derive(Debug)]
enum Failure {
    Read(io::Error),
    Write(io::Error),
    Cast(cast::CastError),
}

/// The pause before an event at `at` seconds after one at `previous`: the gap (never
/// negative), capped at `idle_limit`, divided by `speed`.
fn pause(previous: f64, at: f64, speed: f64, idle_limit: Option<f64>) -> Duration {
    let gap = (at - previous).max(0.0);
    let gap = idle_limit.map_or(gap, |limit| gap.min(limit));
    Duration::try_from_secs_f64(gap / speed).unwrap_or(Duration::MAX)
}

/// Read one line into `line` (without its newline), at most [`MAX_LINE_BYTES`] + 1 bytes so
/// an over-long line is seen as such without reading it all. `false` at the end.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    let limit = u64::try_from(MAX_LINE_BYTES + 1).unwrap_or(u64::MAX);
    let read = Read::take(&mut *reader, limit).read_until(b'\n', line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(read > 0)
}

/// Play a cast from `reader`: the header on `err`, the events on `out` (marks on `err`),
/// pausing with `sleep` unless `--cat`.
fn play(
    reader: &mut impl BufRead,
    out: &mut impl Write,
    err: &mut impl Write,
    options: &Options,
    mut sleep: impl FnMut(Duration),
) -> std::result::Result<(), Failure> {
    let mut line = Vec::new();
    if !read_line(reader, &mut line).map_err(Failure::Read)? {
        return Err(Failure::Cast(cast::CastError::Empty));
    }
    let header = cast::decode_line(1, &line)
        .and_then(cast::parse_header)
        .map_err(Failure::Cast)?;
    let started = header
        .timestamp
        .and_then(|t| jiff::Timestamp::from_second(t).ok())
        .map(|t| t.to_string());
    let described = describe_header(&header, started.as_deref());
    if described.is_empty() {
        writeln!(
            err,
            "gatehouse: recording (its header says nothing about it)"
        )
    } else {
        writeln!(err, "gatehouse: recording of {described}")
    }
    .map_err(Failure::Write)?;
    let idle_limit = options.idle_limit.or(header.idle_time_limit);
    let mut output = Sanitiser::new();
    let mut previous = 0.0;
    let mut number = 1u64;
    while read_line(reader, &mut line).map_err(Failure::Read)? {
        number += 1;
        let text = cast::decode_line(number, &line).map_err(Failure::Cast)?;
        if text.trim().is_empty() {
            continue;
        }
        let event = cast::parse_event(number, text).map_err(Failure::Cast)?;
        let shown = match event.code {
            EventCode::Output => Some(output.push(&event.data)),
            EventCode::Input if options.input => {
                // Shown escaped ("\r", "\u{1b}[A"): keys are evidence, not something to run.
                Some(sanitise_for_replay(&format!("[input {:?}]", event.data)))
            }
            EventCode::Marker => {
                out.flush().map_err(Failure::Write)?;
                writeln!(
                    err,
                    "gatehouse: mark at {:.3}s: {}",
                    event.time,
                    printable(&event.data)
                )
                .map_err(Failure::Write)?;
                None
            }
            _ => None,
        };
        let Some(shown) = shown else {
            continue;
        };
        if !options.cat {
            sleep(pause(previous, event.time, options.speed, idle_limit));
            previous = event.time;
        }
        out.write_all(shown.as_bytes()).map_err(Failure::Write)?;
        if !options.cat {
            out.flush().map_err(Failure::Write)?;
        }
    }
    out.flush().map_err(Failure::Write)?;
    if output.finish() {
        writeln!(
            err,
            "gatehouse: the recording ends inside an escape sequence or control string; it was not shown"
        )
        .map_err(Failure::Write)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const HEADER: &str = r#"{"version":2,"width":80,"height":24,"timestamp":0,"gatehouse":{"requester":"alice","login":"ubuntu","host":"db1","requestNamespace":"team","requestName":"r1","sessionId":"abc","kind":{"type":"shell"}}}"#;

    fn options(cat: bool, input: bool) -> Options {
        Options {
            file: PathBuf::from("-"),
            speed: 1.0,
            idle_limit: None,
            cat,
            input,
        }
    }

    /// Play `cast`; (stdout, stderr, pauses) or the error message.
    fn run(cast: &str, options: &Options) -> Result<(String, String, Vec<Duration>), String> {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut pauses = Vec::new();
        play(
            &mut cast.as_bytes(),
            &mut out,
            &mut err,
            options,
            |p: Duration| pauses.push(p),
        )
        .map_err(|f| match f {
            Failure::Cast(e) => e.to_string(),
            other => format!("{other:?}"),
        })?;
        Ok((
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
            pauses,
        ))
    }

    #[test]
    fn output_is_sanitised_across_events_and_the_header_goes_to_stderr() {
        let cast = format!(
            "{HEADER}\n[0.5, \"o\", \"before \\u001b]52;c;cm0=\"]\n[1.0, \"i\", \"ls\\r\"]\n\
             [1.5, \"o\", \"\\u0007MARK\\u001b[1mER\\u001bP1$r\"]\n[2, \"o\", \"q\\u001b\\\\ after\"]\n\
             [2.5, \"m\", \"sftp open /x\\u001b]0;t\\u0007 (read)\"]\n[3, \"r\", \"100x30\"]\n\n"
        );
        let (out, err, _) = run(&cast, &options(true, false)).unwrap();
        assert_eq!(out, "before MARK\u{1b}[1mER after");
        assert_eq!(
            err,
            "gatehouse: recording of alice → ubuntu@db1, AccessRequest team/r1, session abc, \
             shell, started 1970-01-01T00:00:00Z, 80x24\n\
             gatehouse: mark at 2.500s: sftp open /x]0;t (read)\n"
        );
        let (out, _, _) = run(&cast, &options(true, true)).unwrap();
        assert_eq!(
            out, "before [input \"ls\\r\"]MARK\u{1b}[1mER after",
            "input shown escaped"
        );
    }

    #[test]
    fn timing_follows_the_events_with_speed_and_idle_limit() {
        let cast = format!(
            "{HEADER}\n[0.5, \"o\", \"a\"]\n[0.5, \"o\", \"b\"]\n[10.5, \"o\", \"c\"]\n[11, \"i\", \"x\"]\n[12, \"o\", \"d\"]\n"
        );
        let ms = Duration::from_millis;
        let (out, _, pauses) = run(&cast, &options(false, false)).unwrap();
        assert_eq!(out, "abcd");
        assert_eq!(pauses, [ms(500), ms(0), ms(10_000), ms(1500)]);
        let fast = Options {
            speed: 2.0,
            idle_limit: Some(2.0),
            ..options(false, false)
        };
        let (_, _, pauses) = run(&cast, &fast).unwrap();
        assert_eq!(pauses, [ms(250), ms(0), ms(1000), ms(750)]);
        // The header's idle_time_limit applies unless --idle-limit is given.
        let limited = cast.replacen(
            "{\"version\":2,",
            "{\"version\":2,\"idle_time_limit\":1,",
            1,
        );
        let (_, _, pauses) = run(&limited, &options(false, false)).unwrap();
        assert_eq!(pauses, [ms(500), ms(0), ms(1000), ms(1000)]);
        // --cat never waits.
        let (_, _, pauses) = run(&cast, &options(true, false)).unwrap();
        assert!(pauses.is_empty());
    }

    #[test]
    fn pauses() {
        let cases = [
            (0.0, 1.0, 1.0, None, 1000),
            (1.0, 0.5, 1.0, None, 0),
            (0.0, 4.0, 4.0, None, 1000),
            (0.0, 100.0, 1.0, Some(3.0), 3000),
            (0.0, 100.0, 2.0, Some(3.0), 1500),
        ];
        for (previous, at, speed, idle, want) in cases {
            assert_eq!(
                pause(previous, at, speed, idle),
                Duration::from_millis(want),
                "{previous} {at} {speed} {idle:?}"
            );
        }
    }

    #[test]
    fn bad_input_names_the_line() {
        let long = format!("{HEADER}\n[1, \"o\", \"{}\"]\n", "x".repeat(MAX_LINE_BYTES));
        let cases = [
            (String::new(), "line 1: the input is empty"),
            (
                "{\"version\":2}\n[1]\n".to_owned(),
                "line 2: event: not a JSON array",
            ),
            ("not json\n".to_owned(), "line 1: header: not JSON"),
            (
                format!("{HEADER}\n[1, \"o\", \"a\"]\n\n[2, \"o\"]\n"),
                "line 4: event: not a JSON array",
            ),
            (
                format!("{HEADER}\n[1, \"o\", \"\\u001b]52;c;AA\"]\n{{}}\n"),
                "line 3: event: not a JSON array",
            ),
            (long, "line 2: longer than 1048576 bytes"),
        ];
        for (cast, want) in cases {
            let error = run(&cast, &options(true, false)).unwrap_err();
            assert!(error.starts_with(want), "{want}: {error}");
        }
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_read() {
        let prefix = "[1, \"o\", \"";
        let suffix = "\"]";
        let data = "x".repeat(MAX_LINE_BYTES - prefix.len() - suffix.len());
        let cast = format!("{HEADER}\n{prefix}{data}{suffix}\n");
        let (out, _, _) = run(&cast, &options(true, false)).unwrap();
        assert_eq!(out.len(), data.len());
    }

    #[test]
    fn an_unterminated_string_at_the_end_is_dropped_and_said() {
        let cast = format!("{HEADER}\n[1, \"o\", \"ok\\u001b]52;c;AAAA\"]\n");
        let (out, err, _) = run(&cast, &options(true, false)).unwrap();
        assert_eq!(out, "ok");
        assert!(err.contains("ends inside an escape sequence"), "{err}");
    }

    #[test]
    fn flags_refuse_nonsense() {
        assert_eq!(parse_speed("2"), Ok(2.0));
        assert_eq!(parse_speed("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "fast", "1e9"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_seconds("1.5"), Ok(1.5));
        for bad in ["0", "-2", "NaN", "x"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }
}
