//! The `nats` objects of operator, account, user and activation claims, in
//! nats-io/jwt v2's field names and order. Empty fields are left out where
//! Go's `omitempty` leaves them out (Go never omits a struct, so `pub`,
//! `sub`, `limits`, `default_permissions` and `authorization` are always
//! written).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::{ClaimBody, Extra, JwtError, KeyKind, NO_LIMIT};

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// `null` reads as the empty value (Go decodes `null` into an empty slice
/// or map without complaint).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A CIDR list may be a JSON array or one comma-separated string (as
/// nats-io/jwt's `CIDRList` accepts).
fn cidr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Cidrs {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Option::<Cidrs>::deserialize(d)? {
        None => Vec::new(),
        Some(Cidrs::List(l)) => l,
        Some(Cidrs::Text(t)) => {
            let mut out: Vec<String> = Vec::new();
            for v in t.to_lowercase().split(',') {
                let v = v.trim();
                if !v.is_empty() && !out.iter().any(|o| o == v) {
                    out.push(v.to_string());
                }
            }
            out
        }
    })
}

/// `tags`, `type` and `version`, the tail of every `nats` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenericFields {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tags: Vec<String>,
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub claim_type: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: i64,
}

/// Allowed and denied subjects of one direction (publish or subscribe).
/// A subscribe entry may carry a queue group after a space.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allow: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub deny: Vec<String>,
}

impl Permission {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// Publishing to the reply subjects of received requests: `max` replies
/// within `ttl` nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponsePermission {
    #[serde(default)]
    pub max: i64,
    /// Nanoseconds (Go's time.Duration).
    #[serde(default)]
    pub ttl: i64,
}

/// Publish/subscribe/response permissions (an account's defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(rename = "pub", default, deserialize_with = "null_default")]
    pub publish: Permission,
    #[serde(rename = "sub", default, deserialize_with = "null_default")]
    pub subscribe: Permission,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp: Option<ResponsePermission>,
}

/// A daily window `HH:MM:SS`-`HH:MM:SS` in which a user may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub start: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub end: String,
}

/// What a user may do: permissions and limits. Also the template of a
/// scoped signing key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPermissionLimits {
    #[serde(rename = "pub", default, deserialize_with = "null_default")]
    pub publish: Permission,
    #[serde(rename = "sub", default, deserialize_with = "null_default")]
    pub subscribe: Permission,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp: Option<ResponsePermission>,
    /// Client addresses allowed to connect (CIDRs); empty = any.
    #[serde(
        default,
        deserialize_with = "cidr_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub src: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub times: Vec<TimeRange>,
    /// IANA zone of `times` (empty: the server's local time).
    #[serde(
        rename = "times_location",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub times_location: String,
    /// Max subscriptions (-1 unlimited; absent reads as 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub subs: i64,
    /// Max bytes (-1 unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub data: i64,
    /// Max message payload (-1 unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub payload: i64,
    /// The user proves nothing at login (no nonce signature).
    #[serde(default, skip_serializing_if = "is_false")]
    pub bearer_token: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub proxy_required: bool,
    /// See [`super::conn_type`]; empty = any.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allowed_connection_types: Vec<String>,
}

impl UserPermissionLimits {
    /// nsc's defaults for a new user: no limits (-1).
    pub fn unlimited() -> UserPermissionLimits {
        UserPermissionLimits {
            subs: NO_LIMIT,
            data: NO_LIMIT,
            payload: NO_LIMIT,
            ..Default::default()
        }
    }

    /// No permission, limit or restriction at all (what a user signed by a
    /// scoped key must look like).
    pub fn is_empty(&self) -> bool {
        *self == UserPermissionLimits::default()
    }
}

/// The `nats` object of a user JWT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserClaims {
    #[serde(flatten)]
    pub limits: UserPermissionLimits,
    /// The account a user is issued for when signed by one of that
    /// account's signing keys.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer_account: String,
    #[serde(flatten)]
    pub generic: GenericFields,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for UserClaims {
    fn default() -> Self {
        UserClaims {
            limits: UserPermissionLimits::unlimited(),
            issuer_account: String::new(),
            generic: GenericFields::default(),
            extra: Extra::new(),
        }
    }
}

impl ClaimBody for UserClaims {
    const TYPE: &'static str = "user";
    const ISSUERS: &'static [KeyKind] = &[KeyKind::Account];
    const SUBJECT: Option<KeyKind> = Some(KeyKind::User);
    fn generic(&self) -> &GenericFields {
        &self.generic
    }
    fn generic_mut(&mut self) -> &mut GenericFields {
        &mut self.generic
    }
    fn check(&self) -> Result<(), JwtError> {
        if !self.issuer_account.is_empty()
            && KeyKind::of_public(&self.issuer_account) != Some(KeyKind::Account)
        {
            return Err(JwtError::Invalid(format!(
                "issuer_account {:?} is not an account public key",
                self.issuer_account
            )));
        }
        Ok(())
    }
}

