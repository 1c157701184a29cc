//! Fuzz the pair-map codec (ABI reference §5.1); the checks live in `vessel_fuzz::codecs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vessel_fuzz::codecs::pairs_oracle(data));
