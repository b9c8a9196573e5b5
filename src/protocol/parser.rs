//! Sans-I/O parser for the client side of the NATS protocol.
//!
//! The parser never touches a socket: the connection reads bytes into a
//! `BytesMut` and calls [`Parser::next_op`] until it returns `Ok(None)`.
//! Every subject, sid and payload it hands out is a zero-copy slice of the
//! read buffer (`split_to` + `freeze`), so fan-out can clone one `Bytes`
//! per subscriber instead of copying the payload. A PUB is handed out as
//! one `Bytes` for its whole frame with the positions of its parts: every
//! `Bytes` costs reference-count updates, and on a publish-heavy connection
//! those were the largest cost of parsing.

use bytes::{Bytes, BytesMut};

/// One complete operation sent by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// `CONNECT {json}`; the JSON is decoded by the connection.
    Connect(Bytes),
    /// `PUB` or `HPUB`.
    Pub(PubFrame),
    Sub {
        subject: Bytes,
        queue: Option<Bytes>,
        sid: Bytes,
    },
    Unsub {
        sid: Bytes,
        max: Option<u64>,
    },
    Ping,
    Pong,
    /// `+OK`, `-ERR` and `INFO` from a client carry no meaning for a server.
    Ignored,
}

/// Why the parser gave up. Every variant maps to the `-ERR` text that
/// nats-server sends (see `client::errors`); all of them close the
/// connection because the byte stream can no longer be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    UnknownOp,
    MaxControlLine,
    MaxPayload {
        size: usize,
        max: usize,
    },
    /// Arguments of a known operation are wrong; the string names the op.
    BadArgs(&'static str),
    /// The payload was not followed by CRLF: the size in the header lied.
    BadPayload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_control_line: usize,
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control_line: 4096,
            max_payload: 1024 * 1024,
        }
    }
}

/// A PUB or HPUB: the whole frame (control line, payload, CRLF) and where
/// its parts are. For HPUB `header_len` is the size of the header block at
/// the start of the payload; for PUB it is 0 and `headers` false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubFrame {
    frame: Bytes,
    parts: PubParts,
}

/// Positions within a PUB frame (offsets from its first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PubParts {
    subject: (usize, usize),
    reply: Option<(usize, usize)>,
    headers: bool,
    header_len: usize,
    /// Length of the control line with its terminator: the payload starts here.
    line_len: usize,
    size: usize,
}

impl PubFrame {
    pub fn subject(&self) -> &[u8] {
        let (a, b) = self.parts.subject;
        &self.frame[a..b]
    }

    pub fn reply(&self) -> Option<&[u8]> {
        self.parts.reply.map(|(a, b)| &self.frame[a..b])
    }

    pub fn headers(&self) -> bool {
        self.parts.headers
    }

