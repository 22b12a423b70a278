//! The workers and the processing rules of DESIGN.md §2.
//!
//! Each worker leases a mail and runs it to completion in this thread:
//! * a matcher's result is reduced to the mail's own recipients; none skips the step, all
//!   hands the mail to the mailet, some splits it: a copy with the matched recipients goes to
//!   the mailet (and then goes on in its own right), the rest continues down the processor;
//! * when a mailet changes the state, the move is persisted before processing goes on, so a
//!   crash resumes in the new processor. A split copy that has never been stored is instead
//!   stored as a new spool mail, and any worker takes it from there;
//! * `ghost`, no recipients left, or the end of a processor end processing and remove the mail
//!   from the spool;
//! * an unknown processor sends the mail to `error`;
//! * a **temporary** failure of a matcher or mailet (an I/O or resource error: a full disk, no
//!   file descriptors, DNS or a remote server away) never sends the mail to `error` nor deletes
//!   it: the mail stays in the spool as it is at that moment (its processor, its recipients
//!   left) and is tried again later from the start of that processor, with a backoff stored
//!   with it ([`SpoolRepository::requeue`]), so a restart does not reset it. Each retry logs
//!   one `status=deferred` line per recipient kept (the shape of [`mailroom_mailet::outcome`]).
//!   `onMatchException`/`onMailetException` apply to permanent failures only;
//! * a failure inside `error` keeps the mail in the spool for retry too, logged: a mail that
//!   was acknowledged is never deleted because something failed.
//!
//! While a worker holds a mail, and until a finished mail is removed, its lease is renewed in
//! the background ([`crate::leases`]), so that a mailet slower than the lease (a remote server
//! that takes its time) does not lose the mail to another worker.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use mailroom_mailet::derived_mail_name;
use mailroom_mailet::outcome::{Outcome, Status};
use mailroom_mailet::{state, AttributeValue, Mail, MailAddress, MailetContext, MailetError};
use mailroom_store::{Delivery, LeaseToken, Leased, SpoolRepository, StoreError};

use crate::context::take_deliveries;
use crate::leases::{HeldLease, Leases};
use crate::tree::{OnMailetError, OnMatchError, ProcessorTree, Step};
use crate::ServerContext;

/// How long a worker waits for mail before checking for shutdown.
const POLL: Duration = Duration::from_millis(250);
/// How many finished mails a worker removes at once, after one inbox sync.
const FINISHED_BATCH: usize = 32;
/// The longest wait before a mail that failed temporarily is tried again.
const MAX_RETRY: Duration = Duration::from_secs(600);

/// The attribute counting a mail's temporary failures: its backoff, kept across restarts.
pub const TEMPORARY_FAILURES: &str = "mailroom.temporary-failures";

/// The attribute of a mail kept for another try that says at which step of its processor
/// processing resumes: the one that failed, so that the steps before it (a footer added, a
/// notice sent) are not done again. Its value is the step's index and its label
/// (`2 RecipientIsLocal/LocalDelivery`): after a change of the configuration that moved the
/// step, the mail starts its processor again instead.
pub const RESUME_STEP: &str = "mailroom.resume-step";

/// How long to wait before the `attempts`-th retry: 1 s, doubling, up to [`MAX_RETRY`].
fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(1 << attempts.saturating_sub(1).min(16)).min(MAX_RETRY)
}

/// Why a mail's processing stopped before the mail left the spool.
enum Stopped {
    /// Storage failed: the mail is tried again as last stored.
    Storage(StoreError),
    /// A matcher or mailet failed temporarily, or something failed inside `error`: the mail is
    /// kept as it is now and tried again later.
    Retry(Box<Mail>, String),
}

impl From<StoreError> for Stopped {
    fn from(e: StoreError) -> Self {
        Stopped::Storage(e)
    }
}

impl Stopped {
    /// Keeps `mail` for another try in `processor`, at the step `at` (its index and label)
    /// or at its start, with `reason` as its error message.
    fn retry(mut mail: Mail, processor: &str, at: Option<(usize, &Step)>, reason: String) -> Self {
        mail.set_state(processor);
        mail.envelope.error_message = Some(reason.clone());
        if let Some((index, step)) = at {
            let mark = format!("{index} {}", step.label);
            mail.set_attribute(RESUME_STEP, AttributeValue::String(mark));
        }
        Stopped::Retry(Box::new(mail), reason)
    }
}

