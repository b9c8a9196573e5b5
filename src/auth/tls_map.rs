//! `verify_and_map`: the client certificate names the user.

use super::{AuthMethod, AuthOk, Authenticator, Mode, REASON_CERT_UNMAPPED, REASON_NO_CERT, User};
use crate::tls::{CertIdentity, dn_matches};

impl Authenticator {
    /// `verify_and_map`: SAN e-mails first, then SAN DNS names, then the
    /// subject DN, as nats-server documents.
    pub(super) fn map_certificate(
        &self,
        id: Option<&CertIdentity>,
    ) -> Result<AuthOk, &'static str> {
        let id = id.ok_or(REASON_NO_CERT)?;
        let by_name = |name: &str| -> Option<&User> {
            match &self.mode {
                Mode::Users(m) => m.get(name),
                Mode::Single(u) if u.name == name => Some(u),
                _ => None,
            }
        };
        let found = id
            .emails
            .iter()
            .chain(&id.dns_names)
            .chain(std::iter::once(&id.subject))
            .find_map(|n| by_name(n))
            .or_else(|| {
                // Same DN written differently (attribute order, case of the
                // attribute types, escapes).
                let all: Vec<&User> = match &self.mode {
                    Mode::Users(m) => m.values().collect(),
                    Mode::Single(u) => vec![u],
                    _ => Vec::new(),
                };
                let mut hits = all.into_iter().filter(|u| dn_matches(&u.name, id));
                // Several spellings of one DN would make the pick depend on
                // hash order: refuse rather than guess.
                match (hits.next(), hits.next()) {
                    (Some(u), None) => Some(u),
                    _ => None,
                }
            })
            .ok_or(REASON_CERT_UNMAPPED)?;
        Ok(self.ok_user(found, AuthMethod::TlsMap))
    }
}
