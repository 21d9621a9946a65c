//! One client header block: decoded with the connection's HPACK decoder (loona-hpack, which
//! mirrors the client's dynamic table), checked for an `:authority` that h2 would refuse, and
//! when needed re-encoded without touching the server's dynamic table.

use loona_hpack::Decoder;
use loona_hpack::encoder::encode_integer_into;

/// The value that replaces an `:authority` h2 refuses: a Unix socket is always local.
pub(crate) const LOCAL_AUTHORITY: &[u8] = b"localhost";

/// HPACK dynamic table size the server's decoder uses: h2 advertises no
/// SETTINGS_HEADER_TABLE_SIZE, so the protocol default (RFC 7540 §6.5.2) applies, and a
/// client may not grow its table beyond it.
pub(crate) const HEADER_TABLE_SIZE: usize = 4096;

/// Largest decoded header list we process (name + value + 32 per field, RFC 7540 §6.5.2);
/// far above hyper's default limit of 16 KiB, which answers smaller excesses itself.
pub(crate) const MAX_DECODED_LIST: usize = 256 * 1024;

/// Why a header block could not be processed; the connection is then closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BlockError {
    /// The HPACK data is malformed.
    #[error("malformed HPACK header block ({0})")]
    Hpack(String),
    /// The decoded list is larger than [`MAX_DECODED_LIST`].
    #[error("header list larger than {MAX_DECODED_LIST} bytes")]
    TooLarge,
}

/// What became of a block.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Forward the client's frames as they are.
    Verbatim,
    /// Forward this re-encoded block instead (literal fields, never indexed, so the server's
    /// dynamic table is never touched).
    Rewritten(Vec<u8>),
}

/// The HPACK side of one connection.
pub(crate) struct BlockRewriter {
    decoder: Decoder<'static>,
    /// Once a block was re-encoded, the server's dynamic table no longer mirrors the client's,
    /// so every later block is re-encoded too.
    rewriting: bool,
    rewrites: u64,
}

impl std::fmt::Debug for BlockRewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockRewriter")
            .field("rewriting", &self.rewriting)
            .field("rewrites", &self.rewrites)
            .finish_non_exhaustive()
    }
}

impl Default for BlockRewriter {
    fn default() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Self {
            decoder,
            rewriting: false,
            rewrites: 0,
        }
    }
}

/// True when h2 accepts `value` as `:authority` (the same parser, `http::uri::Authority`).
pub(crate) fn acceptable(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

impl BlockRewriter {
    /// How many blocks were re-encoded with a normalised `:authority`.
    pub(crate) fn rewrites(&self) -> u64 {
        self.rewrites
    }

    /// Processes one complete header block (the concatenated fragments of a HEADERS frame
    /// and its CONTINUATIONs).
    pub(crate) fn process(&mut self, block: &[u8]) -> Result<Outcome, BlockError> {
        let mut scan = Scan {
            all: self.rewriting,
            out: Vec::new(),
            decoded: 0,
            in_pseudo: true,
            refused: false,
        };
        self.decoder
            .decode_with_cb(block, |name, value| scan.field(&name, &value))
            .map_err(|e| BlockError::Hpack(e.to_string()))?;
        if scan.decoded > MAX_DECODED_LIST {
            return Err(BlockError::TooLarge);
        }
        if scan.refused {
            if !self.rewriting {
                tracing::debug!(
                    "normalising :authority to localhost on this Unix socket connection (h2 refuses the client's value)"
                );
            }
            self.rewriting = true;
            self.rewrites += 1;
        }
        if scan.all || scan.refused {
            Ok(Outcome::Rewritten(scan.out))
        } else {
            Ok(Outcome::Verbatim)
        }
    }
}

/// State of one decoding pass. Fields are re-encoded when the connection already rewrites
/// (`all`), or speculatively while the leading pseudo-header fields last: `:authority` is
/// one of them, and once a regular field arrives without a refused authority the block is
/// forwarded verbatim.
struct Scan {
    all: bool,
    out: Vec<u8>,
    decoded: usize,
    in_pseudo: bool,
    refused: bool,
}

impl Scan {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        if self.decoded > MAX_DECODED_LIST {
            return;
        }
        self.decoded = self.decoded.saturating_add(name.len() + value.len() + 32);
        if self.decoded > MAX_DECODED_LIST {
            return;
        }
        let pseudo = name.first() == Some(&b':');
        if !pseudo {
            self.in_pseudo = false;
        }
        let mut value = value;
        if pseudo && self.in_pseudo && name == b":authority" && !acceptable(value) {
            self.refused = true;
            value = LOCAL_AUTHORITY;
        }
        if self.all || self.refused || self.in_pseudo {
            encode_field(name, value, &mut self.out);
        }
    }
}

/// Index of `name` in the HPACK static table (RFC 7541 Appendix A), for the names gRPC uses.
fn static_name_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b"content-type" => 31,
        b"user-agent" => 58,
        _ => return None,
    })
}

/// Appends `name: value` as a literal field never indexed (RFC 7541 §6.2.3): the server's
/// dynamic table is not touched, and a field the client marked sensitive stays so.
fn encode_field(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    const NEVER_INDEXED: u8 = 0x10;
    // Writing to a Vec cannot fail.
    if let Some(index) = static_name_index(name) {
        let _ = encode_integer_into(index, 4, NEVER_INDEXED, out);
    } else {
        out.push(NEVER_INDEXED);
        encode_string(name, out);
    }
    encode_string(value, out);
}

fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    let _ = encode_integer_into(s.len(), 7, 0, out);
    out.extend_from_slice(s);
}
