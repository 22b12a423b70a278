//! `mailroom store copy --from OLD.xml --to NEW.xml`: copies what the repositories of one
//! configuration hold into those of another, from any backend to any other (file, SQLite,
//! PostgreSQL). Owns the pairing of the two configurations' repositories and the copy loop; it
//! opens repositories only through [`crate::repositories`] and changes nothing in the source.
//!
//! What is copied, in this order, each keyed so that **a second run copies nothing twice** and
//! an interrupted run, started again, copies what is missing. Every item copied is written
//! down in a ledger in the target's home (`var/store-copy/from-<digest of the source config's
//! path>.ledger`, one line per item), so that an item copied once and then removed from the
//! target (a message a user deleted over POP3, a spooled mail the new server has processed)
//! is not copied again by a later run either:
//!
//! * **users** of `LocalUsers`, with their password hashes as stored (a James SHA hash is
//!   upgraded at the user's next login, as it would have been), aliases and forwards; a user
//!   the target has already is left as it is there;
//! * **inboxes** of those users: every message with its UIDL (the target stores it under the
//!   same UIDL, [`InboxRepository::import`]) and so its POP3 size; a UIDL the target mailbox
//!   has already is skipped. Messages go through an unlinked temporary file, never whole in
//!   memory;
//! * **the spool**, by mail name. A mail waiting for a retry is due at once in the target;
//! * **virtual user tables**: every mapping (source and target) of the tables either
//!   configuration keeps in a database (`<virtualusertable-store>`) and of the source's table
//!   files (`var/virtual/*.json`), into the table of the same name in the target; a mapping
//!   the target has already is skipped;
//! * **news**, when both configurations run an NNTP server: every group, and every article
//!   once with its groups, poster and octets (posted anew in the target, which gives its own
//!   numbers and `Xref:`); an article whose Message-ID the target has is skipped;
//! * **mail repositories and RemoteDelivery outgoing spools** that both configurations name,
//!   paired by where they are named: the processor, the mailet's class and its place among
//!   the mailets of that class there, and the parameter (`repositoryPath`, `outgoing`...). A
//!   repository only one of them names is said in the log and left alone.
//!
//! Neither server may run: a server answering on the control socket of either configuration
//! stops the copy before anything is opened (a server holding the spool there otherwise, or a
//! POP3 session holding a mailbox, fails the copy at that repository, with nothing lost: run
//! it again afterwards).

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mailroom_config::Config;
use mailroom_mailet::{header_section_len, BodySource, Message, MAX_HEADER_SECTION};
use mailroom_store::{
    InboxRepository, MailRepository, MappingsRepository, NewArticle, NewsRepository,
    UsersRepository,
};
use tokio::io::AsyncWriteExt;

use crate::databases::Databases;
use crate::repositories::{self, AdminRepositories, MailRepositories};

/// How many items of one repository were copied and how many the target had already.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Stored in the target by this run.
    pub copied: u64,
    /// In the target already (an earlier run, or put there otherwise).
    pub present: u64,
    /// Copied by an earlier run and removed from the target since: not copied again.
    pub earlier: u64,
}

impl Counts {
    /// Ends a repository's progress bar and logs what was copied of `what`.
    fn finish(self, progress: &ProgressBar, what: &str) -> Counts {
        progress.finish_and_clear();
        tracing::info!(
            copied = self.copied,
            present = self.present,
            earlier = self.earlier,
            "{what} copied"
        );
        self
    }

    fn add(&mut self, other: Counts) {
        self.copied += other.copied;
        self.present += other.present;
        self.earlier += other.earlier;
    }
}

/// What earlier runs from the same source copied into the target: one line per item, made
/// durable every [`Ledger::SYNC_EVERY`] items and at the end. An entry lost in a crash only
/// means that the item, if the target has it, is found there; if the target has lost it
/// meanwhile too, it is copied again.
struct Ledger {
    done: HashSet<String>,
    file: std::io::BufWriter<std::fs::File>,
    unsynced: usize,
}

impl Ledger {
    const SYNC_EVERY: usize = 256;