    pub fn header_len(&self) -> usize {
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

#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    /// A PUB whose control line is parsed (and still at the front of the
    /// buffer) but whose payload has not fully arrived: a large payload
    /// arriving over many reads is not reparsed each time.
    pending: Option<PubParts>,
}

impl Parser {
    pub fn new(limits: Limits) -> Self {
        Parser {
            limits,
            pending: None,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Bytes still needed to finish the operation in progress, so the
    /// connection can size its next read (0 when unknown).
    pub fn needed(&self, buf: &BytesMut) -> usize {
        match &self.pending {
            Some(p) => (p.line_len + p.size + 2).saturating_sub(buf.len()),
            None => 0,
        }
    }

    /// Take the next complete operation from `buf`. `Ok(None)` means more
    /// bytes are needed; nothing is consumed from a partial operation.
    pub fn next_op(&mut self, buf: &mut BytesMut) -> Result<Option<ClientOp>, ProtocolError> {
        if let Some(p) = self.pending {
            return self.take_pub(buf, p);
        }
        let Some(nl) = memchr::memchr(b'\n', buf) else {
            // Like nats-server's byte-at-a-time parser: an op name that
            // cannot become a known one is refused before its line ends.
            if !could_be_op(buf) {
                return Err(ProtocolError::UnknownOp);
            }
            // A hard cap as well, so a line of blanks cannot grow forever.
            if args_len(buf) > self.limits.max_control_line
                || buf.len()
                    > self
                        .limits
                        .max_control_line
                        .saturating_mul(4)
                        .max(64 * 1024)
            {
                return Err(ProtocolError::MaxControlLine);
            }
            return Ok(None);
        };
        // The line without its terminator; a lone LF is accepted as nats-server does.
        let end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        if !could_be_op(&buf[..end]) {
            return Err(ProtocolError::UnknownOp);
        }
        // nats-server applies max_control_line to the arguments only.
        if args_len(&buf[..end]) > self.limits.max_control_line {
            return Err(ProtocolError::MaxControlLine);
        }
        if buf.first().copied().is_some_and(is_space) {
            // nats-server allows no blanks before the op name.
            return Err(ProtocolError::UnknownOp);
        }
        let (op, rest) = split_op(&buf[..end]);
        // nats-server's parser needs a blank after PUB, HPUB, SUB and UNSUB:
        // without one (`SUB\r\n`) the op itself is unknown, while a blank
        // followed by bad arguments is an argument error.
        let has_args = end > op.len();
        if (3..=5).contains(&op.len())
            && !has_args
            && [&b"PUB"[..], b"HPUB", b"SUB", b"UNSUB"]
                .iter()
                .any(|o| eq_ic(op, o))
        {
            return Err(ProtocolError::UnknownOp);
        }
        // PUB is parsed in place: its frame leaves the buffer in one piece
        // once its payload is there.
        let pub_kind = match op.len() {
            3 if eq_ic(op, b"PUB") => Some(false),
            4 if eq_ic(op, b"HPUB") => Some(true),
            _ => None,
        };
        if let Some(headers) = pub_kind {
            // `rest` borrows from the line (or is empty).
            let rest_at = if rest.is_empty() {
                end
            } else {
                rest.as_ptr() as usize - buf.as_ptr() as usize
            };
            let parts = self.parse_pub(&buf[..end], rest_at, nl + 1, headers)?;
            return self.take_pub(buf, parts);
        }
        let line = buf.split_to(nl + 1).freeze().slice(..end);
        let (op, rest) = split_op(&line);
        let op = match op.len() {
            3 if eq_ic(op, b"SUB") => parse_sub(&line, rest)?,
            5 if eq_ic(op, b"UNSUB") => parse_unsub(&line, rest)?,
            // nats-server checks only the first four letters: `PINGX` is a PING.
            4.. if eq_ic(&op[..4], b"PING") => ClientOp::Ping,
            4.. if eq_ic(&op[..4], b"PONG") => ClientOp::Pong,
            7 if eq_ic(op, b"CONNECT") => {
                let json = line.slice_ref(trim(rest));
                if json.is_empty() {
                    return Err(ProtocolError::BadArgs("CONNECT"));
                }
                ClientOp::Connect(json)
            }
            4 if eq_ic(op, b"INFO") => ClientOp::Ignored,
            3 if eq_ic(op, b"+OK") => ClientOp::Ignored,
            // nats-server closes on a client's -ERR, sending nothing back.
            4 if eq_ic(op, b"-ERR") => return Err(ProtocolError::BadArgs("-ERR")),
            _ => return Err(ProtocolError::UnknownOp),
        };
        Ok(Some(op))
    }

    /// Parse a PUB/HPUB control line (`line`, without its terminator;
    /// the arguments start at `rest_at`, the payload at `line_len`).
    fn parse_pub(
        &self,
        line: &[u8],
        rest_at: usize,
        line_len: usize,
        headers: bool,
    ) -> Result<PubParts, ProtocolError> {
        let name = if headers { "HPUB" } else { "PUB" };
        let mut args: [&[u8]; 4] = [&[]; 4];
        let n = split_args(&line[rest_at..], &mut args).ok_or(ProtocolError::BadArgs(name))?;
        // PUB subject [reply] size ; HPUB subject [reply] hdr_size total_size
        let (subject, reply, hdr, size) = match (headers, n) {
            (false, 2) => (args[0], None, None, args[1]),
            (false, 3) => (args[0], Some(args[1]), None, args[2]),
            (true, 3) => (args[0], None, Some(args[1]), args[2]),
            (true, 4) => (args[0], Some(args[1]), Some(args[2]), args[3]),
            _ => return Err(ProtocolError::BadArgs(name)),
        };
        let size = parse_size(size).ok_or(ProtocolError::BadArgs(name))?;
        let header_len = match hdr {
            Some(h) => {
                let h = parse_size(h).ok_or(ProtocolError::BadArgs(name))?;
                if h > size {
                    return Err(ProtocolError::BadArgs(name));
                }
                h
            }
            None => 0,
        };
        if size > self.limits.max_payload {
            return Err(ProtocolError::MaxPayload {
                size,
                max: self.limits.max_payload,
            });
        }
        // Positions of the argument slices within the line.
        let at = |a: &[u8]| {
            let start = a.as_ptr() as usize - line.as_ptr() as usize;
            (start, start + a.len())
        };
        Ok(PubParts {
            subject: at(subject),
            reply: reply.map(at),
            headers,
            header_len,
            line_len,
            size,
        })
    }

    /// Hand out the PUB whose line is at the front of `buf` once its
    /// payload and CRLF are there; remember it otherwise.
    fn take_pub(
        &mut self,
        buf: &mut BytesMut,
        p: PubParts,
    ) -> Result<Option<ClientOp>, ProtocolError> {
        let end = p.line_len + p.size;
        if buf.len() < end + 2 {
            // nats-server rejects a wrong byte after the payload as soon
            // as it arrives, without waiting for a second one.
            if buf.len() > end && buf[end] != b'\r' {
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
        Ok(Some(ClientOp::Pub(PubFrame { frame, parts: p })))
    }
}

fn parse_sub(line: &Bytes, rest: &[u8]) -> Result<ClientOp, ProtocolError> {
    let mut args: [&[u8]; 3] = [&[]; 3];
    match split_args(rest, &mut args) {
        Some(2) => Ok(ClientOp::Sub {
            subject: line.slice_ref(args[0]),
            queue: None,
            sid: line.slice_ref(args[1]),
        }),
        Some(3) => Ok(ClientOp::Sub {
            subject: line.slice_ref(args[0]),
            queue: Some(line.slice_ref(args[1])),
            sid: line.slice_ref(args[2]),
        }),
        _ => Err(ProtocolError::BadArgs("SUB")),
    }
}

fn parse_unsub(line: &Bytes, rest: &[u8]) -> Result<ClientOp, ProtocolError> {
    let mut args: [&[u8]; 2] = [&[]; 2];
    match split_args(rest, &mut args) {
        Some(1) => Ok(ClientOp::Unsub {
            sid: line.slice_ref(args[0]),
            max: None,
        }),
        // nats-server takes a max that is not a positive number (`0`,
        // `abc`) as a plain UNSUB: the subscription goes at once.
        Some(2) => Ok(ClientOp::Unsub {
            sid: line.slice_ref(args[0]),
            max: parse_size(args[1]).filter(|&m| m > 0).map(|m| m as u64),
        }),
        _ => Err(ProtocolError::BadArgs("UNSUB")),
    }
}

/// Op names a client may send.
const OPS: [&[u8]; 10] = [
    b"CONNECT", b"PUB", b"HPUB", b"SUB", b"UNSUB", b"PING", b"PONG", b"INFO", b"+OK", b"-ERR",
];

/// Could `line` (complete or not) start with a known op name? Only the
/// letters up to an op's length are compared, as nats-server does
/// (`PINGX` is a PING to it).
fn could_be_op(line: &[u8]) -> bool {
    let name_len = line
        .iter()
        .position(|&b| is_space(b) || b == b'\r')
        .unwrap_or(line.len());
    let name = &line[..name_len];
    if name.is_empty() {
        // An empty line or leading blanks: decided once the line is complete.
        return true;
    }
    let complete = name_len < line.len();
    OPS.iter().any(|op| {
        let n = name.len().min(op.len());
        eq_ic(&name[..n], &op[..n]) && (!complete || name.len() >= op.len())
    })
}

/// Length of the argument part of a control line: what follows the op name
/// and the blanks after it (nats-server's max_control_line counts only this).
pub(super) fn args_len(line: &[u8]) -> usize {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let name_end = line.iter().position(|&b| is_space(b)).unwrap_or(line.len());
    let args_start = line[name_end..]
        .iter()
        .position(|&b| !is_space(b))
        .map_or(line.len(), |i| name_end + i);
    line.len() - args_start
}

pub(super) fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Split the operation name from its arguments.
fn split_op(line: &[u8]) -> (&[u8], &[u8]) {
    let line = trim(line);
    match line.iter().position(|&b| is_space(b)) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[]),
    }
}

pub(super) fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_space(b)).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| !is_space(b))
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// Split whitespace-separated arguments into `out`; `None` when there are
/// more arguments than `out` can hold.
pub(super) fn split_args<'a>(s: &'a [u8], out: &mut [&'a [u8]]) -> Option<usize> {
    let mut n = 0;
    for arg in s.split(|&b| is_space(b)).filter(|a| !a.is_empty()) {
        if n == out.len() {
            return None;
        }
        out[n] = arg;
        n += 1;
    }
    Some(n)
}

/// Decimal size as nats-server accepts it: digits only, no sign, bounded.
pub fn parse_size(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 18 {
        return None;
    }
    let mut n: usize = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        // Checked so a size can never overflow, whatever the word size.
        n = n.checked_mul(10)?.checked_add((b - b'0') as usize)?;
    }
    Some(n)
}

