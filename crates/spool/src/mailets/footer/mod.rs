//! `AddFooter`: appends the `<text>` parameter to a mail's text, as James 2.3 does — to a
//! `text/plain` message or part, and (with line breaks as `<br />`) before the closing
//! `</body>` of a `text/html` one; in `multipart/mixed` and `multipart/related` to the first
//! part, in `multipart/alternative` to every part (recursively). Other structures are left as
//! they are, with a log line.
//!
//! Better than James, and with bounded memory whatever the message's size:
//! * the multipart structure, every other part and every octet of the changed parts are kept
//!   as they were: the new body is a [`Spliced`] of ranges of the stored body and the new
//!   octets, streamed when the mail is next written (one pass reads the structure, one pass
//!   reads each changed part; neither holds more than a line or a header);
//! * the part's charset is kept (UTF-8, US-ASCII — relabelled UTF-8 when the footer is not
//!   ASCII —, ISO-8859-1, Windows-1252; other charsets take an ASCII footer), and so is its transfer
//!   encoding: quoted-printable text gets a quoted-printable footer; base64 text gets its last
//!   base64 quantum re-encoded with the footer; a 7bit part given 8-bit text is relabelled
//!   8bit. A base64 HTML part is decoded to find `</body>` only when under 1 MiB (a larger one
//!   gets the footer at its end, as James does when there is no `</body>`).

mod encode;
mod scan;

use std::sync::Arc;

use mailroom_mailet::{BodySource, Mail, Mailet, MailetContext, MailetError, Message};
use regex::Regex;

use self::encode::{base64_decode, base64_lines, charset_bytes, quoted_printable};
use self::scan::{content_info, rfind, structure, PartInfo};
use super::compose::{crlf, Segment, Spliced};
use crate::Registry;

/// The largest base64 HTML part decoded in memory to find its `</body>`.
const MAX_DECODED_HTML: u64 = 1024 * 1024;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_mailet("AddFooter", |c| {
            Ok(Box::new(AddFooter::new(c.required("text")?)))
        })
        .params(&["text"])
        .about(
            "Appends `text` to the message's text/plain part and (line breaks as `<br />`) \
             before `</body>` of its text/html part; first part of multipart/mixed and \
             related, every part of multipart/alternative. Charset, transfer encoding \
             (quoted-printable, base64) and the rest of the message are kept; large messages \
             are streamed, never read into memory.",
            r#"<mailet match="All" class="AddFooter"><text>-- Sent through list@example.org</text></mailet>"#,
        );
}

/// The mailet, configured; also the list server's footer (`CommandListservFooter` and
/// `CommandListservProcessor` build one with [`AddFooter::with_html`]).
pub(crate) struct AddFooter {
    /// The mailet's name, for log lines.
    name: &'static str,
    /// The footer for text parts, with CRLF line ends.
    text: String,
    /// What goes before `</body>` of HTML parts, with CRLF line ends.
    html: String,
}

impl AddFooter {
    /// Adds `text` (any line ends) as a footer, in HTML with its line breaks as `<br />`
    /// (James's AddFooter); [`Mailet::service`] applies it to a mail.
    pub(crate) fn new(text: &str) -> Self {
        let text = crlf(text);
        let html = format!("<br>{}", text.replace("\r\n", "<br />\r\n"));
        AddFooter {
            name: "AddFooter",
            text,
            html,
        }
    }

    /// A footer with an HTML text of its own (a list's `footer` and `footer_html`; James's
    /// CommandListservFooter ends each HTML line with ` <br />`).
    pub(crate) fn with_html(name: &'static str, text: &str, html: &str) -> Self {
        let html = format!("<br>{}", crlf(html).replace("\r\n", " <br />\r\n"));
        AddFooter {
            name,
            text: crlf(text),
            html,
        }
    }
}

/// A change to the body: octets `start..end` replaced by `bytes`.
struct Edit {
    start: u64,
    end: u64,
    bytes: Vec<u8>,
}

