//! One console session, without a socket: the driver passes each line the administrator
//! typed to [`Session::line`] and writes the [`Step`]'s output.
//!
//! Every reply line ends with CRLF. The command is the text before the first space, compared
//! case-insensitively; the argument is the rest of the line with its case kept.

use std::sync::Arc;
use std::time::Duration;

use mailroom_store::password::constant_time_eq;

use crate::{commands, mappings, memory, news, spool, Console, RemoteManagerSettings};

/// What the driver does after a line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Bytes to write.
    pub output: String,
    /// Wait this long before writing them (a failed login).
    pub delay: Option<Duration>,
    /// Close the connection after writing.
    pub close: bool,
    /// Stop the whole server after writing (the `shutdown` command).
    pub shutdown: bool,
}

/// Where the login dialogue is.
#[derive(Debug)]
enum State {
    /// Waiting for the login id.
    Login,
    /// Waiting for the password of this login.
    Password(String),
    /// Logged in as this administrator.
    Ready(String),
}

/// One session's state.
pub struct Session {
    settings: Arc<RemoteManagerSettings>,
    console: Arc<Console>,
    state: State,
    /// The users repository commands act on (an index into `console.users`).
    users: usize,
    /// Failed logins so far.
    failures: u32,
}

/// Collects reply lines.
pub(crate) struct Out<'a>(&'a mut String);

impl Out<'_> {
    /// Adds one line (CRLF is added).
    pub(crate) fn line(&mut self, text: impl AsRef<str>) {
        self.0.push_str(text.as_ref());
        self.0.push_str("\r\n");
    }
}

impl Session {
    /// A session that has not logged in yet.
    pub fn new(settings: Arc<RemoteManagerSettings>, console: Arc<Console>) -> Session {
        Session {
            settings,
            console,
            state: State::Login,
            users: 0,
            failures: 0,
        }
    }

    /// The greeting: the banner and the first login prompt.
    pub fn banner() -> String {
        format!(
            "Mailroom Remote Administration Tool {}\r\nPlease enter your login and password\r\nLogin id:\r\n",
            env!("CARGO_PKG_VERSION")
        )
    }

    /// The administrator logged in, if any.
    pub fn administrator(&self) -> Option<&str> {
        match &self.state {
            State::Ready(login) => Some(login),
            _ => None,
        }
    }

    /// The answer to a line longer than `max` octets, which was discarded.
    pub fn line_too_long(&self, max: usize) -> Step {
        let mut output = format!("Error: line too long (at most {max} octets)\r\n");
        if self.administrator().is_some() {
            output.push_str(&self.settings.prompt);
        }
        Step {
            output,
            ..Step::default()
        }
    }

    /// Handles one line (without its line end).
    pub async fn line(&mut self, line: &str) -> Step {
        let mut step = Step::default();
        let mut out = Out(&mut step.output);
        match std::mem::replace(&mut self.state, State::Login) {
            State::Login => {
                self.state = State::Password(line.trim().to_string());
                out.line("Password:");
            }
            State::Password(login) => self.check_login(login, line, &mut step),
            State::Ready(admin) => {
                self.state = State::Ready(admin);
                self.command(line, &mut step).await;
                if !step.close {
                    step.output.push_str(&self.settings.prompt);
                }
            }
        }
        step
    }

    fn check_login(&mut self, login: String, password: &str, step: &mut Step) {
        let mut out = Out(&mut step.output);
        let known = self.settings.administrators.iter().any(|(l, p)| {
            *l == login && constant_time_eq(p.expose().as_bytes(), password.as_bytes())
        });
        if known && !password.is_empty() {
            tracing::info!(%login, "RemoteManager login");
            out.line(format!("Welcome {login}. HELP for a list of commands"));
            step.output.push_str(&self.settings.prompt);
            self.state = State::Ready(login);
            return;
        }
        self.failures += 1;
        metrics::counter!("mailroom_auth_failures_total", "protocol" => "remotemanager")
            .increment(1);
        tracing::warn!(%login, failures = self.failures, "RemoteManager login failed");
        out.line(format!("Login failed for {login}"));
        step.delay = Some(self.settings.login_failure_delay);
        if self.failures >= self.settings.max_login_failures {
            step.close = true;
        } else {
            out.line("Login id:");
        }
    }

