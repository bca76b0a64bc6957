//! The web player page served as `sessions/{id}/player` ([`page`]): an HTML page that loads the bundled
//! asciinema-player (vendored from its npm package into `audit-api/assets/` by
//! `tests/scripts/vendor-player.sh`, compiled in here with `include_bytes!`, never fetched from a
//! CDN) and Gatehouse's small bootstrap script, which plays the cast the page names.
//!
//! Data comes from the server: the session's title and the URL of its `recording` subresource
//! (both may carry attacker-chosen text: a session id or host name is written by a client, so
//! every interpolated value is HTML-escaped). It goes to the browser as the page's HTML, served
//! with [`CONTENT_SECURITY_POLICY`], and as the assets under [`SESSION_ASSETS`] ([`asset`]).
//! Pure: no I/O.

/// The `Content-Security-Policy` the page (and its assets) are served with: nothing from
/// anywhere but the API's own origin, no inline script or style, no framing, no forms.
/// `'wasm-unsafe-eval'` is needed because the player's terminal emulator is WebAssembly
/// (compiled from bytes embedded in the bundle); it allows compiling WASM, not `eval`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Where [`html`] loads the assets from. The audit API serves them under each session's page
/// instead ([`SESSION_ASSETS`]): `…/sessions/{id}/player/{name}` is authorized by the API server
/// as `get sessions/player` in the session's namespace, so a namespaced auditor's RoleBinding
/// covers the files as it covers the page (a cluster-wide path would need a ClusterRole).
pub const ASSETS_PATH: &str = "/apis/audit.gatehouse.dev/v1alpha1/player/";

/// asciinema-player's all-in-one minified bundle (defines the `AsciinemaPlayer` global).
pub const PLAYER_JS: &[u8] = include_bytes!("../assets/asciinema-player.min.js");
/// asciinema-player's stylesheet.
pub const PLAYER_CSS: &[u8] = include_bytes!("../assets/asciinema-player.css");
/// Gatehouse's bootstrap: reads the page's `data-src` and starts the player (the CSP forbids
/// inline script, so this is a file of its own).
pub const BOOTSTRAP_JS: &[u8] = include_bytes!("../assets/gatehouse-player.js");
/// asciinema-player's license (Apache-2.0), served next to the code it covers.
pub const PLAYER_LICENSE: &[u8] = include_bytes!("../assets/LICENSE");

/// File names under [`ASSETS_PATH`].
pub const PLAYER_JS_NAME: &str = "asciinema-player.min.js";
/// See [`PLAYER_JS_NAME`].
pub const PLAYER_CSS_NAME: &str = "asciinema-player.css";
/// See [`PLAYER_JS_NAME`].
pub const BOOTSTRAP_JS_NAME: &str = "gatehouse-player.js";
/// See [`PLAYER_JS_NAME`].
pub const PLAYER_LICENSE_NAME: &str = "LICENSE";

/// One asset: its bytes and `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// The body.
    pub bytes: &'static [u8],
    /// The `Content-Type` header value.
    pub content_type: &'static str,
}

/// The asset called `name` (the path segment after [`ASSETS_PATH`]), or `None`: only these
/// four fixed names exist, so no client-chosen path ever reaches a file system.
pub fn asset(name: &str) -> Option<Asset> {
    let (bytes, content_type) = match name {
        PLAYER_JS_NAME => (PLAYER_JS, "text/javascript; charset=utf-8"),
        PLAYER_CSS_NAME => (PLAYER_CSS, "text/css; charset=utf-8"),
        BOOTSTRAP_JS_NAME => (BOOTSTRAP_JS, "text/javascript; charset=utf-8"),
        PLAYER_LICENSE_NAME => (PLAYER_LICENSE, "text/plain; charset=utf-8"),
        _ => return None,
    };
    Some(Asset {
        bytes,
        content_type,
    })
}

/// The page for one session and the policy it must be served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The `Content-Security-Policy` header value ([`CONTENT_SECURITY_POLICY`]).
    pub content_security_policy: String,
    /// The HTML ([`html`]).
    pub html: String,
}

/// The player page of session `session` in `namespace`, as the audit API serves it at
/// `…/namespaces/{namespace}/sessions/{session}/player`: titled with the session, playing
/// its `recording` subresource ([`recording_url`]).
pub fn page(namespace: &str, session: &str) -> Page {
    Page {
        content_security_policy: CONTENT_SECURITY_POLICY.to_owned(),
        html: html_with_assets(
            &format!("Gatehouse session {namespace}/{session}"),
            &recording_url(namespace, session),
            SESSION_ASSETS,
        ),
    }
}

