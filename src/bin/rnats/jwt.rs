//! `rnats jwt`: a small `nsc` for operator mode. It keeps an operator, its
//! accounts and their users in a store directory (see
//! docs/OPERATOR_MODE.md):
//!
//! ```text
//! STORE/operator.jwt                     the operator JWT
//! STORE/operator.nk                      its seed (0600)
//! STORE/operator-sk.nk                   operator signing key seed, if any
//! STORE/accounts/NAME/account.jwt        account JWT (signed by the operator)
//! STORE/accounts/NAME/account.nk         its seed (0600)
//! STORE/accounts/NAME/account-sk.nk      account signing key seed, if any
//! STORE/accounts/NAME/users/USER.creds   user JWT + seed (0600)
//! ```
//!
//! The system account (default `SYS`, with user `sys`) is made by `init`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nkeys::KeyPair;
use rnats::jwt::{
    self, AccountClaims, Claims, Export, Import, KeyKind, OperatorClaims, ResponsePermission,
    UserClaims,
};

use crate::Error;
use crate::nkey::{find_seed, value_or_file};

#[derive(clap::Args, Debug)]
pub struct JwtArgs {
    /// The store directory
    #[arg(long, default_value = "./jwt-store", value_name = "DIR")]
    store: PathBuf,
    #[command(subcommand)]
    cmd: JwtCmd,
}

#[derive(clap::Subcommand, Debug)]
enum JwtCmd {
    /// Create the operator, and the system account with its user `sys`
    Init {
        #[arg(long, value_name = "NAME")]
        operator: String,
        /// Sign accounts with a separate operator signing key
        #[arg(long)]
        signing_key: bool,
        /// Name of the system account
        #[arg(long, default_value = "SYS", value_name = "NAME")]
        system_account: String,
    },
    /// Create an account signed by the operator
    AddAccount(AddAccount),
    /// Create a user of an account: writes its creds file and prints the path
    AddUser(AddUser),
    /// Revoke a user: adds its key to the account's revocations and re-signs the account
    RevokeUser { account: String, name: String },
    /// Print a nats-server configuration snippet for the operator and accounts
    ResolverConfig {
        /// memory (accounts preloaded) or full (accounts in a directory)
        #[arg(long = "type", default_value = "memory")]
        kind: String,
        /// Directory of the full resolver (gets the account JWTs); default STORE/jwt
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Send an account's JWT to a server's $SYS.REQ.CLAIMS.UPDATE (as the system user)
    Push {
        account: String,
        /// How long to wait for the reply
        #[arg(long, default_value = "5s")]
        timeout: String,
    },
    /// Decode and verify a JWT (or a JWT or creds file) and print its claims
    Describe { token: String },
}

#[derive(clap::Args, Debug)]
struct AddAccount {
    name: String,
    /// Give the account a signing key (users can be signed with it)
    #[arg(long)]
    signing_key: bool,
    /// Max client connections (-1 unlimited)
    #[arg(long, allow_negative_numbers = true)]
    max_conn: Option<i64>,
    /// Max subscriptions (-1 unlimited)
    #[arg(long, allow_negative_numbers = true)]
    max_subs: Option<i64>,
    /// Max message payload, e.g. 1MB (-1 unlimited)
    #[arg(long, allow_hyphen_values = true, value_name = "SIZE")]
    max_payload: Option<String>,
    /// Export a public stream
    #[arg(long, value_name = "SUBJ")]
    export_stream: Vec<String>,
    /// Export a public service
    #[arg(long, value_name = "SUBJ")]
    export_service: Vec<String>,
    /// Import a public stream: ACCOUNT:SUBJ[:prefix] (ACCOUNT a name or public key)
    #[arg(long, value_name = "ACCOUNT:SUBJ[:prefix]")]
    import_stream: Vec<String>,
    /// Import a public service: ACCOUNT:SUBJ[:local subject]
    #[arg(long, value_name = "ACCOUNT:SUBJ[:local]")]
    import_service: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct AddUser {
    account: String,
    name: String,
    #[arg(long, value_name = "SUBJ")]
    allow_pub: Vec<String>,
    #[arg(long, value_name = "SUBJ")]
    deny_pub: Vec<String>,
    #[arg(long, value_name = "SUBJ")]
    allow_sub: Vec<String>,
    #[arg(long, value_name = "SUBJ")]
    deny_sub: Vec<String>,
    /// Allow replies to requests: max replies [and their time window]
    #[arg(long, value_name = "N[:TTL]")]
    allow_resp: Option<String>,
    /// Valid for this long, e.g. 1h or 30s
    #[arg(long, value_name = "DURATION")]
    expiry: Option<String>,
    /// Allowed client networks (repeatable)
    #[arg(long, value_name = "CIDR")]
    src: Vec<String>,
    /// Allowed connection types (STANDARD, WEBSOCKET, LEAFNODE, LEAFNODE_WS, MQTT, MQTT_WS, IN_PROCESS)
    #[arg(long = "conn-type", value_name = "T")]
    conn_type: Vec<String>,
    /// Bearer token: the user does not sign the server's nonce
    #[arg(long)]
    bearer: bool,
    /// Sign with the account's signing key instead of its own key
    #[arg(long)]
    signing_key: bool,
}

pub async fn run(args: &JwtArgs, server: &str) -> Result<(), Error> {
    let store = Store {
        dir: args.store.clone(),
    };
    match &args.cmd {
        JwtCmd::Init {
            operator,
            signing_key,
            system_account,
        } => init(&store, operator, *signing_key, system_account),
        JwtCmd::AddAccount(a) => {
            let path = add_account(&store, a)?;
            println!("{}", path.display());
            Ok(())
        }
        JwtCmd::AddUser(u) => {
            let path = add_user(&store, u)?;
            println!("{}", path.display());
            Ok(())
        }
        JwtCmd::RevokeUser { account, name } => revoke_user(&store, account, name),
        JwtCmd::ResolverConfig { kind, dir } => {
            print!("{}", resolver_config(&store, kind, dir.as_deref())?);
            Ok(())
        }
        JwtCmd::Push { account, timeout } => {
            let timeout = rnats::config::parse_duration(timeout)
                .ok_or_else(|| format!("invalid timeout {timeout:?}"))?;
            println!("{}", push(&store, account, server, timeout).await?);
            Ok(())
        }
        JwtCmd::Describe { token } => {
            let text = value_or_file(token)?;
            let token = first_token(&text).ok_or("no JWT found")?;
            let (_, claims) = jwt::decode_any(&token)?;
            println!("{}", serde_json::to_string_pretty(&claims)?);
            Ok(())
        }
    }
}

/// The JWT in `text`: the first decorated value of a creds file, else the
/// first line that looks like a token.
fn first_token(text: &str) -> Option<String> {
    if let Ok((jwt, _)) = jwt::parse_creds(text) {
        return Some(jwt);
    }
    text.lines()
        .map(str::trim)
        .find(|l| l.split('.').count() == 3 && l.starts_with("ey"))
        .map(str::to_string)
}

/// Names become directory and file names: keep them plain.
fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!("{what} name {name:?} must be letters, digits, '_', '-' or '.'").into())
    }
}

