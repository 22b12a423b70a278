use std::collections::BTreeMap;
use std::sync::Mutex;

use mailroom_mailet::{Envelope, MailAddress, Message};

use super::*;
use crate::mailets::testing::Recorder;

/// A token store in memory, and the context the mailets log into.
#[derive(Default)]
struct Memory {
    counts: Mutex<TokenCounts>,
    fail: std::sync::atomic::AtomicBool,
    opened: AtomicU64,
}

impl TokenStore for Memory {
    fn load(&self) -> Result<TokenCounts, MailetError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(MailetError::temporary("database away"));
        }
        Ok(self.counts.lock().unwrap().clone())
    }
    fn add(&self, feed: Feed, tokens: &HashMap<String, u32>) -> Result<(), MailetError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(MailetError::temporary("database away"));
        }
        let mut guard = self.counts.lock().unwrap();
        let counts = &mut *guard;
        let (map, messages) = match feed {
            Feed::Ham => (&mut counts.ham, &mut counts.ham_messages),
            Feed::Spam => (&mut counts.spam, &mut counts.spam_messages),
        };
        for (t, n) in tokens {
            *map.entry(t.clone()).or_insert(0) += n;
        }
        *messages += 1;
        Ok(())
    }
}

struct Stores(Arc<Memory>);

impl TokenStores for Stores {
    fn has_source(&self, name: &str) -> bool {
        name == "maildb"
    }
    fn open(&self, _: &str) -> Result<Arc<dyn TokenStore>, MailetError> {
        self.0.opened.fetch_add(1, Ordering::SeqCst);
        Ok(self.0.clone())
    }
}

/// The mailet tests' context, its local domain `localhost`.
fn ctx() -> Recorder {
    Recorder::with_users("localhost", &[])
}

fn mailet(memory: &Arc<Memory>, name: &str, params: &[(&str, &str)]) -> Box<dyn Mailet> {
    try_mailet(memory, name, params).unwrap_or_else(|e| panic!("{e}"))
}

