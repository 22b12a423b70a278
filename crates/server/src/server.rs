//! Running the server: configuration, repositories, the SpoolManager, the listeners, and a
//! two-phase shutdown on SIGTERM/SIGINT (every session says goodbye, then the workers finish
//! the mail in hand).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use mailroom_config::{
    AuthRequired, Config, ConfigError, Pop3Server, RemoteManager, ServiceCommon, SmtpServer,
};
use mailroom_dns::{BlockingResolver, Resolver, ResolverSettings};
use mailroom_mailet::MailAddress;
use mailroom_net::{Listener, Shutdown};
use mailroom_pop3::server::Pop3Store;
use mailroom_pop3::Pop3Settings;
use mailroom_remotemanager::{Console, RemoteManagerSettings};
use mailroom_smtp::SmtpSettings;
use mailroom_spool::{
    ProcessorTree, Registry, Repositories, ServerContext, SpoolManager, UsernameRules,
};
use mailroom_store::{SpoolRepository, VerifiedLogins};
use tokio::sync::Notify;

use crate::cli::Cli;
use crate::repositories;

/// Loads `--config FILE`, or the embedded default.
pub fn load_config(cli: &Cli) -> Result<Config> {
    let loaded = match &cli.config {
        Some(path) => Config::load(path, cli.home.as_deref()),
        None => Config::embedded_default(cli.home.as_deref()),
    };
    loaded.map_err(|errors| anyhow!("invalid configuration:\n{errors}"))
}

