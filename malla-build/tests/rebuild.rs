//! Proves cargo re-runs the generator when, and only when, the manifest
//! changes, and that a bad manifest fails the build with its position: a
//! throwaway crate whose `build.rs` calls `malla_build::precompile` is built
//! with the real cargo (in its own target directory, so it does not wait on
//! the lock of the `cargo test` running this).

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

struct Probe {
    dir: PathBuf,
    target: PathBuf,
}

impl Probe {
    fn new() -> Probe {
        let dir = std::env::temp_dir().join(format!("malla-rebuild-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        let malla_build = workspace().join("malla-build");
        std::fs::write(
            dir.join("Cargo.toml"),
            format!(
                "[package]\nname = \"rebuild-probe\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n\
                 [build-dependencies]\nmalla-build = {{ path = {:?} }}\n\n[workspace]\n",
                malla_build.display().to_string()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("build.rs"),
            r#"use std::io::Write;
fn main() {
    let log = concat!(env!("CARGO_MANIFEST_DIR"), "/runs.log");
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    writeln!(log, "run").unwrap();
    malla_build::precompile("malla.toml");
}
"#,
        )
        .unwrap();
        std::fs::write(dir.join("src/lib.rs"), "").unwrap();
        // The workspace's lock: same versions, nothing to download.
        std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        Probe {
            dir,
            target: workspace().join("target").join("rebuild-probe"),
        }
    }

    fn manifest(&self, text: &str) {
        std::fs::write(self.dir.join("malla.toml"), text).unwrap();
    }

    fn build(&self) -> std::process::Output {
        Command::new(env!("CARGO"))
            .args(["build", "--offline", "--quiet"])
            .current_dir(&self.dir)
            .env("CARGO_TARGET_DIR", &self.target)
            .env_remove("RUSTFLAGS")
            .output()
            .expect("cargo runs")
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.join("runs.log")).map_or(0, |log| log.lines().count())
    }

    fn stubs(&self) -> String {
        let build = self.target.join("debug").join("build");
        let newest = std::fs::read_dir(&build)
            .unwrap()
            .filter_map(|entry| {
                let stubs = entry.ok()?.path().join("out").join("malla_stubs.rs");
                let modified = stubs.metadata().ok()?.modified().ok()?;
                Some((modified, stubs))
            })
            .max()
            .expect("the stubs were generated")
            .1;
        std::fs::read_to_string(newest).unwrap()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const FIRST: &str = "[[service]]\nname = \"First\"\n  [[service.method]]\n  name = \"ping\"\n";
const SECOND: &str = "[[service]]\nname = \"Second\"\n  [[service.method]]\n  name = \"ping\"\n";
const BROKEN: &str = "[[service]]\nname = \"Second\"\n  [[service.method]]\n  name = \"ping\"\n  returns = \"Vec<\"\n";

#[test]
fn the_generator_reruns_when_and_only_when_the_manifest_changes() {
    let probe = Probe::new();
    probe.manifest(FIRST);
    let first = probe.build();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(probe.runs(), 1);
    assert!(probe.stubs().contains("FirstClient"));

    // Nothing changed: the build script does not run.
    assert!(probe.build().status.success());
    assert_eq!(probe.runs(), 1, "the generator re-ran on an unchanged manifest");

    // The manifest changed: it runs, and the stubs follow.
    probe.manifest(SECOND);
    assert!(probe.build().status.success());
    assert_eq!(probe.runs(), 2);
    assert!(probe.stubs().contains("SecondClient"));

    // A bad manifest fails the build with its file, line and column.
    probe.manifest(BROKEN);
    let broken = probe.build();
    assert!(!broken.status.success());
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        stderr.contains("malla.toml:5:13: `Vec<` is not a Rust type"),
        "{stderr}"
    );
}