pub(super) fn eq_ic(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<ClientOp>, ProtocolError> {
        let mut p = Parser::new(Limits::default());
        let mut buf = BytesMut::from(input);
        let mut ops = vec![];
        while let Some(op) = p.next_op(&mut buf)? {
            ops.push(op);
        }
        Ok(ops)
    }

    #[test]
    fn parses_every_op() {
        let ops = parse_all(
            b"CONNECT {\"verbose\":false}\r\nPUB foo 5\r\nhello\r\nPUB foo bar 0\r\n\r\n\
              HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\nSUB foo 1\r\nSUB foo q 2\r\nUNSUB 1\r\n\
              UNSUB 2 10\r\nping\r\nPONG\r\n+OK\r\n",
        )
        .unwrap();
        assert_eq!(ops.len(), 11);
        assert_eq!(
            ops[0],
            ClientOp::Connect(Bytes::from_static(b"{\"verbose\":false}"))
        );
        match &ops[1] {
            ClientOp::Pub(p) => {
                assert_eq!(p.subject(), b"foo");
                assert_eq!(p.reply(), None);
                assert!(!p.headers());
                assert_eq!(p.header_len(), 0);
                assert_eq!(p.payload(), b"hello");
            }
            other => panic!("unexpected {other:?}"),
        }
        match &ops[3] {
            ClientOp::Pub(p) => {
                assert!(p.headers());
                assert_eq!(p.header_len(), 12);
                assert_eq!(p.payload(), b"NATS/1.0\r\n\r\nhi");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            ops[5],
            ClientOp::Sub {
                subject: Bytes::from_static(b"foo"),
                queue: Some(Bytes::from_static(b"q")),
                sid: Bytes::from_static(b"2")
            }
        );
        assert_eq!(
            ops[7],
            ClientOp::Unsub {
                sid: Bytes::from_static(b"2"),
                max: Some(10)
            }
        );
        assert_eq!(ops[8], ClientOp::Ping);
        assert_eq!(ops[9], ClientOp::Pong);
    }

    #[test]
    fn payload_split_across_reads() {
        let mut p = Parser::new(Limits::default());
        // "hello world" is 11 bytes (this test used to declare 10).
        let mut buf = BytesMut::from(&b"PUB foo 11\r\nhel"[..]);
        assert_eq!(p.next_op(&mut buf).unwrap(), None);
        assert_eq!(p.needed(&buf), 10);
        buf.extend_from_slice(b"lo worl");
        assert_eq!(p.next_op(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"d\r\nPING\r\n");
        assert!(matches!(
            p.next_op(&mut buf).unwrap(),
            Some(ClientOp::Pub(_))
        ));
        assert_eq!(p.next_op(&mut buf).unwrap(), Some(ClientOp::Ping));
        assert!(buf.is_empty());
    }

    #[test]
    fn errors() {
        assert_eq!(parse_all(b"FOO\r\n"), Err(ProtocolError::UnknownOp));
        assert_eq!(
            parse_all(b"PUB foo\r\n"),
            Err(ProtocolError::BadArgs("PUB"))
        );
        assert_eq!(
            parse_all(b"PUB foo x\r\n"),
            Err(ProtocolError::BadArgs("PUB"))
        );
        assert_eq!(
            parse_all(b"PUB a b c 1\r\n"),
            Err(ProtocolError::BadArgs("PUB"))
        );
        assert_eq!(
            parse_all(b"HPUB a 5 2\r\n"),
            Err(ProtocolError::BadArgs("HPUB"))
        );
        assert_eq!(
            parse_all(b"SUB foo\r\n"),
            Err(ProtocolError::BadArgs("SUB"))
        );
        assert_eq!(
            parse_all(b"UNSUB 1 2 3\r\n"),
            Err(ProtocolError::BadArgs("UNSUB"))
        );
        // No blank after the op name: nats-server calls the op unknown.
        for no_args in [&b"UNSUB\r\n"[..], b"SUB\r\n", b"PUB\r\n", b"HPUB\r\n"] {
            assert_eq!(parse_all(no_args), Err(ProtocolError::UnknownOp));
        }
        assert_eq!(parse_all(b"\tPING\r\n"), Err(ProtocolError::UnknownOp));
        assert_eq!(parse_all(b"PINGX\r\n"), Ok(vec![ClientOp::Ping]));
        // A max that is not a positive number is a plain UNSUB.
        for unsub in [&b"UNSUB 1 0\r\n"[..], b"UNSUB 1 abc\r\n"] {
            assert_eq!(
                parse_all(unsub),
                Ok(vec![ClientOp::Unsub {
                    sid: Bytes::from_static(b"1"),
                    max: None
                }])
            );
        }
        assert_eq!(parse_all(b"\r\n"), Err(ProtocolError::UnknownOp));
        // Unknown op names are refused before the line is complete...
        assert_eq!(parse_all(b"FOO"), Err(ProtocolError::UnknownOp));
        assert_eq!(parse_all(b"PUX"), Err(ProtocolError::UnknownOp));
        assert_eq!(parse_all(b"PIN"), Ok(vec![]));
        // ...and so is a wrong byte right after a payload.
        assert_eq!(
            parse_all(b"PUB foo 1\r\nab"),
            Err(ProtocolError::BadPayload)
        );
        assert_eq!(
            parse_all(b"-ERR 'x'\r\n"),
            Err(ProtocolError::BadArgs("-ERR"))
        );
        assert_eq!(
            parse_all(b"PUB foo 2\r\nabc\r\n"),
            Err(ProtocolError::BadPayload)
        );
        assert_eq!(
            parse_all(b"PUB foo 2000000\r\n"),
            Err(ProtocolError::MaxPayload {
                size: 2_000_000,
                max: 1024 * 1024
            })
        );
        let long = vec![b'A'; 5000];
        assert_eq!(parse_all(&long), Err(ProtocolError::UnknownOp));
        // max_control_line (4096) counts the arguments only.
        let mut ok = b"SUB ".to_vec();
        ok.extend(std::iter::repeat_n(b'a', 4094));
        ok.extend_from_slice(b" 1\r\n");
        assert_eq!(parse_all(&ok).map(|ops| ops.len()), Ok(1));
        let mut long = b"PUB foo ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 5000));
        assert_eq!(parse_all(&long), Err(ProtocolError::MaxControlLine));
        long.extend_from_slice(b" 1\r\n");
        assert_eq!(parse_all(&long), Err(ProtocolError::MaxControlLine));
    }
}
