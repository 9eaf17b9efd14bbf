//! Rendezvous (highest random weight) hashing: each node scores a key, the
//! highest score owns it. Every node that sees the same set of nodes picks
//! the same owner without talking to the others, and when a node leaves
//! only the keys it owned move (to their second-highest score), about 1/N
//! of them.
//!
//! The functions are fixed (FNV-1a over bytes, SplitMix64's finalizer to
//! mix), not `std`'s hasher, whose output may change between Rust releases:
//! nodes built by different compilers must agree.

use crate::NodeId;

/// A key's hash, as [`CallOptions::key`](crate::CallOptions::key) keeps it.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    fnv1a(key)
}

/// The score of `node` for the key hashed to `key`: the highest owns it.
pub(crate) fn score(key: u64, node: &NodeId) -> u64 {
    mix(fnv1a(node.as_str().as_bytes()) ^ mix(key))
}

/// Of `nodes`, the one that owns `key`; ties (two equal scores, in
/// practice never) go to the smaller name, so the choice is total.
pub(crate) fn owner<'a>(key: u64, nodes: impl IntoIterator<Item = &'a NodeId>) -> Option<&'a NodeId> {
    nodes
        .into_iter()
        .max_by(|a, b| score(key, a).cmp(&score(key, b)).then_with(|| b.cmp(a)))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's finalizer: every input bit reaches every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n).map(|i| NodeId::from(format!("node-{i}"))).collect()
    }

    fn owners(keys: u32, nodes: &[NodeId]) -> Vec<NodeId> {
        (0..keys)
            .map(|k| owner(key_hash(format!("key-{k}").as_bytes()), nodes).unwrap().clone())
            .collect()
    }

    #[test]
    fn every_view_of_the_same_nodes_agrees() {
        let forward = nodes(5);
        let mut backward = forward.clone();
        backward.reverse();
        let mut shuffled = forward.clone();
        shuffled.swap(0, 3);
        shuffled.swap(1, 4);
        let expected = owners(10_000, &forward);
        assert_eq!(owners(10_000, &backward), expected);
        assert_eq!(owners(10_000, &shuffled), expected);
    }

    #[test]
    fn keys_spread_evenly() {
        let nodes = nodes(5);
        let owned = owners(10_000, &nodes);
        for node in &nodes {
            let share = owned.iter().filter(|o| *o == node).count();
            println!("{node}: {share} of 10000 keys");
            assert!((1_700..=2_300).contains(&share), "{node} owns {share}");
        }
    }

    #[test]
    fn only_the_keys_of_a_leaving_node_move() {
        let all = nodes(5);
        let before = owners(10_000, &all);
        let left = &all[2];
        let after = owners(10_000, &[&all[..2], &all[3..]].concat());
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        println!(
            "one of 5 nodes leaves: {moved} of 10000 keys moved ({:.1} %)",
            moved as f64 / 100.0
        );
        for (b, a) in before.iter().zip(&after) {
            assert!(b == a || b == left, "a key of {b} moved to {a}");
        }
        assert!((1_700..=2_300).contains(&moved));
    }

    #[test]
    fn the_functions_are_fixed() {
        // Nodes of other builds compute the same: these must never change.
        assert_eq!(key_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(owner(key_hash(b"k"), &nodes(3)), owner(key_hash(b"k"), &nodes(3)));
        assert_eq!(owner(7, &[]), None);
    }
}
