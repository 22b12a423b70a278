//! The resolver against a tiny DNS server started by the test on 127.0.0.1 (UDP), configured as
//! `IP:port` the way `<dnsserver><server>` gives it.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, PTR, SOA, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use mailroom_dns::{BlockingResolver, DnsError, MxRecord, Resolver, ResolverSettings};

/// What the test server answers for one question.
enum Answer {
    Records(Vec<RData>),
    NxDomain,
    ServFail,
    /// No reply at all: the resolver times out.
    Silence,
}

fn zone(name: &str, record_type: RecordType) -> Answer {
    let n = |s: &str| Name::from_ascii(s).unwrap();
    match (name, record_type) {
        ("mx.test.", RecordType::MX) => Answer::Records(vec![
            RData::MX(MX::new(20, n("b.mx.test."))),
            RData::MX(MX::new(10, n("a.mx.test."))),
            RData::MX(MX::new(30, n("c.mx.test."))),
            RData::MX(MX::new(10, n("a2.mx.test."))),
        ]),
        ("host.test.", RecordType::A) => Answer::Records(vec![RData::A(A([192, 0, 2, 1].into()))]),
        ("host.test.", RecordType::AAAA) => {
            Answer::Records(vec![RData::AAAA(AAAA("2001:db8::1".parse().unwrap()))])
        }
        ("txt.test.", RecordType::TXT) => Answer::Records(vec![RData::TXT(TXT::new(vec![
            "v=spf1 ".into(),
            "-all".into(),
        ]))]),
        ("1.2.0.192.in-addr.arpa.", RecordType::PTR) => {
            Answer::Records(vec![RData::PTR(PTR(n("host.test.")))])
        }
        ("servfail.test.", _) => Answer::ServFail,
        ("slow.test.", _) => Answer::Silence,
        // The name exists, with other types only: NOERROR and no answer (NODATA).
        ("host.test." | "mx.test." | "txt.test.", _) => Answer::Records(Vec::new()),
        _ => Answer::NxDomain,
    }
}

/// Starts the server; returns its address and a count of the queries it received.
fn start_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let counter = queries.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((len, peer)) = socket.recv_from(&mut buf) {
            counter.fetch_add(1, Ordering::SeqCst);
            let Ok(request) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let Some(query) = request.queries.first().cloned() else {
                continue;
            };
            let mut response = Message::response(request.metadata.id, request.metadata.op_code);
            response.metadata.recursion_desired = request.metadata.recursion_desired;
            response.metadata.recursion_available = true;
            response.add_query(query.clone());
            let qname = query.name().to_ascii().to_ascii_lowercase();
            match zone(&qname, query.query_type()) {
                Answer::Silence => continue,
                Answer::ServFail => response.metadata.response_code = ResponseCode::ServFail,
                Answer::NxDomain => {
                    response.metadata.response_code = ResponseCode::NXDomain;
                    response.add_authority(soa());
                }
                Answer::Records(records) if records.is_empty() => {
                    response.add_authority(soa());
                }
                Answer::Records(records) => {
                    for rdata in records {
                        response.add_answer(Record::from_rdata(query.name().clone(), 300, rdata));
                    }
                }
            }
            let _ = socket.send_to(&response.to_vec().unwrap(), peer);
        }
    });
    (addr, queries)
}

/// The SOA of the test zone, for negative answers (which carry it in the authority section).
fn soa() -> Record {
    let n = |s: &str| Name::from_ascii(s).unwrap();
    Record::from_rdata(
        n("test."),
        300,
        RData::SOA(SOA::new(
            n("ns.test."),
            n("hostmaster.test."),
            1,
            3600,
            600,
            86400,
            300,
        )),
    )
}

fn resolver(server: SocketAddr) -> Resolver {
    Resolver::new(&ResolverSettings {
        servers: vec![server],
        timeout: Duration::from_millis(300),
        attempts: 1,
        cache_size: 100,
    })
    .unwrap()
}

fn mx(preference: u16, exchange: &str) -> MxRecord {
    MxRecord {
        preference,
        exchange: exchange.to_string(),
    }
}

