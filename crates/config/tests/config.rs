//! Loading whole configurations: the sample James 2.3 file, the built-in default, and the
//! located errors of broken ones.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailroom_config::{AuthRequired, Config, ConfigErrors, RepositoryUrl, UsersRepositoryKind};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Parses `body` wrapped in `<config>` (the wrapper adds no line: `<config>` is on line 1).
fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_str_with_name(
        text,
        "config.xml",
        Path::new("."),
        Some(Path::new("/home/m")),
    )
}

/// A minimal valid spoolmanager, on one line.
const SPOOL: &str = r#"<spoolmanager><processor name="root"><mailet match="All" class="Null"/></processor><processor name="error"><mailet match="All" class="Null"/></processor></spoolmanager>"#;

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn sample_james_config_loads() {
    let path = data_dir().join("james-config.xml");
    let c = Config::load(&path, Some(Path::new("/srv/james"))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.home, Path::new("/srv/james"));
    assert_eq!(c.james.postmaster, "Postmaster@Example.com");
    // autodetect adds the host name, autodetectIP the servernames' addresses (issue 9).
    assert_eq!(c.james.servernames[..2], ["example.com", "localhost"]);
    if let Some(host) = mailroom_config::host_name() {
        assert!(
            c.james.servernames.contains(&host),
            "{:?}",
            c.james.servernames
        );
    }
    assert!(
        c.james.is_local_domain("[127.0.0.1]"),
        "{:?}",
        c.james.servernames
    );
    assert!(c.james.servernames_autodetect && !c.james.usernames.enable_forwarding);
    assert_eq!(
        c.james.inbox_repository.target,
        RepositoryUrl::DbFile {
            source: "maildb".into(),
            path: vec!["inbox".into()]
        }
    );
    assert_eq!(c.mailet_packages.len(), 2);

    // Spool manager: trimmed threads, processors in order, James's processor class accepted.
    let sm = &c.spool_manager;
    assert_eq!(sm.threads, 10);
    let names: Vec<&str> = sm.processors.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "root",
            "error",
            "transport",
            "virus",
            "local-address-error",
            "relay-denied",
            "bounces"
        ]
    );
    let root = sm.processor("root").unwrap();
    assert_eq!(
        root.class.as_deref(),
        Some("org.apache.james.transport.LinearProcessor")
    );
    assert_eq!(root.mailets[2].matcher_name(), "HasMailAttributeWithValue");
    assert_eq!(
        root.mailets[2].matcher_condition(),
        Some("org.apache.james.infected, true")
    );
    assert_eq!(root.mailets[2].param("processor"), Some("virus"));
    let transport = sm.processor("transport").unwrap();
    let vut = &transport.mailets[1];
    assert_eq!(
        vut.param("mapping"),
        Some("postmaster@example.com=root@example.com,abuse@example.com=root@example.com")
    );
    let rd = transport.mailets.last().unwrap();
    assert_eq!(rd.class, "RemoteDelivery");
    assert_eq!(rd.on_mailet_exception.as_deref(), Some("ignore"));
    assert_eq!(rd.param("delayTime"), Some("5 minutes,10 minutes"));
    assert_eq!(
        rd.params
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["outgoing", "delayTime", "maxRetries", "bounceProcessor"]
    );
    assert_eq!(
        transport.mailets[4].on_match_exception.as_deref(),
        Some("noMatch")
    );
    assert_eq!(rd.location.file.as_ref(), path.as_path());

    // Fetchmail came from the included file, with that file's lines.
    let f = c.fetchmail.as_ref().expect("fetchmail included");
    assert!(f.enabled);
    assert!(f.location.file.ends_with("james-fetchmail.xml"));
    assert_eq!(f.location.line, 3);
    let t = &f.tasks[0];
    assert_eq!(
        (t.name.as_str(), t.host.as_str()),
        ("example.net", "pop.example.net")
    );
    assert_eq!(t.interval, Duration::from_secs(600));
    assert_eq!(t.accounts[0].user, "catchall");
    assert_eq!(t.accounts[0].password.expose(), "secret");
    assert_eq!(t.all_local.as_ref().unwrap().password.expose(), "secret");
    let printed = format!("{t:?}");
    assert!(
        !printed.contains("\"secret\"") && printed.matches("Secret(***)").count() == 2,
        "passwords are not printed: {printed}"
    );
    assert_eq!(
        t.all_local.as_ref().unwrap().recipient_suffix,
        "@example.com"
    );
    assert_eq!(
        t.blacklist_addresses,
        ["spam@example.com", "junk@example.com"]
    );
    assert_eq!(t.max_message_size_kib, 10240);
    assert!(!t.fetched.leave_on_server && t.fetched.mark_seen);
    // Elements after the include are back in the main file, on their own lines.
    assert_eq!(sm.location.file.as_ref(), path.as_path());
    assert_eq!(sm.location.line, 31);
    assert_eq!(c.smtp[0].common.location.line, 134);

    // Services.
    assert_eq!(c.smtp.len(), 1);
    let smtp = &c.smtp[0];
    assert_eq!(smtp.common.port, 25);
    assert_eq!(smtp.common.bind, "0.0.0.0".parse::<IpAddr>().unwrap());
    assert_eq!(smtp.common.hello_name, "mx.example.com");
    assert_eq!(smtp.auth_required, AuthRequired::Announce);
    assert_eq!(smtp.max_message_bytes(), Some(10240 * 1024));
    let relay = smtp.relay_networks();
    assert!(
        relay.contains("192.168.44.1".parse().unwrap())
            && relay.contains("10.2.3.4".parse().unwrap())
    );
    assert!(!relay.contains("8.8.8.8".parse().unwrap()));
    assert_eq!(c.pop3.len(), 2, "two listeners");
    assert!(!c.pop3[0].common.tls.socket_tls && c.pop3[1].common.tls.socket_tls);
    assert!(!c.pop3[1].common.tls.start_tls);
    assert_eq!(
        c.pop3[1].common.hello_name, "example.com",
        "defaults to the first servername"
    );
    assert!(!c.nntp[0].common.enabled);
    let rm = &c.remote_manager[0];
    assert_eq!(rm.common.bind, "127.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(rm.common.connection_timeout, Duration::from_secs(60));
    assert_eq!(rm.prompt, "james>");
    assert!(rm.can_start());
    assert_eq!(rm.administrators[0].password.expose(), "s3cret");
    assert!(
        !format!("{rm:?}").contains("s3cret"),
        "passwords are not printed"
    );

    // Stores.
    assert_eq!(
        c.nntp_repository.newsgroups,
        ["example.dev", "example.users"]
    );
    assert_eq!(
        c.nntp_repository.root_path,
        Path::new("/srv/james/var/nntp/groups")
    );
    assert_eq!(c.spool_repository.url, "dbfile://maildb/spool/spool");
    assert_eq!(c.mailstore.len(), 4, "the mbox row is accepted but dropped");
    let users = c.local_users().unwrap();
    assert_eq!(users.kind, UsersRepositoryKind::Database);
    assert_eq!(
        users.target,
        RepositoryUrl::Db {
            source: "maildb".into(),
            path: vec!["users".into()]
        }
    );
    assert_eq!(
        c.users_repositories[1].target,
        RepositoryUrl::File("/srv/james/var/lists/list-james".into())
    );
    let db = c.data_source("maildb").unwrap();
    assert_eq!(
        (db.url.as_str(), db.max),
        ("postgres://james@127.0.0.1/mail", 20)
    );
    assert_eq!(db.password.as_ref().map(|p| p.expose()), Some("pw"));
    let printed = format!("{db:?}");
    assert!(
        printed.contains("password: Some(Secret(***))") && !printed.contains("\"pw\""),
        "{printed}"
    );
    assert_eq!(
        c.dns.servers,
        ["127.0.0.1:53".parse::<SocketAddr>().unwrap()]
    );
    assert!(!c.dns.autodiscover);
}

