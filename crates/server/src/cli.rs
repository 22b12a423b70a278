//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Mailroom: an SMTP, POP3 and NNTP mail server with a programmable processing pipeline.
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
        /// The file to check.
        file: PathBuf,
    },
    /// Manages the users repository of the configuration.
    User {
        /// The user command.
        #[command(subcommand)]
        action: UserAction,
    },
}

/// `mailroom user ...`.
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Adds a user (the password is read from standard input without --password).
    Add {
        /// The user name.
        name: String,
        /// The password.
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
    /// Changes a user's password (read from standard input without --password).
    Passwd {
        /// The user name.
        name: String,
        /// The new password.
        #[arg(long)]
        password: Option<String>,
    },
}
