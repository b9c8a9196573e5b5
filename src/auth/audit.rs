//! The authentication audit trail: one structured tracing event per
//! decision on target `rnats::audit`, so operators can route it to its own
//! sink with a target filter. Secrets never reach it.

use std::net::SocketAddr;

use super::{AuthFailure, AuthMethod, AuthOk, REASON_BANNED};

/// The tracing target of audit events.
pub const AUDIT_TARGET: &str = "rnats::audit";

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditResult {
    Ok,
    Failed,
    /// Refused without checking credentials: the source is banned.
    Banned,
    /// Refused at accept by the connection rate limit.
    RateLimited,
}

impl AuditResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditResult::Ok => "ok",
            AuditResult::Failed => "failed",
            AuditResult::Banned => "banned",
            AuditResult::RateLimited => "rate-limited",
        }
    }
}

/// One authentication decision.
#[derive(Clone, Debug)]
pub struct AuditEvent<'a> {
    pub client: SocketAddr,
    pub cid: Option<u64>,
    pub method: AuthMethod,
    /// The user name as the client sent it (or as mapped from its
    /// certificate). Peer-controlled: sanitised before logging.
    pub user: Option<&'a str>,
    pub result: AuditResult,
    pub reason: &'a str,
}

impl<'a> AuditEvent<'a> {
    /// The event for an `Authenticator::authenticate` outcome.
    pub fn from_outcome(
        client: SocketAddr,
        cid: Option<u64>,
        outcome: &'a Result<AuthOk, AuthFailure>,
    ) -> AuditEvent<'a> {
        match outcome {
            Ok(ok) => AuditEvent {
                client,
                cid,
                method: ok.method,
                user: ok.user.as_deref(),
                result: AuditResult::Ok,
                reason: "",
            },
            Err(f) => AuditEvent {
                client,
                cid,
                method: f.method,
                user: f.user.as_deref(),
                result: if f.reason == REASON_BANNED {
                    AuditResult::Banned
                } else {
                    AuditResult::Failed
                },
                reason: f.reason,
            },
        }
    }
}

/// Longest user name written to the audit log.
const MAX_LOGGED_USER: usize = 128;

/// Escape control characters and quotes (so a user name cannot forge log
/// lines or fields) and cut very long names.
pub fn sanitize_user(u: &str) -> String {
    let mut out = String::new();
    for (i, c) in u.chars().enumerate() {
        if i == MAX_LOGGED_USER {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

/// Emit the audit event. Successes are logged at INFO, refusals at WARN.
pub fn audit(ev: &AuditEvent<'_>) {
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let user = ev.user.map(sanitize_user).unwrap_or_default();
    let cid = ev.cid.unwrap_or(0);
    let method = ev.method.as_str();
    let result = ev.result.as_str();
    if ev.result == AuditResult::Ok {
        tracing::info!(
            target: AUDIT_TARGET,
            time = %time,
            client = %ev.client,
            cid,
            method,
            user = %user,
            result,
            reason = ev.reason,
            "authentication {result}"
        );
    } else {
        tracing::warn!(
            target: AUDIT_TARGET,
            time = %time,
            client = %ev.client,
            cid,
            method,
            user = %user,
            result,
            reason = ev.reason,
            "authentication {result}"
        );
    }
}