/// Write a secret (seed or creds) readable by the owner only.
fn write_secret(path: &Path, text: &str) -> Result<(), Error> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn write_public(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn read_seed(path: &Path) -> Result<KeyPair, Error> {
    let seed = find_seed(&read(path)?).ok_or_else(|| format!("{}: no seed", path.display()))?;
    Ok(KeyPair::from_seed(&seed)?)
}

struct Store {
    dir: PathBuf,
}

impl Store {
    fn operator_jwt(&self) -> PathBuf {
        self.dir.join("operator.jwt")
    }
    fn account_dir(&self, name: &str) -> PathBuf {
        self.dir.join("accounts").join(name)
    }
    fn user_creds(&self, account: &str, user: &str) -> PathBuf {
        self.account_dir(account)
            .join("users")
            .join(format!("{user}.creds"))
    }

    fn operator(&self) -> Result<Claims<OperatorClaims>, Error> {
        let path = self.operator_jwt();
        if !path.exists() {
            return Err(format!(
                "no operator in {} (run `rnats jwt init` first)",
                self.dir.display()
            )
            .into());
        }
        Ok(jwt::decode(read(&path)?.trim())?)
    }

    /// The key that signs accounts: the operator signing key if there is one.
    fn account_signer(&self) -> Result<KeyPair, Error> {
        let sk = self.dir.join("operator-sk.nk");
        if sk.exists() {
            return read_seed(&sk);
        }
        read_seed(&self.dir.join("operator.nk"))
    }

    fn account(&self, name: &str) -> Result<(Claims<AccountClaims>, String), Error> {
        check_name("account", name)?;
        let path = self.account_dir(name).join("account.jwt");
        if !path.exists() {
            return Err(format!("no account {name:?} in {}", self.dir.display()).into());
        }
        let token = read(&path)?.trim().to_string();
        Ok((jwt::decode(&token)?, token))
    }

    /// Every account: name -> (claims, token), sorted by name.
    fn accounts(&self) -> Result<BTreeMap<String, (Claims<AccountClaims>, String)>, Error> {
        let mut out = BTreeMap::new();
        let dir = self.dir.join("accounts");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        for e in entries {
            let name = e?.file_name().to_string_lossy().into_owned();
            if self.account_dir(&name).join("account.jwt").exists() {
                let a = self.account(&name)?;
                out.insert(name, a);
            }
        }
        Ok(out)
    }

    fn save_account(
        &self,
        name: &str,
        claims: &mut Claims<AccountClaims>,
    ) -> Result<PathBuf, Error> {
        let token = jwt::encode(claims, &self.account_signer()?)?;
        let path = self.account_dir(name).join("account.jwt");
        write_public(&path, &format!("{token}\n"))?;
        Ok(path)
    }

    /// An account's public key from a name in the store, or a public key.
    fn account_key(&self, name_or_key: &str) -> Result<String, Error> {
        if KeyKind::of_public(name_or_key) == Some(KeyKind::Account) {
            return Ok(name_or_key.to_string());
        }
        Ok(self.account(name_or_key)?.0.sub)
    }
}

fn init(store: &Store, name: &str, signing_key: bool, system: &str) -> Result<(), Error> {
    check_name("system account", system)?;
    if store.operator_jwt().exists() {
        return Err(format!("{} already has an operator", store.dir.display()).into());
    }
    std::fs::create_dir_all(store.dir.join("accounts"))?;
    let op = KeyPair::new_operator();
    write_secret(&store.dir.join("operator.nk"), &format!("{}\n", op.seed()?))?;
    let mut claims = Claims::<OperatorClaims>::new(&op.public_key(), name);
    if signing_key {
        let sk = KeyPair::new_operator();
        write_secret(
            &store.dir.join("operator-sk.nk"),
            &format!("{}\n", sk.seed()?),
        )?;
        claims.nats.signing_keys.push(sk.public_key());
    }
    // The system account first, so the operator can name it.
    let sys = new_account(store, system, false, |_| Ok(()))?;
    claims.nats.system_account = sys;
    let token = jwt::encode(&mut claims, &op)?;
    write_public(&store.operator_jwt(), &format!("{token}\n"))?;
    add_user(
        store,
        &AddUser {
            account: system.to_string(),
            name: "sys".into(),
            allow_pub: vec![],
            deny_pub: vec![],
            allow_sub: vec![],
            deny_sub: vec![],
            allow_resp: None,
            expiry: None,
            src: vec![],
            conn_type: vec![],
            bearer: false,
            signing_key: false,
        },
    )?;
    println!("operator {name} {}", op.public_key());
    println!("system account {system} {}", claims.nats.system_account);
    Ok(())
}

/// Create account `name` (keys, directories) with `edit` applied to its
/// claims; returns its public key.
fn new_account(
    store: &Store,
    name: &str,
    signing_key: bool,
    edit: impl FnOnce(&mut Claims<AccountClaims>) -> Result<(), Error>,
) -> Result<String, Error> {
    check_name("account", name)?;
    let dir = store.account_dir(name);
    if dir.join("account.jwt").exists() {
        return Err(format!("account {name:?} already exists").into());
    }
    std::fs::create_dir_all(dir.join("users"))?;
    let kp = KeyPair::new_account();
    write_secret(&dir.join("account.nk"), &format!("{}\n", kp.seed()?))?;
    let mut claims = Claims::<AccountClaims>::new(&kp.public_key(), name);
    if signing_key {
        let sk = KeyPair::new_account();
        write_secret(&dir.join("account-sk.nk"), &format!("{}\n", sk.seed()?))?;
        claims
            .nats
            .signing_keys
            .push(jwt::SigningKey::Plain(sk.public_key()));
    }
    edit(&mut claims)?;
    store.save_account(name, &mut claims)?;
    Ok(kp.public_key())
}

fn add_account(store: &Store, a: &AddAccount) -> Result<PathBuf, Error> {
    store.operator()?;
    let mut imports = Vec::new();
    for (spec, kind) in a
        .import_stream
        .iter()
        .map(|s| (s, "stream"))
        .chain(a.import_service.iter().map(|s| (s, "service")))
    {
        let mut parts = spec.splitn(3, ':');
        let (Some(acc), Some(subject)) = (parts.next(), parts.next()) else {
            return Err(format!("import {spec:?} is not ACCOUNT:SUBJECT[:...]").into());
        };
        let local = match (parts.next(), kind) {
            (Some(prefix), "stream") => format!("{prefix}.{subject}"),
            (Some(local), _) => local.to_string(),
            (None, _) => String::new(),
        };
        imports.push(Import {
            name: subject.to_string(),
            subject: subject.to_string(),
            account: store.account_key(acc)?,
            local_subject: local,
            kind: kind.to_string(),
            ..Default::default()
        });
    }
    let exports: Vec<Export> = a
        .export_stream
        .iter()
        .map(|s| (s, "stream"))
        .chain(a.export_service.iter().map(|s| (s, "service")))
        .map(|(s, kind)| Export {
            name: s.clone(),
            subject: s.clone(),
            kind: kind.to_string(),
            ..Default::default()
        })
        .collect();
    let payload = match a.max_payload.as_deref() {
        None => None,
        Some("-1") => Some(jwt::NO_LIMIT),
        Some(s) => Some(
            rnats::config::parse_size(s)
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| format!("invalid size {s:?}"))?,
        ),
    };
    new_account(store, &a.name, a.signing_key, |c| {
        let l = &mut c.nats.limits;
        if let Some(n) = a.max_conn {
            l.conn = n;
        }
        if let Some(n) = a.max_subs {
            l.subs = n;
        }
        if let Some(n) = payload {
            l.payload = n;
        }
        c.nats.imports = imports;
        c.nats.exports = exports;
        Ok(())
    })?;
    Ok(store.account_dir(&a.name).join("account.jwt"))
}

