//! Socket I/O as the proxy uses it: receive into an [`IoBuf`]'s free tail,
//! send bytes from a `Vec` or from the front of an `IoBuf`, wait until a
//! socket is readable without holding any buffer, each within a deadline.
//!
//! compio takes buffers by value; these helpers lend the caller's buffer to
//! the operation and put it back, so callers keep working with `&mut IoBuf`.
//! When a deadline passes, the operation is abandoned and its buffer with it
//! (the runtime frees it once the kernel lets go): every caller treats a
//! timeout as the end of the exchange, so nothing is lost that was still
//! needed. Shard-local; nothing here blocks.

use std::{io, sync::Arc, time::Duration};

use compio::{
    buf::IoBuf as CompioBuf,
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
    BufResult,
};

use crate::buffer::{IoBuf, ReadTail, WriteWindow};

/// Why a receive or a send did not complete.
#[derive(Debug)]
pub enum IoError {
    TimedOut,
    Io(io::Error),
}

impl From<IoError> for io::Error {
    fn from(e: IoError) -> io::Error {
        match e {
            IoError::TimedOut => io::ErrorKind::TimedOut.into(),
            IoError::Io(e) => e,
        }
    }
}

/// Receives once into `buf`'s free space. `Ok(0)`: EOF (or no free space).
pub async fn recv(stream: &TcpStream, buf: &mut IoBuf, limit: Duration) -> Result<usize, IoError> {
    if buf.make_room() == 0 {
        return Ok(0);
    }
    let lent = ReadTail(std::mem::take(buf));
    let mut reader = stream;
    match timeout(limit, reader.read(lent)).await {
        Ok(BufResult(result, ReadTail(back))) => {
            *buf = back;
            result.map_err(IoError::Io)
        }
        Err(_) => Err(IoError::TimedOut),
    }
}

/// Sends all of `bytes` (a `Vec` the caller reuses), within `limit` of silence.
pub async fn send_vec(
    stream: &TcpStream,
    bytes: &mut Vec<u8>,
    limit: Duration,
) -> Result<(), IoError> {
    let lent = std::mem::take(bytes);
    let mut writer = stream;
    match timeout(limit, writer.write_all(lent)).await {
        Ok(BufResult(result, back)) => {
            *bytes = back;
            result.map_err(IoError::Io)
        }
        Err(_) => Err(IoError::TimedOut),
    }
}

/// Sends the first `len` unconsumed bytes of `buf` and consumes them.
pub async fn send_buffered(
    stream: &TcpStream,
    buf: &mut IoBuf,
    len: usize,
    limit: Duration,
) -> Result<(), IoError> {
    if len == 0 {
        return Ok(());
    }
    let lent = WriteWindow(std::mem::take(buf), len);
    let mut writer = stream;
    match timeout(limit, writer.write_all(lent)).await {
        Ok(BufResult(result, WriteWindow(back, _))) => {
            *buf = back;
            result.map_err(IoError::Io)?;
            buf.consume(len);
            Ok(())
        }
        Err(_) => Err(IoError::TimedOut),
    }
}

/// Bytes shared with the cache, lent to a send without a copy.
struct SharedBytes(Arc<[u8]>);

impl CompioBuf for SharedBytes {
    fn as_init(&self) -> &[u8] {
        &self.0
    }
}

/// Sends a stored body straight from the cache's shared copy.
pub async fn send_shared(
    stream: &TcpStream,
    bytes: &Arc<[u8]>,
    limit: Duration,
) -> Result<(), IoError> {
    let mut writer = stream;
    match timeout(limit, writer.write_all(SharedBytes(Arc::clone(bytes)))).await {
        Ok(BufResult(result, _)) => result.map_err(IoError::Io),
        Err(_) => Err(IoError::TimedOut),
    }
}

/// Sends a static byte string (interim responses).
pub async fn send_static(
    stream: &TcpStream,
    bytes: &'static [u8],
    limit: Duration,
) -> Result<(), IoError> {
    let mut writer = stream;
    match timeout(limit, writer.write_all(bytes)).await {
        Ok(BufResult(result, _)) => result.map_err(IoError::Io),
        Err(_) => Err(IoError::TimedOut),
    }
}

/// Waits until `stream` has bytes (or EOF, or an error) to read, holding no
/// buffer meanwhile. `Ok(false)`: `limit` passed first.
pub async fn readable(stream: &TcpStream, limit: Duration) -> io::Result<bool> {
    let poll = stream.to_poll_fd()?;
    match timeout(limit, poll.read_ready()).await {
        Ok(result) => result.map(|()| true),
        Err(_) => Ok(false),
    }
}

/// Half-closes the sending side (FIN), keeping the socket open for reading.
pub async fn shutdown_write(stream: &TcpStream) {
    let mut writer = stream;
    // Failing to send FIN changes nothing for us: the socket closes on drop.
    let _ = writer.shutdown().await;
}
