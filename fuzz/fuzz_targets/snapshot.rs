#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| statefs::fuzzing::snapshot(data));