fn add_user(store: &Store, u: &AddUser) -> Result<PathBuf, Error> {
    check_name("user", &u.name)?;
    let (account, _) = store.account(&u.account)?;
    let creds_path = store.user_creds(&u.account, &u.name);
    if creds_path.exists() {
        return Err(format!("user {:?} already exists in {:?}", u.name, u.account).into());
    }
    let adir = store.account_dir(&u.account);
    let signer = if u.signing_key {
        let sk = adir.join("account-sk.nk");
        if !sk.exists() {
            return Err(format!(
                "account {:?} has no signing key (add-account --signing-key)",
                u.account
            )
            .into());
        }
        read_seed(&sk)?
    } else {
        read_seed(&adir.join("account.nk"))?
    };
    let kp = KeyPair::new_user();
    let mut claims = Claims::<UserClaims>::new(&kp.public_key(), &u.name);
    if u.signing_key {
        claims.nats.issuer_account = account.sub.clone();
    }
    let l = &mut claims.nats.limits;
    l.publish.allow = u.allow_pub.clone();
    l.publish.deny = u.deny_pub.clone();
    l.subscribe.allow = u.allow_sub.clone();
    l.subscribe.deny = u.deny_sub.clone();
    if let Some(spec) = &u.allow_resp {
        let (max, ttl) = match spec.split_once(':') {
            Some((m, t)) => (m, Some(t)),
            None => (spec.as_str(), None),
        };
        let max: i64 = max
            .parse()
            .map_err(|_| format!("--allow-resp {spec:?}: max is not a number"))?;
        let ttl = match ttl {
            Some(t) => rnats::config::parse_duration(t)
                .ok_or_else(|| format!("--allow-resp {spec:?}: bad ttl"))?
                .as_nanos() as i64,
            None => 0,
        };
        l.resp = Some(ResponsePermission { max, ttl });
    }
    for c in &u.src {
        let valid = c.split_once('/').is_some_and(|(a, bits)| {
            match (a.parse::<std::net::IpAddr>(), bits.parse::<u8>()) {
                (Ok(std::net::IpAddr::V4(_)), Ok(b)) => b <= 32,
                (Ok(std::net::IpAddr::V6(_)), Ok(b)) => b <= 128,
                _ => false,
            }
        });
        if !valid {
            return Err(format!("--src {c:?} is not a CIDR (a.b.c.d/n or x::/n)").into());
        }
    }
    l.src = u.src.clone();
    for t in &u.conn_type {
        let t = t.to_ascii_uppercase();
        if !jwt::conn_type::is_known(&t) {
            return Err(format!("unknown connection type {t:?}").into());
        }
        l.allowed_connection_types.push(t);
    }
    l.bearer_token = u.bearer;
    if let Some(e) = &u.expiry {
        let d = rnats::config::parse_duration(e).ok_or_else(|| format!("invalid expiry {e:?}"))?;
        // Round up: "1s" must not expire at once.
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        claims.exp = jwt::now_unix() + secs.max(1) as i64;
    }
    let token = jwt::encode(&mut claims, &signer)?;
    write_secret(&creds_path, &jwt::format_creds(&token, &kp.seed()?)?)?;
    Ok(creds_path)
}

