//! Checking a CMS `SignedData` (RFC 5652) as S/MIME uses it: each signer's signature over the
//! content (through the signed attributes and their `messageDigest` when present), with RSA
//! PKCS #1 v1.5 (SHA-1 to SHA-512) or ECDSA (P-256/SHA-256, P-384/SHA-384) through `ring`,
//! and the signer's certificate chained up to trusted certificates by `rustls-webpki` (with
//! the certificates the message carries as intermediates; an extended key usage, when the
//! certificate has one, must allow e-mail protection).

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use ring::digest;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_cert::der::asn1::OctetString;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// id-kp-emailProtection (1.3.6.1.5.5.7.3.4), as the content octets webpki compares.
const EMAIL_PROTECTION: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04];

/// Certificates trusted as the roots of signers' chains.
#[derive(Debug, Default)]
pub struct TrustStore {
    /// DER of each trusted certificate.
    certificates: Vec<Vec<u8>>,
}

impl TrustStore {
    /// The certificates of a PEM file (one or more `BEGIN CERTIFICATE` blocks; anything
    /// between them is ignored).
    pub fn from_pem(pem: &[u8]) -> Result<TrustStore, String> {
        let certificates = pem_certificates(pem)?;
        if certificates.is_empty() {
            return Err("no certificate in it".into());
        }
        for der in &certificates {
            webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                .map_err(|e| format!("a certificate cannot be a trust anchor: {e:?}"))?;
        }
        Ok(TrustStore { certificates })
    }

    fn anchors(&self) -> Vec<TrustAnchor<'_>> {
        let ders: Vec<CertificateDer<'_>> = self
            .certificates
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        ders.iter()
            .filter_map(|d| {
                webpki::anchor_from_trusted_cert(d)
                    .ok()
                    .map(|a| a.to_owned())
            })
            .collect()
    }
}

/// The DER of each `CERTIFICATE` block of a PEM text, each checked to be a certificate.
/// (x509-cert's own PEM reader panics on some inputs, an empty file among them.)
pub(crate) fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem_blocks(pem, "CERTIFICATE")?;
    for der in &blocks {
        Certificate::from_der(der).map_err(|e| format!("a certificate block: {e}"))?;
    }
    Ok(blocks)
}

/// The decoded contents of each `-----BEGIN {label}-----` block (anything between blocks is
/// ignored).
pub(crate) fn pem_blocks(pem: &[u8], label: &str) -> Result<Vec<Vec<u8>>, String> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end_line = format!("-----END {label}-----");
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(&begin) {
        let after = &rest[start + begin.len()..];
        let end = after
            .find(&end_line)
            .ok_or_else(|| format!("a {label} block without its END line"))?;
        let clean: String = after[..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(clean)
            .map_err(|e| format!("a {label} block: {e}"))?;
        out.push(der);
        rest = &after[end + end_line.len()..];
    }
    Ok(out)
}

/// A certificate's subject as Java writes it: `CN=alice, O=Example, C=US` (most specific
/// first); `None` when the octets are no certificate.
pub fn subject(der: &[u8]) -> Option<String> {
    let certificate = Certificate::from_der(der).ok()?;
    let names: Vec<String> = certificate
        .tbs_certificate
        .subject
        .0
        .iter()
        .rev()
        .map(|rdn| rdn.to_string())
        .collect();
    Some(names.join(", "))
}

/// What was found of one signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The signer's certificate (DER), when the message carries it.
    pub certificate: Option<Vec<u8>>,
    /// The signature is good for this content.
    pub valid: bool,
    /// The certificate chains up to a trusted one, valid now.
    pub trusted: bool,
}

/// A signed message's parts, as read from the CMS structure.
pub struct Signed {
    /// The content signed: the one given (detached signature) or the one inside.
    pub content: Vec<u8>,
    /// Every signer.
    pub signers: Vec<Signer>,
}

/// Reads a CMS `ContentInfo` holding `SignedData` and checks every signer against `content`
/// (a detached signature's content; `None`: the content inside).
pub fn verify(der: &[u8], content: Option<&[u8]>, trust: &TrustStore) -> Result<Signed, String> {
    let info = ContentInfo::from_der(der).map_err(|e| format!("not CMS: {e}"))?;
    if info.content_type != SIGNED_DATA {
        return Err(format!(
            "CMS content type {} is not signed-data",
            info.content_type
        ));
    }
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|e| format!("bad SignedData: {e}"))?;
    let content = match content {
        Some(c) => c.to_vec(),
        None => {
            let inside = signed
                .encap_content_info
                .econtent
                .as_ref()
                .ok_or("a detached signature without its content")?;
            let octets: OctetString = inside.decode_as().map_err(|e| format!("content: {e}"))?;
            octets.as_bytes().to_vec()
        }
    };
    let certificates: Vec<&Certificate> = signed
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => Some(c),
            CertificateChoices::Other(_) => None,
        })
        .collect();
    let ders: Vec<Vec<u8>> = certificates
        .iter()
        .map(|c| c.to_der().unwrap_or_default())
        .collect();
    let signers = signed
        .signer_infos
        .0
        .iter()
        .map(|info| {
            let found = certificates.iter().position(|c| identifies(&info.sid, c));
            let Some(at) = found else {
                return Signer {
                    certificate: None,
                    valid: false,
                    trusted: false,
                };
            };
            let valid = signature_valid(info, certificates[at], &content);
            let trusted = valid && chains_to(&ders[at], &ders, trust);
            Signer {
                certificate: Some(ders[at].clone()),
                valid,
                trusted,
            }
        })
        .collect();
    Ok(Signed { content, signers })
}

