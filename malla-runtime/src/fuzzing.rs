//! Entry points for the fuzz targets (`fuzz/` in the repository, run with
//! `cargo fuzz`): each takes bytes as the network or a file would give
//! them, runs one decoder over them, and panics only where the decoder
//! broke a promise. Built only with the `fuzzing` feature; not API.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chitchat::{ChitchatMessage, Deserializable};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Decoder;

use crate::NodeConfig;
use crate::discovery::envelope::{Header, Reassembly, ReplayGuard};
use crate::discovery::sealed_udp::Sealer;
use crate::discovery::validate::{self, KnownNodes, NodeKey};
use crate::handshake::{self, Cookie, Keyring, plain_identity};
use crate::wire::{self, FrameCodec, RecordOpener, bounded};

const COOKIE: &str = "fuzzing-cookie-0123456789";

/// Frames as a connection's reader cuts them, then each frame's header.
pub fn frames(data: &[u8]) {
    let mut codec = FrameCodec::new(1 << 20);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        let _ = wire::decode(&frame);
    }
}

/// Sealed records under a fixed key (the seeds are sealed with it, so the
/// fuzzer reaches past the cipher), moving to the next key every four.
pub fn records(data: &[u8]) {
    let mut opener = RecordOpener::new(&[7; 32], 4);
    let (mut sealed, mut plain) = (BytesMut::from(data), BytesMut::new());
    let _ = opener.open(&mut sealed, &mut plain);
    assert!(plain.len() <= data.len(), "a record opened to more than it held");
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

/// One side of the handshake, `data` being all the other side sends.
pub fn handshake(data: &[u8], dialer: bool) {
    runtime().block_on(async {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let _ = theirs.write_all(data).await;
        let _ = theirs.shutdown().await;
        let keyring = Keyring::new(Cookie::from_secret(crate::Secret::from(COOKIE)), Vec::new());
        let me = plain_identity("fuzzed", true);
        let timeout = Duration::from_secs(1);
        let outcome = match dialer {
            true => handshake::dial(ours, &keyring, &me, timeout).await.map(drop),
            false => handshake::accept(ours, &keyring, &me, timeout, |_| Ok(()))
                .await
                .map(drop),
        };
        assert!(outcome.is_err(), "a handshake succeeded without the cookie");
        drop(theirs);
    });
}

/// A gossip datagram: opening (it does not, without the cookie), and its
/// envelope as if it had: the header, the replay guard and reassembly.
pub fn gossip_datagram(data: &[u8]) {
    let sealer = Sealer::new(&Keyring::new(
        Cookie::from_secret(crate::Secret::from(COOKIE)),
        Vec::new(),
    ));
    assert!(sealer.open(data).is_none(), "a datagram opened without the cookie");
    let now = Instant::now();
    let (mut guard, mut parts) = (ReplayGuard::default(), Reassembly::default());
    let mut rest = data;
    while let Some((header, body)) = Header::read(rest) {
        let _ = guard.admit(&header, &[header.to], header.sent_at_ms, now);
        let _ = parts.add(&header, &body[..body.len().min(64)], now);
        rest = &body[body.len().min(64)..];
    }
}

/// A gossip message: the checks before chitchat, which must leave only
/// what chitchat reads.
pub fn gossip_message(data: &[u8]) {
    let me = NodeKey {
        name: "me".into(),
        generation: 1,
        gossip: "127.0.0.1:7000".parse().expect("an address"),
    };
    let now = Instant::now();
    let mut known = KnownNodes::new(Duration::from_secs(60), now);
    if let Ok(named) = validate::check(data, &me) {
        let _ = known.admit(&named, now);
        if let Err(err) = ChitchatMessage::deserialize(&mut &data[..]) {
            panic!("passed the checks but chitchat cannot read it: {err}");
        }
    }
}

/// Arguments and replies: postcard through the bounds, into the shapes
/// generated code asks for.
pub fn postcard(data: &[u8]) {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    enum Tree {
        Leaf(String),
        Node(Vec<Tree>, Option<Box<Tree>>),
        Map(std::collections::BTreeMap<u32, Tree>),
    }
    let _ = bounded::from_bytes::<Tree>(data);
    let _ = bounded::from_bytes::<(i64, String, Vec<()>, Option<u8>)>(data);
}

/// A node's TOML configuration file.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = NodeConfig::from_toml(text, "fuzz.toml");
    }
}