#[test]
fn default_config_parses() {
    let c = Config::embedded_default(Some(Path::new("/opt/mr"))).unwrap_or_else(|e| panic!("{e}"));
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(c.james.servernames, ["localhost"]);
    assert_eq!(c.james.postmaster, "postmaster@localhost");
    assert_eq!((c.smtp[0].common.port, c.smtp[0].common.bind), (2525, lo));
    assert_eq!((c.pop3[0].common.port, c.pop3[0].common.bind), (1110, lo));
    assert_eq!((c.nntp[0].common.port, c.nntp[0].common.bind), (1119, lo));
    assert_eq!(
        (
            c.remote_manager[0].common.port,
            c.remote_manager[0].common.bind
        ),
        (4555, lo)
    );
    assert!(
        !c.remote_manager[0].can_start(),
        "no administrator by default"
    );
    assert_eq!(c.spool_manager.threads, 2);
    let names: Vec<&str> = c
        .spool_manager
        .processors
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "root",
            "transport",
            "bounces",
            "error",
            "local-address-error"
        ]
    );
    let t = c.spool_manager.processor("transport").unwrap();
    assert_eq!(
        t.mailets[1].param("notice"),
        Some("550 - Requested action not taken: no such user here")
    );
    assert_eq!(
        c.repository_url(t.mailets[2].param("outgoing").unwrap())
            .unwrap(),
        RepositoryUrl::File("/opt/mr/var/mail/outgoing".into())
    );
    assert_eq!(
        c.spool_repository.target,
        RepositoryUrl::File("/opt/mr/var/mail/spool/".into())
    );
    assert_eq!(
        c.james.inbox_repository.target,
        RepositoryUrl::File("/opt/mr/var/mail/inboxes".into())
    );
    assert_eq!(
        c.local_users().unwrap().target,
        RepositoryUrl::File("/opt/mr/var/users".into())
    );
    assert!(!c.smtp[0]
        .relay_networks()
        .contains("10.0.0.1".parse().unwrap()));

    // The shipped file is the same text.
    let file =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("default-config.xml"))
            .unwrap();
    assert_eq!(file, mailroom_config::DEFAULT_CONFIG);
}

