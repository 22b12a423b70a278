//! JDBCAlias: James 2.3's aliasing through a database table. Each recipient whose whole
//! address is found in `<source_column>` of the table named by `<mappings>`
//! (`db://DATA-SOURCE/TABLE`) is replaced by the address in `<target_column>` of that row;
//! others stay. A target that is not an address is logged and the recipient kept, as James.
//! A database that is away keeps the mail in the spool (a temporary failure).

use std::sync::Arc;

use mailroom_mailet::outcome::{Outcome, Status};
use mailroom_mailet::{Mail, MailAddress, Mailet, MailetConfig, MailetContext, MailetError};

use crate::sql::{check_table, db_url, identifier, SqlSources};
use crate::Registry;

pub(super) fn register_sql(registry: &mut Registry, sources: Arc<dyn SqlSources>) {
    registry
        .add_mailet("JDBCAlias", move |c| {
            Ok(Box::new(JdbcAlias::new(c, sources.clone())?))
        })
        .params(&["mappings", "source_column", "target_column"])
        .about(
            "Replaces each recipient found in <source_column> of the <mappings> table \
             (db://DATA-SOURCE/TABLE) with the address in <target_column> of that row; other \
             recipients stay. A database that is away keeps the mail in the spool.",
            "<mailet match=\"All\" class=\"JDBCAlias\"><mappings>db://maildb/Aliases</mappings>\
             <source_column>source_email_address</source_column><target_column>\
             target_email_address</target_column></mailet>",
        );
}

struct JdbcAlias {
    sources: Arc<dyn SqlSources>,
    source: String,
    query: String,
    table: String,
}

impl JdbcAlias {
    fn new(c: &MailetConfig, sources: Arc<dyn SqlSources>) -> Result<JdbcAlias, MailetError> {
        let url = c.required("mappings")?;
        let what = format!("{}: <mappings>", c.name);
        let (source, table) = db_url(&what, url, sources.as_ref())?;
        let table = table.ok_or_else(|| {
            MailetError::new(format!("{what} {url:?} names no table (db://SOURCE/TABLE)"))
        })?;
        check_table(&c.name, sources.as_ref(), &source, &table)?;
        let from = identifier(
            &format!("{}: <source_column>", c.name),
            c.required("source_column")?,
        )?;
        let to = identifier(
            &format!("{}: <target_column>", c.name),
            c.required("target_column")?,
        )?;
        Ok(JdbcAlias {
            query: format!("SELECT {to} FROM {table} WHERE {from} = ?"),
            sources,
            source,
            table,
        })
    }
}

impl Mailet for JdbcAlias {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let mut recipients: Vec<MailAddress> = Vec::with_capacity(mail.recipients().len());
        let mut added = Vec::new();
        let mut lines = Vec::new();
        for rcpt in mail.recipients() {
            let text = rcpt.to_string();
            let rows = self.sources.query(&self.source, &self.query, &[&text])?;
            let target = rows
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
                .flatten();
            match target.map(|t| (MailAddress::parse(t.trim()), t)) {
                None => recipients.push(rcpt.clone()),
                Some((Ok(to), _)) => {
                    lines.push(
                        Outcome::new(mail.name(), rcpt, Status::Mapped)
                            .field("to", &to)
                            .field("table", &self.table),
                    );
                    added.push(to);
                }
                Some((Err(e), t)) => {
                    ctx.log(&format!(
                        "There is an invalid alias from {rcpt} to {t:?}: {e}"
                    ));
                    recipients.push(rcpt.clone());
                }
            }
        }
        if added.is_empty() {
            return Ok(());
        }
        // As James: the aliased recipients leave, their targets join at the end.
        for to in added {
            if !recipients.contains(&to) {
                recipients.push(to);
            }
        }
        mail.set_recipients(recipients);
        for line in lines {
            ctx.log(&line.to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailets::vut::tests::{build, ctx, mail, registry_with, texts};
    use crate::sql::testing::Sqlite;

    #[test]
    fn aliases_from_the_table_and_checks() {
        let db = Sqlite::new();
        db.execute("maildb", "CREATE TABLE Aliases (src TEXT, dst TEXT)", &[])
            .unwrap();
        for (src, dst) in [
            ("team@example.org", "lead@example.net"),
            ("broken@example.org", "not an address"),
        ] {
            db.execute("maildb", "INSERT INTO Aliases VALUES (?, ?)", &[src, dst])
                .unwrap();
        }
        let registry = registry_with(db.clone());
        let params = [
            ("mappings", "db://maildb/Aliases"),
            ("source_column", "src"),
            ("target_column", "dst"),
        ];
        let mailet = build(&registry, "JDBCAlias", &params).unwrap();
        let ctx = ctx();
        let mut m = mail(&["team@example.org", "broken@example.org", "x@example.org"]);
        mailet.service(&mut m, &ctx).unwrap();
        assert_eq!(
            texts(m.recipients()),
            ["broken@example.org", "x@example.org", "lead@example.net"]
        );
        assert!(ctx
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("invalid alias")));

        for (drop, why) in [
            ("mappings", "needs the parameter <mappings>"),
            ("source_column", "<source_column>"),
            ("target_column", "<target_column>"),
        ] {
            let some: Vec<_> = params.iter().copied().filter(|(k, _)| *k != drop).collect();
            let e = build(&registry, "JDBCAlias", &some).err().unwrap();
            assert!(e.to_string().contains(why), "{e}");
        }
        let e = build(
            &registry,
            "JDBCAlias",
            &[
                ("mappings", "db://nodb/Aliases"),
                ("source_column", "src"),
                ("target_column", "dst; drop table x"),
            ],
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("no data source"), "{e}");
        let mut missing = params.to_vec();
        missing[0] = ("mappings", "db://maildb/Nope");
        let e = build(&registry, "JDBCAlias", &missing).err().unwrap();
        assert!(e.to_string().contains("could not find table 'Nope'"), "{e}");

        let away = registry_with(Sqlite::away());
        let mailet = build(&away, "JDBCAlias", &params).unwrap();
        let e = mailet
            .service(&mut mail(&["a@example.org"]), &ctx)
            .unwrap_err();
        assert!(e.is_temporary());
    }
}
