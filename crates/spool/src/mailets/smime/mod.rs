//! S/MIME signatures: the SMIMECheckSignature mailet and the IsSMIMESigned matcher, with James
//! 2.3.2's names, parameters and semantics.
//!
//! SMIMECheckSignature reads a signed message (`multipart/signed` with a detached
//! `application/pkcs7-signature`, or an opaque `application/pkcs7-mime; smime-type=signed-data`),
//! checks every signer ([`verify`]), and when at least one signature is good (and, with
//! `onlyTrusted`, its certificate chains up to the trust store) sets the attribute
//! `mailAttribute` to the list of those signers' certificates (DER). With `strip`, the
//! message then becomes the signed content. A message that is not signed, or not well
//! formed, is left as it is (James logs it and goes on).
//!
//! James's trust store is a Java KeyStore file; Mailroom reads the same certificates from a
//! PEM file (`keyStoreType` `pem`; `keytool -exportcert -rfc` or `openssl pkcs12 -nokeys`
//! converts one), by default the system's `/etc/ssl/certs/ca-certificates.crt`.

pub mod sign;
pub mod verify;

use std::io::Read;
use std::sync::Arc;

use mailroom_mailet::{
    header_section_len, AttributeValue, Mail, MailAddress, Mailet, MailetConfig, MailetContext,
    MailetError, Matcher, MemoryBody, Message,
};

use crate::Registry;
use verify::TrustStore;

/// James's attribute for the good signers' certificates.
pub const DEFAULT_ATTRIBUTE: &str = "org.apache.james.SMIMECheckSignature";
/// The trust store when `keyStoreFileName` is not given (James: the JVM's default store).
const SYSTEM_STORE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The largest message read whole to check its signature.
const MAX_CHECKED: u64 = 64 << 20;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_mailet("SMIMECheckSignature", |c| {
            Ok(Box::new(SmimeCheckSignature::new(c)?))
        })
        .params(&[
            "keyStoreType",
            "keyStoreFileName",
            "keyStorePassword",
            "strip",
            "onlyTrusted",
            "mailAttribute",
        ])
        .about(
            "Checks the S/MIME signature of a signed message (multipart/signed or opaque \
             signed-data; RSA or ECDSA). When a signature is good and, with onlyTrusted \
             (default true), its certificate chains up to the trust store, sets the attribute \
             mailAttribute (default org.apache.james.SMIMECheckSignature) to the list of the \
             good signers' certificates (DER); strip (default false) then replaces the message \
             with the signed content. The trust store is a PEM file (keyStoreType pem, \
             keyStoreFileName; default the system's CA certificates): Java KeyStore files are \
             refused, convert them to PEM.",
            r#"<mailet match="IsSMIMESigned" class="SMIMECheckSignature"><keyStoreType>pem</keyStoreType><keyStoreFileName>/etc/mailroom/smime-ca.pem</keyStoreFileName><strip>true</strip></mailet>"#,
        );
    registry
        .add_mailet("SMIMESign", |c| Ok(Box::new(sign::SmimeSign::new(c)?)))
        .params(&[
            "debug",
            "keyStoreFileName",
            "keyStorePassword",
            "keyStoreType",
            "keyAlias",
            "keyAliasPassword",
            "signerName",
            "postmasterSigns",
            "rebuildFrom",
            "explanationText",
        ])
        .about(
            "Signs with the server's key (S/MIME, multipart/signed, SHA-256 with RSA or ECDSA) \
             a mail whose sender authenticated over SMTP as the reverse-path's user, with that \
             address in From: (or a mail from the postmaster, postmasterSigns default true): \
             the content and an explanation part (explanationText, with [signerName], \
             [signerAddress], [reversePath], [headers]) are signed; Sender: names the signer \
             (signerName, default the certificate's CN) and rebuildFrom (default true) makes \
             From: the signer's address. keyStoreFileName is a PEM file with the PKCS #8 key \
             and the certificate (emailAddress in its subject), keyStoreType pem.",
            r#"<mailet match="SMTPAuthSuccessful" class="SMIMESign"><keyStoreType>pem</keyStoreType><keyStoreFileName>/etc/mailroom/signer.pem</keyStoreFileName></mailet>"#,
        );
    registry
        .add_matcher("IsSMIMESigned", |_| Ok(Box::new(IsSmimeSigned)))
        .no_condition()
        .about(
            "Every recipient when the message is S/MIME signed by its Content-Type: \
             multipart/signed, application/(x-)pkcs7-signature, or application/(x-)pkcs7-mime \
             with signed-data.",
            r#"<mailet match="IsSMIMESigned" class="SMIMECheckSignature"/>"#,
        );
    registry
        .add_matcher("IsSMIMEEncrypted", |_| Ok(Box::new(IsSmimeEncrypted)))
        .no_condition()
        .about(
            "Every recipient when the message is S/MIME encrypted by its Content-Type: \
             application/(x-)pkcs7-mime with smime-type=enveloped-data.",
            r#"<mailet match="IsSMIMEEncrypted" class="ToProcessor"><processor>encrypted</processor></mailet>"#,
        );
    registry
        .add_matcher("IsX509CertificateSubject", |c| {
            let condition = c.required_condition()?;
            let (attribute, check) = condition.split_once(';').ok_or_else(|| {
                MailetError::new(format!(
                    "matcher IsX509CertificateSubject needs attribute;text, got {condition:?}"
                ))
            })?;
            Ok(Box::new(IsX509CertificateSubject {
                attribute: attribute.trim().to_string(),
                check: check.to_string(),
            }))
        })
        .about(
            "Every recipient when a certificate in the attribute (as SMIMECheckSignature sets \
             it: DER octets, or a list of them) has a subject containing the text \
             (attribute;text; the subject written CN=..., O=..., C=... as Java does).",
            r#"<mailet match="IsX509CertificateSubject=org.apache.james.SMIMECheckSignature;CN=Alice" class="SetMimeHeader"><name>X-Signed-By</name><value>Alice</value></mailet>"#,
        );
}