/// Inputs that reach deep into each target, for its seed corpus: what the
/// tests send, well-formed.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use tokio_util::codec::Encoder;
    let framed = |body: &[u8]| {
        let mut out = BytesMut::new();
        FrameCodec::new(1 << 20).encode(body, &mut out).expect("a small frame");
        out.to_vec()
    };
    let request = wire::Header::Request {
        id: 1,
        service: "calc",
        method: crate::manifest::method_id("add"),
        signature: 7,
        deadline_us: 5_000_000,
        format: wire::Format::Postcard,
        trace: None,
        metadata: &[],
    };
    let mut frames = BytesMut::new();
    wire::encode(
        &mut frames,
        1 << 20,
        &request,
        &postcard::to_allocvec(&(1i64, 2i64)).expect("encodes"),
    )
    .expect("a small frame");
    let mut record = BytesMut::from(&frames[..]);
    wire::RecordSealer::new(&[7; 32], 4).seal(&mut record).expect("seals");
    let hello = framed(&handshake::hello_for_seeds());
    // chitchat's magic, protocol 0, then a SYN (empty digest, cluster
    // "malla") and an ACK (an empty delta).
    let gossip = [
        [&[0x53, 0xb0, 0, 0, 0, 0, 5, 0][..], b"malla"].concat(),
        vec![0x53, 0xb0, 0, 2, 0],
    ];
    let mut envelope = Vec::new();
    Header {
        sender: 1,
        counter: 1,
        sent_at_ms: 1,
        reply_to: "127.0.0.1:7000".parse().expect("an address"),
        to: "127.0.0.1:7001".parse().expect("an address"),
        part: (0, 1),
    }
    .write(&mut envelope);
    envelope.extend_from_slice(&gossip[0]);
    let config =
        "name = \"api\"\nlisten = \"0.0.0.0:7000\"\nseeds = [\"10.0.0.1:7000\"]\ncookie_file = \"/etc/malla/cookie\"\n";
    let manifest = "use = [\"std::collections::BTreeMap\"]\n[[service]]\nname = \"Calculator\"\nvsn = \"1.0.0\"\n\n[[service.method]]\nname = \"add\"\nargs = [\"a: i64\", \"b: i64\"]\nreturns = \"i64\"\nidempotent = true\n";
    vec![
        ("frames", frames.to_vec()),
        ("records", record.to_vec()),
        ("handshake_accept", hello.clone()),
        ("handshake_dial", hello),
        ("gossip_datagram", envelope),
        ("gossip_message", gossip[0].clone()),
        ("gossip_message", gossip[1].clone()),
        (
            "postcard",
            postcard::to_allocvec(&(5i64, "text", vec![(); 3], Some(1u8))).expect("encodes"),
        ),
        ("config", config.as_bytes().to_vec()),
        ("manifest", manifest.as_bytes().to_vec()),
    ]
}

/// Each target's entry point by name.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    Some(match name {
        "frames" => frames,
        "records" => records,
        "handshake_accept" => |data| handshake(data, false),
        "handshake_dial" => |data| handshake(data, true),
        "gossip_datagram" => gossip_datagram,
        "gossip_message" => gossip_message,
        "postcard" => postcard,
        "config" => config,
        // Read by malla-build, fuzzed from the fuzz crate.
        "manifest" => |_| {},
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    /// The seeds, and every input that once crashed a target (kept in
    /// `fuzz/regressions/TARGET/`), run through their target.
    #[test]
    fn seeds_and_past_crashes_pass_every_target() {
        let mut ran = 0;
        for (name, bytes) in super::seeds() {
            super::target(name).expect("a target")(&bytes);
            ran += 1;
        }
        let regressions = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
        for dir in std::fs::read_dir(&regressions).into_iter().flatten().flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            let run = super::target(&name).unwrap_or_else(|| panic!("no target named {name}"));
            for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
                run(&std::fs::read(file.path()).unwrap());
                ran += 1;
            }
        }
        println!("{ran} inputs replayed");
    }
}
