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

mod line;
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

use crate::config::{AccessFormat, AccessTarget};
pub use line::{Entry, RequestText};
use time::Civil;

/// How often a shard hands its lines to the writer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Most bytes a shard keeps while the writer is behind; past it lines are dropped.
const MAX_BUFFERED: usize = 8 << 20;
/// Chunks queued for the writer (from all shards).
const QUEUE: usize = 1024;

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
}

/// Opens the log and starts its writer; `None` when the log is off.
pub fn start(target: &AccessTarget) -> Result<Option<LogWriter>, String> {
    let sink = match target {
        AccessTarget::Off => return Ok(None),
        AccessTarget::Stdout => Sink::Stdout,
        AccessTarget::File(path) => Sink::File(path.clone(), open(path)?),
    };
    let (sender, receiver) = bounded(QUEUE);
    let thread = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || write_until_closed(sink, receiver))
        .map_err(|e| format!("cannot start the access log writer: {e}"))?;
    Ok(Some(LogWriter { sender, thread }))
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

/// The writer thread: writes chunks in arrival order until every sender is gone.
fn write_until_closed(mut sink: Sink, receiver: Receiver<LogMessage>) {
    for message in receiver {
        match (message, &mut sink) {
            (LogMessage::Lines(lines), Sink::Stdout) => {
                let _ = std::io::stdout().lock().write_all(&lines);
            }
            (LogMessage::Lines(lines), Sink::File(path, file)) => {
                if let Err(e) = file.write_all(&lines) {
                    log::error!("access log {}: {e}", path.display());
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
    sender: Sender<LogMessage>,
    /// Lines dropped because the writer fell behind.
    pub dropped: Cell<u64>,
}

impl ShardLog {
    pub fn new(format: AccessFormat, sender: Sender<LogMessage>) -> ShardLog {
        ShardLog {
            format,
            buffer: RefCell::new(Vec::with_capacity(64 << 10)),
            clock: RefCell::new(Civil::of(SystemTime::now())),
            sender,
            dropped: Cell::new(0),
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
        let lines = std::mem::take(&mut *self.buffer.borrow_mut());
        if lines.is_empty() {
            return;
        }
        if let Err(TrySendError::Full(LogMessage::Lines(lines))) =
            self.sender.try_send(LogMessage::Lines(lines))
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
                .sender
                .send_timeout(LogMessage::Lines(lines), Duration::from_secs(2));
        }
    }
}
