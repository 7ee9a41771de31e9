//! Inflating what a peer deflated, with a limit: a few KiB of deflate can stand for
//! gigabytes, so nothing is inflated past the size its caller would accept plain.

use std::io::Read as _;

/// Why deflated bytes were not inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// Not a valid deflate stream.
    Invalid,
    /// It inflates past the limit: the bytes read before stopping (the limit plus one).
    TooLarge(usize),
}

/// Inflates raw deflate `bytes`, reading at most `limit + 1` bytes of output.
pub fn inflate_at_most(bytes: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut plain = Vec::new();
    flate2::bufread::DeflateDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|_| InflateError::Invalid)?;
    if plain.len() > limit {
        return Err(InflateError::TooLarge(plain.len()));
    }
    Ok(plain)
}
