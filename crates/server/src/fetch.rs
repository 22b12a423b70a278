//! `mailroom fetchmail run NAME`: runs a FetchMail task of the running server now. The CLI
//! sends `fetchmail NAME` over the queue's control socket (see [`crate::queue`]); the server
//! runs the task (after a run in progress) and answers `OK fetched=N rejected=N accounts_ok=N
//! accounts_failed=N` or `ERR reason`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::cli::{Cli, FetchmailAction};
use crate::queue::CONTROL_SOCKET;
use crate::repositories::AdminRepositories;

/// How long the CLI waits for a run (a large mailbox takes a while).
const RUN_TIMEOUT: Duration = Duration::from_secs(3600);

/// Runs one `mailroom fetchmail` command.
pub fn run(cli: &Cli, action: &FetchmailAction) -> Result<()> {
    let FetchmailAction::Run { name } = action;
    if name.is_empty() || name.contains(['\n', '\r']) {
        bail!("invalid task name {name:?}");
    }
    let config = crate::server::load_config(cli)?;
    let admin = AdminRepositories::new(&config)?;
    let path = admin.spool_dir().join(CONTROL_SOCKET);
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "no running server answers on {} (fetchmail run needs one)",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(RUN_TIMEOUT))?;
    stream.write_all(format!("fetchmail {name}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .with_context(|| format!("reading the server's answer on {}", path.display()))?;
    let answer = answer.trim_end();
    if let Some(done) = answer.strip_prefix("OK ") {
        println!("{name}: {done}");
        Ok(())
    } else if let Some(e) = answer.strip_prefix("ERR ") {
        Err(anyhow!("{e}"))
    } else {
        Err(anyhow!("no answer from the server on {}", path.display()))
    }
}

/// The server's answer to a `fetchmail NAME` line.
pub async fn answer(line: &str, fetchmail: Option<&mailroom_fetchmail::FetchMail>) -> String {
    let Some(name) = line
        .strip_prefix("fetchmail ")
        .and_then(|l| l.strip_suffix('\n'))
    else {
        return "ERR request not terminated by a line feed\n".into();
    };
    let Some(fetchmail) = fetchmail else {
        return "ERR FetchMail is not enabled (<fetchmail enabled=\"true\">)\n".into();
    };
    match fetchmail.run(name.trim_end_matches('\r')).await {
        None => format!(
            "ERR no fetch task named {name:?} (tasks: {})\n",
            fetchmail.names().join(", ")
        ),
        Some(s) => format!(
            "OK fetched={} rejected={} accounts_ok={} accounts_failed={}\n",
            s.fetched, s.rejected, s.accounts_ok, s.accounts_failed
        ),
    }
}
