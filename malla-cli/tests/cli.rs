//! Proves the `malla` command against a live cluster on loopback (nodes on
//! their own runtimes, the command in its own process): it lists the nodes
//! and the service instances, prints a manifest `malla_build` precompiles to
//! the service's own wire identities, calls a method with JSON, and says
//! clearly what is wrong when it cannot.

use std::process::{Command, Output};

use malla::{AdminStatus, Node, ServeOptions};
use serde::{Deserialize, Serialize};

const COOKIE: &str = "cli-test-cookie-0123";

#[derive(Serialize, Deserialize)]
pub struct Stats {
    pub count: usize,
    pub mean: f64,
}

#[malla::service(global, vsn = "1.0.0")]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
    #[malla(idempotent)]
    async fn stats(&self, values: Vec<f64>) -> Option<Stats>;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn stats(&self, values: Vec<f64>) -> Option<Stats> {
        (!values.is_empty()).then(|| Stats {
            count: values.len(),
            mean: values.iter().sum::<f64>() / values.len() as f64,
        })
    }
}

/// node1 and node2 serve `Calculator` (node2's paused), node3 serves nothing.
struct Cluster {
    seed: std::net::SocketAddr,
    _nodes: Vec<Node>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.runtime.take().unwrap().shutdown_background();
    }
}