    async fn command(&mut self, raw: &str, step: &mut Step) {
        let line = raw.trim();
        let (name, argument) = match line.split_once(' ') {
            Some((name, argument)) => (name, Some(argument)),
            None => (line, None),
        };
        let console = self.console.clone();
        let (repository_name, users) = &console.users[self.users];
        let mut out = Out(&mut step.output);
        tracing::debug!(command = %name, repository = %repository_name, "RemoteManager command");
        match name.to_ascii_uppercase().as_str() {
            "ADDUSER" => {
                commands::add_user(&**users, console.keep_apop_secret, argument, &mut out).await
            }
            "SETPASSWORD" => {
                commands::set_password(&**users, console.keep_apop_secret, argument, &mut out).await
            }
            "DELUSER" => commands::delete_user(&**users, argument, &mut out).await,
            "LISTUSERS" => commands::list_users(&**users, &mut out).await,
            "COUNTUSERS" => commands::count_users(&**users, &mut out).await,
            "VERIFY" => commands::verify(&**users, argument, &mut out).await,
            "SETALIAS" => commands::set_alias(&**users, argument, &mut out).await,
            "SHOWALIAS" => commands::show_alias(&**users, argument, &mut out).await,
            "UNSETALIAS" => commands::unset_alias(&**users, argument, &mut out).await,
            "SETFORWARDING" => commands::set_forwarding(&**users, argument, &mut out).await,
            "SHOWFORWARDING" => commands::show_forwarding(&**users, argument, &mut out).await,
            "UNSETFORWARDING" => commands::unset_forwarding(&**users, argument, &mut out).await,
            "USER" => self.switch_users(argument, &mut out),
            "LISTSPOOL" => spool::list(&console, argument, &mut out).await,
            "FLUSHSPOOL" => spool::flush(&console, argument, &mut out).await,
            "DELETESPOOL" => spool::delete(&console, argument, &mut out).await,
            "ADDMAPPING" => mappings::add(&*console.mappings, argument, &mut out).await,
            "REMOVEMAPPING" => mappings::remove(&*console.mappings, argument, &mut out).await,
            "LISTMAPPING" => mappings::list(&*console.mappings, argument, &mut out).await,
            "LISTALLMAPPINGS" => mappings::list_all(&*console.mappings, argument, &mut out).await,
            "ADDGROUP" => news::add(console.news.as_deref(), argument, &mut out).await,
            "DELGROUP" => news::delete(console.news.as_deref(), argument, &mut out).await,
            "LISTGROUPS" => news::list(console.news.as_deref(), &mut out).await,
            "MEMSTAT" => memory::memstat(argument, &mut out),
            "RELOADTLS" => {
                tracing::info!(admin = ?self.administrator(), "TLS reload requested on the RemoteManager");
                let reload = console.reload_tls.clone();
                match tokio::task::spawn_blocking(move || reload()).await {
                    Ok(lines) => lines.into_iter().for_each(|line| out.line(line)),
                    Err(e) => out.line(format!("Error reloading TLS: {e}")),
                }
            }
            "HELP" => help(&mut out),
            "QUIT" => {
                out.line("Bye");
                step.close = true;
            }
            "SHUTDOWN" => {
                out.line("Shutting down, bye bye");
                tracing::warn!(admin = ?self.administrator(), "shutdown requested on the RemoteManager");
                step.close = true;
                step.shutdown = true;
            }
            _ => out.line(format!("Unknown command {raw}")),
        }
    }

    /// `user <repository>`: later user commands act on another `<users-store>` repository.
    fn switch_users(&mut self, argument: Option<&str>, out: &mut Out) {
        let Some(wanted) = argument.filter(|a| !a.is_empty()) else {
            return out.line("Usage: user [repositoryName]");
        };
        let lower = wanted.to_lowercase();
        match self
            .console
            .users
            .iter()
            .position(|(name, _)| name.to_lowercase() == lower)
        {
            Some(index) => {
                self.users = index;
                out.line(format!("Changed to repository '{lower}'."));
            }
            None => out.line(format!("No such repository: {wanted}")),
        }
    }
}