#[test]
fn error_inside_included_file_names_that_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fetch.xml"),
        "<!-- fetch -->\n<fetchmail>\n  <fetch name=\"x\">\n    <accounts><account user=\"u\" password=\"p\" recipient=\"r@localhost\"/></accounts>\n    <host>pop.example.com</host>\n    <interval>soon</interval>\n  </fetch>\n</fetchmail>\n",
    )
    .unwrap();
    let main = format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE config [\n<!ENTITY fetch SYSTEM \"fetch.xml\">\n]>\n<config>\n&fetch;\n{SPOOL}\n<bogus/>\n</config>\n"
    );
    let path = dir.path().join("config.xml");
    std::fs::write(&path, main).unwrap();
    let e = Config::load(&path, None).unwrap_err();
    let msgs: Vec<String> = e.0.iter().map(|e| e.to_string()).collect();
    let fetch = dir.path().join("fetch.xml");
    assert_eq!(
        msgs[1],
        format!(
            "{}:6: <interval> must be a number from 1 to 31536000000, got \"soon\"",
            fetch.display()
        ),
        "{e}"
    );
    // The main file's lines are unchanged by the include (the DOCTYPE lines were blanked, the
    // reference replaced on its own line).
    assert!(
        msgs[0].starts_with(&format!("{}:8: unknown block <bogus>", path.display())),
        "{e}"
    );
}

#[test]
fn syntax_error_in_included_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("inc.xml"),
        "<fetchmail>\n\n<fetch>\n</fetchmail>",
    )
    .unwrap();
    let text = format!(
        "<!DOCTYPE config [<!ENTITY inc SYSTEM \"inc.xml\">]>\n<config>&inc;{SPOOL}</config>"
    );
    let e = Config::from_str_with_name(&text, "main.xml", dir.path(), None).unwrap_err();
    assert_eq!(e.0[0].line, 4, "{e}");
    assert!(e.0[0].file.ends_with("inc.xml"), "{e}");
}

#[test]
fn trimming_and_repeated_params() {
    let text = "<config>\n<spoolmanager>\n<processor name=\" root \">\n<mailet match=\" RecipientIs=a@b \" class=\" ToProcessor \">\n<processor> spam </processor>\n<x>1</x><x> 2 </x>\n</mailet>\n</processor>\n<processor name=\"error\"/>\n</spoolmanager>\n</config>";
    let c = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let root = c.spool_manager.processor("root").expect("name trimmed");
    let m = &root.mailets[0];
    assert_eq!(
        (m.matcher.as_str(), m.class.as_str()),
        ("RecipientIs=a@b", "ToProcessor")
    );
    assert_eq!(m.param("processor"), Some("spam"));
    assert_eq!(m.param("x"), Some("1,2"));
    assert_eq!(m.location.line, 4);
    assert_eq!(c.spool_manager.threads, 1, "default");
}

