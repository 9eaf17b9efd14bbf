//! The services a connection's peer has called, so that a request finds
//! its service by comparing a name, not by two snapshot loads and a hash
//! lookup in the node's registry.

use std::sync::Arc;

use super::serving::{ServedToPeers, Services};
use crate::wire::Status;

/// What one connection's reader has found through [`Services::find`].
///
/// Only services that were found are kept, so a peer naming services this
/// node does not serve adds nothing: the list is never longer than the
/// services the node serves, and usually one or two long, which a linear
/// scan reads faster than a map.
#[derive(Default)]
pub(super) struct KnownServices {
    found: Vec<(Box<str>, Arc<dyn ServedToPeers>)>,
}

impl KnownServices {
    /// The service named `name`, found in `services` the first time.
    pub(super) fn get(&mut self, services: &dyn Services, name: &str) -> Result<&Arc<dyn ServedToPeers>, Status> {
        let at = match self.found.iter().position(|(known, _)| **known == *name) {
            Some(at) => at,
            None => {
                let service = services.find(name)?;
                self.found.push((name.into(), service));
                self.found.len() - 1
            }
        };
        Ok(&self.found[at].1)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::connection::{Caller, Request};
    use crate::invoke::Invocation;

    struct Counting(AtomicUsize);

    struct Named;

    impl ServedToPeers for Named {
        fn start(&self, _: Caller<'_>, _: Request<'_>) -> Result<Invocation, Status> {
            Err(Status::Overloaded)
        }

        fn overloaded(&self) {}
    }

    impl Services for Counting {
        fn find(&self, name: &str) -> Result<Arc<dyn ServedToPeers>, Status> {
            self.0.fetch_add(1, Ordering::Relaxed);
            match name {
                "A" | "B" => Ok(Arc::new(Named)),
                _ => Err(Status::NotAvailable),
            }
        }
    }

    #[test]
    fn a_service_is_found_once_and_an_unknown_one_every_time() {
        let services = Counting(AtomicUsize::new(0));
        let mut known = KnownServices::default();
        for name in ["A", "B", "A", "A", "B"] {
            assert!(known.get(&services, name).is_ok());
        }
        assert_eq!(services.0.load(Ordering::Relaxed), 2);
        for _ in 0..3 {
            assert_eq!(known.get(&services, "C").err(), Some(Status::NotAvailable));
        }
        assert_eq!(services.0.load(Ordering::Relaxed), 5, "a refusal is asked again");
        assert_eq!(known.found.len(), 2, "a refusal is not kept");
    }
}
