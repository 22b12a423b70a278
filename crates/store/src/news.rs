//! The news repository contract (NNTP): groups with monotonic article numbers, a message-id
//! index and an overview index. The NNTP issue brings its backends; the shape is fixed here so
//! that the file and database backends are written against one contract.

use std::io::Read;

use crate::Result;

/// A newsgroup's numbers, as `GROUP` and `LIST ACTIVE` report them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group name (`comp.lang.rust`).
    pub name: String,
    /// Number of articles held.
    pub count: u64,
    /// Lowest article number held.
    pub low: u64,
    /// Highest article number ever assigned; never decreases and numbers are never reused.
    pub high: u64,
    /// Whether posting is allowed.
    pub posting_allowed: bool,
}

/// One line of the overview database (RFC 3977 §8.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overview {
    /// The article number in the group.
    pub number: u64,
    /// Subject, From, Date, Message-ID, References, then `:bytes` and `:lines`.
    pub fields: Vec<String>,
}

/// Where news articles live.
pub trait NewsRepository: Send + Sync {
    /// Every group.
    fn groups(&self) -> Result<Vec<GroupInfo>>;
    /// One group.
    fn group(&self, name: &str) -> Result<Option<GroupInfo>>;
    /// Creates a group (no-op when it exists).
    fn create_group(&self, name: &str) -> Result<()>;
    /// Stores an article in each of `groups`, assigning the next numbers; returns them.
    fn post(
        &self,
        message_id: &str,
        groups: &[String],
        article: &mut dyn Read,
    ) -> Result<Vec<(String, u64)>>;
    /// The article with `number` in `group`.
    fn article(&self, group: &str, number: u64) -> Result<Option<Box<dyn Read + Send>>>;
    /// The group and number of an article by its Message-ID.
    fn locate(&self, message_id: &str) -> Result<Option<(String, u64)>>;
    /// Overview lines for numbers in `low..=high` of `group`, without reading the articles.
    fn overview(&self, group: &str, low: u64, high: u64) -> Result<Vec<Overview>>;
}
