//! HasAttachment and AttachmentFileNameIs: the file names of a message's parts, read by a
//! streaming walk of its MIME structure ([`super::mime`]), so a large message is never held in
//! memory. `AttachmentFileNameIs=-z` also looks at the names inside `.zip` attachments: the
//! attachment is decoded into a temporary file (in memory up to 1 MiB, on disk beyond) and
//! its central directory is read with the `zip` crate; nothing is decompressed.

use std::io::{Seek, SeekFrom};

use mailroom_mailet::{Mail, MailAddress, MailetContext, MailetError, Matcher};

use super::mime::{Part, Walker};
use super::{all_if, list};
use crate::Registry;

/// How much of a zip attachment is kept in memory before it spills to a temporary file.
const ZIP_IN_MEMORY: usize = 1024 * 1024;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_matcher("HasAttachment", |_| Ok(Box::new(HasAttachment)))
        .no_condition()
        .about(
            "Every recipient when the message has a file name (a non-multipart message \
             with a Content-Disposition filename or Content-Type name), or when a part of its \
             top-level multipart has one.",
            r#"<mailet match="HasAttachment" class="ToProcessor"><processor>attachments</processor></mailet>"#,
        );
    registry
        .add_matcher("AttachmentFileNameIs", |c| {
            Ok(Box::new(AttachmentFileNameIs::parse(
                c.required_condition()?,
            )?))
        })
        .about(
            "Every recipient when a part (at any depth, outside multipart/alternative) has a \
             file name that is one of these, case-insensitively; `*.exe` matches a suffix. \
             A leading `-z` also looks at the names inside .zip attachments, `-d` logs what \
             matched.",
            r#"<mailet match="AttachmentFileNameIs=-z *.exe *.scr *.pif" class="Bounce"/>"#,
        );
}

/// Every recipient when the message or a part of its top multipart has a file name.
struct HasAttachment;

impl Matcher for HasAttachment {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let mut walker = Walker::new(&mail.message)?;
        while let Some(part) = walker.next_part()? {
            let top_level = part.depth == 0 && !part.content_type.starts_with("multipart/");
            if (top_level || part.depth == 1) && part.file_name.is_some() {
                return all_if(mail, true);
            }
        }
        Ok(Vec::new())
    }
}

/// One file name mask, lower-case: a whole name, or with `*` a suffix.
#[derive(Debug, PartialEq, Eq)]
enum Mask {
    Whole(String),
    Suffix(String),
}

impl Mask {
    fn matches(&self, name: &str) -> bool {
        match self {
            Mask::Whole(whole) => name == whole,
            Mask::Suffix(suffix) => name.ends_with(suffix.as_str()),
        }
    }
}

/// `AttachmentFileNameIs=[-d] [-z] *.exe, name.doc`.
#[derive(Debug)]
struct AttachmentFileNameIs {
    masks: Vec<Mask>,
    unzip: bool,
    debug: bool,
}

impl AttachmentFileNameIs {
    fn parse(condition: &str) -> Result<Self, MailetError> {
        let mut matcher = AttachmentFileNameIs {
            masks: Vec::new(),
            unzip: false,
            debug: false,
        };
        for word in list(condition) {
            // As in James, the options count only before the first mask.
            if matcher.masks.is_empty() && word.eq_ignore_ascii_case("-z") {
                matcher.unzip = true;
            } else if matcher.masks.is_empty() && word.eq_ignore_ascii_case("-d") {
                matcher.debug = true;
            } else if let Some(suffix) = word.strip_prefix('*') {
                matcher.masks.push(Mask::Suffix(clean(suffix)));
            } else {
                matcher.masks.push(Mask::Whole(clean(word)));
            }
        }
        if matcher.masks.is_empty() {
            return Err(MailetError::new(
                "AttachmentFileNameIs needs file names to look for (AttachmentFileNameIs=-z *.exe *.scr)",
            ));
        }
        Ok(matcher)
    }

    fn any_mask(&self, name: &str) -> bool {
        self.masks.iter().any(|m| m.matches(name))
    }

