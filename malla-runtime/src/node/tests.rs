//! Two nodes dialing each other at the same moment end up with one
//! connection, the one opened by the node whose name sorts first; the other
//! is retired and closes without losing a call or flapping the peer.

use std::time::Duration;

use tokio::sync::broadcast::error::TryRecvError;

use tokio::time::Instant;

use super::*;
use crate::NodeId;
use crate::connection::Initiator;

async fn node(name: &str) -> Node {
    Node::builder(name)
        .cookie("sim")
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

fn opener(node: &Node, peer: &Node) -> Option<NodeId> {
    let conn = node.parts.network.peer(peer.id())?.connection()?;
    Some(match conn.initiator {
        Initiator::Us => node.id().clone(),
        Initiator::Peer => peer.id().clone(),
    })
}

fn open(node: &Node) -> usize {
    node.parts.network.open_connections()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_connects_settle_on_one_connection() {
    for round in 0..20 {
        let (a, b) = (
            node(&format!("sim-a{round}")).await,
            node(&format!("sim-b{round}")).await,
        );
        let (mut events_a, mut events_b) = (a.events(), b.events());
        let (to_b, to_a) = tokio::join!(a.connect(b.local_addr().unwrap()), b.connect(a.local_addr().unwrap()));
        assert_eq!(to_b.unwrap(), *b.id());
        assert_eq!(to_a.unwrap(), *a.id());

        // Both use the connection `sim-a…` opened; the duplicate goes away.
        let deadline = Instant::now() + Duration::from_secs(3);
        while (open(&a), open(&b)) != (1, 1) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!((open(&a), open(&b)), (1, 1), "round {round}: a duplicate stayed open");
        assert_eq!(opener(&a, &b).as_ref(), Some(a.id()), "round {round}");
        assert_eq!(opener(&b, &a).as_ref(), Some(a.id()), "round {round}");

        // Each saw the other come up once, and never go down.
        assert_eq!(events_a.try_recv(), Ok(crate::Event::NodeUp(b.id().clone())));
        assert_eq!(events_a.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(events_b.try_recv(), Ok(crate::Event::NodeUp(a.id().clone())));
        assert_eq!(events_b.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(a.nodes(), vec![b.id().clone()]);
    }
}
