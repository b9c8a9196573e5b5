//! NATS JWT v2: the signed claims of operator mode (operators vouch for
//! accounts, accounts for users), compatible with what `nsc` writes and
//! `nats-server` reads (github.com/nats-io/jwt, folder v2).
//!
//! A token is `base64url(header) "." base64url(claims JSON) "." base64url(sig)`
//! without padding. The header is always `{"typ":"JWT","alg":"ed25519-nkey"}`
//! and the signature is ed25519 by the issuer's NKey over the first two parts
//! joined by '.' (version 1 tokens, alg `ed25519`, signed only the claims part;
//! they still decode). The claims are the registered names (`jti`, `iat`,
//! `iss`, `name`, `sub`, `exp`, `nbf`, `aud`) plus a `nats` object whose shape
//! depends on the claim type ([`OperatorClaims`], [`AccountClaims`],
//! [`UserClaims`], [`ActivationClaims`]).
//!
//! This module sits at the bottom of the crate: it uses nothing else from it.
//! It only checks what a token says about itself (signature, issuer kind,
//! claim type, times); whether an issuer is trusted (the configured operator,
//! an account's signing keys) is the server's decision, helped by
//! [`is_signing_key`] and [`is_revoked`].
//!
//! Fields this module does not know are kept in the `extra` maps (at the top
//! level and in each `nats` object), so a server can refuse claims that ask
//! for something it cannot enforce instead of silently ignoring them.

mod checks;
mod claims;
mod creds;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use checks::{
    TimeCheck, cidr_allows, conn_type, is_revoked, is_signing_key, revoke, user_src_allows,
    user_times_allow,
};
pub use claims::{
    AccountClaims, ActivationClaims, Export, ExternalAuthorization, GenericFields, Import,
    OperatorClaims, OperatorLimits, Permission, Permissions, ResponsePermission, SigningKey,
    TimeRange, UserClaims, UserPermissionLimits, UserScope, WeightedMapping,
};
pub use creds::{format_creds, parse_creds};

/// Unknown JSON fields, kept as they came (sorted by name when written).
pub type Extra = Map<String, Value>;

/// The largest token nats-io/jwt decodes.
pub const MAX_TOKEN_SIZE: usize = 1024 * 1024;
/// The claims version this module writes.
pub const LIB_VERSION: i64 = 2;
/// The header every token written here carries.
pub const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;
/// `alg` of version 2 tokens.
pub const ALGORITHM: &str = "ed25519-nkey";
/// `alg` of version 1 tokens (signature over the claims part only).
pub const ALGORITHM_V1: &str = "ed25519";
/// The revocation entry that revokes every key issued up to its time.
pub const REVOKE_ALL: &str = "*";
/// Limits of -1 mean unlimited (nsc writes -1, not an absent field).
pub const NO_LIMIT: i64 = -1;

