//! Signed messages made by `openssl smime` (a real S/MIME signer), checked here.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use mailroom_mailet::{Envelope, MatcherConfig};

use super::*;
use crate::mailets::testing::Recorder;

/// The mailet tests' context (it records what it is given), its postmaster at `localhost`.
fn ctx() -> Recorder {
    Recorder {
        postmaster: MailAddress::parse("postmaster@localhost").unwrap(),
        ..Recorder::new()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`name`.pem/.key) able to sign certificates.
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A signer certificate `name`.pem/.key issued by `ca`, with an RSA or EC key.
fn signer(dir: &Path, name: &str, ca: &str, key: &[&str]) {
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
         extendedKeyUsage=emailProtection\nsubjectAltName=email:alice@example.net\n",
    )
    .unwrap();
    let mut req = vec!["req", "-new", "-nodes"];
    req.extend_from_slice(key);
    let keyout = format!("{name}.key");
    let csr = format!("{name}.csr");
    let subj = format!("/CN={name}");
    req.extend_from_slice(&["-keyout", &keyout, "-out", &csr, "-subj", &subj]);
    openssl(dir, &req);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
        ],
    );
}

const CONTENT: &str = "Content-Type: text/plain; charset=us-ascii\r\n\r\nHello, signed world.\r\n";

/// A message signed by `name` (`opaque`: signed-data with the content inside), with the
/// line ends SMTP gives it.
fn signed(dir: &Path, name: &str, opaque: bool) -> Vec<u8> {
    std::fs::write(dir.join("content.txt"), CONTENT).unwrap();
    let mut args = vec![
        "smime",
        "-sign",
        "-binary",
        "-in",
        "content.txt",
        "-out",
        "signed.eml",
    ];
    let cert = format!("{name}.pem");
    let key = format!("{name}.key");
    args.extend_from_slice(&["-signer", &cert, "-inkey", &key]);
    if opaque {
        args.push("-nodetach");
    }
    openssl(dir, &args);
    let body = std::fs::read(dir.join("signed.eml")).unwrap();
    let mut message = b"From: alice@example.net\nTo: bob@localhost\nSubject: signed\n".to_vec();
    message.extend_from_slice(&body);
    canonical(&message)
}

fn mail(bytes: &[u8]) -> Mail {
    let envelope = Envelope::new(
        "m1",
        MailAddress::parse("alice@example.net").ok(),
        vec![MailAddress::parse("bob@localhost").unwrap()],
    );
    Mail::new(envelope, Message::from_bytes(bytes))
}

