//! `mailroom`: the server binary. Parses the command line, then either runs the server or one
//! of the administration commands.
#![forbid(unsafe_code)]

mod auth;
mod bayes;
mod cli;
mod copy;
mod databases;
mod fetch;
mod limits;
mod observe;
mod queue;
mod queue_db;
mod recipients;
mod repositories;
mod server;
mod tls;
mod users;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, StoreAction};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match &cli.command {
        None => server::run(&cli),
        Some(Command::CheckConfig { file }) => server::check_config(
            file.as_deref().or(cli.config.as_deref()),
            cli.home.as_deref(),
        ),
        Some(Command::User { action }) => users::run(&cli, action),
        Some(Command::Queue { action }) => queue::run(&cli, action),
        Some(Command::Fetchmail { action }) => fetch::run(&cli, action),
        Some(Command::ListMailets { markdown }) => {
            print!("{}", server::list_mailets(*markdown));
            Ok(())
        }
        Some(Command::ListMatchers { markdown }) => {
            print!("{}", server::list_matchers(*markdown));
            Ok(())
        }
        Some(Command::Store {
            action: StoreAction::Copy { from, to },
        }) => copy::run(from, to),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailroom: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: an error that shows its source in its own text
/// (`I/O error: ...`) is not followed by that source again.
fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_shown_in_its_error_is_said_once() {
        let io = std::io::Error::other("the disk is gone");
        let e = anyhow::Error::from(mailroom_store::StoreError::Io(io)).context("reading");
        assert_eq!(super::message(&e), "reading: I/O error: the disk is gone");
    }
}