/// Why a token or creds file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Over [`MAX_TOKEN_SIZE`] bytes.
    TooLarge(usize),
    /// Not three base64url parts, or a part is not valid base64url/JSON.
    Malformed(String),
    /// The header is not `{"typ":"JWT","alg":"ed25519-nkey"}` (or v1's `ed25519`).
    BadHeader(String),
    /// The signature does not verify with the issuer's key.
    BadSignature,
    /// `iss` is not a valid NKey public key.
    BadIssuer(String),
    /// `iss` is a valid key of a kind that may not sign this claim type.
    WrongIssuerKind {
        claim_type: &'static str,
        issuer: String,
    },
    /// `sub` is not a public key of the kind this claim type is about.
    BadSubject {
        claim_type: &'static str,
        subject: String,
    },
    /// `nats.type` (or a v1 token's top-level `type`) is not the expected one.
    WrongClaimType {
        expected: &'static str,
        found: String,
    },
    /// A claims version this module does not know (newer than 2).
    UnsupportedVersion(i64),
    /// Claims valid by form but not by content (an unknown export type ...).
    Invalid(String),
    /// `exp` has passed.
    Expired { exp: i64, now: i64 },
    /// `nbf` has not come yet.
    NotYetValid { nbf: i64, now: i64 },
    /// An NKey (seed or public key) that does not decode, or signing failed.
    Key(String),
    /// A creds file without the JWT and seed blocks.
    Creds(String),
    /// A `times_location` this build cannot resolve (no tz database).
    UnsupportedTimeZone(String),
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::TooLarge(n) => {
                write!(
                    f,
                    "token of {n} bytes exceeds the maximum of {MAX_TOKEN_SIZE}"
                )
            }
            JwtError::Malformed(m) => write!(f, "malformed JWT: {m}"),
            JwtError::BadHeader(m) => write!(f, "bad JWT header: {m}"),
            JwtError::BadSignature => write!(f, "JWT signature verification failed"),
            JwtError::BadIssuer(i) => write!(f, "JWT issuer {i:?} is not an NKey public key"),
            JwtError::WrongIssuerKind { claim_type, issuer } => {
                write!(f, "{claim_type} JWT may not be issued by {issuer}")
            }
            JwtError::BadSubject {
                claim_type,
                subject,
            } => write!(
                f,
                "{claim_type} JWT has subject {subject:?} of the wrong kind"
            ),
            JwtError::WrongClaimType { expected, found } => {
                write!(f, "expected a {expected} JWT, got {found:?}")
            }
            JwtError::UnsupportedVersion(v) => write!(f, "unsupported JWT version {v}"),
            JwtError::Invalid(m) => write!(f, "invalid JWT claims: {m}"),
            JwtError::Expired { exp, now } => write!(f, "JWT expired at {exp} (now {now})"),
            JwtError::NotYetValid { nbf, now } => {
                write!(f, "JWT not valid before {nbf} (now {now})")
            }
            JwtError::Key(m) => write!(f, "nkey: {m}"),
            JwtError::Creds(m) => write!(f, "creds: {m}"),
            JwtError::UnsupportedTimeZone(z) => write!(
                f,
                "time zone {z:?} is not supported (only UTC and the local zone)"
            ),
        }
    }
}

impl std::error::Error for JwtError {}

impl From<nkeys::error::Error> for JwtError {
    fn from(e: nkeys::error::Error) -> Self {
        JwtError::Key(e.to_string())
    }
}

/// The kind of an NKey, from its first letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Operator,
    Account,
    User,
    Server,
    Cluster,
    Curve,
}

impl KeyKind {
    /// The kind of a valid public key (checksum verified), None otherwise.
    pub fn of_public(key: &str) -> Option<KeyKind> {
        let (prefix, _) = nkeys::from_public_key(key).ok()?;
        Self::from_prefix(prefix)
    }

    /// The kind of a valid seed, None otherwise.
    pub fn of_seed(seed: &str) -> Option<KeyKind> {
        let (prefix, _) = nkeys::decode_seed(seed).ok()?;
        Self::from_prefix(prefix)
    }

