//! [`Blocking`]: a synchronous backend ([`crate::blocking`]) served through the async traits.
//!
//! Every call runs on tokio's blocking pool (`spawn_blocking`), so the tasks that await it
//! never hold a runtime worker thread while a disk works. Streams are adapted in steps of
//! [`STEP`] octets: an incoming message is buffered and written a step at a time (a small mail
//! is written whole by its commit, with no extra hop), and a stored message is read a step at
//! a time through [`BlockingReader`].
//!
//! Threads of the server's own that may block (the SpoolManager's workers) say so with
//! [`may_block_on_this_thread`]; calls made on them run the backend inline, sparing two thread
//! wake-ups per call.

use std::future::Future;
use std::io::{self, Read, Write};
use std::mem;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use mailroom_mailet::{Envelope, Mail, Message};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::task::JoinHandle;

use crate::mappings::{Source, Target};
use crate::news::{Arrival, Article, GroupInfo, NewArticle, NewsRepository, Overview};
use crate::{
    blocking, on_blocking_pool, Delivery, InboxRepository, IncomingMessage, LeaseToken, Leased,
    MailRepository, Mailbox, MailboxMessage, MappingsRepository, MessageStream, Result,
    SpoolRepository, StoreError, User, UsersRepository,
};

/// Octets moved to or from a blocking backend per hop to the blocking pool.
const STEP: usize = 64 * 1024;

thread_local! {
    /// Whether this thread may block on a backend's I/O; see [`may_block_on_this_thread`].
    static MAY_BLOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Declares the calling thread one that may block on I/O: a worker thread of the server's own,
/// never a runtime thread. [`Blocking`] then runs the calls made on it inline instead of on the
/// blocking pool.
pub fn may_block_on_this_thread() {
    MAY_BLOCK.with(|may| may.set(true));
}

/// A synchronous repository served through the async traits. Wrap a file backend in it:
/// `Arc::new(Blocking::new(LogSpool::open(dir)?))` is an `Arc<dyn SpoolRepository>`.
pub struct Blocking<T: ?Sized>(Arc<T>);

impl<T> Blocking<T> {
    /// Serves `backend` through the async traits.
    pub fn new(backend: T) -> Self {
        Blocking(Arc::new(backend))
    }
}

impl<T: ?Sized> Blocking<T> {
    /// Serves a backend that is also used directly elsewhere.
    pub fn from_arc(backend: Arc<T>) -> Self {
        Blocking(backend)
    }

    /// The synchronous backend, for code that already runs on a blocking thread (tests, the
    /// command line before the runtime starts).
    pub fn backend(&self) -> &Arc<T> {
        &self.0
    }
}

impl<T: ?Sized + Send + Sync + 'static> Blocking<T> {
    /// Runs `call` on the backend on the blocking pool, or inline on a thread that may block.
    async fn run<R: Send + 'static>(
        &self,
        call: impl FnOnce(&T) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        if MAY_BLOCK.with(std::cell::Cell::get) {
            // As on the pool, a panic in the backend is an error, not the end of the thread.
            return std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(&self.0)))
                .unwrap_or_else(|_| Err(StoreError::Io(io::Error::other("the backend panicked"))));
        }
        let backend = self.0.clone();
        on_blocking_pool(move || call(&backend)).await?
    }
}

#[async_trait]
impl<T: ?Sized + blocking::MailRepository + 'static> MailRepository for Blocking<T> {
    async fn store(&self, mail: &Mail) -> Result<()> {
        let mail = mail.clone();
        self.run(move |b| b.store(&mail)).await
    }

    async fn retrieve(&self, name: &str) -> Result<Option<Mail>> {
        let name = name.to_string();
        self.run(move |b| b.retrieve(&name)).await
    }

    async fn remove(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.run(move |b| b.remove(&name)).await
    }

    async fn list(&self) -> Result<Vec<String>> {
        self.run(|b| b.list()).await
    }

    async fn incoming(&self) -> Result<Box<dyn IncomingMessage>> {
        // No I/O by contract: called here, without a hop to the pool.
        let inner = self.0.incoming()?;
        Ok(Box::new(BlockingIncoming {
            name: inner.name().to_string(),
            inner: Some(inner),
            buffer: Vec::new(),
        }))
    }
}

