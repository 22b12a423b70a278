//! James 2.3's virtual user tables: `XMLVirtualUserTable` (mappings written in the
//! configuration) and `JDBCVirtualUserTable` on a `db://DATA-SOURCE/TABLE` (James's
//! `VirtualUserTable` table, or its own `<sqlquery>`). Both resolve through `mapping.rs`'s
//! [`VirtualUserTable`]; this module owns only where their targets come from.
//!
//! A target string is James's: several targets separated by `,`, else `;`, else `:` (unless
//! it holds a `regex:`, which is taken whole); `error:CODE text` refuses the recipient; a bare
//! name is that user `@localhost`; a target that is not an address is logged and skipped.

use std::collections::HashMap;
use std::sync::Arc;

use mailroom_mailet::{MailAddress, MailetConfig, MailetContext, MailetError};
use mailroom_store::mappings::Target;

use super::mapping::{store_form, Lookup, VirtualUserTable};
use crate::sql::{check_table, db_url, SqlSources};
use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_mailet("XMLVirtualUserTable", |c| {
            Ok(Box::new(VirtualUserTable::james(Box::new(Inline::new(c)?))))
        })
        .params(&["mapping"])
        .about(
            "Maps recipients through <mapping>source=target;target2</mapping> lines (James \
             syntax: user@dom, user@*, *@dom sources; address, bare user (@localhost), \
             regex:pattern:replacement and error:CODE text targets). Mapped targets in other \
             domains leave in a new mail sent from this server.",
            "<mailet match=\"All\" class=\"XMLVirtualUserTable\"><mapping>sales@example.org=\
             alice;bob@example.net</mapping></mailet>",
        );
}

pub(super) fn register_sql(registry: &mut Registry, sources: Arc<dyn SqlSources>) {
    registry
        .add_mailet("JDBCVirtualUserTable", move |c| {
            match c.param("table") {
                Some(t) if t.starts_with("db://") => {}
                _ => return store_form(c),
            }
            let sql = Sql::new(c, sources.clone())?;
            Ok(Box::new(VirtualUserTable::james(Box::new(sql))))
        })
        .params(&["table", "sqlquery"])
        .about(
            "James's database virtual user table: <table>db://DATA-SOURCE/TABLE</table> with \
             columns user, domain, target_address (% for any user or domain), or your own \
             <sqlquery> with ? for the user, the domain and the domain again. Targets in James \
             syntax, as XMLVirtualUserTable. A <table> without db:// is a table of Mailroom's \
             mappings repository, as VirtualUserTable. A database that is away keeps the mail \
             in the spool.",
            "<mailet match=\"All\" class=\"JDBCVirtualUserTable\"><table>db://maildb/\
             VirtualUserTable</table></mailet>",
        );
}

/// Splits a James target string into the targets `mapping.rs` resolves.
fn james_targets(text: &str, ctx: &dyn MailetContext, source: &MailAddress) -> Vec<String> {
    let text = text.trim();
    if text.starts_with("error:") {
        return vec![text.to_string()];
    }
    let tokens: Vec<&str> = if text.contains(',') {
        text.split(',').collect()
    } else if text.contains(';') {
        text.split(';').collect()
    } else if text.contains("regex:") {
        vec![text]
    } else {
        text.split(':').collect()
    };
    let mut targets = Vec::new();
    for token in tokens.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let target = if token.starts_with("regex:") || token.contains('@') {
            token.to_string()
        } else {
            format!("{token}@localhost")
        };
        match Target::parse(&target) {
            Ok(_) => targets.push(target),
            Err(e) => ctx.log(&format!(
                "There is an invalid map from {source} to {token}: {e}"
            )),
        }
    }
    targets
}

/// XMLVirtualUserTable's `<mapping>` lines (a repeated `<mapping>` is joined with `,`).
struct Inline {
    mappings: HashMap<String, String>,
}

impl Inline {
    fn new(c: &MailetConfig) -> Result<Inline, MailetError> {
        let mut mappings = HashMap::new();
        for item in c.param("mapping").unwrap_or_default().split(',') {
            if item.trim().is_empty() {
                continue;
            }
            let (source, target) = item.split_once('=').ok_or_else(|| {
                MailetError::new(format!(
                    "{}: <mapping> {:?} is not source=target",
                    c.name,
                    item.trim()
                ))
            })?;
            let source = source.trim().to_lowercase();
            mailroom_store::mappings::Source::parse(&source)
                .map_err(|e| MailetError::new(format!("{}: <mapping> source {e}", c.name)))?;
            let target = target.trim().to_lowercase();
            for one in target.split([';', ',']).map(str::trim) {
                if let Some(pattern) = one.strip_prefix("regex:") {
                    Target::parse(one).map_err(|e| {
                        MailetError::new(format!("{}: <mapping> regex:{pattern}: {e}", c.name))
                    })?;
                }
            }
            if let Some(rest) = target.strip_prefix("error:") {
                Target::parse(&target).map_err(|e| {
                    MailetError::new(format!("{}: <mapping> error:{rest}: {e}", c.name))
                })?;
            }
            mappings.insert(source, target);
        }
        Ok(Inline { mappings })
    }
}

