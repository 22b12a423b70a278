//! `addgroup`, `delgroup`, `listgroups`: the newsgroups of the news repository (Mailroom's
//! own; James 2.3 had no console commands for news). Each answers one line per result, in
//! the console's plain style; without a news repository they say so.

use mailroom_store::{NewsRepository, StoreError};

use crate::session::Out;

fn repository<'a>(
    news: Option<&'a dyn NewsRepository>,
    out: &mut Out<'_>,
) -> Option<&'a dyn NewsRepository> {
    if news.is_none() {
        out.line("No news repository is configured");
    }
    news
}

/// `addgroup <name>`.
pub async fn add(news: Option<&dyn NewsRepository>, argument: Option<&str>, out: &mut Out<'_>) {
    let Some(name) = argument
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains(' '))
    else {
        return out.line("Usage: addgroup [newsgroup]");
    };
    let Some(news) = repository(news, out) else {
        return;
    };
    match news.create_group(name).await {
        Ok(true) => out.line(format!("Newsgroup {name} added")),
        Ok(false) => out.line(format!("Newsgroup {name} already exists")),
        Err(StoreError::InvalidName(..)) => out.line(format!(
            "Error adding newsgroup {name}: not a valid newsgroup name (lower-case letters, digits, +-_ in dot-separated parts)"
        )),
        Err(e) => out.line(format!("Error adding newsgroup {name}: {e}")),
    }
}

/// `delgroup <name>`: removes the group and its articles.
pub async fn delete(news: Option<&dyn NewsRepository>, argument: Option<&str>, out: &mut Out<'_>) {
    let Some(name) = argument
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains(' '))
    else {
        return out.line("Usage: delgroup [newsgroup]");
    };
    let Some(news) = repository(news, out) else {
        return;
    };
    match news.remove_group(name).await {
        Ok(true) => out.line(format!("Newsgroup {name} deleted")),
        Ok(false) => out.line(format!("Newsgroup {name} does not exist")),
        Err(e) => out.line(format!("Error deleting newsgroup {name}: {e}")),
    }
}

/// `listgroups`: name, article count, lowest and highest number.
pub async fn list(news: Option<&dyn NewsRepository>, out: &mut Out<'_>) {
    let Some(news) = repository(news, out) else {
        return;
    };
    match news.groups().await {
        Ok(groups) => {
            out.line(format!("Existing newsgroups: {}", groups.len()));
            for g in groups {
                out.line(format!(
                    "{} articles={} low={} high={}",
                    g.name, g.count, g.low, g.high
                ));
            }
        }
        Err(e) => out.line(format!("Error listing newsgroups: {e}")),
    }
}
