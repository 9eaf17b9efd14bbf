//! `malla`: look at a running cluster, and call it, from a hidden node (one
//! that calls but is never listed and advertises nothing).
//!
//! ```text
//! export MALLA_COOKIE_FILE=/run/secrets/malla-cookie   # or MALLA_COOKIE
//! malla --connect 127.0.0.1:7000 nodes
//! malla services
//! malla manifest Calculator > malla.toml        # for malla_build::precompile
//! malla call Calculator add '[40, 2]'
//! malla stats                                     # every node's calls, requests, errors, gossip
//! malla cookie --out cookie                       # a new random cookie, in a file only you can read
//! ```
//!
//! The cookie is never a flag: a command line is visible to every user of
//! the machine (`ps`). It comes from `--cookie-file`, `MALLA_COOKIE_FILE`,
//! `MALLA_COOKIE` or the `MALLA_CONFIG` file.
//!
//! Settings come from flags, else from `MALLA_CONNECT`, `MALLA_COOKIE`, … and
//! the `MALLA_CONFIG` file, as for any node. Output is for people; `--json`
//! prints JSON for scripts.

mod output;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use malla::{CallOptions, Node, NodeConfig, NodeId, NodeStats};

#[derive(Parser)]
#[command(
    name = "malla",
    version,
    about = "Look at and call a malla cluster from a hidden node"
)]
struct Cli {
    /// Where to find the cluster: an address, `host:port` or an SRV name
    /// (repeat for several). Default: MALLA_CONNECT.
    #[arg(short, long = "connect", value_name = "TARGET")]
    connect: Vec<String>,
    /// A file holding the cluster's cookie (trailing whitespace ignored).
    /// Default: MALLA_COOKIE_FILE, MALLA_COOKIE, or the MALLA_CONFIG file.
    #[arg(long = "cookie-file", value_name = "PATH")]
    cookie_file: Option<std::path::PathBuf>,
    /// DNS server for names (`ip:port`). Default: the system's.
    #[arg(long = "dns-server", value_name = "ADDR")]
    dns_servers: Vec<SocketAddr>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// How long the view of the cluster must stay unchanged before the
    /// command answers, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    settle_ms: u64,
    /// How long to wait for the cluster at most, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    patience_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints a new random cookie (256 bits, hex) for a new cluster, or
    /// writes it to a new file readable by its owner only.
    Cookie {
        /// Creates this file (it must not exist) with mode 0600 and writes
        /// the cookie there instead of printing it.
        #[arg(long, value_name = "PATH")]
        out: Option<std::path::PathBuf>,
    },
    /// The nodes of the cluster: address, status, services.
    Nodes,
    /// Every service instance: node, version, status.
    Services,
    /// The manifest of a running service, for `malla_build::precompile`.
    Manifest {
        /// The service's wire name.
        service: String,
    },
    /// Every node's figures since it started: requests served, in flight,
    /// errors, calls made, failovers, connections and gossip.
    Stats,
    /// The locks the consensus group holds: holder, fencing token, lease.
    Locks,
    /// The global names: holder, service, fencing token.
    Names,
    /// The singleton services: mode, owner, fencing token (strict mode),
    /// the nodes standing by.
    Singletons,
    /// The consensus group: leader, term, voters; or a change of its voters.
    Voters {
        #[command(subcommand)]
        change: Option<VoterChange>,
    },
    /// Calls a method with JSON arguments and prints the JSON reply.
    Call {
        /// The service's wire name.
        service: String,
        /// The method.
        method: String,
        /// The arguments, a JSON array: `'[40, 2]'`.
        #[arg(default_value = "[]")]
        args: String,
        /// Deadline of the call, in milliseconds.
        #[arg(long, default_value_t = 15_000, value_name = "MS")]
        timeout_ms: u64,
    },
}

