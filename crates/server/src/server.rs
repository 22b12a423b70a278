//! Running the server: configuration, repositories, the SpoolManager, the listeners, and a
//! two-phase shutdown on SIGTERM/SIGINT (every session says goodbye, then the workers finish
//! the mail in hand). SIGHUP reloads the TLS certificates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use mailroom_config::{
    AuthRequired, Config, ConfigError, NntpServer, Pop3Server, RemoteManager, ServiceCommon,
    SmtpServer,
};
use mailroom_delivery::RemoteDeliveries;
use mailroom_dns::{BlockingResolver, Resolver, ResolverSettings};
use mailroom_mailet::MailAddress;
use mailroom_net::throttle::AuthThrottle;
use mailroom_net::{Listener, Shutdown};
use mailroom_nntp::gateway::NewsGateway;
use mailroom_nntp::{NntpSettings, NntpStore};
use mailroom_pop3::server::Pop3Store;
use mailroom_pop3::Pop3Settings;
use mailroom_remotemanager::{Console, Opened, RemoteManagerSettings};
use mailroom_smtp::{AuthPolicy, Authenticator, RecipientCheck, SmtpSettings};
use mailroom_spool::mailets::lists::ListStores;
use mailroom_spool::mailets::repository::StoreServices;
use mailroom_spool::sql::SqlSources;
use mailroom_spool::{
    ProcessorTree, Registry, Repositories, ServerContext, SpoolManager, UsernameRules,
};
use mailroom_store::{NewsRepository, SpoolRepository, StoreError, VerifiedLogins};
use tokio::sync::Notify;

use crate::cli::Cli;
use crate::databases::{DataSourceNames, Databases};
use crate::recipients::LocalRecipients;
use crate::repositories;
use crate::tls::Certificates;

/// Loads `--config FILE`, or the embedded default.
pub fn load_config(cli: &Cli) -> Result<Config> {
    let loaded = match &cli.config {
        Some(path) => Config::load(path, cli.home.as_deref()),
        None => Config::embedded_default(cli.home.as_deref()),
    };
    loaded.map_err(|errors| anyhow!("invalid configuration:\n{errors}"))
}

/// Builds the processor tree, reporting unknown names and bad parameters at file:line.
/// `deliveries` serves its RemoteDelivery mailets, `news` its ToNewsgroup mailets.
/// Every matcher and mailet this server knows: the standard library and the mailets that
/// capture the server's services.
/// The server's services that mailets capture in their factories.
struct MailetServices {
    deliveries: Arc<RemoteDeliveries>,
    news: Arc<NewsGateway>,
    store: Arc<StoreServices>,
    /// The list mailets' members stores: the repositories of `<users-store>`, opened later.
    lists: Arc<ListStores>,
    /// BayesianAnalysis's token tables (none for `list-mailets`).
    databases: Option<Arc<Databases>>,
    /// The data sources of `<database-connections>`, for the JDBC mailets and matchers.
    sql: Arc<dyn SqlSources>,
}

fn registry(home: &Path, services: &MailetServices) -> Registry {
    let mut registry = Registry::standard();
    // FileRegexMatcher's pattern file is named relative to the server home.
    mailroom_spool::matchers::register_file_regex(&mut registry, home);
    mailroom_delivery::register(&mut registry, &services.deliveries);
    mailroom_nntp::gateway::register(&mut registry, &services.news);
    mailroom_spool::mailets::repository::register(&mut registry, &services.store);
    mailroom_spool::mailets::lists::register(&mut registry, &services.lists);
    let bayes = crate::bayes::BayesStores(services.databases.clone());
    mailroom_spool::mailets::bayes::register(&mut registry, Arc::new(bayes));
    mailroom_spool::sql::register(&mut registry, services.sql.clone());
    registry
}

/// The list mailets' members stores: the repositories of `<users-store>`, opened later.
fn list_stores(config: &Config, runtime: Option<tokio::runtime::Handle>) -> Arc<ListStores> {
    let names = config
        .users_repositories
        .iter()
        .map(|r| r.name.clone())
        .collect();
    ListStores::new(names, &config.home, runtime)
}

fn build_tree(config: &Config, services: &MailetServices) -> Result<ProcessorTree> {
    let registry = registry(&config.home, services);
    ProcessorTree::build(
        &config.spool_manager,
        &registry,
        &config.matcher_packages,
        &config.mailet_packages,
    )
    .map_err(|errors: Vec<ConfigError>| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow!("invalid configuration:\n{}", lines.join("\n"))
    })
}

