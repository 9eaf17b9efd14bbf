use std::time::{Duration, Instant};

use chitchat::transport::UdpTransport;
use chitchat::{ChitchatConfig, ChitchatId, ChitchatMessage, Deserializable, FailureDetectorConfig};

use super::*;

/// Writes messages in chitchat's format, as a member holding the cookie
/// could: well-formed or not.
#[derive(Default)]
pub(crate) struct Craft(pub(crate) Vec<u8>);

/// One operation of a delta.
pub(crate) enum Op<'a> {
    Node(&'a NodeKey, u64, u64),
    Key(&'a str, u64),
    MaxVersion(u64),
}

impl Craft {
    pub(crate) fn header(kind: u8) -> Craft {
        let mut c = Craft::default();
        c.0.extend_from_slice(&MAGIC.to_le_bytes());
        c.0.extend_from_slice(&[PROTOCOL, kind]);
        c
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.0.extend_from_slice(&(s.len() as u16).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    fn node(&mut self, key: &NodeKey) -> &mut Self {
        self.str(&key.name);
        self.0.extend_from_slice(&key.generation.to_le_bytes());
        match key.gossip.ip() {
            IpAddr::V4(ip) => {
                self.0.push(4);
                self.0.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.0.push(6);
                self.0.extend_from_slice(&ip.octets());
            }
        }
        self.0.extend_from_slice(&key.gossip.port().to_le_bytes());
        self
    }

    pub(crate) fn digest(&mut self, nodes: &[NodeKey]) -> &mut Self {
        self.0.extend_from_slice(&(nodes.len() as u16).to_le_bytes());
        for node in nodes {
            self.node(node);
            for v in [1u64, 0, 1] {
                self.0.extend_from_slice(&v.to_le_bytes());
            }
        }
        self
    }

    pub(crate) fn ops(ops: &[Op<'_>]) -> Vec<u8> {
        let mut c = Craft::default();
        for op in ops {
            match op {
                Op::Node(key, last_gc, from) => {
                    c.0.push(0);
                    c.node(key);
                    c.0.extend_from_slice(&last_gc.to_le_bytes());
                    c.0.extend_from_slice(&from.to_le_bytes());
                }
                Op::Key(key, version) => {
                    c.0.push(1);
                    c.str(key).str("value");
                    c.0.extend_from_slice(&version.to_le_bytes());
                    c.0.push(0);
                }
                Op::MaxVersion(version) => {
                    c.0.push(2);
                    c.0.extend_from_slice(&version.to_le_bytes());
                }
            }
        }
        c.0
    }

    /// A delta carrying `ops` in one block, compressed or not.
    pub(crate) fn delta(&mut self, ops: &[u8], compressed: bool) -> &mut Self {
        if compressed {
            let block = zstd::bulk::compress(ops, 0).unwrap();
            self.0.push(1);
            self.0.extend_from_slice(&(block.len() as u16).to_le_bytes());
            self.0.extend_from_slice(&block);
        } else if !ops.is_empty() {
            self.0.push(2);
            self.0.extend_from_slice(&(ops.len() as u16).to_le_bytes());
            self.0.extend_from_slice(ops);
        }
        self.0.push(0);
        self
    }

    /// A delta of `blocks` compressed blocks that each inflate to 64 KiB.
    pub(crate) fn bomb(&mut self, blocks: usize) -> &mut Self {
        let block = zstd::bulk::compress(&[0u8; MAX_BLOCK], 19).unwrap();
        for _ in 0..blocks {
            self.0.push(1);
            self.0.extend_from_slice(&(block.len() as u16).to_le_bytes());
            self.0.extend_from_slice(&block);
        }
        self.0.push(0);
        self
    }
}

pub(crate) fn key(name: &str, generation: u64, port: u16) -> NodeKey {
    NodeKey {
        name: name.to_owned(),
        generation,
        gossip: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// Messages a member holding the cookie could send to `me` to stop its
/// gossip, with the rule each breaks.
pub(crate) fn attacks(me: &NodeKey, other: &NodeKey) -> Vec<(&'static str, Vec<u8>, Invalid)> {
    // Uncompressed, as chitchat writes so small a block.
    let ack = |ops: &[Op<'_>]| Craft::header(2).delta(&Craft::ops(ops), false).0.clone();
    let many: Vec<NodeKey> = (0..1100)
        .map(|i| key(&format!("invented-node-{i:04}"), 1, 7000))
        .collect();
    vec![
        (
            "a lower maximum version after keys (chitchat asserts)",
            ack(&[
                Op::Node(other, 0, 0),
                Op::Key("a", 5),
                Op::Key("b", 6),
                Op::MaxVersion(1),
            ]),
            Invalid::Versions("a maximum version after keys"),
        ),
        (
            "a delta about the receiver",
            ack(&[Op::Node(me, 0, 0), Op::Key("status", 99)]),
            Invalid::AboutUs,
        ),
        (
            "key versions that fall",
            ack(&[Op::Node(other, 0, 0), Op::Key("a", 5), Op::Key("b", 4)]),
            Invalid::Versions("key versions do not rise"),
        ),
        (
            "1100 invented nodes",
            Craft::header(0).digest(&many).str("malla").0.clone(),
            Invalid::TooManyNodes,
        ),
        (
            "a delta that inflates past the bound",
            Craft::header(2).bomb(40).0.clone(),
            Invalid::Inflates,
        ),
    ]
}

#[test]
fn what_chitchat_writes_passes_and_each_attack_is_refused() {
    let (me, other) = (key("me", 1, 7000), key("other", 1, 7001));
    let good = [
        Craft::header(0)
            .digest(&[me.clone(), other.clone()])
            .str("malla")
            .0
            .clone(),
        Craft::header(1)
            .digest(std::slice::from_ref(&other))
            .delta(
                &Craft::ops(&[Op::Node(&other, 0, 0), Op::Key("a", 1), Op::Key("b", 3)]),
                true,
            )
            .0
            .clone(),
        Craft::header(2)
            .delta(&Craft::ops(&[Op::Node(&other, 0, 2), Op::MaxVersion(7)]), false)
            .0
            .clone(),
        Craft::header(2).delta(&[], false).0.clone(),
        Craft::header(3).0,
    ];
    for message in &good {
        // The format is chitchat's own: its reader takes what we craft.
        ChitchatMessage::deserialize(&mut message.as_slice()).expect("chitchat reads it");
        check(message, &me).expect("a message as chitchat writes it passes");
    }
    let mut known = KnownNodes::new(Duration::from_secs(60), Instant::now());
    for (what, message, why) in attacks(&me, &other) {
        let outcome = check(&message, &me).and_then(|named| known.admit(&named, Instant::now()));
        assert_eq!(outcome, Err(why), "{what}");
    }
    for (bad, why) in [
        (&b"\x53\xb0\x00"[..], "cut short"),
        (&b"\x00\x00\x00\x00"[..], "not chitchat's magic and protocol"),
        (&[good[4].as_slice(), b"x"].concat()[..], "bytes after the message"),
    ] {
        assert_eq!(check(bad, &me), Err(Invalid::Malformed(why)));
    }
}

#[test]
fn the_node_budget_forgets_the_unheard_and_bounds_the_rest() {
    let now = Instant::now();
    let mut known = KnownNodes::new(Duration::from_secs(80), now);
    let batch = |from: usize| -> Vec<NodeKey> { (from..from + 800).map(|i| key(&format!("n{i:03}"), 1, 1)).collect() };
    assert_eq!(known.admit(&batch(0), now), Ok(()));
    // Named again: not counted twice.
    assert_eq!(known.admit(&batch(0), now), Ok(()));
    assert!(known.bytes <= DIGEST_BUDGET);
    assert_eq!(known.admit(&batch(800), now), Err(Invalid::TooManyNodes));
    assert_eq!(known.nodes.len(), 800, "a refused message records nothing");
    let later = now + Duration::from_secs(81);
    assert_eq!(known.admit(&batch(800), later), Ok(()), "the unheard are forgotten");
    assert_eq!(known.nodes.len(), 800);
}

/// The first attack, sent to a real chitchat without our check (on its
/// own UDP transport), ends its gossip task: what the check exists for.
#[tokio::test]
async fn unchecked_chitchat_dies_of_the_first_attack() {
    let rogue = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let (me, other) = (key("me", 1, port), key("other", 1, rogue.local_addr().unwrap().port()));
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new(me.name.clone(), me.generation, me.gossip),
        cluster_id: "malla".into(),
        gossip_interval: Duration::from_millis(50),
        listen_addr: me.gossip,
        seed_nodes: Vec::new(),
        failure_detector_config: FailureDetectorConfig::default(),
        marked_for_deletion_grace_period: Duration::from_secs(60),
        catchup_callback: None,
        extra_liveness_predicate: None,
    };
    let handle = chitchat::spawn_chitchat(config, Vec::new(), &UdpTransport)
        .await
        .unwrap();
    // The receiver must know the node first: a digest naming it.
    let syn = Craft::header(0)
        .digest(std::slice::from_ref(&other))
        .str("malla")
        .0
        .clone();
    let (what, attack, _) = attacks(&me, &other).remove(0);
    for message in [syn, attack] {
        rogue.send_to(&message, me.gossip).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), handle.termination_watcher()).await;
    println!("{what}: chitchat's task ended with {ended:?}");
    assert!(matches!(ended, Ok(Err(_))), "the unchecked task dies: {ended:?}");
}
