#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| malla_runtime::fuzzing::handshake(data, true));