#[tokio::test]
async fn mx_records_are_sorted_by_preference() {
    let (server, _) = start_server();
    let r = resolver(server);
    assert_eq!(
        r.mx("mx.test").await.unwrap(),
        vec![
            mx(10, "a.mx.test"),
            mx(10, "a2.mx.test"),
            mx(20, "b.mx.test"),
            mx(30, "c.mx.test")
        ]
    );
}

#[tokio::test]
async fn addresses_text_and_pointers() {
    let (server, _) = start_server();
    let r = resolver(server);
    let mut ips = r.ips("host.test").await.unwrap();
    ips.sort();
    assert_eq!(
        ips,
        vec![
            "192.0.2.1".parse::<IpAddr>().unwrap(),
            "2001:db8::1".parse().unwrap()
        ]
    );
    assert_eq!(r.txt("txt.test").await.unwrap(), vec!["v=spf1 -all"]);
    assert_eq!(
        r.ptr("192.0.2.1".parse().unwrap()).await.unwrap(),
        vec!["host.test"]
    );
    assert_eq!(
        r.ips("192.0.2.7").await.unwrap(),
        vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
    );
}

#[tokio::test]
async fn nxdomain_and_nodata_are_answers_not_failures() {
    let (server, _) = start_server();
    let r = resolver(server);
    let e = r.mx("missing.test").await.unwrap_err();
    assert_eq!(
        e,
        DnsError::NoSuchDomain {
            name: "missing.test".into()
        }
    );
    assert!(e.is_not_found() && !e.is_temporary());
    let e = r.mx("host.test").await.unwrap_err();
    assert_eq!(
        e,
        DnsError::NoRecords {
            name: "host.test".into(),
            record_type: "MX"
        }
    );
    assert!(e.is_not_found());
    assert!(r.txt("missing.test").await.unwrap_err().is_not_found());
    assert!(matches!(
        r.mx("bad..name").await,
        Err(DnsError::InvalidName { .. })
    ));
}

#[tokio::test]
async fn timeouts_and_servfail_are_temporary() {
    let (server, _) = start_server();
    let r = resolver(server);
    let e = r.mx("slow.test").await.unwrap_err();
    assert!(e.is_temporary(), "{e:?}");
    assert!(!e.is_not_found());
    assert!(e.to_string().contains("timed out"), "{e}");
    let e = r.ips("servfail.test").await.unwrap_err();
    assert!(e.is_temporary(), "{e:?}");
    assert!(
        e.to_string().contains("SERVFAIL") || e.to_string().contains("Server Failure"),
        "{e}"
    );
    // The server is still there: the failure was of the moment.
    assert_eq!(r.mx("mx.test").await.unwrap().len(), 4);
}

#[tokio::test]
async fn answers_are_cached() {
    let (server, queries) = start_server();
    let r = resolver(server);
    r.mx("mx.test").await.unwrap();
    let after_first = queries.load(Ordering::SeqCst);
    assert!(after_first >= 1);
    for _ in 0..5 {
        r.mx("mx.test").await.unwrap();
    }
    assert_eq!(queries.load(Ordering::SeqCst), after_first);
}

#[test]
fn blocking_lookups_from_plain_threads() {
    let (server, _) = start_server();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let blocking = BlockingResolver::new(Arc::new(resolver(server)), runtime.handle().clone());
    let worker = {
        let blocking = blocking.clone();
        std::thread::spawn(move || blocking.mx("mx.test").map(|m| m.len()))
    };
    assert_eq!(worker.join().unwrap(), Ok(4));
    assert!(blocking.ips("missing.test").unwrap_err().is_not_found());
    assert!(blocking.txt("slow.test").unwrap_err().is_temporary());
    assert_eq!(
        blocking.ptr("192.0.2.1".parse().unwrap()).unwrap(),
        vec!["host.test"]
    );

    // From inside an async task, blocking would stall the runtime: refused, not a panic.
    let inside = blocking.clone();
    let refused = runtime
        .block_on(runtime.spawn(async move { inside.mx("mx.test") }))
        .unwrap();
    assert!(refused.unwrap_err().is_temporary());
}
