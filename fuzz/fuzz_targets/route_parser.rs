#![no_main]
//! Feed arbitrary bytes, split at an arbitrary point, to the route
//! protocol parser: it must never panic and must always make progress or
//! stop.

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rnats::protocol::{Limits, RouteParser};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize) % (data.len() + 1);
    let mut parser = RouteParser::new(Limits {
        max_control_line: 256,
        max_payload: 4096,
    });
    let mut buf = BytesMut::new();
    for chunk in [&data[..split], &data[split..]] {
        buf.extend_from_slice(chunk);
        while let Ok(Some(_)) = parser.next_op(&mut buf) {}
    }
});