/// James's `IsSMIMEEncrypted`.
struct IsSmimeEncrypted;

impl Matcher for IsSmimeEncrypted {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let encrypted = content_type(&mail.message).is_some_and(|ct| {
            matches!(
                ct.mime.as_str(),
                "application/pkcs7-mime" | "application/x-pkcs7-mime"
            ) && ct.smime_type.as_deref() == Some("enveloped-data")
        });
        Ok(if encrypted {
            mail.recipients().to_vec()
        } else {
            Vec::new()
        })
    }
}

/// James's `IsX509CertificateSubject`. James counted the text only after the subject's first
/// character (`indexOf(check) > 0`); here anywhere in it.
struct IsX509CertificateSubject {
    attribute: String,
    check: String,
}

impl Matcher for IsX509CertificateSubject {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let certificates: Vec<&[u8]> = match mail.attribute(&self.attribute) {
            Some(AttributeValue::Bytes(der)) => vec![der.as_slice()],
            Some(AttributeValue::List(list)) => list
                .iter()
                .filter_map(|v| match v {
                    AttributeValue::Bytes(der) => Some(der.as_slice()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let found = certificates
            .into_iter()
            .filter_map(verify::subject)
            .any(|subject| subject.contains(&self.check));
        Ok(if found {
            mail.recipients().to_vec()
        } else {
            Vec::new()
        })
    }
}

/// What the top-level Content-Type says.
struct ContentType {
    /// Lower-case `type/subtype`.
    mime: String,
    boundary: Option<String>,
    smime_type: Option<String>,
}

fn content_type(message: &Message) -> Option<ContentType> {
    use mail_parser::MimeHeaders;
    let parsed = mail_parser::MessageParser::new().parse_headers(message.header_section())?;
    let ct = parsed.content_type()?;
    Some(ContentType {
        mime: format!(
            "{}/{}",
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or_default().to_ascii_lowercase()
        ),
        boundary: ct.attribute("boundary").map(str::to_string),
        smime_type: ct.attribute("smime-type").map(str::to_ascii_lowercase),
    })
}

/// James's `IsSMIMESigned`.
struct IsSmimeSigned;

impl Matcher for IsSmimeSigned {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let signed = content_type(&mail.message).is_some_and(|ct| {
            matches!(
                ct.mime.as_str(),
                "multipart/signed"
                    | "application/pkcs7-signature"
                    | "application/x-pkcs7-signature"
            ) || (matches!(
                ct.mime.as_str(),
                "application/pkcs7-mime" | "application/x-pkcs7-mime"
            ) && ct.smime_type.as_deref() == Some("signed-data"))
        });
        Ok(if signed {
            mail.recipients().to_vec()
        } else {
            Vec::new()
        })
    }
}

/// James's `SMIMECheckSignature`.
struct SmimeCheckSignature {
    trust: TrustStore,
    strip: bool,
    only_trusted: bool,
    attribute: String,
}

impl SmimeCheckSignature {
    fn new(config: &MailetConfig) -> Result<Self, MailetError> {
        let error = |why: String| MailetError::new(format!("mailet {}: {why}", config.name));
        match config.param("keyStoreType").map(str::to_ascii_lowercase) {
            None => {}
            Some(t) if t.is_empty() || t == "pem" => {}
            Some(other) => {
                return Err(error(format!(
                    "<keyStoreType> {other}: only pem is read (a Java KeyStore converts with \
                     keytool -exportcert -rfc, a PKCS #12 file with openssl pkcs12 -nokeys)"
                )))
            }
        }
        let file = config.param("keyStoreFileName").unwrap_or(SYSTEM_STORE);
        let pem =
            std::fs::read(file).map_err(|e| error(format!("<keyStoreFileName> {file}: {e}")))?;
        let trust = TrustStore::from_pem(&pem)
            .map_err(|e| error(format!("<keyStoreFileName> {file}: {e}")))?;
        let attribute = config
            .param("mailAttribute")
            .filter(|a| !a.is_empty())
            .unwrap_or(DEFAULT_ATTRIBUTE)
            .to_string();
        Ok(SmimeCheckSignature {
            trust,
            strip: config.bool_param("strip", false)?,
            only_trusted: config.bool_param("onlyTrusted", true)?,
            attribute,
        })
    }

