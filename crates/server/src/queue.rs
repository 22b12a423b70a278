//! `mailroom queue list|show|flush|delete`: the mails of the spool, of a RemoteDelivery
//! outgoing spool, or of a mail repository the configuration names, whether the server runs
//! or not. An outgoing spool is a log spool like the main one, and is handled like it.
//!
//! A running server holds the spool's `flock` and is the only writer of its log, so:
//!
//! * **list and show read**, and never write: a spool through [`LogSpool::snapshot`], which
//!   reads the segment files without the lock (they are only ever appended to), and a mail
//!   repository through [`FileMailRepository::open_existing`], which creates and changes
//!   nothing. Both work the same with the server running or stopped.
//! * **flush and delete ask the server** over its control socket, `control.sock` in the spool
//!   directory (a Unix socket, mode 0600: only the server's user may use it; it needs no
//!   RemoteManager). The CLI sends one line, `flush|delete NAME|* URL|-`; the server acts on
//!   its open spool and repositories — as the console's `flushspool`/`deletespool` do — and
//!   answers `OK <count>` or `ERR <reason>`. When nothing answers there, the server is not
//!   running: the CLI opens the spool itself, which takes the lock, so that a server starting
//!   meanwhile waits for nothing and cannot share the log (the open fails with the spool
//!   "in use" instead).
//!
//! Flushing a spooled mail (in the main spool or an outgoing one: a remote delivery's retry)
//! makes it due at once ([`SpoolRepository::make_due`]: its next
//! attempt is dropped and nothing else is written; a mail being processed right now stays
//! with its worker, and is not counted). Flushing a mail of a repository sends it back
//! to the spool in state `root` with its error message cleared, stored in the spool before it
//! is removed from the repository. Deleting removes it; a spooled mail being processed at
//! that moment may still finish its current step.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use mailroom_mailet::{Envelope, Mail};
use mailroom_net::ShutdownWatch;
use mailroom_store::admin::{flush_to_spool, one_line};
use mailroom_store::blocking::MailRepository as _;
use mailroom_store::file::{FileMailRepository, LogSpool, Snapshot};
use mailroom_store::{Blocking, MailRepository, SpoolRepository, StoreError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::cli::{Cli, QueueAction};
use crate::queue_db::{DbMail, DbSpool};
use crate::repositories::{AdminRepositories, AdminTarget, MailRepositories};

/// The control socket's file name in the spool directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// How long the CLI waits for the server's answer (a flush of many mails takes a while).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest request line the server reads.
const MAX_REQUEST: u64 = 4096;

/// What flush and delete do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Due at once (spool), or back to the spool in state `root` (repository).
    Flush,
    /// Removed.
    Delete,
}

/// One flush or delete: which mail (`None`: all) of which repository (`None`: the spool).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    verb: Verb,
    name: Option<String>,
    url: Option<String>,
}

impl Request {
    /// The request as one line of the control protocol.
    fn line(&self) -> String {
        let verb = match self.verb {
            Verb::Flush => "flush",
            Verb::Delete => "delete",
        };
        let name = self.name.as_deref().unwrap_or("*");
        let url = self.url.as_deref().unwrap_or("-");
        format!("{verb} {name} {url}\n")
    }

    /// Parses a line of the control protocol. A line without its `\n` was cut short (at the
    /// length limit, or by the client going away) and is refused, never acted on.
    fn parse(line: &str) -> Result<Request, String> {
        let Some(line) = line.strip_suffix('\n') else {
            return Err("request not terminated by a line feed".into());
        };
        let mut parts = line.trim_end_matches('\r').splitn(3, ' ');
        let verb = match parts.next() {
            Some("flush") => Verb::Flush,
            Some("delete") => Verb::Delete,
            _ => return Err("unknown request".into()),
        };
        let name = match parts.next() {
            Some("*") => None,
            Some(name) if !name.is_empty() => Some(name.to_string()),
            _ => return Err("no mail name".into()),
        };
        let url = match parts.next() {
            Some("-") => None,
            Some(url) if !url.is_empty() => Some(url.to_string()),
            _ => return Err("no repository".into()),
        };
        Ok(Request { verb, name, url })
    }
}

