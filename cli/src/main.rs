//! `kubectl gatehouse`: the Gatehouse kubectl plugin (binary `kubectl-gatehouse`).
//!
//! Data comes from the user's own kubeconfig and the API server (HostGroups, AccessPolicies,
//! AccessRequests the user can read; ConfigMap `gatehouse-ssh` for the proxy's address and
//! host key) and from the user's public key; it goes to the API server as the user (creating
//! AccessRequests, setting decision annotations, so admission and RBAC decide exactly as for
//! kubectl), to certificate and ssh_config files under the user's config directory, and to the
//! real OpenSSH `ssh`, `scp` and `sftp`, which connect through the Gatehouse proxy. `replay`
//! reads a stored recording and plays it, sanitised, on the terminal (no cluster needed).

mod audit;
mod cluster;
mod connect;
mod error;
mod keys;
mod plan;
mod replay;
mod request;
mod view;

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

use crate::{
    cluster::{Cluster, Connection},
    connect::{ConnectOptions, Program},
    error::Error,
    view::{Decision, Output, Which},
};

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-gatehouse",
    bin_name = "kubectl gatehouse",
    version,
    about = "Request, approve and use Gatehouse SSH access"
)]
struct Cli {
    /// Path to the kubeconfig (default: KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace (default: the context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Where Gatehouse is installed (ConfigMap gatehouse-ssh).
    #[arg(
        long,
        global = true,
        env = "GATEHOUSE_NAMESPACE",
        default_value = "gatehouse-system"
    )]
    gatehouse_namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct RequestArgs {
    /// The unix login (default: the one the policy allows, when it allows one).
    #[arg(short = 'l', long)]
    login: Option<String>,
    /// How long, 5m to 24h (at most the policy's maxDuration).
    #[arg(long = "for", default_value = "1h")]
    duration: String,
    /// Why (a ticket, an incident); required by some policies.
    #[arg(short, long)]
    reason: Option<String>,
    /// The public key to certify (default ~/.ssh/id_ed25519.pub, else a generated Gatehouse key).
    #[arg(long)]
    key: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ConnectArgs {
    #[command(flatten)]
    request: RequestArgs,
    /// Request access without asking when no Issued request covers the host.
    #[arg(long = "request")]
    auto_request: bool,
    /// The proxy's address (default: `proxy_address` published in ConfigMap gatehouse-ssh).
    #[arg(long, env = "GATEHOUSE_PROXY")]
    proxy: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Request access to HOST, GROUP/HOST or GROUP, and wait for the certificate.
    Request {
        /// HOST, GROUP/HOST or GROUP.
        target: String,
        #[command(flatten)]
        args: RequestArgs,
        /// Create the request and return.
        #[arg(long)]
        no_wait: bool,
        /// Name the AccessRequest (default: generated from your user name and the host).
        #[arg(long)]
        name: Option<String>,
    },
    /// Wait for a request and write its certificate.
    Wait {
        /// The AccessRequest.
        name: String,
        /// The key it was requested for.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// ssh to HOST through the proxy (`-- command` runs a command).
    Ssh {
        /// HOST or GROUP/HOST.
        host: String,
        #[command(flatten)]
        args: ConnectArgs,
        /// Extra ssh arguments and the command.
        #[arg(last = true)]
        rest: Vec<String>,
    },
    /// scp through the proxy: operands HOST:PATH.
    Scp {
        #[command(flatten)]
        args: ConnectArgs,
        /// scp arguments and operands.
        #[arg(last = true, required = true)]
        rest: Vec<String>,
    },
    /// sftp to HOST through the proxy.
    Sftp {
        /// HOST or GROUP/HOST.
        host: String,
        #[command(flatten)]
        args: ConnectArgs,
        /// Extra sftp options (like `-b batchfile`), given before the host.
        #[arg(last = true)]
        rest: Vec<String>,
    },
    /// Print ssh_config entries for every Issued grant (--write: install them under an Include).
    Config {
        /// Write ~/.config/gatehouse/ssh_config and Include it from ~/.ssh/config.
        #[arg(long)]
        write: bool,
        /// The key the grants certify.
        #[arg(long)]
        key: Option<PathBuf>,
        /// The proxy's address (default: the published one).
        #[arg(long, env = "GATEHOUSE_PROXY")]
        proxy: Option<String>,
    },
    /// List your requests (--all: everyone's; --to-approve: those you may approve).
    Ls {
        /// Every request in the namespace.
        #[arg(long, conflicts_with = "to_approve")]
        all: bool,
        /// Pending requests you may approve.
        #[arg(long)]
        to_approve: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Show a request and its timeline.
    Describe {
        /// The AccessRequest.
        name: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Approve a request.
    Approve {
        /// The AccessRequest.
        name: String,
        /// Why.
        #[arg(short, long, default_value = "approved")]
        reason: String,
    },
    /// Deny a request.
    Deny {
        /// The AccessRequest.
        name: String,
        /// Why.
        #[arg(short, long)]
        reason: String,
    },
    /// Revoke a request, or every live request of a user (--user U --all).
    Revoke {
        /// The AccessRequest.
        #[arg(required_unless_present = "user")]
        name: Option<String>,
        /// Revoke this user's requests (with --all).
        #[arg(long, requires = "all")]
        user: Option<String>,
        /// Every live request of --user.
        #[arg(long, requires = "user")]
        all: bool,
        /// Why.
        #[arg(short, long)]
        reason: String,
    },
    /// What you can request: host groups, hosts, logins, from the policies naming you.
    Hosts {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Play a recording safely (a session's, from the audit API, or an asciicast v2 FILE, or -
    /// for standard input): escape sequences that reach beyond the screen (title, clipboard,
    /// terminal queries) are removed.
    Replay {
        /// A session name (`kubectl gatehouse sessions`), a .cast file, or - for standard input.
        /// An existing file wins over a session of the same name.
        #[arg(value_name = "SESSION|FILE")]
        file: PathBuf,
        /// Playback speed (2 plays twice as fast).
        #[arg(long, default_value = "1", value_parser = replay::parse_speed)]
        speed: f64,
        /// The longest pause in seconds (default: the recording's idle_time_limit, else none).
        #[arg(long, value_name = "SECS", value_parser = replay::parse_seconds)]
        idle_limit: Option<f64>,
        /// Print the output at once, without timing (like `asciinema cat`).
        #[arg(long)]
        cat: bool,
        /// Also show what the engineer sent (input events), escaped and marked [input "…"].
        #[arg(long)]
        input: bool,
        /// Play the session in the browser instead: serve the audit API's web player page
        /// through a `kubectl proxy` on loopback and print its URL (until Ctrl-C).
        #[arg(long, conflicts_with_all = ["speed", "idle_limit", "cat", "input"])]
        web: bool,
    },
    /// List recorded sessions (audit API): who, where, when, exit status, recording.
    Sessions {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
        /// Only sessions on this host.
        #[arg(long)]
        host: Option<String>,
        /// Only sessions of this AccessRequest.
        #[arg(long)]
        request: Option<String>,
        /// Only sessions that started in this last while (90m, 24h) or since an RFC 3339 time.
        #[arg(long, value_name = "DURATION|TIME")]
        since: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Query audit events (audit API), or `audit verify` the stored trail.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        verify: Option<AuditCommand>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Only events of this user.
        #[arg(long)]
        user: Option<String>,
        /// Only these event types (repeat, or a comma list: loginAccepted,sessionStarted).
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
        /// From this time on (RFC 3339, or a duration ago: 2h).
        #[arg(long)]
        from: Option<String>,
        /// Before this time (RFC 3339, or a duration ago).
        #[arg(long)]
        to: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Print the version.
    Version,
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the stored audit trail: every writer's hash chain of batches, and every
    /// recording's SHA-256. Reads the recording store directly, with read-only credentials:
    /// --store-dir DIR, or GATEHOUSE_S3_* (as for the proxy) and AWS_ACCESS_KEY_ID /
    /// AWS_SECRET_ACCESS_KEY. Exits 1 naming each object that fails.
    Verify {
        /// A directory store (else S3 from the environment).
        #[arg(long, value_name = "DIR")]
        store_dir: Option<PathBuf>,
        /// Accept chains that start after sequence 0 (older batches removed by retention).
        #[arg(long)]
        allow_expired: bool,
        /// Check the batches only, not the recordings they name.
        #[arg(long)]
        skip_recordings: bool,
        /// Output format (table is the text report).
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

fn connect_options(args: ConnectArgs) -> ConnectOptions {
    ConnectOptions {
        login: args.request.login,
        key: args.request.key,
        request: args.auto_request,
        duration: args.request.duration,
        reason: args.request.reason,
        proxy: args.proxy,
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let connection = Connection {
        kubeconfig: cli.kubeconfig,
        context: cli.context,
        namespace: cli.namespace,
        system_namespace: cli.gatehouse_namespace,
    };
    match cli.command {
        Command::Version => {
            println!("kubectl-gatehouse {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Command::Completion { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(
                shell,
                &mut command,
                "kubectl-gatehouse",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        Command::Replay {
            file,
            speed,
            idle_limit,
            cat,
            input,
            web,
        } => {
            if web {
                let name = file.to_string_lossy().into_owned();
                audit::query::check_session(&name)
                    .map_err(|e| Error::Usage(format!("replay --web needs a session name: {e}")))?;
                let cluster = Cluster::connect(&connection).await?;
                return audit::replay_web(&cluster, &connection, &name).await;
            }
            let mut options = replay::Options {
                file,
                speed,
                idle_limit,
                cat,
                input,
            };
            let session = options.file.to_str().map(str::to_owned).filter(|name| {
                name != "-" && !options.file.exists() && audit::query::check_session(name).is_ok()
            });
            // Keeps the downloaded cast until it has been played.
            let mut _download = None;
            if let Some(session) = session {
                let cluster = Cluster::connect(&connection).await?;
                let file = audit::fetch_recording(&cluster, &session).await?;
                options.file = file.path().to_path_buf();
                _download = Some(file);
            }
            // Plain blocking I/O and sleeps: nothing else runs on the runtime meanwhile.
            return replay::replay(&options);
        }
        Command::Audit {
            verify:
                Some(AuditCommand::Verify {
                    store_dir,
                    allow_expired,
                    skip_recordings,
                    output,
                }),
            ..
        } => {
            let flags = audit::StoreFlags { dir: store_dir };
            return audit::verify(&flags, allow_expired, skip_recordings, output).await;
        }
        _ => {}
    }
    let cluster = Cluster::connect(&connection).await?;
    match cli.command {
        Command::Version | Command::Completion { .. } | Command::Replay { .. } => Ok(()),
        Command::Audit {
            verify: Some(_), ..
        } => Ok(()),
        Command::Sessions {
            all_namespaces,
            user,
            host,
            request,
            since,
            output,
        } => {
            let filter = audit::query::SessionFilter {
                user,
                host,
                request,
            };
            audit::sessions(&cluster, all_namespaces, &filter, since.as_deref(), output).await
        }
        Command::Audit {
            verify: None,
            all_namespaces,
            user,
            types,
            from,
            to,
            output,
        } => {
            let filter = audit::query::EventFilter::new(
                user,
                &types,
                from.as_deref(),
                to.as_deref(),
                jiff::Timestamp::now(),
            )
            .map_err(|e| Error::Usage(e.to_string()))?;
            audit::events(&cluster, all_namespaces, &filter, output).await
        }
        Command::Request {
            target,
            args,
            no_wait,
            name,
        } => {
            let ask = request::Ask {
                target,
                login: args.login,
                duration: args.duration,
                reason: args.reason,
                key: args.key,
                no_wait,
                name,
            };
            request::request(&cluster, &ask).await.map(|_| ())
        }
        Command::Wait { name, key } => request::wait_command(&cluster, &name, key.as_deref()).await,
        Command::Ssh { host, args, rest } => {
            connect::connect(
                &cluster,
                Program::Ssh,
                Some(&host),
                &rest,
                &connect_options(args),
            )
            .await
        }
        Command::Scp { args, rest } => {
            connect::connect(&cluster, Program::Scp, None, &rest, &connect_options(args)).await
        }
        Command::Sftp { host, args, rest } => {
            connect::connect(
                &cluster,
                Program::Sftp,
                Some(&host),
                &rest,
                &connect_options(args),
            )
            .await
        }
        Command::Config { write, key, proxy } => {
            let options = ConnectOptions {
                login: None,
                key,
                request: false,
                duration: "1h".into(),
                reason: None,
                proxy,
            };
            connect::config(&cluster, write, &options).await
        }
        Command::Ls {
            all,
            to_approve,
            output,
        } => {
            let which = if to_approve {
                Which::ToApprove
            } else if all {
                Which::All
            } else {
                Which::Mine
            };
            view::ls(&cluster, which, output).await
        }
        Command::Describe { name, output } => view::describe(&cluster, &name, output).await,
        Command::Approve { name, reason } => {
            view::decide(&cluster, &name, Decision::Approve, &reason).await
        }
        Command::Deny { name, reason } => {
            view::decide(&cluster, &name, Decision::Deny, &reason).await
        }
        Command::Revoke {
            name,
            user,
            all: _,
            reason,
        } => match (name, user) {
            (_, Some(user)) => view::revoke_all(&cluster, &user, &reason).await,
            (Some(name), None) => view::decide(&cluster, &name, Decision::Revoke, &reason).await,
            (None, None) => Err(Error::Usage("name a request, or --user U --all".into())),
        },
        Command::Hosts { output } => view::hosts(&cluster, output).await,
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One TLS provider in the workspace (aws-lc-rs); kube's rustls needs it installed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            match error {
                Error::Interrupted { .. } => std::process::ExitCode::from(130),
                _ => std::process::ExitCode::FAILURE,
            }
        }
    }
}
