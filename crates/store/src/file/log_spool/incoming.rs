//! Writing mails in: messages received by the servers ([`LogIncoming`]), small ones buffered
//! and appended to the active segment, large ones streamed into a segment of their own
//! ([`BigWriter`]); and whole mails written by `store`, `update` and `requeue`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mailroom_mailet::{Envelope, Mail};

use super::record::{envelope_json, header, segment_path, HEADER, KIND_MAIL};
use super::segments::{record_len, Segment};
use super::{lock, Content, Inner, Shared, INLINE_MAX};
use crate::blocking::IncomingMessage;
use crate::file::fsutil::{sync_dir, unique_suffix};
use crate::{LeaseToken, Result};

impl Shared {
    /// Writes a MAIL record for `mail` (small: appended; large: a segment of its own) and
    /// indexes it, if `token` (when given) still holds the lease. Returns the ticket to wait
    /// on (0 when already durable).
    pub fn write_mail(
        &self,
        mail: &Mail,
        envelope: &Envelope,
        token: Option<&LeaseToken>,
    ) -> Result<u64> {
        let size = mail.message.size();
        if size as usize <= INLINE_MAX {
            let mut message = Vec::with_capacity(size as usize);
            mail.message.reader()?.read_to_end(&mut message)?;
            let json = envelope_json(envelope)?;
            self.make_room()?;
            let mut inner =
                self.lock_for_append(record_len(mail.name(), &[&message, &json, &[0; 4]]));
            if let Some(token) = token {
                inner.queue.check(token)?;
            }
            return Ok(self.append_mail(&mut inner, mail.name(), &message, &json, envelope)?);
        }
        let mut big = BigWriter::create(&self.dir, mail.name())?;
        io::copy(&mut mail.message.reader()?, &mut big)?;
        self.commit_big(big, envelope, token)?;
        Ok(0)
    }

    /// Makes a streamed large mail durable as its own segment and indexes it, if `token`
    /// (when given) still holds the lease; else deletes it.
    pub fn commit_big(
        &self,
        big: BigWriter,
        envelope: &Envelope,
        token: Option<&LeaseToken>,
    ) -> Result<()> {
        let mut inner = lock(&self.inner);
        if let Some(token) = token {
            inner.queue.check(token)?;
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let number = inner.next_segment;
        inner.next_segment += 1;
        // Until indexed, compaction must not copy the older version with a later seq.
        inner.committing_big.insert(envelope.name.clone());
        drop(inner);
        let path = segment_path(&self.dir, number, true);
        let finished = big
            .finish(envelope, number, seq, &path)
            .and_then(|done| sync_dir(&self.dir).map(|()| done));
        let mut inner = lock(&self.inner);
        inner.committing_big.remove(&envelope.name);
        let (file, content) = finished?;
        if let Some(token) = token {
            if let Err(lost) = inner.queue.check(token) {
                // The lease expired while the message was written: take it back.
                drop(inner);
                fs::remove_file(&path)?;
                sync_dir(&self.dir)?;
                return Err(lost);
            }
        }
        inner
            .segments
            .insert(number, Segment::new(number, file, path, true));
        let content = Content {
            segment: number,
            ..content
        };
        self.index_mail(&mut inner, &envelope.name, seq, content, envelope.clone());
        Ok(())
    }
}

/// A large mail being streamed into a segment of its own: `<name>.<n>.log.tmp` holds a
/// placeholder header, the name, then the message; [`BigWriter::finish`] adds the envelope,
/// writes the real header, fsyncs and renames. Dropped unfinished, it removes its file.
pub(super) struct BigWriter {
    tmp: PathBuf,
    out: BufWriter<File>,
    name: String,
    /// CRC of the name and of the payload so far.
    crc: crc32fast::Hasher,
    payload_len: u64,
}

impl BigWriter {
    fn create(dir: &Path, name: &str) -> io::Result<BigWriter> {
        let tmp = dir.join(format!("{name}.{}.log.tmp", unique_suffix()));
        // Readable too: the finished segment is read through this very file.
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        out.write_all(&[0u8; HEADER])?;
        out.write_all(name.as_bytes())?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(name.as_bytes());
        Ok(BigWriter {
            tmp,
            out,
            name: name.to_string(),
            crc,
            payload_len: 0,
        })
    }

