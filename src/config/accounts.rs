//! The `accounts { ... }` block (nats-server's keys): each account's
//! users, default permissions, exports, imports and limits. Plain data and
//! parsing; the account registry (`crate::account`) builds on it.
//!
//! ```text
//! accounts {
//!   A: {
//!     users: [ {user: a, password: a}, {nkey: UD...} ]
//!     exports: [ {stream: "events.>"}, {service: "help", accounts: [B], response_type: singleton} ]
//!     limits: { max_connections: 10, max_subscriptions: 100, max_payload: 64KB }
//!   }
//!   B: {
//!     users: [ {user: b, password: b} ]
//!     imports: [ {stream: {account: A, subject: "events.>"}, prefix: from_a},
//!                {service: {account: A, subject: "help"}, to: "a.help"} ]
//!   }
//! }
//! ```

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::auth::{NkeyEntry, Permissions, UserEntry, UserOrNkey, parse_user, permissions_in};
use super::parser::{ConfigError, Spanned};
use super::value::{self as conf, Context};
use crate::protocol::subject;

/// nats-server's global account; no `accounts` entry may take its name.
pub const GLOBAL_ACCOUNT: &str = "$G";
/// nats-server's default system account name.
pub const DEFAULT_SYSTEM_ACCOUNT: &str = "$SYS";
/// How long a service import waits for responses by default
/// (nats-server's `DEFAULT_SERVICE_EXPORT_RESPONSE_THRESHOLD`).
pub const DEFAULT_RESPONSE_THRESHOLD: Duration = Duration::from_secs(120);

/// How many responses a service request may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResponseType {
    /// One response (nats-server's default).
    #[default]
    Singleton,
    /// Any number, until the threshold passes.
    Stream,
    /// Any number, until the threshold passes (nats-server's "chunked").
    Chunked,
}

impl ResponseType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseType::Singleton => "Singleton",
            ResponseType::Stream => "Stream",
            ResponseType::Chunked => "Chunked",
        }
    }
}

/// `{stream: SUBJ}` or `{service: SUBJ, response_type, threshold}`, public
/// or limited to `accounts: [...]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportConfig {
    pub subject: String,
    /// `None` for a stream export.
    pub service: Option<ServiceExport>,
    /// `None`: public.
    pub accounts: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceExport {
    pub response: ResponseType,
    pub threshold: Duration,
}

impl ExportConfig {
    /// May `account` import this export?
    pub fn allows(&self, account: &str) -> bool {
        self.accounts
            .as_ref()
            .is_none_or(|a| a.iter().any(|n| n == account))
    }
}

/// `{stream: {account, subject}, prefix | to}` or
/// `{service: {account, subject}, to}`.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportConfig {
    /// The exporting account.
    pub account: String,
    /// The subject in the exporting account.
    pub subject: String,
    pub service: bool,
    /// Streams: prepended (with a dot) to the subject in the importer.
    pub prefix: Option<String>,
    /// Streams: the subject in the importer (instead of `subject`);
    /// services: the subject importers publish requests to.
    pub to: Option<String>,
}

impl ImportConfig {
    /// The subject in the importing account.
    pub fn local_subject(&self) -> String {
        match (&self.prefix, &self.to) {
            (Some(p), _) => format!("{p}.{}", self.subject),
            (None, Some(t)) => t.clone(),
            (None, None) => self.subject.clone(),
        }
    }
}

/// `limits { max_connections, max_subscriptions, max_payload }`; `None`
/// is unlimited (a negative number in the file means that too).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccountLimits {
    pub max_connections: Option<u64>,
    pub max_subscriptions: Option<u64>,
    pub max_payload: Option<u64>,
}

/// One account of the `accounts` block.
#[derive(Clone, Debug, Default)]
pub struct AccountConfig {
    pub name: String,
    pub users: Vec<UserEntry>,
    pub nkeys: Vec<NkeyEntry>,
    pub default_permissions: Option<Permissions>,
    pub exports: Vec<ExportConfig>,
    pub imports: Vec<ImportConfig>,
    pub limits: AccountLimits,
    /// `mappings`: subject mappings of what is published in the account.
    pub mappings: Option<std::sync::Arc<crate::account::mapping::MappingTable>>,
}