    /// The ledger of copies from `source` (a config file) into the home of `target`.
    fn open(source: &Path, target: &Config) -> Result<Ledger> {
        let source = source
            .canonicalize()
            .with_context(|| source.display().to_string())?;
        let digest = source
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
        let dir = target.home.join("var/store-copy");
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let path = dir.join(format!("from-{digest:016x}.ledger"));
        let done = match std::fs::read_to_string(&path) {
            Ok(text) => text.lines().map(str::to_string).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e).with_context(|| path.display().to_string()),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| path.display().to_string())?;
        Ok(Ledger {
            done,
            file: std::io::BufWriter::new(file),
            unsynced: 0,
        })
    }

    /// Writes `key` down (once).
    fn record(&mut self, key: String) -> Result<()> {
        use std::io::Write;
        if self.done.contains(&key) {
            return Ok(());
        }
        writeln!(self.file, "{key}")?;
        self.done.insert(key);
        self.unsynced += 1;
        if self.unsynced >= Self::SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        use std::io::Write;
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        self.unsynced = 0;
        Ok(())
    }

    /// Counts one item of the source: in the target already (`present`), copied by an earlier
    /// run and gone since, or to be copied now (`true`).
    fn should_copy(&mut self, key: String, present: bool, counts: &mut Counts) -> Result<bool> {
        if present {
            counts.present += 1;
            self.record(key)?;
            Ok(false)
        } else if self.done.contains(&key) {
            counts.earlier += 1;
            Ok(false)
        } else {
            Ok(true)
        }
    }
}

/// One configuration's repositories, opened.
struct Side {
    config: Config,
    db: Arc<Databases>,
}

impl Side {
    fn load(path: &Path, runtime: &tokio::runtime::Runtime) -> Result<Side> {
        let config = Config::load(path, None)
            .map_err(|errors| anyhow!("{}: invalid configuration:\n{errors}", path.display()))?;
        let db = Databases::new(&config, runtime.handle().clone());
        Ok(Side { config, db })
    }
}

/// Runs `mailroom store copy`.
pub fn run(from: &Path, to: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let source = Side::load(from, &runtime)?;
    let target = Side::load(to, &runtime)?;
    for (side, path) in [(&source, from), (&target, to)] {
        refuse_if_running(&side.config, path)?;
    }
    let mut ledger = Ledger::open(from, &target.config)?;
    let total = runtime.block_on(copy_all(&source, &target, &mut ledger));
    ledger.sync()?;
    let total = total?;
    eprintln!(
        "mailroom: copy done: {} item(s) copied, {} already there, {} copied by an earlier run \
         and removed from the target since",
        total.copied, total.present, total.earlier
    );
    Ok(())
}

/// Fails when a server of `config` answers on its control socket.
fn refuse_if_running(config: &Config, path: &Path) -> Result<()> {
    let admin = AdminRepositories::new(config)?;
    let socket = admin.spool_dir().join(crate::queue::CONTROL_SOCKET);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        bail!(
            "a server of {} is running (it answers on {}): stop it before copying",
            path.display(),
            socket.display()
        );
    }
    Ok(())
}

