//! SMIMESign: James 2.3.2's server-side S/MIME signature. A mail whose sender authenticated
//! over SMTP as the reverse-path's user, with that address in `From:` (or a mail from the
//! postmaster, with `postmasterSigns`), is signed with the server's key: the content and an
//! explanation part (`explanationText`, with James's `[signerName]`, `[signerAddress]`,
//! `[reversePath]` and `[headers]` patterns) go inside a `multipart/signed` with a detached
//! CMS signature (SHA-256, RSA PKCS #1 v1.5 or ECDSA, through `ring`); `Sender:` names the
//! signer and, with `rebuildFrom`, `From:` becomes the signer's address with the reverse-path
//! as its name.
//!
//! James reads the key from a Java KeyStore; Mailroom from a PEM file holding the PKCS #8
//! private key and the signer's certificate (then its chain), as `openssl` writes them.

use std::sync::Arc;

use base64::Engine;
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use mailroom_mailet::{
    AttributeValue, Mail, Mailet, MailetConfig, MailetContext, MailetError, MemoryBody, Message,
    ATTR_SMTP_AUTH_USER,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use x509_cert::attr::Attribute;
use x509_cert::der::asn1::{Any, OctetString, SetOfVec, UtcTime};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use super::{canonical, content_type, verify};

/// The attributes James sets on a signed mail.
pub const SIGNING_MAILET: &str = "org.apache.james.smime.signing.mailetname";
/// `"valid"` once signed.
pub const SIGNATURE_VALIDITY: &str = "org.apache.james.smime.signature.validity";
/// The signer's address.
pub const SIGNER_ADDRESS: &str = "org.apache.james.smime.signer.address";
/// The largest message signed (it is read whole to build the signed entity).
const MAX_SIGNED: u64 = 64 << 20;

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
const EMAIL_ADDRESS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1");
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");

/// James's default explanation.
const DEFAULT_EXPLANATION: &str =
    "The message this file is attached to has been signed on the server by\r\n\
     \t\"[signerName]\" <[signerAddress]>\r\n\
     to certify that the sender is known and truly has the following address (reverse-path):\r\n\
     \t[reversePath]\r\n\
     and that the original message has the following message headers:\r\n\
     \r\n[headers]\r\n\r\n\
     The signature envelopes this attachment too.\r\n\
     Please check the signature integrity.\r\n\r\n\
     \t\"[signerName]\" <[signerAddress]>";

/// The server's signing key.
enum Key {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair, bool),
}

/// The key, the signer's certificate and its chain.
pub struct KeyHolder {
    key: Key,
    certificate: Certificate,
    chain: Vec<Certificate>,
    /// The address in the certificate (subject `emailAddress`).
    pub address: String,
    /// The subject's common name.
    pub common_name: Option<String>,
}

