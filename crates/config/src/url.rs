//! Repository URLs and paths, resolved against the server home.
//!
//! | written | means |
//! |---|---|
//! | `file://var/mail/spool/` | `HOME/var/mail/spool/` |
//! | `file:///abs/x` | `/abs/x` |
//! | `var/x` (no scheme) | `HOME/var/x` |
//! | `/abs/x` | `/abs/x` |
//! | `db://maildb/inbox/` | data source `maildb`, path `["inbox"]` |
//! | `dbfile://maildb/spool/spool` | data source `maildb`, path `["spool", "spool"]`, bodies in files |
//!
//! Which backend serves which URL is the store crate's business; this module only parses.

use std::path::{Path, PathBuf};

/// Where a repository lives, as chosen by its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryUrl {
    /// A directory (already resolved against the home).
    File(PathBuf),
    /// Tables in a data source declared in `<database-connections>`.
    Db {
        /// Name of the data source (`maildb`).
        source: String,
        /// The non-empty path segments after the data source (`["spool", "spool"]`).
        path: Vec<String>,
    },
    /// Envelopes and index in a data source, message bodies in files.
    DbFile {
        /// Name of the data source.
        source: String,
        /// The non-empty path segments after the data source.
        path: Vec<String>,
    },
}

impl RepositoryUrl {
    /// Parses `url`; file paths resolve against `home`. Unknown schemes are errors.
    pub fn parse(url: &str, home: &Path) -> Result<RepositoryUrl, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("empty repository URL".into());
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            if let Some(rest) = url.strip_prefix("file:") {
                return Ok(RepositoryUrl::File(resolve_path(home, rest)));
            }
            return Ok(RepositoryUrl::File(resolve_path(home, url)));
        };
        let db = |rest: &str| -> Result<(String, Vec<String>), String> {
            let mut parts = rest.split('/');
            let source = parts.next().unwrap_or_default().trim();
            if source.is_empty() {
                return Err(format!(
                    "\"{url}\" names no data source (expected {scheme}://SOURCE/...)"
                ));
            }
            let path = parts
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            Ok((source.to_string(), path))
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => Ok(RepositoryUrl::File(resolve_path(home, rest))),
            "db" => db(rest).map(|(source, path)| RepositoryUrl::Db { source, path }),
            "dbfile" => db(rest).map(|(source, path)| RepositoryUrl::DbFile { source, path }),
            "mbox" => Err(format!("\"{url}\": mbox repositories are not supported (use file:// for Maildir)")),
            other => Err(format!(
                "\"{url}\": unknown repository URL scheme \"{other}\" (known: file://, db://, dbfile://)"
            )),
        }
    }

    /// The data source a `db://` or `dbfile://` URL uses.
    pub fn data_source(&self) -> Option<&str> {
        match self {
            RepositoryUrl::File(_) => None,
            RepositoryUrl::Db { source, .. } | RepositoryUrl::DbFile { source, .. } => Some(source),
        }
    }
}

/// Resolves a path or `file:` URL against `home`: `file://var/x` and `var/x` are `home/var/x`,
/// `file:///abs` and `/abs` are absolute.
pub fn resolve_path(home: &Path, path: &str) -> PathBuf {
    let path = path.trim();
    let plain = path
        .strip_prefix("file://")
        .or_else(|| path.strip_prefix("file:"))
        .unwrap_or(path);
    let p = Path::new(plain);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        home.join(p.strip_prefix("./").unwrap_or(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls() {
        let home = Path::new("/srv/mail");
        let p = |u| RepositoryUrl::parse(u, home).unwrap();
        assert_eq!(
            p("file://var/mail/spool/"),
            RepositoryUrl::File("/srv/mail/var/mail/spool".into())
        );
        assert_eq!(p("file:///abs/x"), RepositoryUrl::File("/abs/x".into()));
        assert_eq!(p("var/x"), RepositoryUrl::File("/srv/mail/var/x".into()));
        assert_eq!(p("./var/x"), RepositoryUrl::File("/srv/mail/var/x".into()));
        assert_eq!(p("/abs"), RepositoryUrl::File("/abs".into()));
        assert_eq!(
            resolve_path(home, " file://conf/x.pem "),
            PathBuf::from("/srv/mail/conf/x.pem")
        );
    }

    #[test]
    fn db_urls() {
        let home = Path::new("/h");
        assert_eq!(
            RepositoryUrl::parse("db://maildb/inbox/", home).unwrap(),
            RepositoryUrl::Db {
                source: "maildb".into(),
                path: vec!["inbox".into()]
            }
        );
        let u = RepositoryUrl::parse("dbfile://maildb/spool/spool", home).unwrap();
        assert_eq!(
            u,
            RepositoryUrl::DbFile {
                source: "maildb".into(),
                path: vec!["spool".into(), "spool".into()]
            }
        );
        assert_eq!(u.data_source(), Some("maildb"));
        assert!(RepositoryUrl::parse("db:///inbox", home)
            .unwrap_err()
            .contains("no data source"));
    }

    #[test]
    fn bad_schemes() {
        let home = Path::new("/h");
        assert!(RepositoryUrl::parse("mbox:///var/mail", home)
            .unwrap_err()
            .contains("mbox"));
        assert!(RepositoryUrl::parse("http://x/", home)
            .unwrap_err()
            .contains("unknown repository URL scheme"));
        assert!(RepositoryUrl::parse(" ", home).is_err());
    }
}