fn try_mailet(
    memory: &Arc<Memory>,
    name: &str,
    params: &[(&str, &str)],
) -> Result<Box<dyn Mailet>, MailetError> {
    let mut registry = Registry::default();
    register(&mut registry, Arc::new(Stores(memory.clone())));
    let config = MailetConfig {
        name: name.to_string(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    registry.mailet(name).unwrap()(&config)
}

fn mail(sender: &str, text: &str) -> Mail {
    let envelope = Envelope::new(
        "m1",
        MailAddress::parse(sender).ok(),
        vec![MailAddress::parse("bob@localhost").unwrap()],
    );
    Mail::new(envelope, Message::from_bytes(text.as_bytes()))
}

const SPAM: &str =
    "Subject: offer\r\n\r\nBuy cheap pills now! Cheap viagra, best price, click here\r\n";
const HAM: &str =
    "Subject: notes\r\n\r\nHello team, the meeting notes and the project schedule are attached\r\n";

fn train(memory: &Arc<Memory>) {
    let spam = mailet(
        memory,
        "BayesianAnalysisFeeder",
        &[("repositoryPath", "db://maildb"), ("feedType", "spam")],
    );
    let ham = mailet(
        memory,
        "BayesianAnalysisFeeder",
        &[("repositoryPath", "db://maildb/"), ("feedType", "HAM")],
    );
    // Spam occurrences count once, ham twice: a token needs 5 to weigh.
    for _ in 0..5 {
        let mut m = mail("x@example.net", SPAM);
        spam.service(&mut m, &ctx()).unwrap();
        assert_eq!(m.state(), state::GHOST);
        let mut m = mail("x@example.net", HAM);
        ham.service(&mut m, &ctx()).unwrap();
        assert_eq!(m.state(), state::GHOST);
    }
}

#[test]
fn feeder_trains_the_body_only() {
    let memory = Arc::new(Memory::default());
    train(&memory);
    let counts = memory.counts.lock().unwrap().clone();
    assert_eq!((counts.ham_messages, counts.spam_messages), (5, 5));
    assert_eq!(counts.spam["Cheap"], 5);
    assert_eq!(counts.spam["cheap"], 5);
    assert_eq!(counts.ham["meeting"], 5);
    // Headers are not trained.
    assert!(!counts.spam.contains_key("Subject:offer"));
    // The store is opened once, at first use.
    assert_eq!(memory.opened.load(Ordering::SeqCst), 2);
}

#[test]
fn analysis_scores_sets_header_attribute_and_subject() {
    let memory = Arc::new(Memory::default());
    train(&memory);
    let analysis = mailet(
        &memory,
        "BayesianAnalysis",
        &[("repositoryPath", "db://maildb")],
    );
    let mut m = mail(
        "spammer@example.net",
        "Subject: hi\r\n\r\ncheap pills, click here\r\n",
    );
    analysis.service(&mut m, &ctx()).unwrap();
    let header = m.message.header(DEFAULT_HEADER).unwrap();
    let p: f64 = header.parse().unwrap();
    assert!(p > 0.9, "{header}");
    assert_eq!(m.attribute(ATTRIBUTE), Some(&p.into()));
    let subject = m.message.header("Subject").unwrap();
    assert!(
        subject.starts_with('[') && subject.ends_with("% SPAM] hi"),
        "{subject}"
    );

    let mut m = mail(
        "friend@example.net",
        "Subject: x\r\n\r\nthe meeting schedule\r\n",
    );
    analysis.service(&mut m, &ctx()).unwrap();
    let p: f64 = m.message.header(DEFAULT_HEADER).unwrap().parse().unwrap();
    assert!(p < 0.1, "{p}");
    assert_eq!(m.message.header("Subject").as_deref(), Some("x"));

    // Already analysed: left alone.
    let mut m = mail(
        "spammer@example.net",
        "X-MessageIsSpamProbability: 0.0\r\n\r\ncheap pills\r\n",
    );
    analysis.service(&mut m, &ctx()).unwrap();
    assert_eq!(m.attribute(ATTRIBUTE), None);
}

#[test]
fn analysis_options() {
    let memory = Arc::new(Memory::default());
    train(&memory);
    let analysis = mailet(
        &memory,
        "BayesianAnalysis",
        &[
            ("repositoryPath", "db://maildb"),
            ("headerName", "X-Spam-Score"),
            ("ignoreLocalSender", "true"),
            ("maxSize", "60"),
        ],
    );
    // A local sender is not analysed.
    let mut m = mail("alice@localhost", "Subject: a\r\n\r\ncheap pills\r\n");
    analysis.service(&mut m, &ctx()).unwrap();
    assert_eq!(m.message.header("X-Spam-Score"), None);
    // maxSize or more: probability 0.
    let long = format!("Subject: a\r\n\r\ncheap pills {}\r\n", "x ".repeat(40));
    let mut m = mail("x@example.net", &long);
    analysis.service(&mut m, &ctx()).unwrap();
    assert_eq!(m.message.header("X-Spam-Score").as_deref(), Some("0.0"));
    assert_eq!(m.attribute(ATTRIBUTE), Some(&0.0.into()));
    let mut m = mail("x@example.net", "Subject: a\r\n\r\ncheap pills\r\n");
    analysis.service(&mut m, &ctx()).unwrap();
    assert!(m.message.header("X-Spam-Score").is_some());
}

#[test]
fn store_failures_are_temporary() {
    let memory = Arc::new(Memory::default());
    memory.fail.store(true, Ordering::SeqCst);
    let feeder = mailet(
        &memory,
        "BayesianAnalysisFeeder",
        &[("repositoryPath", "db://maildb"), ("feedType", "spam")],
    );
    let mut m = mail("x@example.net", SPAM);
    let e = feeder.service(&mut m, &ctx()).unwrap_err();
    assert!(e.is_temporary());
    // Not ghosted: it trains when the database is back.
    assert_ne!(m.state(), state::GHOST);
    let analysis = mailet(
        &memory,
        "BayesianAnalysis",
        &[("repositoryPath", "db://maildb")],
    );
    let mut m = mail("x@example.net", SPAM);
    assert!(analysis.service(&mut m, &ctx()).unwrap_err().is_temporary());
    assert_eq!(m.message.header(DEFAULT_HEADER), None);
    memory.fail.store(false, Ordering::SeqCst);
    analysis.service(&mut m, &ctx()).unwrap();
    assert!(m.message.header(DEFAULT_HEADER).is_some());
}

#[test]
fn factories_check_every_parameter() {
    let memory = Arc::new(Memory::default());
    /// Mailet, parameters, and what the error names.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let bad: &[Case] = &[
        ("BayesianAnalysis", &[], "repositoryPath"),
        (
            "BayesianAnalysis",
            &[("repositoryPath", "file://var/bayes/")],
            "db://",
        ),
        (
            "BayesianAnalysis",
            &[("repositoryPath", "db://other")],
            "no data source",
        ),
        (
            "BayesianAnalysis",
            &[("repositoryPath", "db://maildb/x/y")],
            "db://",
        ),
        (
            "BayesianAnalysis",
            &[("repositoryPath", "db://maildb"), ("maxSize", "big")],
            "maxSize",
        ),
        (
            "BayesianAnalysis",
            &[
                ("repositoryPath", "db://maildb"),
                ("ignoreLocalSender", "maybe"),
            ],
            "ignoreLocalSender",
        ),
        (
            "BayesianAnalysis",
            &[("repositoryPath", "db://maildb"), ("headerName", "X Bad:")],
            "headerName",
        ),
        (
            "BayesianAnalysisFeeder",
            &[("repositoryPath", "db://maildb")],
            "feedType",
        ),
        (
            "BayesianAnalysisFeeder",
            &[("repositoryPath", "db://maildb"), ("feedType", "eggs")],
            "feedType",
        ),
        (
            "BayesianAnalysisFeeder",
            &[
                ("repositoryPath", "db://maildb"),
                ("feedType", "ham"),
                ("maxSize", "-1"),
            ],
            "maxSize",
        ),
    ];
    for (name, params, why) in bad {
        let e = try_mailet(&memory, name, params)
            .err()
            .unwrap_or_else(|| panic!("{params:?}"));
        assert!(e.message().contains(why), "{params:?}: {e}");
    }
    // Building opens nothing.
    assert_eq!(memory.opened.load(Ordering::SeqCst), 0);
}

#[test]
fn java_number_formats() {
    assert_eq!(java_double(0.0), "0.0");
    assert_eq!(java_double(1.0), "1.0");
    assert_eq!(java_double(0.5), "0.5");
    assert_eq!(java_double(0.9999), "0.9999");
    assert_eq!(java_double(1.0e-4), "1.0E-4");
    assert_eq!(java_double(2.5e-7), "2.5E-7");
    assert_eq!(percent(0.99994), "99.99%");
    assert_eq!(percent(0.125), "12.5%");
    assert_eq!(percent(1.0), "100%");
    assert_eq!(percent(0.5), "50%");
}
