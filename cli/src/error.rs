//! The CLI's one error type. Every variant prints as one line that names the problem and what
//! to do about it; `main` prints it after `error: ` and exits non-zero.

use std::path::PathBuf;

/// What went wrong, named for the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be loaded.
    #[error("loading the kubeconfig: {0} (pass --kubeconfig or set KUBECONFIG)")]
    LoadKubeconfig(String),
    /// The API server refused our credentials.
    #[error(
        "the API server rejected your credentials ({0}): they are missing or expired; log in again (refresh your kubeconfig) and retry"
    )]
    Unauthorized(String),
    /// An API call failed for another reason.
    #[error("{action}: {message}")]
    Api {
        /// What we were doing.
        action: String,
        /// What the API server said.
        message: String,
    },
    /// The API server refused a change (admission, RBAC, validation).
    #[error("refused: {0}")]
    Refused(String),
    /// The named host is in no visible HostGroup.
    #[error(
        "unknown host {host}: it is in no HostGroup you can see in namespace {namespace}; `kubectl gatehouse hosts` lists what you can request"
    )]
    UnknownHost {
        /// What was asked for.
        host: String,
        /// Where we looked.
        namespace: String,
    },
    /// The named host is in several HostGroups.
    #[error("ambiguous host {host}: it is in HostGroups {groups}; name one as GROUP/{host}")]
    AmbiguousHost {
        /// What was asked for.
        host: String,
        /// The groups it is in, comma separated.
        groups: String,
    },
    /// No login was given and the policies allow several.
    #[error("several logins are allowed on {target} ({allowed}): pass --login")]
    LoginNeeded {
        /// The target.
        target: String,
        /// Logins allowed.
        allowed: String,
    },
    /// No policy grants the request (subject, host group, login, reason).
    #[error("{0}")]
    NotGranted(String),
    /// The duration is longer than the policy allows.
    #[error(
        "duration {requested} is over the maximum {max} of AccessPolicy {policy}: pass --for {max} or less"
    )]
    DurationOverMax {
        /// What was asked for.
        requested: String,
        /// The policy's maxDuration.
        max: String,
        /// The policy.
        policy: String,
    },
    /// The duration does not parse or is outside 5m..24h.
    #[error("--for {0}: {1}")]
    BadDuration(String, String),
    /// The policy requires a reason and none was given.
    #[error("AccessPolicy {0} requires a reason: pass --reason \"…\" (a ticket or an incident)")]
    ReasonRequired(String),
    /// The public key file is missing or not a public key.
    #[error(
        "no public key at {path}: {problem}; pass --key PATH.pub, or omit --key to use a generated Gatehouse key"
    )]
    NoKey {
        /// Where we looked.
        path: PathBuf,
        /// What was wrong.
        problem: String,
    },
    /// Generating the dedicated key failed.
    #[error("generating a key with ssh-keygen at {path}: {problem}")]
    GenerateKey {
        /// Where.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {problem}")]
    File {
        /// Which file.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// The operator publishes no proxy address.
    #[error(
        "the proxy address is not published (key proxy_address of ConfigMap {namespace}/gatehouse-ssh): ask your Gatehouse admin to set the chart value proxy.publicAddress, or pass --proxy HOST:PORT"
    )]
    ProxyAddressMissing {
        /// The operator's namespace.
        namespace: String,
    },
    /// The request was denied.
    #[error("AccessRequest {name} was denied{by}: {reason}")]
    Denied {
        /// The request.
        name: String,
        /// ` by USER`, when known.
        by: String,
        /// Why.
        reason: String,
    },
    /// The request ended without a certificate (expired, revoked, failed).
    #[error("AccessRequest {name} is {phase}: {message}")]
    Ended {
        /// The request.
        name: String,
        /// Its phase.
        phase: String,
        /// The Ready condition's message.
        message: String,
    },
    /// Waiting was interrupted (Ctrl-C); the request stays.
    #[error(
        "stopped waiting; AccessRequest {name} stays pending: resume with `kubectl gatehouse wait {name}`"
    )]
    Interrupted {
        /// The request.
        name: String,
    },
    /// No Issued request covers the host, and we may not create one.
    #[error(
        "no Issued AccessRequest of yours covers {target}: run `kubectl gatehouse request {target}` or pass --request"
    )]
    NoGrant {
        /// The host (and login).
        target: String,
    },
    /// A request of that name does not exist.
    #[error("AccessRequest {name} not found in namespace {namespace}")]
    NotFound {
        /// The name.
        name: String,
        /// The namespace.
        namespace: String,
    },
    /// Bad command-line usage the parser cannot catch.
    #[error("{0}")]
    Usage(String),
    /// Running the OpenSSH client failed.
    #[error("running {program}: {problem}")]
    Exec {
        /// Which program.
        program: String,
        /// Why.
        problem: String,
    },
    /// Some revocations were refused (each was reported).
    #[error("{0} of the requests could not be revoked (see above)")]
    PartialRevoke(usize),
    /// Writing output failed.
    #[error("formatting output: {0}")]
    Format(String),
    /// `audit verify` found problems (each was printed).
    #[error("audit verify failed: {0} problem(s) (see above)")]
    AuditVerify(usize),
    /// A downloaded recording is not the one the session records.
    #[error(
        "the recording of session {session} is not the one the audit trail records: expected sha256 {expected}, received {found}; it was not played (run `kubectl gatehouse audit verify`)"
    )]
    RecordingMismatch {
        /// The session.
        session: String,
        /// SHA-256 and size the session records.
        expected: String,
        /// What arrived.
        found: String,
    },
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Map an API error for `action`: 401 is a credentials problem, 403/422/400 a refusal, the
    /// rest names the action.
    pub fn api(action: impl Into<String>, error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => match status.code {
                401 => Self::Unauthorized(status.message.clone()),
                400 | 403 | 409 | 422 => Self::Refused(status.message.clone()),
                _ => Self::Api {
                    action: action.into(),
                    message: status.message.clone(),
                },
            },
            kube::Error::Auth(e) => Self::Unauthorized(e.to_string()),
            other => Self::Api {
                action: action.into(),
                message: one_line(&other.to_string()),
            },
        }
    }
}

/// Collapse a multi-line message into one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