/// Builds the processor tree, reporting unknown names and bad parameters at file:line.
fn build_tree(config: &Config) -> Result<ProcessorTree> {
    ProcessorTree::build(
        &config.spool_manager,
        &Registry::standard(),
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
    build_tree(&config)?;
    println!("{}: configuration is valid", config.source.display());
    Ok(())
}

/// Runs the server until SIGTERM or SIGINT.
pub fn run(cli: &Cli) -> Result<()> {
    let config = load_config(cli)?;
    let tree = build_tree(&config)?;
    tracing::info!(home = %config.home.display(), config = %config.source.display(), "starting");
    // Built first: the SpoolManager's workers (plain threads) wait on it for DNS answers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // One cached resolver for the whole server: the mailets' context now, and (a clone of this
    // Arc) remote delivery later.
    let resolver = Arc::new(resolver(&config)?);

    let spool = repositories::spool(&config)?;
    let postmaster = MailAddress::parse(&config.james.postmaster)
        .map_err(|e| anyhow!("<postmaster> {:?}: {e}", config.james.postmaster))?;
    let mail_repositories = Arc::new(repositories::MailRepositories::new(&config)?);
    let users = repositories::users(&config)?;
    let inbox = repositories::inbox(&config)?;
    let pop3_store = Arc::new(Pop3Store::new(
        Arc::new(VerifiedLogins::new(
            users.clone(),
            LOGIN_CACHE_TTL,
            LOGIN_CACHE_ENTRIES,
        )),
        inbox.clone(),
    ));
    let opener = mail_repositories.clone();
    let mappings = repositories::mappings(&config)?;
    let context = ServerContext::new(
        config.james.servernames.clone(),
        postmaster,
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
    let stop = Arc::new(Notify::new());
    let console = Arc::new(Console {
        users: repositories::all_users(&config, users)?,
        keep_apop_secret: keeps_apop_secrets(&config),
        spool: spool.clone(),
        open_repository: Arc::new(move |url| mail_repositories.open(url)),
        mappings,
        request_shutdown: {
            let stop = stop.clone();
            Arc::new(move || stop.notify_one())
        },
    });
    let workers = SpoolManager::new(tree, Arc::new(context)).start(config.spool_manager.threads);
    let served = runtime.block_on(serve(&config, spool, pop3_store, console, &stop));
    workers.stop();
    tracing::info!("stopped");
    served
}

/// The DNS resolver of `<dnsserver>`. A missing `/etc/resolv.conf` is logged and the local
/// resolver used instead, so it never stops start-up.
fn resolver(config: &Config) -> Result<Resolver> {
    let settings = ResolverSettings::from_config(&config.dns);
    tracing::info!(servers = ?settings.servers, "DNS resolver");
    Resolver::new(&settings).map_err(|e| anyhow!("<dnsserver>: {e}"))
}

/// Whether passwords are also kept as APOP secrets: when an enabled POP3 server offers APOP.
pub fn keeps_apop_secrets(config: &Config) -> bool {
    config
        .pop3
        .iter()
        .any(|p| p.common.enabled && p.enable_apop)
}

/// Binds every enabled listener, serves until a signal or the RemoteManager's `shutdown`
/// (`stop`), then drains the sessions.
async fn serve(
    config: &Config,
    spool: Arc<dyn SpoolRepository>,
    pop3_store: Arc<Pop3Store>,
    console: Arc<Console>,
    stop: &Notify,
) -> Result<()> {
    let shutdown = Shutdown::new();
    let mut tasks = Vec::new();
    for smtp in config.smtp.iter().filter(|s| s.common.enabled) {
        let listener = bind(&smtp.common, "SMTP")?;
        if smtp.common.tls.start_tls {
            tracing::warn!(addr = ?listener.local_addr(), "STARTTLS is not available in this build yet; not offered");
        }
        let settings = Arc::new(smtp_settings(config, smtp));
        tasks.push(tokio::spawn(mailroom_smtp::serve(
            listener,
            settings,
            spool.clone(),
            shutdown.watch(),
        )));
    }
    for pop3 in config.pop3.iter().filter(|s| s.common.enabled) {
        let listener = bind(&pop3.common, "POP3")?;
        if pop3.require_tls_for_auth {
            tracing::warn!(addr = ?listener.local_addr(), "requireTLSForAuth: STLS is not available in this build yet; \
                plaintext logins are allowed until it is");
        }
        tasks.push(tokio::spawn(mailroom_pop3::serve(
            listener,
            Arc::new(pop3_settings(pop3)),
            pop3_store.clone(),
            shutdown.watch(),
        )));
    }
    for manager in config.remote_manager.iter().filter(|r| r.common.enabled) {
        if !manager.can_start() {
            tracing::warn!(
                "{}: the RemoteManager has no <administrator_accounts><account>; there is no \
                 built-in administrator, so it is not started",
                manager.common.location
            );
            continue;
        }
        if let Some(why) = manager.administrators.iter().find_map(|a| a.weakness()) {
            tracing::warn!(
                "{}: the RemoteManager is not started: {why}. Set a long password of your own \
                 in <administrator_accounts><account login=... password=...> and restart; \
                 everything else runs",
                manager.common.location
            );
            continue;
        }
        let listener = bind(&manager.common, "RemoteManager")?;
        tasks.push(tokio::spawn(mailroom_remotemanager::serve(
            listener,
            Arc::new(remote_manager_settings(manager)),
            console.clone(),
            shutdown.watch(),
        )));
    }
    not_yet_served(config);

    tokio::select! {
        signal = wait_for_signal() => signal?,
        () = stop.notified() => tracing::info!("shutdown requested on the RemoteManager"),
    }
    tracing::info!("shutting down: closing sessions");
    shutdown.trigger();
    for task in tasks {
        let _ = task.await;
    }
    shutdown.wait().await;
    Ok(())
}

/// Logs one warning for each configured service this build does not serve yet, so that an
/// administrator does not wait for it.
fn not_yet_served(config: &Config) {
    if config.nntp.iter().any(|s| s.common.enabled) {
        tracing::warn!(
            "NNTP (<nntpserver>) is configured but not part of this build yet; not started"
        );
    }
    if config.fetchmail.as_ref().is_some_and(|f| f.enabled) {
        tracing::warn!("FetchMail (<fetchmail enabled=\"true\">) is configured but not part of this build yet; nothing is fetched");
    }
    if config
        .smtp
        .iter()
        .any(|s| s.common.enabled && s.auth_required != AuthRequired::False)
    {
        tracing::warn!(
            "SMTP AUTH (<authRequired>) is configured but not part of this build yet; \
            AUTH is not offered, and only <authorizedAddresses> may relay"
        );
    }
}

/// Binds a service's listener. Implicit TLS is refused: this build cannot serve it, and plain
/// text where clients expect TLS would expose their passwords.
fn bind(common: &ServiceCommon, protocol: &str) -> Result<Listener> {
    let addr = SocketAddr::new(common.bind, common.port);
    if common.tls.socket_tls {
        bail!(
            "{}: implicit TLS (socketTLS) is not available in this build yet; \
             refusing to serve plain {protocol} where clients expect TLS",
            common.location
        );
    }
    Listener::bind(addr).with_context(|| format!("{}: cannot listen on {addr}", common.location))
}

/// The SMTP listener settings of one `<smtpserver>` block.
fn smtp_settings(config: &Config, smtp: &SmtpServer) -> SmtpSettings {
    let relay = smtp.relay_networks();
    let james = config.james.clone();
    SmtpSettings {
        hello_name: smtp.common.hello_name.clone(),
        max_message_size: smtp.max_message_bytes().unwrap_or(0),
        max_rcpt: smtp.max_rcpt as usize,
        helo_ehlo_enforcement: smtp.helo_ehlo_enforcement,
        connection_timeout: smtp.common.connection_timeout,
        connection_limit: smtp.common.connection_limit.map(|n| n as usize),
        address_brackets_enforcement: smtp.address_brackets_enforcement,
        is_local_domain: Arc::new(move |domain| james.is_local_domain(domain)),
        relay_allowed: Arc::new(move |ip| relay.contains(ip)),
    }
}

/// How long a login verified with argon2 is trusted by the login cache.
const LOGIN_CACHE_TTL: Duration = Duration::from_secs(3600);
/// The most logins the cache remembers.
const LOGIN_CACHE_ENTRIES: usize = 100_000;

/// The POP3 listener settings of one `<pop3server>` block.
fn pop3_settings(pop3: &Pop3Server) -> Pop3Settings {
    Pop3Settings {
        hello_name: pop3.common.hello_name.clone(),
        connection_timeout: pop3.common.connection_timeout,
        connection_limit: pop3.common.connection_limit.map(|n| n as usize),
        enable_apop: pop3.enable_apop,
        // Until STLS exists there is no way to satisfy requireTLSForAuth; see serve().
        plaintext_auth: true,
        ..Pop3Settings::default()
    }
}

/// The settings of one `<remotemanager>` block.
fn remote_manager_settings(manager: &RemoteManager) -> RemoteManagerSettings {
    RemoteManagerSettings {
        administrators: manager
            .administrators
            .iter()
            .map(|a| (a.login.clone(), a.password.clone()))
            .collect(),
        prompt: manager.prompt.clone(),
        connection_timeout: manager.common.connection_timeout,
        connection_limit: manager.common.connection_limit.map(|n| n as usize),
        login_failure_delay: Duration::from_secs(1),
        max_login_failures: 3,
    }
}

/// Waits for SIGTERM or SIGINT.
async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
