//! The context's DNS methods go to the server's resolver, configured as `IP:port`, and wait for
//! it on a plain thread (as the SpoolManager's workers do).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use mailroom_dns::{BlockingResolver, DnsError, Resolver, ResolverSettings};
use mailroom_mailet::{MailAddress, MailetContext};
use mailroom_spool::{Repositories, ServerContext, UsernameRules};
use mailroom_store::file::{FileUsersRepository, LogSpool, Maildir};
use mailroom_store::Blocking;

/// A DNS server that knows one name, `host.test`, with the A record 192.0.2.1 (and no other
/// record), and answers NXDOMAIN for every other name. Built by hand: a reply is the query
/// with the response bit set, plus the answer.
fn start_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((len, peer)) = socket.recv_from(&mut buf) {
            let query = &buf[..len];
            // Header (12 octets), then the question: labels up to a zero octet, type, class.
            let Some(end) = query[12..].iter().position(|&b| b == 0).map(|p| 12 + p + 1) else {
                continue;
            };
            let Some(qtype) = query.get(end..end + 2) else {
                continue;
            };
            let name = &query[12..end];
            let mut reply = query[..end + 4].to_vec();
            reply[2] |= 0x80; // QR: a response
            reply[3] = 0x80; // RA, RCODE 0
            reply[6..12].fill(0); // no answer, authority or additional records yet
            if name == b"\x04host\x04test\x00" {
                if qtype == [0, 1] {
                    reply[7] = 1; // one answer: A 192.0.2.1, TTL 60, owner = the question
                    reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                    reply.extend_from_slice(&[192, 0, 2, 1]);
                }
            } else {
                reply[3] |= 3; // NXDOMAIN
            }
            let _ = socket.send_to(&reply, peer);
        }
    });
    addr
}

fn context(home: &std::path::Path, runtime: &tokio::runtime::Runtime) -> ServerContext {
    ServerContext::new(
        vec!["localhost".into()],
        MailAddress::parse("postmaster@localhost").unwrap(),
        UsernameRules {
            ignore_case: true,
            enable_aliases: true,
            enable_forwarding: true,
        },
        Repositories {
            users: Arc::new(Blocking::new(
                FileUsersRepository::open(&home.join("users")).unwrap(),
            )),
            inbox: Arc::new(Blocking::new(Maildir::open(&home.join("inboxes")).unwrap())),
            spool: Arc::new(Blocking::new(LogSpool::open(&home.join("spool")).unwrap())),
            opener: Box::new(|url| {
                Err(mailroom_store::StoreError::NotFound(format!(
                    "repository {url}"
                )))
            }),
        },
        runtime.handle().clone(),
    )
}

#[test]
fn dns_lookups_through_the_context() {
    let home = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let resolver = Resolver::new(&ResolverSettings {
        servers: vec![start_server()],
        timeout: Duration::from_secs(2),
        attempts: 1,
        cache_size: 100,
    })
    .unwrap();
    let ctx = context(home.path(), &runtime).with_dns(BlockingResolver::new(
        Arc::new(resolver),
        runtime.handle().clone(),
    ));
    let ctx: &dyn MailetContext = &ctx;
    assert_eq!(
        ctx.dns_ips("host.test").unwrap(),
        vec!["192.0.2.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        ctx.dns_mx("host.test").unwrap_err(),
        DnsError::NoRecords {
            name: "host.test".into(),
            record_type: "MX"
        }
    );
    assert_eq!(
        ctx.dns_mx("nowhere.test").unwrap_err(),
        DnsError::NoSuchDomain {
            name: "nowhere.test".into()
        }
    );
}

#[test]
fn without_a_resolver_lookups_fail_temporarily() {
    let home = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ctx = context(home.path(), &runtime);
    let e = ctx.dns_txt("example.com").unwrap_err();
    assert!(e.is_temporary(), "{e:?}");
    assert!(mailroom_mailet::MailetError::from(e).is_temporary());
}