#[test]
fn processor_tree_errors_have_lines() {
    let e =
        errors("<config>\n<spoolmanager>\n<processor name=\"root\"/>\n</spoolmanager>\n</config>");
    assert_eq!(e, ["config.xml:2: <spoolmanager> has no <processor name=\"error\">; the error processor is required"]);

    let e =
        errors("<config>\n<spoolmanager>\n<processor name=\"error\"/>\n</spoolmanager>\n</config>");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("config.xml:2: ") && e[0].contains("root"),
        "{e:?}"
    );

    let e = errors(
        "<config>\n<spoolmanager>\n<processor name=\"root\"/>\n<processor name=\"error\"/>\n<processor name=\"ghost\"/>\n<processor name=\"root\"/>\n</spoolmanager>\n</config>",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("config.xml:5: \"ghost\" cannot be a processor name"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with(
            "config.xml:6: processor \"root\" is defined twice (first at config.xml:3)"
        ),
        "{e:?}"
    );

    let e = errors(
        "<config>\n<spoolmanager>\n<threads>0</threads>\n<processor name=\"root\">\n<mailet class=\"Null\"/>\n<mailet match=\"All\"/>\n</processor>\n<processor name=\"error\"/>\n</spoolmanager>\n</config>",
    );
    assert_eq!(e.len(), 3, "{e:?}");
    assert_eq!(
        e[0],
        "config.xml:3: <threads> must be a number from 1 to 1024, got \"0\""
    );
    assert_eq!(
        e[1],
        "config.xml:5: <mailet> needs a match=\"...\" attribute"
    );
    assert_eq!(
        e[2],
        "config.xml:6: <mailet> needs a class=\"...\" attribute"
    );

    let e = errors("<config>\n</config>");
    assert!(e[0].contains("no <spoolmanager>"), "{e:?}");
}

#[test]
fn bad_values_are_all_reported() {
    let text = format!(
        "<config>{SPOOL}\n<smtpserver enabled=\"maybe\">\n<port>abc</port>\n<bind>no-such-host.invalid</bind>\n<handler>\n<authRequired>sometimes</authRequired>\n<authorizedAddresses>10.0.0.0/8, 10.0.0.0/33</authorizedAddresses>\n<maxRcpt>-1</maxRcpt>\n</handler>\n</smtpserver>\n<pop3server><port>70000</port></pop3server>\n</config>"
    );
    let e = errors(&text);
    assert_eq!(e[0], "config.xml:2: attribute enabled of <smtpserver> must be true or false (or yes/no), got \"maybe\"");
    assert_eq!(
        e[1],
        "config.xml:3: <port> must be a number from 1 to 65535, got \"abc\""
    );
    // A host name is resolved (the issue-9 change); one that does not resolve is an error.
    assert!(
        e[2].starts_with(
            "config.xml:4: <bind> \"no-such-host.invalid\": not an IP address, and the host name does not resolve"
        ),
        "{e:?}"
    );
    assert!(
        e[3].starts_with("config.xml:6: <authRequired> must be false, true or announce"),
        "{e:?}"
    );
    assert!(
        e[4].starts_with("config.xml:7: <authorizedAddresses>: \"10.0.0.0/33\""),
        "{e:?}"
    );
    assert_eq!(
        e[5],
        "config.xml:8: <maxRcpt> must be a number from 0 to 1000000, got \"-1\""
    );
    assert_eq!(
        e[6],
        "config.xml:11: <port> must be a number from 1 to 65535, got \"70000\""
    );
    assert_eq!(e.len(), 7, "{e:?}");
}

#[test]
fn blocks_unknown_ignored_and_duplicated() {
    let e = errors(&format!("<config>{SPOOL}\n<objectstorage/>\n<sockets/>\n<imapserver/>\n<James/>\n<James/>\n</config>"));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("config.xml:4: unknown block <imapserver> (known: James, "),
        "{e:?}"
    );
    assert_eq!(
        e[1],
        "config.xml:6: <James> appears more than once (first at line 5)"
    );
}

#[test]
fn service_defaults_tls_and_listener_clash() {
    let text = format!(
        "<config>{SPOOL}<James><servernames><servername>Mail.Example.ORG</servername></servernames></James>\
         <smtpserver/><smtpserver><port>465</port><tls socketTLS=\"true\"><certificate>c.pem</certificate><privateKey>file:///k.pem</privateKey></tls></smtpserver>\
         <pop3server/><nntpserver/><remotemanager/><tls><certificate>g.pem</certificate><privateKey>g.key</privateKey></tls></config>"
    );
    let c = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let s = &c.smtp[0];
    assert_eq!(
        (s.common.port, s.common.hello_name.as_str()),
        (25, "mail.example.org")
    );
    assert_eq!(s.common.connection_timeout, Duration::from_millis(360_000));
    assert!(
        s.verify_identity
            && s.helo_ehlo_enforcement
            && s.require_tls_for_auth
            && s.address_brackets_enforcement
            && s.verify_recipients
    );
    assert_eq!(
        (s.max_message_bytes(), s.max_rcpt, s.auth_required),
        (Some(50 << 20), 100, AuthRequired::False)
    );
    assert!(s.authorized_addresses.is_none());
    assert!(
        s.relay_networks().contains("127.0.0.1".parse().unwrap())
            && s.relay_networks().contains("::1".parse().unwrap())
    );
    assert!(s.common.tls.start_tls && !s.common.tls.socket_tls);
    assert_eq!(
        s.common.tls.files(&c.tls),
        Some(("/home/m/g.pem".into(), "/home/m/g.key".into()))
    );
    let s2 = &c.smtp[1].common.tls;
    assert!(s2.socket_tls && !s2.start_tls);
    assert_eq!(
        s2.files(&c.tls),
        Some(("/home/m/c.pem".into(), "/k.pem".into()))
    );
    assert_eq!(c.pop3[0].common.port, 110);
    assert!(!c.pop3[0].enable_apop && c.pop3[0].require_tls_for_auth);
    assert_eq!(c.nntp[0].common.port, 119);
    assert_eq!(c.remote_manager[0].common.port, 4555);
    assert!(!c.remote_manager[0].common.tls.start_tls);
    assert_eq!(c.james.postmaster, "postmaster@localhost");

    let e = errors(&format!("<config>{SPOOL}\n<smtpserver><port>2525</port></smtpserver>\n<pop3server><port>2525</port><bind>127.0.0.1</bind></pop3server>\n</config>"));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("config.xml:3: <pop3server> listens on 127.0.0.1:2525, which <smtpserver> at config.xml:2"), "{e:?}");
    // A disabled block does not clash.
    parse(&format!(
        "<config>{SPOOL}<smtpserver/><smtpserver enabled=\"no\"/></config>"
    ))
    .unwrap();
}