/// The commands and what they do, in the layout of James's help.
const HELP: &[(&str, &str)] = &[
    ("help", "display this help"),
    ("listusers", "display existing accounts"),
    ("countusers", "display the number of existing accounts"),
    ("adduser [username] [password]", "add a new user"),
    ("verify [username]", "verify if specified user exist"),
    ("deluser [username]", "delete existing user"),
    (
        "setpassword [username] [password]",
        "sets a user's password",
    ),
    (
        "setalias [user] [alias]",
        "locally forwards all email for 'user' to 'alias'",
    ),
    ("showalias [username]", "shows a user's current email alias"),
    ("unsetalias [user]", "unsets an alias for 'user'"),
    (
        "setforwarding [username] [emailaddress]",
        "forwards a user's email to another email address",
    ),
    (
        "showforwarding [username]",
        "shows a user's current email forwarding",
    ),
    ("unsetforwarding [username]", "removes a forward"),
    ("user [repositoryname]", "change to another user repository"),
    (
        "addmapping ([table=table]) [user@domain] [mapping]",
        "add a mapping to the virtual user table",
    ),
    (
        "removemapping ([table=table]) [user@domain] [mapping]",
        "remove a mapping from the virtual user table",
    ),
    (
        "listmapping ([table=table]) [user@domain]",
        "list the mappings of an address",
    ),
    (
        "listallmappings ([table=table])",
        "list every mapping of a table",
    ),
    (
        "listspool [spoolrepositoryname] ([header=name] [regex=value])",
        "list the mails of a repository ([state=s] narrows)",
    ),
    (
        "flushspool [spoolrepositoryname] ([key=mKey] | [header=name] [regex=value])",
        "send the error mails back to processing ([state=s|all] for others)",
    ),
    (
        "deletespool [spoolrepositoryname] ([key=mKey] | [header=name] [regex=value])",
        "delete the error mails ([state=s|all] for others)",
    ),
    ("addgroup [newsgroup]", "create a newsgroup"),
    (
        "delgroup [newsgroup]",
        "delete a newsgroup and its articles",
    ),
    (
        "listgroups",
        "list the newsgroups with their article numbers",
    ),
    (
        "memstat ([-gc])",
        "shows memory usage; -gc returns freed memory to the system first",
    ),
    (
        "reloadtls",
        "reads the TLS certificates and keys again, as SIGHUP does",
    ),
    ("shutdown", "stops the server"),
    ("quit", "close connection"),
];

