//! PEM/DER input handling and atomic output files.

use std::path::Path;

use crate::error::{Error, Result};

/// Returns the DER of a single PEM block labelled with one of `labels`, or `input` itself when
/// it looks like DER (a SEQUENCE).
pub(crate) fn pem_or_der(
    input: &[u8],
    what: &'static str,
    labels: &[&'static str],
) -> Result<Vec<u8>> {
    let expected = labels.first().copied().unwrap_or("");
    if input.first() == Some(&0x30) {
        return Ok(input.to_vec());
    }
    let blocks = pem_blocks(input, what, labels)?;
    match <[Vec<u8>; 1]>::try_from(blocks) {
        Ok([der]) => Ok(der),
        Err(blocks) => Err(Error::Encoding {
            what,
            pem_label: expected,
            reason: format!("found {} PEM blocks, expected one", blocks.len()),
        }),
    }
}

/// Every PEM block of `input`, each of which must carry one of `labels`.
pub(crate) fn pem_blocks(
    input: &[u8],
    what: &'static str,
    labels: &[&'static str],
) -> Result<Vec<Vec<u8>>> {
    let expected = labels.first().copied().unwrap_or("");
    let bad = |reason: String| Error::Encoding {
        what,
        pem_label: expected,
        reason,
    };
    let text = std::str::from_utf8(input)
        .map_err(|_| bad("the input is binary but not DER".to_owned()))?;
    if !text.contains("-----BEGIN ") {
        return Err(bad("no PEM header found".to_owned()));
    }
    let blocks = pem::parse_many(text).map_err(|e| bad(e.to_string()))?;
    if blocks.is_empty() {
        return Err(bad("no PEM block found".to_owned()));
    }
    blocks
        .into_iter()
        .map(|b| {
            if labels.contains(&b.tag()) {
                Ok(b.into_contents())
            } else {
                Err(bad(format!("found a `{}` block", b.tag())))
            }
        })
        .collect()
}

/// Unix permission bits of an output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    /// 0644: certificates and chains.
    Public,
    /// 0600: private keys and anything else secret.
    Secret,
}

/// Writes `contents` to `path` atomically (temporary file in the same directory, fsync,
/// rename), with the permissions of `mode` from the start.
///
/// # Errors
/// [`Error::Write`] naming the path.
pub fn write_file_atomic(path: &Path, contents: &[u8], mode: FileMode) -> Result<()> {
    let bits = match mode {
        FileMode::Public => 0o644,
        FileMode::Secret => mesh_common::fs::OWNER_ONLY,
    };
    mesh_common::fs::write_atomic(path, contents, bits).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}