/// A mail that left processing, waiting for its deliveries to be made durable before it is
/// removed from the spool; its lease is renewed meanwhile.
struct Finished {
    token: LeaseToken,
    _held: HeldLease,
    /// Its inbox deliveries not yet made durable.
    deliveries: Vec<Delivery>,
}

/// A change to a leased mail that failed on a storage error (the spool's database away, say),
/// tried again by the workers every [`PENDING_RETRY`] until it is done or the lease is lost:
/// left alone, the lease would keep the mail from every worker until it expired.
struct Pending {
    token: LeaseToken,
    _held: HeldLease,
    change: Change,
}

enum Change {
    /// Remove the finished mail.
    Complete,
    /// Put the mail back, as last stored, for another try after this delay.
    Requeue(Duration),
}

/// How often pending spool changes are tried again.
const PENDING_RETRY: Duration = Duration::from_secs(1);

/// The mailet container.
pub struct SpoolManager {
    tree: ProcessorTree,
    context: Arc<ServerContext>,
    /// The leases the workers hold, renewed in the background.
    leases: Arc<Leases>,
    /// Mails whose processing failed on storage errors, with the number of attempts.
    failures: Mutex<HashMap<String, u32>>,
    /// Spool changes that failed, and when they were last tried.
    pending: Mutex<(Vec<Pending>, Option<Instant>)>,
}

/// The running workers.
pub struct SpoolManagerHandle {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    /// The task that renews the workers' leases.
    renewer: tokio::task::JoinHandle<()>,
}

impl SpoolManagerHandle {
    /// Asks every worker to stop after its current mail and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            let _ = worker.join();
        }
        self.renewer.abort();
    }
}

impl SpoolManager {
    /// A SpoolManager running `tree` with `context`.
    pub fn new(tree: ProcessorTree, context: Arc<ServerContext>) -> Arc<Self> {
        Arc::new(SpoolManager {
            tree,
            leases: Leases::new(context.spool().clone()),
            context,
            failures: Mutex::default(),
            pending: Mutex::default(),
        })
    }

