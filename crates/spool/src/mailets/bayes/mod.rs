//! BayesianAnalysis and BayesianAnalysisFeeder, with James 2.3.2's parameters and semantics.
//!
//! The token counts live in James's tables of a `<database-connections>` data source
//! (`repositoryPath` `db://maildb`), reached through [`TokenStores`], which the server
//! implements (this crate opens no database itself). BayesianAnalysis keeps the corpus in
//! memory: loaded at its first mail, reloaded when a feeder of this server has trained since
//! and at least ten minutes have passed (James's `CorpusLoader`).

pub mod analyzer;

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use mailroom_mailet::{state, Mail, Mailet, MailetConfig, MailetContext, MailetError};
pub use mailroom_store::db::{Corpus as Feed, TokenCounts};

use crate::Registry;
use analyzer::Corpus;

/// The attribute that BayesianAnalysis sets to the probability (a number).
pub const ATTRIBUTE: &str = "org.apache.james.spam.probability";
/// The header BayesianAnalysis writes unless `headerName` says otherwise.
pub const DEFAULT_HEADER: &str = "X-MessageIsSpamProbability";
/// James's default `maxSize`: larger messages are not analysed (probability 0) or trained.
const DEFAULT_MAX_SIZE: u64 = 100_000;
/// How often the corpus is reloaded at most (James's `CORPUS_RELOAD_INTERVAL`).
const RELOAD_INTERVAL: Duration = Duration::from_secs(600);

/// Bumped by every training of this process (James's `lastDatabaseUpdateTime`): a corpus
/// loaded before it changed is reloaded.
static TRAININGS: AtomicU64 = AtomicU64::new(0);

/// One data source's token store.
pub trait TokenStore: Send + Sync {
    /// Every count.
    fn load(&self) -> Result<TokenCounts, MailetError>;
    /// Adds one message's token occurrences to `feed` and counts the message, atomically.
    fn add(&self, feed: Feed, tokens: &HashMap<String, u32>) -> Result<(), MailetError>;
}

/// The server's data sources as token stores.
pub trait TokenStores: Send + Sync {
    /// Whether `<database-connections>` declares a data source of this name (checked when
    /// the processor tree is built, so that `check-config` reports a wrong name).
    fn has_source(&self, name: &str) -> bool;
    /// The token store in data source `name` (tables created on first use).
    fn open(&self, name: &str) -> Result<Arc<dyn TokenStore>, MailetError>;
}

/// Registers BayesianAnalysis and BayesianAnalysisFeeder on the server's data sources.
pub fn register(registry: &mut Registry, stores: Arc<dyn TokenStores>) {
    let s = stores.clone();
    registry
        .add_mailet("BayesianAnalysis", move |c| {
            Ok(Box::new(BayesianAnalysis::new(c, s.clone())?))
        })
        .params(&["repositoryPath", "headerName", "ignoreLocalSender", "maxSize"])
        .about(
            "Scores the message with the Bayesian (Paul Graham) analyzer trained by \
             BayesianAnalysisFeeder in the tables of the data source of repositoryPath; sets \
             the header headerName (default X-MessageIsSpamProbability) and the attribute \
             org.apache.james.spam.probability to the probability, and prefixes the Subject \
             with [NN% spam] above 0.1 ([NN% SPAM] above 0.9). Messages of maxSize octets \
             (default 100000) or more score 0; ignoreLocalSender skips local senders.",
            r#"<mailet match="All" class="BayesianAnalysis"><repositoryPath>db://maildb</repositoryPath></mailet>"#,
        );
    registry
        .add_mailet("BayesianAnalysisFeeder", move |c| {
            Ok(Box::new(BayesianAnalysisFeeder::new(c, stores.clone())?))
        })
        .params(&["repositoryPath", "feedType", "maxSize"])
        .about(
            "Trains the Bayesian corpus in the data source of repositoryPath with the body of \
             the message as feedType (ham or spam), then ghosts the mail. Messages over \
             maxSize octets (default 100000) are ghosted untrained.",
            r#"<mailet match="RecipientIs=spam@example.com" class="BayesianAnalysisFeeder"><repositoryPath>db://maildb</repositoryPath><feedType>spam</feedType></mailet>"#,
        );
}

/// The token store of `repositoryPath`, opened at first use: building the tree (and
/// `check-config`) connects to nothing.
struct LazyStore {
    stores: Arc<dyn TokenStores>,
    source: String,
    store: OnceLock<Arc<dyn TokenStore>>,
}

