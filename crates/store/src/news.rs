//! The news repository contract (NNTP): groups with monotonic, never-reused article numbers, a
//! message-id index and an overview index, so that `OVER` on a large group reads no article.
//!
//! The NNTP session prepares an article (required headers checked, Message-ID, Date, Path and
//! Lines added); the repository assigns its numbers, adds the `Xref:` header that records them,
//! stores it once for all its groups and keeps its overview line. It also owns the helpers that
//! read header fields from an article's octets, so that every backend builds the same overview.

use std::time::SystemTime;

use async_trait::async_trait;

use crate::Result;

/// A newsgroup's numbers, as `GROUP` and `LIST ACTIVE` report them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group name (`comp.lang.rust`).
    pub name: String,
    /// Number of articles held.
    pub count: u64,
    /// Lowest article number held; `high + 1` when the group is empty (RFC 3977 §6.1.1.2).
    pub low: u64,
    /// Highest article number ever assigned; never decreases and numbers are never reused, also
    /// after the articles are deleted and after a restart.
    pub high: u64,
    /// When the group was created (`NEWGROUPS`, `LIST ACTIVE.TIMES`).
    pub created: SystemTime,
}

/// The overview fields of an article (RFC 3977 §8.3), in `LIST OVERVIEW.FMT` order: Subject,
/// From, Date, Message-ID, References, `:bytes`, `:lines`, then the full `Xref:` field.
pub const OVERVIEW_FIELDS: [&str; 8] = [
    "Subject",
    "From",
    "Date",
    "Message-ID",
    "References",
    ":bytes",
    ":lines",
    "Xref",
];

/// One line of the overview database (RFC 3977 §8.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overview {
    /// The article number in the group.
    pub number: u64,
    /// The values of [`OVERVIEW_FIELDS`], with TAB, CR and LF replaced by spaces; the `Xref`
    /// value is without its field name.
    pub fields: Vec<String>,
}

impl Overview {
    /// The overview of an article from its octets (header fields unfolded, `:bytes` the size
    /// with CRLF line ends, `:lines` the body's lines).
    pub fn of_article(number: u64, article: &[u8]) -> Overview {
        let headers = header_fields(article);
        let value = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| clean(v))
                .unwrap_or_default()
        };
        let body = body_of(article);
        let lines = body.split(|&b| b == b'\n').count() - usize::from(body.ends_with(b"\n"));
        let bytes =
            article.len() + article.iter().filter(|&&b| b == b'\n').count() - crlf_count(article);
        Overview {
            number,
            fields: vec![
                value("Subject"),
                value("From"),
                value("Date"),
                value("Message-ID"),
                value("References"),
                bytes.to_string(),
                if body.is_empty() { 0 } else { lines }.to_string(),
                value("Xref"),
            ],
        }
    }

    /// The Message-ID field.
    pub fn message_id(&self) -> &str {
        self.fields.get(3).map_or("", String::as_str)
    }
}

fn crlf_count(bytes: &[u8]) -> usize {
    bytes.windows(2).filter(|w| w == b"\r\n").count()
}

/// An overview value: TAB, CR, LF and NUL become spaces (RFC 3977 §8.3.1).
fn clean(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if matches!(c, '\t' | '\r' | '\n' | '\0') {
                ' '
            } else {
                c
            }
        })
        .collect::<String>()
        .trim()
        .to_string()
}

/// The header fields of an article, unfolded, as (name, value) in order; 8-bit octets are read
/// as UTF-8, lossily. A line that is not a field (no colon) is skipped.
pub fn header_fields(article: &[u8]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in header_section(article).split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(text.trim());
            }
            continue;
        }
        if let Some((name, value)) = text.split_once(':') {
            fields.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    fields
}

/// The header section of an article (up to, not including, the empty line).
pub fn header_section(article: &[u8]) -> &[u8] {
    match find_blank_line(article) {
        Some((end, _)) => &article[..end],
        None => article,
    }
}

/// The body of an article (after the empty line); empty when there is none.
pub fn body_of(article: &[u8]) -> &[u8] {
    match find_blank_line(article) {
        Some((_, start)) => &article[start..],
        None => &[],
    }
}

/// Where the header section ends and the body starts.
fn find_blank_line(article: &[u8]) -> Option<(usize, usize)> {
    if article.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    if article.starts_with(b"\n") {
        return Some((0, 1));
    }
    let mut i = 0;
    while let Some(lf) = article[i..].iter().position(|&b| b == b'\n') {
        let at = i + lf;
        let rest = &article[at + 1..];
        if rest.starts_with(b"\r\n") {
            return Some((at + 1, at + 3));
        }
        if rest.starts_with(b"\n") {
            return Some((at + 1, at + 2));
        }
        i = at + 1;
    }
    None
}

/// An article stored in a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Article {
    /// Its number in the group it was asked in (by message-id: in its first group).
    pub number: u64,
    /// Its Message-ID, angle brackets included.
    pub message_id: String,
    /// The article as stored (with the `Xref:` the repository added), lines ending in CRLF.
    pub octets: Vec<u8>,
    /// The login that posted it ([`NewArticle::poster`]): who may cancel it.
    pub poster: Option<String>,
}

