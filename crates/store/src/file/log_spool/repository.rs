//! The repository calls: [`MailRepository`] and [`SpoolRepository`] over the index, the lease
//! queue and the segments.

use std::io::Read;
use std::time::{Duration, Instant, SystemTime};

use mailroom_mailet::Mail;

use super::incoming::LogIncoming;
use super::queue::MessageForm;
use super::record::{envelope_json, KIND_DONE};
use super::segments::record_len;
use super::{lock, Inner, LogSpool, Shared, INLINE_MAX};
use crate::blocking::{IncomingMessage, MailRepository, SpoolRepository};
use crate::{validate_mail_name, LeaseToken, Leased, Result, StoreError};

/// How long a mail that cannot be read waits before it is tried again.
const UNREADABLE_RETRY: Duration = Duration::from_secs(10);

impl Shared {
    /// Appends a DONE record for `name` and drops it from the index (its pins with it).
    /// Returns whether it was there. Not waited for: lost in a crash, the mail is processed
    /// again.
    /// Should the append fail (a full disk), nothing changes: the lease is still held, and
    /// the caller may try again. (Forgetting the lease first made the retry find it lost and
    /// give up, leaving the mail in the log: after a restart it was delivered again.)
    fn remove_locked(&self, inner: &mut Inner, name: &str) -> Result<bool> {
        if !inner.mails.contains_key(name) {
            inner.queue.forget(name);
            return Ok(false);
        }
        self.append(inner, KIND_DONE, name, &[])?;
        inner.queue.forget(name);
        let entry = inner.mails.remove(name).expect("checked above");
        let active = inner.active;
        let refs = entry.mail_segments.iter().copied().filter(|s| *s != active);
        let active_segment = inner.segments.get_mut(&active).expect("active segment");
        active_segment.done_refs.extend(refs);
        Ok(true)
    }

    /// Stores a change of the mail `token` leases, if the lease is still held: the envelope
    /// alone when the message kept its form, else the whole mail. `finish` runs under the lock
    /// right after. Returns the ticket to wait on.
    fn rewrite(
        &self,
        token: &LeaseToken,
        mail: &Mail,
        next_attempt: Option<SystemTime>,
        finish: impl FnOnce(&mut Inner) -> Result<()>,
    ) -> Result<u64> {
        let name = token.name();
        if mail.name() != name {
            return Err(StoreError::InvalidName(
                mail.name().to_string(),
                "not the name of the leased mail",
            ));
        }
        let mut envelope = mail.envelope.clone();
        envelope.size = mail.message.size();
        let json = envelope_json(&envelope)?;
        let form = MessageForm::of(mail);
        let envelope_len = Self::envelope_record_len(name, &json, next_attempt);
        let same = *lock(&self.inner).queue.form(token)? == form;
        if same {
            self.make_room()?;
            let mut inner = self.lock_for_append(envelope_len);
            // A store by someone else may have changed the message meanwhile: then the
            // whole mail is written below.
            if *inner.queue.form(token)? == form {
                let ticket =
                    self.append_envelope(&mut inner, name, &json, &envelope, next_attempt)?;
                finish(&mut inner)?;
                return Ok(ticket);
            }
        }
        if mail.message.size() as usize <= INLINE_MAX {
            let mut message = Vec::with_capacity(mail.message.size() as usize);
            mail.message.reader()?.read_to_end(&mut message)?;
            self.make_room()?;
            let len = record_len(name, &[&message, &json, &[0; 4]])
                + next_attempt.map_or(0, |_| envelope_len);
            let mut inner = self.lock_for_append(len);
            inner.queue.check(token)?;
            let mut ticket = self.append_mail(&mut inner, name, &message, &json, &envelope)?;
            if next_attempt.is_some() {
                ticket = self.append_envelope(&mut inner, name, &json, &envelope, next_attempt)?;
            }
            inner.queue.set_form(name, form);
            finish(&mut inner)?;
            return Ok(ticket);
        }
        // A large message: its own segment, then the schedule. (Should the lease be lost in
        // between, the new message stays, with the lease's new holder.)
        self.write_mail(mail, &envelope, Some(token))?;
        self.make_room()?;
        let mut inner = self.lock_for_append(envelope_len);
        inner.queue.check(token)?;
        let mut ticket = 0;
        if next_attempt.is_some() {
            ticket = self.append_envelope(&mut inner, name, &json, &envelope, next_attempt)?;
        }
        inner.queue.set_form(name, form);
        finish(&mut inner)?;
        Ok(ticket)
    }
}

impl MailRepository for LogSpool {
    fn store(&self, mail: &Mail) -> Result<()> {
        validate_mail_name(mail.name())?;
        let shared = &self.shared;
        let mut envelope = mail.envelope.clone();
        envelope.size = mail.message.size();
        let ticket = shared.write_mail(mail, &envelope, None)?;
        shared.wait_durable(ticket)?;
        let mut inner = lock(&shared.inner);
        if inner.queue.is_leased(mail.name()) {
            inner.queue.set_form(mail.name(), MessageForm::of(mail));
        } else {
            drop(inner);
            shared.enqueue(mail.name());
        }
        Ok(())
    }

    fn retrieve(&self, name: &str) -> Result<Option<Mail>> {
        validate_mail_name(name)?;
        let inner = lock(&self.shared.inner);
        Ok(self.shared.mail(&inner, name)?)
    }