impl AddFooter {
    /// The parts the footer goes into (James's `attachFooter`).
    fn targets(parts: &[PartInfo], idx: usize, out: &mut Vec<usize>) {
        let part = &parts[idx];
        match part.content_type.as_str() {
            "text/plain" | "text/html" => out.push(idx),
            "multipart/mixed" | "multipart/related" => {
                if let Some(&first) = part.children.first() {
                    Self::targets(parts, first, out);
                }
            }
            "multipart/alternative" => {
                for &child in &part.children {
                    Self::targets(parts, child, out);
                }
            }
            _ => {}
        }
    }

    /// The edits that add the footer to one text part, or why it cannot be.
    fn part_edits(
        &self,
        body: &dyn BodySource,
        part: &PartInfo,
        top: bool,
    ) -> Result<(Vec<Edit>, Option<Vec<u8>>), String> {
        let html = part.content_type == "text/html";
        let Some(header) = &part.header else {
            return Err("part header too long".into());
        };
        let text = if html { &self.html } else { &self.text };
        let Some((bytes, relabel_utf8)) = charset_bytes(text, part.charset.as_deref()) else {
            return Err(format!(
                "the footer cannot be written in charset {}",
                part.charset.as_deref().unwrap_or("us-ascii")
            ));
        };
        let encoding = part.encoding.as_str();
        let base64 = encoding == "base64";
        let info = content_info(body, part.content_start, part.content_end, base64)
            .map_err(|e| format!("reading the part: {e}"))?;
        let (start, end) = (part.content_start, part.content_end);
        let mut relabel_8bit = false;
        // An empty part of a multipart: the line break before the delimiter that follows is
        // the one that ends the part's header, so the footer needs one of its own.
        let delimiter_break: &[u8] = if start == end && !top { b"\r\n" } else { b"" };
        let edit = match encoding {
            "7bit" | "8bit" | "binary" => {
                relabel_8bit = encoding == "7bit" && !bytes.is_ascii();
                match info.body_close.filter(|_| html) {
                    Some(at) => Edit {
                        start: at,
                        end: at,
                        bytes,
                    },
                    None => {
                        let mut out = Vec::new();
                        if !html && start < end && !info.tail.ends_with(b"\n") {
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(&bytes);
                        out.extend_from_slice(delimiter_break);
                        Edit {
                            start: end,
                            end,
                            bytes: out,
                        }
                    }
                }
            }
            "quoted-printable" => match info.body_close.filter(|_| html) {
                Some(at) => {
                    let mut out = b"=\r\n".to_vec();
                    out.extend(quoted_printable(&bytes));
                    out.extend_from_slice(b"=\r\n");
                    Edit {
                        start: at,
                        end: at,
                        bytes: out,
                    }
                }
                None => {
                    // The decoded text ends with a line break when the stored text ends
                    // with one that is not a soft break (`=` CRLF).
                    let tail = &info.tail;
                    let hard_break = tail.ends_with(b"\n")
                        && !tail.ends_with(b"=\r\n")
                        && !tail.ends_with(b"=\n");
                    let mut out = Vec::new();
                    if start < end && !hard_break {
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend(quoted_printable(&bytes));
                    out.extend_from_slice(delimiter_break);
                    Edit {
                        start: end,
                        end,
                        bytes: out,
                    }
                }
            },
            "base64" if html && end - start <= MAX_DECODED_HTML => {
                let stored = read_range(body, start, end).map_err(|e| e.to_string())?;
                let mut decoded = base64_decode(&stored).ok_or("malformed base64")?;
                let at = rfind(&decoded, b"</body>")
                    .or_else(|| rfind(&decoded, b"</BODY>"))
                    .unwrap_or(decoded.len());
                decoded.splice(at..at, bytes);
                Edit {
                    start,
                    end,
                    bytes: base64_lines(&decoded),
                }
            }
            "base64" => {
                if info.base64_chars % 4 != 0 || info.last_quantum.len() != 4 {
                    if info.base64_chars == 0 {
                        Edit {
                            start: end,
                            end,
                            bytes: base64_lines(&bytes),
                        }
                    } else {
                        return Err("malformed base64".into());
                    }
                } else {
                    let quantum: Vec<u8> = info.last_quantum.iter().map(|(_, b)| *b).collect();
                    let mut tail = base64_decode(&quantum).ok_or("malformed base64")?;
                    if !html && !tail.ends_with(b"\n") {
                        tail.extend_from_slice(b"\r\n");
                    }
                    tail.extend_from_slice(&bytes);
                    let q_start = info.last_quantum[0].0;
                    let q_end = info.last_quantum[3].0 + 1;
                    // Base64 ignores line breaks: the new text starts on a line of its own.
                    let mut out = b"\r\n".to_vec();
                    out.extend(base64_lines(&tail));
                    Edit {
                        start: q_start,
                        end: q_end,
                        bytes: out,
                    }
                }
            }
            other => return Err(format!("transfer encoding {other} is not handled")),
        };
        let mut edits = vec![edit];
        let mut new_header = None;
        if relabel_8bit || relabel_utf8 {
            let mut m = Message::from_bytes(header);
            if relabel_8bit {
                m.set_header("Content-Transfer-Encoding", "8bit");
            }
            if relabel_utf8 {
                let ct = m.header("Content-Type");
                m.set_header("Content-Type", &utf8_content_type(ct.as_deref(), html));
                if top && m.header("MIME-Version").is_none() {
                    m.set_header("MIME-Version", "1.0");
                }
            }
            if top {
                new_header = Some(m.header_section().to_vec());
            } else {
                edits.push(Edit {
                    start: part.header_start,
                    end: part.content_start,
                    bytes: m.header_section().to_vec(),
                });
            }
        }
        Ok((edits, new_header))
    }
}

impl Mailet for AddFooter {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let body = mail.message.body().clone();
        let parts = structure(mail.message.header_section(), body.as_ref())?;
        let mut targets = Vec::new();
        Self::targets(&parts, 0, &mut targets);
        let mut edits = Vec::new();
        let mut new_header = None;
        let mut problems = Vec::new();
        for idx in targets {
            match self.part_edits(body.as_ref(), &parts[idx], idx == 0) {
                Ok((part_edits, header)) => {
                    edits.extend(part_edits);
                    new_header = new_header.or(header);
                }
                Err(why) => problems.push(format!("{} part: {why}", parts[idx].content_type)),
            }
        }
        if edits.is_empty() {
            let why = if problems.is_empty() {
                format!("no text part in its {} structure", parts[0].content_type)
            } else {
                problems.join("; ")
            };
            ctx.log(&format!(
                "mail={} {}: unable to add footer ({why}); mail unchanged",
                mail.name(),
                self.name
            ));
            return Ok(());
        }
        for problem in problems {
            ctx.log(&format!(
                "mail={} {}: {problem}; that part unchanged",
                mail.name(),
                self.name
            ));
        }
        edits.sort_by_key(|e| (e.start, e.end));
        let mut spliced = Spliced::default();
        let mut at = 0;
        for edit in edits {
            if edit.start < at {
                continue; // overlapping edits cannot happen with distinct parts; be safe
            }
            spliced.push(Segment::Range {
                source: body.clone(),
                start: at,
                end: edit.start,
            });
            spliced.push(Segment::bytes(edit.bytes));
            at = edit.end;
        }
        spliced.push(Segment::Range {
            source: body.clone(),
            start: at,
            end: body.len(),
        });
        let header = new_header.unwrap_or_else(|| mail.message.header_section().to_vec());
        mail.message = Message::new(header, Arc::new(spliced));
        mail.envelope.size = mail.message.size();
        Ok(())
    }
}

/// A `Content-Type` value with its charset set to UTF-8.
fn utf8_content_type(value: Option<&str>, html: bool) -> String {
    let Some(value) = value else {
        return format!(
            "text/{}; charset=utf-8",
            if html { "html" } else { "plain" }
        );
    };
    let re = Regex::new(r#"(?i)charset\s*=\s*("[^"]*"|[^;\s]*)"#).expect("valid");
    if re.is_match(value) {
        re.replace(value, "charset=utf-8").into_owned()
    } else {
        format!("{}; charset=utf-8", value.trim_end_matches(';'))
    }
}

fn read_range(body: &dyn BodySource, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{self, Read};
    let mut reader = body.open()?;
    io::copy(&mut (&mut reader).take(start), &mut io::sink())?;
    let mut out = Vec::new();
    reader.take(end - start).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
