//! Sans-I/O parser and encoders for the ROUTE protocol: what the servers of
//! one cluster say to each other.
//!
//! The grammar, as nats-server speaks it to a route that carries every
//! account (we never use pinned-account or pooled routes, so the account is
//! always on the line). Op names are case-insensitive, arguments are
//! separated by spaces or tabs, lines end in CRLF (a lone LF is accepted):
//!
//! ```text
//! INFO {json}                        CONNECT {json}
//! PING     PONG     +OK              -ERR 'text'
//! RS+ <account> <subject>            RS+ <account> <subject> <queue> <weight>
//! RS- <account> <subject>            RS- <account> <subject> <queue>
//! LS+ <origin> <account> <subject> [<queue> <weight>]
//! LS- [<origin>] <account> <subject> [<queue>]
//! RMSG <account> <subject> <size>
//! RMSG <account> <subject> <reply> <size>
//! RMSG <account> <subject> + <reply> <queue>... <size>
//! RMSG <account> <subject> | <queue>... <size>
//! HMSG: the RMSG forms with <header size> before <size>
//! ```
//!
//! An RMSG or HMSG line is followed by `<size>` payload bytes (for HMSG the
//! first `<header size>` of them are the header block) and CRLF. `+` and `|`
//! say whether a reply precedes the queue names; with 1 or 2 arguments
//! between the subject and the sizes, nats-server reads the first as a reply
//! and there are no queue names.
//!
//! Why sans-I/O: like the client [`Parser`](super::Parser), this code never
//! touches a socket. The route connection reads into a `BytesMut` and calls
//! [`RouteParser::next_op`] until it returns `Ok(None)`; everything handed
//! out is a zero-copy slice of the read buffer. That keeps the grammar
//! testable byte by byte (every split of the input, arbitrary input,
//! fuzzing) without a network, and keeps buffering policy in the
//! connection.

use bytes::{Bytes, BytesMut};

use super::parser::{args_len, eq_ic, is_space, parse_size, split_args, trim};
use super::{Limits, ProtocolError};

/// nats-server lets route (and gateway and leaf) control lines be 16 times
/// its `max_control_line`, because they carry an account and whole queue
/// lists: 64 KiB with the default 4096.
pub const ROUTE_CONTROL_LINE_FACTOR: usize = 16;

/// The limits for a route connection, from the server's client limits: the
/// same `max_payload`, a control line [`ROUTE_CONTROL_LINE_FACTOR`] times
/// longer.
pub fn route_limits(server: Limits) -> Limits {
    Limits {
        max_control_line: server
            .max_control_line
            .saturating_mul(ROUTE_CONTROL_LINE_FACTOR),
        max_payload: server.max_payload,
    }
}

/// One complete operation received from a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOp {
    /// `INFO {json}` (raw JSON bytes)
    Info(Bytes),
    /// `CONNECT {json}`
    Connect(Bytes),
    Ping,
    Pong,
    /// `+OK`
    Ok,
    /// `-ERR 'text'` (the text without quotes)
    Err(Bytes),
    /// `RS+ <account> <subject>` or `RS+ <account> <subject> <queue> <weight>`
    Sub(RouteSub),
    /// `RS- <account> <subject>` or `RS- <account> <subject> <queue>`
    Unsub(RouteSub),
    /// `LS+` (leaf-node interest with an origin): parsed and returned so the
    /// caller can ignore it.
    LeafSub,
    /// `LS-`, likewise.
    LeafUnsub,
    /// `RMSG` or `HMSG` (with headers) with its payload
    Msg(RoutedMsg),
}

/// Interest a peer gained or lost. `weight` is the number of queue members
/// the peer stands for: 1 for plain subscriptions and for unsubscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSub {
    pub account: Bytes,
    pub subject: Bytes,
    pub queue: Option<Bytes>,
    pub weight: u32,
}