#[test]
fn stores_and_urls() {
    let text = format!(
        "<config>{SPOOL}\n<users-store>\n<repository name=\"LocalUsers\" class=\"org.example.LdapRepository\" destinationURL=\"file://var/users/\"/>\n</users-store>\n<spoolrepository>\n<repository destinationURL=\"db://nosuch/spool\" type=\"SPOOL\"/>\n</spoolrepository>\n<mailstore><repositories><repository class=\"X\">\n<protocols><protocol>ftp</protocol></protocols>\n<types><type>BLOB</type></types>\n</repository></repositories></mailstore>\n</config>"
    );
    let e = errors(&text);
    assert_eq!(e.len(), 5, "{e:?}");
    assert!(
        e[0].starts_with("config.xml:2: <users-store> needs a <repository name=\"LocalUsers\""),
        "{e:?}"
    );
    assert!(
        e[1].starts_with(
            "config.xml:3: unknown users repository class \"org.example.LdapRepository\""
        ),
        "{e:?}"
    );
    assert_eq!(e[2], "config.xml:6: \"db://nosuch/spool\" uses data source \"nosuch\", which <database-connections> does not define");
    assert_eq!(
        e[3],
        "config.xml:9: unknown repository protocol \"ftp\" (known: file, db, dbfile)"
    );
    assert_eq!(
        e[4],
        "config.xml:10: unknown repository type \"BLOB\" (known: MAIL, SPOOL, STREAM, OBJECT)"
    );

    // Users have no bodies to keep in files: dbfile:// is refused for them (James 2.3 read
    // users from db:// only).
    let e = errors(&format!(
        "<config>{SPOOL}\n<database-connections><data-source name=\"maildb\"><dburl>sqlite://var/m.db</dburl></data-source></database-connections>\n<users-store>\n<repository name=\"LocalUsers\" destinationURL=\"dbfile://maildb/users\"/>\n</users-store></config>"
    ));
    assert!(
        e.iter().any(|e| e.starts_with(
            "config.xml:4: users repository \"LocalUsers\": \"dbfile://maildb/users\": dbfile:// keeps mail bodies in files"
        )),
        "{e:?}"
    );

    let e = errors(&format!("<config>{SPOOL}\n<James><inboxRepository><repository destinationURL=\"mbox:///var/mail\" type=\"MAIL\"/></inboxRepository></James></config>"));
    assert!(
        e[0].starts_with("config.xml:2: \"mbox:///var/mail\": mbox repositories are not supported"),
        "{e:?}"
    );

    let c = parse(&format!("<config>{SPOOL}</config>")).unwrap();
    assert_eq!(
        c.resolve_path("file://var/mail/spool/"),
        Path::new("/home/m/var/mail/spool/")
    );
    assert_eq!(c.resolve_path("file:///abs/x"), Path::new("/abs/x"));
    assert_eq!(c.resolve_path("conf/x"), Path::new("/home/m/conf/x"));
    assert_eq!(
        c.repository_url("db://maildb/inbox/").unwrap(),
        RepositoryUrl::Db {
            source: "maildb".into(),
            path: vec!["inbox".into()]
        }
    );
    assert!(c.repository_url("ftp://x").is_err());
    assert_eq!(
        c.local_users().unwrap().target,
        RepositoryUrl::File("/home/m/var/users".into())
    );
}