/// `mailroom check-config [FILE]`: `FILE`, else `--config`, else the embedded default.
pub fn check_config(file: Option<&Path>, home: Option<&Path>) -> Result<()> {
    let loaded = match file {
        Some(file) => Config::load(file, home),
        None => Config::embedded_default(home),
    };
    let config = loaded.map_err(|errors| anyhow!("invalid configuration:\n{errors}"))?;
    Certificates::check(&config, tls_services(&config))?;
    let gateway = NewsGateway::new(&nntp_host(&config), "localhost", None);
    // The data sources are named, never connected: mailets check that theirs exist.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting the async runtime")?;
    let services = MailetServices {
        deliveries: RemoteDeliveries::new(&helo_name(&config), None),
        news: gateway,
        store: StoreServices::new(None),
        lists: list_stores(&config, None),
        databases: Some(Databases::new(&config, runtime.handle().clone())),
        sql: Arc::new(DataSourceNames(
            config.data_sources.iter().map(|d| d.name.clone()).collect(),
        )),
    };
    build_tree(&config, &services)?;
    println!("{}: configuration is valid", config.source.display());
    Ok(())
}

/// The registry as `check-config` builds it (no runtime, nothing opened).
fn offline_registry() -> Registry {
    let services = MailetServices {
        deliveries: RemoteDeliveries::new("localhost", None),
        news: NewsGateway::new("localhost", "localhost", None),
        store: StoreServices::new(None),
        lists: ListStores::new(Vec::new(), Path::new("."), None),
        databases: None,
        sql: Arc::new(DataSourceNames(Vec::new())),
    };
    registry(Path::new("."), &services)
}

/// `mailroom list-mailets [--markdown]`: every mailet, its parameters and an example.
pub fn list_mailets(markdown: bool) -> String {
    let registry = offline_registry();
    let entries = registry.mailet_docs().map(|(name, params, doc)| {
        let params = match params {
            Some([]) => "none".to_string(),
            Some(names) => names.join(", "),
            None => "any (see above)".to_string(),
        };
        (name, params, doc)
    });
    listing(entries, "Mailet", "Parameters", markdown)
}

/// `mailroom list-matchers [--markdown]`: every matcher, whether it takes a condition, and an
/// example.
pub fn list_matchers(markdown: bool) -> String {
    let registry = offline_registry();
    let entries = registry.matcher_docs().map(|(name, takes_condition, doc)| {
        let condition = if takes_condition { "yes" } else { "no" };
        (name, condition.to_string(), doc)
    });
    listing(entries, "Matcher", "Condition", markdown)
}

/// The entries as indented text, or as the README's Markdown table.
fn listing<'a>(
    entries: impl Iterator<Item = (&'a str, String, Option<mailroom_spool::Doc>)>,
    kind: &str,
    column: &str,
    markdown: bool,
) -> String {
    let mut out = String::new();
    if markdown {
        out.push_str(&format!("| {kind} | What it does | {column} | Example |\n"));
        out.push_str("|---|---|---|---|\n");
    }
    for (name, detail, doc) in entries {
        let doc = doc.unwrap_or_default();
        if markdown {
            let summary = doc.summary.replace('<', "&lt;").replace('>', "&gt;");
            let example = doc.example.replace('|', "\\|");
            out.push_str(&format!(
                "| `{name}` | {summary} | {detail} | `{example}` |\n"
            ));
        } else {
            out.push_str(&format!(
                "{name}\n    {}\n    {column}: {detail}\n    example: {}\n",
                doc.summary, doc.example
            ));
        }
    }
    out
}