/// Parse the `accounts` block: a map of name → account, or a list of
/// names (accounts with nothing in them).
pub fn parse_accounts(v: &Spanned, cx: &mut Context) -> Result<Vec<AccountConfig>, ConfigError> {
    let mut out: Vec<AccountConfig> = Vec::new();
    if let Some(items) = v.as_array() {
        for item in items {
            let name = conf::string(item, "accounts")?;
            check_name(item, &name)?;
            if out.iter().any(|a| a.name == name) {
                return Err(conf::err(item, format!("Duplicate Account Entry: {name}")));
            }
            out.push(AccountConfig {
                name,
                ..AccountConfig::default()
            });
        }
        return Ok(out);
    }
    for (name, av) in conf::map(v, "accounts")? {
        if cx.is_variable(av) {
            continue;
        }
        check_name(av, name)?;
        out.push(parse_account(name, av, cx)?);
    }
    Ok(out)
}

fn check_name(at: &Spanned, name: &str) -> Result<(), ConfigError> {
    if name == GLOBAL_ACCOUNT {
        return Err(conf::err(at, format!("\"{name}\" is a Reserved Account")));
    }
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '.') {
        return Err(conf::err(at, format!("invalid account name \"{name}\"")));
    }
    Ok(())
}

fn parse_account(name: &str, v: &Spanned, cx: &mut Context) -> Result<AccountConfig, ConfigError> {
    let map = v
        .as_map()
        .ok_or_else(|| conf::err(v, "Expected map entries for accounts"))?;
    let mut acc = AccountConfig {
        name: name.to_string(),
        ..AccountConfig::default()
    };
    for (k, val) in map {
        let lk = k.to_ascii_lowercase();
        match lk.as_str() {
            "users" => {
                let items = val
                    .as_array()
                    .ok_or_else(|| conf::err(val, "Expected users field to be an array"))?;
                for item in items {
                    match parse_user(item, cx)? {
                        UserOrNkey::User(mut u) => {
                            u.account = Some(name.to_string());
                            acc.users.push(u);
                        }
                        UserOrNkey::Nkey(mut n) => {
                            n.account = Some(name.to_string());
                            acc.nkeys.push(n);
                        }
                    }
                }
            }
            "default_permissions" => acc.default_permissions = Some(permissions_in(val, cx)?),
            "exports" => {
                let items = val
                    .as_array()
                    .ok_or_else(|| conf::err(val, "Exports should be an array"))?;
                for item in items {
                    acc.exports.push(parse_export(item, cx)?);
                }
            }
            "imports" => {
                let items = val
                    .as_array()
                    .ok_or_else(|| conf::err(val, "Imports should be an array"))?;
                for item in items {
                    let imp = parse_import(item, cx)?;
                    if imp.service {
                        let local = imp.local_subject();
                        if let Some(dup) = acc.imports.iter().find(|i| {
                            i.service && i.local_subject() == local && i.account == imp.account
                        }) {
                            return Err(conf::err(
                                item,
                                format!(
                                    "Duplicate service import subject \"{local}\", previously \
                                     used in import for account \"{}\", subject \"{}\"",
                                    dup.account, dup.subject
                                ),
                            ));
                        }
                    }
                    acc.imports.push(imp);
                }
            }
            "limits" => acc.limits = parse_limits(val, cx)?,
            "mappings" | "maps" => acc.mappings = Some(super::mappings::parse_mappings(val, cx)?),
            "nkey" | "jetstream" | "msg_trace" | "trace_dest" => {
                return Err(conf::err(
                    val,
                    format!("\"{k}\" in an account is not supported by rnats yet"),
                ));
            }
            _ => cx.unknown(Some("account"), k, val)?,
        }
    }
    // Users without permissions of their own get the account's defaults.
    if let Some(d) = &acc.default_permissions {
        for u in &mut acc.users {
            u.permissions.get_or_insert_with(|| d.clone());
        }
        for n in &mut acc.nkeys {
            n.permissions.get_or_insert_with(|| d.clone());
        }
    }
    Ok(acc)
}

fn subject_of(v: &Spanned, key: &str, wildcards: bool) -> Result<String, ConfigError> {
    let s = conf::string(v, key)?;
    let ok = if wildcards {
        subject::valid_sub_subject(s.as_bytes())
    } else {
        subject::valid_literal_subject(s.as_bytes())
    };
    if !ok {
        return Err(conf::err(v, format!("invalid subject \"{s}\" for {key}")));
    }
    Ok(s)
}

