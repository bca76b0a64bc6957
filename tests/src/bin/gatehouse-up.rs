//! `make up` (through `tests/scripts/up.sh`): `gatehouse-up DIR` starts a local Gatehouse in
//! plane directory DIR with the harness's own code (see `gatehouse_tests::make_up`), or prints
//! the summary when it already runs there.
//!
//! In: DIR, `GATEHOUSE_RECORDINGS` and the S3 variables. Out: progress and the summary on
//! stdout; a refusal or a failure as one `make up: …` message (with the log it names) on
//! stderr, and exit status 1.

use std::{panic, process::ExitCode};

use gatehouse_tests::make_up::{self, Recordings};

fn main() -> ExitCode {
    // Harness failures are panics; people get their message, not a backtrace.
    panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("failed");
        eprintln!("make up: {message}");
    }));
    let outcome = panic::catch_unwind(|| {
        let dir = make_up::plane_dir(std::env::args().nth(1))?;
        let recordings = Recordings::from_env(|name| std::env::var(name).ok())?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the async runtime: {e}"))?
            .block_on(make_up::run(&dir, recordings))
    });
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(refusal)) => {
            eprintln!("make up: {refusal}");
            ExitCode::FAILURE
        }
        // The hook has said why.
        Err(_) => ExitCode::FAILURE,
    }
}
