//! What every list server does with a post, in one place: James's `GenericListserv` (the
//! checks, `[prefix] ` with its `Re:` normalising, `Reply-To:`, `X-been-there:`, the copy to
//! the members) for `AvalonListserv` (members in a users repository) and `JDBCListserv`
//! (members and settings in a database), and the same steps for `CommandListservProcessor`
//! (which answers refusals with its own texts and adds the list's footer).

use mailroom_mailet::{
    derived_mail_name, state, Envelope, Mail, MailAddress, MailetConfig, MailetContext,
    MailetError, Message,
};

use crate::mailets::compose::encode_header_text;

/// A list's rules for posts (`membersonly`, `attachmentsallowed`, `replytolist`,
/// `subjectprefix` and `autobracket` in James's parameters and its listserv table).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PostRules {
    pub(crate) members_only: bool,
    pub(crate) attachments_allowed: bool,
    pub(crate) reply_to_list: bool,
    /// What goes before the subject (`[prefix] ` when bracketed).
    pub(crate) subject_prefix: Option<String>,
}

/// Why a post is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    MembersOnly,
    Attachments,
}

impl Refusal {
    /// James's `GenericListserv` text.
    pub(crate) fn text(self) -> &'static str {
        match self {
            Refusal::MembersOnly => {
                "Only members of this listserv are allowed to send a message to this address."
            }
            Refusal::Attachments => "You cannot send attachments to this listserv.",
        }
    }
}

impl PostRules {
    /// The rules from the mailet parameters of AvalonListserv and CommandListservProcessor
    /// (James's defaults: open, attachments taken, replies to the list, brackets).
    pub(crate) fn from_config(c: &MailetConfig) -> Result<Self, MailetError> {
        Ok(PostRules {
            members_only: c.bool_param("membersonly", false)?,
            attachments_allowed: c.bool_param("attachmentsallowed", true)?,
            reply_to_list: c.bool_param("replytolist", true)?,
            subject_prefix: Self::prefix(
                c.param("subjectprefix"),
                c.bool_param("autobracket", true)?,
            ),
        })
    }

    /// The subject prefix as written: `[prefix] ` when bracketed. (James 2.3.2's
    /// CommandListservProcessor wrote `[prefix]` with no space after; its GenericListserv and
    /// later James versions put one, as here.)
    pub(crate) fn prefix(prefix: Option<&str>, auto_bracket: bool) -> Option<String> {
        prefix.map(|p| {
            if auto_bracket {
                format!("[{p}] ")
            } else {
                p.to_string()
            }
        })
    }

    /// Why the post may not go to the list, if it may not: a sender who is neither a member
    /// of a members-only list nor one of `allowed` (and, with `allowed_only`, only those), or
    /// a multipart post to a list that takes no attachments.
    pub(crate) fn refusal(
        &self,
        mail: &Mail,
        members: &[MailAddress],
        allowed: &[MailAddress],
        allowed_only: bool,
    ) -> Option<Refusal> {
        let sender = mail.sender();
        let is_member = sender.is_some_and(|s| members.contains(s));
        let is_allowed = sender.is_some_and(|s| allowed.contains(s));
        if !is_allowed && (allowed_only || self.members_only && !is_member) {
            return Some(Refusal::MembersOnly);
        }
        if !self.attachments_allowed && is_multipart(&mail.message) {
            return Some(Refusal::Attachments);
        }
        None
    }

    /// The list's own copy come back around (`X-been-there:` the list).
    pub(crate) fn came_back(mail: &Mail, list: &MailAddress) -> bool {
        let list = list.to_string();
        mail.message
            .headers("X-been-there")
            .iter()
            .any(|b| b.trim().eq_ignore_ascii_case(&list))
    }

    /// The copy that goes to the members: the post's header section with `Return-Path:`
    /// removed, the subject prefixed, `Reply-To:` and `X-been-there:` the list; its body
    /// shared (streamed from storage when read); sent by `from`, from this server.
    pub(crate) fn copy(
        &self,
        mail: &Mail,
        from: &MailAddress,
        members: Vec<MailAddress>,
        list: &MailAddress,
    ) -> Mail {
        let list = list.to_string();
        let mut message = mail.message.clone();
        message.remove_header("Return-Path");
        if let Some(prefix) = &self.subject_prefix {
            let subject = message.subject().unwrap_or_default();
            let subject = normalize_subject(&subject, prefix);
            message.set_header("Subject", &encode_header_text(&subject));
        }
        if self.reply_to_list {
            message.set_header("Reply-To", &list);
        }
        message.set_header("X-been-there", &list);
        // Sent by this server (remote address 127.0.0.1, as James's `sendMail` does): the
        // members are the administrator's list, not the poster's choice, and a relay check such
        // as the stock config's `RemoteAddrNotInNetwork=127.0.0.1` must let a post from outside
        // reach remote members.
        let envelope = Envelope::new(derived_mail_name(mail.name()), Some(from.clone()), members);
        Mail::new(envelope, message)
    }
}