/// Where a session's page (`…/sessions/{id}/player`) loads the player's files from:
/// relative, so they resolve to `…/sessions/{id}/player/{name}` wherever the page is reached
/// (the aggregator rewrites absolute links in HTML it proxies to its backend's address, which
/// a browser behind `kubectl proxy` cannot reach).
pub const SESSION_ASSETS: &str = "player/";

/// The absolute path of a session's `recording` subresource, each segment percent-encoded
/// (the server only routes DNS names here; this keeps any other text a single segment).
pub fn recording_url(namespace: &str, session: &str) -> String {
    format!(
        "/apis/audit.gatehouse.dev/v1alpha1/namespaces/{}/sessions/{}/recording",
        segment(namespace),
        segment(session)
    )
}

fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // `.` and `..` are segments a browser resolves; encoded, they are names.
    match out.as_str() {
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => out,
    }
}

/// The player page's HTML: `title` names the session (shown as the page title and heading),
/// `recording_url` is where the cast is fetched from (the session's `recording` subresource,
/// same origin). Both are HTML-escaped; serve it as `text/html; charset=utf-8` with
/// [`CONTENT_SECURITY_POLICY`].
pub fn html(title: &str, recording_url: &str) -> String {
    html_with_assets(title, recording_url, ASSETS_PATH)
}

/// [`html`] loading the player's files from `assets` (a path ending in `/`, escaped too).
pub fn html_with_assets(title: &str, recording_url: &str, assets: &str) -> String {
    let title = escape(title);
    let recording_url = escape(recording_url);
    let assets = escape(assets);
    format!(
        "<!doctype html>\n\
         <html lang=\"en\">\n\
         <head>\n\
         <meta charset=\"utf-8\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <title>{title}</title>\n\
         <link rel=\"stylesheet\" href=\"{assets}{PLAYER_CSS_NAME}\">\n\
         </head>\n\
         <body>\n\
         <h1 id=\"gatehouse-title\">{title}</h1>\n\
         <div id=\"gatehouse-player\" data-src=\"{recording_url}\"></div>\n\
         <script src=\"{assets}{PLAYER_JS_NAME}\"></script>\n\
         <script src=\"{assets}{BOOTSTRAP_JS_NAME}\"></script>\n\
         </body>\n\
         </html>\n"
    )
}

