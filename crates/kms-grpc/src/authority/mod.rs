//! Accepting the `:authority` that gRPC clients send over a Unix socket.
//!
//! h2 (0.4) refuses any `:authority` that is not a URI authority and resets the stream with
//! PROTOCOL_ERROR before our services run. Over a Unix socket real clients send exactly that:
//! gRPC's C core (Python, C++, Ruby...) the percent-encoded socket path, grpc-java and
//! grpcurl the raw path, older grpc-go the path or an empty value. h2 has no option to relax
//! the check, so [`NormalizeAuthority`] sits between the Unix socket and h2: it follows the
//! client's frames, decodes each header block with the connection's HPACK decoder
//! (loona-hpack) and, when the `:authority` would be refused, re-encodes the block with
//! `localhost` (a Unix socket is always local). Every other byte passes through unchanged,
//! and blocks whose authority h2 accepts are forwarded verbatim until a connection needs its
//! first rewrite. Only the Unix-socket accept path uses it; the server's other listeners
//! keep h2's validation.
//!
//! Hostile input never panics: frames and blocks are bounded (HEADERS/CONTINUATION by the
//! server's SETTINGS_MAX_FRAME_SIZE, a block by [`MAX_HEADER_BLOCK`], a decoded list by
//! 256 KiB, the HPACK table by 4096 bytes), and anything malformed closes the connection.

mod block;
mod frames;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use self::frames::{MAX_FRAME_SIZE, MAX_HEADER_BLOCK};

/// A server-side connection whose client header blocks reach h2 with an acceptable
/// `:authority`. Writes pass through untouched.
pub struct NormalizeAuthority<IO> {
    io: IO,
    reader: frames::Reader,
    /// Read buffer, allocated once per connection.
    scratch: Box<[u8]>,
}

impl<IO: std::fmt::Debug> std::fmt::Debug for NormalizeAuthority<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NormalizeAuthority")
            .field("io", &self.io)
            .field("rewrites", &self.rewrites())
            .finish_non_exhaustive()
    }
}

impl<IO> NormalizeAuthority<IO> {
    /// Wraps a freshly accepted server connection (nothing read from it yet).
    pub fn new(io: IO) -> Self {
        Self {
            io,
            reader: frames::Reader::default(),
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// How many header blocks were re-encoded with a normalised `:authority` so far.
    pub fn rewrites(&self) -> u64 {
        self.reader.rewrites()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for NormalizeAuthority<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.reader.drain_into(buf) {
                return Poll::Ready(Ok(()));
            }
            this.reader.advance()?;
            if this.reader.has_output() {
                continue;
            }
            // Nothing to hand out: read more from the client.
            let mut raw = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut raw) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if raw.filled().is_empty() {
                        // End of stream: whatever was buffered is a truncated frame, which
                        // h2 reports as such.
                        this.reader.flush_truncated();
                        if this.reader.drain_into(buf) {
                            return Poll::Ready(Ok(()));
                        }
                        return Poll::Ready(Ok(()));
                    }
                    this.reader.push(raw.filled());
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for NormalizeAuthority<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected
    for NormalizeAuthority<IO>
{
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests;