/// An article to store, prepared by the NNTP session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewArticle {
    /// Its Message-ID, angle brackets included: unique in the repository.
    pub message_id: String,
    /// The groups to file it in, in the order of its `Newsgroups:` header.
    pub groups: Vec<String>,
    /// The article, lines ending in CRLF, without an `Xref:` header (the repository adds it).
    pub octets: Vec<u8>,
    /// The login (AUTHINFO user) of the session that posted or fed it; `None` without one.
    /// Kept with the article and not shown to readers: only that login may cancel it.
    pub poster: Option<String>,
}

/// An article that arrived after some time (`NEWNEWS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Its Message-ID.
    pub message_id: String,
    /// The groups it is in.
    pub groups: Vec<String>,
}

/// Where news articles live.
///
/// Posting is durable on return: the article and its index entries survive a crash. Article
/// numbers are assigned per group, increasing, and never reused: not after an article is
/// cancelled or expired, not after a restart. A Message-ID is stored at most once; posting it
/// again fails with [`crate::StoreError::AlreadyExists`] and stores nothing.
#[async_trait]
pub trait NewsRepository: Send + Sync {
    /// Every group, sorted by name.
    async fn groups(&self) -> Result<Vec<GroupInfo>>;
    /// One group.
    async fn group(&self, name: &str) -> Result<Option<GroupInfo>>;
    /// Creates a group; `false` when it exists already. A name that is no valid newsgroup
    /// name fails with [`crate::StoreError::InvalidName`].
    async fn create_group(&self, name: &str) -> Result<bool>;
    /// Removes a group and its articles (an article cross-posted elsewhere stays there);
    /// `false` when there was no such group.
    async fn remove_group(&self, name: &str) -> Result<bool>;
    /// Stores an article in each of its groups that exists, assigning the next numbers and
    /// adding `Xref: <host> group:number ...`; returns the numbers. Fails with
    /// [`crate::StoreError::NotFound`] when none of its groups exists, and with
    /// [`crate::StoreError::AlreadyExists`] for a Message-ID already stored.
    async fn post(&self, article: &NewArticle) -> Result<Vec<(String, u64)>>;
    /// The article with `number` in `group`.
    async fn article(&self, group: &str, number: u64) -> Result<Option<Article>>;
    /// The article with this Message-ID.
    async fn article_by_id(&self, message_id: &str) -> Result<Option<Article>>;
    /// The groups and numbers of an article by its Message-ID.
    async fn locate(&self, message_id: &str) -> Result<Option<Vec<(String, u64)>>>;
    /// The numbers of the articles of `group` in `low..=high`, ascending.
    async fn numbers(&self, group: &str, low: u64, high: u64) -> Result<Vec<u64>>;
    /// Overview lines for the articles of `group` in `low..=high`, ascending, without reading
    /// any article.
    async fn overview(&self, group: &str, low: u64, high: u64) -> Result<Vec<Overview>>;
    /// The articles that arrived at or after `since`, oldest first.
    async fn arrived_since(&self, since: SystemTime) -> Result<Vec<Arrival>>;
    /// Removes an article from every group (a cancel); `false` when there was none.
    async fn remove_article(&self, message_id: &str) -> Result<bool>;
    /// Removes the articles of `group` that arrived before `before`; returns how many.
    async fn expire(&self, group: &str, before: SystemTime) -> Result<u64>;
}

/// Whether `name` is a newsgroup name a repository accepts: 1 to 128 octets of lower-case
/// letters, digits and `+-_`, in dot-separated components none of which is empty (so no
/// `..`, no leading or trailing dot, nothing that can leave a directory).
pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'_')
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overview_of_an_article() {
        let article = b"Subject: hi\r\n there\r\nFrom: a@b\r\nMessage-ID: <1@x>\r\nXref: h g:1\r\n\r\none\r\ntwo\r\n";
        let o = Overview::of_article(3, article);
        assert_eq!(o.fields[0], "hi there");
        assert_eq!(o.fields[1], "a@b");
        assert_eq!(o.message_id(), "<1@x>");
        assert_eq!(o.fields[5], article.len().to_string());
        assert_eq!(o.fields[6], "2");
        assert_eq!(o.fields[7], "h g:1");
        // LF-only articles count their line ends as CRLF.
        let o = Overview::of_article(1, b"Subject: x\n\nbody\n");
        assert_eq!(o.fields[5], "20");
        assert_eq!(o.fields[6], "1");
        assert_eq!(
            Overview::of_article(1, b"Subject: x\r\n\r\n").fields[6],
            "0"
        );
    }

    #[test]
    fn group_names() {
        for ok in ["a", "comp.lang.rust", "alt.binaries.x-y_z+1"] {
            assert!(valid_group_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "A.b",
            "a/b",
            "..",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(!valid_group_name(bad), "{bad}");
        }
    }
}
