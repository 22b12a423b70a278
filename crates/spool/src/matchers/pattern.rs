//! Matchers on regular expressions: RecipientIsRegex, SenderIsRegex,
//! HasMailAttributeWithValueRegex, FileRegexMatcher and NESSpamCheck.
//!
//! James 2.3 compiles these with Jakarta ORO's `Perl5Matcher.matches`, which must match the
//! *whole* text; the patterns here are anchored the same way (`^(?:pattern)$`), so
//! `RecipientIsRegex=bob` matches no address and `.*bob.*` is what finds a part.

use std::path::{Path, PathBuf};

use mailroom_mailet::{Mail, MailAddress, MailetContext, MailetError, Matcher, MatcherConfig};
use regex::Regex;

use super::all_if;
use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_matcher("RecipientIsRegex", |c| {
            Ok(Box::new(RecipientIsRegex(whole(
                &c.name,
                c.required_condition()?,
            )?)))
        })
        .about(
            "The recipients whose whole address (user@domain) matches the regular expression.",
            r#"<mailet match="RecipientIsRegex=(?i)postmaster@.*" class="ToProcessor">"#,
        );
    registry
        .add_matcher("SenderIsRegex", |c| {
            Ok(Box::new(SenderIsRegex(whole(
                &c.name,
                c.required_condition()?,
            )?)))
        })
        .about(
            "Every recipient when the sender's whole address matches the regular expression \
             (never for the null sender).",
            r#"<mailet match="SenderIsRegex=.*@spam\.example" class="Null"/>"#,
        );
    registry
        .add_matcher("HasMailAttributeWithValueRegex", |c| {
            let condition = c.required_condition()?;
            let (name, pattern) = condition.split_once(',').ok_or_else(|| {
                MailetError::new(
                    "HasMailAttributeWithValueRegex needs name, regex \
                     (HasMailAttributeWithValueRegex=org.example.score, [5-9].*)",
                )
            })?;
            Ok(Box::new(AttributeRegex {
                name: name.trim().to_string(),
                pattern: whole(&c.name, pattern.trim())?,
            }))
        })
        .about(
            "Every recipient when the mail attribute's value, as text, matches the regular \
             expression.",
            r#"<mailet match="HasMailAttributeWithValueRegex=org.example.score, [5-9].*" class="Null"/>"#,
        );
    registry
        .add_matcher("NESSpamCheck", |_| Ok(Box::new(nes_spam_check()?)))
        .no_condition()
        .about(
            "Every recipient when a header matches one of the 39 fixed header patterns of \
             James 2.3's NESSpamCheck (forged Received lines, bulk-mailer X-Mailer values, \
             empty Message-IDs...), each matching the whole value.",
            r#"<mailet match="NESSpamCheck" class="ToProcessor"><processor>spam</processor></mailet>"#,
        );
    register_file_regex(registry, Path::new("."));
}

/// Registers FileRegexMatcher with its pattern file resolved against `home` (the server
/// registers it again with the server home; the standard registry uses the current directory).
pub fn register_file_regex(registry: &mut Registry, home: &Path) {
    let home = home.to_path_buf();
    registry
        .add_matcher("FileRegexMatcher", move |c| {
            Ok(Box::new(file_regex(&home, c)?))
        })
        .about(
            "Every recipient when a header matches a pattern of the file named by the condition \
             (relative to the server home): one `Header-Name:regex` per line.",
            r#"<mailet match="FileRegexMatcher=conf/spam-patterns.txt" class="Null"/>"#,
        );
}

/// A pattern that must match the whole text, as ORO's `matches` does.
fn whole(matcher: &str, pattern: &str) -> Result<Regex, MailetError> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        MailetError::new(format!(
            "{matcher}: bad regular expression {pattern:?}: {e}"
        ))
    })
}

/// `RecipientIsRegex=regex`: the recipients whose address matches.
struct RecipientIsRegex(Regex);

impl Matcher for RecipientIsRegex {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        Ok(mail
            .recipients()
            .iter()
            .filter(|r| self.0.is_match(&r.to_string()))
            .cloned()
            .collect())
    }
}

/// `SenderIsRegex=regex`: every recipient when the sender's address matches.
struct SenderIsRegex(Regex);

impl Matcher for SenderIsRegex {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let hit = mail
            .sender()
            .is_some_and(|s| self.0.is_match(&s.to_string()));
        all_if(mail, hit)
    }
}

/// `HasMailAttributeWithValueRegex=name, regex`.
struct AttributeRegex {
    name: String,
    pattern: Regex,
}

impl Matcher for AttributeRegex {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let hit = mail
            .attribute(&self.name)
            .is_some_and(|v| self.pattern.is_match(&v.to_string()));
        all_if(mail, hit)
    }
}

