//! Proves that a call on a declared but undiscovered service allocates
//! nothing and completes on its first poll, without a runtime: the stub
//! never touches the network or the timer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

struct CountingAlloc;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[malla::service(global)]
pub trait Remote {
    async fn add(&self, a: i64, b: i64) -> i64;
}

#[test]
fn a_stub_call_allocates_nothing_and_is_ready_at_once() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let node = rt.block_on(malla::Node::builder("n1").start()).unwrap();
    let client = RemoteClient::new(&node);
    let mut cx = Context::from_waker(Waker::noop());

    // The first lock-free read on a thread registers arc-swap's thread-local
    // slot (one allocation per thread, ever); every call after that is free.
    let mut warm_up = pin!(client.add(0, 0));
    assert!(warm_up.as_mut().poll(&mut cx).is_ready());

    for _ in 0..3 {
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        let result = {
            let mut call = pin!(client.add(1, 2));
            match call.as_mut().poll(&mut cx) {
                Poll::Ready(result) => result,
                Poll::Pending => panic!("a stub call must complete on its first poll"),
            }
        };
        let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
        assert!(matches!(result, Err(malla::Error::ServiceNotAvailable { .. })));
        assert_eq!(allocated, 0, "the stub path allocated");
    }
}
