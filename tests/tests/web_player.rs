//! The audit API's web player (issue 15, "CLI and web"), in a real headless Chromium: the page
//! `gatehouse_audit_api::player` renders (`html`, and `page` for a real session), served with its Content-Security-Policy next to
//! the vendored asciinema-player assets and a cast recorded by the real `asciinema rec`, plays
//! the recording and shows the recorded text. Chromium dumps the DOM (the player's terminal
//! spans hold the text) and takes a screenshot, decoded here: the terminal area must hold
//! light text pixels, which a player that failed to start (no WebAssembly under a CSP without
//! `'wasm-unsafe-eval'`, a missing asset) never draws.
//!
//! The session title is attacker-chosen markup, which must show up as text, not as elements.
//!
//! Needs `chromium` (Debian package, tests/scripts/install-deps.sh) and `asciinema`; the test of
//! a proxy-recorded session also the control plane (`make test` runs it under one). The HTTP
//! server is a few lines on a std listener: it serves only this page.

#![allow(clippy::unwrap_used, reason = "tests report failure by panicking")]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    sync::Arc,
    thread,
    time::Duration,
};

use gatehouse_audit_api::player;
use gatehouse_tests::{Cmd, proxied_world::ProxiedWorld, repo_root, sha256_hex};

/// What the recorded command prints (the command line holds `$((6*7))`, so the text on the
/// screen can only come from the recorded output, not from an echo of the command).
const MARKER: &str = "GATEHOUSE-WEB-PLAYER-42-OK";
const RECORDED: &str = "printf 'GATEHOUSE-WEB-PLAYER-%s-OK\\n' $((6*7)); sleep 0.3";
/// A session title an attacker chose: markup and an inline handler.
const HOSTILE_TITLE: &str = "s-1\"><img id=\"pwned\" src=x onerror=\"document.title='pwned'\"><b>";
/// Light pixels a line of recorded text makes in the screenshot's terminal, at least (26
/// characters at about 13x24 pixels each draw thousands).
const MIN_TEXT_PIXELS: usize = 300;
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 700;

/// One page, its assets and its recording, served over HTTP/1.1 with `csp`.
struct Site {
    page: String,
    cast: Vec<u8>,
    csp: String,
}

impl Site {
    fn respond(&self, path: &str) -> (u16, &'static str, Vec<u8>) {
        if path == "/session" {
            return (
                200,
                "text/html; charset=utf-8",
                self.page.clone().into_bytes(),
            );
        }
        if path.ends_with("/recording") {
            return (200, "application/x-asciicast", self.cast.clone());
        }
        // [`player::html`]'s fixed path, or under a session's page as the audit API serves them.
        if let Some(asset) = path
            .rsplit_once("/player/")
            .map(|(_, file)| file)
            .and_then(player::asset)
        {
            return (200, asset.content_type, asset.bytes.to_vec());
        }
        (404, "text/plain", b"not found".to_vec())
    }

    fn serve_one(&self, stream: TcpStream) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
                break;
            }
        }
        let path = request_line.split(' ').nth(1).unwrap_or("/");
        let (status, content_type, body) = self.respond(path);
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Content-Security-Policy: {}\r\nX-Content-Type-Options: nosniff\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            body.len(),
            self.csp
        )?;
        stream.write_all(&body)?;
        stream.flush()
    }

    /// Serve on a loopback port until the test process ends; returns the base URL.
    fn start(self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let site = Arc::new(self);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let site = Arc::clone(&site);
                thread::spawn(move || {
                    let _ = site.serve_one(stream);
                });
            }
        });
        format!("http://127.0.0.1:{port}")
    }
}

/// A cast recorded by the real `asciinema rec` running `RECORDED`.
fn record_cast(dir: &Path) -> Vec<u8> {
    let file = dir.join("session.cast");
    Cmd::new("asciinema")
        .args(["rec", "--quiet", "--overwrite", "--command", RECORDED])
        .arg(&file)
        .env("TERM", "xterm-256color")
        .timeout(Duration::from_secs(60))
        .run()
        .ok();
    let cast = std::fs::read(&file).unwrap();
    assert!(
        String::from_utf8_lossy(&cast).contains("GATEHOUSE-WEB-PLAYER-42-OK"),
        "the recording lacks the text: {}",
        String::from_utf8_lossy(&cast)
    );
    cast
}

/// What Chromium saw: the DOM after the player ran, and the screenshot's PNG.
struct Rendered {
    dom: String,
    png: Vec<u8>,
}

/// Load `url` in headless Chromium once: dump the DOM and take a screenshot in the same run
/// (the player draws on animation frames, which a DOM dump alone does not produce).
fn chromium(url: &str, dir: &Path, attempt: u32) -> Option<Rendered> {
    let shot = dir.join(format!("screenshot-{attempt}.png"));
    let profile = dir.join(format!("profile-{attempt}"));
    let out = Cmd::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--run-all-compositor-stages-before-draw",
            "--hide-scrollbars",
            &format!("--window-size={WIDTH},{HEIGHT}"),
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--dump-dom")
        .arg(url)
        .kill_after(Duration::from_secs(90))
        .run();
    if !out.success {
        eprintln!("chromium attempt {attempt}: {:?}\n{}", out.code, out.stderr);
        return None;
    }
    let png = std::fs::read(&shot).ok()?;
    Some(Rendered {
        dom: out.stdout,
        png,
    })
}