    /// Completes the record, makes it durable and renames it to `path`. Returns the file and
    /// where the message is in it (the segment number is the caller's to fill in).
    fn finish(
        mut self,
        envelope: &Envelope,
        segment: u64,
        seq: u64,
        path: &Path,
    ) -> io::Result<(File, Content)> {
        let message_len = self.payload_len;
        let json = envelope_json(envelope)?;
        self.write_all(&json)?;
        self.write_all(&(json.len() as u32).to_le_bytes())?;
        self.out.flush()?;
        let file = self.out.get_ref().try_clone()?;
        let h = header(
            segment,
            KIND_MAIL,
            seq,
            &self.name,
            self.payload_len,
            self.crc.clone().finalize(),
        );
        file.write_all_at(&h, 0)?;
        file.sync_all()?;
        fs::rename(&self.tmp, path)?;
        let offset = (HEADER + self.name.len()) as u64;
        Ok((
            file,
            Content {
                segment: 0,
                offset,
                len: message_len,
            },
        ))
    }
}

impl Write for BigWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.crc.update(&buf[..n]);
        self.payload_len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Drop for BigWriter {
    fn drop(&mut self) {
        // Renamed when finished; otherwise never acknowledged.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// A message being received into the spool: in memory up to [`INLINE_MAX`], then streamed
/// into a segment of its own.
pub(super) struct LogIncoming {
    shared: Arc<Shared>,
    name: String,
    buffer: Vec<u8>,
    big: Option<BigWriter>,
    /// Whether it no longer counts among the messages being received.
    counted_out: bool,
}

impl LogIncoming {
    /// A new message, counted among those being received.
    pub fn new(shared: Arc<Shared>) -> Self {
        shared.receiving.fetch_add(1, Ordering::Relaxed);
        LogIncoming {
            shared,
            name: crate::new_mail_name(),
            buffer: Vec::new(),
            big: None,
            counted_out: false,
        }
    }

    /// Counts this message out of those being received (once).
    fn stop_receiving(&mut self) {
        if !std::mem::replace(&mut self.counted_out, true) {
            self.shared.receiving.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Write for LogIncoming {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(big) = &mut self.big {
            return big.write(buf);
        }
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() > INLINE_MAX {
            let mut big = BigWriter::create(&self.shared.dir, &self.name)?;
            big.write_all(&self.buffer)?;
            self.buffer = Vec::new();
            self.big = Some(big);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.big.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Drop for LogIncoming {
    fn drop(&mut self) {
        self.stop_receiving();
    }
}

impl IncomingMessage for LogIncoming {
    fn name(&self) -> &str {
        &self.name
    }

    fn commit(mut self: Box<Self>, mut envelope: Envelope) -> Result<()> {
        envelope.name = self.name.clone();
        envelope.touch();
        let shared = self.shared.clone();
        self.stop_receiving();
        // Half the reserve may go to the mails received meanwhile, not more.
        shared.check_reserve(2)?;
        match self.big.take() {
            Some(big) => {
                envelope.size = big.payload_len;
                shared.commit_big(big, &envelope, None)?;
            }
            None => {
                envelope.size = self.buffer.len() as u64;
                let json = envelope_json(&envelope)?;
                shared.make_room()?;
                let ticket = {
                    let len = record_len(&self.name, &[&self.buffer, &json, &[0; 4]]);
                    let mut inner: std::sync::MutexGuard<'_, Inner> = shared.lock_for_append(len);
                    shared.append_mail(&mut inner, &self.name, &self.buffer, &json, &envelope)?
                };
                if let Err(e) = shared.wait_durable(ticket) {
                    shared.forget(&self.name);
                    return Err(e.into());
                }
            }
        }
        shared.enqueue(&self.name);
        Ok(())
    }
}
