//! Engine operations (schedule, reschedule, upsert, cancel, clock moves)
//! decoded from bytes and checked step by step against the reference model
//! in `timewheel::model`; any divergence panics.
//!
//! Run (nightly, from the repository root):
//! `nice -n 19 cargo +nightly fuzz run -s none engine_ops`
//! (docs/testing.md has the options, the speed and the runs so far).
//! cargo-fuzz builds with `--cfg fuzzing`, which gives the engine 2 shards
//! of 5 levels × 130 slots instead of 32 of 3 × 3600 (src/wheel/level.rs):
//! the same code, cheap to build per input, with level boundaries in reach.
//! Seeds: `fuzz/corpus/engine_ops/`, written by
//! `cargo test --test engine_fuzz_corpus -- --ignored write_seed_corpus`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    timewheel::model::check_ops(data);
});
