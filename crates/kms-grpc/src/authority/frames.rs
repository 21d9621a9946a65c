//! The client-to-server HTTP/2 byte stream, frame by frame (RFC 9113 §3.4, §4.1, §6.2,
//! §6.10): the preface and every frame other than HEADERS/CONTINUATION pass through; header
//! blocks are collected, handed to [`BlockRewriter`] and forwarded verbatim or re-framed.

use std::io;

use bytes::{Buf as _, BytesMut};
use tokio::io::ReadBuf;

use super::block::{BlockRewriter, Outcome};

/// SETTINGS_MAX_FRAME_SIZE the server advertises (the protocol default, which the server
/// sets explicitly); a larger HEADERS or CONTINUATION frame closes the connection, as h2
/// would, and re-encoded blocks are split to fit.
pub const MAX_FRAME_SIZE: usize = 16 * 1024;

/// Largest header block (all fragments of one HEADERS + CONTINUATION sequence) accepted.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;

const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the 24-byte connection preface.
    Preface,
    /// At a frame boundary.
    FrameHeader,
    /// Inside the payload of a frame that passes through.
    Payload { remaining: usize },
    /// Not HTTP/2 with prior knowledge: everything passes through and h2 answers it.
    Opaque,
    /// A protocol or size error was found; the connection is closed.
    Failed,
}

/// A header block being collected.
#[derive(Debug)]
struct Pending {
    stream_id: u32,
    /// END_STREAM of the HEADERS frame.
    end_stream: bool,
    /// The 5 priority bytes of the HEADERS frame, when it carried them.
    priority: Option<[u8; 5]>,
    /// The client's frames, as received, for verbatim forwarding.
    raw: Vec<u8>,
    /// The concatenated fragments.
    block: Vec<u8>,
}

/// The read-side state machine.
#[derive(Debug)]
pub(super) struct Reader {
    state: State,
    input: BytesMut,
    output: BytesMut,
    pending: Option<Pending>,
    rewriter: BlockRewriter,
    failure: Option<String>,
}

