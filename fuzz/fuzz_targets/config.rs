#![no_main]
//! Arbitrary bytes as a configuration file: the parser, `Options::apply`
//! and `Options::validate` must never panic, whatever the text (bad
//! numbers, durations, nesting, variables, includes).

use libfuzzer_sys::fuzz_target;
use rnats::config::{Options, parser};

fuzz_target!(|data: &[u8]| {
    // Configuration files are UTF-8; the file loader refuses anything else
    // before the parser sees it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = parser::parse_str_full(text, "fuzz.conf") {
        let mut opts = Options::default();
        if opts.apply_parsed(&parsed).is_ok() {
            let _ = opts.validate();
        }
    }
});
