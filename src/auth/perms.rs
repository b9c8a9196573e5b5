//! Enforcing subject permissions: deny beats allow, a missing allow list
//! allows everything not denied, as in nats-server.

use crate::protocol::subject;

use super::{Permissions, SubjectPermission};

/// Is every subject matched by `sub` also matched by `pattern`?
/// (`foo.*` is inside `foo.>`, `foo.bar` inside `foo.*`, `>` only inside `>`.)
pub fn is_subset(sub: &[u8], pattern: &[u8]) -> bool {
    let mut s = sub.split(|&b| b == b'.');
    let mut p = pattern.split(|&b| b == b'.');
    loop {
        match (s.next(), p.next()) {
            (None, None) => return true,
            (Some(_), Some(b">")) => return true,
            (Some(b">"), Some(_)) => return false,
            (Some(_), Some(b"*")) => {}
            (Some(b"*"), Some(_)) => return false,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Split a subscribe entry `"subject [queue]"`.
fn entry(e: &str) -> (&[u8], Option<&[u8]>) {
    match e.trim().split_once(' ') {
        Some((s, q)) => (s.as_bytes(), Some(q.trim().as_bytes())),
        None => (e.trim().as_bytes(), None),
    }
}

fn queue_applies(entry_queue: Option<&[u8]>, queue: Option<&[u8]>) -> bool {
    match entry_queue {
        None => true,
        Some(eq) => queue.is_some_and(|q| subject::matches(eq, q)),
    }
}

impl SubjectPermission {
    fn allows_publish(&self, subj: &[u8]) -> bool {
        let allowed = self.allow.as_ref().is_none_or(|a| {
            a.iter()
                .any(|p| subject::matches(p.as_bytes(), subj) || p.as_bytes() == subj)
        });
        allowed
            && !self
                .deny
                .iter()
                .any(|p| subject::matches(p.as_bytes(), subj) || p.as_bytes() == subj)
    }

    fn allows_subscribe(&self, subj: &[u8], queue: Option<&[u8]>) -> bool {
        let allowed = self.allow.as_ref().is_none_or(|a| {
            a.iter().any(|e| {
                let (p, q) = entry(e);
                is_subset(subj, p) && queue_applies(q, queue)
            })
        });
        allowed
            && !self.deny.iter().any(|e| {
                let (p, q) = entry(e);
                is_subset(subj, p) && queue_applies(q, queue)
            })
    }
}

impl Permissions {
    pub fn can_publish(&self, subj: &[u8]) -> bool {
        self.publish.as_ref().is_none_or(|p| p.allows_publish(subj))
    }

    pub fn can_subscribe(&self, subj: &[u8], queue: Option<&[u8]>) -> bool {
        self.subscribe
            .as_ref()
            .is_none_or(|p| p.allows_subscribe(subj, queue))
    }

    /// Subscribe-deny entries that must also filter deliveries, as
    /// `(subject, queue)`: a subscription to `foo.>` is allowed when only
    /// `foo.secret` is denied, but messages on `foo.secret` must still not
    /// reach it; and `SUB > q1` is allowed under a deny of `foo.> q1`, but
    /// must not take `q1`'s messages on `foo.>` (nats-server filters both
    /// at delivery).
    pub fn delivery_denies(&self) -> Vec<(bytes::Bytes, Option<bytes::Bytes>)> {
        self.subscribe
            .as_ref()
            .map(|p| {
                p.deny
                    .iter()
                    .map(|e| {
                        let (s, q) = entry(e);
                        (
                            bytes::Bytes::copy_from_slice(s),
                            q.map(bytes::Bytes::copy_from_slice),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(allow: Option<&[&str]>, deny: &[&str]) -> Option<SubjectPermission> {
        Some(SubjectPermission {
            allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn subsets() {
        assert!(is_subset(b"foo.bar", b"foo.*"));
        assert!(is_subset(b"foo.*", b"foo.>"));
        assert!(is_subset(b"foo.bar.baz", b"foo.>"));
        assert!(!is_subset(b"foo.>", b"foo.*"));
        assert!(!is_subset(b">", b"foo.>"));
        assert!(is_subset(b">", b">"));
        assert!(!is_subset(b"foo", b"foo.>"));
        assert!(!is_subset(b"foo.*", b"foo.bar"));
    }

    #[test]
    fn deny_beats_allow() {
        let p = Permissions {
            publish: sp(Some(&["orders.>"]), &["orders.secret"]),
            subscribe: sp(None, &["admin.>"]),
            allow_responses: None,
        };
        assert!(p.can_publish(b"orders.new"));
        assert!(!p.can_publish(b"orders.secret"));
        assert!(!p.can_publish(b"other"));
        assert!(p.can_subscribe(b"anything", None));
        assert!(!p.can_subscribe(b"admin.users", None));
        assert!(!p.can_subscribe(b"admin.>", None));
        // Overlapping wildcard: allowed, filtered at delivery.
        assert!(p.can_subscribe(b">", None));
        assert_eq!(
            p.delivery_denies(),
            vec![(bytes::Bytes::from_static(b"admin.>"), None)]
        );
    }

    #[test]
    fn empty_allow_allows_nothing_and_queues_scope_entries() {
        let p = Permissions {
            publish: sp(Some(&[]), &[]),
            subscribe: sp(Some(&["jobs.* workers"]), &[]),
            allow_responses: None,
        };
        assert!(!p.can_publish(b"x"));
        assert!(p.can_subscribe(b"jobs.a", Some(b"workers")));
        assert!(!p.can_subscribe(b"jobs.a", None));
        assert!(!p.can_subscribe(b"jobs.a", Some(b"other")));
    }
}