/// An RMSG or HMSG: the whole frame (control line, payload, CRLF) as one
/// `Bytes`, and where its parts are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedMsg {
    frame: Bytes,
    parts: MsgParts,
    /// Slices of `frame`; empty (no allocation) without queue names.
    queues: Vec<Bytes>,
}

/// Positions within an RMSG/HMSG frame (offsets from its first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MsgParts {
    account: (usize, usize),
    subject: (usize, usize),
    reply: Option<(usize, usize)>,
    header_len: Option<usize>,
    /// Length of the control line with its terminator: the payload starts here.
    line_len: usize,
    size: usize,
}

impl RoutedMsg {
    pub fn account(&self) -> &[u8] {
        let (a, b) = self.parts.account;
        &self.frame[a..b]
    }

    pub fn subject(&self) -> &[u8] {
        let (a, b) = self.parts.subject;
        &self.frame[a..b]
    }

    pub fn reply(&self) -> Option<&[u8]> {
        self.parts.reply.map(|(a, b)| &self.frame[a..b])
    }

    /// Queue group names (empty when none); `Bytes` slices of the frame (no copy).
    pub fn queues(&self) -> &[Bytes] {
        &self.queues
    }

    /// Some(header block size) for HMSG.
    pub fn header_len(&self) -> Option<usize> {
        self.parts.header_len
    }

    pub fn payload(&self) -> &[u8] {
        &self.frame[self.parts.line_len..self.parts.line_len + self.parts.size]
    }

    /// The payload (headers included) as a `Bytes` sharing the frame.
    pub fn payload_bytes(&self) -> Bytes {
        self.frame
            .slice(self.parts.line_len..self.parts.line_len + self.parts.size)
    }
}

/// An RMSG/HMSG whose line is parsed but whose payload is still arriving.
#[derive(Debug, Clone, Copy)]
struct Pending {
    parts: MsgParts,
    /// Index range of the queue names in `RouteParser::args`.
    queues: (usize, usize),
}

#[derive(Debug)]
pub struct RouteParser {
    limits: Limits,
    /// A message whose control line is parsed (and still at the front of the
    /// buffer) but whose payload has not fully arrived: a large payload
    /// arriving over many reads is not reparsed each time.
    pending: Option<Pending>,
    /// Argument positions of the last RMSG/HMSG line, kept between calls so
    /// a queue list costs no allocation once the vector has grown.
    args: Vec<(usize, usize)>,
}

impl Default for RouteParser {
    /// A parser with nats-server's default limits for a route.
    fn default() -> Self {
        RouteParser::new(route_limits(Limits::default()))
    }
}