async fn copy_all(source: &Side, target: &Side, ledger: &mut Ledger) -> Result<Counts> {
    let mut total = Counts::default();
    let from_users = repositories::users(&source.config, &source.db)?;
    let to_users = repositories::users(&target.config, &target.db)?;
    let names = from_users.list().await?;
    total.add(copy_users(&*from_users, &*to_users, &names, ledger).await?);

    let from_inbox = repositories::inbox(&source.config, &source.db)?;
    let to_inbox = repositories::inbox(&target.config, &target.db)?;
    total.add(copy_inboxes(&*from_inbox, &*to_inbox, &names, ledger).await?);

    let from_spool = repositories::spool(&source.config, &source.db)?;
    let to_spool = repositories::spool(&target.config, &target.db)?;
    total.add(copy_mails("spool", "spool", &*from_spool, &*to_spool, ledger).await?);

    let from_mappings = repositories::mappings(&source.config, &source.db)?;
    let to_mappings = repositories::mappings(&target.config, &target.db)?;
    let tables = mapping_tables(&source.config, &target.config)?;
    total.add(copy_mappings(&*from_mappings, &*to_mappings, &tables, ledger).await?);

    let from_news = repositories::news(
        &source.config,
        &crate::server::nntp_host(&source.config),
        &source.db,
    )?;
    let to_news = repositories::news(
        &target.config,
        &crate::server::nntp_host(&target.config),
        &target.db,
    )?;
    match (from_news, to_news) {
        (Some(from), Some(to)) => total.add(copy_news(&*from, &*to, ledger).await?),
        (Some(_), None) => {
            tracing::warn!("the target configuration runs no NNTP server: news not copied")
        }
        _ => {}
    }

    let from_named = named_repositories(&source.config);
    let to_named = named_repositories(&target.config);
    let from_mail = MailRepositories::new(&source.config, source.db.clone())?;
    let to_mail = MailRepositories::new(&target.config, target.db.clone())?;
    for (key, from_url, outgoing) in &from_named {
        let Some((_, to_url, _)) = to_named.iter().find(|(k, _, _)| k == key) else {
            tracing::warn!(repository = %from_url, named_at = %key,
                "the target configuration names no repository here: not copied");
            continue;
        };
        let (from_repo, to_repo): (Arc<dyn MailRepository>, Arc<dyn MailRepository>) = if *outgoing
        {
            let open = |side: &Side, url: &str| {
                repositories::outgoing(&side.config, &side.db, url)
                    .map(|s| s as Arc<dyn MailRepository>)
                    .map_err(|e| anyhow!("outgoing spool {url}: {e}"))
            };
            (open(source, from_url)?, open(target, to_url)?)
        } else {
            (
                from_mail.open(from_url).context(from_url.clone())?,
                to_mail.open(to_url).context(to_url.clone())?,
            )
        };
        total.add(copy_mails(to_url, key, &*from_repo, &*to_repo, ledger).await?);
    }
    for (key, to_url, _) in &to_named {
        if !from_named.iter().any(|(k, _, _)| k == key) {
            tracing::info!(repository = %to_url, named_at = %key,
                "the source configuration names no repository here: nothing to copy into it");
        }
    }
    Ok(total)
}

/// The repository URLs the mailets of `config` name: (where, URL, whether it is a
/// RemoteDelivery outgoing spool).
fn named_repositories(config: &Config) -> Vec<(String, String, bool)> {
    let mut named = Vec::new();
    for processor in &config.spool_manager.processors {
        let mut seen: Vec<&str> = Vec::new();
        for mailet in &processor.mailets {
            let class = mailet.class.rsplit('.').next().unwrap_or(&mailet.class);
            let place = seen.iter().filter(|c| **c == class).count();
            seen.push(class);
            let at = |param: &str| format!("{}/{class}#{place}/{param}", processor.name);
            if let Some(url) = mailroom_delivery::configured_outgoing(mailet) {
                named.push((at("outgoing"), url, true));
                continue;
            }
            for (param, value) in &mailet.params {
                let value = value.trim();
                if ["file:", "db:", "dbfile:"]
                    .iter()
                    .any(|scheme| value.starts_with(scheme))
                {
                    named.push((at(param), value.to_string(), false));
                }
            }
        }
    }
    named
}

/// The virtual user tables to copy: `default`, those either configuration keeps in a
/// database, and the source's table files.
fn mapping_tables(source: &Config, target: &Config) -> Result<Vec<String>> {
    let mut tables = vec![mailroom_store::mappings::DEFAULT_TABLE.to_string()];
    let configured = source
        .virtual_user_tables
        .iter()
        .chain(&target.virtual_user_tables);
    tables.extend(configured.map(|t| t.name.clone()));
    let dir = source.home.join("var/virtual");
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                let name = entry?.file_name();
                if let Some(table) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
                    tables.push(table.to_string());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow!("{}: {e}", dir.display())),
    }
    tables.sort();
    tables.dedup();
    Ok(tables)
}