impl Lookup for Inline {
    fn targets(
        &self,
        address: &MailAddress,
        ctx: &dyn MailetContext,
    ) -> Result<Vec<String>, MailetError> {
        let user = address.local_part().to_lowercase();
        let domain = address.domain().to_lowercase();
        for source in [
            format!("{user}@{domain}"),
            format!("{user}@*"),
            format!("*@{domain}"),
        ] {
            if let Some(target) = self.mappings.get(&source) {
                return Ok(james_targets(target, ctx, address));
            }
        }
        Ok(Vec::new())
    }
    fn name(&self) -> &str {
        "XMLVirtualUserTable"
    }
}

/// JDBCVirtualUserTable's query on its data source.
struct Sql {
    sources: Arc<dyn SqlSources>,
    source: String,
    /// `db://SOURCE/TABLE`, for the log.
    url: String,
    query: String,
    /// `None`: James's query, written here; `Some(n)`: a `<sqlquery>` that binds the first
    /// `n` of (user, domain, domain).
    placeholders: Option<usize>,
}

impl Sql {
    fn new(c: &MailetConfig, sources: Arc<dyn SqlSources>) -> Result<Sql, MailetError> {
        let url = c.required("table")?;
        let what = format!("{}: <table>", c.name);
        let (source, table) = db_url(&what, url, sources.as_ref())?;
        let table = table.ok_or_else(|| {
            MailetError::new(format!("{what} {url:?} names no table (db://SOURCE/TABLE)"))
        })?;
        check_table(&c.name, sources.as_ref(), &source, &table)?;
        let (query, placeholders) = match c.param("sqlquery") {
            Some(q) if !q.trim().is_empty() => {
                let (_, n) = mailroom_store::db::sql::number_placeholders(q);
                (q.trim().to_string(), Some(n))
            }
            Some(_) => return Err(MailetError::new(format!("{}: <sqlquery> is empty", c.name))),
            None => (default_query(&table), None),
        };
        if let Some(placeholders @ 4..) = placeholders {
            return Err(MailetError::new(format!(
                "{}: <sqlquery> has {placeholders} ? placeholders; it is given the user, the \
                 domain and the domain again (at most 3)",
                c.name
            )));
        }
        Ok(Sql {
            sources,
            source,
            url: url.trim().to_string(),
            query,
            placeholders,
        })
    }
}

/// James's default query on `table`, written for both engines: the most specific row whose
/// user and domain match, `%` standing for any user, and for any domain the table knows.
/// User and domain are compared as the address spells them and lower-cased (James's MySQL
/// compared without case), with `IN` so that the primary key `(user, domain)` serves the
/// lookup: [`default_params`] binds them.
fn default_query(table: &str) -> String {
    format!(
        "SELECT vut.target_address FROM {table} vut \
         WHERE vut.user IN (?, ?, '%') \
         AND (vut.domain IN (?, ?) OR (vut.domain = '%' AND EXISTS \
         (SELECT 1 FROM {table} d WHERE d.domain IN (?, ?)))) \
         ORDER BY CASE WHEN vut.user = '%' THEN 1 ELSE 0 END, \
         CASE WHEN vut.domain = '%' THEN 1 ELSE 0 END LIMIT 1"
    )
}

/// What [`default_query`] binds for `address`.
fn default_params(address: &MailAddress) -> Vec<String> {
    let (user, domain) = (address.local_part(), address.domain());
    vec![
        user.to_string(),
        user.to_lowercase(),
        domain.to_string(),
        domain.to_lowercase(),
        domain.to_string(),
        domain.to_lowercase(),
    ]
}

impl Lookup for Sql {
    fn targets(
        &self,
        address: &MailAddress,
        ctx: &dyn MailetContext,
    ) -> Result<Vec<String>, MailetError> {
        let params = match self.placeholders {
            None => default_params(address),
            Some(n) => [address.local_part(), address.domain(), address.domain()][..n]
                .iter()
                .map(|p| p.to_string())
                .collect(),
        };
        let params: Vec<&str> = params.iter().map(String::as_str).collect();
        let rows = self.sources.query(&self.source, &self.query, &params)?;
        let first = rows.into_iter().next().and_then(|r| r.into_iter().next());
        Ok(match first.flatten() {
            Some(text) => james_targets(&text, ctx, address),
            None => Vec::new(),
        })
    }
    fn name(&self) -> &str {
        &self.url
    }
}

#[cfg(test)]
#[path = "vut_tests.rs"]
pub(crate) mod tests;
