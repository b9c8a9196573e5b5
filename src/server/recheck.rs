//! Re-authenticating connected clients after a configuration reload.
//!
//! Every connected client is checked again with the credentials it logged
//! in with; those that no longer pass (or whose TLS certificate is no
//! longer pinned) are disconnected with 'Authorization Violation', the
//! others get their new permissions, both through the control path.
//!
//! - **Concurrent and deduplicated.** Clients are grouped by credential
//!   (a SHA-256 of what they presented, so no second copy of a password is
//!   kept), and each distinct credential is checked once; the checks run
//!   concurrently, bounded by the authenticator's bcrypt pool. 10,000
//!   clients of one user cost one bcrypt, not 10,000.
//! - **The newest reload wins.** Each reload bumps the configuration
//!   generation; a re-check stops as soon as a newer one exists, and every
//!   verdict it sends carries its generation, which a connection applies
//!   only if it is not older than the one it already holds.
//! - **Logins in flight are not re-checked here**: a client that has not
//!   finished CONNECT is skipped, and its login compares the generation it
//!   authenticated against with the current one and checks again itself
//!   if a reload came in between (see the reader's `connect`).

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;

use super::ServerContext;
use crate::auth::{AuthFailure, AuthOk, Authenticator};
use crate::client::shared::Credentials;
use crate::client::{ConnCtl, ConnShared};

/// Distinct credentials checked at once (bcrypt itself is bounded by the
/// authenticator's pool; this bounds the futures waiting on it).
const CONCURRENT_CHECKS: usize = 64;

/// Re-check every connected client against configuration generation
/// `generation` (the one the reload that spawned this installed).
pub(super) async fn recheck_clients(ctx: Arc<ServerContext>, generation: u64) {
    let (auth, current) = ctx.auth_with_gen();
    if current != generation {
        return; // a newer reload runs its own re-check
    }
    // Each group checks the credentials snapshotted when it was formed,
    // the same ones its key was computed from.
    let mut groups: HashMap<[u8; 32], Group> = HashMap::new();
    for entry in ctx.conns.iter() {
        let conn = entry.value().clone();
        if conn.account().is_none() || conn.is_closing() {
            continue; // still logging in (it re-checks itself), or leaving
        }
        if !pins_still_hold(&ctx, &conn) {
            tracing::info!(
                "{} - cid:{} - disconnected after reload: certificate not pinned",
                conn.peer,
                conn.cid
            );
            revoke(&ctx, &conn, generation);
            continue;
        }
        let creds = conn.credentials.lock().clone().unwrap_or_default();
        let identity = conn.tls_identity.lock().clone();
        let key = credential_key(&creds, identity.as_ref());
        groups
            .entry(key)
            .or_insert_with(|| Group {
                creds,
                identity,
                conns: Vec::new(),
            })
            .conns
            .push(conn);
    }
    let checks = groups.into_values().map(|group| {
        let auth = auth.clone();
        async move {
            let Group {
                creds,
                identity,
                conns,
            } = group;
            let verdict = check_presented(&auth, &creds, identity.as_ref()).await;
            (conns, verdict)
        }
    });
    let mut checks = futures::stream::iter(checks).buffer_unordered(CONCURRENT_CHECKS);
    while let Some((conns, verdict)) = checks.next().await {
        if ctx.config_gen() != generation {
            return; // superseded: the newer re-check decides
        }
        apply(&ctx, &conns, verdict, generation);
    }
}

fn apply(
    ctx: &ServerContext,
    conns: &[Arc<ConnShared>],
    verdict: Result<AuthOk, AuthFailure>,
    generation: u64,
) {
    match verdict {
        Ok(ok) => {
            for conn in conns {
                if moved_account(conn, &ok) {
                    tracing::info!(
                        "{} - cid:{} - disconnected after reload: user moved to another account",
                        conn.peer,
                        conn.cid
                    );
                    revoke(ctx, conn, generation);
                    continue;
                }
                if let Some(at) = ok.jwt.as_ref().and_then(|g| g.expires) {
                    ctx.control(conn.cid, ConnCtl::ExpireAt(super::instant_of_unix(at)));
                }
                ctx.control(
                    conn.cid,
                    ConnCtl::Permissions {
                        perms: ok.permissions.clone(),
                        generation,
                    },
                );
            }
        }
        Err(f) => {
            for conn in conns {
                tracing::info!(
                    "{} - cid:{} - disconnected after reload: {}",
                    conn.peer,
                    conn.cid,
                    f.reason
                );
                revoke(ctx, conn, generation);
            }
        }
    }
}

/// Does the verdict put the user in another account than the one the
/// connection is bound to? (Its subscriptions live in the old one.)
pub fn moved_account(conn: &ConnShared, ok: &AuthOk) -> bool {
    conn.account()
        .is_some_and(|a| a.name != crate::account::Accounts::name_of(ok.account.as_deref()))
}

fn revoke(ctx: &ServerContext, conn: &ConnShared, generation: u64) {
    ctx.control(conn.cid, ConnCtl::Revoke { generation });
}

/// Check again what a client presented at login. Not `authenticate`: a
/// re-check is no login attempt and must not count as a failure with the
/// limiter (or be refused by a ban).
pub async fn check_presented(
    auth: &Authenticator,
    creds: &Credentials,
    identity: Option<&crate::tls::CertIdentity>,
) -> Result<AuthOk, AuthFailure> {
    auth.recheck(&creds.presented(), identity).await
}

/// Connections that presented the same credentials, and those credentials.
struct Group {
    creds: Credentials,
    identity: Option<crate::tls::CertIdentity>,
    conns: Vec<Arc<ConnShared>>,
}

/// Does the connection's client certificate still satisfy the current
/// `pinned_certs` (true when none are configured)?
pub fn pins_still_hold(ctx: &ServerContext, conn: &ConnShared) -> bool {
    let Some(tls) = ctx.tls() else {
        return true;
    };
    if tls.opts.pinned_certs.is_empty() {
        return true;
    }
    conn.tls_fingerprint
        .lock()
        .as_ref()
        .is_some_and(|f| tls.opts.pinned_certs.contains(f))
}

/// SHA-256 over everything a client presented (length-prefixed fields).
fn credential_key(creds: &Credentials, identity: Option<&crate::tls::CertIdentity>) -> [u8; 32] {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let mut field = |v: Option<&[u8]>| match v {
        None => h.update(&[0]),
        Some(b) => {
            h.update(&[1]);
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        }
    };
    field(creds.user.as_deref().map(str::as_bytes));
    field(creds.pass.as_deref().map(str::as_bytes));
    field(creds.token.as_deref().map(str::as_bytes));
    field(creds.nkey.as_deref().map(str::as_bytes));
    field(creds.sig.as_deref().map(str::as_bytes));
    field(creds.nonce.as_deref().map(str::as_bytes));
    field(creds.jwt.as_deref().map(str::as_bytes));
    let identity = identity.map(|i| format!("{i:?}"));
    field(identity.as_deref().map(str::as_bytes));
    let mut key = [0u8; 32];
    key.copy_from_slice(h.finish().as_ref());
    key
}