    /// Whether a name inside the zip attachment the walker is at matches.
    fn matches_in_zip(
        &self,
        walker: &mut Walker,
        part: &Part,
        name: &str,
        ctx: &dyn MailetContext,
    ) -> Result<bool, MailetError> {
        let mut file = tempfile::SpooledTempFile::new(ZIP_IN_MEMORY);
        walker.copy_body(part.encoding == "base64", &mut file)?;
        file.seek(SeekFrom::Start(0))?;
        let archive = match zip::ZipArchive::new(file) {
            Ok(archive) => archive,
            Err(e) => {
                // Not a zip after all (James reads no entry from it either).
                if self.debug {
                    ctx.log(&format!(
                        "AttachmentFileNameIs: {name} is not a readable zip: {e}"
                    ));
                }
                return Ok(false);
            }
        };
        for entry in archive.file_names_raw() {
            let entry = clean(&String::from_utf8_lossy(entry));
            if self.any_mask(&entry) {
                if self.debug {
                    ctx.log(&format!("AttachmentFileNameIs: matched {name} ({entry})"));
                }
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Matcher for AttachmentFileNameIs {
    fn matches(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
    ) -> Result<Vec<MailAddress>, MailetError> {
        let mut walker = Walker::new(&mail.message)?;
        while let Some(part) = walker.next_part()? {
            if part.in_alternative || part.content_type.starts_with("multipart/") {
                continue;
            }
            let Some(name) = part.file_name.as_deref().map(clean) else {
                continue;
            };
            if self.any_mask(&name) {
                if self.debug {
                    ctx.log(&format!("AttachmentFileNameIs: matched {name}"));
                }
                return all_if(mail, true);
            }
            if self.unzip
                && name.ends_with(".zip")
                && self.matches_in_zip(&mut walker, &part, &name, ctx)?
            {
                return all_if(mail, true);
            }
        }
        Ok(Vec::new())
    }
}

/// A name as compared: trimmed and lower-case.
fn clean(name: &str) -> String {
    name.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::matchers::testing::{build, mail_from, run, try_build};

    fn zip_of(names: &[&str]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for name in names {
            writer.start_file(*name, options).unwrap();
            writer.write_all(b"MZ not really").unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
            if out.len() % 77 == 76 {
                out.push_str("\r\n");
            }
        }
        out
    }

    /// A multipart/mixed message: a text part, then one attachment per (name, base64 body).
    fn message(attachments: &[(&str, String)]) -> Vec<u8> {
        let mut text = String::from(
            "Subject: files\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n",
        );
        for (name, body) in attachments {
            text.push_str(&format!(
                "--b1\r\nContent-Type: application/octet-stream\r\n\
                 Content-Disposition: attachment; filename=\"{name}\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{body}\r\n"
            ));
        }
        text.push_str("--b1--\r\n");
        text.into_bytes()
    }

    #[test]
    fn has_attachment_looks_at_the_top_level() {
        let m = build("HasAttachment", None);
        let with = mail_from(
            None,
            &["a@b.example"],
            &message(&[("x.pdf", base64(b"%PDF"))]),
        );
        assert_eq!(run(&*m, &with).len(), 1);
        let without = mail_from(None, &["a@b.example"], &message(&[]));
        assert!(run(&*m, &without).is_empty());
        let single = mail_from(
            None,
            &["a@b.example"],
            b"Content-Type: application/pdf; name=\"doc.pdf\"\r\n\r\n%PDF\r\n",
        );
        assert_eq!(run(&*m, &single).len(), 1);
        let plain = mail_from(None, &["a@b.example"], b"Subject: x\r\n\r\nhi\r\n");
        assert!(run(&*m, &plain).is_empty());
    }

    #[test]
    fn parses_conditions_as_james() {
        let m = AttachmentFileNameIs::parse("-d -z *.EXE, Report.doc -z").unwrap();
        assert!(m.unzip && m.debug);
        assert_eq!(
            m.masks,
            vec![
                Mask::Suffix(".exe".into()),
                Mask::Whole("report.doc".into()),
                Mask::Whole("-z".into())
            ]
        );
        assert!(AttachmentFileNameIs::parse("-z").is_err());
        assert!(try_build("AttachmentFileNameIs", None).is_err());
    }

    #[test]
    fn matches_names_and_names_inside_zips() {
        let exe = build("AttachmentFileNameIs", Some("*.exe *.scr"));
        let unzip = build("AttachmentFileNameIs", Some("-z *.exe *.scr"));
        let rcpts = ["a@b.example", "c@d.example"];
        let direct = mail_from(None, &rcpts, &message(&[("Setup.EXE", base64(b"MZ"))]));
        assert_eq!(run(&*exe, &direct).len(), 2);
        let zipped = message(&[
            ("notes.txt", base64(b"hi")),
            (
                "bundle.zip",
                base64(&zip_of(&["readme.txt", "dir/Game.exe"])),
            ),
        ]);
        let zipped = mail_from(None, &rcpts, &zipped);
        assert!(run(&*exe, &zipped).is_empty());
        assert_eq!(run(&*unzip, &zipped).len(), 2);
        let clean_zip = message(&[("docs.zip", base64(&zip_of(&["a.txt", "b.pdf"])))]);
        assert!(run(&*unzip, &mail_from(None, &rcpts, &clean_zip)).is_empty());
        let broken_zip = message(&[("fake.zip", base64(b"this is not a zip at all"))]);
        assert!(run(&*unzip, &mail_from(None, &rcpts, &broken_zip)).is_empty());
        // A zip larger than what is kept in memory spills to disk and is still read.
        let names: Vec<String> = (0..40_000).map(|i| format!("file{i:05}.txt")).collect();
        let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
        names.push("last.scr");
        let big = message(&[("big.zip", base64(&zip_of(&names)))]);
        assert!(big.len() > ZIP_IN_MEMORY * 2);
        assert_eq!(run(&*unzip, &mail_from(None, &rcpts, &big)).len(), 2);
    }

    #[test]
    fn alternatives_are_not_attachments() {
        let text = b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n\
Content-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\n\
Content-Type: text/html; name=virus.exe\r\n\r\n<p>\r\n--a--\r\n--o--\r\n";
        let m = build("AttachmentFileNameIs", Some("*.exe"));
        assert!(run(&*m, &mail_from(None, &["a@b.example"], text)).is_empty());
    }
}
