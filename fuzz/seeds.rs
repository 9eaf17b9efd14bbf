//! Writes each target's seed corpus: `cargo run --bin seeds -- DIR`
//! (`fuzz/run` does it before fuzzing).

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    for (i, (target, bytes)) in malla_runtime::fuzzing::seeds().into_iter().enumerate() {
        let at = dir.join(target);
        std::fs::create_dir_all(&at).expect("the corpus directory");
        std::fs::write(at.join(format!("seed-{i}")), bytes).expect("a seed file");
    }
}