fn parse_export(v: &Spanned, cx: &mut Context) -> Result<ExportConfig, ConfigError> {
    let map = v
        .as_map()
        .ok_or_else(|| conf::err(v, "Export Items should be a map with type entry"))?;
    let mut stream = None;
    let mut service = None;
    let mut accounts = None;
    let mut response = None;
    let mut threshold = None;
    for (k, val) in map {
        let lk = k.to_ascii_lowercase();
        match lk.as_str() {
            "stream" => stream = Some(subject_of(val, "stream", true)?),
            "service" => service = Some(subject_of(val, "service", true)?),
            "accounts" => accounts = Some(conf::string_list(val, &lk)?),
            "response" | "response_type" => {
                let t = conf::string(val, &lk)?;
                response = Some(match t.to_ascii_lowercase().as_str() {
                    "single" | "singleton" => ResponseType::Singleton,
                    "stream" => ResponseType::Stream,
                    "chunk" | "chunked" => ResponseType::Chunked,
                    _ => return Err(conf::err(val, format!("Unknown response type: \"{t}\""))),
                });
            }
            "threshold" | "response_threshold" | "response_max_time" | "response_time" => {
                threshold = Some(conf::duration(val, &lk)?);
            }
            "latency" | "account_token_position" | "allow_trace" => {
                return Err(conf::err(
                    val,
                    format!("\"{k}\" in an export is not supported by rnats yet"),
                ));
            }
            _ => cx.unknown(Some("export"), k, val)?,
        }
    }
    match (stream, service) {
        (Some(_), Some(_)) => Err(conf::err(v, "Detected service but already saw a stream")),
        (None, None) => Err(conf::err(v, "Export needs a stream or a service")),
        (Some(subject), None) => {
            if response.is_some() || threshold.is_some() {
                return Err(conf::err(v, "Detected response directive on non-service"));
            }
            Ok(ExportConfig {
                subject,
                service: None,
                accounts,
            })
        }
        (None, Some(subject)) => Ok(ExportConfig {
            subject,
            service: Some(ServiceExport {
                response: response.unwrap_or_default(),
                threshold: threshold.unwrap_or(DEFAULT_RESPONSE_THRESHOLD),
            }),
            accounts,
        }),
    }
}

fn parse_import(v: &Spanned, cx: &mut Context) -> Result<ImportConfig, ConfigError> {
    let map = v
        .as_map()
        .ok_or_else(|| conf::err(v, "Import Items should be a map with type entry"))?;
    let mut source: Option<(bool, String, String)> = None;
    let mut prefix = None;
    let mut to = None;
    for (k, val) in map {
        let lk = k.to_ascii_lowercase();
        match lk.as_str() {
            "stream" | "service" => {
                if source.is_some() {
                    return Err(conf::err(val, "Detected service but already saw a stream"));
                }
                let inner = val
                    .as_map()
                    .ok_or_else(|| conf::err(val, "Stream entry should be an account map"))?;
                let (mut account, mut subj) = (None, None);
                for (ik, iv) in inner {
                    match ik.to_ascii_lowercase().as_str() {
                        "account" => account = Some(conf::string(iv, "account")?),
                        "subject" => subj = Some(subject_of(iv, "subject", true)?),
                        _ => cx.unknown(Some("import"), ik, iv)?,
                    }
                }
                match (account, subj) {
                    (Some(a), Some(s)) if !a.is_empty() => {
                        source = Some((lk == "service", a, s));
                    }
                    _ => return Err(conf::err(val, "Expect an account name and a subject")),
                }
            }
            "prefix" => prefix = Some(subject_of(val, "prefix", false)?),
            "to" => to = Some(subject_of(val, "to", true)?),
            "share" | "allow_trace" => {
                return Err(conf::err(
                    val,
                    format!("\"{k}\" in an import is not supported by rnats yet"),
                ));
            }
            _ => cx.unknown(Some("import"), k, val)?,
        }
    }
    let (service, account, subject) =
        source.ok_or_else(|| conf::err(v, "Import needs a stream or a service"))?;
    if service && prefix.is_some() {
        return Err(conf::err(
            v,
            "prefix is only for stream imports (use \"to\")",
        ));
    }
    if prefix.is_some() && to.is_some() {
        return Err(conf::err(
            v,
            "a stream import takes \"prefix\" or \"to\", not both",
        ));
    }
    if let Some(t) = &to
        && subject::has_wildcard(t.as_bytes()) != subject::has_wildcard(subject.as_bytes())
        && t != &subject
    {
        return Err(conf::err(
            v,
            "\"to\" must be a literal subject when the imported subject is (rnats does not \
             map wildcards between different subjects)",
        ));
    }
    if let Some(t) = &to
        && subject::has_wildcard(t.as_bytes())
        && t != &subject
    {
        return Err(conf::err(
            v,
            "\"to\" with wildcards must equal the imported subject in rnats",
        ));
    }
    Ok(ImportConfig {
        account,
        subject,
        service,
        prefix,
        to,
    })
}