/// Opens the mail repository of a directory an administrator named (`url` for messages).
pub type Opener =
    Box<dyn Fn(&str, &Path) -> Result<Arc<dyn MailRepository>, StoreError> + Send + Sync>;

/// Opens the mail repository at a `db://` URL an administrator named.
pub type DbOpener = Box<dyn Fn(&str) -> Result<Arc<dyn MailRepository>, StoreError> + Send + Sync>;

/// What flush and delete act on: the spool, the outgoing spools, and the configured mail
/// repositories.
pub struct Repos {
    /// Which URLs may be named.
    pub admin: AdminRepositories,
    /// The spool; `None` when it was not opened because the request does not act on it (a
    /// delete in a repository with the server stopped: the spool is then neither created nor
    /// given a new segment).
    pub spool: Option<Arc<dyn SpoolRepository>>,
    /// The open outgoing spools, by directory (as [`AdminRepositories::resolve`] gives it).
    pub outgoing: Vec<(PathBuf, Arc<dyn SpoolRepository>)>,
    /// Opens a configured mail repository.
    pub open: Opener,
    /// Opens a configured mail repository in a database, by its `db://` URL.
    pub open_db: DbOpener,
    /// The server's FetchMail tasks (`fetchmail NAME` requests), when it runs them.
    pub fetchmail: Option<mailroom_fetchmail::FetchMail>,
}

impl Repos {
    /// The repositories of a running server: its spool, its outgoing spools, and the
    /// repositories its mailets opened (or an administrator's handle of one they have not).
    pub fn of_server(
        admin: AdminRepositories,
        spool: Arc<dyn SpoolRepository>,
        outgoing: Vec<(PathBuf, Arc<dyn SpoolRepository>)>,
        mail: Arc<MailRepositories>,
    ) -> Repos {
        Repos {
            admin,
            spool: Some(spool),
            outgoing,
            open: {
                let mail = mail.clone();
                Box::new(move |url, dir| mail.open_existing(url, dir))
            },
            open_db: Box::new(move |url| mail.open(url)),
            fetchmail: None,
        }
    }

    /// The open outgoing spool in `dir`.
    pub fn outgoing(&self, dir: &Path) -> Option<Arc<dyn SpoolRepository>> {
        self.outgoing
            .iter()
            .find(|(d, _)| d == dir)
            .map(|(_, spool)| spool.clone())
    }
}

