//! RecipientIsOverFixedQuota: local recipients whose inbox holds more than a fixed size.

use mailroom_mailet::{Mail, MailAddress, MailetContext, MailetError, Matcher};

use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_matcher("RecipientIsOverFixedQuota", |c| {
            let text = c.required_condition()?;
            let quota = parse_quota(text).ok_or_else(|| {
                MailetError::new(format!(
                    "RecipientIsOverFixedQuota: {text:?} is not a size like 20m, 500k or 1000000"
                ))
            })?;
            Ok(Box::new(OverFixedQuota(quota)))
        })
        .about(
            "The local recipients (local domain, existing user, not the postmaster) whose inbox \
             already holds more than this many octets (`k` and `m` suffixes); the inbox of the \
             user an alias points to when aliasing is on. Mail from the null sender or the \
             postmaster is never matched.",
            r#"<mailet match="RecipientIsOverFixedQuota=20m" class="Bounce"><inline>heads</inline></mailet>"#,
        );
}

/// `20m`, `500k`, `1000`: octets, as James's `parseQuota` reads them.
fn parse_quota(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (digits, unit) = if let Some(d) = text.strip_suffix('k') {
        (d, 1024)
    } else if let Some(d) = text.strip_suffix('m') {
        (d, 1024 * 1024)
    } else {
        (text.as_str(), 1)
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// `RecipientIsOverFixedQuota=20m`.
struct OverFixedQuota(u64);

impl Matcher for OverFixedQuota {
    fn matches(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
    ) -> Result<Vec<MailAddress>, MailetError> {
        let postmaster = ctx.postmaster();
        // Bounces and the postmaster's own mail always get through (James's isSenderChecked).
        if mail.sender().is_none_or(|s| s == postmaster) {
            return Ok(Vec::new());
        }
        let mut over = Vec::new();
        for rcpt in mail.recipients() {
            if rcpt == postmaster || !ctx.is_local_server(rcpt.domain()) {
                continue;
            }
            let Some(user) = ctx.local_user(rcpt.local_part())? else {
                continue;
            };
            let inbox = user.alias.as_deref().unwrap_or(&user.name);
            if ctx.inbox_size(inbox)? > self.0 {
                over.push(rcpt.clone());
            }
        }
        Ok(over)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matchers::testing::{build, mail_from, run_in, try_build, TestContext};

    #[test]
    fn parses_quotas() {
        assert_eq!(parse_quota("20m"), Some(20 * 1024 * 1024));
        assert_eq!(parse_quota("500K"), Some(500 * 1024));
        assert_eq!(parse_quota("1000"), Some(1000));
        assert_eq!(parse_quota("lots"), None);
        assert_eq!(parse_quota("99999999999999999999m"), None);
        assert!(try_build("RecipientIsOverFixedQuota", Some("1g")).is_err());
        assert!(try_build("RecipientIsOverFixedQuota", None).is_err());
    }

    #[test]
    fn matches_local_users_over_quota() {
        let mut ctx = TestContext::default()
            .user("full", None)
            .user("roomy", None)
            .user("alias", Some("full"))
            .user("postmaster", None);
        ctx.inbox_sizes.insert("full".into(), 2048);
        ctx.inbox_sizes.insert("roomy".into(), 1024);
        ctx.inbox_sizes.insert("postmaster".into(), 1 << 30);
        let m = build("RecipientIsOverFixedQuota", Some("1k"));
        let rcpts = [
            "full@local.example",
            "roomy@local.example",
            "alias@local.example",
            "nobody@local.example",
            "full@remote.example",
            "postmaster@local.example",
        ];
        let mail = mail_from(Some("s@remote.example"), &rcpts, b"\r\nx");
        assert_eq!(
            run_in(&*m, &mail, &ctx),
            vec!["full@local.example", "alias@local.example"]
        );
        let bounce = mail_from(None, &rcpts, b"\r\nx");
        assert!(run_in(&*m, &bounce, &ctx).is_empty());
        let from_postmaster = mail_from(Some("postmaster@local.example"), &rcpts, b"\r\nx");
        assert!(run_in(&*m, &from_postmaster, &ctx).is_empty());
    }
}