impl KeyHolder {
    /// Reads a PEM file with a `PRIVATE KEY` (PKCS #8) and `CERTIFICATE` blocks, the
    /// signer's first.
    pub fn from_pem(pem: &[u8]) -> Result<KeyHolder, String> {
        let text = String::from_utf8_lossy(pem);
        if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err("the private key is encrypted: store it without a password \
                        (openssl pkcs8 -topk8 -nocrypt) and protect the file"
                .into());
        }
        let keys = verify::pem_blocks(pem, "PRIVATE KEY")?;
        let [key] = keys.as_slice() else {
            return Err(format!("{} PRIVATE KEY blocks, expected one", keys.len()));
        };
        let rng = SystemRandom::new();
        let key = if let Ok(k) = RsaKeyPair::from_pkcs8(key) {
            Key::Rsa(k)
        } else if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, key, &rng)
        {
            Key::Ecdsa(k, false)
        } else if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, key, &rng)
        {
            Key::Ecdsa(k, true)
        } else {
            return Err(
                "the private key is neither RSA (2048 bits or more) nor ECDSA P-256/P-384".into(),
            );
        };
        let mut certificates = verify::pem_certificates(pem)?
            .iter()
            .map(|der| Certificate::from_der(der).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        if certificates.is_empty() {
            return Err("no CERTIFICATE block".into());
        }
        let certificate = certificates.remove(0);
        let public = certificate
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        let matches = match &key {
            Key::Rsa(k) => k.public_key().as_ref() == public,
            Key::Ecdsa(k, _) => k.public_key().as_ref() == public,
        };
        if !matches {
            return Err("the first certificate is not the private key's".into());
        }
        let (mut address, mut common_name) = (None, None);
        for rdn in certificate.tbs_certificate.subject.0.iter() {
            for atv in rdn.0.iter() {
                let value = atv.to_string();
                let value = value.split_once('=').map_or("", |(_, v)| v).to_string();
                if atv.oid == EMAIL_ADDRESS {
                    address = Some(value);
                } else if atv.oid == COMMON_NAME {
                    common_name = Some(value);
                }
            }
        }
        let address = address.ok_or("Signer address missing in the certificate (emailAddress)")?;
        Ok(KeyHolder {
            key,
            certificate,
            chain: certificates,
            address,
            common_name,
        })
    }

    /// A detached CMS signature (DER `ContentInfo`) of `content`.
    pub fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        let p384 = matches!(self.key, Key::Ecdsa(_, true));
        let (digest_oid, digest_alg) = if p384 {
            (SHA384, &ring::digest::SHA384)
        } else {
            (SHA256, &ring::digest::SHA256)
        };
        let e = |e: x509_cert::der::Error| e.to_string();
        let digest = ring::digest::digest(digest_alg, content);
        let now = UtcTime::from_system_time(std::time::SystemTime::now()).map_err(e)?;
        let attribute = |oid, value: Any| -> Result<Attribute, String> {
            Ok(Attribute {
                oid,
                values: SetOfVec::try_from(vec![value]).map_err(e)?,
            })
        };
        let attributes = SetOfVec::try_from(vec![
            attribute(CONTENT_TYPE, Any::encode_from(&ID_DATA).map_err(e)?)?,
            attribute(SIGNING_TIME, Any::encode_from(&now).map_err(e)?)?,
            attribute(
                MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(digest.as_ref()).map_err(e)?).map_err(e)?,
            )?,
        ])
        .map_err(e)?;
        // Signed as a SET (RFC 5652 §5.4).
        let signed = attributes.to_der().map_err(e)?;
        let (signature_alg, signature) = match &self.key {
            Key::Rsa(k) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, &signed, &mut out)
                    .map_err(|_| "RSA signing failed")?;
                let null = Some(Any::encode_from(&x509_cert::der::asn1::Null).map_err(e)?);
                (
                    AlgorithmIdentifierOwned {
                        oid: RSA,
                        parameters: null,
                    },
                    out,
                )
            }
            Key::Ecdsa(k, p384) => {
                let s = k.sign(&rng, &signed).map_err(|_| "ECDSA signing failed")?;
                let oid = if *p384 { ECDSA_SHA384 } else { ECDSA_SHA256 };
                (
                    AlgorithmIdentifierOwned {
                        oid,
                        parameters: None,
                    },
                    s.as_ref().to_vec(),
                )
            }
        };
        let digest_algorithm = AlgorithmIdentifierOwned {
            oid: digest_oid,
            parameters: None,
        };
        let tbs = &self.certificate.tbs_certificate;
        let signer = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer.clone(),
                serial_number: tbs.serial_number.clone(),
            }),
            digest_alg: digest_algorithm.clone(),
            signed_attrs: Some(attributes),
            signature_algorithm: signature_alg,
            signature: OctetString::new(signature).map_err(e)?,
            unsigned_attrs: None,
        };
        let certificates = std::iter::once(&self.certificate)
            .chain(&self.chain)
            .map(|c| CertificateChoices::Certificate(c.clone()))
            .collect::<Vec<_>>();
        let signed_data = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![digest_algorithm]).map_err(e)?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_DATA,
                econtent: None,
            },
            certificates: Some(CertificateSet(SetOfVec::try_from(certificates).map_err(e)?)),
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![signer]).map_err(e)?),
        };
        ContentInfo {
            content_type: SIGNED_DATA,
            content: Any::encode_from(&signed_data).map_err(e)?,
        }
        .to_der()
        .map_err(e)
    }
}

