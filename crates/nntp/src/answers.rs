//! The reply formats of the NNTP session: capability and help lists, LIST variants, article
//! parts, overview and header lines, and the result codes of POST and IHAVE. Pure functions
//! from the repository's answers to bytes; the session decides which one applies.

use mailroom_store::news::{body_of, header_fields, header_section, OVERVIEW_FIELDS};
use mailroom_store::{Arrival, Article, GroupInfo, Overview};

use crate::codec::Part;
use crate::reply::{data_line, end, octets, status};
use crate::session::{HdrRequest, PostFailure};
use crate::wildmat::Wildmat;

/// What CAPABILITIES announces beyond the fixed list.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    /// POST and IHAVE (not read-only).
    pub post: bool,
    /// AUTHINFO USER (not logged in, and allowed on this stream).
    pub authinfo: bool,
    /// STARTTLS (configured, and not yet encrypted).
    pub starttls: bool,
}

pub(crate) fn capabilities(caps: Caps, out: &mut Vec<u8>) {
    status(out, 101, "Capability list:");
    let mut lines = vec!["VERSION 2", "IMPLEMENTATION Mailroom", "READER"];
    if caps.post {
        lines.extend(["POST", "IHAVE"]);
    }
    lines.extend([
        "OVER MSGID",
        "HDR",
        "LIST ACTIVE ACTIVE.TIMES DISTRIB.PATS HEADERS NEWSGROUPS OVERVIEW.FMT",
        "NEWNEWS",
    ]);
    if caps.authinfo {
        lines.push("AUTHINFO USER");
    }
    if caps.starttls {
        lines.push("STARTTLS");
    }
    for line in lines {
        data_line(out, line);
    }
    end(out);
}

pub(crate) fn help(out: &mut Vec<u8>) {
    status(out, 100, "Help text follows");
    for line in [
        "ARTICLE|HEAD|BODY|STAT [number|<message-id>]",
        "AUTHINFO USER name | AUTHINFO PASS password",
        "CAPABILITIES",
        "DATE",
        "GROUP newsgroup",
        "HDR|XHDR field [range|<message-id>]",
        "HELP",
        "IHAVE <message-id>",
        "LAST",
        "LIST [ACTIVE|ACTIVE.TIMES|NEWSGROUPS [wildmat]|OVERVIEW.FMT|HEADERS|DISTRIB.PATS]",
        "LISTGROUP [newsgroup [range]]",
        "MODE READER",
        "NEWGROUPS [yy]yymmdd hhmmss [GMT]",
        "NEWNEWS wildmat [yy]yymmdd hhmmss [GMT]",
        "NEXT",
        "OVER|XOVER [range|<message-id>]",
        "POST",
        "QUIT",
        "XPAT field range|<message-id> pattern",
    ] {
        data_line(out, line);
    }
    end(out);
}

pub(crate) fn overview_fmt(out: &mut Vec<u8>) {
    status(out, 215, "Order of fields in overview database.");
    for line in [
        "Subject:",
        "From:",
        "Date:",
        "Message-ID:",
        "References:",
        ":bytes",
        ":lines",
        "Xref:full",
    ] {
        data_line(out, line);
    }
    end(out);
}

fn selected<'a>(
    groups: &'a [GroupInfo],
    w: Option<&'a Wildmat>,
) -> impl Iterator<Item = &'a GroupInfo> {
    groups
        .iter()
        .filter(move |g| w.is_none_or(|w| w.matches(&g.name)))
}

pub(crate) fn active_lines(
    groups: &[GroupInfo],
    w: Option<&Wildmat>,
    posting: bool,
    out: &mut Vec<u8>,
) {
    let flag = if posting { 'y' } else { 'n' };
    for g in selected(groups, w) {
        data_line(out, &format!("{} {} {} {flag}", g.name, g.high, g.low));
    }
    end(out);
}

pub(crate) fn list_active(
    groups: &[GroupInfo],
    w: Option<&Wildmat>,
    posting: bool,
    out: &mut Vec<u8>,
) {
    status(out, 215, "list of newsgroups follows");
    active_lines(groups, w, posting, out);
}

pub(crate) fn list_times(
    groups: &[GroupInfo],
    w: Option<&Wildmat>,
    domain: &str,
    out: &mut Vec<u8>,
) {
    status(out, 215, "information follows");
    for g in selected(groups, w) {
        let secs = g
            .created
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        data_line(out, &format!("{} {secs} news@{domain}", g.name));
    }
    end(out);
}

pub(crate) fn list_newsgroups(
    groups: &[GroupInfo],
    w: Option<&Wildmat>,
    descriptions: &std::collections::HashMap<String, String>,
    out: &mut Vec<u8>,
) {
    status(out, 215, "information follows");
    for g in selected(groups, w) {
        let description = descriptions
            .get(&g.name)
            .filter(|d| !d.is_empty())
            .map_or("(no description)", String::as_str);
        data_line(out, &format!("{}\t{description}", g.name));
    }
    end(out);
}

