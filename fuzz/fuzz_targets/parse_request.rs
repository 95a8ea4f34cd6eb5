//! Fuzzes request parsing, command typing and reply encoding.
//!
//! Run (needs nightly and cargo-fuzz): `cargo +nightly fuzz run parse_request`

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    timewheel::fuzzing::check_parse(data);
});
