//! The `client_assertion` target: the checks are `castellan_fuzz::targets::client_assertion::run`,
//! which `tests/corpus.rs` also replays over the committed inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| castellan_fuzz::targets::client_assertion::run(data));
