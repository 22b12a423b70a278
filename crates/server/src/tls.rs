//! The server's TLS certificates: which (certificate, key) pair each listener serves, the
//! `rustls` configurations built from them, the self-signed pair generated at first start, and
//! their reload (SIGHUP, the RemoteManager's `reloadtls`).
//!
//! * A listener with TLS (`<tls socketTLS=.. startTLS=..>`) serves its block's
//!   `<certificate>`/`<privateKey>`, else the global `<tls>` pair, else the self-signed pair in
//!   `var/tls/` under the home, generated at the first start that needs it (names from the
//!   servernames and the listeners' hello names; the key written mode 0600) and reused after.
//! * Each distinct pair is loaded once into one [`ServerTls`], shared by every listener that
//!   serves it, and its SHA-256 fingerprint is logged. A private key file that the group or
//!   others can read gets a warning.
//! * [`Certificates::reload`] reads every pair again. A pair that no longer loads (a missing
//!   file, bad PEM, a key that does not match the certificate) keeps its old configuration,
//!   and the report says which file and why. Sessions already encrypted are not touched.
//!
//! Protocol versions: TLS 1.2 and 1.3, on rustls's ring provider. The listeners and
//! handshakes are the `net` and protocol crates' work; this module only builds configurations.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use mailroom_config::{Config, ServiceCommon, TlsFiles};
use mailroom_net::tls::{ListenerTls, ServerTls};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// Where the self-signed pair lives, relative to the home.
pub const SELF_SIGNED_DIR: &str = "var/tls";
/// The self-signed certificate's file name in [`SELF_SIGNED_DIR`].
pub const SELF_SIGNED_CERT: &str = "cert.pem";
/// The self-signed key's file name in [`SELF_SIGNED_DIR`].
pub const SELF_SIGNED_KEY: &str = "key.pem";

/// How long a generated certificate is valid, in years.
const SELF_SIGNED_YEARS: i32 = 10;

/// One (certificate, key) pair and the configuration built from it.
struct Pair {
    /// The PEM certificate chain, leaf first.
    certificate: PathBuf,
    /// The PEM private key.
    private_key: PathBuf,
    /// What every listener serving this pair hands its handshakes; replaced by a reload.
    tls: ServerTls,
}

/// Every certificate the listeners serve. See the module documentation.
pub struct Certificates {
    /// The global `<tls>` pair, for listeners without their own.
    global: TlsFiles,
    /// The self-signed pair's paths, for listeners with neither.
    self_signed: (PathBuf, PathBuf),
    /// One entry per distinct pair, in the order the listeners name them.
    pairs: Vec<Pair>,
}

