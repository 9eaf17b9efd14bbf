//! A real DNS server on loopback (hickory-server with an in-memory zone) that
//! tests add records to while nodes run.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use hickory_server::Server;
use hickory_server::proto::rr::rdata::{A, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};

/// Answers for `malla.test.` on UDP and TCP.
pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    serial: AtomicU32,
    _server: Server<Catalog>,
}

/// Records live one second: re-resolution sees changes at once.
const TTL: u32 = 1;

impl TestDns {
    pub async fn start() -> TestDns {
        let origin = Name::from_ascii("malla.test.").unwrap();
        let mut zone = InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_ascii("ns.malla.test.").unwrap(),
            Name::from_ascii("admin.malla.test.").unwrap(),
            1,
            60,
            60,
            600,
            TTL,
        );
        zone.upsert_mut(Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)), 1);
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone() as Arc<dyn ZoneHandler>]);
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, std::time::Duration::from_secs(5), 4096);
        TestDns {
            addr,
            zone,
            serial: AtomicU32::new(2),
            _server: server,
        }
    }

    pub async fn add_a(&self, name: &str, ip: Ipv4Addr) {
        self.add(Record::from_rdata(self.name(name), TTL, RData::A(A(ip))))
            .await;
    }

    pub async fn add_srv(&self, name: &str, target: &str, port: u16) {
        let target = if target == "." { Name::root() } else { self.name(target) };
        self.add(Record::from_rdata(
            self.name(name),
            TTL,
            RData::SRV(SRV::new(0, 1, port, target)),
        ))
        .await;
    }

    async fn add(&self, record: Record) {
        let serial = self.serial.fetch_add(1, Ordering::SeqCst);
        assert!(self.zone.upsert(record, serial).await, "the record was not added");
    }

    fn name(&self, name: &str) -> Name {
        Name::from_ascii(format!("{name}.malla.test.")).unwrap()
    }
}
