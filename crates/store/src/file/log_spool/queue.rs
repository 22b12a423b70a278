//! The lease queue: which spooled mail is due when, which is leased until when, and by which
//! lease. In memory only, no I/O; the spool keeps it under its lock.
//!
//! Both orders are [`BTreeMap`]s keyed by time, so finding the next due mail or the next
//! expired lease never scans the spool.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailroom_mailet::Mail;

use crate::{LeaseToken, Result, StoreError};

/// What can change of a leased mail's message: its header section and size. An update with
/// the same form writes the envelope alone.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct MessageForm {
    header: Vec<u8>,
    size: u64,
}

impl MessageForm {
    pub fn of(mail: &Mail) -> Self {
        MessageForm {
            header: mail.message.header_section().to_vec(),
            size: mail.message.size(),
        }
    }
}

/// Where a mail stands in the queue.
enum Slot {
    /// Waiting; its key in `due`.
    Queued((SystemTime, u64)),
    Leased(Lease),
}

struct Lease {
    id: u64,
    expires_at: SystemTime,
    /// The message as leased or last stored: an update with the same form keeps it.
    form: MessageForm,
}

pub(super) struct LeaseQueue {
    /// Mails waiting, by due time and then arrival.
    due: BTreeMap<(SystemTime, u64), String>,
    /// Leases by expiry (and id).
    expiries: BTreeMap<(SystemTime, u64), String>,
    slots: HashMap<String, Slot>,
    /// Ties due times in arrival order.
    next_order: u64,
    /// The next lease id: starts at the time the spool opened, in nanoseconds, so that ids
    /// also differ from those of an earlier opening.
    next_lease: u64,
    /// How long a lease lasts.
    pub duration: Duration,
}

