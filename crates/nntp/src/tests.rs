//! Session tests: every command against the file news repository, each script replayed whole,
//! split at every octet, and with pipelined input.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailroom_store::blocking::NewsRepository;
use mailroom_store::file::FileNewsRepository;
use mailroom_store::StoreError;

use crate::session::{Answer, Outcome, PostFailure, Query, Session};
use crate::NntpSettings;

fn clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_751_371_200) // 2025-07-01 12:00:00 UTC
}

struct Rig {
    _dir: tempfile::TempDir,
    news: FileNewsRepository,
    settings: Arc<NntpSettings>,
    /// Each session gets its own nonce, as the driver draws one at random.
    nonce: std::cell::Cell<u64>,
}

fn rig(settings: NntpSettings) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let news = FileNewsRepository::open(&dir.path().join("g"), &dir.path().join("t"), "news.test")
        .unwrap();
    news.create_group("comp.test").unwrap();
    news.create_group("alt.test").unwrap();
    Rig {
        _dir: dir,
        news,
        settings: Arc::new(NntpSettings {
            hello_name: "news.test".into(),
            article_id_domain: "news.test".into(),
            clock,
            ..settings
        }),
        nonce: std::cell::Cell::new(100),
    }
}

impl Rig {
    /// Answers a query as the driver does, synchronously.
    fn run(&self, query: Query) -> Answer {
        let n = &self.news;
        match query {
            Query::Groups => Answer::Groups(n.groups().unwrap()),
            Query::Group(g) => Answer::Group(n.group(&g).unwrap()),
            Query::Numbers { group, low, high } => {
                Answer::Numbers(n.numbers(&group, low, high).unwrap())
            }
            Query::Article { group, number } => Answer::Article(n.article(&group, number).unwrap()),
            Query::ArticleById(id) => Answer::Article(n.article_by_id(&id).unwrap()),
            Query::Locate(id) => Answer::Located(n.locate(&id).unwrap()),
            Query::Overview { group, low, high } => {
                Answer::Overview(n.overview(&group, low, high).unwrap())
            }
            Query::Headers {
                group,
                low,
                high,
                field,
            } => Answer::Headers(
                n.numbers(&group, low, high)
                    .unwrap()
                    .into_iter()
                    .map(|num| {
                        let a = n.article(&group, num).unwrap().unwrap();
                        (num, crate::header_value(&a.octets, &field))
                    })
                    .collect(),
            ),
            Query::Arrivals(t) => Answer::Arrivals(n.arrived_since(t).unwrap()),
            Query::Cancel(id) => Answer::Cancelled(n.remove_article(&id).unwrap()),
            Query::Post(a) => Answer::Posted(n.post(&a).map_err(|e| match e {
                StoreError::AlreadyExists(_) => PostFailure::Duplicate,
                StoreError::NotFound(_) => PostFailure::NoSuchGroup,
                _ => PostFailure::Temporary,
            })),
        }
    }

    /// Feeds `chunks` one after the other; logins succeed for alice/secret.
    fn feed(&self, session: &mut Session, chunks: &[&[u8]]) -> (String, bool) {
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for chunk in chunks {
            pending.extend_from_slice(chunk);
            loop {
                let (used, mut outcome) = session.ingest(&pending, &mut out);
                pending.drain(..used);
                loop {
                    outcome = match outcome {
                        Outcome::Continue => break,
                        // These sessions have no TLS, so never offer STARTTLS.
                        Outcome::Close | Outcome::StartTls => {
                            return (String::from_utf8_lossy(&out).into_owned(), true)
                        }
                        Outcome::Query(q) => {
                            let a = self.run(q);
                            session.answer(a, &mut out)
                        }
                        Outcome::Login { user, password } => {
                            let ok = ["alice", "bob"].contains(&user.as_str())
                                && password.expose() == "secret";
                            session.logged_in(ok.then_some(user), &mut out)
                        }
                    };
                }
                if pending.is_empty() || used == 0 {
                    break;
                }
            }
        }
        (String::from_utf8_lossy(&out).into_owned(), false)
    }

    /// Runs `input` in a new session; returns what it wrote.
    fn script(&self, input: &str) -> String {
        self.nonce.set(self.nonce.get() + 1);
        let mut session = Session::new(self.settings.clone(), self.nonce.get(), false);
        self.feed(&mut session, &[input.as_bytes()]).0
    }
}