/// `text` with the five HTML-significant characters replaced by character references, safe
/// in element content and in double- or single-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_table() {
        let cases = [
            ("", ""),
            ("alice prod-db-01", "alice prod-db-01"),
            ("a&b", "a&amp;b"),
            ("<script>", "&lt;script&gt;"),
            ("\"x\"", "&quot;x&quot;"),
            ("it's", "it&#39;s"),
            ("&amp;", "&amp;amp;"),
            ("ünïcode ✓", "ünïcode ✓"),
        ];
        for (input, want) in cases {
            assert_eq!(escape(input), want, "{input:?}");
        }
    }

    #[test]
    fn hostile_session_id_and_title_cannot_break_out() {
        let hostile = [
            "\"><script>alert(1)</script>",
            "</title><script src=//evil.example/x.js></script>",
            "' onerror='alert(1)",
            "x\" data-src=\"//evil.example/cast",
            "</h1><img src=x onerror=alert(1)>",
            "<!--",
            "]]><![CDATA[",
        ];
        for evil in hostile {
            let html = html(evil, &format!("/apis/x/sessions/{evil}/recording"));
            // The page's markup is exactly the template's: the same tags, in the same number.
            let clean = super::html("T", "/R");
            for tag in [
                "<script", "<img", "<title", "<h1", "<div", "<link", "<!--", "\"", "'",
            ] {
                assert_eq!(
                    html.matches(tag).count(),
                    clean.matches(tag).count(),
                    "{tag:?} count changed for {evil:?}:\n{html}"
                );
            }
            assert!(html.contains(&escape(evil)), "{html}");
            assert!(!html.contains(evil), "raw {evil:?} in page");
        }
    }

    #[test]
    fn page_loads_only_same_origin_assets_and_names_the_recording() {
        let html = html(
            "alice@prod-db-01 session 7",
            "/apis/audit.gatehouse.dev/v1alpha1/namespaces/team/sessions/s-1/recording",
        );
        assert!(html.contains("<title>alice@prod-db-01 session 7</title>"));
        assert!(html.contains(
            "data-src=\"/apis/audit.gatehouse.dev/v1alpha1/namespaces/team/sessions/s-1/recording\""
        ));
        for name in [PLAYER_JS_NAME, PLAYER_CSS_NAME, BOOTSTRAP_JS_NAME] {
            assert!(html.contains(&format!("\"{ASSETS_PATH}{name}\"")), "{name}");
            assert!(asset(name).is_some(), "{name} not served");
        }
        // No absolute URL to another origin, no inline script or style for the CSP to block.
        assert!(!html.contains("http:") && !html.contains("https:") && !html.contains("//cdn"));
        assert!(!html.contains("<style") && !html.contains("style=") && !html.contains("<script>"));
        assert!(!html.contains(" on"), "inline event handler in {html}");
    }

    #[test]
    fn the_session_page_plays_its_recording_subresource() {
        let team = page("team", "0f3a9c2b1d4e5f60");
        assert_eq!(team.content_security_policy, CONTENT_SECURITY_POLICY);
        assert!(
            team.html
                .contains("<title>Gatehouse session team/0f3a9c2b1d4e5f60</title>")
        );
        assert!(team.html.contains(
            "data-src=\"/apis/audit.gatehouse.dev/v1alpha1/namespaces/team/sessions/0f3a9c2b1d4e5f60/recording\""
        ));
        // Its files under the page, where the session's RoleBinding reaches.
        assert!(team.html.contains("src=\"player/asciinema-player.min.js\""));
        let cases = [
            (
                "team",
                "s1",
                "/apis/audit.gatehouse.dev/v1alpha1/namespaces/team/sessions/s1/recording",
            ),
            (
                "t",
                "..",
                "/apis/audit.gatehouse.dev/v1alpha1/namespaces/t/sessions/%2E%2E/recording",
            ),
            (
                "t",
                ".",
                "/apis/audit.gatehouse.dev/v1alpha1/namespaces/t/sessions/%2E/recording",
            ),
            (
                "t",
                "a/../b?x#y",
                "/apis/audit.gatehouse.dev/v1alpha1/namespaces/t/sessions/a%2F..%2Fb%3Fx%23y/recording",
            ),
            (
                "t",
                "\"><b>",
                "/apis/audit.gatehouse.dev/v1alpha1/namespaces/t/sessions/%22%3E%3Cb%3E/recording",
            ),
        ];
        for (namespace, session, want) in cases {
            assert_eq!(recording_url(namespace, session), want, "{session:?}");
        }
        let hostile = page("t", "\"><script>alert(1)</script>");
        assert_eq!(
            hostile.html.matches("<script").count(),
            2,
            "{}",
            hostile.html
        );
    }

    #[test]
    fn csp_is_strict() {
        let directives: Vec<&str> = CONTENT_SECURITY_POLICY.split(';').map(str::trim).collect();
        for want in [
            "default-src 'none'",
            "script-src 'self' 'wasm-unsafe-eval'",
            "style-src 'self'",
            "connect-src 'self'",
            "img-src 'self' data:",
            "frame-ancestors 'none'",
        ] {
            assert!(directives.contains(&want), "{want:?} missing");
        }
        for loose in ["'unsafe-inline'", "'unsafe-eval'", "*", "http:", "https:"] {
            assert!(
                !CONTENT_SECURITY_POLICY
                    .split_whitespace()
                    .any(|w| w == loose),
                "{loose}"
            );
        }
    }

    #[test]
    fn assets_are_the_vendored_player_and_nothing_else() {
        let table = [
            (PLAYER_JS_NAME, Some("text/javascript; charset=utf-8")),
            (PLAYER_CSS_NAME, Some("text/css; charset=utf-8")),
            (BOOTSTRAP_JS_NAME, Some("text/javascript; charset=utf-8")),
            (PLAYER_LICENSE_NAME, Some("text/plain; charset=utf-8")),
            ("", None),
            ("../Cargo.toml", None),
            ("asciinema-player.js", None),
            ("LICENSE/", None),
        ];
        for (name, want) in table {
            assert_eq!(asset(name).map(|a| a.content_type), want, "{name:?}");
        }
        assert!(
            std::str::from_utf8(PLAYER_JS).is_ok_and(|js| js.contains("var AsciinemaPlayer=")),
            "the bundle defines the AsciinemaPlayer global"
        );
        assert!(std::str::from_utf8(PLAYER_LICENSE).is_ok_and(|l| l.contains("Apache License")));
        assert!(std::str::from_utf8(BOOTSTRAP_JS).is_ok_and(|b| b.contains("data-src")));
    }
}