impl LazyStore {
    fn new(config: &MailetConfig, stores: Arc<dyn TokenStores>) -> Result<LazyStore, MailetError> {
        let path = config.required("repositoryPath")?;
        let source = path
            .strip_prefix("db://")
            .map(|s| s.strip_suffix('/').unwrap_or(s))
            .filter(|s| !s.is_empty() && !s.contains('/'))
            .ok_or_else(|| {
                MailetError::new(format!(
                    "mailet {}: <repositoryPath> must be db://DATASOURCE (James keeps the \
                     tokens in a database), got {path:?}",
                    config.name
                ))
            })?;
        if !stores.has_source(source) {
            return Err(MailetError::new(format!(
                "mailet {}: <repositoryPath> {path}: no data source {source:?} in \
                 <database-connections>",
                config.name
            )));
        }
        Ok(LazyStore {
            stores,
            source: source.to_string(),
            store: OnceLock::new(),
        })
    }

    fn get(&self) -> Result<&Arc<dyn TokenStore>, MailetError> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let opened = self.stores.open(&self.source).map_err(|e| {
            MailetError::temporary(format!(
                "Bayesian token store in {}: {}",
                self.source,
                e.message()
            ))
        })?;
        Ok(self.store.get_or_init(|| opened))
    }
}

fn max_size(config: &MailetConfig) -> Result<u64, MailetError> {
    match config.param("maxSize") {
        None | Some("") => Ok(DEFAULT_MAX_SIZE),
        Some(v) => v.parse::<u32>().map(u64::from).map_err(|_| {
            MailetError::new(format!(
                "mailet {}: <maxSize> must be a number of octets, got {v:?}",
                config.name
            ))
        }),
    }
}

/// The message (or its body) as text, when it is small enough to be read whole.
fn read_text(reader: impl Read, limit: u64) -> Result<String, MailetError> {
    let mut bytes = Vec::new();
    reader.take(limit).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

struct Loaded {
    corpus: Arc<Corpus>,
    at: Instant,
    trainings: u64,
}

/// `BayesianAnalysis`.
struct BayesianAnalysis {
    store: LazyStore,
    header: String,
    ignore_local_sender: bool,
    max_size: u64,
    loaded: RwLock<Option<Loaded>>,
}

impl BayesianAnalysis {
    fn new(config: &MailetConfig, stores: Arc<dyn TokenStores>) -> Result<Self, MailetError> {
        let header = config.param("headerName").unwrap_or(DEFAULT_HEADER);
        if header.is_empty() || !header.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(MailetError::new(format!(
                "mailet {}: <headerName> must be a header field name, got {header:?}",
                config.name
            )));
        }
        Ok(BayesianAnalysis {
            store: LazyStore::new(config, stores)?,
            header: header.to_string(),
            ignore_local_sender: config.bool_param("ignoreLocalSender", false)?,
            max_size: max_size(config)?,
            loaded: RwLock::new(None),
        })
    }

    /// The corpus: loaded at first use, reloaded after a training once the interval passed.
    fn corpus(&self, ctx: &dyn MailetContext) -> Result<Arc<Corpus>, MailetError> {
        let trainings = TRAININGS.load(Ordering::Acquire);
        {
            let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = loaded.as_ref() {
                if l.trainings == trainings || l.at.elapsed() < RELOAD_INTERVAL {
                    return Ok(l.corpus.clone());
                }
            }
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        match self.store.get().and_then(|s| s.load()) {
            Ok(mut counts) => {
                // James's loadHamNSpam: a token seen once is noise.
                counts.ham.retain(|_, n| *n > 1);
                counts.spam.retain(|_, n| *n > 1);
                let corpus = Arc::new(Corpus::build(&counts));
                ctx.log(&format!(
                    "BayesianAnalysis: corpus loaded from {}: {} tokens, {} ham and {} spam \
                     messages",
                    self.store.source,
                    corpus.len(),
                    counts.ham_messages,
                    counts.spam_messages
                ));
                *loaded = Some(Loaded {
                    corpus: corpus.clone(),
                    at: Instant::now(),
                    trainings,
                });
                Ok(corpus)
            }
            Err(e) => match loaded.as_mut() {
                // Keep scoring with the corpus in memory; try again after the interval.
                Some(l) => {
                    ctx.log(&format!("BayesianAnalysis: reloading the corpus: {e}"));
                    l.at = Instant::now();
                    Ok(l.corpus.clone())
                }
                None => Err(MailetError::temporary(format!(
                    "BayesianAnalysis: loading the corpus: {}",
                    e.message()
                ))),
            },
        }
    }
}

impl Mailet for BayesianAnalysis {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        if self.ignore_local_sender
            && mail
                .sender()
                .is_some_and(|s| ctx.is_local_server(s.domain()))
        {
            return Ok(());
        }
        // Already analysed.
        if mail.message.header(&self.header).is_some() {
            return Ok(());
        }
        let probability = if mail.size() < self.max_size {
            let corpus = self.corpus(ctx)?;
            let text = read_text(mail.message.reader()?, self.max_size)?;
            corpus.spam_probability(&text)
        } else {
            0.0
        };
        mail.set_attribute(ATTRIBUTE, probability.into());
        mail.message
            .set_header(&self.header, &java_double(probability));
        if probability > 0.1 {
            let percent = percent(probability);
            let sender = mail.sender().map_or("null".to_string(), |s| s.to_string());
            let recipients: Vec<String> = mail.recipients().iter().map(|r| r.to_string()).collect();
            ctx.log(&format!(
                "{}: {percent}; From: {sender}; Recipient(s): [{}]",
                self.header,
                recipients.join(", ")
            ));
            let tag = format!(
                "[{percent} {}]",
                if probability > 0.9 { "SPAM" } else { "spam" }
            );
            let subject = match mail.message.header("Subject") {
                Some(s) if !s.trim().is_empty() => format!("{tag} {}", s.trim_start()),
                _ => tag,
            };
            mail.message.set_header("Subject", &subject);
        }
        Ok(())
    }
}

