//! Child processes of the running binary, to kill with SIGKILL as a crash
//! would: a test binary runs one of its own `#[ignore]`d tests as a role
//! (`role`), an example runs itself (`this_binary`); and what `/proc` says
//! of a process.

use std::process::{Child, Command};

/// A command that runs the `#[ignore]`d test `test` of the current test
/// binary alone, with its output shown: the body of a child process. The
/// caller adds its environment and spawns it.
pub fn role(test: &str) -> Command {
    let mut command = this_binary();
    command.args([test, "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
    command
}

/// A command that runs the current binary again.
pub fn this_binary() -> Command {
    Command::new(std::env::current_exe().expect("the running binary"))
}

/// A child that is killed (SIGKILL) and reaped when dropped.
pub struct Killed(pub Child);

impl Killed {
    /// Kills the child now, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU time `pid` has used, user and system, in clock ticks (0 if unknown).
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// The resident memory of `pid`, in KiB (0 if unknown).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Clock ticks per second, for [`cpu_ticks`].
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}