#[async_trait]
impl<T: ?Sized + blocking::SpoolRepository + 'static> SpoolRepository for Blocking<T> {
    async fn lease(&self, wait: Duration) -> Result<Option<Leased>> {
        self.run(move |b| b.lease(wait)).await
    }

    async fn renew(&self, token: &LeaseToken) -> Result<LeaseToken> {
        let token = token.clone();
        self.run(move |b| b.renew(&token)).await
    }

    async fn update(&self, token: &LeaseToken, mail: &Mail) -> Result<()> {
        let (token, mail) = (token.clone(), mail.clone());
        self.run(move |b| b.update(&token, &mail)).await
    }

    async fn release(&self, token: LeaseToken) -> Result<()> {
        self.run(move |b| b.release(token)).await
    }

    async fn requeue(
        &self,
        token: LeaseToken,
        mail: &Mail,
        next_attempt_at: SystemTime,
    ) -> Result<()> {
        let mail = mail.clone();
        self.run(move |b| b.requeue(token, &mail, next_attempt_at))
            .await
    }

    async fn complete(&self, token: LeaseToken) -> Result<()> {
        self.run(move |b| b.complete(token)).await
    }

    async fn next_attempt(&self, name: &str) -> Result<Option<SystemTime>> {
        let name = name.to_string();
        self.run(move |b| b.next_attempt(&name)).await
    }

    async fn make_due(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.run(move |b| b.make_due(&name)).await
    }

    async fn room_for(&self, size: u64) -> Result<()> {
        // A `statvfs`, as `incoming` makes: called here, without a hop to the pool (a hop per
        // received mail cost ingest 8 %).
        self.0.room_for(size)
    }
}

#[async_trait]
impl<T: ?Sized + blocking::InboxRepository + 'static> InboxRepository for Blocking<T> {
    async fn deliver(
        &self,
        user: &str,
        trace_header: &[u8],
        message: &Message,
    ) -> Result<Delivery> {
        let (user, trace_header, message) =
            (user.to_string(), trace_header.to_vec(), message.clone());
        self.run(move |b| b.deliver(&user, &trace_header, &message))
            .await
    }

    async fn sync(&self, deliveries: &[Delivery]) -> Result<()> {
        let deliveries = deliveries.to_vec();
        self.run(move |b| b.sync(&deliveries)).await
    }

    fn location(&self, user: &str) -> Option<String> {
        self.0.location(user)
    }

    async fn size(&self, user: &str) -> Result<u64> {
        let user = user.to_string();
        self.run(move |b| b.size(&user)).await
    }

    async fn import(&self, user: &str, uid: &str, message: &Message) -> Result<bool> {
        let (user, uid, message) = (user.to_string(), uid.to_string(), message.clone());
        self.run(move |b| b.import(&user, &uid, &message)).await
    }

    async fn open_mailbox(&self, user: &str) -> Result<Box<dyn Mailbox>> {
        let user = user.to_string();
        let inner = self.run(move |b| b.open_mailbox(&user)).await?;
        Ok(Box::new(BlockingMailbox {
            messages: inner.messages().to_vec(),
            inner: Arc::new(Mutex::new(inner)),
            ahead: Mutex::default(),
        }))
    }
}

#[async_trait]
impl<T: ?Sized + blocking::UsersRepository + 'static> UsersRepository for Blocking<T> {
    async fn add(&self, user: &User) -> Result<()> {
        let user = user.clone();
        self.run(move |b| b.add(&user)).await
    }

    async fn get(&self, name: &str) -> Result<Option<User>> {
        let name = name.to_string();
        self.run(move |b| b.get(&name)).await
    }

    async fn update(&self, user: &User) -> Result<()> {
        let user = user.clone();
        self.run(move |b| b.update(&user)).await
    }

    async fn remove(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.run(move |b| b.remove(&name)).await
    }

    async fn list(&self) -> Result<Vec<String>> {
        self.run(|b| b.list()).await
    }

    async fn count(&self) -> Result<usize> {
        self.run(|b| b.count()).await
    }

    async fn replace_password_hash(&self, name: &str, old: &str, new: String) -> Result<bool> {
        let (name, old) = (name.to_string(), old.to_string());
        self.run(move |b| b.replace_password_hash(&name, &old, new))
            .await
    }
}

