//! The end of a mail delivered from a database spool to a database inbox of the same data
//! source: its inbox rows inserted and its spool row deleted in one transaction
//! ([`SpoolRepository::complete_delivered`]). A row names the spool mail's stored body when
//! the delivered message still has it (no copy), and the body then outlives the spool row.

use super::*;
use crate::db::inbox::{insert_once_sql, insert_rows, DbInbox};

impl DbMailRepository {
    /// See [`SpoolRepository::complete_delivered`].
    pub(super) async fn complete_with_deliveries(
        &self,
        token: &LeaseToken,
        inbox: &dyn InboxRepository,
        deliveries: &[Delivery],
    ) -> Result<bool> {
        let Some(inbox) = inbox.as_any().and_then(|a| a.downcast_ref::<DbInbox>()) else {
            return Ok(false);
        };
        // One database, and one place for body files: the inbox reads the rows' bodies
        // (the spool's, or copies written here) where it looks for its own. Two data
        // sources naming one database keep their files apart (`var/dbfile/<source>`).
        if !crate::db::same_database(self.pool(), inbox.pool())
            || self.bodies().files.root() != inbox.bodies().files.root()
        {
            return Ok(false);
        }
        let id = token.id() as i64;
        let leased = self.leased().remove(&(token.name().to_string(), id));
        let staged = inbox.take_staged(deliveries)?;
        // Each row: the spool's body named when the message still has it, else a copy.
        let mut rows = Vec::with_capacity(staged.len());
        let mut copies = Vec::new();
        for s in staged {
            let user = s.user.clone();
            let row = match &leased {
                Some(l) if same_body(&l.body, s.message.body()) => {
                    let body = WrittenBody {
                        id: l.id.clone(),
                        len: l.body.len(),
                    };
                    s.values(&body, l.lf).map(|v| (user, v, true))
                }
                _ => s
                    .write(self.bodies(), inbox.table())
                    .await
                    .map(|v| (user, v, false)),
            };
            match row {
                Ok(row) => {
                    if !row.2 {
                        copies.push(row.1.body_id.clone());
                    }
                    rows.push(row);
                }
                Err(e) => {
                    for copy in &copies {
                        body::delete_body(self.bodies(), copy).await;
                    }
                    return Err(e);
                }
            }
        }
        let d = self.dialect();
        let t = self.table();
        let select_old =
            format!(
            "SELECT mailroom_body_id FROM {t} WHERE repository_name = $1 AND message_name = $2 \
             AND mailroom_lease_id = $3{}",
            if d == Dialect::Postgres { " FOR UPDATE" } else { "" }
        );
        let delete = format!(
            "DELETE FROM {t} WHERE repository_name = $1 AND message_name = $2 \
             AND mailroom_lease_id = $3"
        );
        let insert = insert_once_sql(d, inbox.table());
        let repository = self.inner.repository.clone();
        let name = token.name().to_string();
        // The body the rows name instead of a copy: it must still be the spool row's.
        let kept_id = rows
            .iter()
            .any(|(_, _, named)| *named)
            .then(|| leased.as_ref().map(|l| l.id.clone()))
            .flatten();
        let result: sqlx::Result<Option<Vec<String>>> = write_tx!(self.pool(), c => {
            let old: Option<Option<String>> = sqlx::query_scalar(sql(select_old))
                .bind(&repository)
                .bind(&name)
                .bind(id)
                .fetch_optional(&mut *c)
                .await?;
            let Some(old) = old else {
                return Ok(None);
            };
            if kept_id.is_some() && old != kept_id {
                // Replaced meanwhile (a store elsewhere deleted it): never name a body that
                // is gone. Nothing is done; the mail is delivered again, as stored now.
                return Err(sqlx::Error::Protocol("the stored body changed under the lease".into()));
            }
            let (named, mut gone) = insert_rows!(c, insert, rows.iter());
            sqlx::query(sql(delete))
                .bind(&repository)
                .bind(&name)
                .bind(id)
                .execute(&mut *c)
                .await?;
            if let Some(old) = old.filter(|_| !named) {
                sqlx::query("DELETE FROM mailroom_bodies WHERE body_id = $1")
                    .bind(&old)
                    .execute(&mut *c)
                    .await?;
                gone.push(old);
            }
            Ok(Some(gone))
        });
        match result {
            Ok(Some(gone)) => {
                // Body files go once no committed row names them.
                body::removed(self.bodies(), gone).await;
                Ok(true)
            }
            done => {
                for copy in &copies {
                    body::delete_body(self.bodies(), copy).await;
                }
                match done {
                    Err(e) => Err(db_error(e)),
                    _ => Err(StoreError::LeaseLost(token.name().to_string())),
                }
            }
        }
    }
}