impl Default for Reader {
    fn default() -> Self {
        Self {
            state: State::Preface,
            input: BytesMut::with_capacity(16 * 1024),
            output: BytesMut::with_capacity(16 * 1024),
            pending: None,
            rewriter: BlockRewriter::default(),
            failure: None,
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl Reader {
    pub(super) fn rewrites(&self) -> u64 {
        self.rewriter.rewrites()
    }

    /// Bytes received from the client.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    pub(super) fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Copies ready bytes into `buf`; true when something was copied.
    pub(super) fn drain_into(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.output.is_empty() || buf.remaining() == 0 {
            return false;
        }
        let n = self.output.len().min(buf.remaining());
        buf.put_slice(&self.output[..n]);
        self.output.advance(n);
        true
    }

    /// At end of stream: hands on whatever is buffered so h2 sees the truncation itself.
    pub(super) fn flush_truncated(&mut self) {
        if self.state == State::Failed {
            return;
        }
        if let Some(p) = self.pending.take() {
            self.output.extend_from_slice(&p.raw);
        }
        let rest = self.input.split();
        self.output.extend_from_slice(&rest);
    }

    /// Moves as much input to output as complete frames allow.
    pub(super) fn advance(&mut self) -> io::Result<()> {
        loop {
            let progressed = match self.state {
                State::Failed => {
                    return Err(invalid(
                        self.failure
                            .clone()
                            .unwrap_or_else(|| "connection closed".to_owned()),
                    ));
                }
                State::Opaque => {
                    let all = self.input.split();
                    self.output.extend_from_slice(&all);
                    false
                }
                State::Preface => self.preface(),
                State::Payload { remaining } => {
                    let n = remaining.min(self.input.len());
                    let chunk = self.input.split_to(n);
                    self.output.extend_from_slice(&chunk);
                    self.state = if n == remaining {
                        State::FrameHeader
                    } else {
                        State::Payload {
                            remaining: remaining - n,
                        }
                    };
                    n > 0
                }
                State::FrameHeader => match self.frame() {
                    Ok(progressed) => progressed,
                    Err(message) => {
                        tracing::debug!(%message, "closing a Unix socket connection");
                        self.failure = Some(message);
                        self.state = State::Failed;
                        self.pending = None;
                        self.input.clear();
                        continue;
                    }
                },
            };
            if !progressed || self.input.is_empty() {
                return Ok(());
            }
        }
    }

    fn preface(&mut self) -> bool {
        let n = self.input.len().min(PREFACE.len());
        if self.input[..n] != PREFACE[..n] {
            self.state = State::Opaque;
            return true;
        }
        if n < PREFACE.len() {
            return false;
        }
        let preface = self.input.split_to(PREFACE.len());
        self.output.extend_from_slice(&preface);
        self.state = State::FrameHeader;
        true
    }

    /// Handles the frame at the start of the input, if its header (or, for header-block
    /// frames, all of it) has arrived. Returns whether progress was made.
    fn frame(&mut self) -> Result<bool, String> {
        let Some(head) = self.input.get(..FRAME_HEADER) else {
            return Ok(false);
        };
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let kind = head[3];
        let flags = head[4];
        let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;

        if let Some(pending) = &self.pending
            && (kind != CONTINUATION || stream_id != pending.stream_id)
        {
            return Err(format!(
                "frame type {kind:#x} on stream {stream_id} inside the header block of stream {}",
                pending.stream_id
            ));
        }
        let header_frame = kind == HEADERS
            || kind == PUSH_PROMISE
            || (kind == CONTINUATION && self.pending.is_some());
        if !header_frame {
            let head = self.input.split_to(FRAME_HEADER);
            self.output.extend_from_slice(&head);
            self.state = State::Payload { remaining: len };
            return Ok(true);
        }
        if kind == PUSH_PROMISE {
            return Err("PUSH_PROMISE from a client".to_owned());
        }
        if len > MAX_FRAME_SIZE {
            return Err(format!(
                "header frame of {len} bytes exceeds SETTINGS_MAX_FRAME_SIZE {MAX_FRAME_SIZE}"
            ));
        }
        if self.input.len() < FRAME_HEADER + len {
            return Ok(false);
        }
        let frame = self.input.split_to(FRAME_HEADER + len);
        let payload = &frame[FRAME_HEADER..];
        if kind == HEADERS {
            if stream_id == 0 {
                return Err("HEADERS on stream 0".to_owned());
            }
            let (fragment, priority) = headers_fragment(flags, payload)?;
            self.pending = Some(Pending {
                stream_id,
                end_stream: flags & END_STREAM != 0,
                priority,
                raw: Vec::with_capacity(frame.len()),
                block: Vec::with_capacity(fragment.len()),
            });
            if let Some(p) = self.pending.as_mut() {
                p.block.extend_from_slice(fragment);
            }
        } else if let Some(p) = self.pending.as_mut() {
            p.block.extend_from_slice(payload);
        }
        let Some(pending) = self.pending.as_mut() else {
            return Err("header block state lost".to_owned());
        };
        pending.raw.extend_from_slice(&frame);
        if pending.block.len() > MAX_HEADER_BLOCK {
            return Err(format!("header block larger than {MAX_HEADER_BLOCK} bytes"));
        }
        if flags & END_HEADERS != 0 {
            let Some(pending) = self.pending.take() else {
                return Err("header block state lost".to_owned());
            };
            self.finish(&pending)?;
        }
        Ok(true)
    }

    fn finish(&mut self, pending: &Pending) -> Result<(), String> {
        match self.rewriter.process(&pending.block) {
            Ok(Outcome::Verbatim) => self.output.extend_from_slice(&pending.raw),
            Ok(Outcome::Rewritten(block)) => {
                write_header_frames(pending, &block, &mut self.output);
            }
            Err(e) => return Err(format!("stream {}: {e}", pending.stream_id)),
        }
        Ok(())
    }
}

/// The block fragment of a HEADERS payload (padding and priority removed), and the priority
/// bytes.
fn headers_fragment(flags: u8, payload: &[u8]) -> Result<(&[u8], Option<[u8; 5]>), String> {
    let mut rest = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&n, tail) = rest
            .split_first()
            .ok_or_else(|| "PADDED HEADERS without a pad length".to_owned())?;
        pad = usize::from(n);
        rest = tail;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let (bytes, tail) = rest
            .split_first_chunk::<5>()
            .ok_or_else(|| "HEADERS with PRIORITY shorter than 5 bytes".to_owned())?;
        priority = Some(*bytes);
        rest = tail;
    }
    if pad > rest.len() {
        return Err("HEADERS padding longer than the payload".to_owned());
    }
    Ok((&rest[..rest.len() - pad], priority))
}

fn frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream_id: u32) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
    out.extend_from_slice(&stream_id.to_be_bytes());
}

/// Writes a re-encoded block as one HEADERS frame and as many CONTINUATIONs as
/// [`MAX_FRAME_SIZE`] requires (unpadded; END_STREAM and priority kept).
fn write_header_frames(pending: &Pending, block: &[u8], out: &mut BytesMut) {
    let priority_len = if pending.priority.is_some() { 5 } else { 0 };
    let first_len = block.len().min(MAX_FRAME_SIZE - priority_len);
    let (first, mut rest) = block.split_at(first_len);
    let mut flags = 0;
    if pending.end_stream {
        flags |= END_STREAM;
    }
    if pending.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_header(
        out,
        first.len() + priority_len,
        HEADERS,
        flags,
        pending.stream_id,
    );
    if let Some(p) = pending.priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME_SIZE));
        rest = tail;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        frame_header(out, chunk.len(), CONTINUATION, flags, pending.stream_id);
        out.extend_from_slice(chunk);
    }
}