fn post(rig: &Rig, article: &str) -> String {
    rig.script(&format!("POST\r\n{article}.\r\n"))
}

const ARTICLE: &str = "From: Alice <alice@example.org>\r\nNewsgroups: comp.test\r\nSubject: first\r\n\r\nhello\r\n..dotted\r\n";

#[test]
fn reading_commands() {
    let rig = rig(NntpSettings::default());
    assert_eq!(
        post(&rig, ARTICLE),
        "340 send article to be posted; end with <CR-LF>.<CR-LF>\r\n240 article received ok\r\n"
    );
    post(
        &rig,
        &ARTICLE
            .replace("first", "second")
            .replace("comp.test", "comp.test,alt.test"),
    );
    let out = rig.script(
        "GROUP comp.test\r\nSTAT\r\nNEXT\r\nNEXT\r\nLAST\r\nLAST\r\nARTICLE 1\r\nHEAD\r\nBODY 2\r\nSTAT 9\r\n\
         OVER 1-\r\nXOVER 2\r\nHDR Subject 1-2\r\nXHDR Newsgroups 2\r\nXPAT Subject 1- s*\r\nLISTGROUP\r\nLISTGROUP alt.test 1-1\r\n",
    );
    let id1 = rig.news.overview("comp.test", 1, 1).unwrap()[0]
        .message_id()
        .to_string();
    let id2 = rig.news.overview("comp.test", 2, 2).unwrap()[0]
        .message_id()
        .to_string();
    let expected_start = format!(
        "211 2 1 2 comp.test\r\n223 1 {id1}\r\n223 2 {id2}\r\n421 no next article in this group\r\n223 1 {id1}\r\n\
         422 no previous article in this group\r\n220 1 {id1}\r\nFrom: Alice <alice@example.org>\r\n"
    );
    assert!(out.starts_with(&expected_start), "{out}");
    assert!(
        out.contains("\r\nXref: news.test comp.test:1\r\n\r\nhello\r\n..dotted\r\n.\r\n221 1 "),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "222 2 {id2}\r\nhello\r\n..dotted\r\n.\r\n423 no article with that number\r\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("224 overview information follows\r\n1\tfirst\tAlice <alice@example.org>\t"),
        "{out}"
    );
    assert!(
        out.contains("\tXref: news.test comp.test:2 alt.test:1\r\n.\r\n"),
        "{out}"
    );
    assert!(
        out.contains("225 headers follow\r\n1 first\r\n2 second\r\n.\r\n"),
        "{out}"
    );
    assert!(
        out.contains("221 Newsgroups fields follow\r\n2 comp.test,alt.test\r\n.\r\n"),
        "{out}"
    );
    assert!(
        out.contains("221 Subject fields follow\r\n2 second\r\n.\r\n"),
        "{out}"
    );
    assert!(out.ends_with("211 2 1 2 comp.test list follows\r\n1\r\n2\r\n.\r\n211 1 1 1 alt.test list follows\r\n1\r\n.\r\n"), "{out}");

    // By Message-ID, with no group selected.
    let out = rig.script(&format!("STAT {id2}\r\nHEAD {id2}\r\nOVER {id2}\r\nHDR subject {id2}\r\nXHDR subject {id2}\r\nARTICLE <no@such>\r\nSTAT <no@such>\r\n"));
    assert!(
        out.starts_with(&format!("223 0 {id2}\r\n221 0 {id2}\r\n")),
        "{out}"
    );
    assert!(
        out.contains("224 overview information follows\r\n0\tsecond\t"),
        "{out}"
    );
    assert!(out.contains(&format!("225 headers follow\r\n0 second\r\n.\r\n221 subject fields follow\r\n{id2} second\r\n.\r\n")), "{out}");
    assert!(
        out.ends_with(
            "430 no article with that message-id\r\n430 no article with that message-id\r\n"
        ),
        "{out}"
    );

    // Lists, dates, NEWNEWS and NEWGROUPS.
    let out = rig.script("LIST\r\nLIST ACTIVE alt.*\r\nLIST NEWSGROUPS\r\nLIST OVERVIEW.FMT\r\nLIST HEADERS\r\nLIST DISTRIB.PATS\r\nDATE\r\nNEWNEWS comp.* 19990101 000000 GMT\r\nNEWNEWS !* 19990101 000000\r\nNEWGROUPS 700101 000000\r\nNEWGROUPS 20991231 235959\r\n");
    assert!(out.starts_with("215 list of newsgroups follows\r\nalt.test 1 1 y\r\ncomp.test 2 1 y\r\n.\r\n215 list of newsgroups follows\r\nalt.test 1 1 y\r\n.\r\n"), "{out}");
    assert!(
        out.contains("215 information follows\r\nalt.test\t(no description)\r\ncomp.test\t(no description)\r\n.\r\n"),
        "{out}"
    );
    assert!(out.contains("Xref:full\r\n.\r\n215 metadata items supported:\r\n:\r\n:bytes\r\n:lines\r\n.\r\n215 information follows\r\n.\r\n111 20250701120000\r\n"), "{out}");
    assert!(out.contains(&format!("230 list of new articles follows\r\n{id1}\r\n{id2}\r\n.\r\n230 list of new articles follows\r\n.\r\n")), "{out}");
    assert!(out.ends_with("231 list of new newsgroups follows\r\nalt.test 1 1 y\r\ncomp.test 2 1 y\r\n.\r\n231 list of new newsgroups follows\r\n.\r\n"), "{out}");
}

