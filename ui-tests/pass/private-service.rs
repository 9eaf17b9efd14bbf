// A private trait gets private generated types; methods without arguments
// and without a return type are fine.
mod inner {
    #[malla::service]
    pub(crate) trait Heartbeat {
        async fn beat(&self);
    }

    pub(crate) struct Beat;

    impl Heartbeat for Beat {
        async fn beat(&self) {}
    }

    pub(crate) fn server() -> HeartbeatServer<Beat> {
        HeartbeatServer::new(Beat)
    }
}

fn main() {
    let _server = inner::server();
}
