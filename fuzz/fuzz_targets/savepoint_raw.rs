#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| statefs_backend::fuzzing::savepoint_raw(data));
