//! Fuzzes request parsing, command typing and reply encoding.
//!
//! Run (needs nightly and cargo-fuzz), from the repository root:
//! `nice -n 19 cargo +nightly fuzz run -s none parse_request`
//! (docs/testing.md has the options, the speed and the runs so far).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    timewheel::fuzzing::check_parse(data);
});
