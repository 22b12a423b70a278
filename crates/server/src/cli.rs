//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Mailroom: an SMTP, POP3 and NNTP mail server with FetchMail, a RemoteManager console and a
/// programmable processing pipeline of James 2.3 matchers and mailets, on file or database
/// storage.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    /// The config.xml to use (default: the embedded configuration).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The server home, against which relative paths resolve (default: the config file's
    /// directory, else the current directory).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// What to do; without a command the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validates a configuration file and exits (non-zero with file:line errors).
    CheckConfig {
        /// The file to check (default: the --config file, else the embedded configuration).
        file: Option<PathBuf>,
    },
    /// Manages the users repository of the configuration.
    User {
        /// The user command.
        #[command(subcommand)]
        action: UserAction,
    },
    /// Lists, shows, flushes or deletes the mails of the spool or of a mail repository (also
    /// while the server runs).
    Queue {
        /// The queue command.
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Moves data between storage backends.
    Store {
        /// The store command.
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Runs a FetchMail task of the running server now.
    Fetchmail {
        /// The fetchmail command.
        #[command(subcommand)]
        action: FetchmailAction,
    },
    /// Lists every mailet this build has: what it does, its parameters and an example.
    ListMailets {
        /// As a Markdown table (the README's).
        #[arg(long)]
        markdown: bool,
    },
    /// Lists every matcher this build has: what it matches and an example.
    ListMatchers {
        /// As a Markdown table (the README's).
        #[arg(long)]
        markdown: bool,
    },
}

/// `mailroom fetchmail ...`.
#[derive(Subcommand, Debug)]
pub enum FetchmailAction {
    /// Runs the `<fetch name=NAME>` task now (after a run in progress) and prints what it did.
    Run {
        /// The task's name.
        name: String,
    },
}

/// `mailroom user ...`.
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Adds a user. Without --password the password is asked twice, without echo, at a
    /// terminal, or read as one line from a pipe; an empty password is refused.
    Add {
        /// The user name.
        name: String,
        /// The password (visible to other local users in the process list: prefer the prompt).
        #[arg(long)]
        password: Option<String>,
    },
    /// Deletes a user.
    Del {
        /// The user name.
        name: String,
    },
    /// Lists the users.
    List,
    /// Changes a user's password (asked as for `user add` without --password).
    Passwd {
        /// The user name.
        name: String,
        /// The new password (visible in the process list: prefer the prompt).
        #[arg(long)]
        password: Option<String>,
    },
}

/// `mailroom queue ...`. `URL` is a mail repository the configuration names
/// (`file://var/mail/error/`); without it, the spool.
#[derive(Subcommand, Debug)]
pub enum QueueAction {
    /// Lists the mails: name, state, size, age, next attempt, sender, recipients, error.
    List {
        /// The repository (default: the spool).
        url: Option<String>,
    },
    /// Shows one mail's envelope and headers.
    Show {
        /// The mail's name.
        name: String,
        /// The repository (default: the spool).
        url: Option<String>,
    },
    /// Processes mails now: a spooled mail is due at once; a mail of a repository goes back
    /// to the spool in state root. Usage: `flush NAME [URL]` or `flush --all [URL]`.
    Flush {
        /// Every mail of the repository.
        #[arg(long)]
        all: bool,
        /// NAME [URL], or with --all only [URL].
        #[arg(value_name = "NAME|URL")]
        args: Vec<String>,
    },
    /// Deletes mails. Usage: `delete NAME [URL]` or `delete --all [URL]`.
    Delete {
        /// Every mail of the repository.
        #[arg(long)]
        all: bool,
        /// NAME [URL], or with --all only [URL].
        #[arg(value_name = "NAME|URL")]
        args: Vec<String>,
    },
}

/// `mailroom store ...`.
#[derive(Subcommand, Debug)]
pub enum StoreAction {
    /// Copies the users, inboxes (with their UIDLs), spool and mail repositories of one
    /// configuration's repositories into another's (any backend to any other). Idempotent:
    /// what the target has already is not copied again, so an interrupted copy is finished
    /// by running it again. Neither server may be running.
    Copy {
        /// The configuration whose repositories are read.
        #[arg(long, value_name = "OLD.xml")]
        from: PathBuf,
        /// The configuration whose repositories are written.
        #[arg(long, value_name = "NEW.xml")]
        to: PathBuf,
    },
}
