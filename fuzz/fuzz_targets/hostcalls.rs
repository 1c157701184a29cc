//! Fuzz every hostcall with arbitrary `(ptr, len, enum)` arguments from a real guest
//! (ABI reference §4, §5.3, §7); the checks live in `vessel_fuzz::hostcalls`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vessel_fuzz::hostcalls::hostcalls_oracle(data));
