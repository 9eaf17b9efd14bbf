//! The raw multiplexed client: the plain way to share one connection among
//! many callers, with none of malla's protocol. Each call takes an id, puts a
//! oneshot in a map under it and hands the id to a writer task, which writes
//! every request waiting in one go; a reader task reads replies (each starts
//! with its request's id) and answers the oneshots. Requests and replies
//! have malla's byte counts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// A connected raw multiplexed client.
#[derive(Clone)]
pub(crate) struct RawMux {
    next: Arc<AtomicU64>,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>,
    outbox: mpsc::UnboundedSender<u64>,
}

impl RawMux {
    /// Connects to a raw server that echoes each request's first 8 bytes.
    pub(crate) async fn connect(addr: SocketAddr, request: usize, reply: usize) -> RawMux {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (mut read, mut write) = stream.into_split();
        let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>> = Arc::default();
        let (outbox, mut queued) = mpsc::unbounded_channel::<u64>();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(id) = queued.recv().await {
                buf.clear();
                let mut push = |id: u64| {
                    buf.extend_from_slice(&id.to_le_bytes());
                    buf.resize(buf.len() + request - 8, 0);
                };
                push(id);
                while let Ok(id) = queued.try_recv() {
                    push(id);
                }
                if write.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
        let answers = Arc::clone(&waiting);
        tokio::spawn(async move {
            // Replies are read in large chunks, as any client would.
            let mut read = tokio::io::BufReader::with_capacity(64 * 1024, &mut read);
            let mut resp = vec![0u8; reply];
            while read.read_exact(&mut resp).await.is_ok() {
                let id = u64::from_le_bytes(resp[..8].try_into().unwrap());
                if let Some(waiter) = answers.lock().unwrap().remove(&id) {
                    let _ = waiter.send(());
                }
            }
        });
        RawMux {
            next: Arc::new(AtomicU64::new(0)),
            waiting,
            outbox,
        }
    }

    /// One request and its reply.
    pub(crate) async fn call(&self) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(id, tx);
        self.outbox.send(id).unwrap();
        rx.await.unwrap();
    }
}