    /// Starts `threads` workers.
    pub fn start(self: &Arc<Self>, threads: usize) -> SpoolManagerHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..threads.max(1))
            .map(|i| {
                let manager = self.clone();
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("spool-{i}"))
                    .spawn(move || manager.work(&stop))
                    .expect("cannot start a spool worker thread")
            })
            .collect();
        let renewer = self
            .context
            .runtime()
            .spawn(self.leases.clone().renew_forever(crate::leases::SCAN));
        SpoolManagerHandle {
            stop,
            workers,
            renewer,
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spool(&self) -> &Arc<dyn SpoolRepository> {
        self.context.spool()
    }

    fn work(&self, stop: &AtomicBool) {
        // A worker is a thread of its own: blocking file I/O here holds up no async task.
        mailroom_store::may_block_on_this_thread();
        let mut finished = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            self.retry_pending();
            // With finished mails waiting, only take mail that is already there: before
            // waiting for more, those are made durable and removed.
            let wait = if finished.is_empty() {
                POLL
            } else {
                Duration::ZERO
            };
            match self.context.wait(self.spool().lease(wait)) {
                Ok(Some(leased)) => {
                    self.process_leased(leased, &mut finished);
                    if finished.len() >= FINISHED_BATCH {
                        self.remove_finished(&mut finished);
                    }
                }
                Ok(None) => self.remove_finished(&mut finished),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the spool");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        self.remove_finished(&mut finished);
    }

    /// Removes finished mails from the spool, once their deliveries are durable. A mail whose
    /// spool and inbox share a transaction (a database for both) is removed in the same
    /// transaction that writes its deliveries; for the others one inbox sync serves the whole
    /// batch, then each is removed.
    fn remove_finished(&self, finished: &mut Vec<Finished>) {
        let (delivered, others): (Vec<Finished>, Vec<Finished>) = std::mem::take(finished)
            .into_iter()
            .partition(|f| !f.deliveries.is_empty());
        *finished = others;
        let calls = delivered
            .iter()
            .map(|f| (f.token.clone(), f.deliveries.clone()))
            .collect();
        let results = self.context.complete_delivered(calls);
        for (f, result) in delivered.into_iter().zip(results) {
            match result {
                Ok(true) | Err(StoreError::LeaseLost(_)) => {}
                Ok(false) => finished.push(f),
                Err(e) => {
                    // Nothing was written: the mail is delivered again, soon.
                    tracing::error!(mail = %f.token.name(), error = %e,
                        "cannot deliver and remove a finished mail; it will be retried");
                    self.retry_later(f.token, retry_delay(1));
                }
            }
        }
        if finished.is_empty() {
            return;
        }
        let deliveries: Vec<Delivery> = finished
            .iter()
            .flat_map(|f| f.deliveries.iter().copied())
            .collect();
        if let Err(e) = self.context.sync_inbox(&deliveries) {
            // Which of them failed is not known: the mails that delivered to an inbox are
            // delivered again (a duplicate at worst); the others are done.
            tracing::error!(error = %e, "cannot make deliveries durable; their mails will be retried");
            for f in std::mem::take(finished) {
                if f.deliveries.is_empty() {
                    self.complete(f.token);
                } else {
                    self.retry_later(f.token, Duration::from_secs(60));
                }
            }
            return;
        }
        for Finished { token, .. } in finished.drain(..) {
            self.complete(token);
        }
    }

    /// Removes a finished mail from the spool; should that fail, it is tried again.
    fn complete(&self, token: LeaseToken) {
        if let Err(e) = self.try_change(&token, &Change::Complete) {
            tracing::error!(mail = %token.name(), error = %e,
                "cannot remove a finished mail; trying again");
            self.add_pending(token, Change::Complete);
        }
    }

    /// Puts a leased mail back in the spool, as last stored, for another try after `delay`;
    /// should that fail, it is tried again.
    fn retry_later(&self, token: LeaseToken, delay: Duration) {
        if let Err(e) = self.try_change(&token, &Change::Requeue(delay)) {
            tracing::error!(mail = %token.name(), error = %e,
                "cannot put a mail back in the spool; trying again");
            self.add_pending(token, Change::Requeue(delay));
        }
    }

    /// Makes `change` to the mail of `token`. A lease lost meanwhile is done with: another
    /// worker has the mail.
    fn try_change(&self, token: &LeaseToken, change: &Change) -> Result<(), StoreError> {
        let result = match change {
            Change::Complete => self.context.wait(self.spool().complete(token.clone())),
            Change::Requeue(delay) => {
                match self.context.wait(self.spool().retrieve(token.name())) {
                    Ok(Some(mail)) => self.context.wait(self.spool().requeue(
                        token.clone(),
                        &mail,
                        SystemTime::now() + *delay,
                    )),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Err(StoreError::LeaseLost(_)) => Ok(()),
            other => other,
        }
    }

    fn add_pending(&self, token: LeaseToken, change: Change) {
        let held = self.leases.hold(&token);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.0.push(Pending {
            token,
            _held: held,
            change,
        });
        pending.1.get_or_insert_with(Instant::now);
    }

    /// Tries the pending changes again, at most every [`PENDING_RETRY`] (one worker at a time:
    /// the others find the list empty).
    fn retry_pending(&self) {
        let work = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            match pending.1 {
                Some(at) if at.elapsed() >= PENDING_RETRY && !pending.0.is_empty() => {
                    pending.1 = Some(Instant::now());
                    std::mem::take(&mut pending.0)
                }
                _ => return,
            }
        };
        let mut left = Vec::new();
        for p in work {
            match self.try_change(&p.token, &p.change) {
                Ok(()) => tracing::info!(mail = %p.token.name(), "pending spool change done"),
                Err(_) => left.push(p),
            }
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.0.extend(left);
    }

    /// Processes one leased spool mail until it leaves this worker: finished (and removed
    /// from the spool once its deliveries are durable), or kept in the spool for another try.
    pub fn process(&self, leased: Leased) {
        let mut finished = Vec::new();
        self.process_leased(leased, &mut finished);
        self.remove_finished(&mut finished);
    }

    /// Runs a leased mail; a finished one joins `finished`.
    fn process_leased(&self, Leased { mut mail, token }: Leased, finished: &mut Vec<Finished>) {
        let name = mail.name().to_string();
        let processor = mail.state().to_string();
        let step = self.resume_step(&mut mail);
        let held = self.leases.hold(&token);
        let result = self.run(mail, processor, step, Some(&token));
        // What this mail delivered and did not make durable yet (a hop syncs what came before).
        let deliveries = take_deliveries();
        match result {
            Ok(()) => {
                self.failures().remove(&name);
                finished.push(Finished {
                    token,
                    _held: held,
                    deliveries,
                });
            }
            Err(Stopped::Storage(e)) => {
                // The mail runs again from what is stored: what it delivered and did not make
                // durable is delivered again then (a database inbox holds it till then).
                self.context.forget_inbox(&deliveries);
                // Storage is failing (a full disk, say): retry later, less and less often,
                // rather than re-running the mailets every second.
                let attempts = {
                    let mut failures = self.failures();
                    let n = failures.entry(name.clone()).or_insert(0);
                    *n += 1;
                    *n
                };
                let delay = retry_delay(attempts);
                tracing::error!(mail = %name, error = %e, attempts, retry_in = ?delay,
                    "spool storage failed; will retry");
                self.retry_later(token, delay);
            }
            Err(Stopped::Retry(mail, reason)) => self.requeue(token, *mail, &reason, &deliveries),
        }
    }

    /// Keeps a mail that failed temporarily in the spool, as it is now, for another try after
    /// a backoff that grows with its failures. Its `deliveries` are made durable first: the
    /// mail stored now may have fewer recipients.
    fn requeue(&self, token: LeaseToken, mut mail: Mail, reason: &str, deliveries: &[Delivery]) {
        let attempts = count_failure(&mut mail);
        let delay = retry_delay(attempts);
        log_deferred(&mail, attempts, delay, reason);
        let kept = self.context.sync_inbox(deliveries).and_then(|()| {
            self.context.wait(
                self.spool()
                    .requeue(token.clone(), &mail, SystemTime::now() + delay),
            )
        });
        if let Err(e) = kept {
            tracing::error!(mail = %mail.name(), error = %e,
                "cannot keep the mail as it is now; it is retried as last stored");
            self.retry_later(token, delay);
        }
    }

    /// Where a mail kept for another try resumes in its processor (0: at the start), taking
    /// the mark off. A mark that no longer names the same step starts the processor again.
    fn resume_step(&self, mail: &mut Mail) -> usize {
        let Some(AttributeValue::String(mark)) = mail.envelope.attributes.remove(RESUME_STEP)
        else {
            return 0;
        };
        let Some((index, label)) = mark.split_once(' ') else {
            return 0;
        };
        let index: usize = index.parse().unwrap_or(0);
        let steps = self.tree.get(mail.state()).map(|p| &p.steps);
        match steps.and_then(|steps| steps.get(index)) {
            Some(step) if step.label == label => index,
            _ => {
                tracing::warn!(mail = %mail.name(), step = %mark,
                    "the step to resume at is no longer there; the processor starts again");
                0
            }
        }
    }

    /// Keeps a split copy that failed temporarily: stored as a spool mail of its own, which a
    /// worker takes up again (and, should it fail again, requeues with a backoff).
    fn keep_copy(&self, mut copy: Mail, reason: &str) -> Result<(), StoreError> {
        let attempts = count_failure(&mut copy);
        // Due at once: a worker takes it up again, and requeues it with a backoff should it
        // fail again.
        log_deferred(&copy, attempts, Duration::ZERO, reason);
        self.context.wait(self.spool().store(&copy))
    }

    /// Runs a mail from `step` of `processor` until it leaves processing (`Ok`: ghosted, no
    /// recipients left, the end of its processor; a split copy also when it is stored as a
    /// spool mail of its own). `lease` is the spool lease of a leased mail, `None` for a split
    /// copy held only in memory.
    fn run(
        &self,
        mut mail: Mail,
        mut processor: String,
        mut step: usize,
        lease: Option<&LeaseToken>,
    ) -> Result<(), Stopped> {
        let ctx: &dyn MailetContext = &*self.context;
        loop {
            if mail.state() == state::GHOST {
                return Ok(());
            }
            if mail.state() != processor || self.tree.get(&processor).is_none() {
                if self.tree.get(mail.state()).is_none() {
                    let unknown = mail.state().to_string();
                    if processor == state::ERROR {
                        let reason = format!(
                            "the error processor sent the mail to an unknown processor {unknown}"
                        );
                        return Err(Stopped::retry(mail, &processor, None, reason));
                    }
                    tracing::warn!(mail = %mail.name(), processor = %unknown, "unknown processor");
                    mail.envelope.error_message = Some(format!("Unknown processor {unknown}"));
                    mail.set_state(state::ERROR);
                }
                // Inbox deliveries are made durable in batches, before the spool forgets a
                // mail. A hop is such a moment too: the mail stored now may have fewer
                // recipients than before (split copies delivered them), so their deliveries
                // must be durable first.
                self.context.sync_inbox(&take_deliveries())?;
                mail.envelope.touch();
                // Moving on: a later failure starts its backoff afresh.
                mail.envelope.attributes.remove(TEMPORARY_FAILURES);
                let Some(token) = lease else {
                    // A split copy: from now on it is a spool mail of its own.
                    self.context.wait(self.spool().store(&mail))?;
                    return Ok(());
                };
                self.context.wait(self.spool().update(token, &mail))?;
                processor = mail.state().to_string();
                step = 0;
            }
            if mail.recipients().is_empty() {
                tracing::debug!(mail = %mail.name(), "no recipients left");
                return Ok(());
            }
            let Some(current) = self.tree.get(&processor).and_then(|p| p.steps.get(step)) else {
                if processor != state::ERROR {
                    let reason = format!(
                        "reached the end of its processor {processor}; \
                         this may be a configuration error"
                    );
                    for rcpt in mail.recipients() {
                        let line = Outcome::new(mail.name(), rcpt, Status::Dropped)
                            .field("reason", &reason);
                        tracing::warn!("{line}");
                    }
                }
                return Ok(());
            };
            step += 1;

            let matched = match guarded(|| current.matcher.matches(&mail, ctx)) {
                Ok(matched) => own_recipients(&mail, matched),
                Err(e) if e.is_temporary() => {
                    let reason = format!("matcher {} failed: {e}", current.label);
                    return Err(Stopped::retry(
                        mail,
                        &processor,
                        Some((step - 1, current)),
                        reason,
                    ));
                }
                Err(e) => {
                    let target = match &current.on_match_error {
                        OnMatchError::NoMatch => None,
                        OnMatchError::MatchAll => Some(Ok(mail.recipients().to_vec())),
                        OnMatchError::Error => Some(Err(state::ERROR)),
                        OnMatchError::Processor(target) => Some(Err(target.as_str())),
                    };
                    match target {
                        None => Vec::new(),
                        Some(Ok(all)) => all,
                        Some(Err(target)) => {
                            if let Err(reason) =
                                fail(&mut mail, &processor, current, "matcher", &e, target)
                            {
                                return Err(Stopped::retry(
                                    mail,
                                    &processor,
                                    Some((step - 1, current)),
                                    reason,
                                ));
                            }
                            continue;
                        }
                    }
                }
            };
            if matched.is_empty() {
                continue;
            }
            if matched.len() < mail.recipients().len() {
                let taken: std::collections::HashSet<&MailAddress> = matched.iter().collect();
                let rest = mail
                    .recipients()
                    .iter()
                    .filter(|r| !taken.contains(r))
                    .cloned()
                    .collect();
                let mut copy = mail.split_off(derived_mail_name(mail.name()), matched);
                // The copy delivers before its parent's next state is stored: should that
                // store fail (or the node crash), the parent runs again and splits again, and
                // this key, the same at every run, lets a database inbox know the delivery.
                copy.set_delivery_key(&format!("{} {processor}/{step}", mail.delivery_key()));
                mail.set_recipients(rest);
                let outcome = match service(current, &mut copy, &processor, ctx) {
                    Ok(()) => self.run(copy, processor.clone(), step, None),
                    Err(reason) => Err(Stopped::retry(
                        copy,
                        &processor,
                        Some((step - 1, current)),
                        reason,
                    )),
                };
                match outcome {
                    Ok(()) => {}
                    Err(Stopped::Retry(copy, reason)) => self.keep_copy(*copy, &reason)?,
                    Err(stopped) => return Err(stopped),
                }
            } else if let Err(reason) = service(current, &mut mail, &processor, ctx) {
                return Err(Stopped::retry(
                    mail,
                    &processor,
                    Some((step - 1, current)),
                    reason,
                ));
            }
        }
    }
}

/// One `status=deferred` line per recipient of a mail kept for another try.
fn log_deferred(mail: &Mail, attempts: u32, delay: Duration, reason: &str) {
    for rcpt in mail.recipients() {
        let line = Outcome::new(mail.name(), rcpt, Status::Deferred)
            .field("processor", mail.state())
            .field("attempts", attempts)
            .field("retry_in", format_args!("{}s", delay.as_secs()))
            .field("reason", reason);
        tracing::warn!("{line}");
    }
}

/// Runs a matcher or mailet call, turning a panic into an error so that one bad mailet cannot
/// take a worker down.
fn guarded<T>(call: impl FnOnce() -> Result<T, MailetError>) -> Result<T, MailetError> {
    catch_unwind(AssertUnwindSafe(call))
        .unwrap_or_else(|_| Err(MailetError::new("panicked (see the log)")))
}

/// The matched recipients that really are the mail's, each once, in the mail's order.
fn own_recipients(mail: &Mail, matched: Vec<MailAddress>) -> Vec<MailAddress> {
    // A set, not a scan per recipient: a mail may have tens of thousands of them.
    let matched: std::collections::HashSet<MailAddress> = matched.into_iter().collect();
    mail.recipients()
        .iter()
        .filter(|r| matched.contains(*r))
        .cloned()
        .collect()
}

/// Runs the mailet of `current`, applying `onMailetException` when it fails permanently.
/// `Err` carries the reason to keep the mail for another try: the failure was temporary, or
/// happened inside `error`.
fn service(
    current: &Step,
    mail: &mut Mail,
    processor: &str,
    ctx: &dyn MailetContext,
) -> Result<(), String> {
    let Err(e) = guarded(|| current.mailet.service(mail, ctx)) else {
        return Ok(());
    };
    if e.is_temporary() {
        return Err(format!("mailet {} failed: {e}", current.label));
    }
    match &current.on_mailet_error {
        OnMailetError::Ignore => {
            tracing::warn!(mail = %mail.name(), step = %current.label, error = %e,
                "mailet failed; ignored as configured");
            Ok(())
        }
        OnMailetError::Error => fail(mail, processor, current, "mailet", &e, state::ERROR),
        OnMailetError::Processor(target) => fail(mail, processor, current, "mailet", &e, target),
    }
}

/// Records a permanent failure on the mail and moves it to `target`. Inside `error` there is
/// nowhere left to go: `Err` carries the reason to keep the mail for another try instead, so
/// that it neither loops nor is lost.
fn fail(
    mail: &mut Mail,
    processor: &str,
    current: &Step,
    what: &str,
    error: &MailetError,
    target: &str,
) -> Result<(), String> {
    let message = format!("{what} {} failed: {error}", current.label);
    if processor == state::ERROR {
        return Err(format!("in the error processor, {message}"));
    }
    tracing::warn!(mail = %mail.name(), %processor, %message, to = %target, "moving mail");
    mail.envelope.error_message = Some(message);
    mail.set_state(target);
    Ok(())
}

/// Counts one more temporary failure on the mail; returns the count.
fn count_failure(mail: &mut Mail) -> u32 {
    let attempts = match mail.attribute(TEMPORARY_FAILURES) {
        Some(AttributeValue::Number(n)) if *n >= 0.0 => *n as u32 + 1,
        _ => 1,
    };
    mail.set_attribute(TEMPORARY_FAILURES, AttributeValue::Number(attempts.into()));
    attempts
}