#[async_trait]
impl<T: ?Sized + blocking::NewsRepository + 'static> NewsRepository for Blocking<T> {
    async fn groups(&self) -> Result<Vec<GroupInfo>> {
        self.run(|b| b.groups()).await
    }

    async fn group(&self, name: &str) -> Result<Option<GroupInfo>> {
        let name = name.to_string();
        self.run(move |b| b.group(&name)).await
    }

    async fn create_group(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.run(move |b| b.create_group(&name)).await
    }

    async fn remove_group(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.run(move |b| b.remove_group(&name)).await
    }

    async fn post(&self, article: &NewArticle) -> Result<Vec<(String, u64)>> {
        let article = article.clone();
        self.run(move |b| b.post(&article)).await
    }

    async fn article(&self, group: &str, number: u64) -> Result<Option<Article>> {
        let group = group.to_string();
        self.run(move |b| b.article(&group, number)).await
    }

    async fn article_by_id(&self, message_id: &str) -> Result<Option<Article>> {
        let id = message_id.to_string();
        self.run(move |b| b.article_by_id(&id)).await
    }

    async fn locate(&self, message_id: &str) -> Result<Option<Vec<(String, u64)>>> {
        let id = message_id.to_string();
        self.run(move |b| b.locate(&id)).await
    }

    async fn numbers(&self, group: &str, low: u64, high: u64) -> Result<Vec<u64>> {
        let group = group.to_string();
        self.run(move |b| b.numbers(&group, low, high)).await
    }

    async fn overview(&self, group: &str, low: u64, high: u64) -> Result<Vec<Overview>> {
        let group = group.to_string();
        self.run(move |b| b.overview(&group, low, high)).await
    }

    async fn arrived_since(&self, since: SystemTime) -> Result<Vec<Arrival>> {
        self.run(move |b| b.arrived_since(since)).await
    }

    async fn remove_article(&self, message_id: &str) -> Result<bool> {
        let id = message_id.to_string();
        self.run(move |b| b.remove_article(&id)).await
    }

    async fn expire(&self, group: &str, before: SystemTime) -> Result<u64> {
        let group = group.to_string();
        self.run(move |b| b.expire(&group, before)).await
    }
}

#[async_trait]
impl<T: ?Sized + blocking::MappingsRepository + 'static> MappingsRepository for Blocking<T> {
    async fn add(&self, table: &str, source: &Source, target: &Target) -> Result<bool> {
        let (table, source, target) = (table.to_string(), source.clone(), target.clone());
        self.run(move |b| b.add(&table, &source, &target)).await
    }

    async fn remove(&self, table: &str, source: &Source, target: &Target) -> Result<bool> {
        let (table, source, target) = (table.to_string(), source.clone(), target.clone());
        self.run(move |b| b.remove(&table, &source, &target)).await
    }

    async fn get(&self, table: &str, source: &Source) -> Result<Vec<Target>> {
        let (table, source) = (table.to_string(), source.clone());
        self.run(move |b| b.get(&table, &source)).await
    }

    async fn all(&self, table: &str) -> Result<Vec<(Source, Vec<Target>)>> {
        let table = table.to_string();
        self.run(move |b| b.all(&table)).await
    }
}

/// An incoming message of a blocking backend: octets are buffered and handed to the backend a
/// [`STEP`] at a time on the blocking pool.
struct BlockingIncoming {
    name: String,
    /// `None` once a write on the pool failed to come back (the task panicked).
    inner: Option<Box<dyn blocking::IncomingMessage>>,
    /// Octets not yet written to the backend.
    buffer: Vec<u8>,
}

fn lost() -> io::Error {
    io::Error::other("the message was lost by a failed write")
}

impl BlockingIncoming {
    /// Writes the buffer to the backend on the blocking pool.
    async fn write_buffer(&mut self) -> io::Result<()> {
        let mut inner = self.inner.take().ok_or_else(lost)?;
        let buffer = mem::take(&mut self.buffer);
        let (inner, mut buffer, result) = tokio::task::spawn_blocking(move || {
            let result = inner.write_all(&buffer);
            (inner, buffer, result)
        })
        .await
        .map_err(io::Error::other)?;
        buffer.clear();
        self.inner = Some(inner);
        self.buffer = buffer;
        result
    }
}

#[async_trait]
impl IncomingMessage for BlockingIncoming {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, octets: &[u8]) -> io::Result<()> {
        self.buffer.extend_from_slice(octets);
        if self.buffer.len() >= STEP {
            self.write_buffer().await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>, envelope: Envelope) -> Result<()> {
        let mut inner = self.inner.take().ok_or_else(lost)?;
        let buffer = mem::take(&mut self.buffer);
        on_blocking_pool(move || {
            inner.write_all(&buffer)?;
            inner.flush()?;
            inner.commit(envelope)
        })
        .await?
    }
}

impl Drop for BlockingIncoming {
    /// Discarding an uncommitted message may remove files: done on the blocking pool too.
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || drop(inner))),
                Err(_) => drop(inner),
            }
        }
    }
}

/// The most octets of small messages a mailbox reads ahead in one hop.
const READ_AHEAD: usize = 128 * 1024;

