//! `rnats-server`: command line compatible with nats-server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rnats::config::{Options, parse_size};
use rnats::server::{Server, VERSION, logging};

/// A NATS-compatible message broker.
#[derive(Parser, Debug)]
#[command(
    name = "rnats-server",
    disable_version_flag = true,
    allow_negative_numbers = true
)]
struct Cli {
    /// Bind to host address
    #[arg(short = 'a', long = "addr", visible_alias = "net", value_name = "HOST")]
    addr: Option<String>,
    /// Use port for clients (-1 picks a free port)
    #[arg(short = 'p', long = "port")]
    port: Option<i32>,
    /// Server name (default: the server ID)
    #[arg(short = 'n', long = "name", visible_alias = "server_name")]
    name: Option<String>,
    /// Configuration file
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Test the configuration file and exit
    #[arg(short = 't')]
    test_config: bool,
    /// Use port for HTTP monitoring (-1 picks a free port)
    #[arg(short = 'm', long = "http_port")]
    http_port: Option<i32>,
    /// Use port for HTTPS monitoring
    #[arg(long = "https_port")]
    https_port: Option<i32>,
    /// File to redirect log output
    #[arg(
        short = 'l',
        long = "log",
        visible_alias = "log_file",
        value_name = "FILE"
    )]
    log: Option<PathBuf>,
    /// Timestamp log entries (default: true)
    #[arg(short = 'T', long = "logtime", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    logtime: Option<bool>,
    /// Log JSON lines (one object per event) instead of text
    #[arg(long = "log_json")]
    log_json: bool,
    /// Enable debugging output
    #[arg(short = 'D', long = "debug")]
    debug: bool,
    /// Trace the raw protocol
    #[arg(short = 'V', long = "trace")]
    trace: bool,
    /// File to store the process ID
    #[arg(short = 'P', long = "pid", value_name = "FILE")]
    pid: Option<PathBuf>,
    /// Maximum number of bytes in a message payload
    #[arg(long = "max_payload", value_name = "SIZE")]
    max_payload: Option<String>,
    /// Send a signal to a running server: stop|quit|reopen|reload|ldm|term[=<pid>|=<pid file>]
    #[arg(long = "signal", value_name = "SIGNAL")]
    signal: Option<String>,
    /// Enable TLS, do not verify clients
    #[arg(long = "tls")]
    tls: bool,
    /// Server certificate file
    #[arg(long = "tlscert", value_name = "FILE")]
    tlscert: Option<PathBuf>,
    /// Private key for server certificate
    #[arg(long = "tlskey", value_name = "FILE")]
    tlskey: Option<PathBuf>,
    /// Enable TLS, verify client certificates
    #[arg(long = "tlsverify")]
    tlsverify: bool,
    /// Client certificate CA for verification
    #[arg(long = "tlscacert", value_name = "FILE")]
    tlscacert: Option<PathBuf>,
    /// User required for connections
    #[arg(long = "user")]
    user: Option<String>,
    /// Password required for connections
    #[arg(long = "pass")]
    pass: Option<String>,
    /// Authorization token required for connections
    #[arg(long = "auth")]
    auth: Option<String>,
    /// Cluster URL for solicited routes: nats://[user:pass@]host:port ("" turns clustering off)
    #[arg(long = "cluster", visible_alias = "cluster_listen", value_name = "URL")]
    cluster: Option<String>,
    /// Routes to solicit and connect (comma separated URLs)
    #[arg(long = "routes", value_name = "URLS")]
    routes: Option<String>,
    /// Cluster name (default: one is generated)
    #[arg(long = "cluster_name", value_name = "NAME")]
    cluster_name: Option<String>,
    /// Cluster host[:port] to advertise to other servers
    #[arg(long = "cluster_advertise", value_name = "HOSTPORT")]
    cluster_advertise: Option<String>,
    /// Do not advertise known cluster information to clients
    #[arg(long = "no_advertise", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    no_advertise: Option<bool>,
    /// For implicit routes, number of connect retries
    #[arg(long = "connect_retries", value_name = "N")]
    connect_retries: Option<i32>,
    /// JetStream is not part of rnats (accepted and ignored with a warning)
    #[arg(long = "jetstream")]
    jetstream: bool,
    /// JetStream storage directory (ignored)
    #[arg(long = "store_dir", value_name = "DIR")]
    store_dir: Option<String>,
    /// Show version
    #[arg(short = 'v', long = "version")]
    version: bool,
}