#[test]
fn every_split_gives_the_same_replies() {
    let rig = rig(NntpSettings::default());
    post(&rig, ARTICLE);
    let script = "MODE READER\r\nGROUP comp.test\nARTICLE\r\nOVER 1-5\r\nCAPABILITIES\r\nHELP\r\nQUIT\r\nGROUP x\r\n";
    let whole = rig.script(script);
    assert!(whole.ends_with("205 closing connection\r\n"), "{whole}");
    for at in 1..script.len() {
        let mut session = Session::new(rig.settings.clone(), 7, false);
        let (a, b) = script.as_bytes().split_at(at);
        let (out, closed) = rig.feed(&mut session, &[a, b]);
        assert_eq!(out, whole, "split at {at}");
        assert!(closed);
    }
    // Octet by octet.
    let mut session = Session::new(rig.settings.clone(), 7, false);
    let chunks: Vec<&[u8]> = script.as_bytes().chunks(1).collect();
    assert_eq!(rig.feed(&mut session, &chunks).0, whole);
}

#[test]
fn posting_rules() {
    let rig = rig(NntpSettings {
        max_article_size: 2000,
        ..NntpSettings::default()
    });
    let refused = |article: &str, why: &str| {
        let out = post(&rig, article);
        assert!(
            out.ends_with(&format!("441 posting failed: {why}\r\n")),
            "{out}"
        );
    };
    refused(
        "Newsgroups: comp.test\r\nSubject: s\r\n\r\nb\r\n",
        "missing From header",
    );
    refused(
        "From: a@b\r\nSubject: s\r\n\r\nb\r\n",
        "missing Newsgroups header",
    );
    refused(
        "From: a@b\r\nNewsgroups: comp.test\r\n\r\nb\r\n",
        "missing Subject header",
    );
    refused(
        "From: a@b\r\nNewsgroups: no.such\r\nSubject: s\r\n\r\nb\r\n",
        "no such newsgroup",
    );
    refused("garbage\r\n\r\nb\r\n", "not a header field: garbage");
    refused(
        &format!(
            "From: a@b\r\nNewsgroups: comp.test\r\nSubject: s\r\n\r\n{}\r\n",
            "x".repeat(3000)
        ),
        "article too large",
    );
    let out = rig.script("POST\r\nFrom: a@b\nNewsgroups: comp.test\nSubject: s\n\nb\r\n.\r\n");
    assert!(
        out.ends_with("441 posting failed: bare CR or LF in article\r\n"),
        "{out}"
    );
    assert_eq!(rig.news.group("comp.test").unwrap().unwrap().count, 0);

    // Duplicates: POST 441, IHAVE 435 before and 437 after the transfer.
    let with_id =
        "From: a@b\r\nNewsgroups: comp.test\r\nSubject: s\r\nMessage-ID: <dup@x>\r\n\r\nb\r\n";
    assert!(post(&rig, with_id).ends_with("240 article received ok\r\n"));
    refused(with_id, "duplicate Message-ID");
    assert_eq!(
        rig.script("IHAVE <dup@x>\r\n"),
        "435 article not wanted: already have it\r\n"
    );
    let ihave = "From: a@b\r\nNewsgroups: comp.test\r\nSubject: s\r\nMessage-ID: <new@x>\r\nPath: far\r\n\r\nb\r\n";
    let out = rig.script(&format!(
        "IHAVE <new@x>\r\n{ihave}.\r\nIHAVE <other@x>\r\n{ihave}.\r\n"
    ));
    assert_eq!(out, "335 send article to be transferred; end with <CR-LF>.<CR-LF>\r\n235 article transferred ok\r\n\
        335 send article to be transferred; end with <CR-LF>.<CR-LF>\r\n437 transfer rejected: Message-ID differs from the one announced by IHAVE\r\n");
    let stored = rig.news.article_by_id("<new@x>").unwrap().unwrap();
    assert!(String::from_utf8(stored.octets)
        .unwrap()
        .contains("Path: news.test!far\r\n"));

    // Cancels: only by the login that posted the original, whatever the From says.
    let as_user = |user: Option<&str>, from: &str, target: &str| {
        let login = user.map_or(String::new(), |u| {
            format!("AUTHINFO USER {u}\r\nAUTHINFO PASS secret\r\n")
        });
        rig.script(&format!("{login}POST\r\nFrom: {from}\r\nNewsgroups: comp.test\r\nSubject: cmsg cancel {target}\r\nControl: cancel {target}\r\n\r\n.\r\n"))
    };
    let refused = "441 cancel refused: only the login that posted an article may cancel it\r\n";
    // <dup@x> was posted without a login: nobody may cancel it.
    assert!(as_user(None, "a@b", "<dup@x>").ends_with(refused));
    assert!(as_user(Some("alice"), "a@b", "<dup@x>").ends_with(refused));
    let own = "From: Alice <alice@example.org>\r\nNewsgroups: comp.test\r\nSubject: s\r\nMessage-ID: <own@x>\r\n\r\nb\r\n";
    let out = rig.script(&format!(
        "AUTHINFO USER alice\r\nAUTHINFO PASS secret\r\nPOST\r\n{own}.\r\n"
    ));
    assert!(out.ends_with("240 article received ok\r\n"), "{out}");
    assert_eq!(
        rig.news
            .article_by_id("<own@x>")
            .unwrap()
            .unwrap()
            .poster
            .as_deref(),
        Some("alice")
    );
    // A forged From does not make bob (or an anonymous session) alice.
    assert!(as_user(Some("bob"), "Alice <alice@example.org>", "<own@x>").ends_with(refused));
    assert!(as_user(None, "Alice <alice@example.org>", "<own@x>").ends_with(refused));
    assert!(rig.news.locate("<own@x>").unwrap().is_some());
    assert!(
        as_user(Some("alice"), "someone@else", "<own@x>").ends_with("240 article cancelled\r\n")
    );
    assert!(rig.news.locate("<own@x>").unwrap().is_none());
    assert!(as_user(Some("alice"), "a@b", "<own@x>").ends_with("441 cancel: no such article\r\n"));
    assert!(rig.news.locate("<dup@x>").unwrap().is_some());
}