/// Runs the server until SIGTERM or SIGINT.
pub fn run(cli: &Cli) -> Result<()> {
    let config = load_config(cli)?;
    let recorder = crate::observe::install(&config)?;
    // Built first: the SpoolManager's workers (plain threads) wait on it for DNS answers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let deliveries = RemoteDeliveries::new(&helo_name(&config), Some(runtime.handle().clone()));
    let gateway = NewsGateway::new(
        &nntp_host(&config),
        &config.nntp_repository.article_id_domain_suffix,
        Some(runtime.handle().clone()),
    );
    let store_services = StoreServices::new(Some(runtime.handle().clone()));
    let lists = list_stores(&config, Some(runtime.handle().clone()));
    // Nothing connects yet: each data source when a repository or a JDBC mailet first uses it.
    let databases = Databases::new(&config, runtime.handle().clone());
    let mailet_services = MailetServices {
        deliveries: deliveries.clone(),
        news: gateway.clone(),
        store: store_services.clone(),
        lists: lists.clone(),
        databases: Some(databases.clone()),
        sql: databases.clone(),
    };
    let tree = build_tree(&config, &mailet_services)?;
    let expiry_rules = expiry_rules(&config)?;
    tracing::info!(home = %config.home.display(), config = %config.source.display(), "starting");
    crate::limits::raise_open_files();
    // Signals are caught before the first port is bound: once one is, a client (or a test)
    // may think the server up and stop it, and a SIGTERM must then stop it cleanly. Then the
    // ports: a start that fails on a busy port leaves no storage behind.
    let (signals, listeners, metrics_listener) = {
        let _runtime = runtime.enter();
        let metrics = crate::observe::bind(&config)?;
        (Signals::catch()?, bind_all(&config)?, metrics)
    };
    // After the ports: a start that fails on a busy port generates no certificate.
    let certificates = Arc::new(Certificates::load(&config, tls_services(&config))?);
    // One cached resolver for the whole server: the mailets' context now, and (a clone of this
    // Arc) remote delivery later.
    let resolver = Arc::new(resolver(&config)?);

    let spool = repositories::spool(&config, &databases)?;
    deliveries
        .open(|url| repositories::outgoing(&config, &databases, url))
        .map_err(|e| anyhow!(e))?;
    let postmaster = MailAddress::parse(&config.james.postmaster)
        .map_err(|e| anyhow!("<postmaster> {:?}: {e}", config.james.postmaster))?;
    let mail_repositories = Arc::new(repositories::MailRepositories::new(
        &config,
        databases.clone(),
    )?);
    let users = repositories::users(&config, &databases)?;
    let all_users = repositories::all_users(&config, users.clone(), &databases)?;
    lists.open(all_users.clone());
    let inbox = repositories::inbox(&config, &databases)?;
    // One login cache for POP3, NNTP and SMTP AUTH: a password checked by one is not checked
    // with argon2 again by another.
    let logins = Arc::new(VerifiedLogins::new(
        users.clone(),
        LOGIN_CACHE_TTL,
        LOGIN_CACHE_ENTRIES,
    ));
    let pop3_store = Arc::new(Pop3Store::new(logins.clone(), inbox.clone()));
    let news = repositories::news(&config, &nntp_host(&config), &databases)?;
    if let Some(news) = &news {
        gateway.open(news.clone());
    }
    let nntp_store = news
        .clone()
        .map(|news| Arc::new(NntpStore::new(logins.clone(), news)));
    let opener = mail_repositories.clone();
    {
        let mail = mail_repositories.clone();
        let inboxes = repositories::InboxRepositories::new(&config, databases.clone());
        store_services.open(
            Box::new(move |url| mail.open(url)),
            Box::new(move |url| inboxes.open(url)),
        );
    }
    let mappings = repositories::mappings(&config, &databases)?;
    let recipients = LocalRecipients::new(&config, users.clone(), mappings.clone());
    runtime.block_on(recipients.warn_if_postmaster_is_missing(&config, &postmaster));
    let authenticator: Arc<dyn Authenticator> = Arc::new(crate::auth::SmtpLogins::new(
        logins,
        mappings.clone(),
        recipients.tables().to_vec(),
        config.james.clone(),
    ));
    let recipients: Arc<dyn RecipientCheck> = Arc::new(recipients);
    let context = ServerContext::new(
        config.james.servernames.clone(),
        postmaster.clone(),
        UsernameRules {
            ignore_case: config.james.usernames.ignore_case,
            enable_aliases: config.james.usernames.enable_aliases,
            enable_forwarding: config.james.usernames.enable_forwarding,
        },
        Repositories {
            users: users.clone(),
            inbox,
            spool: spool.clone(),
            opener: Box::new(move |url| opener.open(url)),
        },
        runtime.handle().clone(),
    )
    .with_mappings(mappings.clone())
    .with_dns(BlockingResolver::new(
        resolver.clone(),
        runtime.handle().clone(),
    ));
    let fetchmail = fetchmail(&config, spool.clone(), users.clone())?;
    let stop = Arc::new(Notify::new());
    let admin = repositories::AdminRepositories::new(&config)?;
    let outgoing = outgoing_spools(&admin, &deliveries);
    let control = {
        let _runtime = runtime.enter();
        crate::queue::bind_control(admin.spool_dir())
    }
    .map(|listener| {
        let mut repos = crate::queue::Repos::of_server(
            admin.clone(),
            spool.clone(),
            outgoing.clone(),
            mail_repositories.clone(),
        );
        repos.fetchmail = fetchmail.clone();
        (listener, Arc::new(repos))
    });
    let console = Arc::new(Console {
        users: all_users,
        keep_apop_secret: keeps_apop_secrets(&config),
        spool: spool.clone(),
        open_repository: admin_opener(admin, spool.clone(), outgoing, mail_repositories),
        mappings,
        news: news.clone(),
        request_shutdown: {
            let stop = stop.clone();
            Arc::new(move || stop.notify_one())
        },
        reload_tls: {
            let certificates = certificates.clone();
            Arc::new(move || certificates.reload())
        },
    });
    let workers = SpoolManager::new(tree, Arc::new(context)).start(config.spool_manager.threads);
    // After the spool: a failed recipient goes back to it, to the bounce processor.
    let server_name = config
        .james
        .servernames
        .first()
        .map_or("localhost", String::as_str);
    let delivery_workers = deliveries.start(
        runtime.handle(),
        resolver.clone(),
        spool.clone(),
        (server_name, &postmaster),
    );
    let expiry = news.clone().map(|news| (news, expiry_rules.clone()));
    let observe = metrics_listener.zip(recorder).map(|(listener, handle)| {
        let outgoing = deliveries.spools().into_iter().map(|(_, s)| s).collect();
        let sources = crate::observe::Sources {
            spool: spool.clone(),
            outgoing,
            databases,
        };
        crate::observe::Endpoint::new(&config, listener, handle, sources)
    });
    let services = Services {
        fetchmail,
        spool,
        pop3_store,
        nntp_store,
        expiry,
        console,
        control,
        recipients,
        authenticator,
        throttle: auth_throttle(&config),
        certificates,
        observe,
    };
    let served = runtime.block_on(serve(&config, listeners, services, signals, &stop));
    runtime.block_on(delivery_workers.stop(DELIVERY_GRACE));
    workers.stop();
    tracing::info!("stopped");
    served
}