/// nats-server's Go flag parser accepts `-port`, `-DV`, `-js`, `-ms` and
/// friends; rewrite them into the forms clap understands.
fn normalize_args(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    for a in args {
        let (flag, value) = match a.split_once('=') {
            Some((f, v)) if a.starts_with('-') => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mapped: Option<&[&str]> = match flag.as_str() {
            "-DV" | "-VD" => Some(&["-D", "-V"]),
            "-DVV" => Some(&["-D", "-V"]),
            "-js" => Some(&["--jetstream"]),
            "-ms" => Some(&["--https_port"]),
            "-sl" => Some(&["--signal"]),
            "-sd" => Some(&["--store_dir"]),
            _ => None,
        };
        let push = |out: &mut Vec<String>, f: &str| match &value {
            Some(v) => out.push(format!("{f}={v}")),
            None => out.push(f.to_string()),
        };
        if let Some(m) = mapped {
            for f in m {
                push(&mut out, f);
            }
        } else if flag.len() > 2
            && flag.starts_with('-')
            && !flag.starts_with("--")
            && flag[1..]
                .chars()
                .all(|c| c.is_ascii_alphabetic() || c == '_')
        {
            // `-port 4222` → `--port 4222`
            push(&mut out, &format!("-{flag}"));
        } else {
            out.push(a);
        }
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize_args(std::env::args()));
    if cli.version {
        println!("rnats-server: v{VERSION}");
        return ExitCode::SUCCESS;
    }
    if let Some(sig) = &cli.signal {
        return match rnats::server::signals::send(sig, cli.pid.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rnats-server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // The file, then the flags over it, then the rules over the result.
    let opts = match load_options(&cli) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rnats-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.test_config {
        match &cli.config {
            Some(p) => println!("rnats-server: configuration file {} is valid", p.display()),
            None => println!("rnats-server: configuration is valid"),
        }
        for w in &opts.warnings {
            eprintln!("rnats-server: warning: {w}");
        }
        return ExitCode::SUCCESS;
    }
    if let Err(e) = logging::init(
        opts.debug,
        opts.trace,
        opts.logtime,
        opts.log_json,
        opts.log_file.as_deref(),
    ) {
        eprintln!("rnats-server: cannot open log file: {e}");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Spin (bounded) before a worker sleeps: see busy_poll.
        .on_thread_park(rnats::busy_poll::before_park)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rnats-server: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(opts, cli))
}

/// Build options as at startup (and on SIGHUP): the config file, then the
/// flags over it, then [`Options::validate`] over the result. Nothing is
/// applied to a running server unless this succeeds.
fn load_options(cli: &Cli) -> Result<Options, String> {
    let mut opts = match &cli.config {
        // Not `from_file`: the rules apply to the file and flags together
        // (e.g. https_port in the file, TLS from --tls flags).
        Some(path) => Options::read_file(path).map_err(|e| e.to_string())?,
        None => Options::default(),
    };
    apply_flags(cli, &mut opts)?;
    opts.validate().map_err(|e| e.to_string())?;
    Ok(opts)
}

fn apply_flags(cli: &Cli, opts: &mut Options) -> Result<(), String> {
    if let Some(a) = &cli.addr {
        opts.host = a.clone();
    }
    // A value from a flag must not be blamed on a line of the file.
    if let Some(p) = cli.port {
        opts.port = p;
        opts.positions.forget("port");
    }
    if let Some(n) = &cli.name {
        opts.server_name = n.clone();
    }
    if let Some(p) = cli.http_port {
        opts.http_port = p;
        opts.positions.forget("http_port");
    }
    // nats-server's monitor listens on the client host unless told
    // otherwise (`-a 127.0.0.1 -m 8222` serves on 127.0.0.1:8222); a
    // still-default http_host follows the client host from -a or the file.
    if opts.http_host == Options::default().http_host {
        opts.http_host = opts.host.clone();
    }
    if let Some(p) = cli.https_port {
        opts.https_port = p;
        opts.positions.forget("https_port");
    }
    if let Some(l) = &cli.log {
        opts.log_file = Some(l.clone());
    }
    if let Some(t) = cli.logtime {
        opts.logtime = t;
    }
    opts.debug |= cli.debug;
    opts.log_json |= cli.log_json;
    opts.trace |= cli.trace;
    if let Some(p) = &cli.pid {
        opts.pid_file = Some(p.clone());
    }
    if let Some(s) = &cli.max_payload {
        opts.max_payload = parse_size(s).ok_or_else(|| format!("invalid --max_payload \"{s}\""))?;
        opts.positions.forget("max_payload");
    }
    if cli.user.is_some() || cli.pass.is_some() || cli.auth.is_some() {
        let timeout = opts.auth.timeout;
        opts.auth = rnats::auth::AuthConfig::from_flags(
            cli.user.clone(),
            cli.pass.clone(),
            cli.auth.clone(),
        )?;
        opts.auth.timeout = timeout;
    }
    if cli.tls || cli.tlsverify || cli.tlscert.is_some() || cli.tlskey.is_some() {
        let mut tls = opts
            .tls
            .clone()
            .unwrap_or_else(|| rnats::tls::TlsOptions::new(PathBuf::new(), PathBuf::new()));
        if let Some(c) = &cli.tlscert {
            tls.cert_file = c.clone();
            opts.positions.forget("tls.cert_file");
        }
        if let Some(k) = &cli.tlskey {
            tls.key_file = k.clone();
            opts.positions.forget("tls.key_file");
        }
        if let Some(ca) = &cli.tlscacert {
            tls.ca_file = Some(ca.clone());
            opts.positions.forget("tls.ca_file");
        }
        if cli.tlsverify {
            tls.verify = true;
            opts.positions.forget("tls");
        }
        if tls.cert_file.as_os_str().is_empty() || tls.key_file.as_os_str().is_empty() {
            return Err("TLS requires --tlscert and --tlskey".into());
        }
        opts.tls = Some(tls);
    }
    rnats::config::cluster::ClusterFlags {
        listen: cli.cluster.clone(),
        routes: cli.routes.clone(),
        name: cli.cluster_name.clone(),
        advertise: cli.cluster_advertise.clone(),
        no_advertise: cli.no_advertise.unwrap_or(false),
        connect_retries: cli.connect_retries,
    }
    .apply(opts)?;
    if cli.jetstream || cli.store_dir.is_some() {
        opts.warnings
            .push("JetStream is not part of rnats; -js/--store_dir are ignored".into());
    }
    Ok(())
}

async fn run(opts: Options, cli: Cli) -> ExitCode {
    let pid_file = opts.pid_file.clone();
    let server = match Server::start(opts).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("rnats-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(p) = &pid_file
        && let Err(e) = std::fs::write(p, std::process::id().to_string())
    {
        tracing::error!("Could not write pidfile: {e}");
    }
    rnats::server::signals::wait_for_shutdown(&server, || load_options(&cli)).await;
    tracing::info!("Initiating Shutdown...");
    server.shutdown().await;
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!("Server Exiting..");
    ExitCode::SUCCESS
}