/// Copies every mapping of `tables`.
async fn copy_mappings(
    from: &dyn MappingsRepository,
    to: &dyn MappingsRepository,
    tables: &[String],
    ledger: &mut Ledger,
) -> Result<Counts> {
    let progress = bar("mappings", tables.len() as u64);
    let mut counts = Counts::default();
    for table in tables {
        progress.set_message(table.clone());
        for (source, targets) in from.all(table).await? {
            let there = to.get(table, &source).await?;
            for target in targets {
                let key = format!("mapping\t{table}\t{source}\t{target}");
                let present = there.contains(&target);
                if ledger.should_copy(key.clone(), present, &mut counts)? {
                    to.add(table, &source, &target)
                        .await
                        .with_context(|| format!("table {table}: {source} -> {target}"))?;
                    ledger.record(key)?;
                    counts.copied += 1;
                }
            }
        }
        progress.inc(1);
    }
    Ok(counts.finish(&progress, "virtual user tables"))
}

/// Copies every group and every article, each article once with all its groups.
async fn copy_news(
    from: &dyn NewsRepository,
    to: &dyn NewsRepository,
    ledger: &mut Ledger,
) -> Result<Counts> {
    let groups = from.groups().await?;
    let total: u64 = groups.iter().map(|g| g.count).sum();
    let progress = bar("news", total);
    let mut counts = Counts::default();
    for group in &groups {
        to.create_group(&group.name)
            .await
            .with_context(|| format!("newsgroup {}", group.name))?;
    }
    for id in posting_order(from, &groups).await? {
        progress.set_message(id.clone());
        // Cancelled meanwhile: nothing to copy.
        let Some(article) = from.article_by_id(&id).await? else {
            continue;
        };
        let key = format!("news\t{id}");
        let present = to.article_by_id(&id).await?.is_some();
        if ledger.should_copy(key.clone(), present, &mut counts)? {
            // Its groups in the order of its `Xref:` (the order it was posted to them).
            let located: Vec<String> = from
                .locate(&id)
                .await?
                .unwrap_or_default()
                .into_iter()
                .map(|(g, _)| g)
                .collect();
            let mut groups: Vec<String> = xref_groups(&article.octets)
                .into_iter()
                .filter(|g| located.contains(g))
                .collect();
            for g in located {
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
            let new = NewArticle {
                message_id: id.clone(),
                groups,
                octets: without_xref(&article.octets),
                poster: article.poster.clone(),
            };
            to.post(&new)
                .await
                .with_context(|| format!("article {id}"))?;
            ledger.record(key)?;
            counts.copied += 1;
        }
        progress.inc(1);
    }
    Ok(counts.finish(&progress, "news"))
}

/// Every article's Message-ID once, in an order that keeps each group's number order (the
/// order they were posted in), so that the target numbers them alike: the next is always one
/// at the head of every group it is in. Read from the overview: no article is opened.
async fn posting_order(
    from: &dyn NewsRepository,
    groups: &[mailroom_store::GroupInfo],
) -> Result<Vec<String>> {
    let mut lists: Vec<std::collections::VecDeque<String>> = Vec::new();
    let mut places: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for group in groups {
        let over = from.overview(&group.name, group.low, group.high).await?;
        let ids: std::collections::VecDeque<String> =
            over.iter().map(|o| o.message_id().to_string()).collect();
        for id in &ids {
            *places.entry(id.clone()).or_default() += 1;
        }
        lists.push(ids);
    }
    let mut order = Vec::with_capacity(places.len());
    let mut seen = HashSet::new();
    while lists.iter().any(|l| !l.is_empty()) {
        let mut at_head: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for id in lists.iter().filter_map(|l| l.front()) {
            *at_head.entry(id.as_str()).or_default() += 1;
        }
        // Numbered out of order somewhere (never by a repository): take the first head.
        let first_head = || lists.iter().find_map(|l| l.front()).cloned();
        let next = lists
            .iter()
            .filter_map(|l| l.front())
            .find(|id| at_head.get(id.as_str()) == places.get(id.as_str()))
            .cloned()
            .or_else(first_head)
            .expect("a list is not empty");
        for list in &mut lists {
            if list.front() == Some(&next) {
                list.pop_front();
                if let Some(n) = places.get_mut(&next) {
                    *n -= 1;
                }
            }
        }
        if seen.insert(next.clone()) {
            order.push(next);
        }
    }
    Ok(order)
}

/// The groups of an article's `Xref:` header (`Xref: host group:number ...`), in its order.
fn xref_groups(octets: &[u8]) -> Vec<String> {
    mailroom_store::news::header_fields(octets)
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("xref"))
        .map(|(_, value)| {
            value
                .split_whitespace()
                .skip(1)
                .filter_map(|place| place.rsplit_once(':').map(|(g, _)| g.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// An article without the `Xref:` header its repository added (the target adds its own).
fn without_xref(octets: &[u8]) -> Vec<u8> {
    let head = mailroom_store::news::header_section(octets).len();
    let mut out = Vec::with_capacity(octets.len());
    let mut skipping = false;
    for line in octets[..head].split_inclusive(|&b| b == b'\n') {
        let continued = line.starts_with(b" ") || line.starts_with(b"\t");
        if !continued {
            skipping = line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"xref:");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(&octets[head..]);
    out
}

/// A progress bar on standard error for `len` items (drawn only at a terminal).
fn bar(what: &str, len: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// Copies the users called `names`.
async fn copy_users(
    from: &dyn UsersRepository,
    to: &dyn UsersRepository,
    names: &[String],
    ledger: &mut Ledger,
) -> Result<Counts> {
    let progress = bar("users", names.len() as u64);
    let mut counts = Counts::default();
    for name in names {
        progress.set_message(name.clone());
        // Removed from the source meanwhile: nothing to copy.
        if let Some(user) = from.get(name).await? {
            let key = format!("user\t{name}");
            let present = to.get(name).await?.is_some();
            if ledger.should_copy(key.clone(), present, &mut counts)? {
                to.add(&user)
                    .await
                    .with_context(|| format!("user {name}"))?;
                ledger.record(key)?;
                counts.copied += 1;
            }
        }
        progress.inc(1);
    }
    Ok(counts.finish(&progress, "users"))
}

/// Copies the inboxes of `users`, message by message, keeping every UIDL.
async fn copy_inboxes(
    from: &dyn InboxRepository,
    to: &dyn InboxRepository,
    users: &[String],
    ledger: &mut Ledger,
) -> Result<Counts> {
    let progress = bar("inboxes", users.len() as u64);
    let mut counts = Counts::default();
    for user in users {
        let source = from
            .open_mailbox(user)
            .await
            .with_context(|| format!("the source inbox of {user}"))?;
        let target = to
            .open_mailbox(user)
            .await
            .with_context(|| format!("the target inbox of {user}"))?;
        let there: HashSet<String> = target.messages().iter().map(|m| m.uid.clone()).collect();
        for (index, message) in source.messages().iter().enumerate() {
            progress.set_message(format!("{user}: {}", message.uid));
            let key = format!("inbox\t{user}\t{}", message.uid);
            if !ledger.should_copy(key.clone(), there.contains(&message.uid), &mut counts)? {
                continue;
            }
            let stream = source.open_message(index).await?;
            let copy = spooled(stream)
                .await
                .with_context(|| format!("reading message {} of {user}", message.uid))?;
            if to
                .import(user, &message.uid, &copy)
                .await
                .with_context(|| format!("message {} of {user}", message.uid))?
            {
                counts.copied += 1;
            } else {
                counts.present += 1;
            }
            ledger.record(key)?;
        }
        drop(target);
        progress.inc(1);
    }
    Ok(counts.finish(&progress, "inbox messages"))
}

/// Copies every mail of `from` that `to` has no mail of that name of.
async fn copy_mails(
    what: &str,
    key: &str,
    from: &dyn MailRepository,
    to: &dyn MailRepository,
    ledger: &mut Ledger,
) -> Result<Counts> {
    let names = from.list().await?;
    let there: HashSet<String> = to.list().await?.into_iter().collect();
    let progress = bar(what, names.len() as u64);
    let mut counts = Counts::default();
    for name in names {
        progress.set_message(name.clone());
        let item = format!("mail\t{key}\t{name}");
        if ledger.should_copy(item.clone(), there.contains(&name), &mut counts)? {
            if let Some(mail) = from.retrieve(&name).await? {
                to.store(&mail)
                    .await
                    .with_context(|| format!("{what}: mail {name}"))?;
                ledger.record(item)?;
                counts.copied += 1;
            }
        }
        progress.inc(1);
    }
    Ok(counts.finish(&progress, &format!("mails of {what}")))
}

/// A stored message read into an unlinked temporary file, as a [`Message`]: its header
/// section in memory (bounded by [`MAX_HEADER_SECTION`]), its body read from the file.
async fn spooled(mut stream: mailroom_store::MessageStream) -> Result<Message> {
    let file = tempfile::tempfile().context("creating a temporary file")?;
    let mut writer = tokio::fs::File::from_std(file.try_clone()?);
    let len = tokio::io::copy(&mut stream, &mut writer).await?;
    writer.flush().await?;
    drop(writer);
    let mut file = file;
    file.seek(SeekFrom::Start(0))?;
    let mut head = Vec::new();
    (&mut file)
        .take(MAX_HEADER_SECTION as u64 + 2)
        .read_to_end(&mut head)?;
    let header_len = header_section_len(&head);
    head.truncate(header_len);
    let body = FileRange {
        file: Arc::new(file),
        start: header_len as u64,
        len: len - header_len as u64,
    };
    Ok(Message::new(head, Arc::new(body)))
}

/// The body of a [`spooled`] message: a range of its temporary file.
#[derive(Debug)]
struct FileRange {
    file: Arc<std::fs::File>,
    start: u64,
    len: u64,
}

impl BodySource for FileRange {
    fn len(&self) -> u64 {
        self.len
    }

    fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(RangeReader {
            file: self.file.clone(),
            pos: self.start,
            end: self.start + self.len,
        }))
    }
}

/// Reads a [`FileRange`] with positional reads (each reader has its own position).
struct RangeReader {
    file: Arc<std::fs::File>,
    pos: u64,
    end: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xref_groups_in_their_order() {
        let stored = b"From: a@b\r\nXref: h comp.test:3 alt.test:1\r\n\r\nx\r\n";
        assert_eq!(xref_groups(stored), ["comp.test", "alt.test"]);
        assert!(xref_groups(b"From: a@b\r\n\r\nx\r\n").is_empty());
    }

    #[test]
    fn the_repositorys_xref_is_taken_out() {
        let stored = b"From: a@b\r\nXref: old.example comp.test:3\r\n  alt.test:1\r\nSubject: s\r\n\r\nXref: in the body\r\n";
        assert_eq!(
            without_xref(stored),
            b"From: a@b\r\nSubject: s\r\n\r\nXref: in the body\r\n".to_vec()
        );
    }

    #[test]
    fn repositories_pair_by_where_they_are_named() {
        let home = tempfile::tempdir().unwrap();
        let config = Config::embedded_default(Some(home.path())).unwrap();
        let named = named_repositories(&config);
        assert!(
            named
                .iter()
                .any(|(k, u, o)| k.starts_with("error/ToRepository#0/")
                    && u.starts_with("file:")
                    && !o),
            "{named:?}"
        );
        assert!(named.iter().any(|(_, _, o)| *o), "{named:?}");
        let keys: HashSet<&String> = named.iter().map(|(k, _, _)| k).collect();
        assert_eq!(keys.len(), named.len(), "keys are unique: {named:?}");
    }

    #[tokio::test]
    async fn a_spooled_message_keeps_its_octets_and_header_section() {
        let text = b"Subject: x\r\nFrom: a@b\r\n\r\nline 1\nline 2\r\n".to_vec();
        let stream: mailroom_store::MessageStream = Box::new(std::io::Cursor::new(text.clone()));
        let message = spooled(stream).await.unwrap();
        assert_eq!(message.header_section(), b"Subject: x\r\nFrom: a@b\r\n\r\n");
        assert_eq!(message.to_bytes().unwrap(), text);
        assert_eq!(message.size(), text.len() as u64);
    }
}