/// James's `GenericListserv.service`: a refused post is answered with a notice to its sender
/// (James's `MailetContext.bounce`); a post that came back around is dropped; otherwise one
/// copy goes to all the `members` from the postmaster (bounces come back to the postmaster,
/// not to the list). `list` is the list's address (`None`: the post's first recipient). The
/// post itself ends here.
pub(crate) fn serve(
    rules: &PostRules,
    mail: &mut Mail,
    ctx: &dyn MailetContext,
    members: Vec<MailAddress>,
    list: Option<MailAddress>,
) -> Result<(), MailetError> {
    if let Some(refusal) = rules.refusal(mail, &members, &[], false) {
        super::notify_sender(mail, ctx, refusal.text())?;
    } else if let Some(list) = list.or_else(|| mail.recipients().first().cloned()) {
        if PostRules::came_back(mail, &list) {
            ctx.log(&format!(
                "mail={} list={list} status=dropped reason=X-been-there",
                mail.name()
            ));
        } else if members.is_empty() {
            ctx.log(&format!(
                "mail={} list={list} status=dropped reason=no-members",
                mail.name()
            ));
        } else {
            let count = members.len();
            let copy = rules.copy(mail, ctx.postmaster(), members, &list);
            let name = copy.name().to_string();
            ctx.send_mail(copy)?;
            ctx.log(&format!(
                "mail={} list={list} status=distributed members={count} copy={name}",
                mail.name()
            ));
        }
    }
    mail.set_state(state::GHOST);
    Ok(())
}

/// Whether the message is multipart (James: its content is a `MimeMultipart`).
pub(crate) fn is_multipart(message: &Message) -> bool {
    message.header("Content-Type").is_some_and(|v| {
        v.trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/")
    })
}

/// James's subject normalisation for list mail: the prefix moved (or put) at the front, every
/// `Re:` after it turned into `RE:` and reduced to one, double spaces made single.
/// Linear in the subject's length: a poster chooses the subject, and may make it a megabyte of
/// `Re: ` (James's way, a search from the start after each change, is quadratic).
pub(crate) fn normalize_subject(subject: &str, prefix: &str) -> String {
    // The prefix at the front (moved there if it was further on).
    let mut s = String::with_capacity(subject.len() + prefix.len());
    match subject.find(prefix) {
        Some(0) => s.push_str(subject),
        Some(at) => {
            s.push_str(prefix);
            s.push_str(&subject[..at]);
            s.push_str(&subject[at + prefix.len()..]);
        }
        None => {
            s.push_str(prefix);
            s.push_str(subject);
        }
    }
    let start = prefix.len();
    // `Re:` after the prefix becomes `RE:` (no new `Re:` can appear by that).
    let s = format!("{}{}", &s[..start], s[start..].replace("Re:", "RE:"));
    // Every `RE:` after the first one after the prefix goes, including one that a removal
    // forms from its neighbours: a stack that drops a trailing `RE:` as it appears leaves the
    // same text as removing them one by one. Without a first one, removal starts at byte 2.
    // All three passes only remove ASCII bytes, so the text stays UTF-8.
    let keep = s[start..]
        .find("RE:")
        .map_or(2, |at| start + at + 3)
        .min(s.len());
    let mut out = Vec::with_capacity(s.len());
    out.extend_from_slice(&s.as_bytes()[..keep]);
    for &b in &s.as_bytes()[keep..] {
        out.push(b);
        if out.len() >= keep + 3 && out.ends_with(b"RE:") {
            out.truncate(out.len() - 3);
        }
    }
    // Runs of spaces starting after the prefix become one space.
    let mut from = start.min(out.len());
    while from < out.len() && (out[from] & 0xC0) == 0x80 {
        from += 1;
    }
    let mut result = Vec::with_capacity(out.len());
    result.extend_from_slice(&out[..from]);
    for &b in &out[from..] {
        if b == b' ' && result.len() > from && result.last() == Some(&b' ') {
            continue;
        }
        result.push(b);
    }
    String::from_utf8(result).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
