//! What the session asks of the news repository ([`Query`]) and what the driver answers
//! ([`Answer`]); the driver maps each query to one repository call.

use std::time::SystemTime;

use mailroom_store::{Arrival, Article, GroupInfo, NewArticle, Overview};

/// A question for the news repository (each maps to one call of
/// [`mailroom_store::NewsRepository`], except `Headers`: the numbers, then each article).
#[derive(Debug, PartialEq, Eq)]
pub enum Query {
    /// Every group → [`Answer::Groups`].
    Groups,
    /// One group → [`Answer::Group`].
    Group(String),
    /// Article numbers → [`Answer::Numbers`].
    Numbers {
        /// The group.
        group: String,
        /// Lowest.
        low: u64,
        /// Highest.
        high: u64,
    },
    /// One article → [`Answer::Article`].
    Article {
        /// The group.
        group: String,
        /// Its number.
        number: u64,
    },
    /// One article by Message-ID → [`Answer::Article`].
    ArticleById(String),
    /// Where an article is → [`Answer::Located`].
    Locate(String),
    /// Overview lines → [`Answer::Overview`].
    Overview {
        /// The group.
        group: String,
        /// Lowest.
        low: u64,
        /// Highest.
        high: u64,
    },
    /// A header the overview lacks, read from each article of a range (one at a time) →
    /// [`Answer::Headers`]; see [`crate::answers::header_value`].
    Headers {
        /// The group.
        group: String,
        /// Lowest.
        low: u64,
        /// Highest.
        high: u64,
        /// The header name.
        field: String,
    },
    /// Articles that arrived since → [`Answer::Arrivals`].
    Arrivals(SystemTime),
    /// Store an article → [`Answer::Posted`].
    Post(NewArticle),
    /// Remove an article from every group → [`Answer::Cancelled`].
    Cancel(String),
}

/// The repository's answer to a [`Query`].
#[derive(Debug)]
pub enum Answer {
    /// Every group.
    Groups(Vec<GroupInfo>),
    /// One group, if it exists.
    Group(Option<GroupInfo>),
    /// Article numbers.
    Numbers(Vec<u64>),
    /// One article, if it exists.
    Article(Option<Article>),
    /// Where an article is.
    Located(Option<Vec<(String, u64)>>),
    /// Overview lines.
    Overview(Vec<Overview>),
    /// (number, value) of a header, for each article of a range.
    Headers(Vec<(u64, String)>),
    /// Arrivals.
    Arrivals(Vec<Arrival>),
    /// The numbers the article got, or why it was not stored.
    Posted(Result<Vec<(String, u64)>, PostFailure>),
    /// Whether an article was cancelled.
    Cancelled(bool),
    /// The repository failed (403).
    Failed,
}

/// Why the repository did not store an article.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostFailure {
    /// Its Message-ID is stored already.
    Duplicate,
    /// None of its groups exists.
    NoSuchGroup,
    /// The repository failed; try later.
    Temporary,
}