    fn remove(&self, name: &str) -> Result<bool> {
        validate_mail_name(name)?;
        let shared = &self.shared;
        shared.make_room()?;
        let removed = {
            let mut inner = shared.lock_for_append(record_len(name, &[]));
            shared.remove_locked(&mut inner, name)?
        };
        if removed {
            shared.collect_garbage()?;
        }
        Ok(removed)
    }

    fn list(&self) -> Result<Vec<String>> {
        let inner = lock(&self.shared.inner);
        let mut names: Vec<(u64, &String)> = inner.mails.iter().map(|(n, e)| (e.seq, n)).collect();
        names.sort();
        Ok(names.into_iter().map(|(_, n)| n.clone()).collect())
    }

    fn incoming(&self) -> Result<Box<dyn IncomingMessage>> {
        self.shared.check_reserve(1)?;
        Ok(Box::new(LogIncoming::new(self.shared.clone())))
    }
}

impl SpoolRepository for LogSpool {
    fn lease(&self, wait: Duration) -> Result<Option<Leased>> {
        let shared = &self.shared;
        let deadline = Instant::now() + wait;
        let mut inner = lock(&shared.inner);
        loop {
            let now = SystemTime::now();
            while let Some((name, takeover)) = inner.queue.take(now) {
                match shared.mail(&inner, &name) {
                    Ok(Some(mail)) => {
                        if takeover {
                            tracing::warn!(mail = %name, "lease expired; mail taken over");
                        }
                        let token = inner.queue.grant(&name, MessageForm::of(&mail), now);
                        return Ok(Some(Leased { mail, token }));
                    }
                    // Removed since it was queued.
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(mail = %name, error = %e, "cannot read spooled mail; retrying later");
                        inner.queue.queue(&name, now + UNREADABLE_RETRY);
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let until_next = inner
                .queue
                .next_time()
                .map(|at| at.duration_since(now).unwrap_or_default());
            let wait = until_next
                .map_or(left, |d| d.min(left))
                .max(Duration::from_millis(1));
            inner = shared
                .wake
                .wait_timeout(inner, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn renew(&self, token: &LeaseToken) -> Result<LeaseToken> {
        lock(&self.shared.inner)
            .queue
            .renew(token, SystemTime::now())
    }

    fn update(&self, token: &LeaseToken, mail: &Mail) -> Result<()> {
        let ticket = self.shared.rewrite(token, mail, None, |_| Ok(()))?;
        Ok(self.shared.wait_durable_passively(ticket)?)
    }

    fn release(&self, token: LeaseToken) -> Result<()> {
        let mut inner = lock(&self.shared.inner);
        inner.queue.end(&token, SystemTime::now())?;
        if let Some(entry) = inner.mails.get_mut(token.name()) {
            entry.next_attempt = None;
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    fn requeue(&self, token: LeaseToken, mail: &Mail, next_attempt_at: SystemTime) -> Result<()> {
        let shared = &self.shared;
        let ticket = shared.rewrite(&token, mail, Some(next_attempt_at), |inner| {
            inner.queue.end(&token, next_attempt_at)?;
            shared.wake.notify_one();
            Ok(())
        })?;
        Ok(shared.wait_durable_passively(ticket)?)
    }

    fn complete(&self, token: LeaseToken) -> Result<()> {
        let shared = &self.shared;
        shared.make_room()?;
        {
            let mut inner = shared.lock_for_append(record_len(token.name(), &[]));
            inner.queue.check(&token)?;
            shared.remove_locked(&mut inner, token.name())?;
        }
        shared.collect_garbage()
    }

    fn next_attempt(&self, name: &str) -> Result<Option<SystemTime>> {
        validate_mail_name(name)?;
        let inner = lock(&self.shared.inner);
        Ok(inner.mails.get(name).and_then(|e| e.next_attempt))
    }

    fn room_for(&self, size: u64) -> Result<()> {
        let reserve = self
            .shared
            .reserve
            .load(std::sync::atomic::Ordering::Relaxed);
        Ok(crate::file::fsutil::check_room(
            &self.shared.dir,
            reserve,
            size,
        )?)
    }

    fn make_due(&self, name: &str) -> Result<bool> {
        validate_mail_name(name)?;
        let shared = &self.shared;
        loop {
            // The record's length, to lock for: the envelope can change until the lock is
            // taken again, and then this is done once more.
            let len = {
                let inner = lock(&shared.inner);
                let Some(entry) = inner.mails.get(name) else {
                    return Ok(false);
                };
                if inner.queue.is_leased(name) {
                    return Ok(false);
                }
                if entry.next_attempt.is_none() {
                    return Ok(true);
                }
                Shared::envelope_record_len(name, &envelope_json(&entry.envelope)?, None)
            };
            shared.make_room()?;
            let mut inner = shared.lock_for_append(len);
            let Some(entry) = inner.mails.get(name) else {
                return Ok(false);
            };
            if inner.queue.is_leased(name) {
                return Ok(false);
            }
            if entry.next_attempt.is_none() {
                return Ok(true);
            }
            let envelope = entry.envelope.clone();
            let json = envelope_json(&envelope)?;
            if Shared::envelope_record_len(name, &json, None) != len {
                continue;
            }
            // An ENVELOPE record as a requeue writes, without its time: due at once, also
            // after a restart.
            let ticket = shared.append_envelope(&mut inner, name, &json, &envelope, None)?;
            inner.queue.queue(name, SystemTime::now());
            drop(inner);
            shared.wake.notify_one();
            shared.wait_durable_passively(ticket)?;
            return Ok(true);
        }
    }
}