/// `BayesianAnalysisFeeder`.
struct BayesianAnalysisFeeder {
    store: LazyStore,
    feed: Feed,
    max_size: u64,
}

impl BayesianAnalysisFeeder {
    fn new(config: &MailetConfig, stores: Arc<dyn TokenStores>) -> Result<Self, MailetError> {
        let feed = match config.required("feedType")?.to_ascii_lowercase().as_str() {
            "ham" => Feed::Ham,
            "spam" => Feed::Spam,
            other => {
                return Err(MailetError::new(format!(
                    "mailet {}: <feedType> must be ham or spam, got {other:?}",
                    config.name
                )))
            }
        };
        Ok(BayesianAnalysisFeeder {
            store: LazyStore::new(config, stores)?,
            feed,
            max_size: max_size(config)?,
        })
    }
}

impl Mailet for BayesianAnalysisFeeder {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let id = mail.message.header("Message-ID").unwrap_or_default();
        if mail.size() > self.max_size {
            ctx.log(&format!(
                "{id} Feeding HAM/SPAM ignored because message size > {}: {}",
                self.max_size,
                mail.size()
            ));
            mail.set_state(state::GHOST);
            return Ok(());
        }
        // James clears every header first: only the body trains.
        let text = read_text(mail.message.body().open()?, self.max_size)?;
        let tokens = analyzer::token_occurrences(&text);
        // A database error is temporary: the mail stays in the spool and trains later,
        // rather than being ghosted untrained as James does.
        self.store.get()?.add(self.feed, &tokens)?;
        TRAININGS.fetch_add(1, Ordering::AcqRel);
        ctx.log(&format!(
            "{id} Feeding {}: training ended successfully",
            match self.feed {
                Feed::Ham => "HAM",
                Feed::Spam => "SPAM",
            }
        ));
        mail.set_state(state::GHOST);
        Ok(())
    }
}

/// Java's `Double.toString`: `0.5`, `1.0`, `1.0E-4` (what James writes in the header).
pub fn java_double(d: f64) -> String {
    if d == 0.0 {
        return "0.0".to_string();
    }
    if (1e-3..1e7).contains(&d.abs()) {
        let s = format!("{d}");
        return if s.contains('.') { s } else { format!("{s}.0") };
    }
    let s = format!("{d:e}");
    let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
    let mantissa = if mantissa.contains('.') {
        mantissa.to_string()
    } else {
        format!("{mantissa}.0")
    };
    format!("{mantissa}E{exponent}")
}

/// James's `##0.##%`: `99.98%`, `12.5%`, `100%`.
fn percent(p: f64) -> String {
    let s = format!("{:.2}", p * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

#[cfg(test)]
mod tests;