/// James's `SMIMESign`.
pub(super) struct SmimeSign {
    keys: KeyHolder,
    signer_name: String,
    postmaster_signs: bool,
    rebuild_from: bool,
    explanation: String,
}

impl SmimeSign {
    pub(super) fn new(config: &MailetConfig) -> Result<SmimeSign, MailetError> {
        let error = |why: String| MailetError::new(format!("mailet {}: {why}", config.name));
        match config.param("keyStoreType").map(str::to_ascii_lowercase) {
            None => {}
            Some(t) if t.is_empty() || t == "pem" => {}
            Some(other) => {
                return Err(error(format!(
                    "<keyStoreType> {other}: only pem is read (a PEM file with the PKCS #8 \
                     private key and the certificate: openssl pkcs12 -nodes converts a \
                     PKCS #12 file)"
                )))
            }
        }
        let file = config.required("keyStoreFileName")?;
        let pem =
            std::fs::read(file).map_err(|e| error(format!("<keyStoreFileName> {file}: {e}")))?;
        let keys = KeyHolder::from_pem(&pem)
            .map_err(|e| error(format!("<keyStoreFileName> {file}: {e}")))?;
        let signer_name = match config.param("signerName").filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => keys.common_name.clone().unwrap_or_default(),
        };
        Ok(SmimeSign {
            signer_name,
            postmaster_signs: config.bool_param("postmasterSigns", true)?,
            rebuild_from: config.bool_param("rebuildFrom", true)?,
            explanation: config
                .param("explanationText")
                .filter(|t| !t.is_empty())
                .unwrap_or(DEFAULT_EXPLANATION)
                .to_string(),
            keys,
        })
    }

    /// James's `isOkToSign`.
    fn ok_to_sign(&self, mail: &Mail, ctx: &dyn MailetContext) -> bool {
        let Some(sender) = mail.sender() else {
            return false;
        };
        let Some(user) = mail.attribute(ATTR_SMTP_AUTH_USER) else {
            return false;
        };
        if sender == ctx.postmaster() {
            if !self.postmaster_signs {
                return false;
            }
        } else {
            let user = user.to_string();
            let user = user.split('@').next().unwrap_or_default();
            if sender.local_part() != user || !from_is(&mail.message, sender) {
                return false;
            }
        }
        content_type(&mail.message).is_none_or(|ct| {
            !matches!(
                ct.mime.as_str(),
                "multipart/signed" | "application/pkcs7-mime"
            )
        })
    }
}

/// Whether an address of `From:` is `sender`.
fn from_is(message: &Message, sender: &mailroom_mailet::MailAddress) -> bool {
    let Some(parsed) = mail_parser::MessageParser::new().parse_headers(message.header_section())
    else {
        return false;
    };
    parsed.from().is_some_and(|from| {
        from.iter().any(|a| {
            a.address()
                .and_then(|a| mailroom_mailet::MailAddress::parse(a).ok())
                .is_some_and(|a| &a == sender)
        })
    })
}

fn boundary(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    SystemRandom::new().fill(&mut bytes).ok();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("----=_{prefix}_{hex}")
}

/// A text part: 7bit when it is short-lined ASCII, else base64 in UTF-8.
fn text_part(text: &str, file_name: &str) -> Vec<u8> {
    let plain = text.is_ascii() && text.lines().all(|l| l.len() <= 998);
    let mut out = Vec::new();
    if plain {
        out.extend_from_slice(
            b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n",
        );
    } else {
        out.extend_from_slice(
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n",
        );
    }
    out.extend_from_slice(
        format!("Content-Disposition: attachment; filename={file_name}\r\n\r\n").as_bytes(),
    );
    if plain {
        out.extend_from_slice(text.as_bytes());
    } else {
        out.extend_from_slice(&base64_lines(text.as_bytes()));
    }
    out
}

fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 38);
    for (i, chunk) in encoded.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(chunk);
    }
    out
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Mailet for SmimeSign {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        if !self.ok_to_sign(mail, ctx) {
            return Ok(());
        }
        if mail.size() > MAX_SIGNED {
            return Err(MailetError::permanent(format!(
                "SMIMESign: over {MAX_SIGNED} octets, not signed"
            )));
        }
        let original = &mail.message;
        let body = {
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut original.body().open()?, &mut body)?;
            body
        };
        // The original content as an entity: its Content-* fields and its body.
        let mut inner = Vec::new();
        let mut has_type = false;
        for name in original.header_names() {
            if name.to_ascii_lowercase().starts_with("content-") {
                for value in original.headers(&name) {
                    has_type |= name.eq_ignore_ascii_case("content-type");
                    inner.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                }
            }
        }
        if !has_type {
            inner.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
        }
        inner.extend_from_slice(b"\r\n");
        inner.extend_from_slice(&body);
        let sender = mail.sender().map_or(String::new(), |s| s.to_string());
        let headers = String::from_utf8_lossy(original.header_section());
        let explanation = self
            .explanation
            .replace("[signerName]", &self.signer_name)
            .replace("[signerAddress]", &self.keys.address)
            .replace("[reversePath]", &sender)
            .replace("[headers]", headers.trim_end_matches(['\r', '\n']));
        let mixed = boundary("mixed");
        let mut entity =
            format!("Content-Type: multipart/mixed; boundary=\"{mixed}\"\r\n\r\n--{mixed}\r\n")
                .into_bytes();
        entity.extend_from_slice(&inner);
        if !entity.ends_with(b"\r\n") {
            entity.extend_from_slice(b"\r\n");
        }
        entity.extend_from_slice(format!("--{mixed}\r\n").as_bytes());
        entity.extend_from_slice(&text_part(&explanation, "SignatureExplanation.txt"));
        entity.extend_from_slice(format!("\r\n--{mixed}--\r\n").as_bytes());
        let entity = canonical(&entity);
        let der = self
            .keys
            .sign(&entity)
            .map_err(|e| MailetError::permanent(format!("SMIMESign: {e}")))?;

        let signed = boundary("signed");
        let micalg = if matches!(self.keys.key, Key::Ecdsa(_, true)) {
            "sha-384"
        } else {
            "sha-256"
        };
        let mut new_body =
            format!("This is an S/MIME signed message\r\n\r\n--{signed}\r\n").into_bytes();
        new_body.extend_from_slice(&entity);
        new_body.extend_from_slice(
            format!(
                "\r\n--{signed}\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n\
                 Content-Transfer-Encoding: base64\r\n\
                 Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"
            )
            .as_bytes(),
        );
        new_body.extend_from_slice(&base64_lines(&der));
        new_body.extend_from_slice(format!("\r\n--{signed}--\r\n").as_bytes());

        let mut message = Message::new(
            original.header_section().to_vec(),
            Arc::new(MemoryBody::new(new_body)),
        );
        for name in original.header_names() {
            let lower = name.to_ascii_lowercase();
            if lower.starts_with("content-") || lower == "mime-version" {
                message.remove_header(&name);
            }
        }
        let reply_to = original
            .header("Reply-To")
            .or_else(|| original.header("From"));
        message.set_header(
            "Sender",
            &format!("{} <{}>", quoted(&self.signer_name), self.keys.address),
        );
        if self.rebuild_from {
            message.set_header(
                "From",
                &format!("{} <{}>", quoted(&sender), self.keys.address),
            );
            if let Some(reply_to) = reply_to {
                message.set_header("Reply-To", &reply_to);
            }
        }
        message.set_header("MIME-Version", "1.0");
        message.set_header(
            "Content-Type",
            &format!(
                "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg={micalg}; \
                 boundary=\"{signed}\""
            ),
        );
        mail.message = message;
        mail.set_attribute(
            SIGNING_MAILET,
            "org.apache.james.transport.mailets.smime.SMIMESign".into(),
        );
        mail.set_attribute(SIGNATURE_VALIDITY, "valid".into());
        mail.set_attribute(
            SIGNER_ADDRESS,
            AttributeValue::from(self.keys.address.as_str()),
        );
        Ok(())
    }
}