/// Header name → pattern pairs; every recipient when any field of that name matches its
/// pattern (James's GenericRegexMatcher: whole-value match, `.` also matching a line end).
struct HeaderPatterns(Vec<(String, Regex)>);

impl HeaderPatterns {
    fn new(matcher: &str, pairs: &[(&str, &str)]) -> Result<Self, MailetError> {
        pairs
            .iter()
            .map(|(header, pattern)| {
                Ok((
                    header.to_string(),
                    whole(matcher, &format!("(?s:{pattern})"))?,
                ))
            })
            .collect::<Result<_, _>>()
            .map(HeaderPatterns)
    }
}

impl Matcher for HeaderPatterns {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let hit = self.0.iter().any(|(header, pattern)| {
            mail.message
                .headers(header)
                .iter()
                .any(|value| pattern.is_match(value))
        });
        all_if(mail, hit)
    }
}

/// The header patterns of `NESSpamCheck`, as James 2.3 lists them.
const NES_PATTERNS: &[(&str, &str)] = &[
    ("Received", "GAA.*-0600.*EST"),
    ("Received", "XAA.*-0700.*EDT"),
    ("Received", "xxxxxxxxxxxxxxxxxxxxx"),
    ("Received", "untrace?able"),
    ("Received", "from (baby|bewellnet|kllklk) "),
    ("To", r"Friend@public\.com"),
    ("To", "user@the[-_]internet"),
    ("Date", "/[0-9]+/.+[AP]M.+Time"),
    ("Subject", r"^\(?ADV?[:;)]"),
    ("Message-ID", "<>"),
    ("Message-Id", "<>"),
    ("Message-Id", r"<(419\.43|989\.28)"),
    ("X-MimeOLE", "MimeOLE V[^0-9]"),
    ("MIME-Version", "1.0From"),
    ("X-Mailer", "DiffondiCool"),
    ("X-Mailer", "Emailer Platinum"),
    ("X-Mailer", "eMerge"),
    ("X-Mailer", "Crescent Internet Tool"),
    ("X-Mailer", "Avalanche"),
    ("Subject", "                    "),
    ("MessageID", "<.+>"),
    ("X-References", "0[A-Z0-9]+, 0[A-Z0-9]+$"),
    ("X-Other-References", "0[A-Z0-9]+$"),
    ("X-See-Also", "0[A-Z0-9]+$"),
    ("Sender", ".+"),
    ("Resent-From", ".+"),
    ("Resent-By", ".+"),
    ("X-Mozilla-Status", ".+"),
    ("X-Mailer", "Internet Mail Service"),
    ("X-ID", ".+"),
    ("X-UIDL", ".*"),
    ("X-mailer", "Pegasus"),
    ("X-Mailer", "Pegasus"),
    ("X-Confirm-Reading-To", ".+"),
    ("Comments", "Authenticated sender"),
    ("X-PMFLAGS", ".*"),
    ("X-Pmflags", ".*"),
    ("X-pmrqc", ".*"),
    ("Host-From:envonly", ".*"),
];

fn nes_spam_check() -> Result<HeaderPatterns, MailetError> {
    HeaderPatterns::new("NESSpamCheck", NES_PATTERNS)
}

/// The longest pattern file read: patterns are a configuration, not data.
const MAX_PATTERN_FILE: u64 = 1024 * 1024;