/// The `nats` object of an operator JWT.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorClaims {
    /// Operator keys that may sign accounts on the operator's behalf.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub signing_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub account_server_url: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub operator_service_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system_account: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub assert_server_version: String,
    /// Accounts must be signed by a signing key, not the operator's own.
    #[serde(default, skip_serializing_if = "is_false")]
    pub strict_signing_key_usage: bool,
    #[serde(flatten)]
    pub generic: GenericFields,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ClaimBody for OperatorClaims {
    const TYPE: &'static str = "operator";
    const ISSUERS: &'static [KeyKind] = &[KeyKind::Operator];
    const SUBJECT: Option<KeyKind> = Some(KeyKind::Operator);
    fn generic(&self) -> &GenericFields {
        &self.generic
    }
    fn generic_mut(&mut self) -> &mut GenericFields {
        &mut self.generic
    }
}

impl OperatorClaims {
    /// Whether `issuer` may sign accounts for the operator whose claims
    /// these are (`subject` is the operator's own key), as nats-io/jwt's
    /// DidSign: the operator itself (unless strict signing key usage is
    /// set) or one of its signing keys.
    pub fn did_sign(&self, subject: &str, issuer: &str) -> bool {
        if issuer == subject {
            return !self.strict_signing_key_usage;
        }
        self.signing_keys.iter().any(|k| k == issuer)
    }
}

/// An import of a stream or service from another account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Import {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// The exporting account.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub account: String,
    /// An activation token (for exports that require one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// Deprecated prefix/rename (nats-io/jwt keeps reading it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local_subject: String,
    /// "stream" or "service".
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub share: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_trace: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A stream or service an account offers to others.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Export {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// "stream" or "service".
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Importers need an activation token.
    #[serde(default, skip_serializing_if = "is_false")]
    pub token_req: bool,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub revocations: BTreeMap<String, i64>,
    /// "Singleton" (default), "Stream" or "Chunked".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub response_type: String,
    /// Nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub response_threshold: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_latency: Option<Value>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub account_token_position: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub advertise: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_trace: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub info_url: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Account limits set by the operator: core NATS, account and JetStream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorLimits {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub subs: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub data: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub payload: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub imports: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exports: i64,
    /// Wildcard exports allowed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub wildcards: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub disallow_bearer: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub conn: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub leaf: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mem_storage: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_storage: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub streams: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consumer: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_ack_pending: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mem_max_stream_bytes: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_max_stream_bytes: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub max_bytes_required: bool,
    /// JetStream limits per tier, kept as they come.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub tiered_limits: BTreeMap<String, Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl OperatorLimits {
    /// nsc's defaults for a new account: everything unlimited, JetStream off.
    pub fn unlimited() -> OperatorLimits {
        OperatorLimits {
            subs: NO_LIMIT,
            data: NO_LIMIT,
            payload: NO_LIMIT,
            imports: NO_LIMIT,
            exports: NO_LIMIT,
            wildcards: true,
            conn: NO_LIMIT,
            leaf: NO_LIMIT,
            ..Default::default()
        }
    }

    /// Whether any JetStream limit enables JetStream for the account.
    pub fn jetstream_enabled(&self) -> bool {
        if !self.tiered_limits.is_empty() {
            return self.tiered_limits.values().any(|t| {
                let n = |k: &str| t.get(k).and_then(Value::as_i64).unwrap_or(0);
                n("mem_storage") != 0 || n("disk_storage") != 0
            });
        }
        self.mem_storage != 0 || self.disk_storage != 0
    }
}

/// A weighted destination of a subject mapping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightedMapping {
    pub subject: String,
    /// Percent; 0 reads as 100.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
}

/// Auth callout: users in `auth_users` authorize others.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExternalAuthorization {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub auth_users: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allowed_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub xkey: String,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ExternalAuthorization {
    /// Auth callout is on (nats-io/jwt: any auth user).
    pub fn is_enabled(&self) -> bool {
        !self.auth_users.is_empty()
    }
}

/// A signing key with a role: users it signs get `template` as their
/// permissions and limits, and must carry none themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserScope {
    /// Always "user_scope".
    pub kind: String,
    pub key: String,
    #[serde(default)]
    pub role: String,
    #[serde(
        default = "UserPermissionLimits::unlimited",
        deserialize_with = "scope_template"
    )]
    pub template: UserPermissionLimits,
    #[serde(default)]
    pub description: String,
}

