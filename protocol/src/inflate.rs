//! Inflating what a peer deflated, with a limit: a few KiB of deflate can stand for
//! gigabytes, so nothing is inflated past the size its caller would accept plain.
//!
//! A whole deflate stream ([`inflate_at_most`]) or the next piece of one that goes on for a
//! whole session ([`StreamInflater`]), each piece ending at a sync flush.

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

/// The receiving end of a deflate stream that lasts a whole session: the sender deflates
/// each frame into the same stream and flushes it (a sync flush), so each frame's bytes
/// inflate to exactly that frame, and every frame can refer back to the 32 KiB before it.
pub struct StreamInflater {
    stream: flate2::Decompress,
}

impl Default for StreamInflater {
    fn default() -> StreamInflater {
        StreamInflater::new()
    }
}

impl StreamInflater {
    /// The start of a raw deflate stream.
    pub fn new() -> StreamInflater {
        StreamInflater {
            stream: flate2::Decompress::new(false),
        }
    }

    /// Inflates the stream's next piece, `bytes`, producing at most `limit + 1` bytes. After
    /// an error the stream cannot go on (the caller ends the session). A stream that ends
    /// (its final block) is invalid: the next piece would have nothing to follow.
    pub fn next(&mut self, bytes: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        let start = self.stream.total_in();
        let consumed = |s: &flate2::Decompress| (s.total_in() - start) as usize;
        let most = limit.saturating_add(1);
        let mut plain: Vec<u8> =
            Vec::with_capacity(bytes.len().saturating_mul(4).max(64).min(most));
        loop {
            if plain.len() == plain.capacity() {
                if plain.len() > limit {
                    return Err(InflateError::TooLarge(plain.len()));
                }
                let more = plain.len().max(4096).min(most - plain.len());
                plain.reserve_exact(more);
            }
            let (read, written) = (consumed(&self.stream), plain.len());
            let status = self
                .stream
                .decompress_vec(&bytes[read..], &mut plain, flate2::FlushDecompress::Sync)
                .map_err(|_| InflateError::Invalid)?;
            if plain.len() > limit {
                return Err(InflateError::TooLarge(plain.len()));
            }
            if status == flate2::Status::StreamEnd {
                return Err(InflateError::Invalid);
            }
            let room_left = plain.len() < plain.capacity();
            if consumed(&self.stream) == bytes.len() && room_left {
                return Ok(plain);
            }
            if consumed(&self.stream) == read && plain.len() == written && room_left {
                // No progress with room to write: the piece is cut short.
                return Err(InflateError::Invalid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deflates `pieces` into one raw stream, each ending at a sync flush.
    fn stream_of(pieces: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        pieces
            .iter()
            .map(|p| {
                let mut out = Vec::with_capacity(p.len() + 64);
                c.compress_vec(p, &mut out, flate2::FlushCompress::Sync)
                    .unwrap();
                out
            })
            .collect()
    }

    #[test]
    fn each_piece_of_a_stream_inflates_to_exactly_what_was_deflated() {
        // Bytes deflate cannot shrink on their own (a signature, say), then again.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let a: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let b = b"hoboksar/bayin member case file".to_vec();
        let pieces = stream_of(&[&a, &b, &a]);
        assert!(pieces[0].len() > 900, "{} bytes", pieces[0].len());
        assert!(
            pieces[2].len() < 32,
            "the third piece refers back to the first: {} bytes",
            pieces[2].len()
        );
        let mut inflater = StreamInflater::new();
        assert_eq!(inflater.next(&pieces[0], 1 << 20).unwrap(), a);
        assert_eq!(inflater.next(&pieces[1], 1 << 20).unwrap(), b);
        assert_eq!(inflater.next(&pieces[2], 1 << 20).unwrap(), a);
    }

    #[test]
    fn a_piece_never_inflates_past_the_limit_and_garbage_is_an_error() {
        let zeros = vec![0u8; 4 << 20];
        let pieces = stream_of(&[&zeros]);
        assert!(pieces[0].len() < 8 << 10);
        assert!(matches!(
            StreamInflater::new().next(&pieces[0], 1 << 20),
            Err(InflateError::TooLarge(n)) if n > 1 << 20 && n < 2 << 20
        ));
        assert_eq!(
            StreamInflater::new().next(&[0xff; 64], 1 << 20),
            Err(InflateError::Invalid)
        );
        // A stream that ends cannot go on.
        let mut ended = Vec::with_capacity(64);
        flate2::Compress::new(flate2::Compression::default(), false)
            .compress_vec(b"the end", &mut ended, flate2::FlushCompress::Finish)
            .unwrap();
        assert_eq!(
            StreamInflater::new().next(&ended, 1 << 20),
            Err(InflateError::Invalid)
        );
    }
}
