//! Property tests: the parser never panics and never loops on any input.

use bytes::BytesMut;
use proptest::prelude::*;

use super::{ClientOp, Limits, Parser};

fn ops_from(chunks: &[Vec<u8>]) -> Result<usize, super::ProtocolError> {
    let mut p = Parser::new(Limits {
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_on_arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8)) {
        let _ = ops_from(&chunks);
    }

    #[test]
    fn never_panics_on_protocol_like_text(words in proptest::collection::vec(
        prop_oneof![
            Just(b"PUB ".to_vec()), Just(b"HPUB ".to_vec()), Just(b"SUB ".to_vec()),
            Just(b"UNSUB ".to_vec()), Just(b"PING".to_vec()), Just(b"CONNECT {}".to_vec()),
            Just(b"\r\n".to_vec()), Just(b" ".to_vec()), Just(b"foo.bar".to_vec()),
            Just(b"5".to_vec()), Just(b"99999999999999999999".to_vec()), Just(b"hello".to_vec()),
        ], 0..40)) {
        let _ = ops_from(&[words.concat()]);
    }

    /// A valid PUB split at any byte boundary parses to the same op.
    #[test]
    fn split_anywhere(payload in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..400) {
        let mut frame = format!("PUB a.b r {}\r\n", payload.len()).into_bytes();
        frame.extend_from_slice(&payload);
        frame.extend_from_slice(b"\r\n");
        let cut = cut.min(frame.len());
        let mut p = Parser::new(Limits::default());
        let mut buf = BytesMut::from(&frame[..cut]);
        let mut got = None;
        if let Some(op) = p.next_op(&mut buf).unwrap() { got = Some(op); }
        buf.extend_from_slice(&frame[cut..]);
        if got.is_none() { got = p.next_op(&mut buf).unwrap(); }
        match got {
            Some(ClientOp::Pub(p)) => prop_assert_eq!(p.payload(), &payload[..]),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}