impl RouteParser {
    /// `limits` apply as given: use [`route_limits`] to derive them from the
    /// server's client limits the way nats-server does.
    pub fn new(limits: Limits) -> Self {
        RouteParser {
            limits,
            pending: None,
            args: Vec::new(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Bytes still needed to finish the message in progress, so the
    /// connection can size its next read (0 when unknown).
    pub fn needed(&self, buf: &BytesMut) -> usize {
        match &self.pending {
            Some(p) => (p.parts.line_len + p.parts.size + 2).saturating_sub(buf.len()),
            None => 0,
        }
    }

    /// Take the next complete operation from `buf`. `Ok(None)` means more
    /// bytes are needed; nothing is consumed from a partial operation.
    pub fn next_op(&mut self, buf: &mut BytesMut) -> Result<Option<RouteOp>, ProtocolError> {
        if let Some(p) = self.pending {
            return self.take_msg(buf, p);
        }
        let Some(nl) = memchr::memchr(b'\n', buf) else {
            return self.check_partial(buf).map(|()| None);
        };
        // The line without its terminator.
        let end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        let name_end = buf[..end].iter().position(|&b| is_space(b)).unwrap_or(end);
        let Some((op, needs_blank)) = lookup(&buf[..name_end]) else {
            return Err(ProtocolError::UnknownOp);
        };
        // Like nats-server, the limit counts the arguments only.
        if args_len(&buf[..end]) > self.limits.max_control_line {
            return Err(ProtocolError::MaxControlLine);
        }
        // nats-server's parser needs a blank after these names: without one
        // (`RS+\r\n`) the op itself is unknown.
        if needs_blank && name_end == end {
            return Err(ProtocolError::UnknownOp);
        }
        if let Op::RMsg | Op::HMsg = op {
            // Parsed in place: the frame leaves the buffer in one piece once
            // its payload is there.
            let p = self.parse_msg(&buf[..end], name_end, nl + 1, op == Op::HMsg)?;
            return self.take_msg(buf, p);
        }
        let line = buf.split_to(nl + 1).freeze().slice(..end);
        let rest = trim(&line[name_end..]);
        let op = match op {
            Op::Info | Op::Connect => {
                if rest.is_empty() {
                    return Err(ProtocolError::BadArgs(if op == Op::Info {
                        "INFO"
                    } else {
                        "CONNECT"
                    }));
                }
                let json = line.slice_ref(rest);
                if op == Op::Info {
                    RouteOp::Info(json)
                } else {
                    RouteOp::Connect(json)
                }
            }
            Op::Ping => RouteOp::Ping,
            Op::Pong => RouteOp::Pong,
            Op::Ok => RouteOp::Ok,
            Op::Err => {
                let text = match rest {
                    [b'\'', inner @ .., b'\''] => inner,
                    _ => rest,
                };
                RouteOp::Err(line.slice_ref(text))
            }
            Op::RSub => RouteOp::Sub(parse_sub(&line, rest)?),
            Op::RUnsub => RouteOp::Unsub(parse_unsub(&line, rest)?),
            Op::LSub => {
                // origin account subject [queue weight]
                match count_args(rest, 5) {
                    Some(3 | 5) => RouteOp::LeafSub,
                    _ => return Err(ProtocolError::BadArgs("LS+")),
                }
            }
            Op::LUnsub => {
                // The origin is there only when both sides support it:
                // [origin] account subject [queue]
                match count_args(rest, 4) {
                    Some(2..=4) => RouteOp::LeafUnsub,
                    _ => return Err(ProtocolError::BadArgs("LS-")),
                }
            }
            Op::RMsg | Op::HMsg => unreachable!("handled above"),
        };
        Ok(Some(op))
    }

    /// No line end yet: refuse what can no longer become a valid line.
    fn check_partial(&self, buf: &[u8]) -> Result<(), ProtocolError> {
        match buf.iter().position(|&b| is_space(b)) {
            // The name is complete: it must be a known one.
            Some(i) if lookup(&buf[..i]).is_none() => return Err(ProtocolError::UnknownOp),
            Some(_) => {}
            // Like nats-server's byte-at-a-time parser, an op name that
            // cannot become a known one is refused before its line ends.
            None if !could_start(buf) => return Err(ProtocolError::UnknownOp),
            None => {}
        }
        // A hard cap as well, so a line of blanks cannot grow forever.
        let cap = self
            .limits
            .max_control_line
            .saturating_mul(4)
            .max(64 * 1024);
        if args_len(buf) > self.limits.max_control_line || buf.len() > cap {
            return Err(ProtocolError::MaxControlLine);
        }
        Ok(())
    }

    /// Parse an RMSG/HMSG control line (`line`, without its terminator; the
    /// arguments start at `args_at`, the payload at `line_len`).
    fn parse_msg(
        &mut self,
        line: &[u8],
        args_at: usize,
        line_len: usize,
        headers: bool,
    ) -> Result<Pending, ProtocolError> {
        let name = if headers { "HMSG" } else { "RMSG" };
        let bad = || ProtocolError::BadArgs(name);
        self.args.clear();
        let mut i = args_at;
        while i < line.len() {
            if is_space(line[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < line.len() && !is_space(line[i]) {
                i += 1;
            }
            self.args.push((start, i));
        }
        let a = &self.args;
        let n = a.len();
        let word = |(s, e): (usize, usize)| &line[s..e];
        // account, subject and one or two sizes are always there.
        let sizes = if headers { 2 } else { 1 };
        if n < 2 + sizes {
            return Err(bad());
        }
        let (reply, queues) = match n - 2 - sizes {
            0 => (None, (0, 0)),
            1 => (Some(a[2]), (0, 0)),
            // With more, the third argument says what follows it.
            _ => match word(a[2]) {
                b"+" => (Some(a[3]), (4, n - sizes)),
                b"|" => (None, (3, n - sizes)),
                _ => return Err(bad()),
            },
        };
        let size = parse_size(word(a[n - 1])).ok_or_else(bad)?;
        let header_len = if headers {
            let h = parse_size(word(a[n - 2])).ok_or_else(bad)?;
            if h > size {
                return Err(bad());
            }
            Some(h)
        } else {
            None
        };
        if size > self.limits.max_payload {
            return Err(ProtocolError::MaxPayload {
                size,
                max: self.limits.max_payload,
            });
        }
        Ok(Pending {
            parts: MsgParts {
                account: a[0],
                subject: a[1],
                reply,
                header_len,
                line_len,
                size,
            },
            queues,
        })
    }

    /// Hand out the message whose line is at the front of `buf` once its
    /// payload and CRLF are there; remember it otherwise.
    fn take_msg(
        &mut self,
        buf: &mut BytesMut,
        p: Pending,
    ) -> Result<Option<RouteOp>, ProtocolError> {
        let end = p.parts.line_len + p.parts.size;
        if buf.len() < end + 2 {
            // A wrong byte after the payload is refused as soon as it
            // arrives, without waiting for a second one.
            if buf.len() > end && buf[end] != b'\r' {
                self.pending = None;
                return Err(ProtocolError::BadPayload);
            }
            self.pending = Some(p);
            return Ok(None);
        }
        self.pending = None;
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::BadPayload);
        }
        let frame = buf.split_to(end + 2).freeze();
        let queues = self.args[p.queues.0..p.queues.1]
            .iter()
            .map(|&(s, e)| frame.slice(s..e))
            .collect();
        Ok(Some(RouteOp::Msg(RoutedMsg {
            frame,
            parts: p.parts,
            queues,
        })))
    }
}

fn parse_sub(line: &Bytes, rest: &[u8]) -> Result<RouteSub, ProtocolError> {
    let mut args: [&[u8]; 4] = [&[]; 4];
    let (queue, weight) = match split_args(rest, &mut args) {
        Some(2) => (None, 1),
        Some(4) => (Some(line.slice_ref(args[2])), parse_weight(args[3])),
        // A queue without its weight included: nats-server refuses the line.
        _ => return Err(ProtocolError::BadArgs("RS+")),
    };
    Ok(RouteSub {
        account: line.slice_ref(args[0]),
        subject: line.slice_ref(args[1]),
        queue,
        weight,
    })
}

/// nats-server keeps a queue subscription whose weight is not a positive
/// number of at most 9 digits (`0`, `x`, `9999999999`) and counts it as
/// one member; so do we, rather than drop the route over it.
fn parse_weight(w: &[u8]) -> u32 {
    parse_size(w)
        .filter(|_| w.len() <= 9)
        .and_then(|w| u32::try_from(w).ok())
        .filter(|&w| w > 0)
        .unwrap_or(1)
}

/// The largest weight nats-server reads (its sizes have at most 9 digits).
const MAX_WEIGHT: u32 = 999_999_999;

fn parse_unsub(line: &Bytes, rest: &[u8]) -> Result<RouteSub, ProtocolError> {
    let mut args: [&[u8]; 3] = [&[]; 3];
    let queue = match split_args(rest, &mut args) {
        Some(2) => None,
        Some(3) => Some(line.slice_ref(args[2])),
        _ => return Err(ProtocolError::BadArgs("RS-")),
    };
    Ok(RouteSub {
        account: line.slice_ref(args[0]),
        subject: line.slice_ref(args[1]),
        queue,
        weight: 1,
    })
}

/// Number of arguments in `s`, `None` when there are more than `max`.
fn count_args(s: &[u8], max: usize) -> Option<usize> {
    let n = s
        .split(|&b| is_space(b))
        .filter(|a| !a.is_empty())
        .take(max + 1)
        .count();
    (n <= max).then_some(n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Info,
    Connect,
    Ping,
    Pong,
    Ok,
    Err,
    RSub,
    RUnsub,
    LSub,
    LUnsub,
    RMsg,
    HMsg,
}

/// How a name matches an op.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// The name is exactly the op's.
    Exact,
    /// The name is exactly the op's and a blank must follow it.
    ExactArgs,
    /// The name starts with the op's: nats-server reads PING, PONG and +OK
    /// up to their last letter and skips the rest of the line (`PINGX`).
    Prefix,
}

/// Op names a route may send. nats-server would also take `LMSG` and
/// `A+`/`A-` on a route, but only sends them to peers that announce
/// support for them, which we do not.
const OPS: [(&[u8], Op, Form); 12] = [
    (b"RMSG", Op::RMsg, Form::ExactArgs),
    (b"HMSG", Op::HMsg, Form::ExactArgs),
    (b"RS+", Op::RSub, Form::ExactArgs),
    (b"RS-", Op::RUnsub, Form::ExactArgs),
    (b"LS+", Op::LSub, Form::ExactArgs),
    (b"LS-", Op::LUnsub, Form::ExactArgs),
    (b"PING", Op::Ping, Form::Prefix),
    (b"PONG", Op::Pong, Form::Prefix),
    (b"INFO", Op::Info, Form::Exact),
    (b"CONNECT", Op::Connect, Form::Exact),
    (b"+OK", Op::Ok, Form::Prefix),
    (b"-ERR", Op::Err, Form::ExactArgs),
];

/// The op a complete name (up to the first blank) stands for, and whether
/// it needs a blank after it.
fn lookup(name: &[u8]) -> Option<(Op, bool)> {
    OPS.iter().find_map(|&(op_name, op, form)| {
        let hit = match form {
            Form::Exact | Form::ExactArgs => eq_ic(name, op_name),
            Form::Prefix => name.len() >= op_name.len() && eq_ic(&name[..op_name.len()], op_name),
        };
        hit.then_some((op, form == Form::ExactArgs))
    })
}

/// Could `name`, not yet complete, still become a known op name?
fn could_start(name: &[u8]) -> bool {
    OPS.iter().any(|&(op_name, _, form)| {
        let n = name.len().min(op_name.len());
        eq_ic(&name[..n], &op_name[..n]) && (form == Form::Prefix || name.len() <= op_name.len())
    })
}

/// Append `RS+ <account> <subject>[ <queue> <weight>]\r\n`. The weight is
/// sent within 1..=999,999,999: a queue member stands for at least one
/// subscriber, and nats-server reads a weight of 0 or of more than 9 digits
/// as 1.
pub fn encode_sub(b: &mut BytesMut, account: &[u8], subject: &[u8], queue: Option<(&[u8], u32)>) {
    b.extend_from_slice(b"RS+ ");
    b.extend_from_slice(account);
    b.extend_from_slice(b" ");
    b.extend_from_slice(subject);
    if let Some((q, w)) = queue {
        b.extend_from_slice(b" ");
        b.extend_from_slice(q);
        b.extend_from_slice(b" ");
        b.extend_from_slice(
            itoa::Buffer::new()
                .format(w.clamp(1, MAX_WEIGHT))
                .as_bytes(),
        );
    }
    b.extend_from_slice(b"\r\n");
}

/// Append `RS- <account> <subject>[ <queue>]\r\n`.
pub fn encode_unsub(b: &mut BytesMut, account: &[u8], subject: &[u8], queue: Option<&[u8]>) {
    b.extend_from_slice(b"RS- ");
    b.extend_from_slice(account);
    b.extend_from_slice(b" ");
    b.extend_from_slice(subject);
    if let Some(q) = queue {
        b.extend_from_slice(b" ");
        b.extend_from_slice(q);
    }
    b.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
