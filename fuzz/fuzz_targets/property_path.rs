//! Fuzz the property-path codec (ABI reference §5.2); the checks live in
//! `vessel_fuzz::codecs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vessel_fuzz::codecs::path_oracle(data));
