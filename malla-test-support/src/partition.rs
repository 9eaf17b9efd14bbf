//! Cutting a node off the network: every packet to or from one loopback
//! address dropped by nftables (needs root and `nft`), so a node listening
//! there stops answering without closing anything, as a partition does.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The variable that lets a machine without root or `nft` skip partitions.
pub const SKIP_ENV: &str = "MALLA_SKIP_PARTITION_TESTS";

/// Drops every packet to or from one address while it lives, with an
/// nftables table of its own. Removed on drop.
pub struct Partition {
    table: String,
}

impl Partition {
    /// Cuts `ip` off; fails if nftables cannot be used here.
    pub fn isolate(ip: Ipv4Addr) -> Result<Self, String> {
        let table = format!("malla_test_{}_{}", std::process::id(), ip.to_string().replace('.', "_"));
        let script = format!(
            "table ip {table} {{\n\
               chain input {{ type filter hook input priority -10; policy accept;\n\
                 ip saddr {ip} drop\n ip daddr {ip} drop\n }}\n\
               chain output {{ type filter hook output priority -10; policy accept;\n\
                 ip saddr {ip} drop\n ip daddr {ip} drop\n }}\n\
             }}\n"
        );
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run nft: {e}"))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())?;
        let output = child.wait_with_output().map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(format!(
                "nft refused the rules: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(Partition { table })
    }

    /// Cuts `ip` off, or returns `None` when nftables cannot be used here
    /// and `MALLA_SKIP_PARTITION_TESTS` says to do without (saying so);
    /// panics otherwise, naming what is missing.
    pub fn isolate_or_skip(ip: Ipv4Addr, what: &str) -> Option<Self> {
        match Partition::isolate(ip) {
            Ok(partition) => Some(partition),
            Err(why) if std::env::var_os(SKIP_ENV).is_some() => {
                eprintln!("{what}: no partitions here ({why})");
                None
            }
            Err(why) => panic!("{what} cuts partitions with nftables ({why}): run it as root, or set {SKIP_ENV}=1"),
        }
    }

    /// Whether partitions can be cut here (see [`Partition::isolate_or_skip`]).
    pub fn available(what: &str) -> bool {
        Partition::isolate_or_skip(Ipv4Addr::new(127, 0, 0, 250), what).is_some()
    }

    /// Lifts the partition.
    pub fn heal(self) {}
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.table])
            .status();
    }
}
