//! Fuzz sequences of stream events against real SDK-built guests (ABI reference §3, §11);
//! the checks live in `vessel_fuzz::stream_events`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vessel_fuzz::stream_events::stream_events_oracle(data));