/// A mailbox of a blocking backend.
struct BlockingMailbox {
    /// The snapshot, copied so that listing needs no hop to the pool.
    messages: Vec<MailboxMessage>,
    inner: Arc<Mutex<Box<dyn blocking::Mailbox>>>,
    /// Small messages read whole, by index: the one opened last (a client often reads one
    /// message twice, TOP then RETR) and those after it (clients read in order), up to
    /// [`READ_AHEAD`] octets, so that most opens need no hop to the pool.
    ahead: Mutex<Vec<(usize, Arc<[u8]>)>>,
}

impl BlockingMailbox {
    async fn run<R: Send + 'static>(
        &self,
        call: impl FnOnce(&mut dyn blocking::Mailbox) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let inner = self.inner.clone();
        on_blocking_pool(move || {
            let mut mailbox = inner.lock().unwrap_or_else(|p| p.into_inner());
            call(&mut **mailbox)
        })
        .await?
    }
}

#[async_trait]
impl Mailbox for BlockingMailbox {
    fn messages(&self) -> &[MailboxMessage] {
        &self.messages
    }

    async fn open_message(&self, index: usize) -> Result<MessageStream> {
        let read_before = {
            let read = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
            read.iter()
                .find(|(i, _)| *i == index)
                .map(|(_, whole)| whole.clone())
        };
        if let Some(whole) = read_before {
            return Ok(Box::new(io::Cursor::new(whole)));
        }
        // Opened and its first step read in one hop; a small message is read whole, with the
        // small ones after it.
        let mut budget = READ_AHEAD as u64;
        let next: Vec<(usize, u64)> = (index + 1..self.messages.len())
            .map(|i| (i, self.messages[i].size))
            .take_while(|&(_, size)| {
                let fits = size <= budget;
                budget = budget.saturating_sub(size);
                fits
            })
            .collect();
        let (first, ahead) = self
            .run(move |m| {
                let first = BlockingReader::read_ahead(m.open_message(index)?)?;
                let ahead = match first.whole() {
                    Some(whole) => read_ahead(m, whole.len(), &next),
                    None => Vec::new(),
                };
                Ok((first, ahead))
            })
            .await?;
        let Some(whole) = first.whole() else {
            return Ok(Box::new(first));
        };
        let whole: Arc<[u8]> = whole.into();
        let mut read = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        *read = ahead;
        read.push((index, whole.clone()));
        Ok(Box::new(io::Cursor::new(whole)))
    }

    async fn delete(&mut self, indexes: &[usize]) -> Result<()> {
        let indexes = indexes.to_vec();
        self.run(move |m| m.delete(&indexes)).await
    }
}

/// Reads the small messages of `next` (index, size with CRLF line ends) in order, while they
/// fit in what is left of [`READ_AHEAD`] after `used` octets. One that cannot be read is
/// left for its own open to report.
fn read_ahead(
    mailbox: &mut dyn blocking::Mailbox,
    mut used: usize,
    next: &[(usize, u64)],
) -> Vec<(usize, Arc<[u8]>)> {
    let mut ahead = Vec::new();
    for &(index, size) in next {
        // The CRLF size bounds the stored size from above.
        let Ok(size) = usize::try_from(size) else {
            break;
        };
        if used + size > READ_AHEAD {
            break;
        }
        let mut whole = Vec::with_capacity(size);
        let read = mailbox
            .open_message(index)
            .map_err(io::Error::other)
            .and_then(|r| r.take(size as u64 + 1).read_to_end(&mut whole));
        if read.is_err() || whole.len() > size {
            break;
        }
        used += whole.len();
        ahead.push((index, whole.into()));
    }
    ahead
}

/// What a read on the blocking pool gives back: the reader, the buffer, and what [`fill`] says.
type ReadTask = JoinHandle<(Box<dyn Read + Send>, Vec<u8>, io::Result<Filled>)>;

/// An [`AsyncRead`] over a blocking [`Read`]: each step of up to [`STEP`] octets is read on the
/// blocking pool, then handed out from memory. A message no larger than a step costs one hop
/// when opened with [`BlockingReader::read_ahead`], and none after.
pub struct BlockingReader {
    /// `None` while a read is on the pool, after the end, or after a read failed to come back.
    reader: Option<Box<dyn Read + Send>>,
    buffer: Vec<u8>,
    /// The octets of `buffer` not yet handed out: `buffer[pos..len]`.
    pos: usize,
    len: usize,
    pending: Option<ReadTask>,
    /// The reader has no more octets: once `buffer` is handed out, the stream ends.
    eof: bool,
}

/// What one step read.
struct Filled {
    len: usize,
    /// The reader said it has no more.
    end: bool,
}