#[test]
fn bad_input_and_wrong_state() {
    let rig = rig(NntpSettings::default());
    let out = rig.script(&format!(
        "XYZZY\r\n\r\nGROUP\r\nGROUP no.such\r\nNEXT\r\nARTICLE\r\nARTICLE 1\r\nOVER\r\nLISTGROUP\r\nARTICLE x\r\n\
         LIST ACTIVE [a\r\nNEWNEWS * 20251301 000000\r\nNEWGROUPS 2025 000000\r\n{}\r\nGROUP a\0b\r\nGROUP comp.test\r\nARTICLE\r\nOVER\r\n\
         AUTHINFO PASS x\r\nMODE STREAM\r\nSLAVE\r\nLIST EXTENSIONS\r\nSTARTTLS\r\n",
        "A".repeat(10_000)
    ));
    let codes: Vec<&str> = out
        .lines()
        .filter(|l| l.len() > 3 && l.as_bytes()[3] == b' ')
        .map(|l| &l[..3])
        .collect();
    assert_eq!(
        codes,
        [
            "500", "500", "501", "411", "412", "412", "412", "412", "412", "501", "501", "501",
            "501", "501", "501", "211", "420", "420", "482", "501", "202", "215", "580"
        ],
        "{out}"
    );
}

#[test]
fn group_descriptions_and_list_extensions_follow_the_settings() {
    let described = rig(NntpSettings {
        descriptions: Arc::new([("comp.test".to_string(), "Testing, testing".to_string())].into()),
        plaintext_auth: false,
        ..NntpSettings::default()
    });
    let out = described.script("LIST NEWSGROUPS\r\nLIST NEWSGROUPS comp.*\r\nLIST EXTENSIONS\r\n");
    assert_eq!(
        out,
        "215 information follows\r\nalt.test\t(no description)\r\ncomp.test\tTesting, testing\r\n.\r\n\
         215 information follows\r\ncomp.test\tTesting, testing\r\n.\r\n\
         215 extensions supported:\r\nOVER\r\nHDR\r\nLISTGROUP\r\nXPAT\r\n.\r\n"
    );
    // AUTHINFO USER only where it can be used (as in CAPABILITIES), and not after a login.
    let plain = rig(NntpSettings::default());
    let out = plain.script(
        "LIST EXTENSIONS\r\nAUTHINFO USER alice\r\nAUTHINFO PASS secret\r\nLIST EXTENSIONS\r\n",
    );
    assert_eq!(
        out,
        "215 extensions supported:\r\nOVER\r\nHDR\r\nLISTGROUP\r\nXPAT\r\nAUTHINFO USER\r\n.\r\n\
         381 password required\r\n281 authentication accepted\r\n\
         215 extensions supported:\r\nOVER\r\nHDR\r\nLISTGROUP\r\nXPAT\r\n.\r\n"
    );
}

