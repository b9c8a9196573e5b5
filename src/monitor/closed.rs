//! The record of a closed connection kept for /connz?state=closed.
//!
//! Records hold no heap allocation of their own (strings are inline and
//! bounded, the reason is an enum), so the ring of the last `MAX_CLOSED`
//! is one contiguous block. Records with heap strings were allocated at
//! close time into the holes the closing connections had just freed, and
//! each one pinned a page: after 2,000 connections closed, the ring kept
//! about 5 MiB resident that `malloc_trim` could not return.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use crate::account::Account;
use crate::client::ConnShared;
use crate::outbound::CloseReason;

/// Closed connections remembered for /connz?state=closed.
pub const MAX_CLOSED: usize = 1000;

/// A string of at most `N` bytes stored inline; longer input is cut at a
/// character boundary.
#[derive(Clone, Copy)]
pub struct InlineStr<const N: usize> {
    len: u8,
    buf: [u8; N],
}

impl<const N: usize> InlineStr<N> {
    pub fn new(s: &str) -> Self {
        const { assert!(N <= 255) };
        let mut end = s.len().min(N);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut buf = [0u8; N];
        buf[..end].copy_from_slice(&s.as_bytes()[..end]);
        InlineStr {
            len: end as u8,
            buf,
        }
    }

    pub fn as_str(&self) -> &str {
        // Built from a &str cut at a character boundary.
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or_default()
    }
}

impl<const N: usize> std::fmt::Debug for InlineStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A connection as it was when it closed. Client name, language and
/// version are kept up to 64, 16 and 32 bytes.
#[derive(Clone, Debug)]
pub struct ClosedConn {
    pub cid: u64,
    pub ip: IpAddr,
    pub port: u16,
    pub start: SystemTime,
    pub stop: SystemTime,
    pub reason: CloseReason,
    pub in_msgs: u64,
    pub in_bytes: u64,
    pub out_msgs: u64,
    pub out_bytes: u64,
    pub name: InlineStr<64>,
    pub lang: InlineStr<16>,
    pub version: InlineStr<32>,
    /// The account it was bound to (a shared pointer: no allocation).
    pub account: Option<BoundAccount>,
}

/// A closed connection's account, shown by name.
#[derive(Clone)]
pub struct BoundAccount(pub Arc<Account>);

impl BoundAccount {
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

impl std::fmt::Debug for BoundAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.name(), f)
    }
}

impl ClosedConn {
    pub fn from_conn(c: &ConnShared) -> Self {
        let (out_msgs, out_bytes) = c.out.out_counts();
        let meta = c.meta.lock();
        ClosedConn {
            cid: c.cid,
            ip: c.peer.ip(),
            port: c.peer.port(),
            start: c.start,
            stop: SystemTime::now(),
            reason: c.close_reason().unwrap_or(CloseReason::ClientClosed),
            in_msgs: c.in_msgs.load(Ordering::Relaxed),
            in_bytes: c.in_bytes.load(Ordering::Relaxed),
            out_msgs,
            out_bytes,
            name: InlineStr::new(&meta.name),
            lang: InlineStr::new(&meta.lang),
            version: InlineStr::new(&meta.version),
            account: c.account().cloned().map(BoundAccount),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InlineStr;

    #[test]
    fn inline_strings_cut_at_a_character_boundary() {
        assert_eq!(InlineStr::<8>::new("nats.go").as_str(), "nats.go");
        assert_eq!(InlineStr::<4>::new("abcdef").as_str(), "abcd");
        // "é" is two bytes: a cut inside it backs off to before it.
        assert_eq!(InlineStr::<4>::new("abcé").as_str(), "abc");
        assert_eq!(InlineStr::<4>::new("").as_str(), "");
    }
}
