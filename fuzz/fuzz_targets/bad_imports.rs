//! Fuzz `Plugin::load` with modules whose imports and exports are wrong (ABI reference
//! §1.1, §3); the checks live in `vessel_fuzz::bad_imports`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vessel_fuzz::bad_imports::bad_imports_oracle(data));