#[test]
fn home_defaults_to_the_config_directory() {
    let path = data_dir().join("james-config.xml");
    let c = Config::load(&path, None).unwrap();
    assert_eq!(c.home, data_dir());
    let e = Config::load(Path::new("/nonexistent/config.xml"), None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/config.xml: cannot read"),
        "{e}"
    );
}

#[test]
fn dns_servers_take_ports_and_bracketed_ipv6() {
    let text = format!(
        "<config>{SPOOL}<dnsserver><servers><server>192.0.2.53</server><server> 127.0.0.1:5353 </server>\
         <server>[::1]:5300</server><server>2001:db8::1</server><server>[2001:db8::2]</server></servers>\
         <autodiscover>false</autodiscover><authoritative>true</authoritative><maxcachesize>100</maxcachesize>\
         </dnsserver></config>"
    );
    let c = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let expected: Vec<SocketAddr> = [
        "192.0.2.53:53",
        "127.0.0.1:5353",
        "[::1]:5300",
        "[2001:db8::1]:53",
        "[2001:db8::2]:53",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    assert_eq!(c.dns.servers, expected);
    assert!(!c.dns.autodiscover);
    assert!(c.dns.authoritative);
    assert_eq!(c.dns.max_cache_size, 100);

    let default = parse(&format!("<config>{SPOOL}</config>")).unwrap();
    assert!(default.dns.servers.is_empty() && default.dns.autodiscover);

    let text = format!(
        "<config>{SPOOL}\n<dnsserver><servers>\n<server>dns.example.com</server>\n\
         <server>127.0.0.1:0</server>\n</servers></dnsserver></config>"
    );
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("config.xml:3: <server> must be the IP address of a DNS server"),
        "{e:?}"
    );
    assert!(e[1].starts_with("config.xml:4: <server>"), "{e:?}");
}

