//! The route parser case by case: every op and form, how input split
//! anywhere parses, and each way a line or payload can be wrong.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::deliver::encode_route_line;
use crate::outbound::Message;

fn parse_with(limits: Limits, input: &[u8]) -> Result<Vec<RouteOp>, ProtocolError> {
    let mut p = RouteParser::new(limits);
    let mut buf = BytesMut::from(input);
    let mut ops = vec![];
    while let Some(op) = p.next_op(&mut buf)? {
        ops.push(op);
    }
    Ok(ops)
}

fn parse_all(input: &[u8]) -> Result<Vec<RouteOp>, ProtocolError> {
    parse_with(route_limits(Limits::default()), input)
}

fn one(input: &[u8]) -> RouteOp {
    let mut ops = parse_all(input).unwrap();
    assert_eq!(ops.len(), 1, "{ops:?}");
    ops.remove(0)
}

fn msg(input: &[u8]) -> RoutedMsg {
    match one(input) {
        RouteOp::Msg(m) => m,
        other => panic!("unexpected {other:?}"),
    }
}

fn sub(account: &str, subject: &str, queue: Option<&str>, weight: u32) -> RouteSub {
    RouteSub {
        account: Bytes::copy_from_slice(account.as_bytes()),
        subject: Bytes::copy_from_slice(subject.as_bytes()),
        queue: queue.map(|q| Bytes::copy_from_slice(q.as_bytes())),
        weight,
    }
}

fn queues(m: &RoutedMsg) -> Vec<&[u8]> {
    m.queues().iter().map(|q| &q[..]).collect()
}

/// Every op at least once, in one buffer.
const MIXED: &[u8] = b"INFO {\"server_id\":\"S1\"}\r\nCONNECT {\"echo\":true}\r\nPING\r\nPONG\r\n+OK\r\n\
    -ERR 'Unknown Protocol Operation'\r\nRS+ $G foo\r\nRS+ $G foo.* q 3\r\nRS- $G foo\r\nRS- $G foo.* q\r\n\
    LS+ C2 $G bar\r\nLS- C2 $G bar\r\nRMSG $G foo 5\r\nhello\r\nRMSG $G foo _INBOX.1 0\r\n\r\n\
    RMSG $G foo + _INBOX.2 q1 q2 2\r\nhi\r\nRMSG $G foo | q1 1\r\nx\r\n\
    HMSG $G foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\nHMSG $G foo + r q 12 12\r\nNATS/1.0\r\n\r\n\r\n";

