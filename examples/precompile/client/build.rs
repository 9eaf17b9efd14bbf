fn main() {
    // `InventoryClient`, from the manifest the service exports.
    malla_build::precompile("malla.toml");
    // An older copy of that manifest, for the tests' signature-mismatch case.
    malla_build::Stubs::new()
        .manifest("tests/outdated.toml")
        .out_file("outdated_stubs.rs")
        .run();
}