/// Render `url`, retrying a few times for Chromium's startup flakiness until `done` holds;
/// returns the last rendering either way.
fn render(url: &str, dir: &Path, done: impl Fn(&Rendered) -> bool) -> Rendered {
    let mut last = None;
    for attempt in 1..=3 {
        if let Some(rendered) = chromium(url, dir, attempt) {
            if done(&rendered) {
                return rendered;
            }
            last = Some(rendered);
        }
    }
    last.unwrap_or_else(|| panic!("chromium never rendered {url}"))
}

/// An 8-bit RGB(A) PNG, decoded: width, height and RGB pixels, row by row.
struct Image {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

impl Image {
    fn decode(png: &[u8]) -> Image {
        assert_eq!(png.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]), "not a PNG");
        let (mut at, mut idat) = (8, Vec::new());
        let (mut width, mut height, mut channels) = (0, 0, 0);
        while at + 8 <= png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let kind = &png[at + 4..at + 8];
            let data = &png[at + 8..at + 8 + len];
            match kind {
                b"IHDR" => {
                    width = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                    height = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                    assert_eq!(data[8], 8, "bit depth");
                    assert_eq!(data[12], 0, "interlaced");
                    channels = match data[9] {
                        2 => 3,
                        6 => 4,
                        other => panic!("PNG colour type {other}"),
                    };
                }
                b"IDAT" => idat.extend_from_slice(data),
                b"IEND" => break,
                _ => {}
            }
            at += 12 + len;
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..])
            .read_to_end(&mut raw)
            .unwrap();
        let stride = width * channels;
        assert_eq!(raw.len(), height * (stride + 1), "PNG data length");
        let mut pixels = vec![0u8; height * stride];
        for y in 0..height {
            let filter = raw[y * (stride + 1)];
            let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
            for x in 0..stride {
                let a = if x >= channels {
                    pixels[y * stride + x - channels]
                } else {
                    0
                };
                let b = if y > 0 {
                    pixels[(y - 1) * stride + x]
                } else {
                    0
                };
                let c = if y > 0 && x >= channels {
                    pixels[(y - 1) * stride + x - channels]
                } else {
                    0
                };
                let predicted = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                    4 => paeth(a, b, c),
                    other => panic!("PNG filter {other}"),
                };
                pixels[y * stride + x] = line[x].wrapping_add(predicted);
            }
        }
        let rgb = pixels
            .chunks(channels)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        Image { width, height, rgb }
    }

    fn at(&self, x: usize, y: usize) -> [u8; 3] {
        self.rgb[y * self.width + x]
    }
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

fn luma([r, g, b]: [u8; 3]) -> u32 {
    (299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b)) / 1000
}

/// Light pixels (text) inside the player's terminal, right of where a cursor block could be:
/// the terminal is the bounding box of the commonest dark colour (its background; the page's
/// black heading is anti-aliased, so never one colour); count light pixels at least 120
/// pixels from its left edge.
fn text_pixels(image: &Image) -> usize {
    let mut counts = std::collections::HashMap::new();
    for p in image.rgb.iter().filter(|p| luma(**p) < 60) {
        *counts.entry(*p).or_insert(0usize) += 1;
    }
    let Some((background, _)) = counts.into_iter().max_by_key(|(_, n)| *n) else {
        return 0;
    };
    let (mut left, mut top, mut right, mut bottom) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..image.height {
        for x in 0..image.width {
            if image.at(x, y) == background {
                left = left.min(x);
                top = top.min(y);
                right = right.max(x);
                bottom = bottom.max(y);
            }
        }
    }
    if left > right || right - left < 200 || bottom - top < 100 {
        return 0;
    }
    let mut light = 0;
    for y in top..=bottom {
        for x in left + 120..=right {
            if luma(image.at(x, y)) > 150 {
                light += 1;
            }
        }
    }
    light
}

fn site(csp: &str, dir: &Path) -> String {
    Site {
        page: player::html(HOSTILE_TITLE, "/recording"),
        cast: record_cast(dir),
        csp: csp.to_owned(),
    }
    .start()
}

/// The page shows the recorded text, in the DOM and on the screenshot.
fn shown(r: &Rendered) -> bool {
    r.dom.contains(MARKER) && text_pixels(&Image::decode(&r.png)) > MIN_TEXT_PIXELS
}

