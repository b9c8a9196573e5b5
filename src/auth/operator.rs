//! JWT logins (operator mode), as nats-server checks them: the user JWT is
//! signed by its account or one of the account's signing keys, the account
//! JWT (from the resolver) by a trusted operator; neither has expired; the
//! client signed this connection's nonce with the user key (unless the JWT
//! is a bearer token); the user is not revoked; its source address,
//! connect times and connection types allow this connection.
//!
//! Claims rnats cannot enforce are refused, never ignored: an account with
//! external authorization or with imports of activation tokens cannot log
//! users in, nor can one whose subject mappings use a form rnats lacks
//! (checked when the account is applied).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::resolver::AccountStore;
use super::{AuthMethod, AuthOk, Presented, verify_nonce_signature};
use crate::config::accounts::AccountLimits;
use crate::config::auth::{Permissions, ResponsePermission, SubjectPermission};
use crate::jwt::{
    self, AccountClaims, Claims, JwtError, SigningKey, TimeCheck, UserClaims, UserPermissionLimits,
};

pub const REASON_JWT_INVALID: &str = "user JWT invalid";
pub const REASON_JWT_EXPIRED: &str = "user JWT expired";
pub const REASON_JWT_NOT_YET: &str = "user JWT not yet valid";
pub const REASON_NO_JWT: &str = "no user JWT";
pub const REASON_NO_ACCOUNT: &str = "account not found";
pub const REASON_ACCOUNT_EXPIRED: &str = "account JWT expired";
pub const REASON_ACCOUNT_UNSUPPORTED: &str =
    "account JWT uses features rnats cannot enforce (external authorization)";
pub const REASON_ISSUER: &str = "user JWT not issued by its account or one of its signing keys";
pub const REASON_SCOPED: &str =
    "user JWT issued by a scoped signing key carries its own permissions";
pub const REASON_REVOKED: &str = "user authentication revoked";
pub const REASON_SRC: &str = "bad source address";
pub const REASON_TIMES: &str = "outside connect times";
pub const REASON_CONN_TYPE: &str = "connection type STANDARD not allowed";
pub const REASON_BEARER: &str = "bearer tokens not allowed by the account";
pub const REASON_SIG: &str = "signature not verified";
pub const REASON_NONCE: &str = "signature missing";

/// What a JWT login grants beyond [`AuthOk`]'s usual fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JwtGrant {
    /// When the login ends (unix seconds): the user JWT's or the account
    /// JWT's expiry, or the end of the current connect-time window.
    pub expires: Option<i64>,
    /// The user's own limits (narrowing the account's and the server's).
    pub max_subscriptions: Option<u64>,
    pub max_payload: Option<u64>,
    /// The user's public key and the `iat` of its JWT (for revocations).
    pub user_key: String,
    pub issued_at: i64,
}

fn limit(n: i64) -> Option<u64> {
    u64::try_from(n).ok()
}

/// The account's limits as rnats enforces them.
pub fn account_limits(a: &AccountClaims) -> AccountLimits {
    AccountLimits {
        max_connections: limit(a.limits.conn),
        max_subscriptions: limit(a.limits.subs),
        max_payload: limit(a.limits.payload),
    }
}

/// Can rnats honour everything this account JWT asks for?
pub fn account_supported(a: &AccountClaims) -> bool {
    !a.authorization.is_enabled()
}

fn subject_permission(p: &jwt::Permission) -> Option<SubjectPermission> {
    if p.is_empty() {
        return None;
    }
    Some(SubjectPermission {
        allow: (!p.allow.is_empty()).then(|| p.allow.clone()),
        deny: p.deny.clone(),
    })
}

fn response_permission(r: &jwt::ResponsePermission) -> ResponsePermission {
    // nats-server: 0 means the defaults, negative means no limit.
    ResponsePermission {
        max: match r.max {
            0 => crate::config::auth::DEFAULT_RESPONSE_MAX,
            n if n < 0 => 0,
            n => n as u64,
        },
        expires: match r.ttl {
            0 => crate::config::auth::DEFAULT_RESPONSE_EXPIRES,
            n if n < 0 => Duration::ZERO,
            n => Duration::from_nanos(n as u64),
        },
    }
}

/// A user's (or a scope's) permissions; `None` when it has none.
fn permissions_of(l: &UserPermissionLimits) -> Option<Permissions> {
    let p = Permissions {
        publish: subject_permission(&l.publish),
        subscribe: subject_permission(&l.subscribe),
        allow_responses: l.resp.as_ref().map(response_permission),
    };
    (p != Permissions::default()).then_some(p)
}