fn revoke_user(store: &Store, account: &str, name: &str) -> Result<(), Error> {
    check_name("user", name)?;
    let (mut claims, _) = store.account(account)?;
    let creds = store.user_creds(account, name);
    let (token, _) = jwt::parse_creds(&read(&creds)?)?;
    let user: Claims<UserClaims> = jwt::decode(&token)?;
    jwt::revoke(&mut claims.nats, &user.sub, jwt::now_unix());
    let path = store.save_account(account, &mut claims)?;
    println!("revoked {} in {}", user.sub, path.display());
    Ok(())
}

fn resolver_config(store: &Store, kind: &str, dir: Option<&Path>) -> Result<String, Error> {
    let (op, op_token) = {
        let path = store.operator_jwt();
        let op = store.operator()?;
        (op, read(&path)?.trim().to_string())
    };
    let accounts = store.accounts()?;
    let sys = op.nats.system_account.clone();
    let mut out = String::new();
    out.push_str(&format!(
        "# Operator {:?}\noperator: \"{op_token}\"\n",
        op.name
    ));
    if let Some((name, _)) = accounts.iter().find(|(_, (c, _))| c.sub == sys) {
        out.push_str(&format!("# System account {name:?}\n"));
    }
    out.push_str(&format!("system_account: {sys}\n"));
    let preload = |filter: &dyn Fn(&Claims<AccountClaims>) -> bool| {
        let mut s = String::from("resolver_preload: {\n");
        for (name, (c, token)) in &accounts {
            if filter(c) {
                s.push_str(&format!("  # Account {name:?}\n  {}: \"{token}\"\n", c.sub));
            }
        }
        s.push_str("}\n");
        s
    };
    match kind {
        "memory" | "mem" | "MEMORY" => {
            out.push_str("resolver: MEMORY\n");
            out.push_str(&preload(&|_| true));
        }
        "full" => {
            let dir = dir
                .map(Path::to_path_buf)
                .unwrap_or_else(|| store.dir.join("jwt"));
            std::fs::create_dir_all(&dir)?;
            // nats-server's directory store: one `<account public key>.jwt`
            // per account, not sharded for the full resolver.
            for (c, token) in accounts.values() {
                write_public(&dir.join(format!("{}.jwt", c.sub)), token)?;
            }
            let dir = std::fs::canonicalize(&dir)?;
            out.push_str(&format!(
                "resolver {{\n  type: full\n  dir: {:?}\n  allow_delete: false\n  interval: \"2m\"\n  timeout: \"1.9s\"\n}}\n",
                dir.display().to_string()
            ));
            out.push_str(&preload(&|c| c.sub == sys));
        }
        k => return Err(format!("unknown resolver type {k:?} (memory or full)").into()),
    }
    Ok(out)
}

async fn push(
    store: &Store,
    account: &str,
    server: &str,
    timeout: Duration,
) -> Result<String, Error> {
    let (_, token) = store.account(account)?;
    let op = store.operator()?;
    let (sys_name, _) = store
        .accounts()?
        .into_iter()
        .find(|(_, (c, _))| c.sub == op.nats.system_account)
        .ok_or("the system account is not in the store")?;
    let creds = store.user_creds(&sys_name, "sys");
    let addrs: Vec<async_nats::ServerAddr> = server
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let client = async_nats::ConnectOptions::with_credentials_file(&creds)
        .await?
        .name("rnats jwt push")
        .connect(addrs)
        .await?;
    let req = async_nats::Request::new()
        .payload(token.into())
        .timeout(Some(timeout));
    let reply = client
        .send_request("$SYS.REQ.CLAIMS.UPDATE".to_string(), req)
        .await?;
    let text = String::from_utf8_lossy(&reply.payload).into_owned();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if v.get("error").is_some() {
        return Err(format!("the server refused the update: {text}").into());
    }
    Ok(text)
}