/// How long a shutdown waits for the remote deliveries in progress.
const DELIVERY_GRACE: Duration = Duration::from_secs(10);

/// The name RemoteDelivery says in EHLO unless its `<heloName>` says otherwise: the first
/// SMTP server's `<helloName>`, else the first servername.
fn helo_name(config: &Config) -> String {
    config
        .smtp
        .iter()
        .find(|s| s.common.enabled)
        .map(|s| s.common.hello_name.clone())
        .or_else(|| config.james.servernames.first().cloned())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The DNS resolver of `<dnsserver>`. A missing `/etc/resolv.conf` is logged and the local
/// resolver used instead, so it never stops start-up.
fn resolver(config: &Config) -> Result<Resolver> {
    let settings = ResolverSettings::from_config(&config.dns);
    tracing::info!(servers = ?settings.servers, "DNS resolver");
    Resolver::new(&settings).map_err(|e| anyhow!("<dnsserver>: {e}"))
}

/// The open outgoing spools of the RemoteDeliveries, by directory (as the administrator's
/// URLs resolve).
fn outgoing_spools(
    admin: &repositories::AdminRepositories,
    deliveries: &RemoteDeliveries,
) -> Vec<(PathBuf, Arc<dyn SpoolRepository>)> {
    deliveries
        .spools()
        .into_iter()
        .filter_map(|(url, spool)| match admin.resolve(&url) {
            Ok(target) => target.outgoing_key().map(|key| (key, spool)),
            _ => None,
        })
        .collect()
}

/// How the console opens the repositories its spool commands name: only those the
/// configuration names (the spool and the outgoing spools included), and only if they exist.
fn admin_opener(
    admin: repositories::AdminRepositories,
    spool: Arc<dyn SpoolRepository>,
    outgoing: Vec<(PathBuf, Arc<dyn SpoolRepository>)>,
    mail: Arc<repositories::MailRepositories>,
) -> mailroom_remotemanager::RepositoryOpener {
    Arc::new(move |url| match admin.resolve(url)? {
        repositories::AdminTarget::Spool => Ok(Opened::Spool(spool.clone())),
        target @ (repositories::AdminTarget::Outgoing(_)
        | repositories::AdminTarget::DbOutgoing(_)) => outgoing
            .iter()
            .find(|(d, _)| Some(d) == target.outgoing_key().as_ref())
            .map(|(_, spool)| Opened::Spool(spool.clone()))
            .ok_or_else(|| StoreError::NotFound(format!("outgoing spool {url}"))),
        repositories::AdminTarget::Mail(dir) => mail.open_existing(url, &dir).map(Opened::Mail),
        repositories::AdminTarget::DbMail(key) => mail.open(&key).map(Opened::Mail),
    })
}

/// Binds every enabled listener, in the order [`serve`] takes them.
fn bind_all(config: &Config) -> Result<Vec<Listener>> {
    // Said before any port is bound: once one is, a client (or a test) may look at the log.
    for manager in config.remote_manager.iter().filter(|r| r.common.enabled) {
        if let Some(why) = console_refused(manager) {
            tracing::warn!(
                "{}: the RemoteManager is not started: {why}",
                manager.common.location
            );
        }
    }
    let mut listeners = Vec::new();
    for smtp in config.smtp.iter().filter(|s| s.common.enabled) {
        listeners.push(bind(&smtp.common, "SMTP")?);
    }
    for pop3 in config.pop3.iter().filter(|s| s.common.enabled) {
        listeners.push(bind(&pop3.common, "POP3")?);
    }
    for nntp in config.nntp.iter().filter(|s| s.common.enabled) {
        listeners.push(bind(&nntp.common, "NNTP")?);
    }
    for manager in config.remote_manager.iter().filter(|r| r.common.enabled) {
        if console_refused(manager).is_none() {
            listeners.push(bind(&manager.common, "RemoteManager")?);
        }
    }
    Ok(listeners)
}

/// Why a RemoteManager is not started, if it is not: it has no administrator (there is no
/// built-in one), or one whose password anybody could guess.
fn console_refused(manager: &RemoteManager) -> Option<String> {
    if !manager.can_start() {
        return Some(
            "it has no <administrator_accounts><account>; there is no built-in administrator"
                .to_string(),
        );
    }
    let why = manager.administrators.iter().find_map(|a| a.weakness())?;
    Some(format!(
        "{why}. Set a long password of your own in <administrator_accounts><account \
         login=... password=...> and restart; everything else runs"
    ))
}

/// Whether passwords are also kept as APOP secrets: when an enabled POP3 server offers APOP.
pub fn keeps_apop_secrets(config: &Config) -> bool {
    config
        .pop3
        .iter()
        .any(|p| p.common.enabled && p.enable_apop)
}

/// What the listeners serve: the repositories and services their sessions use.
struct Services {
    /// The FetchMail tasks, when `<fetchmail enabled="true">`.
    fetchmail: Option<mailroom_fetchmail::FetchMail>,
    spool: Arc<dyn SpoolRepository>,
    pop3_store: Arc<Pop3Store>,
    /// The news and logins of the NNTP listeners (`None` when none is enabled).
    nntp_store: Option<Arc<NntpStore>>,
    /// The news repository and its expiry rules, for the expiry task.
    expiry: Option<(Arc<dyn NewsRepository>, Vec<mailroom_nntp::expire::Rule>)>,
    console: Arc<Console>,
    /// The queue's control socket, when it could be bound.
    control: Option<(tokio::net::UnixListener, Arc<crate::queue::Repos>)>,
    /// Checks SMTP recipients at RCPT.
    recipients: Arc<dyn RecipientCheck>,
    /// Checks SMTP AUTH logins and `<verifyIdentity>`.
    authenticator: Arc<dyn Authenticator>,
    /// Failed logins per client IP, shared by every SMTP, POP3 and NNTP listener.
    throttle: Arc<AuthThrottle>,
    /// The listeners' TLS certificates, reloaded on SIGHUP.
    certificates: Arc<Certificates>,
    /// The `<metrics>` endpoint, when enabled.
    observe: Option<crate::observe::Endpoint>,
}

/// The listeners whose certificates [`Certificates::load`] loads: every enabled SMTP, POP3 and
/// NNTP block.
fn tls_services(config: &Config) -> impl Iterator<Item = &ServiceCommon> {
    let smtp = config.smtp.iter().map(|s| &s.common);
    let pop3 = config.pop3.iter().map(|p| &p.common);
    let nntp = config.nntp.iter().map(|n| &n.common);
    smtp.chain(pop3).chain(nntp).filter(|c| c.enabled)
}

/// Serves on the listeners of [`bind_all`] (and the queue's control socket) until a signal or
/// the RemoteManager's `shutdown` (`stop`), then drains the sessions.
async fn serve(
    config: &Config,
    listeners: Vec<Listener>,
    services: Services,
    mut signals: Signals,
    stop: &Notify,
) -> Result<()> {
    let Services {
        fetchmail,
        spool,
        pop3_store,
        nntp_store,
        expiry,
        console,
        control,
        recipients,
        authenticator,
        throttle,
        certificates,
        observe,
    } = services;
    let shutdown = Shutdown::new();
    let mut tasks = Vec::new();
    let health = observe.as_ref().map(crate::observe::Endpoint::health);
    tasks.extend(observe.map(|endpoint| endpoint.spawn(shutdown.watch())));
    let mut bound = listeners.into_iter();
    let mut next_listener = move || bound.next().expect("bound by bind_all, in this order");
    if let Some((listener, repos)) = control {
        tasks.push(tokio::spawn(crate::queue::serve_control(
            listener,
            repos,
            shutdown.watch(),
        )));
    }
    if let Some(fetchmail) = &fetchmail {
        tasks.extend(fetchmail.spawn(|| shutdown.watch()));
    }
    tasks.push(tokio::spawn(crate::limits::release_memory(
        shutdown.watch(),
    )));
    for smtp in config.smtp.iter().filter(|s| s.common.enabled) {
        let listener = next_listener();
        let name = format!("SMTP {}", shown(&listener));
        let mut settings = smtp_settings(config, smtp, &recipients);
        settings.tls = certificates.listener(&smtp.common);
        settings.authenticator = Some(authenticator.clone());
        settings.auth_throttle = throttle.clone();
        if settings.auth != AuthPolicy::Off
            && settings.require_tls_for_auth
            && settings.tls.is_none()
        {
            tracing::warn!(addr = %shown(&listener), "<authRequired>: AUTH needs TLS \
                (<requireTLSForAuth>) and this listener has none, so AUTH is never offered here");
        }
        let settings = Arc::new(settings);
        tasks.push(tokio::spawn(mailroom_smtp::serve(
            listener,
            settings,
            spool.clone(),
            shutdown.watch(),
        )));
        crate::observe::watch(&health, name, &tasks);
    }
    for pop3 in config.pop3.iter().filter(|s| s.common.enabled) {
        let listener = next_listener();
        let name = format!("POP3 {}", shown(&listener));
        let mut settings = pop3_settings(config, pop3);
        settings.tls = certificates.listener(&pop3.common);
        settings.auth_throttle = throttle.clone();
        if !settings.plaintext_auth && settings.tls.is_none() {
            tracing::warn!(addr = %shown(&listener), "{}: <requireTLSForAuth> is true but this \
                listener has no TLS (<tls socketTLS=\"false\" startTLS=\"false\"/>): nobody can \
                log in on it", pop3.common.location);
        }
        tasks.push(tokio::spawn(mailroom_pop3::serve(
            listener,
            Arc::new(settings),
            pop3_store.clone(),
            shutdown.watch(),
        )));
        crate::observe::watch(&health, name, &tasks);
    }
    if let Some((news, rules)) = expiry {
        let interval = Duration::from_secs(config.nntp_repository.expire_interval_secs);
        tasks.push(tokio::spawn(mailroom_nntp::expire::run(
            news,
            rules,
            interval,
            shutdown.watch(),
        )));
    }
    for nntp in config.nntp.iter().filter(|s| s.common.enabled) {
        let listener = next_listener();
        let name = format!("NNTP {}", shown(&listener));
        let Some(store) = nntp_store.clone() else {
            continue;
        };
        let mut settings = nntp_settings(config, nntp);
        settings.tls = certificates.listener(&nntp.common);
        settings.auth_throttle = throttle.clone();
        if !settings.plaintext_auth && settings.tls.is_none() {
            tracing::warn!(addr = %shown(&listener), "{}: <requireTLSForAuth> is true but this \
                listener has no TLS (<tls socketTLS=\"false\" startTLS=\"false\"/>): nobody can \
                use AUTHINFO on it", nntp.common.location);
        }
        tasks.push(tokio::spawn(mailroom_nntp::serve(
            listener,
            Arc::new(settings),
            store,
            shutdown.watch(),
        )));
        crate::observe::watch(&health, name, &tasks);
    }
    for manager in config.remote_manager.iter().filter(|r| r.common.enabled) {
        if console_refused(manager).is_some() {
            // Said by bind_all.
            continue;
        }
        let listener = next_listener();
        let name = format!("RemoteManager {}", shown(&listener));
        tasks.push(tokio::spawn(mailroom_remotemanager::serve(
            listener,
            Arc::new(remote_manager_settings(config, manager)),
            console.clone(),
            shutdown.watch(),
        )));
        crate::observe::watch(&health, name, &tasks);
    }

    loop {
        tokio::select! {
            signal = signals.recv() => match signal {
                Signal::Stop => break,
                Signal::Reload => {
                    let certificates = certificates.clone();
                    let _ = tokio::task::spawn_blocking(move || certificates.reload()).await;
                }
            },
            () = stop.notified() => {
                tracing::info!("shutdown requested on the RemoteManager");
                break;
            }
        }
    }
    tracing::info!("shutting down: closing sessions");
    shutdown.trigger();
    for task in tasks {
        let _ = task.await;
    }
    let deadline = config.connections.shutdown_deadline;
    if !shutdown.wait_until(Some(deadline)).await {
        tracing::warn!(
            ?deadline,
            "sessions still waiting on their clients at the shutdown \
            deadline were dropped (nothing they had not acknowledged was acknowledged)"
        );
    }
    Ok(())
}

/// A listener's address for the log, plainly (`127.0.0.1:2525`, not `Ok(...)`).
fn shown(listener: &Listener) -> String {
    listener
        .local_addr()
        .map_or_else(|e| format!("unknown ({e})"), |a| a.to_string())
}

/// The FetchMail tasks of `<fetchmail enabled="true">` (their UIDL records in
/// `var/fetchmail/` under the home); `None` when FetchMail is off.
fn fetchmail(
    config: &Config,
    spool: Arc<dyn SpoolRepository>,
    users: Arc<dyn mailroom_store::UsersRepository>,
) -> Result<Option<mailroom_fetchmail::FetchMail>> {
    let Some(block) = config.fetchmail.as_ref().filter(|f| f.enabled) else {
        return Ok(None);
    };
    let james = config.james.clone();
    let env = Arc::new(mailroom_fetchmail::Env {
        spool,
        users,
        is_local_domain: Arc::new(move |domain| james.is_local_domain(domain)),
        state_dir: config.home.join("var/fetchmail"),
        default_domain: config
            .james
            .servernames
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".to_string()),
    });
    mailroom_fetchmail::FetchMail::new(block, env)
        .map(Some)
        .map_err(|e| anyhow!("{}: {e}", block.location))
}

/// The failed-login throttle of `<authThrottle>`, one for the whole process.
fn auth_throttle(config: &Config) -> Arc<AuthThrottle> {
    let t = config.auth_throttle;
    Arc::new(AuthThrottle::new(
        t.failures,
        t.window,
        t.delay,
        t.max_delay,
    ))
}

/// Binds a service's listener. Implicit TLS on the RemoteManager is refused: its console has
/// no TLS, and plain text where clients expect TLS would expose their passwords.
fn bind(common: &ServiceCommon, protocol: &str) -> Result<Listener> {
    let addr = SocketAddr::new(common.bind, common.port);
    if common.tls.socket_tls && protocol == "RemoteManager" {
        bail!(
            "{}: the RemoteManager has no implicit TLS (socketTLS/useTLS); \
             refusing to serve plain {protocol} where clients expect TLS",
            common.location
        );
    }
    Listener::bind(addr).with_context(|| format!("{}: cannot listen on {addr}", common.location))
}

/// The SMTP listener settings of one `<smtpserver>` block.
fn smtp_settings(
    config: &Config,
    smtp: &SmtpServer,
    recipients: &Arc<dyn RecipientCheck>,
) -> SmtpSettings {
    let relay = smtp.relay_networks();
    let james = config.james.clone();
    SmtpSettings {
        hello_name: smtp.common.hello_name.clone(),
        max_message_size: smtp.max_message_bytes().unwrap_or(0),
        max_rcpt: smtp.max_rcpt as usize,
        helo_ehlo_enforcement: smtp.helo_ehlo_enforcement,
        connection_timeout: smtp.common.connection_timeout,
        connection_limit: smtp.common.connection_limit.map(|n| n as usize),
        limits: crate::limits::session_limits(config),
        address_brackets_enforcement: smtp.address_brackets_enforcement,
        is_local_domain: Arc::new(move |domain| james.is_local_domain(domain)),
        recipient_check: smtp.verify_recipients.then(|| recipients.clone()),
        relay_allowed: Arc::new(move |ip| relay.contains(ip)),
        tls: None,
        auth: match smtp.auth_required {
            AuthRequired::False => AuthPolicy::Off,
            AuthRequired::True => AuthPolicy::Required,
            AuthRequired::Announce => AuthPolicy::Announce,
        },
        // Set by serve(): one for all listeners.
        authenticator: None,
        require_tls_for_auth: smtp.require_tls_for_auth,
        verify_identity: smtp.verify_identity,
        submission: smtp.submission,
        ..SmtpSettings::default()
    }
}

/// How long a login verified with argon2 is trusted by the login cache.
const LOGIN_CACHE_TTL: Duration = Duration::from_secs(3600);
/// The most logins the cache remembers.
const LOGIN_CACHE_ENTRIES: usize = 100_000;

/// The POP3 listener settings of one `<pop3server>` block.
fn pop3_settings(config: &Config, pop3: &Pop3Server) -> Pop3Settings {
    Pop3Settings {
        hello_name: pop3.common.hello_name.clone(),
        connection_timeout: pop3.common.connection_timeout,
        connection_limit: pop3.common.connection_limit.map(|n| n as usize),
        limits: crate::limits::session_limits(config),
        enable_apop: pop3.enable_apop,
        plaintext_auth: !pop3.require_tls_for_auth,
        ..Pop3Settings::default()
    }
}

/// The `<expire>` rules of `<nntp-repository>`, their patterns checked.
fn expiry_rules(config: &Config) -> Result<Vec<mailroom_nntp::expire::Rule>> {
    config
        .nntp_repository
        .expire
        .iter()
        .map(|rule| {
            let pattern = mailroom_nntp::wildmat::Wildmat::parse(&rule.pattern).map_err(|_| {
                anyhow!(
                    "<nntp-repository><expire>: pattern {:?} is not a valid wildmat",
                    rule.pattern
                )
            })?;
            Ok(mailroom_nntp::expire::Rule {
                pattern,
                keep: Duration::from_secs(u64::from(rule.days) * 86_400),
            })
        })
        .collect()
}

/// The name of this news server in `Path:` and `Xref:`: the first enabled NNTP server's
/// `<helloName>`, else the article-ID domain.
pub(crate) fn nntp_host(config: &Config) -> String {
    config
        .nntp
        .iter()
        .find(|s| s.common.enabled)
        .map(|s| s.common.hello_name.clone())
        .unwrap_or_else(|| config.nntp_repository.article_id_domain_suffix.clone())
}

/// The NNTP listener settings of one `<nntpserver>` block and the `<nntp-repository>`.
fn nntp_settings(config: &Config, nntp: &NntpServer) -> NntpSettings {
    NntpSettings {
        hello_name: nntp.common.hello_name.clone(),
        article_id_domain: config.nntp_repository.article_id_domain_suffix.clone(),
        connection_timeout: nntp.common.connection_timeout,
        connection_limit: nntp.common.connection_limit.map(|n| n as usize),
        limits: crate::limits::session_limits(config),
        read_only: config.nntp_repository.read_only,
        auth_for_reading: nntp.auth_required,
        auth_for_posting: nntp.auth_required,
        plaintext_auth: !nntp.require_tls_for_auth,
        max_article_size: usize::try_from(nntp.max_article_size_kib.saturating_mul(1024))
            .unwrap_or(usize::MAX),
        descriptions: Arc::new(
            config
                .nntp_repository
                .descriptions
                .iter()
                .cloned()
                .collect(),
        ),
        ..NntpSettings::default()
    }
}

/// The settings of one `<remotemanager>` block.
fn remote_manager_settings(config: &Config, manager: &RemoteManager) -> RemoteManagerSettings {
    RemoteManagerSettings {
        administrators: manager
            .administrators
            .iter()
            .map(|a| (a.login.clone(), a.password.clone()))
            .collect(),
        prompt: manager.prompt.clone(),
        connection_timeout: manager.common.connection_timeout,
        connection_limit: manager.common.connection_limit.map(|n| n as usize),
        limits: crate::limits::session_limits(config),
        login_failure_delay: Duration::from_secs(1),
        max_login_failures: 3,
    }
}

/// SIGTERM and SIGINT, which stop the server, and SIGHUP, which reloads the certificates.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// What a signal asks for.
enum Signal {
    /// SIGTERM, SIGINT: a clean shutdown.
    Stop,
    /// SIGHUP: read the TLS certificates and keys again.
    Reload,
}

impl Signals {
    /// Catches SIGTERM, SIGINT and SIGHUP from now on (inside the runtime).
    fn catch() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("catching SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("catching SIGINT")?,
            hup: signal(SignalKind::hangup()).context("catching SIGHUP")?,
        })
    }

    /// Waits for one of them.
    async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => { tracing::info!("SIGTERM received"); Signal::Stop }
            _ = self.int.recv() => { tracing::info!("SIGINT received"); Signal::Stop }
            _ = self.hup.recv() => { tracing::info!("SIGHUP received: reloading TLS certificates"); Signal::Reload }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every matcher and mailet says what it does, and the README's tables are the ones
    /// `mailroom list-matchers --markdown` / `list-mailets --markdown` print.
    #[test]
    fn every_mailet_and_matcher_is_documented_in_the_readme() {
        let registry = offline_registry();
        let undocumented: Vec<&str> = registry
            .mailet_docs()
            .filter(|(_, _, doc)| doc.is_none_or(|d| d.summary.is_empty() || d.example.is_empty()))
            .map(|(name, _, _)| name)
            .chain(
                registry
                    .matcher_docs()
                    .filter(|(_, _, doc)| {
                        doc.is_none_or(|d| d.summary.is_empty() || d.example.is_empty())
                    })
                    .map(|(name, _, _)| name),
            )
            .collect();
        assert!(undocumented.is_empty(), "no .about(..): {undocumented:?}");
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        for table in [list_matchers(true), list_mailets(true)] {
            assert!(
                readme.contains(&table),
                "README.md lacks this table (regenerate it with mailroom list-matchers/list-mailets --markdown):\n{table}"
            );
        }
    }
}
