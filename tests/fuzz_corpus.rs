//! Replays the fuzz corpus (`fuzz/corpus/parse_request/`) and random
//! protocol-shaped streams through the fuzz check, so plain `cargo test`
//! exercises the same properties as `cargo fuzz run parse_request`.
//!
//! Run: `cargo test --test fuzz_corpus`

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use timewheel::fuzzing::check_parse;

#[test]
fn corpus_replays_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse_request");
    let mut count = 0;
    for entry in fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        let data = fs::read(&path).expect("corpus file");
        check_parse(&data);
        count += 1;
    }
    assert!(count > 0, "no corpus files in {}", dir.display());
}

/// Pieces that reach deep into the parser when glued together at random.
const TOKENS: &[&[u8]] = &[
    b"*",
    b"$",
    b"\r\n",
    b"\r",
    b"\n",
    b" ",
    b"\t",
    b"\"",
    b"'",
    b"\\",
    b"\\x4",
    b"1",
    b"2",
    b"3",
    b"16",
    b"17",
    b"-1",
    b"0",
    b"4096",
    b"4097",
    b"PING",
    b"ADD",
    b"addat",
    b"HELLO",
    b"AUTH",
    b"CONFIG",
    b"GET",
    b"REPLACE",
    b"o:1",
    b"31622400000",
    b"*1\r\n$4\r\nPING\r\n",
    b"\x7f",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 2_000 }))]

    #[test]
    fn token_streams(tokens in proptest::collection::vec(0..TOKENS.len(), 0..64), first in any::<u8>()) {
        let mut data = vec![first];
        for i in tokens {
            data.extend_from_slice(TOKENS[i]);
        }
        check_parse(&data);
    }

    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_parse(&data);
    }
}