#[derive(Subcommand)]
enum VoterChange {
    /// Makes a node a voter (it catches up first; joint consensus).
    Add {
        /// The node's name.
        node: String,
    },
    /// Removes a voter (one that died for good, or to shrink the group).
    Remove {
        /// The node's name.
        node: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("malla: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Command::Cookie { out } = &cli.command {
        return match out {
            Some(path) => write_cookie(path),
            None => {
                println!("{}", new_cookie());
                Ok(())
            }
        };
    }
    let node = join(&cli).await?;
    let result = match &cli.command {
        Command::Nodes => {
            settle(&node, &cli).await?;
            Ok(output::nodes(&node.members(), cli.json))
        }
        Command::Services => {
            settle(&node, &cli).await?;
            Ok(output::services(&node, cli.json))
        }
        Command::Manifest { service } => manifest(&node, service).await,
        Command::Stats => {
            settle(&node, &cli).await?;
            Ok(output::stats(&stats(&node).await, cli.json))
        }
        Command::Locks => {
            settle(&node, &cli).await?;
            node.locks()
                .await
                .map(|l| output::locks(&l, cli.json))
                .map_err(|e| e.to_string())
        }
        Command::Singletons => {
            settle(&node, &cli).await?;
            output::singletons(&node, cli.json).await
        }
        Command::Names => {
            settle(&node, &cli).await?;
            node.names()
                .await
                .map(|n| output::names(&n, cli.json))
                .map_err(|e| e.to_string())
        }
        Command::Voters { change } => {
            settle(&node, &cli).await?;
            let status = match change {
                None => node.group_status().await,
                Some(VoterChange::Add { node: name }) => node.add_voter(&NodeId::from(name.as_str())).await,
                Some(VoterChange::Remove { node: name }) => node.remove_voter(&NodeId::from(name.as_str())).await,
            };
            status.map(|s| output::group(&s, cli.json)).map_err(|e| e.to_string())
        }
        Command::Cookie { .. } => unreachable!("answered without joining"),
        Command::Call {
            service,
            method,
            args,
            timeout_ms,
        } => call(&node, &cli, service, method, args, *timeout_ms).await,
    };
    node.shutdown().await;
    println!("{}", result?);
    Ok(())
}

/// A hidden node, configured like any other and overridden by the flags.
async fn join(cli: &Cli) -> Result<Node, String> {
    let mut config = NodeConfig::from_env().map_err(|e| e.to_string())?;
    if !cli.connect.is_empty() {
        config.connect = cli.connect.clone();
    }
    if config.connect.is_empty() {
        return Err("no cluster to look at: pass --connect TARGET or set MALLA_CONNECT".into());
    }
    if let Some(file) = &cli.cookie_file {
        config.cookie = None;
        config.cookie_file = Some(file.clone());
    }
    if config.cookie.is_none() && config.cookie_file.is_none() {
        return Err(
            "no cookie: set MALLA_COOKIE_FILE (a file holding the cluster's cookie) or MALLA_COOKIE, or pass --cookie-file PATH".into(),
        );
    }
    if !cli.dns_servers.is_empty() {
        config.dns_servers = cli.dns_servers.clone();
    }
    config.name = Some(format!("malla-cli-{}", std::process::id()));
    config.listen = None;
    config.hidden = Some(true);
    let targets = config.connect.clone();
    let node = config
        .builder()
        .map_err(|e| e.to_string())?
        .start()
        .await
        .map_err(|e| e.to_string())?;
    // A handshake with each target says at once if the cookie is wrong,
    // where gossip under another cookie would only stay silent.
    let mut refused = None;
    for target in &targets {
        match node.cluster_connect(target).await {
            Ok(_) => return Ok(node),
            Err(err @ malla::Error::Unauthorized { .. }) => refused = Some(err),
            Err(_) => {}
        }
    }
    match refused {
        Some(err) => Err(format!("{err}; check MALLA_COOKIE_FILE, MALLA_COOKIE or --cookie-file")),
        // Not reachable yet: gossip and the reconnect loop keep trying.
        None => Ok(node),
    }
}

/// A new cookie in a new file at `path`, created readable and writable by
/// its owner only (never widened by the umask, never left behind open to
/// others: `malla cookie > f` would make the file under the umask first).
fn write_cookie(path: &std::path::Path) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create the cookie file {}: {e}", path.display()))?;
    writeln!(file, "{}", new_cookie())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write the cookie file {}: {e}", path.display()))
}

