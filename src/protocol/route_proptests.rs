//! Property tests for the route parser: it never panics nor loops on any
//! input, and what our encoders write (RS+/RS- here, RMSG/HMSG in the
//! delivery engine) parses back to what was encoded, however it is split.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::route::{RouteOp, RouteParser, RouteSub, encode_sub, encode_unsub, route_limits};
use super::{Limits, ProtocolError};
use crate::deliver::encode_route_line;
use crate::outbound::Message;

fn ops_from(chunks: &[Vec<u8>]) -> Result<usize, ProtocolError> {
    let mut p = RouteParser::new(Limits {
        max_control_line: 128,
        max_payload: 1024,
    });
    let mut buf = BytesMut::new();
    let mut n = 0;
    for c in chunks {
        buf.extend_from_slice(c);
        // Each op consumes input, so this loop is bounded by the input size.
        while let Some(_op) = p.next_op(&mut buf)? {
            n += 1;
        }
    }
    Ok(n)
}

/// A protocol token: no blanks or line ends, never empty.
fn token() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        proptest::sample::select(b"abcXYZ0189_-.$*>+|".to_vec()),
        1..12,
    )
}

/// One operation we send to a route, in a form that can be compared with
/// what the parser hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Sub(RouteSub),
    Unsub(RouteSub),
    Msg {
        account: Vec<u8>,
        subject: Vec<u8>,
        reply: Option<Vec<u8>>,
        queues: Vec<Vec<u8>>,
        header_len: Option<usize>,
        payload: Vec<u8>,
    },
}

fn sent() -> impl Strategy<Value = Sent> {
    let sub = (
        token(),
        token(),
        proptest::option::of((token(), 1u32..=999_999_999)),
    )
        .prop_map(|(a, s, q)| {
            Sent::Sub(RouteSub {
                account: a.into(),
                subject: s.into(),
                weight: q.as_ref().map_or(1, |q| q.1),
                queue: q.map(|q| q.0.into()),
            })
        });
    let unsub = (token(), token(), proptest::option::of(token())).prop_map(|(a, s, q)| {
        Sent::Unsub(RouteSub {
            account: a.into(),
            subject: s.into(),
            queue: q.map(Bytes::from),
            weight: 1,
        })
    });
    let msg = (
        token(),
        token(),
        proptest::option::of(token()),
        proptest::collection::vec(token(), 0..5),
        proptest::option::of(0usize..400),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(
            |(account, subject, reply, queues, hdr, payload)| Sent::Msg {
                account,
                subject,
                reply,
                queues,
                header_len: hdr.map(|h| h.min(payload.len())),
                payload,
            },
        );
    prop_oneof![sub, unsub, msg]
}

fn encode(b: &mut BytesMut, op: &Sent) {
    match op {
        Sent::Sub(s) => encode_sub(
            b,
            &s.account,
            &s.subject,
            s.queue.as_deref().map(|q| (q, s.weight)),
        ),
        Sent::Unsub(s) => encode_unsub(b, &s.account, &s.subject, s.queue.as_deref()),
        Sent::Msg {
            account,
            subject,
            reply,
            queues,
            header_len,
            payload,
        } => {
            let payload = Bytes::copy_from_slice(payload);
            let queues: Vec<Bytes> = queues.iter().map(|q| Bytes::copy_from_slice(q)).collect();
            let m = Message {
                subject,
                reply: reply.as_deref(),
                header_len: *header_len,
                payload: &payload,
            };
            // The account is a `&str` there: tokens are ASCII.
            let account = std::str::from_utf8(account).unwrap_or_default();
            encode_route_line(b, account, &m, &queues);
            b.extend_from_slice(&payload);
            b.extend_from_slice(b"\r\n");
        }
    }
}

fn received(op: RouteOp) -> Option<Sent> {
    Some(match op {
        RouteOp::Sub(s) => Sent::Sub(s),
        RouteOp::Unsub(s) => Sent::Unsub(s),
        RouteOp::Msg(m) => Sent::Msg {
            account: m.account().to_vec(),
            subject: m.subject().to_vec(),
            reply: m.reply().map(<[u8]>::to_vec),
            queues: m.queues().iter().map(|q| q.to_vec()).collect(),
            header_len: m.header_len(),
            payload: m.payload().to_vec(),
        },
        _ => return None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_on_arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8)) {
        let _ = ops_from(&chunks);
    }

    #[test]
    fn never_panics_on_protocol_like_text(words in proptest::collection::vec(
        prop_oneof![
            Just(b"RMSG ".to_vec()), Just(b"HMSG ".to_vec()), Just(b"RS+ ".to_vec()),
            Just(b"RS- ".to_vec()), Just(b"LS+ ".to_vec()), Just(b"LS- ".to_vec()),
            Just(b"PING".to_vec()), Just(b"INFO {}".to_vec()), Just(b"-ERR 'x'".to_vec()),
            Just(b"\r\n".to_vec()), Just(b"\n".to_vec()), Just(b" ".to_vec()), Just(b"\t".to_vec()),
            Just(b"$G".to_vec()), Just(b"foo.bar".to_vec()), Just(b"+".to_vec()), Just(b"|".to_vec()),
            Just(b"0".to_vec()), Just(b"5".to_vec()), Just(b"99999999999999999999".to_vec()),
            Just(b"hello".to_vec()),
        ], 0..40)) {
        let _ = ops_from(&[words.concat()]);
    }

    /// Encoded ops, one after another, parse back to the same ops wherever
    /// the stream is cut.
    #[test]
    fn encode_parse_round_trip(ops in proptest::collection::vec(sent(), 1..6), cut in any::<proptest::sample::Index>()) {
        let mut wire = BytesMut::new();
        for op in &ops {
            encode(&mut wire, op);
        }
        let cut = cut.index(wire.len() + 1);
        let mut p = RouteParser::new(route_limits(Limits::default()));
        let mut buf = BytesMut::new();
        let mut got = vec![];
        for chunk in [&wire[..cut], &wire[cut..]] {
            buf.extend_from_slice(chunk);
            while let Some(op) = p.next_op(&mut buf).unwrap() {
                got.push(received(op));
            }
        }
        prop_assert!(buf.is_empty());
        let want: Vec<Option<Sent>> = ops.into_iter().map(Some).collect();
        prop_assert_eq!(got, want);
    }
}