fn parse_limits(v: &Spanned, cx: &mut Context) -> Result<AccountLimits, ConfigError> {
    let mut l = AccountLimits::default();
    let limit = |val: &Spanned, k: &str| -> Result<Option<u64>, ConfigError> {
        let n = conf::int_in(val, k, i64::MIN, i64::MAX)?;
        Ok(u64::try_from(n).ok())
    };
    for (k, val) in conf::map(v, "limits")? {
        let lk = k.to_ascii_lowercase();
        match lk.as_str() {
            "max_connections" | "max_conn" => l.max_connections = limit(val, &lk)?,
            "max_subscriptions" | "max_subs" => l.max_subscriptions = limit(val, &lk)?,
            "max_payload" | "max_pay" => {
                l.max_payload = if matches!(val.value, super::parser::Value::Int(n) if n < 0) {
                    None
                } else {
                    Some(conf::size(val, &lk)? as u64)
                };
            }
            "max_leafnodes" | "max_leafs" => {
                // rnats has no leaf nodes: any limit holds.
                limit(val, &lk)?;
            }
            _ => cx.unknown(Some("limits"), k, val)?,
        }
    }
    Ok(l)
}

/// The whole-configuration rules for accounts, checked by
/// `Options::validate`: imports name defined accounts and match one of
/// their exports that allows the importer, and no service imports form a
/// cycle.
pub fn check_accounts(accounts: &[AccountConfig], system: Option<&str>) -> Result<(), String> {
    let by_name: HashMap<&str, &AccountConfig> =
        accounts.iter().map(|a| (a.name.as_str(), a)).collect();
    if by_name.len() != accounts.len() {
        return Err("Duplicate Account Entry".into());
    }
    for a in accounts {
        for e in &a.exports {
            for n in e.accounts.iter().flatten() {
                if !by_name.contains_key(n.as_str()) {
                    let kind = if e.service.is_some() {
                        "service"
                    } else {
                        "stream"
                    };
                    return Err(format!("\"{n}\" account not defined for {kind} export"));
                }
            }
        }
        for i in &a.imports {
            let kind = if i.service { "service" } else { "stream" };
            let Some(src) = by_name.get(i.account.as_str()) else {
                return Err(format!(
                    "\"{}\" account not defined for {kind} import",
                    i.account
                ));
            };
            if i.account == a.name {
                return Err(format!(
                    "Error adding {kind} import \"{}\": an account cannot import from itself",
                    i.subject
                ));
            }
            let ok = src.exports.iter().any(|e| {
                e.service.is_some() == i.service
                    && crate::auth::is_subset(i.subject.as_bytes(), e.subject.as_bytes())
                    && e.allows(&a.name)
            });
            if !ok {
                return Err(format!(
                    "Error adding {kind} import \"{}\": {kind} import not authorized",
                    i.subject
                ));
            }
        }
    }
    if let Some(sys) = system
        && sys != DEFAULT_SYSTEM_ACCOUNT
        && !by_name.contains_key(sys)
    {
        return Err(format!("system account \"{sys}\" not defined in accounts"));
    }
    check_cycles(accounts)
}