/// `FileRegexMatcher=path`: the file's `Header:regex` lines (a line without `:` is an error,
/// as in James; empty lines are skipped).
fn file_regex(home: &Path, config: &MatcherConfig) -> Result<HeaderPatterns, MailetError> {
    let name = config.required_condition()?;
    let path: PathBuf = home.join(name);
    let text = read_bounded(&path).map_err(|e| {
        MailetError::new(format!(
            "FileRegexMatcher: cannot read {}: {e}",
            path.display()
        ))
    })?;
    let mut pairs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (header, pattern) = line.split_once(':').ok_or_else(|| {
            MailetError::new(format!(
                "FileRegexMatcher: {}:{}: not Header-Name:regex",
                path.display(),
                number + 1
            ))
        })?;
        pairs.push((header, pattern));
    }
    HeaderPatterns::new(&format!("FileRegexMatcher ({})", path.display()), &pairs)
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    let mut file = std::fs::File::open(path)?.take(MAX_PATTERN_FILE + 1);
    file.read_to_string(&mut text)?;
    if text.len() as u64 > MAX_PATTERN_FILE {
        return Err(std::io::Error::other("larger than 1 MiB"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matchers::testing::{build, mail_from, run};

    #[test]
    fn recipient_is_regex_matches_whole_addresses() {
        let mail = mail_from(
            Some("s@a.example"),
            &["bob@x.example", "alice@y.example"],
            b"\r\nx",
        );
        let m = build("RecipientIsRegex", Some("bob@.*"));
        assert_eq!(run(&*m, &mail), vec!["bob@x.example"]);
        // Whole match: a part of the address is not enough.
        assert!(run(&*build("RecipientIsRegex", Some("bob")), &mail).is_empty());
        assert!(try_build("RecipientIsRegex", Some("(")).is_err());
        assert!(try_build("RecipientIsRegex", None).is_err());
    }

    #[test]
    fn sender_is_regex() {
        let m = build("SenderIsRegex", Some(r".*@spam\.example"));
        let spam = mail_from(
            Some("x@spam.example"),
            &["a@b.example", "c@d.example"],
            b"\r\nx",
        );
        assert_eq!(run(&*m, &spam).len(), 2);
        let ham = mail_from(Some("x@ham.example"), &["a@b.example"], b"\r\nx");
        assert!(run(&*m, &ham).is_empty());
        let bounce = mail_from(None, &["a@b.example"], b"\r\nx");
        assert!(run(&*m, &bounce).is_empty());
    }

    #[test]
    fn attribute_value_regex() {
        let m = build("HasMailAttributeWithValueRegex", Some("score, [5-9].*"));
        let mut mail = mail_from(None, &["a@b.example"], b"\r\nx");
        assert!(run(&*m, &mail).is_empty());
        mail.set_attribute("score", "7.5".into());
        assert_eq!(run(&*m, &mail).len(), 1);
        mail.set_attribute("score", "17".into());
        assert!(run(&*m, &mail).is_empty());
        assert!(try_build("HasMailAttributeWithValueRegex", Some("no-comma")).is_err());
    }

    #[test]
    fn nes_spam_check_reads_headers() {
        let m = build("NESSpamCheck", None);
        let clean = mail_from(
            None,
            &["a@b.example"],
            b"Subject: hello\r\nX-Mailer: mutt\r\n\r\nx",
        );
        assert!(run(&*m, &clean).is_empty());
        // As in James, a pattern must match the whole value: `^\(?ADV?[:;)]` catches a
        // subject that is only "ADV:", not "ADV: offer".
        let partial = mail_from(None, &["a@b.example"], b"Subject: ADV: offer\r\n\r\nx");
        assert!(run(&*m, &partial).is_empty());
        for header in [
            &b"X-Mailer: Avalanche\r\n"[..],
            b"Subject: (ADV)\r\n",
            b"Received: GAA12 -0600 (EST)\r\n  more EST\r\n",
            b"Sender: someone\r\n",
            b"X-UIDL: \r\n",
        ] {
            let text = [header, b"\r\nbody"].concat();
            let spam = mail_from(None, &["a@b.example"], &text);
            assert_eq!(
                run(&*m, &spam).len(),
                1,
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn file_regex_reads_patterns_relative_to_home() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join("conf")).unwrap();
        std::fs::write(
            home.path().join("conf/patterns"),
            "Subject:.*[Vv]iagra.*\n\nX-Spam-Level:\\*{5,}\n",
        )
        .unwrap();
        let mut registry = Registry::default();
        register_file_regex(&mut registry, home.path());
        let factory = registry.matcher("FileRegexMatcher").unwrap();
        let config = |c: &str| MatcherConfig {
            name: "FileRegexMatcher".into(),
            condition: Some(c.into()),
        };
        let m = factory(&config("conf/patterns")).unwrap();
        let spam = mail_from(None, &["a@b.example"], b"Subject: buy Viagra now\r\n\r\nx");
        assert_eq!(run(&*m, &spam).len(), 1);
        let stars = mail_from(None, &["a@b.example"], b"X-Spam-Level: ******\r\n\r\nx");
        assert_eq!(run(&*m, &stars).len(), 1);
        let ham = mail_from(
            None,
            &["a@b.example"],
            b"Subject: lunch\r\nX-Spam-Level: **\r\n\r\nx",
        );
        assert!(run(&*m, &ham).is_empty());
        assert!(factory(&config("conf/absent")).is_err());
        std::fs::write(home.path().join("conf/bad"), "no colon here\n").unwrap();
        let err = factory(&config("conf/bad")).err().unwrap().to_string();
        assert!(err.contains(":1: not Header-Name:regex"), "{err}");
    }

    fn try_build(name: &str, condition: Option<&str>) -> Result<Box<dyn Matcher>, MailetError> {
        crate::matchers::testing::try_build(name, condition)
    }
}