fn checker(params: &[(&str, &str)]) -> Result<Box<dyn Mailet>, MailetError> {
    let mut registry = Registry::default();
    register(&mut registry);
    let config = MailetConfig {
        name: "SMIMECheckSignature".into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    registry.mailet("SMIMECheckSignature").unwrap()(&config)
}

fn is_signed(m: &Mail) -> bool {
    let mut registry = Registry::default();
    register(&mut registry);
    let matcher = registry.matcher("IsSMIMESigned").unwrap()(&MatcherConfig {
        name: "IsSMIMESigned".into(),
        condition: None,
    })
    .unwrap();
    !matcher.matches(m, &ctx()).unwrap().is_empty()
}

fn signers(m: &Mail) -> Option<usize> {
    match m.attribute(DEFAULT_ATTRIBUTE)? {
        AttributeValue::List(list) => Some(list.len()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn detached_and_opaque_signatures_by_a_trusted_signer() {
    let dir = tempfile::tempdir().unwrap();
    ca(dir.path(), "ca");
    signer(dir.path(), "alice", "ca", &["-newkey", "rsa:2048"]);
    let store = dir.path().join("ca.pem");
    let store = store.to_str().unwrap();
    let check = checker(&[("keyStoreType", "pem"), ("keyStoreFileName", store)]).unwrap();
    let strip = checker(&[("keyStoreFileName", store), ("strip", "true")]).unwrap();
    for opaque in [false, true] {
        let bytes = signed(dir.path(), "alice", opaque);
        let mut m = mail(&bytes);
        assert!(is_signed(&m), "opaque {opaque}");
        check.service(&mut m, &ctx()).unwrap();
        assert_eq!(signers(&m), Some(1), "opaque {opaque}");
        // The certificate is the signer's.
        let AttributeValue::List(list) = m.attribute(DEFAULT_ATTRIBUTE).unwrap() else {
            unreachable!()
        };
        let pem = std::fs::read(dir.path().join("alice.pem")).unwrap();
        let alice = verify::pem_certificates(&pem).unwrap();
        assert_eq!(list[0], AttributeValue::Bytes(alice[0].clone()));
        // Not stripped without strip.
        assert_eq!(m.message.to_bytes().unwrap(), bytes);

        let mut m = mail(&bytes);
        strip.service(&mut m, &ctx()).unwrap();
        let text = String::from_utf8(m.message.to_bytes().unwrap()).unwrap();
        assert!(text.starts_with("From: alice@example.net\r\n"), "{text}");
        assert!(text.contains("Subject: signed\r\n"), "{text}");
        assert!(
            text.ends_with(
                "Content-Type: text/plain; charset=us-ascii\r\n\r\nHello, signed world.\r\n"
            ),
            "{text}"
        );
        assert!(!is_signed(&m));
    }
}

#[test]
fn ecdsa_signers_and_trust() {
    let dir = tempfile::tempdir().unwrap();
    ca(dir.path(), "ca");
    ca(dir.path(), "other");
    signer(
        dir.path(),
        "ec",
        "ca",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let bytes = signed(dir.path(), "ec", false);
    let trusted = dir.path().join("ca.pem");
    let other = dir.path().join("other.pem");
    let check = checker(&[("keyStoreFileName", trusted.to_str().unwrap())]).unwrap();
    let mut m = mail(&bytes);
    check.service(&mut m, &ctx()).unwrap();
    assert_eq!(signers(&m), Some(1));

    // Signed by a certificate the store does not trust: nothing, unless onlyTrusted=false.
    let strict = checker(&[("keyStoreFileName", other.to_str().unwrap())]).unwrap();
    let mut m = mail(&bytes);
    strict.service(&mut m, &ctx()).unwrap();
    assert_eq!(signers(&m), None);
    let lax = checker(&[
        ("keyStoreFileName", other.to_str().unwrap()),
        ("onlyTrusted", "false"),
        ("mailAttribute", "signers"),
    ])
    .unwrap();
    let mut m = mail(&bytes);
    lax.service(&mut m, &ctx()).unwrap();
    assert!(matches!(m.attribute("signers"), Some(AttributeValue::List(l)) if l.len() == 1));
}

#[test]
fn a_changed_message_or_no_signature_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    ca(dir.path(), "ca");
    signer(dir.path(), "alice", "ca", &["-newkey", "rsa:2048"]);
    let store = dir.path().join("ca.pem");
    let check = checker(&[
        ("keyStoreFileName", store.to_str().unwrap()),
        ("onlyTrusted", "false"),
        ("strip", "true"),
    ])
    .unwrap();
    for opaque in [false, true] {
        let bytes = signed(dir.path(), "alice", opaque);
        let tampered = if opaque {
            // A byte of the base64 body changed.
            let text = String::from_utf8(bytes.clone()).unwrap();
            let at = text.rfind("\r\n\r\n").unwrap() - 20;
            let mut b = bytes.clone();
            b[at] = if b[at] == b'A' { b'B' } else { b'A' };
            b
        } else {
            String::from_utf8(bytes.clone())
                .unwrap()
                .replace("signed world", "signed w0rld")
                .into_bytes()
        };
        let mut m = mail(&tampered);
        check.service(&mut m, &ctx()).unwrap();
        assert_eq!(signers(&m), None, "opaque {opaque}");
        assert_eq!(m.message.to_bytes().unwrap(), tampered);
    }
    let plain = b"Subject: x\r\n\r\nnot signed\r\n";
    let mut m = mail(plain);
    assert!(!is_signed(&m));
    check.service(&mut m, &ctx()).unwrap();
    assert_eq!(signers(&m), None);
    // Declared signed, but garbage inside.
    let fake = b"Subject: x\r\nContent-Type: multipart/signed; boundary=b; protocol=\"application/pkcs7-signature\"\r\n\r\n--b\r\n\r\nhi\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b--\r\n";
    let mut m = mail(fake);
    assert!(is_signed(&m));
    check.service(&mut m, &ctx()).unwrap();
    assert_eq!(signers(&m), None);
}

#[test]
fn factory_checks_every_parameter() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let empty = dir.path().join("empty.pem");
    let missing = dir.path().join("missing.pem");
    std::fs::write(
        dir.path().join("junk.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
    )
    .unwrap();
    let junk = dir.path().join("junk.pem");
    let bad: &[(&str, &str)] = &[
        ("keyStoreFileName", junk.to_str().unwrap()),
        ("keyStoreType", "JKS"),
        ("keyStoreFileName", empty.to_str().unwrap()),
        ("keyStoreFileName", missing.to_str().unwrap()),
        ("strip", "maybe"),
        ("onlyTrusted", "perhaps"),
    ];
    for (name, value) in bad {
        let e = checker(&[(name, value)])
            .err()
            .unwrap_or_else(|| panic!("{name}={value}"));
        assert!(e.message().contains(name), "{name}: {e}");
    }
}

#[test]
fn multipart_split_keeps_part_bytes() {
    let body = b"preamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b \r\n\r\ntwo\r\n\r\n--b--\r\nepilogue";
    assert_eq!(
        multipart(body, "b"),
        [&b"A: 1\r\n\r\none"[..], &b"\r\ntwo\r\n"[..]]
    );
    assert!(multipart(b"no parts", "b").is_empty());
    assert_eq!(canonical(b"a\nb\r\nc"), b"a\r\nb\r\nc");
}

#[test]
fn cut_or_damaged_signatures_are_errors_not_panics() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    ca(dir.path(), "ca");
    signer(dir.path(), "alice", "ca", &["-newkey", "rsa:2048"]);
    let bytes = signed(dir.path(), "alice", true);
    let split = header_section_len(&bytes);
    let clean: Vec<u8> = bytes[split..]
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(clean)
        .unwrap();
    let trust = TrustStore::from_pem(&std::fs::read(dir.path().join("ca.pem")).unwrap()).unwrap();
    let whole = verify::verify(&der, None, &trust).unwrap();
    assert!(whole.signers[0].valid && whole.signers[0].trusted);
    for cut in (0..der.len()).step_by(3) {
        if let Ok(s) = verify::verify(&der[..cut], None, &trust) {
            assert!(s.signers.iter().all(|s| !s.valid), "cut at {cut}");
        }
    }
    for at in (0..der.len()).step_by(5) {
        let mut bad = der.clone();
        bad[at] ^= 0x41;
        // Any answer but a panic; a flip in the signed parts is never valid.
        let _ = verify::verify(&bad, None, &trust);
    }
}

fn matcher(name: &str, condition: Option<&str>) -> Result<Box<dyn Matcher>, MailetError> {
    let mut registry = Registry::default();
    register(&mut registry);
    registry.matcher(name).unwrap()(&MatcherConfig {
        name: name.into(),
        condition: condition.map(str::to_string),
    })
}

#[test]
fn encrypted_and_certificate_subject_matchers() {
    let encrypted = matcher("IsSMIMEEncrypted", None).unwrap();
    let m = mail(b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\r\nAAAA\r\n");
    assert_eq!(encrypted.matches(&m, &ctx()).unwrap().len(), 1);
    let m = mail(b"Content-Type: application/x-pkcs7-mime; smime-type=signed-data\r\n\r\nAAAA\r\n");
    assert!(encrypted.matches(&m, &ctx()).unwrap().is_empty());
    assert!(is_signed(&m));

    let dir = tempfile::tempdir().unwrap();
    ca(dir.path(), "ca");
    signer(dir.path(), "alice", "ca", &["-newkey", "rsa:2048"]);
    let pem = std::fs::read(dir.path().join("alice.pem")).unwrap();
    let der = verify::pem_certificates(&pem).unwrap().remove(0);
    assert_eq!(verify::subject(&der).as_deref(), Some("CN=alice"));
    let by_alice = matcher("IsX509CertificateSubject", Some("signers;CN=alice")).unwrap();
    let by_bob = matcher("IsX509CertificateSubject", Some("signers; CN=bob")).unwrap();
    let mut m = mail(b"Subject: x\r\n\r\nx\r\n");
    assert!(by_alice.matches(&m, &ctx()).unwrap().is_empty());
    m.set_attribute(
        "signers",
        AttributeValue::List(vec![AttributeValue::Bytes(der.clone())]),
    );
    assert_eq!(by_alice.matches(&m, &ctx()).unwrap().len(), 1);
    assert!(by_bob.matches(&m, &ctx()).unwrap().is_empty());
    m.set_attribute("signers", AttributeValue::Bytes(der));
    assert_eq!(by_alice.matches(&m, &ctx()).unwrap().len(), 1);
    m.set_attribute("signers", AttributeValue::Bytes(b"junk".to_vec()));
    assert!(by_alice.matches(&m, &ctx()).unwrap().is_empty());
    // The condition is attribute;text.
    assert!(matcher("IsX509CertificateSubject", Some("no-separator")).is_err());
    assert!(matcher("IsX509CertificateSubject", None).is_err());
}

/// A signing key file as SMIMESign reads it: the PKCS #8 key, the certificate (with an
/// emailAddress), the CA.
fn signing_pem(dir: &Path, name: &str, key: &[&str], email: bool) -> std::path::PathBuf {
    let keyout = format!("{name}.key");
    let csr = format!("{name}.csr");
    let subj = if email {
        format!("/CN=Mail Server {name}/emailAddress={name}@localhost")
    } else {
        format!("/CN={name}")
    };
    let mut req = vec!["req", "-new", "-nodes"];
    req.extend_from_slice(key);
    req.extend_from_slice(&["-keyout", &keyout, "-out", &csr, "-subj", &subj]);
    openssl(dir, &req);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=emailProtection\n",
    )
    .unwrap();
    let cert = format!("{name}.pem");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
        ],
    );
    let mut all = std::fs::read(dir.join(&keyout)).unwrap();
    all.extend(std::fs::read(dir.join(&cert)).unwrap());
    all.extend(std::fs::read(dir.join("ca.pem")).unwrap());
    let path = dir.join(format!("{name}-signing.pem"));
    std::fs::write(&path, all).unwrap();
    path
}

fn signing_mailet(params: &[(&str, &str)]) -> Result<Box<dyn Mailet>, MailetError> {
    let mut registry = Registry::default();
    register(&mut registry);
    let config = MailetConfig {
        name: "SMIMESign".into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    registry.mailet("SMIMESign").unwrap()(&config)
}

fn authenticated(sender: &str, from: &str, user: Option<&str>) -> Mail {
    let text = format!(
        "From: Alice <{from}>\r\nTo: bob@example.net\r\nSubject: hello\r\nMessage-ID: <1@x>\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         Grüße, Bob.\r\n"
    );
    let mut m = Mail::new(
        Envelope::new(
            "m1",
            MailAddress::parse(sender).ok(),
            vec![MailAddress::parse("bob@example.net").unwrap()],
        ),
        Message::from_bytes(text.as_bytes()),
    );
    if let Some(user) = user {
        m.set_attribute(mailroom_mailet::ATTR_SMTP_AUTH_USER, user.into());
    }
    m
}

#[test]
fn smime_sign_is_verified_by_openssl_and_by_the_checker() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, "ca");
    for (name, key) in [
        ("rsa", &["-newkey", "rsa:2048"][..]),
        (
            "ec",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        ),
    ] {
        let pem = signing_pem(d, name, key, true);
        let sign = signing_mailet(&[
            ("keyStoreType", "pem"),
            ("keyStoreFileName", pem.to_str().unwrap()),
            ("keyStorePassword", "unused"),
        ])
        .unwrap();
        let mut m = authenticated("alice@localhost", "alice@localhost", Some("alice"));
        sign.service(&mut m, &ctx()).unwrap();
        let bytes = m.message.to_bytes().unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(
            text.contains(
                "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\""
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "Sender: \"Mail Server {name}\" <{name}@localhost>\r\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("From: \"alice@localhost\" <{name}@localhost>\r\n")),
            "{text}"
        );
        assert!(
            text.contains("Reply-To: Alice <alice@localhost>\r\n"),
            "{text}"
        );
        assert!(text.contains("Message-ID: <1@x>\r\n"));
        assert_eq!(m.attribute(sign::SIGNATURE_VALIDITY), Some(&"valid".into()));
        assert_eq!(
            m.attribute(sign::SIGNER_ADDRESS),
            Some(&format!("{name}@localhost").as_str().into())
        );
        // A real S/MIME verifier agrees, and gets the content with the explanation.
        std::fs::write(d.join("out.eml"), &bytes).unwrap();
        openssl(
            d,
            &[
                "smime",
                "-verify",
                "-in",
                "out.eml",
                "-CAfile",
                "ca.pem",
                "-out",
                "content.txt",
            ],
        );
        let content = std::fs::read_to_string(d.join("content.txt")).unwrap();
        assert!(content.contains("Grüße, Bob."), "{content}");
        assert!(
            content.contains("filename=SignatureExplanation.txt"),
            "{content}"
        );
        // And so does SMIMECheckSignature.
        assert!(is_signed(&m));
        let check = checker(&[("keyStoreFileName", d.join("ca.pem").to_str().unwrap())]).unwrap();
        check.service(&mut m, &ctx()).unwrap();
        assert_eq!(signers(&m), Some(1), "{name}");
        // Already signed: not again.
        let before = m.message.to_bytes().unwrap();
        m.set_attribute(mailroom_mailet::ATTR_SMTP_AUTH_USER, "alice".into());
        sign.service(&mut m, &ctx()).unwrap();
        assert_eq!(m.message.to_bytes().unwrap(), before);
    }
}