pub(crate) fn new_news(arrivals: &[Arrival], w: &Wildmat, out: &mut Vec<u8>) {
    status(out, 230, "list of new articles follows");
    for a in arrivals {
        if a.groups.iter().any(|g| w.matches(g)) {
            data_line(out, &a.message_id);
        }
    }
    end(out);
}

/// The reply for an article that is not there: 420 (current), 421/422 (next/last), 423
/// (number), 430 (message-id).
pub(crate) fn missing(code: u16, out: &mut Vec<u8>) {
    let text = match code {
        420 => "current article number is invalid",
        421 => "no next article in this group",
        422 => "no previous article in this group",
        423 => "no article with that number",
        _ => "no article with that message-id",
    };
    status(out, code, text);
}

pub(crate) fn article(part: Part, number: u64, article: &Article, out: &mut Vec<u8>) {
    let id = &article.message_id;
    match part {
        Part::Article => {
            status(out, 220, &format!("{number} {id}"));
            octets(out, &article.octets);
        }
        Part::Head => {
            status(out, 221, &format!("{number} {id}"));
            octets(out, header_section(&article.octets));
        }
        Part::Body => {
            status(out, 222, &format!("{number} {id}"));
            octets(out, body_of(&article.octets));
        }
        Part::Stat => status(out, 223, &format!("{number} {id}")),
    }
}

pub(crate) fn over(lines: &[Overview], by_id: bool, out: &mut Vec<u8>) {
    status(out, 224, "overview information follows");
    for o in lines {
        let mut line = if by_id {
            "0".to_string()
        } else {
            o.number.to_string()
        };
        for (i, field) in o.fields.iter().enumerate() {
            line.push('\t');
            if i == 7 && !field.is_empty() {
                line.push_str("Xref: ");
            }
            line.push_str(field);
        }
        data_line(out, &line);
    }
    end(out);
}

/// Where a header or metadata item is in an overview line, if it is there.
pub(crate) fn overview_index(field: &str) -> Option<usize> {
    let f = field.to_ascii_lowercase();
    let f = f.trim_end_matches(':');
    match f {
        "bytes" => Some(5),
        "lines" => Some(6),
        _ => OVERVIEW_FIELDS
            .iter()
            .position(|name| name.eq_ignore_ascii_case(f)),
    }
}

pub(crate) fn overview_values(field: &str, lines: &[Overview]) -> Vec<(u64, String)> {
    let i = overview_index(field).unwrap_or(0);
    lines
        .iter()
        .map(|o| (o.number, o.fields.get(i).cloned().unwrap_or_default()))
        .collect()
}

/// The value of header `field` in an article (unfolded, TAB/CR/LF as spaces; empty when absent).
pub fn header_value(article: &[u8], field: &str) -> String {
    header_fields(article)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(field))
        .map(|(_, v)| v.replace(['\t', '\r', '\n'], " "))
        .unwrap_or_default()
}

pub(crate) fn hdr(request: &HdrRequest, values: Vec<(u64, String)>, out: &mut Vec<u8>) {
    if values.is_empty() {
        missing(request.missing, out);
        return;
    }
    if request.legacy {
        status(out, 221, &format!("{} fields follow", request.field));
    } else {
        status(out, 225, "headers follow");
    }
    for (number, value) in values {
        if let Some(w) = &request.pattern {
            if !w.matches(&value) {
                continue;
            }
        }
        let key = match &request.by_id {
            Some(id) if request.legacy => id.clone(),
            Some(_) => "0".to_string(),
            None => number.to_string(),
        };
        data_line(out, &format!("{key} {value}"));
    }
    end(out);
}

pub(crate) fn posted(
    ihave: bool,
    result: Result<Vec<(String, u64)>, PostFailure>,
    out: &mut Vec<u8>,
) {
    match (result, ihave) {
        (Ok(_), false) => status(out, 240, "article received ok"),
        (Ok(_), true) => status(out, 235, "article transferred ok"),
        (Err(PostFailure::Duplicate), false) => {
            status(out, 441, "posting failed: duplicate Message-ID")
        }
        (Err(PostFailure::Duplicate), true) => {
            status(out, 437, "transfer rejected: duplicate Message-ID")
        }
        (Err(PostFailure::NoSuchGroup), false) => {
            status(out, 441, "posting failed: no such newsgroup")
        }
        (Err(PostFailure::NoSuchGroup), true) => {
            status(out, 437, "transfer rejected: no such newsgroup")
        }
        (Err(PostFailure::Temporary), false) => status(out, 441, "posting failed: try again later"),
        (Err(PostFailure::Temporary), true) => status(out, 436, "transfer failed: try again later"),
    }
}