#[test]
fn authinfo_and_auth_required() {
    let rig = rig(NntpSettings {
        auth_for_reading: true,
        auth_for_posting: true,
        ..NntpSettings::default()
    });
    let out = rig.script("GROUP comp.test\r\nPOST\r\nCAPABILITIES\r\nAUTHINFO USER alice\r\nAUTHINFO PASS wrong\r\nAUTHINFO USER alice\r\nAUTHINFO PASS secret\r\nGROUP comp.test\r\nAUTHINFO USER alice\r\n");
    assert!(out.starts_with("480 authentication required (AUTHINFO USER)\r\n480 authentication required (AUTHINFO USER)\r\n101 "), "{out}");
    assert!(out.contains("AUTHINFO USER\r\n.\r\n381 password required\r\n481 authentication failed\r\n381 password required\r\n281 authentication accepted\r\n211 0 1 0 comp.test\r\n502 already authenticated\r\n"), "{out}");
    // Three failures close the session.
    let mut session = Session::new(rig.settings.clone(), 1, false);
    let (out, closed) = rig.feed(&mut session, &[b"AUTHINFO USER a\r\nAUTHINFO PASS b\r\nAUTHINFO USER a\r\nAUTHINFO PASS b\r\nAUTHINFO USER a\r\nAUTHINFO PASS b\r\nDATE\r\n"]);
    assert!(
        closed && out.ends_with("481 authentication failed\r\n") && !out.contains("111"),
        "{out}"
    );

    // No plaintext AUTHINFO without TLS when so configured.
    let strict = rig_with(NntpSettings {
        plaintext_auth: false,
        ..NntpSettings::default()
    });
    let out = strict.script("CAPABILITIES\r\nAUTHINFO USER alice\r\n");
    assert!(
        !out.contains("AUTHINFO USER\r\n")
            && out.ends_with("483 Encryption or stronger authentication required\r\n"),
        "{out}"
    );
}

fn rig_with(settings: NntpSettings) -> Rig {
    rig(settings)
}

#[test]
fn read_only() {
    let rig = rig(NntpSettings {
        read_only: true,
        ..NntpSettings::default()
    });
    let mut session = Session::new(rig.settings.clone(), 1, false);
    let mut out = Vec::new();
    session.greet(&mut out);
    let (rest, _) = rig.feed(
        &mut session,
        &[b"POST\r\nIHAVE <a@b>\r\nMODE READER\r\nCAPABILITIES\r\n"],
    );
    let all = String::from_utf8(out).unwrap() + &rest;
    assert!(all.starts_with("201 news.test Mailroom NNTP service ready, posting prohibited\r\n440 posting not permitted\r\n435 "), "{all}");
    assert!(
        all.contains("201 reader mode, posting prohibited\r\n") && !all.contains("\r\nPOST\r\n"),
        "{all}"
    );
}
