//! What an administrator's flush does to mails, shared by `mailroom queue` and the
//! RemoteManager's `flushspool`, so that both act alike: a mail of a repository goes back to
//! the spool; a mail of the spool is made due with [`SpoolRepository::make_due`].

use mailroom_mailet::Mail;

use crate::{MailRepository, Result, SpoolRepository};

/// Sends the mail `name` of `repository` back to the spool in state `root`, its error
/// message cleared, if `select` still takes it (it may have changed since it was listed).
/// Stored in the spool before it is removed from the repository, so a crash in between
/// duplicates it, never loses it. Returns `false` when it is gone or no longer selected.
pub async fn flush_to_spool(
    spool: &dyn SpoolRepository,
    repository: &dyn MailRepository,
    name: &str,
    select: &(dyn Fn(&Mail) -> bool + Sync),
) -> Result<bool> {
    let Some(mut mail) = repository.retrieve(name).await?.filter(|m| select(m)) else {
        return Ok(false);
    };
    mail.set_state(mailroom_mailet::state::ROOT);
    mail.envelope.error_message = None;
    mail.envelope.touch();
    // A new name: the old one may still be leased by the worker that stored the mail in the
    // repository, and that worker's removal of its spool mail must not remove this one.
    mail.envelope.name = mailroom_mailet::new_mail_name();
    spool.store(&mail).await?;
    repository.remove(name).await
}

/// Text for one line of a listing: line breaks and other control characters as spaces (an
/// error message may hold a remote server's multi-line reply).
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_line_replaces_control_characters() {
        assert_eq!(super::one_line("550 a\r\nb\tc"), "550 a  b c");
    }
}