fn cluster(prefix: &str) -> Cluster {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (seed, nodes) = runtime.block_on(async {
        let listen = "127.0.0.1:0".parse().unwrap();
        let first = Node::builder(format!("{prefix}1"))
            .cookie(COOKIE)
            .listen(listen)
            .start()
            .await
            .unwrap();
        let seed = first.local_addr().unwrap();
        let mut nodes = vec![first];
        for i in 2..=3 {
            let node = Node::builder(format!("{prefix}{i}"))
                .cookie(COOKIE)
                .listen(listen)
                .seeds([seed])
                .start()
                .await
                .unwrap();
            nodes.push(node);
        }
        nodes[0]
            .serve_with(
                CalculatorServer::new(Calc),
                ServeOptions::default().metadata("zone", "eu"),
            )
            .await
            .unwrap();
        nodes[1].serve(CalculatorServer::new(Calc)).await.unwrap();
        nodes[1]
            .set_admin_status("Calculator", AdminStatus::Paused)
            .await
            .unwrap();
        for _ in 0..500 {
            if nodes.iter().all(|n| n.nodes().len() == 2) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        (seed, nodes)
    });
    Cluster {
        seed,
        _nodes: nodes,
        runtime: Some(runtime),
    }
}

/// Runs `malla` with the cluster's cookie in `MALLA_COOKIE`.
fn malla(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_malla"))
        .args(args)
        .env_remove("MALLA_CONFIG")
        .env_remove("MALLA_CONNECT")
        .env_remove("MALLA_COOKIE_FILE")
        .env("MALLA_COOKIE", COOKIE)
        .output()
        .expect("the command runs")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn stats_print_every_node_s_figures() {
    let cluster = cluster("stats");
    let seed = cluster.seed.to_string();
    for _ in 0..2 {
        ok(&malla(&["-c", &seed, "call", "Calculator", "add", "[1, 2]"]));
    }
    let table = ok(&malla(&["-c", &seed, "stats"]));
    println!("{table}");
    let row = |node: &str| {
        table
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .filter(|h| !h.is_empty())
        .collect();
    assert_eq!(header[..4], ["NODE", "UPTIME", "CONNS", "SERVED"]);
    for node in ["stats1", "stats2", "stats3"] {
        let row = row(node);
        assert_eq!(row.len(), header.len(), "a figure per column for {node}:\n{table}");
        assert!(row[1].ends_with('s') && row[2].parse::<u32>().unwrap() >= 2, "{table}");
    }
    // The calls ran on stats1, the only active instance; stats2's is paused.
    assert_eq!(row("stats1")[3], "2", "{table}");
    assert_eq!(row("stats2")[3], "0", "{table}");
    assert!(table.contains("stats1  Calculator  2"), "a row per service:\n{table}");

    let json: serde_json::Value = serde_json::from_str(&ok(&malla(&["-c", &seed, "stats", "--json"]))).unwrap();
    let nodes = json.as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{json:#}");
    assert_eq!(nodes[0]["node"], "stats1");
    assert_eq!(nodes[0]["services"][0]["service"], "Calculator");
    assert_eq!(nodes[0]["services"][0]["served"], 2);
    assert!(nodes.iter().all(|n| n["gossip"]["sent"].as_u64() > Some(0)), "{json:#}");
}

#[test]
fn nodes_and_services_are_listed_for_people_and_scripts() {
    let cluster = cluster("list");
    let seed = cluster.seed.to_string();
    let nodes = ok(&malla(&["--connect", &seed, "nodes"]));
    let lines: Vec<&str> = nodes.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NODE", "ADDRESS", "STATUS", "SERVICES"]
    );
    assert_eq!(lines.len(), 4, "{nodes}");
    assert!(
        lines[1].starts_with("list1") && lines[1].contains(&seed) && lines[1].contains("up"),
        "{nodes}"
    );
    assert!(lines[1].contains("Calculator"), "{nodes}");
    assert!(
        !nodes.contains("malla-cli"),
        "the command's own hidden node is listed:\n{nodes}"
    );

    let json: serde_json::Value = serde_json::from_str(&ok(&malla(&["-c", &seed, "nodes", "--json"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert_eq!(json[2]["node"], "list3");
    assert_eq!(json[2]["status"], "up");

    let services = ok(&malla(&["-c", &seed, "services"]));
    assert!(services.lines().next().unwrap().starts_with("SERVICE"), "{services}");
    let row = |node: &str| {
        services
            .lines()
            .find(|l| l.contains(node))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("list1"), ["Calculator", "list1", "1.0.0", "running", "zone=eu"]);
    assert_eq!(row("list2"), ["Calculator", "list2", "1.0.0", "paused"]);
}

#[test]
fn a_manifest_from_a_running_service_precompiles_to_its_identities() {
    let cluster = cluster("manifest");
    let seed = cluster.seed.to_string();
    let manifest = ok(&malla(&["-c", &seed, "manifest", "Calculator"]));
    assert!(manifest.contains("name = \"Calculator\""), "{manifest}");
    assert!(manifest.contains("args = [\"values: Vec<f64>\"]"), "{manifest}");
    let with_types = format!("use = [\"crate::Stats\"]\n{manifest}");
    let stubs = malla_build::stubs_source(&with_types, "from-cli.toml").unwrap();
    for method in CalculatorClient::MANIFEST.methods() {
        assert!(stubs.contains(&format!("{}u32", method.id())), "{stubs}");
        assert!(stubs.contains(&format!("{}u64", method.signature())), "{stubs}");
    }
}

#[test]
fn calls_take_and_give_json() {
    let cluster = cluster("call");
    let seed = cluster.seed.to_string();
    let sum = ok(&malla(&["-c", &seed, "call", "Calculator", "add", "[40, 2]"]));
    assert_eq!(sum.trim(), "42");
    let stats = ok(&malla(&[
        "-c",
        &seed,
        "--json",
        "call",
        "Calculator",
        "stats",
        "[[1.0, 2.0, 6.0]]",
    ]));
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!((stats["count"].as_u64(), stats["mean"].as_f64()), (Some(3), Some(3.0)));
}

#[test]
fn mistakes_get_a_clear_message_and_a_failure_status() {
    let cluster = cluster("bad");
    let seed = cluster.seed.to_string();
    let wrong = std::env::temp_dir().join(format!("malla-cli-wrong-cookie-{}", std::process::id()));
    std::fs::write(&wrong, "wrong-cookie-0123456789\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let wrong = wrong.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["nodes"], "pass --connect TARGET or set MALLA_CONNECT"),
        (
            &["-c", &seed, "call", "Calculator", "add", "[40,"],
            "the arguments are not JSON",
        ),
        (&["-c", &seed, "call", "Calculator", "add", "[\"x\", 2]"], "bad request"),
        (&["-c", &seed, "call", "Nope", "add", "[]"], "`Nope` is not available"),
        (
            &["-c", "no-such-host.invalid:7000", "--patience-ms", "1500", "nodes"],
            "no node answered at no-such-host.invalid:7000",
        ),
        // Said at once, not after the 10 s of patience.
        (
            &["-c", &seed, "--cookie-file", wrong, "nodes"],
            "wrong cookie; check MALLA_COOKIE_FILE, MALLA_COOKIE or --cookie-file",
        ),
    ];
    for (args, expected) in cases {
        let started = std::time::Instant::now();
        let output = malla(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        if expected.contains("cookie") {
            let took = started.elapsed();
            assert!(took < std::time::Duration::from_secs(5), "{args:?} took {took:?}");
        }
    }
}

#[test]
fn without_a_cookie_the_command_says_where_one_goes() {
    let output = Command::new(env!("CARGO_BIN_EXE_malla"))
        .args(["-c", "127.0.0.1:1", "nodes"])
        .env_remove("MALLA_CONFIG")
        .env_remove("MALLA_COOKIE_FILE")
        .env_remove("MALLA_COOKIE")
        .output()
        .expect("the command runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no cookie: set MALLA_COOKIE_FILE")
            && stderr.contains("--cookie-file")
            && !stderr.contains(".cookie("),
        "{stderr}"
    );
}

#[test]
fn a_new_cookie_is_random_and_strong() {
    let first = ok(&malla(&["cookie"]));
    let second = ok(&malla(&["cookie"]));
    assert_eq!(first.trim().len(), 64, "256 bits in hex: {first}");
    assert!(first.trim().chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(first, second);
}

#[test]
fn a_cookie_file_is_made_private_and_an_open_one_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("malla-cli-cookie-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cookie");
    std::fs::remove_file(&path).ok();
    ok(&malla(&["cookie", "--out", path.to_str().unwrap()]));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "readable by its owner only");
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim().len(), 64);
    let again = malla(&["cookie", "--out", path.to_str().unwrap()]);
    assert!(!again.status.success(), "an existing file is not overwritten");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = Command::new(env!("CARGO_BIN_EXE_malla"))
        .args([
            "--connect",
            "127.0.0.1:9",
            "--cookie-file",
            path.to_str().unwrap(),
            "nodes",
        ])
        .env_remove("MALLA_CONFIG")
        .env_remove("MALLA_COOKIE")
        .env_remove("MALLA_COOKIE_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&open.stderr);
    println!("{stderr}");
    assert!(!open.status.success());
    assert!(
        stderr.contains("may be read by its group or others") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn locks_names_and_voters_are_listed() {
    let cluster = cluster("coord");
    let seed = cluster.seed.to_string();
    let (guard, token) = cluster.runtime.as_ref().unwrap().block_on(async {
        let holder = &cluster._nodes[1];
        let guard = holder.lock("nightly-report").await.unwrap();
        let token = cluster._nodes[0]
            .register_name("calc-primary", "Calculator")
            .await
            .unwrap();
        (guard, token)
    });
    let locks = ok(&malla(&["-c", &seed, "locks"]));
    assert!(
        locks.contains("nightly-report") && locks.contains("coord2") && locks.contains(&guard.token().to_string()),
        "{locks}"
    );
    let names = ok(&malla(&["-c", &seed, "--json", "names"]));
    let names: serde_json::Value = serde_json::from_str(&names).unwrap();
    assert_eq!(names[0]["name"], "calc-primary");
    assert_eq!(names[0]["node"], "coord1");
    assert_eq!(names[0]["service"], "Calculator");
    assert_eq!(names[0]["token"], token.value());
    let voters = ok(&malla(&["-c", &seed, "voters"]));
    assert!(voters.contains("coord1") && voters.contains("leader"), "{voters}");
    // Adding a voter needs one that publishes a member id: a name that is
    // not a node of the cluster is refused clearly.
    let refused = malla(&["-c", &seed, "voters", "add", "nobody"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("nobody"), "{stderr}");
    drop(guard);
}

#[malla::service(global, singleton)]
pub trait Reporter {
    async fn run(&self) -> u32;
}

#[malla::service(global, singleton = "strict")]
pub trait Billing {
    async fn charge(&self) -> u32;
}

impl Reporter for Calc {
    async fn run(&self) -> u32 {
        1
    }
}

impl Billing for Calc {
    async fn charge(&self) -> u32 {
        2
    }
}

#[test]
fn singletons_are_listed_with_mode_owner_and_token() {
    let cluster = cluster("single");
    let seed = cluster.seed.to_string();
    let (gossip_owner, strict_owner, token) = cluster.runtime.as_ref().unwrap().block_on(async {
        for node in &cluster._nodes {
            node.serve(ReporterServer::new(Calc)).await.unwrap();
            node.serve(BillingServer::new(Calc)).await.unwrap();
        }
        let owner = |service: &'static str| {
            let nodes = &cluster._nodes;
            move || {
                nodes
                    .iter()
                    .find(|n| n.singletons().iter().any(|s| s.service == service && s.active))
                    .map(|n| (n.id().clone(), n.singletons()))
            }
        };
        for _ in 0..500 {
            let settled = cluster._nodes.iter().all(|n| n.get_nodes("Reporter").len() == 3);
            if settled && owner("Reporter")().is_some() && owner("Billing")().is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let (strict, statuses) = owner("Billing")().expect("a strict owner");
        let token = statuses.iter().find(|s| s.service == "Billing").unwrap().token.unwrap();
        (owner("Reporter")().expect("a gossip owner").0, strict, token)
    });
    let listed = ok(&malla(&["-c", &seed, "--json", "singletons"]));
    println!("{listed}");
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let row = |service: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["service"] == service)
            .cloned()
            .unwrap()
    };
    assert_eq!(row("Reporter")["mode"], "gossip");
    assert_eq!(row("Reporter")["owner"], gossip_owner.as_str());
    assert_eq!(row("Reporter")["standby"].as_array().unwrap().len(), 2);
    assert_eq!(row("Billing")["mode"], "strict");
    assert_eq!(row("Billing")["owner"], strict_owner.as_str());
    assert_eq!(row("Billing")["token"], token);
    for service in ["Reporter", "Billing"] {
        let since = row(service)["since_unix_ms"]
            .as_u64()
            .expect("the owner says since when");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        assert!(since <= now.as_millis() as u64 && since > now.as_millis() as u64 - 60_000);
    }
    let table = ok(&malla(&["-c", &seed, "singletons"]));
    assert!(
        table.contains("SERVICE") && table.contains("SINCE") && table.contains("Reporter") && table.contains("strict"),
        "{table}"
    );
    assert!(!table.contains("Calculator"), "not a singleton: {table}");
}