#[test]
fn smime_sign_signs_only_what_james_signs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, "ca");
    let pem = signing_pem(d, "rsa", &["-newkey", "rsa:2048"], true);
    let pem = pem.to_str().unwrap();
    let sign = signing_mailet(&[
        ("keyStoreFileName", pem),
        ("rebuildFrom", "false"),
        ("signerName", "Our Server"),
    ])
    .unwrap();
    let unsigned = [
        authenticated("alice@localhost", "alice@localhost", None),
        authenticated("alice@localhost", "alice@localhost", Some("mallory")),
        authenticated("alice@localhost", "eve@localhost", Some("alice")),
    ];
    for mut m in unsigned {
        let before = m.message.to_bytes().unwrap();
        sign.service(&mut m, &ctx()).unwrap();
        assert_eq!(m.message.to_bytes().unwrap(), before);
        assert_eq!(m.attribute(sign::SIGNATURE_VALIDITY), None);
    }
    // The postmaster signs whatever its From: (postmasterSigns defaults to true), unless told not.
    let mut m = authenticated("postmaster@localhost", "other@localhost", Some("anyone"));
    sign.service(&mut m, &ctx()).unwrap();
    let text = String::from_utf8(m.message.to_bytes().unwrap()).unwrap();
    assert!(
        text.contains("Sender: \"Our Server\" <rsa@localhost>\r\n"),
        "{text}"
    );
    // rebuildFrom=false: From: as it was.
    assert!(text.contains("From: Alice <other@localhost>\r\n"), "{text}");
    let no_postmaster =
        signing_mailet(&[("keyStoreFileName", pem), ("postmasterSigns", "false")]).unwrap();
    let mut m = authenticated(
        "postmaster@localhost",
        "postmaster@localhost",
        Some("postmaster"),
    );
    no_postmaster.service(&mut m, &ctx()).unwrap();
    assert_eq!(m.attribute(sign::SIGNATURE_VALIDITY), None);
}