impl LeaseQueue {
    pub fn new(duration: Duration) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        LeaseQueue {
            due: BTreeMap::new(),
            expiries: BTreeMap::new(),
            slots: HashMap::new(),
            next_order: 0,
            next_lease: u64::try_from(now.as_nanos()).unwrap_or(u64::MAX / 2),
            duration,
        }
    }

    /// Queues `name` to be due at `at`, replacing its place if queued. A leased mail is left
    /// leased; returns whether it was queued.
    pub fn queue(&mut self, name: &str, at: SystemTime) -> bool {
        match self.slots.get(name) {
            Some(Slot::Leased(_)) => return false,
            Some(Slot::Queued(key)) => {
                self.due.remove(key);
            }
            None => {}
        }
        let key = (at, self.next_order);
        self.next_order += 1;
        self.due.insert(key, name.to_string());
        self.slots.insert(name.to_string(), Slot::Queued(key));
        true
    }

    /// Takes the next mail to lease at `now`: one whose lease expired (it is taken over), or
    /// else the one due longest. Hand it out with [`LeaseQueue::grant`], or queue it again.
    pub fn take(&mut self, now: SystemTime) -> Option<(String, bool)> {
        if let Some(entry) = self.expiries.first_entry() {
            if entry.key().0 <= now {
                let name = entry.remove();
                self.slots.remove(&name);
                return Some((name, true));
            }
        }
        let entry = self.due.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let name = entry.remove();
        self.slots.remove(&name);
        Some((name, false))
    }

    /// Leases a mail just taken.
    pub fn grant(&mut self, name: &str, form: MessageForm, now: SystemTime) -> LeaseToken {
        let id = self.next_lease;
        self.next_lease += 1;
        let expires_at = now + self.duration;
        self.expiries.insert((expires_at, id), name.to_string());
        self.slots.insert(
            name.to_string(),
            Slot::Leased(Lease {
                id,
                expires_at,
                form,
            }),
        );
        LeaseToken::new(name, id, expires_at)
    }

    /// When the next mail falls due or the next lease expires.
    pub fn next_time(&self) -> Option<SystemTime> {
        let due = self.due.keys().next().map(|k| k.0);
        let expiry = self.expiries.keys().next().map(|k| k.0);
        due.into_iter().chain(expiry).min()
    }

    fn lease(&self, token: &LeaseToken) -> Result<&Lease> {
        match self.slots.get(token.name()) {
            Some(Slot::Leased(lease)) if lease.id == token.id() => Ok(lease),
            _ => Err(StoreError::LeaseLost(token.name().to_string())),
        }
    }

    /// Refuses a token whose lease is no longer held.
    pub fn check(&self, token: &LeaseToken) -> Result<()> {
        self.lease(token).map(|_| ())
    }

    /// The message form of a held lease.
    pub fn form(&self, token: &LeaseToken) -> Result<&MessageForm> {
        self.lease(token).map(|lease| &lease.form)
    }

    /// Whether `name` is leased.
    pub fn is_leased(&self, name: &str) -> bool {
        matches!(self.slots.get(name), Some(Slot::Leased(_)))
    }

    /// Records the message form a leased mail now has (after a store or an update).
    pub fn set_form(&mut self, name: &str, form: MessageForm) {
        if let Some(Slot::Leased(lease)) = self.slots.get_mut(name) {
            lease.form = form;
        }
    }

    /// Extends a held lease from `now`.
    pub fn renew(&mut self, token: &LeaseToken, now: SystemTime) -> Result<LeaseToken> {
        self.check(token)?;
        let expires_at = now + self.duration;
        let Some(Slot::Leased(lease)) = self.slots.get_mut(token.name()) else {
            unreachable!("checked above");
        };
        self.expiries.remove(&(lease.expires_at, lease.id));
        lease.expires_at = expires_at;
        self.expiries
            .insert((expires_at, lease.id), token.name().to_string());
        Ok(LeaseToken::new(token.name(), token.id(), expires_at))
    }

    /// Ends a held lease, queueing the mail for `at`.
    pub fn end(&mut self, token: &LeaseToken, at: SystemTime) -> Result<()> {
        self.check(token)?;
        self.forget(token.name());
        self.queue(token.name(), at);
        Ok(())
    }

    /// Drops every trace of `name` (removed from the spool).
    pub fn forget(&mut self, name: &str) {
        match self.slots.remove(name) {
            Some(Slot::Queued(key)) => {
                self.due.remove(&key);
            }
            Some(Slot::Leased(lease)) => {
                self.expiries.remove(&(lease.expires_at, lease.id));
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_mailet::{Envelope, Message};

    fn form() -> MessageForm {
        MessageForm::of(&Mail::new(
            Envelope::new("m", None, vec![]),
            Message::from_bytes(b"Subject: x\r\n\r\n"),
        ))
    }

    #[test]
    fn due_mails_in_order_then_expired_leases_first() {
        let mut queue = LeaseQueue::new(Duration::from_secs(10));
        let t0 = SystemTime::now();
        queue.queue("later", t0 + Duration::from_secs(5));
        queue.queue("a", t0);
        queue.queue("b", t0);
        assert_eq!(queue.next_time(), Some(t0));
        assert_eq!(queue.take(t0), Some(("a".into(), false)));
        let token = queue.grant("a", form(), t0);
        assert_eq!(queue.take(t0), Some(("b".into(), false)));
        assert_eq!(queue.take(t0), None);
        // Past its expiry, the lease of a is taken over before later falls due.
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(queue.take(t1), Some(("a".into(), true)));
        let second = queue.grant("a", form(), t1);
        assert_ne!(token.id(), second.id());
        assert!(matches!(queue.check(&token), Err(StoreError::LeaseLost(_))));
        assert!(queue.end(&token, t1).is_err());
        assert!(queue.is_leased("a"));
        queue.end(&second, t1).unwrap();
        assert_eq!(queue.take(t1), Some(("later".into(), false)));
        assert_eq!(queue.take(t1), Some(("a".into(), false)));
        queue.forget("a");
        assert_eq!(queue.next_time(), None);
    }
}
