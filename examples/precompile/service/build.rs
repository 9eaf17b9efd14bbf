// The manifest of every service in src/lib.rs, for clients that precompile it.
fn main() {
    malla_build::export_manifest(["src/lib.rs"]);
}
