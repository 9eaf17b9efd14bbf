#![no_main]

// A services manifest, as `malla-build` reads it to write stubs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = malla_build::stubs_source(text, "fuzz.toml");
    }
});