/// Whether `sid` names `certificate`.
fn identifies(sid: &SignerIdentifier, certificate: &Certificate) -> bool {
    let tbs = &certificate.tbs_certificate;
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(id) => {
            id.issuer == tbs.issuer && id.serial_number == tbs.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(id) => tbs
            .extensions
            .iter()
            .flatten()
            .filter(|e| e.extn_id == SUBJECT_KEY_ID)
            .any(|e| {
                OctetString::from_der(e.extn_value.as_bytes())
                    .is_ok_and(|v| v.as_bytes() == id.0.as_bytes())
            }),
    }
}

fn digest_algorithm(oid: ObjectIdentifier) -> Option<&'static digest::Algorithm> {
    match oid {
        SHA1 => Some(&digest::SHA1_FOR_LEGACY_USE_ONLY),
        SHA256 => Some(&digest::SHA256),
        SHA384 => Some(&digest::SHA384),
        SHA512 => Some(&digest::SHA512),
        _ => None,
    }
}

/// The verification algorithm for this key and digest: RSA keys sign with PKCS #1 v1.5
/// whatever the signature OID says of the hash (the digest algorithm decides); EC keys by
/// their curve.
fn verification(
    certificate: &Certificate,
    digest: ObjectIdentifier,
) -> Option<&'static dyn VerificationAlgorithm> {
    let spki = &certificate.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid == RSA {
        return match digest {
            SHA1 => Some(&signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY),
            SHA256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
            SHA384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
            SHA512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
            _ => None,
        };
    }
    if spki.algorithm.oid == EC_PUBLIC_KEY {
        let curve: ObjectIdentifier = spki.algorithm.parameters.as_ref()?.decode_as().ok()?;
        return match (curve, digest) {
            (P256, SHA256) => Some(&signature::ECDSA_P256_SHA256_ASN1),
            (P384, SHA384) => Some(&signature::ECDSA_P384_SHA384_ASN1),
            _ => None,
        };
    }
    None
}

/// The signature of `info` over `content` (through its signed attributes when present).
fn signature_valid(info: &SignerInfo, certificate: &Certificate, content: &[u8]) -> bool {
    let oid = info.digest_alg.oid;
    let (Some(algorithm), Some(verify)) = (digest_algorithm(oid), verification(certificate, oid))
    else {
        return false;
    };
    let signed_bytes = match &info.signed_attrs {
        None => content.to_vec(),
        Some(attributes) => {
            let digest = digest::digest(algorithm, content);
            let matches = attributes
                .iter()
                .filter(|a| a.oid == MESSAGE_DIGEST)
                .flat_map(|a| a.values.iter())
                .any(|v| {
                    v.decode_as::<OctetString>()
                        .is_ok_and(|o| o.as_bytes() == digest.as_ref())
                });
            if !matches {
                return false;
            }
            // Signed as a SET (RFC 5652 §5.4), not with the [0] tag it has in SignerInfo.
            match attributes.to_der() {
                Ok(der) => der,
                Err(_) => return false,
            }
        }
    };
    let key = certificate
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    UnparsedPublicKey::new(verify, key)
        .verify(&signed_bytes, info.signature.as_bytes())
        .is_ok()
}

/// Whether `certificate` chains up to `trust`, the message's other certificates as
/// intermediates.
fn chains_to(certificate: &[u8], carried: &[Vec<u8>], trust: &TrustStore) -> bool {
    let anchors = trust.anchors();
    let der = CertificateDer::from(certificate);
    let Ok(end_entity) = webpki::EndEntityCert::try_from(&der) else {
        return false;
    };
    let intermediates: Vec<CertificateDer<'_>> = carried
        .iter()
        .filter(|c| c.as_slice() != certificate)
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::now(),
            webpki::KeyUsage::required_if_present(EMAIL_PROTECTION),
            None,
            None,
        )
        .is_ok()
}