/// Carries out a flush or delete; returns how many mails it changed.
pub async fn apply(request: &Request, repos: &Repos) -> Result<usize, String> {
    let target = match &request.url {
        None => AdminTarget::Spool,
        Some(url) => repos.admin.resolve(url).map_err(|e| e.to_string())?,
    };
    let spool = || {
        repos
            .spool
            .clone()
            .ok_or_else(|| "the spool is not open".to_string())
    };
    let url = request.url.as_deref().unwrap_or("-");
    // A log spool (where flushing makes a mail due at once), or a mail repository.
    let (repository, log_spool): (Arc<dyn MailRepository>, _) = match &target {
        AdminTarget::Spool => (spool()?, Some(spool()?)),
        AdminTarget::Outgoing(_) | AdminTarget::DbOutgoing(_) => {
            let outgoing = target
                .outgoing_key()
                .and_then(|key| repos.outgoing(&key))
                .ok_or_else(|| format!("the outgoing spool {url} is not open"))?;
            (outgoing.clone(), Some(outgoing))
        }
        AdminTarget::Mail(dir) => ((repos.open)(url, dir).map_err(|e| e.to_string())?, None),
        AdminTarget::DbMail(key) => ((repos.open_db)(key).map_err(|e| e.to_string())?, None),
    };
    let names = match &request.name {
        Some(name) => vec![name.clone()],
        None => repository.list().await.map_err(|e| e.to_string())?,
    };
    let mut done = 0;
    for name in names {
        let changed = match (request.verb, &log_spool) {
            (Verb::Delete, _) => repository.remove(&name).await,
            (Verb::Flush, Some(log_spool)) => log_spool.make_due(&name).await,
            (Verb::Flush, None) => flush_to_spool(&*spool()?, &*repository, &name, &|_| true).await,
        };
        match changed {
            Ok(true) => done += 1,
            Ok(false) => {}
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    tracing::info!(
        request = request.line().trim_end(),
        mails = done,
        "queue request done"
    );
    Ok(done)
}

/// Binds the control socket in the spool directory (which this server has locked, so a file
/// left there by a crash is stale and replaced). A failure is logged: the server runs on, and
/// `mailroom queue flush|delete` then says that nothing answers.
pub fn bind_control(spool_dir: &Path) -> Option<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = spool_dir.join(CONTROL_SOCKET);
    let _ = std::fs::remove_file(&path);
    let bound = UnixListener::bind(&path).and_then(|listener| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    });
    match bound {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::warn!(socket = %path.display(), error = %e,
                "cannot open the control socket; `mailroom queue flush|delete` will not reach this server");
            None
        }
    }
}

/// Answers control requests until shutdown, then removes the socket file.
pub async fn serve_control(listener: UnixListener, repos: Arc<Repos>, mut shutdown: ShutdownWatch) {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    loop {
        let accepted = tokio::select! {
            () = shutdown.recv() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // The socket's mode already keeps other users out; this holds even if its mode or
        // directory is changed by hand.
        let own = rustix::process::getuid().as_raw();
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == own => {}
            other => {
                tracing::warn!(peer = ?other.map(|c| c.uid()).ok(),
                    "control socket: request from another user refused");
                continue;
            }
        }
        let repos = repos.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader =
                tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
            let read =
                tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await;
            let answer = match read {
                Ok(Ok(_)) if line.starts_with("fetchmail ") => {
                    crate::fetch::answer(&line, repos.fetchmail.as_ref()).await
                }
                Ok(Ok(_)) => match Request::parse(&line) {
                    Ok(request) => match apply(&request, &repos).await {
                        Ok(n) => format!("OK {n}\n"),
                        Err(e) => format!("ERR {e}\n"),
                    },
                    Err(e) => format!("ERR {e}\n"),
                },
                _ => "ERR no request\n".to_string(),
            };
            let _ = write.write_all(answer.as_bytes()).await;
        });
    }
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
}

/// Runs one `mailroom queue` command.
pub fn run(cli: &Cli, action: &QueueAction) -> Result<()> {
    let config = crate::server::load_config(cli)?;
    let admin = AdminRepositories::new(&config)?;
    match action {
        QueueAction::List { url } => list(&config, &admin, url.as_deref()),
        QueueAction::Show { name, url } => show(&config, &admin, name, url.as_deref()),
        QueueAction::Flush { all, args } => change(&config, &admin, Verb::Flush, *all, args),
        QueueAction::Delete { all, args } => change(&config, &admin, Verb::Delete, *all, args),
    }
}

/// What list and show read: a log spool (the spool or an outgoing spool) in this directory,
/// the spool in a database, or a repository opened without changing anything.
enum Source {
    Spool(PathBuf),
    Database(DbSpool),
    Repository(FileMailRepository),
    DbRepository(DbMail),
}

