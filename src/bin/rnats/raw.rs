//! A minimal wire-protocol client for the benchmark: connect, publish
//! pre-encoded batches, and count/parse deliveries with little CPU.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// host:port and credentials from a `nats://[user:pass@|token@]host:port` URL.
pub struct Target {
    pub addr: String,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
    /// TLS (after INFO, as NATS does), verifying the server with this config.
    pub tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
}

/// A TLS client configuration trusting the CA certificates in `ca_file`.
pub fn tls_connector(ca_file: &std::path::Path) -> Result<tokio_rustls::TlsConnector, Error> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

pub fn parse_url(url: &str) -> Result<Target, Error> {
    let first = url.split(',').next().unwrap_or(url).trim();
    let rest = first
        .strip_prefix("nats://")
        .or_else(|| first.strip_prefix("tls://"))
        .unwrap_or(first);
    let (creds, hostport) = match rest.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, rest),
    };
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:4222")
    };
    let (user, pass, token) = match creds {
        Some(c) => match c.split_once(':') {
            Some((u, p)) => (Some(u.to_string()), Some(p.to_string()), None),
            None => (None, None, Some(c.to_string())),
        },
        None => (None, None, None),
    };
    Ok(Target {
        addr,
        user,
        pass,
        token,
        tls: None,
    })
}

pub struct Conn {
    pub rd: Box<dyn AsyncRead + Send + Unpin>,
    pub wr: Box<dyn AsyncWrite + Send + Unpin>,
    /// Bytes read past the handshake.
    pub buf: BytesMut,
}

impl Conn {
    /// Connect, read INFO, send CONNECT and wait for the PONG.
    pub async fn connect(t: &Target, name: &str) -> Result<Conn, Error> {
        let mut stream = TcpStream::connect(&t.addr).await?;
        stream.set_nodelay(true)?;
        // INFO arrives in clear, byte by byte so nothing past it is consumed
        // before a TLS upgrade.
        let mut info = Vec::new();
        let mut byte = [0u8; 1];
        while !info.ends_with(b"\n") {
            if stream.read(&mut byte).await? == 0 || info.len() > 64 * 1024 {
                return Err("connection closed before INFO".into());
            }
            info.push(byte[0]);
        }
        if !info.starts_with(b"INFO ") {
            return Err(format!("expected INFO, got {:?}", String::from_utf8_lossy(&info)).into());
        }
        let (rd, wr): (
            Box<dyn AsyncRead + Send + Unpin>,
            Box<dyn AsyncWrite + Send + Unpin>,
        ) = match &t.tls {
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), stream).await?;
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w))
            }
            None => {
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
        };
        let mut c = Conn {
            rd,
            wr,
            buf: BytesMut::with_capacity(256 * 1024),
        };
        let mut connect = serde_json::json!({
            "verbose": false, "pedantic": false, "echo": true, "headers": true,
            "no_responders": true, "protocol": 1, "lang": "rust-raw",
            "version": env!("CARGO_PKG_VERSION"), "name": name,
        });
        if let Some(u) = &t.user {
            connect["user"] = u.clone().into();
        }
        if let Some(p) = &t.pass {
            connect["pass"] = p.clone().into();
        }
        if let Some(tok) = &t.token {
            connect["auth_token"] = tok.clone().into();
        }
        let line = format!("CONNECT {connect}\r\nPING\r\n");
        c.wr.write_all(line.as_bytes()).await?;
        c.await_pong().await?;
        Ok(c)
    }

    async fn read_line(&mut self) -> Result<String, Error> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf) {
                let line = self.buf.split_to(i + 1);
                return Ok(String::from_utf8_lossy(&line).trim_end().to_string());
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.rd.read_buf(&mut self.buf))
                .await??;
            if n == 0 {
                return Err("connection closed".into());
            }
        }
    }

    /// Read lines until PONG; an -ERR is an error.
    pub async fn await_pong(&mut self) -> Result<(), Error> {
        loop {
            let line = self.read_line().await?;
            if line == "PONG" {
                return Ok(());
            }
            if line.starts_with("-ERR") {
                return Err(line.into());
            }
        }
    }

    /// PING and wait for PONG: everything sent before has been processed.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.wr.write_all(b"PING\r\n").await?;
        self.await_pong().await
    }
}

/// One parsed delivery.
pub struct Delivery<'a> {
    pub reply: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// Parse complete MSG/HMSG frames from `buf`, calling `f` for each and
/// answering PINGs into `pong`. Returns false on -ERR.
pub fn parse_deliveries(
    buf: &mut BytesMut,
    pong: &mut bool,
    mut f: impl FnMut(Delivery<'_>),
) -> Result<(), Error> {
    loop {
        let Some(nl) = memchr::memchr(b'\n', buf) else {
            return Ok(());
        };
        let line = &buf[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"MSG ") || line.starts_with(b"HMSG ") {
            let hmsg = line[0] == b'H';
            // No allocation per message: at most 6 tokens matter.
            let mut args: [&[u8]; 6] = [&[]; 6];
            let mut n = 0;
            for a in line.split(|&b| b == b' ').filter(|a| !a.is_empty()) {
                if n < args.len() {
                    args[n] = a;
                }
                n += 1;
            }
            let size = parse_num(args[n.clamp(1, 6) - 1])?;
            // MSG subj sid [reply] size ; HMSG subj sid [reply] hsize size
            let reply_idx = if hmsg { 5 } else { 4 };
            let has_reply = n == reply_idx + 1;
            let start = nl + 1;
            if buf.len() < start + size + 2 {
                return Ok(());
            }
            let reply_range = has_reply.then(|| {
                let r = args[3];
                let off = r.as_ptr() as usize - buf.as_ptr() as usize;
                off..off + r.len()
            });
            {
                let b = &buf[..];
                f(Delivery {
                    reply: reply_range.map(|r| &b[r]),
                    payload: &b[start..start + size],
                });
            }
            buf.advance(start + size + 2);
        } else {
            if line == b"PING" {
                *pong = true;
            } else if line.starts_with(b"-ERR") {
                return Err(String::from_utf8_lossy(line).into_owned().into());
            }
            buf.advance(nl + 1);
        }
    }
}

fn parse_num(s: &[u8]) -> Result<usize, Error> {
    std::str::from_utf8(s)?
        .parse()
        .map_err(|_| "bad size in MSG".into())
}
