//! The access log: one line per request, formatted on the shard into the
//! shard's own buffer ([`ShardLog`]) and written to the file (or stdout) by
//! one writer thread — no shard ever does file I/O.
//!
//! A shard hands its buffer to the writer from a timer task every
//! [`FLUSH_EVERY`] (never from a request's task) over a bounded crossbeam
//! channel, with `try_send`: if the writer falls behind, the shard keeps
//! buffering, up to [`MAX_BUFFERED`] bytes; past that it drops lines and
//! counts them (`shardproxy_access_log_dropped_lines_total`) rather than
//! growing without bound or blocking. SIGUSR1 reaches the control thread,
//! which tells the writer to reopen the file (rotation: logrotate moves the
//! file, then signals; lines buffered at that moment go to the new file).
//!
//! Per request the shard allocates nothing: the request's text is captured
//! into buffers the shard hands round ([`ShardLog::capture`]), and the
//! writer sends the batch buffers it has written back (up to [`SPARES`] of
//! them, each at most [`MAX_SPARE`] bytes), so a busy shard refills warm
//! memory instead of growing a new batch from nothing every flush.

mod line;
mod text;
mod time;

use std::{
    cell::{Cell, RefCell},
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::{
    config::{AccessFormat, AccessTarget},
    http::head::RequestHead,
};
pub use line::{Entry, RequestText};
use time::Civil;

/// How often a shard hands its lines to the writer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Most bytes a shard keeps while the writer is behind; past it lines are dropped.
const MAX_BUFFERED: usize = 8 << 20;
/// Chunks queued for the writer (from all shards).
const QUEUE: usize = 1024;
/// Written batch buffers the writer keeps for the shards to reuse.
const SPARES: usize = 4;
/// A bigger batch buffer is freed rather than kept (at most 16 MiB kept).
const MAX_SPARE: usize = 4 << 20;
/// Request text buffers a shard keeps for reuse (a few hundred bytes each).
const TEXT_SPARES: usize = 256;
/// A request text buffer bigger than this (a huge target) is not kept.
const MAX_TEXT_SPARE: usize = 4 << 10;

/// What the writer thread is sent.
pub enum LogMessage {
    /// Complete lines from one shard.
    Lines(Vec<u8>),
    /// Reopen the file at its path (after rotation).
    Reopen,
}

/// The writer thread and the way to reach it.
pub struct LogWriter {
    pub sender: Sender<LogMessage>,
    pub thread: JoinHandle<()>,
    /// Written batch buffers, back for the shards to refill.
    spares: Receiver<Vec<u8>>,
}

impl LogWriter {
    /// What a shard needs to reach the writer.
    pub fn link(&self) -> LogLink {
        LogLink {
            sender: self.sender.clone(),
            spares: self.spares.clone(),
        }
    }
}

/// A shard's two channels to the writer: lines out, empty buffers back.
#[derive(Clone)]
pub struct LogLink {
    sender: Sender<LogMessage>,
    spares: Receiver<Vec<u8>>,
}

/// Opens the log and starts its writer; `None` when the log is off.
pub fn start(target: &AccessTarget) -> Result<Option<LogWriter>, String> {
    let sink = match target {
        AccessTarget::Off => return Ok(None),
        AccessTarget::Stdout => Sink::Stdout,
        AccessTarget::File(path) => Sink::File(path.clone(), open(path)?),
    };
    let (sender, receiver) = bounded(QUEUE);
    let (spare_tx, spares) = bounded(SPARES);
    let thread = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || write_until_closed(sink, receiver, spare_tx))
        .map_err(|e| format!("cannot start the access log writer: {e}"))?;
    Ok(Some(LogWriter {
        sender,
        thread,
        spares,
    }))
}

enum Sink {
    Stdout,
    File(PathBuf, File),
}

fn open(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open access log {}: {e}", path.display()))
}