impl Certificates {
    /// Loads the pair of every listener in `services` that uses TLS, generating the
    /// self-signed pair first if one of them needs it and it does not exist yet. A pair that
    /// does not load is an error naming the file: the server does not start.
    pub fn load<'a>(
        config: &Config,
        services: impl IntoIterator<Item = &'a ServiceCommon>,
    ) -> Result<Certificates> {
        let dir = config.home.join(SELF_SIGNED_DIR);
        let mut certificates = Certificates {
            global: config.tls.clone(),
            self_signed: (dir.join(SELF_SIGNED_CERT), dir.join(SELF_SIGNED_KEY)),
            pairs: Vec::new(),
        };
        let services: Vec<&ServiceCommon> =
            services.into_iter().filter(|s| s.tls.enabled()).collect();
        for service in &services {
            let (certificate, private_key) = certificates.files(service);
            if certificates.find(&certificate, &private_key).is_some() {
                continue;
            }
            if (certificate.clone(), private_key.clone()) == certificates.self_signed {
                ensure_self_signed(config, &services, &certificate, &private_key)?;
            }
            let built = build(&certificate, &private_key)
                .map_err(|why| anyhow!("{}: TLS: {why}", service.location))?;
            tracing::info!(certificate = %certificate.display(), sha256 = %built.fingerprint,
                "TLS certificate loaded");
            certificates.pairs.push(Pair {
                certificate,
                private_key,
                tls: ServerTls::new(built.config),
            });
        }
        Ok(certificates)
    }

    /// What `mailroom check-config` checks: every configured pair of a listener in `services`
    /// that uses TLS loads (a missing self-signed pair is not an error: the server makes it).
    /// Writes nothing.
    pub fn check<'a>(
        config: &Config,
        services: impl IntoIterator<Item = &'a ServiceCommon>,
    ) -> Result<()> {
        for service in services.into_iter().filter(|s| s.tls.enabled()) {
            if let Some((certificate, private_key)) = service.tls.files(&config.tls) {
                build(&certificate, &private_key)
                    .map_err(|why| anyhow!("{}: TLS: {why}", service.location))?;
            }
        }
        Ok(())
    }

    /// How the listener of `service` uses TLS; `None` when it does not (or when it was not
    /// among the services given to [`Certificates::load`]).
    pub fn listener(&self, service: &ServiceCommon) -> Option<ListenerTls> {
        if !service.tls.enabled() {
            return None;
        }
        let (certificate, private_key) = self.files(service);
        let pair = self.find(&certificate, &private_key)?;
        Some(ListenerTls {
            config: pair.tls.clone(),
            implicit: service.tls.socket_tls,
            starttls: service.tls.start_tls,
        })
    }

    /// Reads every pair again and serves what loads to later handshakes; a pair that does not
    /// load keeps its old configuration. Returns one line per pair saying what happened, each
    /// also logged.
    pub fn reload(&self) -> Vec<String> {
        if self.pairs.is_empty() {
            tracing::info!("TLS reload: no listener uses TLS");
            return vec!["No TLS certificate to reload: no listener uses TLS".to_string()];
        }
        self.pairs
            .iter()
            .map(|pair| match build(&pair.certificate, &pair.private_key) {
                Ok(built) => {
                    pair.tls.replace(built.config);
                    tracing::info!(certificate = %pair.certificate.display(),
                        sha256 = %built.fingerprint, "TLS certificate reloaded");
                    format!(
                        "Reloaded {} (SHA-256 {})",
                        pair.certificate.display(),
                        built.fingerprint
                    )
                }
                Err(why) => {
                    tracing::error!(certificate = %pair.certificate.display(), %why,
                        "TLS reload failed; the old certificate is kept");
                    format!(
                        "Kept the old certificate for {}: {why}",
                        pair.certificate.display()
                    )
                }
            })
            .collect()
    }

    /// The pair `service` serves: its own, else the global one, else the self-signed one.
    fn files(&self, service: &ServiceCommon) -> (PathBuf, PathBuf) {
        service
            .tls
            .files(&self.global)
            .unwrap_or_else(|| self.self_signed.clone())
    }

    fn find(&self, certificate: &Path, private_key: &Path) -> Option<&Pair> {
        self.pairs
            .iter()
            .find(|p| p.certificate == certificate && p.private_key == private_key)
    }
}

/// A configuration built from a pair, and the leaf certificate's fingerprint.
struct Built {
    config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate's DER, as `AB:CD:...` (the form of
    /// `openssl x509 -fingerprint -sha256`).
    fingerprint: String,
}

/// Reads a pair and builds its configuration (TLS 1.2+, ring). The error says which file and
/// what is wrong with it.
fn build(certificate: &Path, private_key: &Path) -> Result<Built, String> {
    let pem = std::fs::read(certificate)
        .map_err(|e| format!("{}: cannot read: {e}", certificate.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM: {e}", certificate.display()))?;
    let Some(leaf) = chain.first() else {
        return Err(format!(
            "{}: no certificate in it (a PEM \"BEGIN CERTIFICATE\" block)",
            certificate.display()
        ));
    };
    let fingerprint = fingerprint(leaf);
    warn_if_readable(private_key);
    let pem = std::fs::read(private_key)
        .map_err(|e| format!("{}: cannot read: {e}", private_key.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: no usable private key: {e}", private_key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "{} with {}: {e}",
                certificate.display(),
                private_key.display()
            )
        })?;
    Ok(Built {
        config: Arc::new(config),
        fingerprint,
    })
}

/// SHA-256 of a certificate's DER as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut text = String::with_capacity(95);
    for (i, byte) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        let _ = write!(text, "{byte:02X}");
    }
    text
}

