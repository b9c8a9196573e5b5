//! The account JWT store of operator mode (nats-server's account
//! resolver): `MEMORY` (preloaded JWTs, plus updates pushed over the
//! system account, in memory) or `full` (JWTs kept as `<account>.jwt` files
//! in a directory, which also picks up files dropped into it).
//!
//! Every JWT that enters the store is verified: an account JWT about the
//! key it is stored under, signed by a trusted operator or one of its
//! signing keys. An update older than what is stored is refused (as
//! nats-server does), so a replayed old JWT cannot undo a revocation.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::config::Options;
use crate::config::operator::{ResolverConfig, extract_jwt};
use crate::jwt::{self, AccountClaims, Claims, OperatorClaims};

/// Who may sign account JWTs.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    keys: Vec<String>,
    operators: Vec<Claims<OperatorClaims>>,
}

impl Trust {
    pub fn from_options(opts: &Options) -> Trust {
        Trust {
            keys: opts.trusted_keys.clone(),
            operators: opts
                .trusted_operators
                .iter()
                .map(|o| o.claims.clone())
                .collect(),
        }
    }

    pub fn signs_accounts(&self, issuer: &str) -> bool {
        self.keys.iter().any(|k| k == issuer)
            || self
                .operators
                .iter()
                .any(|o| o.nats.did_sign(&o.sub, issuer))
    }
}

/// One stored account.
#[derive(Clone, Debug)]
pub struct StoredAccount {
    pub jwt: String,
    pub claims: Arc<Claims<AccountClaims>>,
}

pub struct AccountStore {
    accounts: RwLock<HashMap<String, StoredAccount>>,
    trust: RwLock<Trust>,
    dir: Option<PathBuf>,
    pub allow_delete: bool,
    pub interval: std::time::Duration,
}

impl std::fmt::Debug for AccountStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountStore")
            .field("accounts", &self.accounts.read().len())
            .field("dir", &self.dir)
            .finish()
    }
}

impl AccountStore {
    /// The store for `opts` (operator mode): preloads, then the files of a
    /// full resolver's directory (created if missing).
    pub fn from_options(opts: &Options) -> Result<AccountStore, String> {
        let (dir, allow_delete, interval) = match &opts.resolver {
            Some(ResolverConfig::Full {
                dir,
                allow_delete,
                interval,
            }) => (Some(dir.clone()), *allow_delete, *interval),
            _ => (None, false, std::time::Duration::from_secs(120)),
        };
        let store = AccountStore {
            accounts: RwLock::new(HashMap::new()),
            trust: RwLock::new(Trust::from_options(opts)),
            dir,
            allow_delete,
            interval,
        };
        for (key, token) in &opts.resolver_preload {
            store
                .insert(Some(key), token, false)
                .map_err(|e| format!("resolver_preload {key}: {e}"))?;
        }
        if let Some(d) = &store.dir {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create resolver dir {}: {e}", d.display()))?;
            store.scan_dir();
        }
        Ok(store)
    }

    /// New trusted operators (configuration reload).
    pub fn set_trust(&self, trust: Trust) {
        *self.trust.write() = trust;
    }

    pub fn get(&self, key: &str) -> Option<StoredAccount> {
        self.accounts.read().get(key).cloned()
    }

    pub fn keys(&self) -> Vec<String> {
        self.accounts.read().keys().cloned().collect()
    }

    /// Verify and store an account JWT (a push over the system account,
    /// or a file). Returns the account's key and whether anything changed.
    pub fn update(&self, token: &str) -> Result<(String, bool), String> {
        self.insert(None, token, true)
    }

    fn insert(
        &self,
        key: Option<&str>,
        token: &str,
        persist: bool,
    ) -> Result<(String, bool), String> {
        let token = token.trim();
        let claims = jwt::decode::<AccountClaims>(token).map_err(|e| e.to_string())?;
        if let Some(k) = key
            && claims.sub != k
        {
            return Err(format!("JWT is about {} not {k}", claims.sub));
        }
        if !self.trust.read().signs_accounts(&claims.iss) {
            return Err("account JWT not signed by a trusted operator".into());
        }
        let key = claims.sub.clone();
        {
            let mut map = self.accounts.write();
            if let Some(old) = map.get(&key) {
                if old.jwt == token {
                    return Ok((key, false));
                }
                if old.claims.iat > claims.iat {
                    return Err("an older JWT than the one stored".into());
                }
            }
            map.insert(
                key.clone(),
                StoredAccount {
                    jwt: token.to_string(),
                    claims: Arc::new(claims),
                },
            );
        }
        if persist && let Some(d) = &self.dir {
            let path = d.join(format!("{key}.jwt"));
            let tmp = d.join(format!(".{key}.jwt.tmp"));
            std::fs::write(&tmp, token)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| format!("cannot store {}: {e}", path.display()))?;
        }
        Ok((key, true))
    }

    /// Read `<key>.jwt` files of the directory; returns the accounts that
    /// changed. A bad file is logged and skipped.
    pub fn scan_dir(&self) -> Vec<String> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(key) = name.strip_suffix(".jwt") else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Some(token) = extract_jwt(&text) else {
                tracing::warn!("resolver: no JWT in {}", path.display());
                continue;
            };
            match self.insert(Some(key), &token, false) {
                Ok((k, true)) => changed.push(k),
                Ok(_) => {}
                Err(e) => tracing::warn!("resolver: {} refused: {e}", path.display()),
            }
        }
        changed
    }
}