/// 256 random bits, as hex: a cookie no one guesses.
fn new_cookie() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long a member gossip lists as down may delay the answer: a node that
/// joins is down until the failure detector has heard it a few times.
const DOWN_GRACE: Duration = Duration::from_secs(3);

/// Waits until a node answers and the view of the cluster (members, their
/// status and services, instances) has not changed for `--settle-ms`, with
/// every member up or `DOWN_GRACE` passed: gossip brings a cluster in over a
/// few rounds.
async fn settle(node: &Node, cli: &Cli) -> Result<(), String> {
    let patience = Duration::from_millis(cli.patience_ms);
    let quiet = Duration::from_millis(cli.settle_ms);
    let started = tokio::time::Instant::now();
    let view = || {
        let members = node.members();
        let instances: Vec<_> = members
            .iter()
            .flat_map(|m| m.services.iter())
            .flat_map(|s| node.get_instances(s))
            .map(|i| (i.node, i.status))
            .collect();
        (members, instances)
    };
    let (mut last, mut since) = (view(), started);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = view();
        let someone_up = now.0.iter().any(|m| m.status == malla::MemberStatus::Up);
        let all_up = now.0.iter().all(|m| m.status == malla::MemberStatus::Up);
        if now != last {
            (last, since) = (now, tokio::time::Instant::now());
        } else if someone_up && since.elapsed() >= quiet && (all_up || started.elapsed() >= DOWN_GRACE) {
            return Ok(());
        }
        if started.elapsed() > patience {
            return match someone_up {
                true => Ok(()),
                false => Err(format!(
                    "no node answered at {} within {patience:?} (wrong address or cookie?)",
                    cli.connect.join(", ")
                )),
            };
        }
    }
}

/// Every visible member's figures, asked of each at once; a member that
/// does not answer is listed with why.
async fn stats(node: &Node) -> Vec<(NodeId, Result<NodeStats, malla::Error>)> {
    let mut asks = tokio::task::JoinSet::new();
    for member in node.members() {
        if member.status != malla::MemberStatus::Up {
            let down = malla::Error::NodeDown {
                node: member.node.clone(),
            };
            asks.spawn(async move { (member.node, Err(down)) });
            continue;
        }
        let node = node.clone();
        asks.spawn(async move {
            let stats = node.stats_of(&member.node).await;
            (member.node, stats)
        });
    }
    let mut all = asks.join_all().await;
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

async fn manifest(node: &Node, service: &str) -> Result<String, String> {
    node.wait_for_services(&[service], Duration::from_secs(5))
        .await
        .map_err(|_| format!("no running node publishes `{service}`"))?;
    let manifest = node
        .service_manifest(service)
        .await
        .ok_or_else(|| format!("the nodes running `{service}` publish no manifest for it"))?;
    // The service may have left since the manifest was read.
    let from = node
        .get_nodes(service)
        .into_iter()
        .next()
        .ok_or_else(|| format!("`{service}` left the cluster while its manifest was read"))?;
    Ok(output::manifest(&manifest, &from))
}

async fn call(
    node: &Node,
    cli: &Cli,
    service: &str,
    method: &str,
    args: &str,
    timeout_ms: u64,
) -> Result<String, String> {
    let args: serde_json::Value =
        serde_json::from_str(args).map_err(|e| format!("the arguments are not JSON ({e}): `{args}`"))?;
    let timeout = Duration::from_millis(timeout_ms);
    if node
        .wait_for_services(&[service], timeout.min(Duration::from_secs(5)))
        .await
        .is_err()
    {
        return Err(format!(
            "`{service}` is not available on any node reached through {}",
            cli.connect.join(", ")
        ));
    }
    let reply = node
        .call_json(service, method, &args, CallOptions::default().timeout(timeout))
        .await
        .map_err(|e| e.to_string())?;
    Ok(if cli.json {
        reply.to_string()
    } else {
        serde_json::to_string_pretty(&reply).expect("a JSON value prints")
    })
}