/// Service imports that lead back to where they started would forward a
/// request forever; nats-server refuses them at start.
fn check_cycles(accounts: &[AccountConfig]) -> Result<(), String> {
    // importer → exporters (services and streams both forward messages).
    let edges: HashMap<&str, Vec<(&str, &ImportConfig)>> = accounts
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                a.imports
                    .iter()
                    .map(|i| (i.account.as_str(), i))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    for a in accounts {
        for i in &a.imports {
            // Follow imports of overlapping subjects from the exporter; a
            // path back to `a` on a subject the import's own subject
            // overlaps is a cycle.
            let mut seen = HashSet::new();
            let mut stack = vec![(i.account.as_str(), i.subject.clone())];
            while let Some((acc, subj)) = stack.pop() {
                if !seen.insert((acc, subj.clone())) || seen.len() > 10_000 {
                    continue;
                }
                for (next, imp) in edges.get(acc).into_iter().flatten() {
                    if imp.service != i.service {
                        continue;
                    }
                    let local = imp.local_subject();
                    if !overlaps(local.as_bytes(), subj.as_bytes()) {
                        continue;
                    }
                    if *next == a.name {
                        let kind = if i.service { "service" } else { "stream" };
                        return Err(format!(
                            "Error adding {kind} import \"{}\": import forms a cycle",
                            i.subject
                        ));
                    }
                    stack.push((next, imp.subject.clone()));
                }
            }
        }
    }
    Ok(())
}

/// Can some subject match both patterns?
fn overlaps(a: &[u8], b: &[u8]) -> bool {
    let mut x = a.split(|&c| c == b'.');
    let mut y = b.split(|&c| c == b'.');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(b">"), _) | (_, Some(b">")) => return true,
            (Some(p), Some(q)) if p == b"*" || q == b"*" || p == q => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parser::parse_str;

    fn parse(text: &str) -> Result<Vec<AccountConfig>, String> {
        let parsed = parse_str(text, "t.conf").map_err(|e| e.to_string())?;
        let (_, v) = parsed
            .iter()
            .find(|(k, _)| k == "accounts")
            .ok_or("no accounts")?;
        let accs = parse_accounts(v, &mut Context::default()).map_err(|e| e.to_string())?;
        check_accounts(&accs, None)?;
        Ok(accs)
    }

    #[test]
    fn users_exports_imports_and_limits() {
        let accs = parse(
            r#"accounts {
                A: {
                    users: [{user: a, password: pa}]
                    exports: [{stream: "ev.>"}, {service: "help", accounts: [B], response_type: stream}]
                    limits: {max_connections: 2, max_subscriptions: -1, max_payload: 1KB}
                }
                B: {
                    users: [{user: b, password: pb}]
                    default_permissions: {publish: "x.>"}
                    imports: [{stream: {account: A, subject: "ev.>"}, prefix: a},
                              {service: {account: A, subject: help}, to: ahelp}]
                }
            }"#,
        )
        .unwrap();
        assert_eq!(accs.len(), 2);
        let a = &accs[0];
        assert_eq!(a.users[0].account.as_deref(), Some("A"));
        assert_eq!(a.limits.max_connections, Some(2));
        assert_eq!(a.limits.max_subscriptions, None);
        assert_eq!(a.limits.max_payload, Some(1024));
        assert_eq!(
            a.exports[1].service.as_ref().unwrap().response,
            ResponseType::Stream
        );
        let b = &accs[1];
        assert!(b.users[0].permissions.is_some(), "account default applies");
        assert_eq!(b.imports[0].local_subject(), "a.ev.>");
        assert_eq!(b.imports[1].local_subject(), "ahelp");
    }

    #[test]
    fn refusals() {
        let cases = [
            (r#"accounts { $G: {} }"#, "Reserved Account"),
            (
                r#"accounts { B: { imports: [{stream: {account: A, subject: x}}] } }"#,
                "\"A\" account not defined for stream import",
            ),
            (
                "accounts {\n A: {}\n B: { imports: [{stream: {account: A, subject: x}}] }\n}",
                "not authorized",
            ),
            (
                "accounts {\n A: {exports: [{service: x, accounts: [C]}]}\n C: {}\n B: { imports: [{service: {account: A, subject: x}}] }\n}",
                "not authorized",
            ),
            (
                r#"accounts { A: { exports: [{service: "q.>"}], imports: [{service: {account: B, subject: "q.>"}}] }
                              B: { exports: [{service: "q.>"}], imports: [{service: {account: A, subject: "q.>"}}] }
                   }"#,
                "cycle",
            ),
            (r#"accounts { A: { jetstream: enabled } }"#, "not supported"),
            (r#"accounts { A: { foo: 1 } }"#, "unknown field"),
            (
                r#"accounts { A: { exports: [{stream: x, response_type: singleton}] } }"#,
                "non-service",
            ),
            (
                r#"accounts { A: { users: [{nkey: UNOTAKEY}] } }"#,
                "Not a valid public nkey",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