impl BlockingReader {
    /// Reads `reader` on the blocking pool, a step at a time from the first read on.
    pub fn new(reader: Box<dyn Read + Send>) -> Self {
        BlockingReader {
            reader: Some(reader),
            buffer: Vec::new(),
            pos: 0,
            len: 0,
            pending: None,
            eof: false,
        }
    }

    /// Reads the first step of `reader` at once: for a caller that may block (on the blocking
    /// pool already), so that a small message needs no further hop.
    pub fn read_ahead(mut reader: Box<dyn Read + Send>) -> io::Result<Self> {
        let mut buffer = vec![0; STEP];
        let filled = fill(&mut *reader, &mut buffer)?;
        let mut ahead = BlockingReader::new(reader);
        ahead.took(None, buffer, filled);
        Ok(ahead)
    }

    /// The whole stream, when it was read whole already (a message of at most one step read
    /// with [`BlockingReader::read_ahead`]).
    fn whole(&self) -> Option<&[u8]> {
        (self.eof && self.pos == 0).then(|| &self.buffer[..self.len])
    }

    /// Takes a step read into `buffer`; the reader is kept unless it has ended.
    fn took(&mut self, reader: Option<Box<dyn Read + Send>>, buffer: Vec<u8>, filled: Filled) {
        if let Some(reader) = reader {
            self.reader = Some(reader);
        }
        self.buffer = buffer;
        (self.pos, self.len) = (0, filled.len);
        if filled.end {
            self.eof = true;
            self.reader = None;
        }
    }
}

/// Reads until `buffer` is full or the end: fewer hops for readers that return short counts.
fn fill(reader: &mut dyn Read, buffer: &mut [u8]) -> io::Result<Filled> {
    let mut len = 0;
    while len < buffer.len() {
        match reader.read(&mut buffer[len..]) {
            Ok(0) => return Ok(Filled { len, end: true }),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // What was read is handed out first; the error comes again on the next read.
            Err(_) if len > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(Filled { len, end: false })
}

impl AsyncRead for BlockingReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.len {
                let n = out.remaining().min(this.len - this.pos);
                out.put_slice(&this.buffer[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if let Some(task) = &mut this.pending {
                let (reader, buffer, filled) =
                    ready!(Pin::new(task).poll(cx)).map_err(io::Error::other)?;
                this.pending = None;
                match filled {
                    Ok(filled) => this.took(Some(reader), buffer, filled),
                    Err(e) => {
                        this.reader = Some(reader);
                        this.buffer = buffer;
                        return Poll::Ready(Err(e));
                    }
                }
                continue;
            }
            let mut reader = this.reader.take().ok_or_else(lost)?;
            let mut buffer = mem::take(&mut this.buffer);
            buffer.resize(STEP, 0);
            this.pending = Some(tokio::task::spawn_blocking(move || {
                let filled = fill(&mut *reader, &mut buffer);
                (reader, buffer, filled)
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Hands out one octet per read, then fails or ends.
    struct Trickle(Vec<u8>, bool);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return if self.1 {
                    Err(io::Error::other("broken"))
                } else {
                    Ok(0)
                };
            }
            buf[0] = self.0.remove(0);
            Ok(1)
        }
    }

    #[tokio::test]
    async fn reads_everything_in_steps() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut reader = BlockingReader::new(Box::new(io::Cursor::new(data.clone())));
        let mut back = Vec::new();
        reader.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, data);
    }

    #[tokio::test]
    async fn short_reads_are_gathered_and_errors_come_after_the_data() {
        let mut reader = BlockingReader::new(Box::new(Trickle(b"abc".to_vec(), true)));
        let mut buf = [0u8; 10];
        assert_eq!(reader.read(&mut buf).await.unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        assert!(reader.read(&mut buf).await.is_err());
    }

    #[tokio::test]
    async fn read_ahead_hands_out_the_first_step_then_the_rest_and_the_errors() {
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        let mut reader =
            BlockingReader::read_ahead(Box::new(io::Cursor::new(data.clone()))).unwrap();
        assert_eq!(reader.len, STEP);
        let mut back = Vec::new();
        reader.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, data);

        let mut small =
            BlockingReader::read_ahead(Box::new(io::Cursor::new(b"small".to_vec()))).unwrap();
        assert!(
            small.eof && small.reader.is_none(),
            "a small message is read whole"
        );
        let mut back = Vec::new();
        small.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"small");

        // An error after some octets is not taken for the end.
        let mut broken =
            BlockingReader::read_ahead(Box::new(Trickle(b"ab".to_vec(), true))).unwrap();
        let mut buf = [0u8; 10];
        assert_eq!(broken.read(&mut buf).await.unwrap(), 2);
        assert!(broken.read(&mut buf).await.is_err());
    }
}
