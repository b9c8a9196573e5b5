//! `rnats`: a command-line client and load tool for NATS servers.
//!
//! `pub`, `sub`, `req` and `reply` use the async-nats client (so they work
//! against any NATS server, with credentials in the URL); `bench` speaks
//! the wire protocol directly so the load generator spends as little CPU
//! as possible and the server under test is what gets measured.
//! `passwd` and `certs dev` are offline helpers for the `authorization` and
//! `tls` configuration blocks; `nkey` and `jwt` make keys and JWTs for
//! operator mode (docs/OPERATOR_MODE.md).

mod bench;
mod certs;
mod jwt;
mod nkey;
mod passwd;
mod raw;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use futures::StreamExt;

#[derive(Parser, Debug)]
#[command(name = "rnats", version, about = "NATS client and benchmark tool")]
struct Cli {
    /// Server URLs, comma separated (nats://[user:pass@|token@]host:port)
    #[arg(
        short = 's',
        long = "server",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    server: String,
    /// Client certificate (mutual TLS)
    #[arg(long, global = true, value_name = "FILE")]
    tlscert: Option<std::path::PathBuf>,
    /// Client certificate key (mutual TLS)
    #[arg(long, global = true, value_name = "FILE")]
    tlskey: Option<std::path::PathBuf>,
    /// CA to verify the server's certificate (implies TLS)
    #[arg(long, global = true, value_name = "FILE")]
    tlscacert: Option<std::path::PathBuf>,
    /// NATS credentials file (JWT + NKey seed)
    #[arg(long, global = true, value_name = "FILE")]
    creds: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Publish a message
    Pub {
        subject: String,
        #[arg(default_value = "")]
        payload: String,
        /// Publish this many times
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Header as key:value (repeatable)
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Reply subject
        #[arg(long)]
        reply: Option<String>,
    },
    /// Subscribe and print messages
    Sub {
        subject: String,
        /// Queue group
        #[arg(short, long)]
        queue: Option<String>,
        /// Exit after this many messages (0 = never)
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Send a request and print the reply
    Req {
        subject: String,
        #[arg(default_value = "")]
        payload: String,
        /// Timeout, e.g. 2s or 500ms
        #[arg(long, default_value = "2s")]
        timeout: String,
    },
    /// Answer requests with a fixed response
    Reply {
        subject: String,
        #[arg(default_value = "")]
        response: String,
        #[arg(short, long)]
        queue: Option<String>,
        /// Exit after this many requests (0 = never)
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Measure throughput and latency (like `nats bench`)
    Bench(bench::BenchArgs),
    /// Make a bcrypt hash for the authorization block (like mkpasswd)
    Passwd(passwd::PasswdArgs),
    /// Generate certificates
    Certs(certs::CertsArgs),
    /// NKeys: generate, show public keys, sign and verify (like nk)
    Nkey(nkey::NkeyArgs),
    /// Operator mode: operator, accounts, users and their JWTs (like nsc)
    Jwt(jwt::JwtArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rnats: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rnats: {e}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Connection settings shared by the client subcommands.
struct ClientOpts {
    servers: String,
    tlscert: Option<std::path::PathBuf>,
    tlskey: Option<std::path::PathBuf>,
    tlscacert: Option<std::path::PathBuf>,
    creds: Option<std::path::PathBuf>,
}

async fn connect(c: &ClientOpts) -> Result<async_nats::Client, Error> {
    let addrs: Vec<async_nats::ServerAddr> = c
        .servers
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let mut opts = async_nats::ConnectOptions::new().name("rnats");
    // async-nats does not send credentials embedded in a URL by itself.
    if let Some(first) = addrs.first() {
        match (first.username(), first.password()) {
            (Some(u), Some(p)) => opts = opts.user_and_password(u.into(), p.into()),
            (Some(token), None) => opts = opts.token(token.into()),
            _ => {}
        }
    }
    if let Some(ca) = &c.tlscacert {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    match (&c.tlscert, &c.tlskey) {
        (Some(cert), Some(key)) => {
            opts = opts
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true)
        }
        (None, None) => {}
        _ => return Err("--tlscert and --tlskey go together".into()),
    }
    if let Some(creds) = &c.creds {
        opts = opts.credentials_file(creds).await?;
    }
    Ok(opts.connect(addrs).await?)
}

/// A plain or queue subscription.
async fn subscribe(
    client: &async_nats::Client,
    subject: &str,
    queue: Option<String>,
) -> Result<async_nats::Subscriber, Error> {
    Ok(match queue {
        Some(q) => client.queue_subscribe(subject.to_string(), q).await?,
        None => client.subscribe(subject.to_string()).await?,
    })
}

async fn run(cli: Cli) -> Result<(), Error> {
    let conn = ClientOpts {
        servers: cli.server.clone(),
        tlscert: cli.tlscert.clone(),
        tlskey: cli.tlskey.clone(),
        tlscacert: cli.tlscacert.clone(),
        creds: cli.creds.clone(),
    };
    match cli.cmd {
        Cmd::Bench(args) => bench::run(&cli.server, cli.tlscacert.as_deref(), args).await,
        Cmd::Passwd(args) => passwd::run(&args),
        Cmd::Certs(args) => certs::run(&args),
        Cmd::Nkey(args) => nkey::run(&args),
        Cmd::Jwt(args) => jwt::run(&args, &cli.server).await,
        Cmd::Pub {
            subject,
            payload,
            count,
            headers,
            reply,
        } => {
            let client = connect(&conn).await?;
            let mut map = async_nats::HeaderMap::new();
            for h in &headers {
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| format!("header \"{h}\" is not key:value"))?;
                map.insert(k.trim(), v.trim());
            }
            for _ in 0..count {
                let body = bytes::Bytes::from(payload.clone());
                match (&reply, headers.is_empty()) {
                    (Some(r), true) => {
                        client
                            .publish_with_reply(subject.clone(), r.clone(), body)
                            .await?
                    }
                    (Some(r), false) => {
                        client
                            .publish_with_reply_and_headers(
                                subject.clone(),
                                r.clone(),
                                map.clone(),
                                body,
                            )
                            .await?
                    }
                    (None, true) => client.publish(subject.clone(), body).await?,
                    (None, false) => {
                        client
                            .publish_with_headers(subject.clone(), map.clone(), body)
                            .await?
                    }
                }
            }
            client.flush().await?;
            println!("Published {count} message(s) to \"{subject}\"");
            Ok(())
        }
        Cmd::Sub {
            subject,
            queue,
            count,
        } => {
            let client = connect(&conn).await?;
            let mut sub = subscribe(&client, &subject, queue).await?;
            println!("Subscribing on \"{subject}\"");
            let mut n = 0u64;
            while let Some(msg) = sub.next().await {
                n += 1;
                println!(
                    "[#{n}] Received on \"{}\"{}",
                    msg.subject,
                    msg.reply
                        .as_ref()
                        .map(|r| format!(" with reply \"{r}\""))
                        .unwrap_or_default()
                );
                if let Some(h) = &msg.headers {
                    for (k, vs) in h.iter() {
                        for v in vs {
                            println!("{k}: {v}");
                        }
                    }
                }
                println!("{}\n", String::from_utf8_lossy(&msg.payload));
                if count > 0 && n >= count {
                    break;
                }
            }
            Ok(())
        }
        Cmd::Req {
            subject,
            payload,
            timeout,
        } => {
            let client = connect(&conn).await?;
            let timeout = rnats::config::parse_duration(&timeout)
                .ok_or_else(|| format!("invalid timeout \"{timeout}\""))?;
            let req = async_nats::Request::new()
                .payload(payload.into())
                .timeout(Some(timeout));
            let msg = client.send_request(subject, req).await?;
            println!("{}", String::from_utf8_lossy(&msg.payload));
            Ok(())
        }
        Cmd::Reply {
            subject,
            response,
            queue,
            count,
        } => {
            let client = connect(&conn).await?;
            let mut sub = subscribe(&client, &subject, queue).await?;
            println!("Listening for requests on \"{subject}\"");
            let mut n = 0u64;
            while let Some(msg) = sub.next().await {
                if let Some(reply) = msg.reply {
                    client.publish(reply, response.clone().into()).await?;
                    client.flush().await?;
                }
                n += 1;
                if count > 0 && n >= count {
                    break;
                }
            }
            Ok(())
        }
    }
}
