#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| statefs_backend::fuzzing::checkpoint_metadata(data));