fn default_permissions(a: &AccountClaims) -> Option<Permissions> {
    let d = &a.default_permissions;
    let p = Permissions {
        publish: subject_permission(&d.publish),
        subscribe: subject_permission(&d.subscribe),
        allow_responses: d.resp.as_ref().map(response_permission),
    };
    (p != Permissions::default()).then_some(p)
}

fn time_reason(e: &JwtError) -> &'static str {
    match e {
        JwtError::Expired { .. } => REASON_JWT_EXPIRED,
        JwtError::NotYetValid { .. } => REASON_JWT_NOT_YET,
        _ => REASON_JWT_INVALID,
    }
}

/// Check a JWT login. `peer` is None for re-checks (the source address
/// cannot have changed).
pub fn check_jwt(
    store: &AccountStore,
    p: &Presented<'_>,
    peer: Option<IpAddr>,
) -> Result<(AuthOk, JwtGrant), &'static str> {
    let token = p.jwt.filter(|t| !t.is_empty()).ok_or(REASON_NO_JWT)?;
    let user: Claims<UserClaims> = jwt::decode(token).map_err(|e| {
        tracing::debug!("user JWT refused: {e}");
        REASON_JWT_INVALID
    })?;
    let now = jwt::now_unix();
    user.check_times(now).map_err(|e| time_reason(&e))?;
    let account_key = if user.nats.issuer_account.is_empty() {
        user.iss.clone()
    } else {
        user.nats.issuer_account.clone()
    };
    let stored = store.get(&account_key).ok_or(REASON_NO_ACCOUNT)?;
    let account = &stored.claims;
    if account.check_times(now).is_err() {
        return Err(REASON_ACCOUNT_EXPIRED);
    }
    if !account_supported(&account.nats) {
        return Err(REASON_ACCOUNT_UNSUPPORTED);
    }
    // The issuer: the account itself, or one of its signing keys.
    let scope = if user.iss == account_key {
        None
    } else {
        match jwt::is_signing_key(&account.nats, &user.iss) {
            None => return Err(REASON_ISSUER),
            Some(SigningKey::Plain(_)) => None,
            Some(k) => k.scope().cloned(),
        }
    };
    let limits = match &scope {
        Some(s) => {
            // A scoped key's template is the user's permissions; a user
            // carrying its own cannot be told which to trust.
            if !user.nats.limits.is_empty() && user.nats.limits != UserPermissionLimits::unlimited()
            {
                return Err(REASON_SCOPED);
            }
            s.template.clone()
        }
        None => user.nats.limits.clone(),
    };
    if limits.bearer_token {
        if account.nats.limits.disallow_bearer {
            return Err(REASON_BEARER);
        }
    } else {
        let nonce = p.nonce.ok_or(REASON_NONCE)?;
        let sig = p.sig.filter(|s| !s.is_empty()).ok_or(REASON_NONCE)?;
        if !verify_nonce_signature(&user.sub, nonce.as_bytes(), sig) {
            return Err(REASON_SIG);
        }
    }
    if jwt::is_revoked(&account.nats, &user.sub, user.iat) {
        return Err(REASON_REVOKED);
    }
    if let Some(ip) = peer
        && !jwt::cidr_allows(&limits.src, ip)
    {
        return Err(REASON_SRC);
    }
    let mut expires = [user.exp, account.exp].into_iter().filter(|&e| e > 0).min();
    let probe = Claims {
        nats: UserClaims {
            limits: limits.clone(),
            ..UserClaims::default()
        },
        ..Claims::default()
    };
    match jwt::user_times_allow(&probe, now) {
        Ok(TimeCheck::Unrestricted) => {}
        Ok(TimeCheck::Allowed { remaining }) => {
            let end = now + remaining.as_secs() as i64;
            expires = Some(expires.map_or(end, |e| e.min(end)));
        }
        Ok(TimeCheck::Denied) | Err(_) => return Err(REASON_TIMES),
    }
    if !limits.allowed_connection_types.is_empty()
        && !limits
            .allowed_connection_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(jwt::conn_type::STANDARD))
    {
        return Err(REASON_CONN_TYPE);
    }
    let permissions = permissions_of(&limits).or_else(|| default_permissions(&account.nats));
    let ok = AuthOk {
        user: Some(user.sub.clone()),
        method: AuthMethod::Jwt,
        permissions: permissions.map(Arc::new),
        account: Some(account_key),
        jwt: None,
    };
    let grant = JwtGrant {
        expires,
        max_subscriptions: limit(limits.subs),
        max_payload: limit(limits.payload),
        user_key: user.sub.clone(),
        issued_at: user.iat,
    };
    Ok((ok, grant))
}
