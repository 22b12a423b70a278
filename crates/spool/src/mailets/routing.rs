//! Mailets that route or store mail: ToProcessor, ToRepository, Null, PostmasterAlias.
//! ToRepository and Null end a mail's way, so they log each recipient's outcome
//! (`status=stored`, `status=dropped`; see [`mailroom_mailet::outcome`]).

use mailroom_mailet::outcome::{Outcome, Status};
use mailroom_mailet::{state, Mail, Mailet, MailetContext, MailetError};

use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_mailet("ToProcessor", |c| {
            Ok(Box::new(ToProcessor {
                processor: c.required("processor")?.to_string(),
                notice: c.param("notice").map(str::to_string),
            }))
        })
        .about(
            "Moves the mail to <processor>; <notice> becomes its error message.",
            "<mailet match=\"All\" class=\"ToProcessor\"><processor>transport</processor></mailet>",
        )
        .params(&["processor", "notice"]);
    registry
        .add_mailet("ToRepository", |c| {
            let url = c.required("repositoryPath")?;
            // Checked here so that check-config reports a bad URL at its line, not the
            // first mail that reaches it. A URL, as James's Store requires (file://, db://,
            // dbfile://, or file:path).
            let trimmed = url.trim();
            if !trimmed.contains("://") && !trimmed.starts_with("file:") {
                return Err(MailetError::new(format!(
                    "mailet ToRepository: <repositoryPath> {url:?} is not a repository URL \
                     (file://, db://, dbfile://)"
                )));
            }
            mailroom_config::RepositoryUrl::parse(url, std::path::Path::new(".")).map_err(|e| {
                MailetError::new(format!("mailet ToRepository: <repositoryPath>: {e}"))
            })?;
            Ok(Box::new(ToRepository {
                url: url.to_string(),
                pass_through: c.bool_param("passThrough", false)?,
            }))
        }).about("Stores the mail in the mail repository <repositoryPath> and ghosts it (<passThrough>true lets it go on).", "<mailet match=\"All\" class=\"ToRepository\"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>")
        .params(&["repositoryPath", "passThrough"]);
    registry
        .add_mailet("Null", |_| Ok(Box::new(Null)))
        .about(
            "Ghosts the mail: processing ends and it leaves the spool.",
            "<mailet match=\"RelayLimit=30\" class=\"Null\"/>",
        )
        .params(&[]);
    registry
        .add_mailet("PostmasterAlias", |_| Ok(Box::new(PostmasterAlias)))
        .about(
            "Rewrites postmaster@ any local domain to the configured <postmaster>.",
            "<mailet match=\"All\" class=\"PostmasterAlias\"/>",
        )
        .params(&[]);
}

/// `<processor>name</processor>`: moves the mail to another processor; `<notice>` becomes its
/// error message (what a bounce will say).
struct ToProcessor {
    processor: String,
    notice: Option<String>,
}

impl Mailet for ToProcessor {
    fn service(&self, mail: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        if let Some(notice) = &self.notice {
            mail.envelope.error_message = Some(notice.clone());
        }
        mail.set_state(&self.processor);
        Ok(())
    }
}

/// `<repositoryPath>URL</repositoryPath>`: stores the mail there and ghosts it, unless
/// `<passThrough>true</passThrough>`.
struct ToRepository {
    url: String,
    pass_through: bool,
}

impl Mailet for ToRepository {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        ctx.store_mail(&self.url, mail)?;
        for rcpt in mail.recipients() {
            let mut line =
                Outcome::new(mail.name(), rcpt, Status::Stored).field("repository", &self.url);
            if let Some(error) = &mail.envelope.error_message {
                line = line.field("error", error);
            }
            ctx.log(&line.to_string());
        }
        if !self.pass_through {
            mail.set_state(state::GHOST);
        }
        Ok(())
    }
}

/// Ends processing: the mail is deleted.
struct Null;

impl Mailet for Null {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        for rcpt in mail.recipients() {
            let line = Outcome::new(mail.name(), rcpt, Status::Dropped).field("reason", "Null");
            ctx.log(&line.to_string());
        }
        mail.set_state(state::GHOST);
        Ok(())
    }
}

/// Rewrites `postmaster@<local domain>` recipients to the configured postmaster.
struct PostmasterAlias;

impl Mailet for PostmasterAlias {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let postmaster = ctx.postmaster().clone();
        let mut recipients: Vec<_> = mail
            .recipients()
            .iter()
            .map(|r| {
                if r.local_part().eq_ignore_ascii_case("postmaster")
                    && ctx.is_local_server(r.domain())
                {
                    postmaster.clone()
                } else {
                    r.clone()
                }
            })
            .collect();
        recipients.dedup();
        mail.set_recipients(recipients);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::build as try_build;

    #[test]
    fn to_repository_checks_its_url() {
        for good in [
            "file://var/mail/error/",
            "db://maildb/error",
            "file:var/mail/error",
        ] {
            assert!(
                try_build("ToRepository", &[("repositoryPath", good)]).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "ftp://host/x",
            "mbox://var/mail",
            "db:///error",
            "",
            "var/mail/error",
        ] {
            assert!(
                try_build("ToRepository", &[("repositoryPath", bad)]).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(try_build(
            "ToRepository",
            &[("repositoryPath", "file://x/"), ("passThrough", "maybe")]
        )
        .is_err());
    }
}