/// A template's absent subs/data/payload read as unlimited (nats-io/jwt
/// presets them to -1 before decoding).
fn scope_template<'de, D: Deserializer<'de>>(d: D) -> Result<UserPermissionLimits, D::Error> {
    let mut v = Option::<Value>::deserialize(d)?.unwrap_or(Value::Object(Default::default()));
    if let Some(m) = v.as_object_mut() {
        for k in ["subs", "data", "payload"] {
            m.entry(k).or_insert(Value::from(NO_LIMIT));
        }
    }
    UserPermissionLimits::deserialize(v).map_err(serde::de::Error::custom)
}

/// An account signing key: a plain key, or a scoped one with a role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SigningKey {
    Plain(String),
    Scoped(Box<UserScope>),
}

impl SigningKey {
    pub fn key(&self) -> &str {
        match self {
            SigningKey::Plain(k) => k,
            SigningKey::Scoped(s) => &s.key,
        }
    }

    pub fn scope(&self) -> Option<&UserScope> {
        match self {
            SigningKey::Plain(_) => None,
            SigningKey::Scoped(s) => Some(s),
        }
    }
}

/// The `nats` object of an account JWT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountClaims {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub imports: Vec<Import>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exports: Vec<Export>,
    #[serde(default, deserialize_with = "null_default")]
    pub limits: OperatorLimits,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub signing_keys: Vec<SigningKey>,
    /// User (or [`super::REVOKE_ALL`]) key -> unix seconds: JWTs issued at
    /// or before that time are revoked.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub revocations: BTreeMap<String, i64>,
    #[serde(default, deserialize_with = "null_default")]
    pub default_permissions: Permissions,
    /// Subject mappings: source -> weighted destinations.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub mappings: BTreeMap<String, Vec<WeightedMapping>>,
    #[serde(default, deserialize_with = "null_default")]
    pub authorization: ExternalAuthorization,
    /// Message tracing destination, kept as it comes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_traffic: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub info_url: String,
    #[serde(flatten)]
    pub generic: GenericFields,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for AccountClaims {
    fn default() -> Self {
        AccountClaims {
            imports: Vec::new(),
            exports: Vec::new(),
            limits: OperatorLimits::unlimited(),
            signing_keys: Vec::new(),
            revocations: BTreeMap::new(),
            default_permissions: Permissions::default(),
            mappings: BTreeMap::new(),
            authorization: ExternalAuthorization::default(),
            trace: None,
            cluster_traffic: String::new(),
            description: String::new(),
            info_url: String::new(),
            generic: GenericFields::default(),
            extra: Extra::new(),
        }
    }
}

fn check_kind(what: &str, kind: &str) -> Result<(), JwtError> {
    match kind {
        "stream" | "service" => Ok(()),
        k => Err(JwtError::Invalid(format!("unknown {what} type {k:?}"))),
    }
}

impl ClaimBody for AccountClaims {
    const TYPE: &'static str = "account";
    const ISSUERS: &'static [KeyKind] = &[KeyKind::Operator, KeyKind::Account];
    const SUBJECT: Option<KeyKind> = Some(KeyKind::Account);
    fn generic(&self) -> &GenericFields {
        &self.generic
    }
    fn generic_mut(&mut self) -> &mut GenericFields {
        &mut self.generic
    }
    fn check(&self) -> Result<(), JwtError> {
        for i in &self.imports {
            check_kind("import", &i.kind)?;
        }
        for e in &self.exports {
            check_kind("export", &e.kind)?;
        }
        for k in &self.signing_keys {
            if let SigningKey::Scoped(s) = k
                && s.kind != "user_scope"
            {
                return Err(JwtError::Invalid(format!(
                    "unknown signing key scope {:?}",
                    s.kind
                )));
            }
        }
        Ok(())
    }
    fn prepare(&mut self) {
        self.imports.sort_by(|a, b| a.subject.cmp(&b.subject));
        self.exports.sort_by(|a, b| a.subject.cmp(&b.subject));
        self.signing_keys.sort_by(|a, b| a.key().cmp(b.key()));
        self.signing_keys.dedup_by(|a, b| a.key() == b.key());
    }
}

/// The `nats` object of an activation JWT: the exporting account lets the
/// subject account import `subject`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivationClaims {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// "stream" or "service".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer_account: String,
    #[serde(flatten)]
    pub generic: GenericFields,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ClaimBody for ActivationClaims {
    const TYPE: &'static str = "activation";
    const ISSUERS: &'static [KeyKind] = &[KeyKind::Operator, KeyKind::Account];
    const SUBJECT: Option<KeyKind> = None;
    fn generic(&self) -> &GenericFields {
        &self.generic
    }
    fn generic_mut(&mut self) -> &mut GenericFields {
        &mut self.generic
    }
    fn check(&self) -> Result<(), JwtError> {
        if !self.kind.is_empty() {
            check_kind("activation", &self.kind)?;
        }
        Ok(())
    }
}