    /// The signed content (a MIME entity) and the good signers' certificates, or why not.
    fn check(&self, message: &Message) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
        let ct = content_type(message).ok_or("no Content-Type")?;
        if message.size() > MAX_CHECKED {
            return Err(format!("over {MAX_CHECKED} octets: not checked"));
        }
        let mut body = Vec::new();
        message
            .body()
            .open()
            .and_then(|mut r| r.read_to_end(&mut body))
            .map_err(|e| e.to_string())?;
        let signed = match ct.mime.as_str() {
            "multipart/signed" => {
                let boundary = ct.boundary.as_deref().ok_or("no boundary")?;
                let parts = multipart(&body, boundary);
                let [content, signature] = parts.as_slice() else {
                    return Err(format!("{} parts, not 2", parts.len()));
                };
                let content = canonical(content);
                let der = decode_entity(signature)?.1;
                verify::verify(&der, Some(&content), &self.trust)?
            }
            "application/pkcs7-mime" | "application/x-pkcs7-mime" => {
                let encoding = message.header("Content-Transfer-Encoding");
                let der = decode(encoding.as_deref(), &body)?;
                verify::verify(&der, None, &self.trust)?
            }
            other => return Err(format!("{other} is not signed")),
        };
        let good = signed
            .signers
            .into_iter()
            .filter(|s| s.valid && (s.trusted || !self.only_trusted))
            .filter_map(|s| s.certificate)
            .collect();
        Ok((signed.content, good))
    }
}

impl Mailet for SmimeCheckSignature {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let (content, good) = match self.check(&mail.message) {
            Ok(found) => found,
            Err(why) => {
                ctx.log(&format!("SMIMECheckSignature: {}: {why}", mail.name()));
                return Ok(());
            }
        };
        if good.is_empty() {
            ctx.log(&format!(
                "SMIMECheckSignature: {}: no valid{} signature",
                mail.name(),
                if self.only_trusted { " trusted" } else { "" }
            ));
            return Ok(());
        }
        mail.set_attribute(
            self.attribute.clone(),
            AttributeValue::List(good.into_iter().map(AttributeValue::Bytes).collect()),
        );
        if self.strip {
            mail.message = stripped(&mail.message, &content);
        }
        Ok(())
    }
}

/// The message with its content replaced by the signed entity: its own header fields stay,
/// but for the `Content-*` ones, which the entity's replace.
fn stripped(message: &Message, entity: &[u8]) -> Message {
    let split = header_section_len(entity);
    let inner = Message::from_bytes(entity);
    let mut out = Message::new(
        message.header_section().to_vec(),
        Arc::new(MemoryBody::new(&entity[split..])),
    );
    for name in message.header_names() {
        if name.to_ascii_lowercase().starts_with("content-") {
            out.remove_header(&name);
        }
    }
    for name in inner.header_names() {
        if let Some(value) = inner.header(&name) {
            out.add_header(&name, &value);
        }
    }
    out
}

/// The bodies of a multipart body's parts (each a MIME entity: header and body), without the
/// line break before each delimiter, which belongs to it (RFC 2046 §5.1.1).
fn multipart<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut at = 0;
    while at < body.len() {
        let end = body[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(body.len(), |p| at + p + 1);
        let line = &body[at..end];
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if let Some(rest) = text.strip_prefix(delimiter.as_bytes()) {
            let closing = rest.starts_with(b"--");
            if rest
                .iter()
                .skip(if closing { 2 } else { 0 })
                .all(|b| *b == b' ' || *b == b'\t')
            {
                if let Some(s) = start {
                    // The part ends before the line break that precedes the delimiter.
                    let mut e = at;
                    if e > s && body[e - 1] == b'\n' {
                        e -= 1;
                        if e > s && body[e - 1] == b'\r' {
                            e -= 1;
                        }
                    }
                    parts.push(&body[s..e.max(s)]);
                }
                if closing {
                    break;
                }
                start = Some(end);
            }
        }
        at = end;
    }
    parts
}

/// Lines ending in a bare LF end in CRLF (the canonical form that was signed).
fn canonical(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(*b);
    }
    out
}

/// A MIME entity's header and its body decoded as its Content-Transfer-Encoding says.
fn decode_entity(entity: &[u8]) -> Result<(Message, Vec<u8>), String> {
    let split = header_section_len(entity);
    let message = Message::from_bytes(entity);
    let encoding = message.header("Content-Transfer-Encoding");
    let body = decode(encoding.as_deref(), &entity[split..])?;
    Ok((message, body))
}

fn decode(encoding: Option<&str>, body: &[u8]) -> Result<Vec<u8>, String> {
    use base64::Engine;
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        Some("base64") => {
            let clean: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean)
                .map_err(|e| format!("base64: {e}"))
        }
        None | Some("binary") | Some("8bit") | Some("7bit") => Ok(body.to_vec()),
        Some(other) => Err(format!("a signature in {other} encoding")),
    }
}

#[cfg(test)]
mod tests;