fn help(out: &mut Out) {
    out.line("Currently implemented commands:");
    for (syntax, what) in HELP {
        out.line(format!("{syntax:<72}{what}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_config::Secret;
    use mailroom_store::file::{FileMappingsRepository, FileUsersRepository, LogSpool};
    use mailroom_store::{Blocking, UsersRepository};
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Fixture {
        _dir: tempfile::TempDir,
        session: Session,
        users: Arc<dyn UsersRepository>,
        stopped: Arc<AtomicBool>,
    }

    fn fixture(keep_apop_secret: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let users: Arc<dyn UsersRepository> = Arc::new(Blocking::new(
            FileUsersRepository::open(&dir.path().join("users")).unwrap(),
        ));
        let archive: Arc<dyn UsersRepository> = Arc::new(Blocking::new(
            FileUsersRepository::open(&dir.path().join("archive")).unwrap(),
        ));
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = stopped.clone();
        let console = Console {
            users: vec![
                ("LocalUsers".into(), users.clone()),
                ("Archive".into(), archive),
            ],
            keep_apop_secret,
            spool: Arc::new(Blocking::new(
                LogSpool::open(&dir.path().join("spool")).unwrap(),
            )),
            open_repository: Arc::new(|url| {
                Err(mailroom_store::StoreError::NotFound(format!(
                    "repository {url}"
                )))
            }),
            mappings: Arc::new(Blocking::new(
                FileMappingsRepository::open(&dir.path().join("virtual")).unwrap(),
            )),
            news: Some(Arc::new(Blocking::new(
                mailroom_store::file::FileNewsRepository::open(
                    &dir.path().join("news"),
                    &dir.path().join("news-tmp"),
                    "localhost",
                )
                .unwrap(),
            ))),
            request_shutdown: Arc::new(move || flag.store(true, Ordering::SeqCst)),
            reload_tls: Arc::new(|| vec!["Reloaded cert.pem (SHA-256 AB:CD)".to_string()]),
        };
        let settings = RemoteManagerSettings {
            administrators: vec![
                ("root".into(), "pw".into()),
                ("empty".into(), Secret::default()),
            ],
            prompt: String::new(),
            connection_timeout: Duration::from_secs(60),
            connection_limit: None,
            limits: mailroom_net::Limits::default(),
            login_failure_delay: Duration::from_millis(1500),
            max_login_failures: 2,
        };
        Fixture {
            _dir: dir,
            session: Session::new(Arc::new(settings), Arc::new(console)),
            users,
            stopped,
        }
    }

    #[test]
    fn settings_debug_hides_administrator_passwords() {
        let f = fixture(false);
        let printed = format!("{:?}", f.session.settings);
        assert!(
            printed.contains("(\"root\", Secret(***))") && !printed.contains("\"pw\""),
            "{printed}"
        );
    }

    async fn logged_in(keep_apop_secret: bool) -> Fixture {
        let mut f = fixture(keep_apop_secret);
        f.session.line("root").await;
        assert_eq!(
            f.session.line("pw").await.output,
            "Welcome root. HELP for a list of commands\r\n"
        );
        f
    }

    #[tokio::test]
    async fn empty_password_never_logs_in_and_failures_are_delayed_then_close() {
        let mut f = fixture(false);
        assert_eq!(f.session.line("empty").await.output, "Password:\r\n");
        let step = f.session.line("").await;
        assert_eq!(step.output, "Login failed for empty\r\nLogin id:\r\n");
        assert_eq!(step.delay, Some(Duration::from_millis(1500)));
        assert!(!step.close);
        f.session.line("root").await;
        let step = f.session.line("PW").await;
        assert_eq!(step.output, "Login failed for root\r\n");
        assert!(step.close, "second failure closes");
        assert_eq!(f.session.administrator(), None);
    }

    #[tokio::test]
    async fn commands_are_case_insensitive_and_passwords_keep_spaces() {
        let mut f = logged_in(true).await;
        assert_eq!(
            f.session.line("AdDuSeR Bob  two  spaces ").await.output,
            "User Bob added\r\n"
        );
        let bob = f.users.get("bob").await.unwrap().unwrap();
        // The line is trimmed at its ends; inner spaces are the password's.
        assert!(f
            .users
            .verify_password("bob", " two  spaces")
            .await
            .unwrap());
        assert_eq!(bob.apop_secret.as_deref(), Some(" two  spaces"));
        assert_eq!(
            f.session.line("setpassword bob a b").await.output,
            "Password for bob reset\r\n"
        );
        assert!(f.users.verify_password("bob", "a b").await.unwrap());
    }

    #[tokio::test]
    async fn newsgroups_are_added_listed_and_deleted() {
        let mut f = logged_in(false).await;
        let mut say = async |line: &str| f.session.line(line).await.output;
        assert_eq!(
            say("addgroup comp.test").await,
            "Newsgroup comp.test added\r\n"
        );
        assert_eq!(
            say("addgroup comp.test").await,
            "Newsgroup comp.test already exists\r\n"
        );
        assert!(say("addgroup ../etc")
            .await
            .starts_with("Error adding newsgroup ../etc: not a valid"));
        assert_eq!(say("addgroup").await, "Usage: addgroup [newsgroup]\r\n");
        assert_eq!(
            say("listgroups").await,
            "Existing newsgroups: 1\r\ncomp.test articles=0 low=1 high=0\r\n"
        );
        assert_eq!(
            say("delgroup comp.test").await,
            "Newsgroup comp.test deleted\r\n"
        );
        assert_eq!(
            say("delgroup comp.test").await,
            "Newsgroup comp.test does not exist\r\n"
        );
        assert_eq!(say("listgroups").await, "Existing newsgroups: 0\r\n");
    }

    #[tokio::test]
    async fn apop_secret_is_kept_only_when_apop_is_enabled() {
        let mut f = logged_in(false).await;
        f.session.line("adduser bob secret").await;
        assert_eq!(f.users.get("bob").await.unwrap().unwrap().apop_secret, None);
    }

    #[tokio::test]
    async fn user_switches_repository_for_later_commands() {
        let mut f = logged_in(false).await;
        f.session.line("adduser bob secret").await;
        assert_eq!(
            f.session.line("user ARCHIVE").await.output,
            "Changed to repository 'archive'.\r\n"
        );
        assert_eq!(
            f.session.line("countusers").await.output,
            "Existing accounts 0\r\n"
        );
        f.session.line("user localusers").await;
        assert_eq!(
            f.session.line("countusers").await.output,
            "Existing accounts 1\r\n"
        );
    }

    #[tokio::test]
    async fn reloadtls_writes_what_the_reload_says() {
        let mut f = logged_in(false).await;
        let step = f.session.line("RELOADTLS").await;
        assert_eq!(step.output, "Reloaded cert.pem (SHA-256 AB:CD)\r\n");
        assert!(!step.close && !step.shutdown);
        let help = f.session.line("help").await.output;
        assert!(help.contains("reloadtls"), "{help}");
    }

    #[tokio::test]
    async fn spool_errors_and_shutdown() {
        let mut f = logged_in(false).await;
        assert_eq!(
            f.session.line("listspool file://nowhere/").await.output,
            "Error opening the spoolrepository repository file://nowhere/ does not exist\r\n"
        );
        let step = f.session.line("shutdown").await;
        assert_eq!(step.output, "Shutting down, bye bye\r\n");
        assert!(step.shutdown && step.close);
        // The driver calls request_shutdown; the session only asks for it.
        assert!(!f.stopped.load(Ordering::SeqCst));
    }
}
