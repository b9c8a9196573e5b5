//! Route URLs, `advertise` values and the `--cluster` listen URL: the
//! URL reading nats-server does with Go's net/url, as far as routes need
//! it, and never a password in an error message.

use super::DEFAULT_CLUSTER_HOST;

/// One entry of `routes` (or `--routes`).
#[derive(Clone, PartialEq)]
pub struct RouteUrl {
    /// As configured, with any password replaced by "[REDACTED]" (for logs
    /// and /routez).
    pub display: String,
    /// Lower-cased: "nats-route", "nats" or "tls". It does not choose TLS.
    pub scheme: String,
    /// Without the brackets of an IPv6 address.
    pub host: String,
    pub port: u16,
    /// Percent-decoded; a user always comes with a password.
    pub user: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for RouteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The display form, so the password never reaches a debug dump.
        write!(f, "RouteUrl({})", self.display)
    }
}

/// `advertise`: "host" or "host:port" (IPv6 in brackets), port 1..65535.
/// Without a port the route listen port is meant (as in nats-server).
pub fn parse_advertise(text: &str) -> Result<(String, Option<u16>), String> {
    let bad = |why: &str| Err(format!("invalid cluster advertise \"{text}\": {why}"));
    let t = text.trim();
    let (host, port) = match split_host_port(t) {
        Ok(hp) => hp,
        Err(e) => return bad(&e),
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "/@?#".contains(c)) {
        return bad("expected host or host:port");
    }
    let port = match port.map(port_number) {
        None => None,
        Some(Some(p)) => Some(p),
        Some(None) => return bad("the port must be 1..65535 (leave it out for the listen port)"),
    };
    Ok((host.to_string(), port))
}

/// A port written as plain digits (no sign, no spaces), 1..65535.
fn port_number(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|p| *p > 0)
}

/// "host", "host:port", "[v6]" or "[v6]:port" (the port unparsed).
fn split_host_port(t: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = t.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("missing ']' in an IPv6 address")?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host, Some(p))),
                None => Err("unexpected text after ']'".into()),
            },
        };
    }
    match t.split_once(':') {
        Some((h, p)) if !p.contains(':') => Ok((h, Some(p))),
        Some(_) => Err("IPv6 addresses need brackets ([::1]:6222)".into()),
        None => Ok((t, None)),
    }
}

/// A URL cut into the parts routes and `--cluster` use.
struct UrlParts {
    scheme: String,
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<String>,
    /// The text with the password replaced.
    redacted: String,
}

const REDACTED: &str = "[REDACTED]";

/// `scheme://[user[:password]@]host[:port][/]`, with nats-server's (Go's)
/// reading of the user part: up to the last '@', user and password
/// percent-decoded. Errors never show a password.
fn split_url(text: &str) -> Result<UrlParts, String> {
    let t = text.trim();
    let Some((scheme, rest)) = t.split_once("://") else {
        let shown = match t.rsplit_once('@') {
            Some((_, host)) => format!("[...]@{host}"),
            None => t.to_string(),
        };
        return Err(format!("\"{shown}\" is not a URL (scheme://host:port)"));
    };
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_len);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let mut redacted = t.to_string();
    let (mut user, mut password) = (None, None);
    if let Some(ui) = userinfo {
        let start = scheme.len() + 3;
        let (u, p) = match ui.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (ui, None),
        };
        if p.is_some() {
            redacted = format!(
                "{}{REDACTED}{}",
                &t[..start + u.len() + 1],
                &t[start + ui.len()..]
            );
        }
        user = Some(percent_decode(u).map_err(|e| format!("{redacted}: {e}"))?);
        password = p
            .map(percent_decode)
            .transpose()
            .map_err(|e| format!("{redacted}: {e}"))?;
    }
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return Err(format!("{redacted}: invalid scheme"));
    }
    if !tail.is_empty() && tail != "/" {
        return Err(format!("{redacted}: unexpected path, query or fragment"));
    }
    let (host, port) = split_host_port(hostport).map_err(|e| format!("{redacted}: {e}"))?;
    if host.contains(|c: char| c.is_whitespace()) {
        return Err(format!("{redacted}: invalid host"));
    }
    Ok(UrlParts {
        scheme: scheme.to_ascii_lowercase(),
        user,
        password,
        host: host.to_string(),
        port: port.map(str::to_string),
        redacted,
    })
}

/// `%XX` escapes of a URL's user part; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("invalid %-escape in the user or password")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the user or password is not UTF-8".to_string())
}

impl RouteUrl {
    /// Parse one route URL: `nats-route://`, `nats://` or `tls://`, a host,
    /// a port, optionally `user:password@` (both or neither).
    pub fn parse(text: &str) -> Result<RouteUrl, String> {
        let p = split_url(text)?;
        let shown = &p.redacted;
        if !["nats-route", "nats", "tls"].contains(&p.scheme.as_str()) {
            return Err(format!(
                "{shown}: unsupported scheme (use nats-route://, nats:// or tls://)"
            ));
        }
        if p.host.is_empty() {
            return Err(format!("{shown}: no host"));
        }
        let port = match p.port.as_deref().map(port_number) {
            Some(Some(port)) => port,
            Some(None) => return Err(format!("{shown}: invalid port (1..65535)")),
            None => return Err(format!("{shown}: no port")),
        };
        match (&p.user, &p.password) {
            (Some(u), Some(_)) if u.is_empty() => return Err(format!("{shown}: empty user")),
            (Some(_), None) => return Err(format!("{shown}: a user but no password")),
            _ => {}
        }
        Ok(RouteUrl {
            display: p.redacted,
            scheme: p.scheme,
            host: p.host,
            port,
            user: p.user,
            password: p.password,
        })
    }
}

/// The listen URL of `--cluster`.
pub(super) struct ListenUrl {
    pub host: String,
    pub port: i32,
    /// (user, password) from the URL.
    pub creds: Option<(String, String)>,
}

/// Read the `--cluster` URL: any scheme, as nats-server; port -1 picks a
/// free one; an empty host is the default.
pub(super) fn parse_listen_url(text: &str) -> Result<ListenUrl, String> {
    let p = split_url(text)?;
    let shown = &p.redacted;
    let port = match p.port.as_deref() {
        Some("-1") => -1,
        Some(digits) => match port_number(digits) {
            Some(port) => i32::from(port),
            None => return Err(format!("{shown}: invalid port (1..65535, or -1)")),
        },
        None => return Err(format!("{shown}: missing port")),
    };
    let host = if p.host.is_empty() {
        DEFAULT_CLUSTER_HOST.to_string()
    } else {
        p.host
    };
    let creds = match (p.user, p.password) {
        (None, _) => None,
        (Some(_), None) => return Err("expected cluster password to be set".into()),
        (Some(u), Some(_)) if u.is_empty() => return Err(format!("{shown}: empty user")),
        (Some(u), Some(pw)) => Some((u, pw)),
    };
    Ok(ListenUrl { host, port, creds })
}
