//! `mailroom user add|del|list|passwd`: edits the configured users repository directly. A
//! running server reads the repository on every lookup, so it sees the change at once.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use mailroom_store::User;

use crate::cli::{Cli, UserAction};

/// Runs one user command.
pub fn run(cli: &Cli, action: &UserAction) -> Result<()> {
    let config = crate::server::load_config(cli)?;
    // APOP needs the password itself (RFC 1939 §7): keep it only where a POP3 listener
    // offers APOP.
    let keep_apop_secret = crate::server::keeps_apop_secrets(&config);
    // The repositories are async; one command needs no more than one worker thread. Not a
    // current-thread runtime: the database is opened through a handle of it, and a handle's
    // `block_on` drives no I/O there (a PostgreSQL connection would wait forever).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let databases = crate::databases::Databases::new(&config, runtime.handle().clone());
    let users = crate::repositories::users(&config, &databases)?;
    match action {
        UserAction::Add { name, password } => {
            let password = password_or_stdin(password.as_deref())?;
            let mut user = User::new(name, &password);
            user.apop_secret = keep_apop_secret.then_some(password);
            runtime.block_on(users.add(&user))?;
            println!("User {name} added");
        }
        UserAction::Del { name } => {
            if !runtime.block_on(users.remove(name))? {
                bail!("no user {name}");
            }
            println!("User {name} deleted");
        }
        UserAction::List => {
            for name in runtime.block_on(users.list())? {
                println!("{name}");
            }
        }
        UserAction::Passwd { name, password } => {
            let Some(mut user) = runtime.block_on(users.get(name))? else {
                bail!("no user {name}");
            };
            let password = password_or_stdin(password.as_deref())?;
            user.set_password(&password, keep_apop_secret);
            runtime.block_on(users.update(&user))?;
            println!("Password of {name} changed");
        }
    }
    Ok(())
}

/// The `--password` value; else, at a terminal, the password typed twice without echo; else
/// one line of standard input (the whole line: passwords may contain spaces). An empty
/// password is refused in every case.
fn password_or_stdin(flag: Option<&str>) -> Result<String> {
    let password = match flag {
        Some(password) => password.to_string(),
        None if std::io::stdin().is_terminal() => {
            let first = prompt_hidden("Password: ")?;
            if first.is_empty() {
                bail!("empty password: refused");
            }
            if prompt_hidden("Password again: ")? != first {
                bail!("the two passwords differ; nothing changed");
            }
            first
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if password.is_empty() {
        bail!("empty password: refused");
    }
    Ok(password)
}

/// Turns echo off on the terminal on standard input, writes `prompt` to standard error and
/// reads one line; echo is restored afterwards, even when reading fails. Echo goes off before
/// the prompt appears, and nothing typed ahead is discarded, so a fast typist loses nothing.
fn prompt_hidden(prompt: &str) -> Result<String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("reading the terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    // Keep the newline visible so the next prompt starts on its own line.
    quiet.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("turning echo off")?;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let restored = tcsetattr(&stdin, OptionalActions::Now, &saved);
    read.context("reading the password")?;
    restored.context("turning echo back on")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