#[test]
fn default_submission_listener_and_auth_options() {
    let c = Config::embedded_default(Some(Path::new("/opt/mr"))).unwrap_or_else(|e| panic!("{e}"));
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let submission = &c.smtp[1];
    assert_eq!((submission.common.port, submission.common.bind), (5587, lo));
    assert_eq!(submission.auth_required, AuthRequired::True);
    assert!(submission.submission && submission.require_tls_for_auth && submission.verify_identity);
    assert!(submission.common.tls.start_tls);
    assert!(!c.smtp[0].submission);
    assert_eq!(c.auth_throttle, mailroom_config::AuthThrottle::default());

    let c = parse(&format!(
        r#"<config>{SPOOL}<authThrottle failures="2" window="60000" delay="50" maxDelay="200"/>
        <smtpserver><handler><authRequired>announce</authRequired><submission>true</submission>
        <verifyIdentity>false</verifyIdentity><requireTLSForAuth>false</requireTLSForAuth></handler></smtpserver></config>"#
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let t = c.auth_throttle;
    assert_eq!(t.failures, 2);
    assert_eq!(t.window, Duration::from_secs(60));
    assert_eq!((t.delay.as_millis(), t.max_delay.as_millis()), (50, 200));
    let s = &c.smtp[0];
    assert_eq!(s.auth_required, AuthRequired::Announce);
    assert!(s.submission && !s.verify_identity && !s.require_tls_for_auth);

    let e = errors(&format!(
        "<config>{SPOOL}\n<smtpserver><handler>\n<submission>true</submission></handler></smtpserver></config>"
    ));
    assert!(
        e[0].contains("<submission>true needs <authRequired>true"),
        "{e:?}"
    );
    let e = errors(&format!(
        "<config>{SPOOL}\n<authThrottle delay=\"500\" maxDelay=\"100\"/></config>"
    ));
    assert!(e[0].contains("maxDelay must not be below delay"), "{e:?}");
}

fn fetch_config(inner: &str) -> String {
    format!(
        "<config>\n<fetchmail enabled=\"true\">\n<fetch name=\"t\">\n<host>127.0.0.1</host>\n<interval>1000</interval>\n<accounts><account user=\"u\" password=\"p\" recipient=\"r@localhost\" customrcpt-header=\"X-Envelope-To\"/></accounts>\n{inner}\n</fetch>\n</fetchmail>\n{SPOOL}\n</config>"
    )
}

#[test]
fn fetch_ports_properties_and_providers() {
    let t = |inner: &str| {
        let c = parse(&fetch_config(inner)).unwrap_or_else(|e| panic!("{e}"));
        c.fetchmail.unwrap().tasks.remove(0)
    };
    let plain = t("");
    assert_eq!((plain.port, plain.implicit_tls), (110, false));
    assert_eq!(
        plain.start_tls,
        mailroom_config::fetchmail::StartTls::Optional
    );
    assert!(!plain.apop && !plain.trust_all && plain.ca_file.is_none());
    assert_eq!(
        plain.accounts[0].custom_rcpt_header.as_deref(),
        Some("X-Envelope-To")
    );
    let s = t("<javaMailProviderName>pop3s</javaMailProviderName>");
    assert_eq!((s.port, s.implicit_tls), (995, true));
    let p = t(
        "<javaMailProperties><property name=\"mail.pop3.port\" value=\"1110\"/>\
        <property name=\"mail.pop3.starttls.required\" value=\"true\"/>\
        <property name=\"mail.pop3.apop.enable\" value=\"true\"/>\
        <property name=\"mail.pop3.timeout\" value=\"5000\"/></javaMailProperties>\
        <cafile>tls/ca.pem</cafile>\
        <remotereceivedheader index=\"1\" reject=\"true\"/><recipientnotfound defer=\"true\"/>",
    );
    assert_eq!(p.port, 1110);
    assert_eq!(p.start_tls, mailroom_config::fetchmail::StartTls::Required);
    assert!(p.apop && p.recipient_not_found_defer);
    assert_eq!(p.timeout, Duration::from_secs(5));
    assert!(p.ca_file.unwrap().ends_with("tls/ca.pem"));
    assert_eq!(p.remote_received_header_index, 1);
    assert!(p.remote_received_header.reject);
    // <port> wins over the property.
    let both = t("<port>2110</port><javaMailProperties><property name=\"mail.pop3.port\" value=\"1110\"/></javaMailProperties>");
    assert_eq!(both.port, 2110);

    let e = parse(&fetch_config(
        "<javaMailProviderName>imap</javaMailProviderName>",
    ))
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("config.xml:7:")
            && msg.contains("\"imap\" is not supported")
            && msg.contains("IMAP"),
        "{msg}"
    );
    let e = parse(&fetch_config("<port>0</port>")).unwrap_err();
    assert!(e.to_string().contains("<port>"), "{e}");
}

#[test]
fn nntp_handler_and_expire_rules() {
    let c = parse(&format!(
        r#"<config>{SPOOL}<nntpserver><handler><authRequired>true</authRequired><requireTLSForAuth>false</requireTLSForAuth><maxArticleSize>64</maxArticleSize></handler></nntpserver>
<nntp-repository><expire interval="600"><group pattern="comp.*" days="30"/><group pattern="*" days="365"/></expire></nntp-repository></config>"#
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let n = &c.nntp[0];
    assert!(n.auth_required && !n.require_tls_for_auth);
    assert_eq!(n.max_article_size_kib, 64);
    let r = &c.nntp_repository;
    assert_eq!(r.expire_interval_secs, 600);
    assert_eq!(r.expire.len(), 2);
    assert_eq!(
        (r.expire[0].pattern.as_str(), r.expire[0].days),
        ("comp.*", 30)
    );
    let errs = errors(&format!(
        r#"<config>{SPOOL}<nntp-repository><expire><group pattern="x"/><rule/><group days="3"/></expire></nntp-repository></config>"#
    ));
    assert_eq!(errs.len(), 3, "{errs:?}");
}

#[test]
fn nntp_group_descriptions_and_unused_james_elements() {
    let c = parse(&format!(
        r#"<config>{SPOOL}<nntp-repository><articleIDPath>file://var/nntp/ids</articleIDPath>
<newsgroups only="true"><newsgroup description="Talk about	tests">comp.test</newsgroup><newsgroup>alt.test</newsgroup></newsgroups></nntp-repository></config>"#
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let r = &c.nntp_repository;
    assert_eq!(r.newsgroups, ["comp.test", "alt.test"]);
    assert_eq!(
        r.descriptions,
        [("comp.test".to_string(), "Talk about tests".to_string())]
    );
    assert!(r.newsgroups_only);
    assert_eq!(r.unused, ["articleIDPath"]);
}

/// Issue 16: every limit has a safe default, unset as in the embedded configuration, and 0
/// turns one off.
#[test]
fn connection_and_session_limits_have_safe_defaults() {
    let embedded = Config::embedded_default(Some(Path::new("/opt/mr"))).unwrap();
    let unset = parse(&format!("<config>{SPOOL}</config>")).unwrap();
    for c in [&embedded, &unset] {
        let l = &c.connections;
        assert_eq!(
            (
                l.max_connections,
                l.max_connections_per_ip,
                l.max_session_bytes
            ),
            (30, 10, 1 << 30)
        );
        assert_eq!(l.max_session_time, Some(Duration::from_secs(86_400)));
        assert_eq!(l.shutdown_deadline, Duration::from_secs(10));
    }
    for s in embedded.smtp.iter() {
        assert_eq!((s.max_message_bytes(), s.max_rcpt), (Some(50 << 20), 100));
    }
    let off = parse(&format!(
        "<config>{SPOOL}<connections><max-connections-per-ip>0</max-connections-per-ip>\
         <max-session-bytes>0</max-session-bytes><max-session-time>0</max-session-time>\
         <shutdown-deadline>2500</shutdown-deadline></connections>\
         <smtpserver><handler><maxmessagesize>0</maxmessagesize><maxRcpt>0</maxRcpt></handler>\
         </smtpserver></config>"
    ))
    .unwrap();
    let l = &off.connections;
    assert_eq!((l.max_connections_per_ip, l.max_session_bytes), (0, 0));
    assert_eq!(l.max_session_time, None);
    assert_eq!(l.shutdown_deadline, Duration::from_millis(2500));
    assert_eq!(
        (off.smtp[0].max_message_bytes(), off.smtp[0].max_rcpt),
        (None, 0)
    );
}

#[test]
fn virtual_user_tables_in_a_database() {
    let sources = "<database-connections><data-sources><data-source name=\"maildb\"><dburl>sqlite://var/mail.db</dburl></data-source></data-sources></database-connections>";
    let config = parse(&format!(
        "<config>{SPOOL}{sources}<virtualusertable-store>\
         <table name=\"DefaultVirtualUserTable\" class=\"org.apache.james.vut.JDBCVirtualUserTable\" destinationURL=\"db://maildb/VirtualUserTable\"/>\
         <table name=\"Sales\" destinationURL=\"db://maildb/sales_vut\"/>\
         </virtualusertable-store></config>"
    ))
    .unwrap();
    let tables: Vec<(&str, &str)> = config
        .virtual_user_tables
        .iter()
        .map(|t| (t.name.as_str(), t.url.as_str()))
        .collect();
    assert_eq!(
        tables,
        [
            ("default", "db://maildb/VirtualUserTable"),
            ("sales", "db://maildb/sales_vut")
        ]
    );
    let e = errors(&format!(
        "<config>{SPOOL}{sources}<virtualusertable-store>\n\
         <table name=\"a\" destinationURL=\"file://var/virtual/\"/>\n\
         <table name=\"b\" class=\"XMLVirtualUserTable\" destinationURL=\"db://maildb/b\"/>\n\
         <table name=\"c\" destinationURL=\"db://nosuch/c\"/>\n\
         <table name=\"c\" destinationURL=\"db://maildb/c2\"/>\n\
         <table destinationURL=\"db://maildb/d\"/>\n\
         <mapping/>\n\
         </virtualusertable-store></config>"
    ));
    assert_eq!(e.len(), 6, "{e:?}");
    assert!(e[0].contains("must be db://DATA-SOURCE/TABLE"), "{e:?}");
    assert!(e[1].contains("unknown virtual user table class"), "{e:?}");
    assert!(
        e[2].contains("\"db://nosuch/c\" uses data source \"nosuch\""),
        "{e:?}"
    );
    assert!(e[3].contains("is listed twice"), "{e:?}");
    assert!(e[4].contains("needs a name="), "{e:?}");
    assert!(e[5].contains("only <table>"), "{e:?}");
}

#[test]
fn a_news_repository_in_a_database() {
    let sources = "<database-connections><data-sources><data-source name=\"maildb\"><dburl>sqlite://var/mail.db</dburl></data-source></data-sources></database-connections>";
    let config = parse(&format!(
        "<config>{SPOOL}{sources}<nntp-repository><rootPath>db://maildb/</rootPath></nntp-repository></config>"
    ))
    .unwrap();
    assert_eq!(
        config
            .nntp_repository
            .root_db
            .as_ref()
            .map(|(s, _)| s.as_str()),
        Some("maildb")
    );
    let e = errors(&format!(
        "<config>{SPOOL}\n<nntp-repository>\n<rootPath>db://nosuch/</rootPath>\n<tempPath>db://maildb/</tempPath>\n</nntp-repository></config>"
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("config.xml:3: <rootPath> uses data source \"nosuch\""),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("config.xml:4: <tempPath>: \"db://maildb/\" is not a news repository"),
        "{e:?}"
    );
    let e = errors(&format!(
        "<config>{SPOOL}{sources}\n<nntp-repository>\n<rootPath>db://maildb/news</rootPath>\n</nntp-repository></config>"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("is not a news repository"), "{e:?}");
}