/// Warns when the group or others may read a private key file.
fn warn_if_readable(private_key: &Path) {
    if let Ok(meta) = std::fs::metadata(private_key) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            tracing::warn!(
                "TLS private key {} is readable by {} (mode {mode:04o}); chmod 600 it",
                private_key.display(),
                if mode & 0o004 != 0 {
                    "every user"
                } else {
                    "its group"
                }
            );
        }
    }
}

/// Makes the self-signed pair unless both files exist.
fn ensure_self_signed(
    config: &Config,
    services: &[&ServiceCommon],
    certificate: &Path,
    private_key: &Path,
) -> Result<()> {
    if certificate.exists() && private_key.exists() {
        return Ok(());
    }
    let mut names: Vec<String> = Vec::new();
    let candidates = config
        .james
        .servernames
        .iter()
        .chain(services.iter().map(|s| &s.hello_name));
    for name in candidates {
        let name = name.trim().to_ascii_lowercase();
        let usable = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
        if usable && !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        names.push("localhost".to_string());
    }
    let (cert_pem, key_pem, der) = self_signed(&names)?;
    let dir = certificate.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_file(private_key, key_pem.as_bytes(), 0o600)?;
    write_file(certificate, cert_pem.as_bytes(), 0o644)?;
    tracing::info!(certificate = %certificate.display(), names = ?names,
        sha256 = %fingerprint(&der),
        "no TLS certificate configured: generated a self-signed one (replace it with <tls> \
         <certificate>/<privateKey> for clients that verify)");
    Ok(())
}

/// A self-signed certificate for `names` (the first is its common name), valid from a day ago
/// for [`SELF_SIGNED_YEARS`]: PEM certificate, PEM key, and the certificate's DER.
fn self_signed(names: &[String]) -> Result<(String, String, Vec<u8>)> {
    let mut params =
        rcgen::CertificateParams::new(names.to_vec()).context("self-signed certificate names")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0].clone());
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Mailroom self-signed");
    let (year, month, day) = today();
    params.not_before = rcgen::date_time_ymd(year, month, day) - rcgen_day();
    params.not_after = rcgen::date_time_ymd(year + SELF_SIGNED_YEARS, month, day.min(28));
    let key = rcgen::KeyPair::generate().context("generating a TLS key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the self-signed certificate")?;
    Ok((cert.pem(), key.serialize_pem(), cert.der().to_vec()))
}

/// One day, in rcgen's time type.
fn rcgen_day() -> std::time::Duration {
    std::time::Duration::from_secs(86_400)
}

/// Today's UTC date (year, month, day), from the system clock.
fn today() -> (i32, u8, u8) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_from_days((secs / 86_400) as i64)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

/// Writes `bytes` to `path` with `mode` through a temporary file renamed into place, so that
/// a crash never leaves half a key, and the key is never readable by others even briefly.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_819), (2027, 1, 1));
    }

    #[test]
    fn pairs_load_and_mismatches_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, der) = self_signed(&["mail.example.test".into()]).unwrap();
        let (_, other_key, _) = self_signed(&["other.test".into()]).unwrap();
        let c = dir.path().join("c.pem");
        let k = dir.path().join("k.pem");
        write_file(&c, cert.as_bytes(), 0o644).unwrap();
        write_file(&k, key.as_bytes(), 0o600).unwrap();
        let built = build(&c, &k).unwrap();
        assert_eq!(built.fingerprint, fingerprint(&der));
        assert_eq!(built.fingerprint.len(), 95);

        std::fs::write(&k, other_key).unwrap();
        let why = build(&c, &k).err().unwrap();
        assert!(why.contains("c.pem with"), "{why}");
        std::fs::write(&c, "not pem").unwrap();
        let why = build(&c, &k).err().unwrap();
        assert!(why.contains("no certificate"), "{why}");
        std::fs::remove_file(&k).unwrap();
        std::fs::write(&c, cert).unwrap();
        let why = build(&c, &k).err().unwrap();
        assert!(why.contains("k.pem: cannot read"), "{why}");
    }
}