/// Opens what `url` names for reading; with the name to show.
fn source(
    config: &mailroom_config::Config,
    admin: &AdminRepositories,
    url: Option<&str>,
) -> Result<(String, Source)> {
    let target = match url {
        None => AdminTarget::Spool,
        Some(url) => admin.resolve(url)?,
    };
    let shown = url.unwrap_or("the spool").to_string();
    match target {
        AdminTarget::Spool if admin.spool_in_database() => {
            Ok((shown, Source::Database(DbSpool::open(config)?)))
        }
        AdminTarget::Spool => Ok((shown, Source::Spool(admin.spool_dir().to_path_buf()))),
        AdminTarget::Outgoing(dir) => Ok((shown, Source::Spool(dir))),
        AdminTarget::Mail(dir) => {
            let repo = FileMailRepository::open_existing(&dir).map_err(|e| match e {
                StoreError::NotFound(_) => anyhow!("repository {shown} does not exist"),
                e => e.into(),
            })?;
            Ok((shown, Source::Repository(repo)))
        }
        AdminTarget::DbMail(key) => Ok((shown, Source::DbRepository(DbMail::open(config, &key)?))),
        AdminTarget::DbOutgoing(key) => {
            Ok((shown, Source::Database(DbSpool::outgoing(config, &key)?)))
        }
    }
}

/// Reads the log spool in `dir` without its lock.
fn snapshot(dir: &Path) -> Result<Snapshot> {
    match LogSpool::snapshot(dir) {
        Ok(snapshot) => Ok(snapshot),
        // No spool yet (the server never ran): nothing queued.
        Err(StoreError::NotFound(_)) => Ok(Snapshot::default()),
        Err(e) => Err(e.into()),
    }
}

/// What a listing says when the spool changed in every round of its reading.
const INCOMPLETE: &str = "the spool changed throughout its reading; mails may be missing";

/// Prints one line per mail as it is read (its envelope alone: no message is opened, and
/// nothing is kept), so that a large spool or repository costs neither memory nor files.
fn list(
    config: &mailroom_config::Config,
    admin: &AdminRepositories,
    url: Option<&str>,
) -> Result<()> {
    let (shown, source) = source(config, admin, url)?;
    let now = SystemTime::now();
    let mut out = std::io::stdout().lock();
    let mut count = 0;
    let mut complete = true;
    match source {
        Source::Spool(dir) => {
            let snapshot = snapshot(&dir)?;
            complete = snapshot.complete;
            for mail in &snapshot.mails {
                list_line(&mut out, &mail.envelope, mail.next_attempt, now)?;
                count += 1;
            }
        }
        Source::Database(db) => {
            for name in db.names()? {
                // Removed meanwhile: not listed.
                if let Some((mail, next)) = db.find(&name)? {
                    list_line(&mut out, &mail.envelope, next, now)?;
                    count += 1;
                }
            }
        }
        Source::Repository(repo) => {
            for name in repo.list()? {
                // Removed meanwhile, or not whole: not listed.
                if let Some(envelope) = repo.envelope(&name)? {
                    list_line(&mut out, &envelope, None, now)?;
                    count += 1;
                }
            }
        }
        Source::DbRepository(db) => {
            for name in db.names()? {
                // Removed meanwhile: not listed.
                if let Some(mail) = db.find(&name)? {
                    list_line(&mut out, &mail.envelope, None, now)?;
                    count += 1;
                }
            }
        }
    }
    writeln!(out, "{count} mail(s) in {shown}")?;
    if !complete {
        eprintln!("mailroom: {INCOMPLETE}");
    }
    Ok(())
}

fn list_line(
    out: &mut impl Write,
    e: &Envelope,
    next_attempt: Option<SystemTime>,
    now: SystemTime,
) -> Result<()> {
    let next = match next_attempt {
        // How long until then.
        Some(at) if at > now => duration(at.duration_since(now).unwrap_or_default()),
        _ => "now".to_string(),
    };
    let recipients: Vec<String> = e.recipients.iter().map(ToString::to_string).collect();
    writeln!(
        out,
        "{} state={} size={} age={} next={} sender={} recipients={}",
        e.name,
        e.state,
        e.size,
        duration(now.duration_since(created(e)).unwrap_or_default()),
        next,
        sender(e),
        recipients.join(","),
    )?;
    if let Some(error) = &e.error_message {
        writeln!(out, "    error: {}", one_line(error))?;
    }
    Ok(())
}

