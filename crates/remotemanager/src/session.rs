//! One console session, without a socket: the driver passes each line the administrator
//! typed to [`Session::line`] and writes the [`Step`]'s output.
//!
//! Every reply line ends with CRLF. The command is the text before the first space, compared
//! case-insensitively; the argument is the rest of the line with its case kept.

use std::sync::Arc;
use std::time::Duration;

use crate::{commands, mappings, memory, spool, Console, RemoteManagerSettings};

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

    /// Handles one line (without its line end). Blocking: commands use the repositories.
    pub fn line(&mut self, line: &str) -> Step {
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
                self.command(line, &mut step);
                if !step.close {
                    step.output.push_str(&self.settings.prompt);
                }
            }
        }
        step
    }

    fn check_login(&mut self, login: String, password: &str, step: &mut Step) {
        let mut out = Out(&mut step.output);
        let known = self
            .settings
            .administrators
            .iter()
            .any(|(l, p)| *l == login && constant_time_eq(p.as_bytes(), password.as_bytes()));
        if known && !password.is_empty() {
            tracing::info!(%login, "RemoteManager login");
            out.line(format!("Welcome {login}. HELP for a list of commands"));
            step.output.push_str(&self.settings.prompt);
            self.state = State::Ready(login);
            return;
        }
        self.failures += 1;
        tracing::warn!(%login, failures = self.failures, "RemoteManager login failed");
        out.line(format!("Login failed for {login}"));
        step.delay = Some(self.settings.login_failure_delay);
        if self.failures >= self.settings.max_login_failures {
            step.close = true;
        } else {
            out.line("Login id:");
        }
    }

    fn command(&mut self, raw: &str, step: &mut Step) {
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
            "ADDUSER" => commands::add_user(&**users, console.keep_apop_secret, argument, &mut out),
            "SETPASSWORD" => {
                commands::set_password(&**users, console.keep_apop_secret, argument, &mut out)
            }
            "DELUSER" => commands::delete_user(&**users, argument, &mut out),
            "LISTUSERS" => commands::list_users(&**users, &mut out),
            "COUNTUSERS" => commands::count_users(&**users, &mut out),
            "VERIFY" => commands::verify(&**users, argument, &mut out),
            "SETALIAS" => commands::set_alias(&**users, argument, &mut out),
            "SHOWALIAS" => commands::show_alias(&**users, argument, &mut out),
            "UNSETALIAS" => commands::unset_alias(&**users, argument, &mut out),
            "SETFORWARDING" => commands::set_forwarding(&**users, argument, &mut out),
            "SHOWFORWARDING" => commands::show_forwarding(&**users, argument, &mut out),
            "UNSETFORWARDING" => commands::unset_forwarding(&**users, argument, &mut out),
            "USER" => self.switch_users(argument, &mut out),
            "LISTSPOOL" => spool::list(&console, argument, &mut out),
            "FLUSHSPOOL" => spool::flush(&console, argument, &mut out),
            "DELETESPOOL" => spool::delete(&console, argument, &mut out),
            "ADDMAPPING" => mappings::add(&*console.mappings, argument, &mut out),
            "REMOVEMAPPING" => mappings::remove(&*console.mappings, argument, &mut out),
            "LISTMAPPING" => mappings::list(&*console.mappings, argument, &mut out),
            "LISTALLMAPPINGS" => mappings::list_all(&*console.mappings, argument, &mut out),
            "MEMSTAT" => memory::memstat(argument, &mut out),
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
        let wanted = wanted.to_lowercase();
        match self
            .console
            .users
            .iter()
            .position(|(name, _)| name.to_lowercase() == wanted)
        {
            Some(index) => {
                self.users = index;
                out.line(format!("Changed to repository '{wanted}'."));
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
        "list the mails in error state of a repository",
    ),
    (
        "flushspool [spoolrepositoryname] ([key=mKey] | [header=name] [regex=value])",
        "send the mails in error state back to processing",
    ),
    (
        "deletespool [spoolrepositoryname] ([key=mKey] | [header=name] [regex=value])",
        "delete the mails in error state",
    ),
    (
        "memstat ([-gc])",
        "shows memory usage; -gc returns freed memory to the system first",
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

/// Compares two secrets in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