    fn from_prefix(prefix: u8) -> Option<KeyKind> {
        Some(match prefix {
            p if p == 14 << 3 => KeyKind::Operator,
            0 => KeyKind::Account,
            p if p == 20 << 3 => KeyKind::User,
            p if p == 13 << 3 => KeyKind::Server,
            p if p == 2 << 3 => KeyKind::Cluster,
            p if p == 23 << 3 => KeyKind::Curve,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Operator => "operator",
            KeyKind::Account => "account",
            KeyKind::User => "user",
            KeyKind::Server => "server",
            KeyKind::Cluster => "cluster",
            KeyKind::Curve => "curve",
        }
    }
}

/// The `nats` object of one claim type.
pub trait ClaimBody: Serialize + DeserializeOwned + Default {
    /// `nats.type`.
    const TYPE: &'static str;
    /// Key kinds that may sign this claim type (as nats-io/jwt's Decode
    /// checks them).
    const ISSUERS: &'static [KeyKind];
    /// The kind `sub` must have, if any.
    const SUBJECT: Option<KeyKind>;
    fn generic(&self) -> &GenericFields;
    fn generic_mut(&mut self) -> &mut GenericFields;
    /// Checks nats-io/jwt makes while parsing (unknown enum strings).
    fn check(&self) -> Result<(), JwtError> {
        Ok(())
    }
    /// Normalisation before signing (nats-io/jwt sorts imports and exports).
    fn prepare(&mut self) {}
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Decoded claims: the registered JWT names plus the typed `nats` object.
/// Field order is nats-io/jwt's, so [`encode`] writes the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims<N> {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aud: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exp: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub iat: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iss: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nbf: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub: String,
    #[serde(default)]
    pub nats: N,
    /// Unknown top-level fields.
    #[serde(flatten)]
    pub extra: Extra,
}

impl<N: ClaimBody> Claims<N> {
    /// Fresh claims about `subject` (a public key) with nsc's defaults for
    /// the claim type.
    pub fn new(subject: &str, name: &str) -> Claims<N> {
        Claims {
            sub: subject.to_string(),
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// The claims version (1 for tokens migrated from v1).
    pub fn version(&self) -> i64 {
        self.nats.generic().version
    }

    /// `exp`/`nbf` against `now` (unix seconds), as nats-io/jwt checks them:
    /// expired once `now > exp`, not valid while `now < nbf`.
    pub fn check_times(&self, now: i64) -> Result<(), JwtError> {
        if self.exp > 0 && now > self.exp {
            return Err(JwtError::Expired { exp: self.exp, now });
        }
        if self.nbf > 0 && self.nbf > now {
            return Err(JwtError::NotYetValid { nbf: self.nbf, now });
        }
        Ok(())
    }

    /// Whether the claims are signed by their own subject.
    pub fn is_self_signed(&self) -> bool {
        self.iss == self.sub
    }
}

/// Seconds since the epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// JSON the way Go's encoding/json writes it: serde_json's output with
/// `<`, `>`, `&`, U+2028 and U+2029 escaped. Those characters can only
/// appear inside strings, so a pass over the text is exact.
fn go_json<T: Serialize>(v: &T) -> Result<String, JwtError> {
    let s = serde_json::to_string(v).map_err(|e| JwtError::Invalid(e.to_string()))?;
    if !s.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return Ok(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn b64(data: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(data)
}

/// base64url without padding, as Go's `base64.RawURLEncoding` decodes
/// (which tolerates CR and LF but nothing else: no padding, no `+`/`/`).
fn unb64(part: &str, what: &str) -> Result<Vec<u8>, JwtError> {
    let cleaned;
    let part = if part.contains(['\r', '\n']) {
        cleaned = part.replace(['\r', '\n'], "");
        cleaned.as_str()
    } else {
        part
    };
    let mut spec = data_encoding::BASE64URL_NOPAD.specification();
    // Go's decoder does not insist the unused trailing bits are zero.
    spec.check_trailing_bits = false;
    let enc = spec
        .encoding()
        .map_err(|e| JwtError::Malformed(e.to_string()))?;
    enc.decode(part.as_bytes())
        .map_err(|e| JwtError::Malformed(format!("{what} is not base64url: {e}")))
}

/// `jti` as nats-io/jwt computes it: SHA-512/256 of the JSON of the
/// registered claims (with `jti` empty), base32 without padding.
fn compute_jti<N>(c: &Claims<N>) -> Result<String, JwtError> {
    #[derive(Serialize)]
    struct Registered<'a> {
        #[serde(skip_serializing_if = "str::is_empty")]
        aud: &'a str,
        #[serde(skip_serializing_if = "is_zero")]
        exp: i64,
        #[serde(skip_serializing_if = "is_zero")]
        iat: i64,
        #[serde(skip_serializing_if = "str::is_empty")]
        iss: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        name: &'a str,
        #[serde(skip_serializing_if = "is_zero")]
        nbf: i64,
        #[serde(skip_serializing_if = "str::is_empty")]
        sub: &'a str,
    }
    let json = go_json(&Registered {
        aud: &c.aud,
        exp: c.exp,
        iat: c.iat,
        iss: &c.iss,
        name: &c.name,
        nbf: c.nbf,
        sub: &c.sub,
    })?;
    let digest = ring::digest::digest(&ring::digest::SHA512_256, json.as_bytes());
    Ok(data_encoding::BASE32_NOPAD.encode(digest.as_ref()))
}

/// Sign `claims` with `issuer` (issued now): sets `iss`, `iat`, `jti`,
/// `nats.type` and `nats.version`, and returns the token.
pub fn encode<N: ClaimBody>(
    claims: &mut Claims<N>,
    issuer: &nkeys::KeyPair,
) -> Result<String, JwtError> {
    encode_at(claims, issuer, now_unix())
}

/// [`encode`] with an explicit issue time (unix seconds).
pub fn encode_at<N: ClaimBody>(
    claims: &mut Claims<N>,
    issuer: &nkeys::KeyPair,
    iat: i64,
) -> Result<String, JwtError> {
    let iss = issuer.public_key();
    match KeyKind::of_public(&iss) {
        Some(k) if N::ISSUERS.contains(&k) => {}
        _ => {
            return Err(JwtError::WrongIssuerKind {
                claim_type: N::TYPE,
                issuer: iss,
            });
        }
    }
    check_subject::<N>(&claims.sub)?;
    claims.nats.prepare();
    claims.nats.check()?;
    let g = claims.nats.generic_mut();
    g.claim_type = N::TYPE.to_string();
    g.version = LIB_VERSION;
    claims.iss = iss;
    claims.iat = iat;
    claims.jti = String::new();
    claims.jti = compute_jti(claims)?;
    let payload = go_json(claims)?;
    let signed = format!("{}.{}", b64(HEADER.as_bytes()), b64(payload.as_bytes()));
    let sig = issuer.sign(signed.as_bytes())?;
    Ok(format!("{signed}.{}", b64(&sig)))
}

fn check_subject<N: ClaimBody>(sub: &str) -> Result<(), JwtError> {
    if sub.is_empty() {
        return Err(JwtError::BadSubject {
            claim_type: N::TYPE,
            subject: String::new(),
        });
    }
    if let Some(kind) = N::SUBJECT
        && KeyKind::of_public(sub) != Some(kind)
    {
        return Err(JwtError::BadSubject {
            claim_type: N::TYPE,
            subject: sub.to_string(),
        });
    }
    Ok(())
}

/// The parts of a token every claim type shares, before typing it.
struct Parsed {
    version: i64,
    claim_type: String,
    payload: Value,
}

fn parse_untyped(token: &str) -> Result<(Parsed, Vec<u8>, usize), JwtError> {
    if token.len() > MAX_TOKEN_SIZE {
        return Err(JwtError::TooLarge(token.len()));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(JwtError::Malformed(format!(
            "expected 3 parts separated by '.', got {}",
            parts.len()
        )));
    }
    #[derive(Deserialize)]
    struct Header {
        #[serde(default)]
        typ: String,
        #[serde(default)]
        alg: String,
    }
    let header = unb64(parts[0], "header")?;
    let header: Header = serde_json::from_slice(&header)
        .map_err(|e| JwtError::BadHeader(format!("not JSON: {e}")))?;
    if !header.typ.eq_ignore_ascii_case("JWT") {
        return Err(JwtError::BadHeader(format!(
            "unsupported type {:?}",
            header.typ
        )));
    }
    let alg = header.alg.to_ascii_lowercase();
    if alg != ALGORITHM && alg != ALGORITHM_V1 {
        return Err(JwtError::BadHeader(format!(
            "unexpected algorithm {:?}",
            header.alg
        )));
    }
    let payload = unb64(parts[1], "claims")?;
    let mut payload: Value = serde_json::from_slice(&payload)
        .map_err(|e| JwtError::Malformed(format!("claims are not JSON: {e}")))?;
    let obj = payload
        .as_object_mut()
        .ok_or_else(|| JwtError::Malformed("claims are not a JSON object".into()))?;
    let top_type = obj
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let (version, claim_type) = if !top_type.is_empty() {
        // Version 1: type, tags and issuer_account sat beside the
        // registered claims. Move them where v2 has them.
        let mut nats = match obj.remove("nats") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for k in ["type", "tags", "issuer_account"] {
            if let Some(v) = obj.remove(k) {
                nats.insert(k.to_string(), v);
            }
        }
        nats.insert("version".into(), Value::from(1));
        obj.insert("nats".into(), Value::Object(nats));
        (1, top_type)
    } else {
        let nats = obj.get("nats");
        let t = nats
            .and_then(|n| n.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let v = nats
            .and_then(|n| n.get("version"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        (v, t)
    };
    if version > LIB_VERSION {
        return Err(JwtError::UnsupportedVersion(version));
    }
    let sig = unb64(parts[2], "signature")?;
    // v2 signs "header.claims", v1 only "claims".
    let signed_len = parts[0].len() + 1 + parts[1].len();
    Ok((
        Parsed {
            version,
            claim_type,
            payload,
        },
        sig,
        signed_len,
    ))
}

fn verify_sig(
    token: &str,
    iss: &str,
    version: i64,
    sig: &[u8],
    signed_len: usize,
) -> Result<(), JwtError> {
    let kp =
        nkeys::KeyPair::from_public_key(iss).map_err(|_| JwtError::BadIssuer(iss.to_string()))?;
    let signed = if version <= 1 {
        &token[token.find('.').map_or(0, |i| i + 1)..signed_len]
    } else {
        &token[..signed_len]
    };
    kp.verify(signed.as_bytes(), sig)
        .map_err(|_| JwtError::BadSignature)
}

/// Decode and verify a token of claim type `N`: its signature by `iss`,
/// that `iss` is a key of a kind allowed to sign `N` (operator by an
/// operator key; account and activation by an operator or account key;
/// user by an account key), that `sub` has the right kind, and that
/// `nats.type` is `N`'s. Times are not checked: see [`Claims::check_times`].
pub fn decode<N: ClaimBody>(token: &str) -> Result<Claims<N>, JwtError> {
    let token = token.trim();
    let (parsed, sig, signed_len) = parse_untyped(token)?;
    if parsed.claim_type != N::TYPE {
        return Err(JwtError::WrongClaimType {
            expected: N::TYPE,
            found: parsed.claim_type,
        });
    }
    let claims: Claims<N> = serde_json::from_value(parsed.payload)
        .map_err(|e| JwtError::Malformed(format!("{} claims: {e}", N::TYPE)))?;
    verify_sig(token, &claims.iss, parsed.version, &sig, signed_len)?;
    match KeyKind::of_public(&claims.iss) {
        Some(k) if N::ISSUERS.contains(&k) => {}
        Some(_) => {
            return Err(JwtError::WrongIssuerKind {
                claim_type: N::TYPE,
                issuer: claims.iss,
            });
        }
        None => return Err(JwtError::BadIssuer(claims.iss)),
    }
    check_subject::<N>(&claims.sub)?;
    claims.nats.check()?;
    Ok(claims)
}

/// Decode and verify a token of any claim type as plain JSON (for
/// display): its signature and that the issuer is a public key. Returns
/// the claim type and the claims.
pub fn decode_any(token: &str) -> Result<(String, Value), JwtError> {
    let token = token.trim();
    let (parsed, sig, signed_len) = parse_untyped(token)?;
    let iss = parsed
        .payload
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    verify_sig(token, &iss, parsed.version, &sig, signed_len)?;
    Ok((parsed.claim_type, parsed.payload))
}