#[test]
fn smime_sign_factory_checks_every_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, "ca");
    let good = signing_pem(d, "rsa", &["-newkey", "rsa:2048"], true);
    let no_email = signing_pem(d, "plain", &["-newkey", "rsa:2048"], false);
    // The key of one and the certificate of another.
    let mut mixed = std::fs::read(d.join("rsa.key")).unwrap();
    mixed.extend(std::fs::read(d.join("plain.pem")).unwrap());
    std::fs::write(d.join("mixed.pem"), mixed).unwrap();
    let mixed = d.join("mixed.pem");
    openssl(
        d,
        &[
            "pkcs8", "-topk8", "-in", "rsa.key", "-out", "enc.key", "-passout", "pass:x",
        ],
    );
    let mut encrypted = std::fs::read(d.join("enc.key")).unwrap();
    encrypted.extend(std::fs::read(d.join("rsa.pem")).unwrap());
    std::fs::write(d.join("enc.pem"), encrypted).unwrap();
    let encrypted = d.join("enc.pem");
    let g = good.to_str().unwrap();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "keyStoreFileName"),
        (
            &[("keyStoreFileName", g), ("keyStoreType", "pkcs12")],
            "keyStoreType",
        ),
        (
            &[("keyStoreFileName", no_email.to_str().unwrap())],
            "Signer address missing",
        ),
        (
            &[("keyStoreFileName", mixed.to_str().unwrap())],
            "not the private key's",
        ),
        (
            &[("keyStoreFileName", encrypted.to_str().unwrap())],
            "encrypted",
        ),
        (
            &[("keyStoreFileName", g), ("rebuildFrom", "maybe")],
            "rebuildFrom",
        ),
        (
            &[("keyStoreFileName", g), ("postmasterSigns", "x")],
            "postmasterSigns",
        ),
        (
            &[("keyStoreFileName", "/nonexistent/key.pem")],
            "keyStoreFileName",
        ),
    ];
    for (params, why) in cases {
        let e = signing_mailet(params)
            .err()
            .unwrap_or_else(|| panic!("{params:?}"));
        assert!(e.message().contains(why), "{params:?}: {e}");
    }
    assert!(signing_mailet(&[("keyStoreFileName", g)]).is_ok());
}