#[test]
fn parses_every_op() {
    let ops = parse_all(MIXED).unwrap();
    assert_eq!(ops.len(), 18);
    assert_eq!(
        ops[0],
        RouteOp::Info(Bytes::from_static(b"{\"server_id\":\"S1\"}"))
    );
    assert_eq!(
        ops[1],
        RouteOp::Connect(Bytes::from_static(b"{\"echo\":true}"))
    );
    assert_eq!(ops[2..5], [RouteOp::Ping, RouteOp::Pong, RouteOp::Ok]);
    assert_eq!(
        ops[5],
        RouteOp::Err(Bytes::from_static(b"Unknown Protocol Operation"))
    );
    assert_eq!(ops[6], RouteOp::Sub(sub("$G", "foo", None, 1)));
    assert_eq!(ops[7], RouteOp::Sub(sub("$G", "foo.*", Some("q"), 3)));
    assert_eq!(ops[8], RouteOp::Unsub(sub("$G", "foo", None, 1)));
    assert_eq!(ops[9], RouteOp::Unsub(sub("$G", "foo.*", Some("q"), 1)));
    assert_eq!(ops[10..12], [RouteOp::LeafSub, RouteOp::LeafUnsub]);
    let msgs: Vec<&RoutedMsg> = ops[12..]
        .iter()
        .map(|op| match op {
            RouteOp::Msg(m) => m,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    for m in &msgs {
        assert_eq!(m.account(), b"$G");
        assert_eq!(m.subject(), b"foo");
    }
    assert_eq!(
        (msgs[0].reply(), queues(msgs[0]), msgs[0].payload()),
        (None, vec![], &b"hello"[..])
    );
    assert_eq!(msgs[0].header_len(), None);
    assert_eq!(
        (msgs[1].reply(), queues(msgs[1]), msgs[1].payload()),
        (Some(&b"_INBOX.1"[..]), vec![], &b""[..])
    );
    assert_eq!(
        (msgs[2].reply(), queues(msgs[2]), msgs[2].payload()),
        (Some(&b"_INBOX.2"[..]), vec![&b"q1"[..], b"q2"], &b"hi"[..])
    );
    assert_eq!(
        (msgs[3].reply(), queues(msgs[3]), msgs[3].payload()),
        (None, vec![&b"q1"[..]], &b"x"[..])
    );
    assert_eq!(msgs[4].header_len(), Some(12));
    assert_eq!(msgs[4].reply(), None);
    assert_eq!(msgs[4].payload(), b"NATS/1.0\r\n\r\nhi");
    assert_eq!(msgs[5].header_len(), Some(12));
    assert_eq!(msgs[5].reply(), Some(&b"r"[..]));
    assert_eq!(queues(msgs[5]), vec![&b"q"[..]]);
    assert_eq!(msgs[5].payload(), b"NATS/1.0\r\n\r\n");
}

/// The same ops whether the bytes come all at once, one at a time, or
/// split in two at any point.
#[test]
fn split_at_every_byte() {
    let whole = parse_all(MIXED).unwrap();
    let mut p = RouteParser::default();
    let mut buf = BytesMut::new();
    let mut ops = vec![];
    for &b in MIXED {
        buf.extend_from_slice(&[b]);
        while let Some(op) = p.next_op(&mut buf).unwrap() {
            ops.push(op);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(ops, whole);
    for cut in 0..=MIXED.len() {
        let mut p = RouteParser::default();
        let mut buf = BytesMut::new();
        let mut ops = vec![];
        for chunk in [&MIXED[..cut], &MIXED[cut..]] {
            buf.extend_from_slice(chunk);
            while let Some(op) = p.next_op(&mut buf).unwrap() {
                ops.push(op);
            }
        }
        assert!(buf.is_empty(), "cut {cut}");
        assert_eq!(ops, whole, "cut {cut}");
    }
}

#[test]
fn payload_split_across_reads() {
    let mut p = RouteParser::default();
    let mut buf = BytesMut::from(&b"RMSG $G foo | q 11\r\nhel"[..]);
    assert_eq!(p.next_op(&mut buf).unwrap(), None);
    assert_eq!(p.needed(&buf), 10);
    buf.extend_from_slice(b"lo worl");
    assert_eq!(p.next_op(&mut buf).unwrap(), None);
    assert_eq!(p.needed(&buf), 3);
    buf.extend_from_slice(b"d\r");
    assert_eq!(p.next_op(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"\nPING\r\n");
    match p.next_op(&mut buf).unwrap() {
        Some(RouteOp::Msg(m)) => {
            assert_eq!(m.payload(), b"hello world");
            assert_eq!(queues(&m), vec![&b"q"[..]]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(p.needed(&buf), 0);
    assert_eq!(p.next_op(&mut buf).unwrap(), Some(RouteOp::Ping));
    assert!(buf.is_empty());
}

#[test]
fn nothing_consumed_from_a_partial_op() {
    let mut p = RouteParser::default();
    for partial in [
        &b"RS+ $G fo"[..],
        b"RMSG $G foo 5\r\nhel",
        b"PIN",
        b"INFO {",
    ] {
        let mut buf = BytesMut::from(partial);
        assert_eq!(p.next_op(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], partial);
        p = RouteParser::default();
    }
}

#[test]
fn zero_copy_slices_of_the_frame() {
    let m = msg(b"HMSG $G foo + r q1 q2 2 5\r\nh\r\nab\r\n");
    let frame = m.frame.as_ptr_range();
    for q in m.queues() {
        assert!(frame.contains(&q.as_ptr()));
    }
    assert!(frame.contains(&m.payload_bytes().as_ptr()));
    assert_eq!(m.payload_bytes(), Bytes::from_static(b"h\r\nab"));
    assert_eq!(m.payload_bytes().as_ptr(), m.payload().as_ptr());
}

#[test]
fn names_are_case_insensitive() {
    assert_eq!(
        one(b"rs+ $G foo\r\n"),
        RouteOp::Sub(sub("$G", "foo", None, 1))
    );
    assert_eq!(
        one(b"Rs- $G foo\r\n"),
        RouteOp::Unsub(sub("$G", "foo", None, 1))
    );
    assert_eq!(one(b"ls+ o $G foo\r\n"), RouteOp::LeafSub);
    assert_eq!(msg(b"rmsg $G foo 1\r\nx\r\n").payload(), b"x");
    assert_eq!(msg(b"hMsG $G foo 0 1\r\nx\r\n").header_len(), Some(0));
    assert_eq!(one(b"ping\r\n"), RouteOp::Ping);
    assert_eq!(one(b"pOnG\r\n"), RouteOp::Pong);
    assert_eq!(one(b"+ok\r\n"), RouteOp::Ok);
    assert_eq!(
        one(b"info {}\r\n"),
        RouteOp::Info(Bytes::from_static(b"{}"))
    );
    assert_eq!(
        one(b"connect {}\r\n"),
        RouteOp::Connect(Bytes::from_static(b"{}"))
    );
    assert_eq!(one(b"-err 'x'\r\n"), RouteOp::Err(Bytes::from_static(b"x")));
}

#[test]
fn blanks_and_line_ends() {
    // Tabs and runs of blanks separate arguments; trailing blanks are dropped.
    assert_eq!(
        one(b"RS+\t$G \t foo\tq   7 \t\r\n"),
        RouteOp::Sub(sub("$G", "foo", Some("q"), 7))
    );
    let m = msg(b"RMSG\t\t$G  foo\t+ r\tq1  q2 \t3\t\r\nabc\r\n");
    assert_eq!(
        (m.reply(), queues(&m)),
        (Some(&b"r"[..]), vec![&b"q1"[..], b"q2"])
    );
    // A lone LF ends a control line (the payload still needs CRLF).
    let ops = parse_all(b"PING\nRS- $G foo\nRMSG $G foo 2\nab\r\nPONG\n").unwrap();
    assert_eq!(ops.len(), 4);
    assert_eq!(ops[3], RouteOp::Pong);
    // nats-server reads PING, PONG and +OK up to their last letter only.
    assert_eq!(one(b"PINGX\r\n"), RouteOp::Ping);
    assert_eq!(one(b"PING anything\r\n"), RouteOp::Ping);
    assert_eq!(one(b"+OKAY\r\n"), RouteOp::Ok);
}

#[test]
fn err_text() {
    assert_eq!(
        one(b"-ERR 'a b'\r\n"),
        RouteOp::Err(Bytes::from_static(b"a b"))
    );
    assert_eq!(
        one(b"-ERR plain \r\n"),
        RouteOp::Err(Bytes::from_static(b"plain"))
    );
    assert_eq!(
        one(b"-ERR 'half\r\n"),
        RouteOp::Err(Bytes::from_static(b"'half"))
    );
    assert_eq!(one(b"-ERR ''\r\n"), RouteOp::Err(Bytes::new()));
    assert_eq!(one(b"-ERR \r\n"), RouteOp::Err(Bytes::new()));
    assert_eq!(parse_all(b"-ERR\r\n"), Err(ProtocolError::UnknownOp));
}

#[test]
fn subs_and_unsubs() {
    assert_eq!(
        one(b"RS+ ACC foo.> grp 1000\r\n"),
        RouteOp::Sub(sub("ACC", "foo.>", Some("grp"), 1000))
    );
    // A queue needs its weight; nothing else is a valid count.
    for bad in [
        &b"RS+ $G\r\n"[..],
        b"RS+ $G foo q\r\n",
        b"RS+ $G foo q 1 x\r\n",
        b"RS+ \r\n",
    ] {
        assert_eq!(
            parse_all(bad),
            Err(ProtocolError::BadArgs("RS+")),
            "{bad:?}"
        );
    }
    for bad in [&b"RS- $G\r\n"[..], b"RS- $G foo q x\r\n", b"RS- \r\n"] {
        assert_eq!(
            parse_all(bad),
            Err(ProtocolError::BadArgs("RS-")),
            "{bad:?}"
        );
    }
    // nats-server keeps a queue sub whose weight is not a positive 9-digit
    // number and counts it as one member.
    for w in ["0", "x", "-3", "1000000000", "99999999999999999999999"] {
        let line = format!("RS+ $G foo q {w}\r\n");
        assert_eq!(
            one(line.as_bytes()),
            RouteOp::Sub(sub("$G", "foo", Some("q"), 1)),
            "{w}"
        );
    }
    assert_eq!(
        one(b"RS+ $G foo q 999999999\r\n"),
        RouteOp::Sub(sub("$G", "foo", Some("q"), 999_999_999))
    );
    // Leaf interest: counted, not kept.
    assert_eq!(one(b"LS+ C2 $G foo q 2\r\n"), RouteOp::LeafSub);
    assert_eq!(one(b"LS- $G foo\r\n"), RouteOp::LeafUnsub);
    assert_eq!(one(b"LS- C2 $G foo q\r\n"), RouteOp::LeafUnsub);
    assert_eq!(
        parse_all(b"LS+ $G foo\r\n"),
        Err(ProtocolError::BadArgs("LS+"))
    );
    assert_eq!(
        parse_all(b"LS+ C2 $G foo q\r\n"),
        Err(ProtocolError::BadArgs("LS+"))
    );
    assert_eq!(
        parse_all(b"LS- foo\r\n"),
        Err(ProtocolError::BadArgs("LS-"))
    );
    assert_eq!(
        parse_all(b"LS- a b c d e\r\n"),
        Err(ProtocolError::BadArgs("LS-"))
    );
}

#[test]
fn msg_forms_and_reply_indicators() {
    // With one word between subject and size, it is the reply, even `|`
    // or `+` (nats-server reads it so too).
    assert_eq!(msg(b"RMSG $G foo | 0\r\n\r\n").reply(), Some(&b"|"[..]));
    assert_eq!(msg(b"RMSG $G foo + 0\r\n\r\n").reply(), Some(&b"+"[..]));
    // `+` with a reply and no queue names.
    let m = msg(b"RMSG $G foo + r 0\r\n\r\n");
    assert_eq!((m.reply(), m.queues().len()), (Some(&b"r"[..]), 0));
    let m = msg(b"HMSG $G foo + r 0 0\r\n\r\n");
    assert_eq!((m.reply(), m.queues().len()), (Some(&b"r"[..]), 0));
    let m = msg(b"HMSG $G foo r 0 0\r\n\r\n");
    assert_eq!((m.reply(), m.queues().len()), (Some(&b"r"[..]), 0));
    let m = msg(b"HMSG $G foo | q 0 0\r\n\r\n");
    assert_eq!((m.reply(), queues(&m)), (None, vec![&b"q"[..]]));
    // Anything else in the indicator's place is refused.
    for bad in [
        &b"RMSG $G foo x r q 1\r\n"[..],
        b"RMSG $G foo ++ r q 1\r\n",
        b"RMSG $G foo |+ q 1\r\n",
        b"RMSG $G foo reply q 1\r\n",
    ] {
        assert_eq!(
            parse_all(bad),
            Err(ProtocolError::BadArgs("RMSG")),
            "{bad:?}"
        );
    }
    assert_eq!(
        parse_all(b"HMSG $G foo - r q 1 1\r\n"),
        Err(ProtocolError::BadArgs("HMSG"))
    );
    // Too few arguments.
    for bad in [&b"RMSG $G 1\r\n"[..], b"RMSG $G\r\n", b"RMSG  \r\n"] {
        assert_eq!(
            parse_all(bad),
            Err(ProtocolError::BadArgs("RMSG")),
            "{bad:?}"
        );
    }
    for bad in [&b"HMSG $G foo 1\r\n"[..], b"HMSG $G 0 1\r\n"] {
        assert_eq!(
            parse_all(bad),
            Err(ProtocolError::BadArgs("HMSG")),
            "{bad:?}"
        );
    }
}

#[test]
fn long_queue_lists() {
    let names: Vec<String> = (0..2000).map(|i| format!("queue.group.{i}")).collect();
    let line = format!("RMSG $G foo + _R_.x {} 3\r\nabc\r\n", names.join(" "));
    assert!(line.len() > 4096, "longer than a client control line");
    let m = msg(line.as_bytes());
    assert_eq!(m.reply(), Some(&b"_R_.x"[..]));
    assert_eq!(m.queues().len(), 2000);
    for (q, n) in m.queues().iter().zip(&names) {
        assert_eq!(&q[..], n.as_bytes());
    }
    // The parser's argument list is reused: a second message on the same
    // parser does not see the first one's queue names.
    let mut p = RouteParser::default();
    let mut buf = BytesMut::from(line.as_bytes());
    buf.extend_from_slice(b"RMSG $G foo | a b 1\r\nz\r\n");
    assert!(matches!(
        p.next_op(&mut buf).unwrap(),
        Some(RouteOp::Msg(_))
    ));
    match p.next_op(&mut buf).unwrap() {
        Some(RouteOp::Msg(m)) => assert_eq!(queues(&m), vec![&b"a"[..], b"b"]),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn sizes() {
    let limits = route_limits(Limits::default());
    assert_eq!(
        parse_all(b"RMSG $G foo 2000000\r\n"),
        Err(ProtocolError::MaxPayload {
            size: 2_000_000,
            max: limits.max_payload
        })
    );
    assert_eq!(
        parse_all(b"HMSG $G foo 1 2000000\r\n"),
        Err(ProtocolError::MaxPayload {
            size: 2_000_000,
            max: limits.max_payload
        })
    );
    // Numbers too long to be sizes, or not numbers, are refused, never wrapped.
    for bad in [
        &b"RMSG $G foo 99999999999999999999999999\r\n"[..],
        b"RMSG $G foo 18446744073709551616\r\n",
        b"RMSG $G foo -1\r\n",
        b"RMSG $G foo 1x\r\n",
        b"RMSG $G foo r +5\r\n",
    ] {
        assert_eq!(
            parse_all(bad),
            Err(ProtocolError::BadArgs("RMSG")),
            "{bad:?}"
        );
    }
    for bad in [
        &b"HMSG $G foo 99999999999999999999999999 1\r\n"[..],
        b"HMSG $G foo 1 99999999999999999999999999\r\n",
        b"HMSG $G foo x 1\r\n",
        // The header block cannot be larger than the whole payload.
        b"HMSG $G foo 3 2\r\n",
        b"HMSG $G foo + r q 3 2\r\n",
    ] {
        assert_eq!(
            parse_all(bad),
            Err(ProtocolError::BadArgs("HMSG")),
            "{bad:?}"
        );
    }
    // The largest payload allowed is allowed.
    let small = Limits {
        max_control_line: 1024,
        max_payload: 3,
    };
    assert_eq!(
        parse_with(small, b"RMSG a b 3\r\nabc\r\n").map(|o| o.len()),
        Ok(1)
    );
    assert_eq!(
        parse_with(small, b"RMSG a b 4\r\n"),
        Err(ProtocolError::MaxPayload { size: 4, max: 3 })
    );
}

#[test]
fn bad_payload_ends() {
    // A wrong byte after the payload is refused as soon as it is there.
    assert_eq!(
        parse_all(b"RMSG $G foo 1\r\nab"),
        Err(ProtocolError::BadPayload)
    );
    assert_eq!(
        parse_all(b"RMSG $G foo 1\r\na\rX"),
        Err(ProtocolError::BadPayload)
    );
    assert_eq!(
        parse_all(b"RMSG $G foo 2\r\nabc\r\n"),
        Err(ProtocolError::BadPayload)
    );
    assert_eq!(
        parse_all(b"RMSG $G foo 2\r\na\r\n"),
        Err(ProtocolError::BadPayload)
    );
    assert_eq!(
        parse_all(b"HMSG $G foo 1 1\r\nx\n\n"),
        Err(ProtocolError::BadPayload)
    );
    // Waiting for the LF is not an error.
    assert_eq!(parse_all(b"RMSG $G foo 1\r\na\r"), Ok(vec![]));
}

#[test]
fn unknown_ops() {
    for bad in [
        &b"FOO\r\n"[..],
        b"\r\n",
        b"\n",
        b" PING\r\n",
        b"\tRS+ $G foo\r\n",
        // Client and other-kind ops are not route ops here.
        b"PUB foo 1\r\nx\r\n",
        b"SUB foo 1\r\n",
        b"UNSUB 1\r\n",
        b"MSG foo 1 1\r\nx\r\n",
        b"LMSG C2 $G foo 1\r\nx\r\n",
        b"A+ $G\r\n",
        b"RS* $G foo\r\n",
        b"RS+X $G foo\r\n",
        b"RMSGX $G foo 1\r\n",
        b"INFOX {}\r\n",
        b"PIN\r\n",
        b"PI\rNG\r\n",
        // A blank must follow these names.
        b"RS+\r\n",
        b"RS-\r\n",
        b"LS+\r\n",
        b"RMSG\r\n",
        b"HMSG\r\n",
        b"RS+\r $G foo\r\n",
    ] {
        assert_eq!(parse_all(bad), Err(ProtocolError::UnknownOp), "{bad:?}");
    }
    // An op name that cannot become a known one is refused before its line ends.
    for bad in [
        &b"X"[..],
        b"RX",
        b"RS*",
        b"RMSGX",
        b"PUB",
        b" ",
        b"INFOX",
        b"RS+X",
    ] {
        assert_eq!(parse_all(bad), Err(ProtocolError::UnknownOp), "{bad:?}");
    }
    for partial in [
        &b"R"[..],
        b"RS",
        b"RM",
        b"RMS",
        b"HMSG",
        b"RS+",
        b"PINGXXX",
        b"CONN",
        b"-E",
        b"+",
    ] {
        assert_eq!(parse_all(partial), Ok(vec![]), "{partial:?}");
    }
    // INFO and CONNECT need their JSON.
    assert_eq!(parse_all(b"INFO\r\n"), Err(ProtocolError::BadArgs("INFO")));
    assert_eq!(
        parse_all(b"INFO  \r\n"),
        Err(ProtocolError::BadArgs("INFO"))
    );
    assert_eq!(
        parse_all(b"CONNECT\r\n"),
        Err(ProtocolError::BadArgs("CONNECT"))
    );
}

#[test]
fn control_line_limit() {
    let limit = route_limits(Limits::default()).max_control_line;
    assert_eq!(limit, 64 * 1024);
    // The limit counts the arguments, not the op name.
    let mut ok = b"RS+ ".to_vec();
    ok.extend(std::iter::repeat_n(b'a', limit - 4));
    ok.extend_from_slice(b" foo\r\n");
    assert_eq!(parse_all(&ok).map(|o| o.len()), Ok(1));
    let mut long = b"RMSG $G ".to_vec();
    long.extend(std::iter::repeat_n(b'a', limit));
    // Refused before the line ends...
    assert_eq!(parse_all(&long), Err(ProtocolError::MaxControlLine));
    // ...and once it does.
    long.extend_from_slice(b" 1\r\nx\r\n");
    assert_eq!(parse_all(&long), Err(ProtocolError::MaxControlLine));
    // A line of blanks or a prefix-matched name cannot grow forever.
    let mut name = b"PING".to_vec();
    name.extend(std::iter::repeat_n(b'X', 300 * 1024));
    assert_eq!(parse_all(&name), Err(ProtocolError::MaxControlLine));
    let mut spaces = b"RS+".to_vec();
    spaces.extend(std::iter::repeat_n(b' ', 300 * 1024));
    assert_eq!(parse_all(&spaces), Err(ProtocolError::MaxControlLine));
    // Small limits apply as given.
    let small = Limits {
        max_control_line: 8,
        max_payload: 10,
    };
    assert_eq!(parse_with(small, b"RS+ $G foo\r\n").map(|o| o.len()), Ok(1));
    assert_eq!(
        parse_with(small, b"RS+ $G foo.bar\r\n"),
        Err(ProtocolError::MaxControlLine)
    );
}

#[test]
fn limits_and_default() {
    let l = route_limits(Limits {
        max_control_line: usize::MAX,
        max_payload: 7,
    });
    assert_eq!((l.max_control_line, l.max_payload), (usize::MAX, 7));
    let mut p = RouteParser::default();
    assert_eq!(p.limits(), route_limits(Limits::default()));
    p.set_limits(l);
    assert_eq!(p.limits(), l);
}

#[test]
fn encoders_round_trip() {
    let mut b = BytesMut::new();
    encode_sub(&mut b, b"$G", b"foo.*", None);
    encode_sub(&mut b, b"ACC", b"foo.>", Some((b"q", 5)));
    encode_sub(&mut b, b"ACC", b"bar", Some((b"q", 0)));
    encode_sub(&mut b, b"ACC", b"bar", Some((b"q", u32::MAX)));
    encode_unsub(&mut b, b"$G", b"foo.*", None);
    encode_unsub(&mut b, b"ACC", b"foo.>", Some(b"q"));
    assert_eq!(
        &b[..],
        &b"RS+ $G foo.*\r\nRS+ ACC foo.> q 5\r\nRS+ ACC bar q 1\r\nRS+ ACC bar q 999999999\r\n\
           RS- $G foo.*\r\nRS- ACC foo.> q\r\n"[..]
    );
    assert_eq!(
        parse_all(&b).unwrap(),
        vec![
            RouteOp::Sub(sub("$G", "foo.*", None, 1)),
            RouteOp::Sub(sub("ACC", "foo.>", Some("q"), 5)),
            RouteOp::Sub(sub("ACC", "bar", Some("q"), 1)),
            RouteOp::Sub(sub("ACC", "bar", Some("q"), 999_999_999)),
            RouteOp::Unsub(sub("$G", "foo.*", None, 1)),
            RouteOp::Unsub(sub("ACC", "foo.>", Some("q"), 1)),
        ]
    );
}

/// What the delivery engine writes to a route (`encode_route_line`, the
/// payload, CRLF) parses back to the same message.
#[test]
fn delivery_encoding_round_trips() {
    let payloads = [
        Bytes::new(),
        Bytes::from_static(b"hello"),
        Bytes::from_static(b"NATS/1.0\r\nA: b\r\n\r\nbody"),
    ];
    let qs = [
        vec![],
        vec![Bytes::from_static(b"q1")],
        vec![Bytes::from_static(b"q1"), Bytes::from_static(b"workers.eu")],
    ];
    for payload in &payloads {
        let header_lens: &[Option<usize>] = if payload.starts_with(b"NATS/1.0") {
            &[None, Some(18), Some(payload.len())]
        } else {
            &[None, Some(0)]
        };
        for &header_len in header_lens {
            for reply in [None, Some(&b"_INBOX.abc.1"[..])] {
                for queues_in in &qs {
                    let m = Message {
                        subject: b"orders.new",
                        reply,
                        header_len,
                        payload,
                    };
                    let mut b = BytesMut::new();
                    encode_route_line(&mut b, "ACME", &m, queues_in);
                    b.extend_from_slice(payload);
                    b.extend_from_slice(b"\r\n");
                    let got = msg(&b);
                    assert_eq!(got.account(), b"ACME");
                    assert_eq!(got.subject(), b"orders.new");
                    assert_eq!(got.reply(), reply);
                    assert_eq!(got.queues(), &queues_in[..]);
                    assert_eq!(got.header_len(), header_len);
                    assert_eq!(got.payload(), &payload[..]);
                }
            }
        }
    }
}

/// Bytes nats-server v2.15.1 wrote to a route peer (captured on loopback):
/// the PONG to the peer's PING, the interest of a client with a plain and
/// two queue subscriptions, three messages for the peer's queue group `qq`
/// (one with headers), an RS- and a PING.
const NATS_SERVER_WIRE: &[u8] = b"RS+ $SYS $SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE\r\nPONG\r\n\
    RS+ $G foo.bar\r\nRS+ $G foo.bar grp 1\r\nRS+ $G foo.bar grp2 1\r\n\
    RMSG $G foo.bar + _INBOX.x qq 5\r\nhello\r\nRMSG $G foo.bar | qq 2\r\nhi\r\n\
    HMSG $G foo.bar + _INBOX.y qq 12 14\r\nNATS/1.0\r\n\r\nhi\r\nRS- $G foo.bar grp\r\nPING\r\n";

#[test]
fn parses_what_nats_server_sends() {
    let ops = parse_all(NATS_SERVER_WIRE).unwrap();
    assert_eq!(ops.len(), 10);
    assert_eq!(
        ops[0],
        RouteOp::Sub(sub("$SYS", "$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE", None, 1))
    );
    assert_eq!(ops[1], RouteOp::Pong);
    assert_eq!(ops[2], RouteOp::Sub(sub("$G", "foo.bar", None, 1)));
    assert_eq!(ops[3], RouteOp::Sub(sub("$G", "foo.bar", Some("grp"), 1)));
    assert_eq!(ops[4], RouteOp::Sub(sub("$G", "foo.bar", Some("grp2"), 1)));
    let m = |i: usize| match &ops[i] {
        RouteOp::Msg(m) => m.clone(),
        other => panic!("unexpected {other:?}"),
    };
    let (a, b, c) = (m(5), m(6), m(7));
    assert_eq!(
        (a.account(), a.subject(), a.reply(), queues(&a), a.payload()),
        (
            &b"$G"[..],
            &b"foo.bar"[..],
            Some(&b"_INBOX.x"[..]),
            vec![&b"qq"[..]],
            &b"hello"[..]
        )
    );
    assert_eq!(
        (b.reply(), queues(&b), b.payload()),
        (None, vec![&b"qq"[..]], &b"hi"[..])
    );
    assert_eq!(
        (c.reply(), queues(&c), c.header_len(), c.payload()),
        (
            Some(&b"_INBOX.y"[..]),
            vec![&b"qq"[..]],
            Some(12),
            &b"NATS/1.0\r\n\r\nhi"[..]
        )
    );
    assert_eq!(ops[8], RouteOp::Unsub(sub("$G", "foo.bar", Some("grp"), 1)));
    assert_eq!(ops[9], RouteOp::Ping);
}