#[test]
fn the_player_page_plays_a_recording_and_shows_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let base = site(player::CONTENT_SECURITY_POLICY, dir.path());
    let url = format!("{base}/session");
    let shown = |r: &Rendered| {
        r.dom.contains(MARKER) && text_pixels(&Image::decode(&r.png)) > MIN_TEXT_PIXELS
    };
    let rendered = render(&url, dir.path(), shown);

    // The terminal's text spans hold the recorded output.
    assert!(
        rendered.dom.contains("ap-term-text") && rendered.dom.contains(MARKER),
        "the player did not render {MARKER}:\n{}",
        rendered.dom
    );
    // The hostile title is text: no element of the attacker's exists, the handler never ran.
    assert!(!rendered.dom.contains("<img"), "{}", rendered.dom);
    assert!(!rendered.dom.contains("<title>pwned"), "{}", rendered.dom);
    assert!(
        rendered.dom.contains("s-1\"&gt;&lt;img id=\"pwned\""),
        "the title is not shown as text:\n{}",
        rendered.dom
    );

    // The screenshot: a real image of the window, not uniform, with text drawn in the terminal.
    let image = Image::decode(&rendered.png);
    assert_eq!(
        (image.width, image.height),
        (WIDTH as usize, HEIGHT as usize)
    );
    let first = image.rgb[0];
    assert!(image.rgb.iter().any(|p| *p != first), "blank screenshot");
    let light = text_pixels(&image);
    eprintln!("{light} light pixels in the terminal");
    assert!(
        light > MIN_TEXT_PIXELS,
        "the screenshot shows no text in the terminal ({light} light pixels); see {}",
        dir.keep().display()
    );
}

/// A cast the real proxy recorded (ssh → gatehouse-proxy → sshd, stored in its directory
/// store), exactly as stored, plays too, in the page `player::page` makes for that session.
#[tokio::test]
async fn a_session_recorded_by_the_proxy_plays_in_the_web_player() {
    let w = ProxiedWorld::with_local_store("webplayer").await;
    let cert = w.issue(w.request("webplayer")).await;
    let user = format!("{}@db1", w.login);
    let out = w.ssh(&cert, &user, &[RECORDED]).run();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stderr, w.proxy.log_tail());
    let sessions = w.recorded("webplayer", 1, Duration::from_secs(30)).await;
    let key = sessions[0].recording.clone().unwrap().key;
    let cast = std::fs::read(w.local_store().join(&key)).unwrap();
    assert!(String::from_utf8_lossy(&cast).contains(MARKER));

    // The page exactly as the audit API serves it for this session: its title, its
    // recording subresource's path, its policy.
    let page = player::page(&w.s.ns, &sessions[0].id);
    let dir = tempfile::tempdir().unwrap();
    let base = Site {
        page: page.html,
        cast,
        csp: page.content_security_policy,
    }
    .start();
    let url = format!("{base}/session");
    let rendered = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || render(&url, &dir, shown)
    })
    .await
    .unwrap();
    assert!(rendered.dom.contains(MARKER), "{}", rendered.dom);
    let light = text_pixels(&Image::decode(&rendered.png));
    assert!(
        light > MIN_TEXT_PIXELS,
        "{light} light pixels; see {}",
        dir.keep().display()
    );
}

/// The negative control: the same page under a CSP without `'wasm-unsafe-eval'` starts no
/// terminal, so the checks above are able to fail (and the CSP is really in force).
#[test]
fn without_wasm_in_the_csp_the_player_shows_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let strict = player::CONTENT_SECURITY_POLICY.replace(" 'wasm-unsafe-eval'", "");
    assert_ne!(strict, player::CONTENT_SECURITY_POLICY);
    let base = site(&strict, dir.path());
    let rendered = render(&format!("{base}/session"), dir.path(), |_| true);
    assert!(!rendered.dom.contains(MARKER), "{}", rendered.dom);
    // A few light pixels at the terminal's rounded corners, never a line of text.
    let light = text_pixels(&Image::decode(&rendered.png));
    assert!(light < MIN_TEXT_PIXELS / 10, "{light} light pixels");
}

/// The compiled-in assets are the files `tests/scripts/vendor-player.sh` vendored from the
/// pinned npm tarball (the script checks the tarball; this pins what was taken from it), so a
/// hand edit of the bundle, or a re-vendoring without updating these digests, fails here.
#[test]
fn the_compiled_in_player_is_the_pinned_release() {
    let pinned = [
        (
            player::PLAYER_JS,
            "752c9b528b664f5b16f27c68ba22fc7973d1d6063a1c3e4795a4c8015943acf6",
        ),
        (
            player::PLAYER_CSS,
            "981fe7bc6042048b2a373b6da297f747e324e90a8b6264e833e3a92cec22dfb9",
        ),
        (
            player::PLAYER_LICENSE,
            "63422284ed65be54ab38d8a94e7518d27e222fbb26c9ae4cd984c63926e91c12",
        ),
    ];
    for (bytes, sha256) in pinned {
        assert_eq!(sha256_hex(bytes), sha256);
    }
    let script =
        std::fs::read_to_string(repo_root().join("tests/scripts/vendor-player.sh")).unwrap();
    assert!(
        script.contains("\nVERSION=3.18.0\n"),
        "vendor-player.sh pins another version"
    );
    let version = std::fs::read_to_string(repo_root().join("audit-api/assets/VERSION")).unwrap();
    assert!(version.starts_with("asciinema-player 3.18.0 "), "{version}");
}