/// The writer thread: writes chunks in arrival order until every sender is
/// gone, and hands the emptied buffers back (when there is room).
fn write_until_closed(mut sink: Sink, receiver: Receiver<LogMessage>, spares: Sender<Vec<u8>>) {
    for message in receiver {
        match (message, &mut sink) {
            (LogMessage::Lines(mut lines), sink) => {
                let written = match sink {
                    Sink::Stdout => std::io::stdout().lock().write_all(&lines),
                    Sink::File(_, file) => file.write_all(&lines),
                };
                if let (Err(e), Sink::File(path, _)) = (written, &sink) {
                    log::error!("access log {}: {e}", path.display());
                }
                if lines.capacity() <= MAX_SPARE {
                    lines.clear();
                    let _ = spares.try_send(lines);
                }
            }
            (LogMessage::Reopen, Sink::File(path, file)) => match open(path) {
                Ok(reopened) => {
                    *file = reopened;
                    log::info!("access log {} reopened", path.display());
                }
                Err(e) => log::error!("{e}; still writing to the old file"),
            },
            (LogMessage::Reopen, Sink::Stdout) => {}
        }
    }
    let _ = std::io::stdout().flush();
}

/// One shard's side of the log: its buffer of formatted lines.
pub struct ShardLog {
    pub format: AccessFormat,
    buffer: RefCell<Vec<u8>>,
    /// The time of the last line, its date text reused within a second.
    clock: RefCell<Civil>,
    link: LogLink,
    /// Request text buffers for [`ShardLog::capture`].
    texts: RefCell<Vec<Vec<u8>>>,
    /// Lines dropped because the writer fell behind.
    pub dropped: Cell<u64>,
}

impl ShardLog {
    pub fn new(format: AccessFormat, link: LogLink) -> ShardLog {
        ShardLog {
            format,
            buffer: RefCell::new(Vec::with_capacity(64 << 10)),
            clock: RefCell::new(Civil::of(SystemTime::now())),
            link,
            texts: RefCell::new(Vec::new()),
            dropped: Cell::new(0),
        }
    }

    /// The parts of a request the log shows, copied before the phases
    /// consume the head, into a reused buffer; give it back with
    /// [`ShardLog::recycle`] once the line is written.
    pub fn capture(&self, req: &RequestHead, buf: &[u8]) -> RequestText {
        let bytes = self.texts.borrow_mut().pop().unwrap_or_default();
        RequestText::capture(req, buf, bytes)
    }

    /// Keeps a captured text's buffer for the next request.
    pub fn recycle(&self, text: RequestText) {
        let bytes = text.into_bytes();
        let mut texts = self.texts.borrow_mut();
        if texts.len() < TEXT_SPARES && bytes.capacity() <= MAX_TEXT_SPARE {
            texts.push(bytes);
        }
    }

    /// Formats one request's line into the buffer (memory only).
    pub fn record(&self, entry: &Entry<'_>) {
        let mut buffer = self.buffer.borrow_mut();
        if buffer.len() >= MAX_BUFFERED {
            self.dropped.set(self.dropped.get() + 1);
            return;
        }
        let mut clock = self.clock.borrow_mut();
        clock.update(SystemTime::now());
        line::write(&mut buffer, self.format, &clock, entry);
    }

    /// Hands the buffered lines to the writer without waiting; if its queue
    /// is full they stay here for the next flush.
    pub fn flush(&self) {
        if self.buffer.borrow().is_empty() {
            return;
        }
        // A buffer the writer has emptied, if one is back: warm memory.
        let fresh = self.link.spares.try_recv().unwrap_or_default();
        let lines = std::mem::replace(&mut *self.buffer.borrow_mut(), fresh);
        if let Err(TrySendError::Full(LogMessage::Lines(lines))) =
            self.link.sender.try_send(LogMessage::Lines(lines))
        {
            let mut buffer = self.buffer.borrow_mut();
            let newer = std::mem::replace(&mut *buffer, lines);
            buffer.extend_from_slice(&newer);
        }
    }

    /// The last flush, when the shard stops: waits (bounded) for queue room.
    pub fn flush_at_exit(&self) {
        let lines = std::mem::take(&mut *self.buffer.borrow_mut());
        if !lines.is_empty() {
            let _ = self
                .link
                .sender
                .send_timeout(LogMessage::Lines(lines), Duration::from_secs(2));
        }
    }
}