/// Prints one mail's envelope and header section: only its message is opened.
fn show(
    config: &mailroom_config::Config,
    admin: &AdminRepositories,
    name: &str,
    url: Option<&str>,
) -> Result<()> {
    mailroom_store::validate_mail_name(name)?;
    let (shown, source) = source(config, admin, url)?;
    let found = match source {
        Source::Spool(dir) => {
            let mut found = None;
            // Its segment may go between the reading and the opening (the mail moved):
            // then the spool is read again.
            for _ in 0..5 {
                let mut snapshot = snapshot(&dir)?;
                let Some(i) = snapshot.mails.iter().position(|m| m.envelope.name == name) else {
                    if !snapshot.complete {
                        bail!("no mail {name} found in {shown}; {INCOMPLETE}: try again");
                    }
                    break;
                };
                match snapshot.message(&snapshot.mails[i]) {
                    Ok(message) => {
                        let mail = snapshot.mails.swap_remove(i);
                        found = Some((Mail::new(mail.envelope, message), mail.next_attempt));
                        break;
                    }
                    Err(StoreError::NotFound(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            found
        }
        Source::Database(db) => db.find(name)?,
        Source::Repository(repo) => repo.retrieve(name)?.map(|mail| (mail, None)),
        Source::DbRepository(db) => db.find(name)?.map(|mail| (mail, None)),
    };
    let Some((mail, next_attempt)) = found else {
        bail!("no mail {name} in {shown}");
    };
    let e = &mail.envelope;
    let mut out = std::io::stdout().lock();
    let recipients: Vec<String> = e.recipients.iter().map(ToString::to_string).collect();
    writeln!(out, "name: {}", e.name)?;
    writeln!(out, "state: {}", e.state)?;
    writeln!(out, "sender: {}", sender(e))?;
    writeln!(out, "recipients: {}", recipients.join(", "))?;
    writeln!(out, "remote: {} [{}]", e.remote_host, e.remote_addr)?;
    writeln!(out, "size: {}", mail.message.size())?;
    writeln!(out, "received: {}", httpdate::fmt_http_date(created(e)))?;
    writeln!(
        out,
        "last updated: {}",
        httpdate::fmt_http_date(millis(e.last_updated))
    )?;
    let next = next_attempt.map_or_else(|| "now".to_string(), httpdate::fmt_http_date);
    writeln!(out, "next attempt: {next}")?;
    if let Some(error) = &e.error_message {
        writeln!(out, "error: {}", one_line(error))?;
    }
    writeln!(out)?;
    out.write_all(mail.message.header_section())?;
    Ok(())
}

/// `flush|delete NAME [URL]` or `--all [URL]`.
fn change(
    config: &mailroom_config::Config,
    admin: &AdminRepositories,
    verb: Verb,
    all: bool,
    args: &[String],
) -> Result<()> {
    let (name, url) = match (all, args) {
        (true, []) => (None, None),
        (true, [url]) => (None, Some(url.clone())),
        (false, [name]) => (Some(name.clone()), None),
        (false, [name, url]) => (Some(name.clone()), Some(url.clone())),
        _ => bail!("give a mail name or --all, then optionally a repository URL"),
    };
    if let Some(name) = &name {
        mailroom_store::validate_mail_name(name)?;
    }
    // Refused here already, so that a typo never reaches the server.
    if let Some(url) = &url {
        admin.resolve(url)?;
    }
    let request = Request { verb, name, url };
    let count = match ask_server(admin.spool_dir(), &request)? {
        Some(answer) => answer?,
        None => apply_here(config, admin, &request)?,
    };
    if let (Some(name), 0) = (&request.name, count) {
        bail!(
            "no mail {name} in {}",
            request.url.as_deref().unwrap_or("the spool")
        );
    }
    let what = match verb {
        Verb::Flush => "flushed",
        Verb::Delete => "deleted",
    };
    println!("{what} {count} mail(s)");
    Ok(())
}

/// Sends `request` to a running server: `None` when no server listens.
fn ask_server(spool_dir: &Path, request: &Request) -> Result<Option<Result<usize>>> {
    let path = spool_dir.join(CONTROL_SOCKET);
    let Ok(mut stream) = UnixStream::connect(&path) else {
        return Ok(None);
    };
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.write_all(request.line().as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .with_context(|| format!("reading the server's answer on {}", path.display()))?;
    let answer = answer.trim_end();
    Ok(Some(if let Some(n) = answer.strip_prefix("OK ") {
        n.parse()
            .map_err(|_| anyhow!("unexpected answer {answer:?}"))
    } else if let Some(e) = answer.strip_prefix("ERR ") {
        Err(anyhow!("{e}"))
    } else {
        Err(anyhow!("no answer from the server on {}", path.display()))
    }))
}

/// Carries out `request` with the server stopped: opens the repository here, and the spool
/// (taking its lock) only when the request acts on it — a delete in a repository or any
/// request on an outgoing spool leaves the main spool alone. Existing spools only: none is
/// created here. A spool in a database is opened through it.
fn apply_here(
    config: &mailroom_config::Config,
    admin: &AdminRepositories,
    request: &Request,
) -> Result<usize> {
    let target = match &request.url {
        None => AdminTarget::Spool,
        Some(url) => admin.resolve(url)?,
    };
    if let AdminTarget::DbMail(key) = &target {
        return apply_in_db_repository(config, admin, request, key);
    }
    if let AdminTarget::DbOutgoing(key) = &target {
        let db = DbSpool::outgoing(config, key)?;
        let repos = Repos {
            admin: admin.clone(),
            spool: None,
            outgoing: vec![(PathBuf::from(key), db.spool())],
            open: Box::new(|url, _| Err(StoreError::NotFound(format!("repository {url}")))),
            open_db: Box::new(|url| Err(StoreError::NotFound(format!("repository {url}")))),
            fetchmail: None,
        };
        return db
            .block_on(apply(request, &repos))
            .map_err(|e| anyhow!("{e}"));
    }
    let db_spool = match (&target, request.verb) {
        (AdminTarget::Spool, _) | (AdminTarget::Mail(_), Verb::Flush)
            if admin.spool_in_database() =>
        {
            Some(DbSpool::open(config)?)
        }
        _ => None,
    };
    let spool = match (&target, request.verb) {
        _ if db_spool.is_some() => db_spool.as_ref().map(DbSpool::spool),
        (AdminTarget::Spool, _) => match open_here(admin.spool_dir(), admin)? {
            Some(spool) => Some(spool),
            // No spool yet (the server never ran): nothing queued in it.
            None => return Ok(0),
        },
        (AdminTarget::Mail(_), Verb::Flush) => match open_here(admin.spool_dir(), admin)? {
            Some(spool) => Some(spool),
            None => bail!(
                "there is no spool at {} to flush into yet: start the server once",
                admin.spool_dir().display()
            ),
        },
        _ => None,
    };
    let mut outgoing = Vec::new();
    if let AdminTarget::Outgoing(dir) = &target {
        match open_here(dir, admin)? {
            Some(opened) => outgoing.push((dir.clone(), opened)),
            // Never opened by a server: nothing queued in it.
            None => return Ok(0),
        }
    }
    let repos = Repos {
        admin: admin.clone(),
        spool,
        outgoing,
        open: Box::new(|url, dir| match FileMailRepository::open_existing(dir) {
            Ok(repo) => Ok(Arc::new(Blocking::new(repo)) as Arc<dyn MailRepository>),
            Err(StoreError::NotFound(_)) => Err(StoreError::NotFound(format!("repository {url}"))),
            Err(e) => Err(e),
        }),
        open_db: Box::new(|url| Err(StoreError::NotFound(format!("repository {url}")))),
        fetchmail: None,
    };
    if let Some(db) = &db_spool {
        return db
            .block_on(apply(request, &repos))
            .map_err(|e| anyhow!("{e}"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime
        .block_on(apply(request, &repos))
        .map_err(|e| anyhow!("{e}"))
}

/// [`apply_here`] on a mail repository in a database: its rows are changed through the
/// database; a flush stores into the spool (in the database too, or the log spool here).
fn apply_in_db_repository(
    config: &mailroom_config::Config,
    admin: &AdminRepositories,
    request: &Request,
    key: &str,
) -> Result<usize> {
    let db = DbMail::open(config, key)?;
    let spool = match request.verb {
        Verb::Delete => None,
        Verb::Flush if admin.spool_in_database() => Some(db.spool(config)?),
        Verb::Flush => match open_here(admin.spool_dir(), admin)? {
            Some(spool) => Some(spool),
            None => bail!(
                "there is no spool at {} to flush into yet: start the server once",
                admin.spool_dir().display()
            ),
        },
    };
    let repository = db.repository();
    let repos = Repos {
        admin: admin.clone(),
        spool,
        outgoing: Vec::new(),
        open: Box::new(|url, _| Err(StoreError::NotFound(format!("repository {url}")))),
        open_db: Box::new(move |_| Ok(repository.clone())),
        fetchmail: None,
    };
    db.block_on(apply(request, &repos))
        .map_err(|e| anyhow!("{e}"))
}

/// Opens the existing log spool in `dir`, taking its lock (`None`: there is none yet).
fn open_here(dir: &Path, admin: &AdminRepositories) -> Result<Option<Arc<dyn SpoolRepository>>> {
    match LogSpool::open_existing(dir) {
        Ok(spool) => Ok(Some(Arc::new(Blocking::new(spool)))),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(StoreError::Io(io)) if io.kind() == std::io::ErrorKind::WouldBlock => bail!(
            "the spool {} is in use by a running server that does not answer on {}",
            dir.display(),
            admin.spool_dir().join(CONTROL_SOCKET).display()
        ),
        Err(e) => Err(e.into()),
    }
}

fn sender(e: &Envelope) -> String {
    e.sender
        .as_ref()
        .map_or_else(|| "<>".to_string(), |s| format!("<{s}>"))
}

/// When the mail arrived: the time in its name (`Mail<millis>-...`), else its last update.
fn created(e: &Envelope) -> SystemTime {
    let from_name = e
        .name
        .strip_prefix("Mail")
        .and_then(|rest| rest.get(..13))
        .and_then(|digits| digits.parse::<u64>().ok());
    millis(from_name.unwrap_or(e.last_updated))
}

fn millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `3d4h`, `5h2m`, `4m10s`, `12s`.
fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        for request in [
            Request {
                verb: Verb::Flush,
                name: None,
                url: None,
            },
            Request {
                verb: Verb::Delete,
                name: Some("Mail1-2-3".into()),
                url: Some("file://var/mail/error/".into()),
            },
        ] {
            assert_eq!(Request::parse(&request.line()), Ok(request));
        }
        // Cut short: no line feed.
        assert!(Request::parse("delete * -").is_err());
        for bad in ["\n", "flush\n", "flush *\n", "purge * -\n", "delete  -\n"] {
            assert!(Request::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_secs(12)), "12s");
        assert_eq!(duration(Duration::from_secs(250)), "4m10s");
        assert_eq!(duration(Duration::from_secs(3 * 86400 + 4 * 3600)), "3d4h");
    }
}
