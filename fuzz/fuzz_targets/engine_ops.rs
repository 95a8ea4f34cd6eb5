//! Engine operations (schedule, reschedule, upsert, cancel, clock moves)
//! decoded from bytes and checked step by step against the reference model
//! in `timewheel::model`; any divergence panics.
//!
//! Run (nightly, from the repository root): `cargo +nightly fuzz run engine_ops`.
//! Seeds: `fuzz/corpus/engine_ops/`, written by
//! `cargo test --test engine_fuzz_corpus -- --ignored write_seed_corpus`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    timewheel::model::check_ops(data);
});
