//! Frames: a 4-byte big-endian length prefix (tokio-util's
//! `LengthDelimitedCodec`, with our own size limit), then one version byte,
//! then an rmp-serde body.
//!
//! A frame that is too large, does not start with a known version or does
//! not decode is an error for the stream it arrived on; the transport
//! closes that stream with a logged reason and keeps the connection (and
//! the node) serving everyone else.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::LengthDelimitedCodec;

/// The only frame format version this build speaks.
pub const VERSION: u8 = 1;

/// Default largest frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// What is wrong with a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame is empty (no version byte).
    #[error("empty frame")]
    Empty,
    /// The version byte is not one this build reads.
    #[error("frame version {0}, this build speaks {VERSION}")]
    Version(u8),
    /// The body does not decode as the expected type.
    #[error("malformed frame body: {0}")]
    Decode(String),
    /// The value could not be encoded.
    #[error("cannot encode frame: {0}")]
    Encode(String),
    /// The encoded value exceeds the frame size limit.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// The length-prefix codec with `max` as the largest frame accepted.
pub fn codec(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(max)
        .new_codec()
}

/// Encodes `value` as a frame payload (version byte + body), refusing
/// anything larger than `max`.
pub fn encode<T: Serialize + ?Sized>(value: &T, max: usize) -> Result<Bytes, FrameError> {
    let mut buf = BytesMut::with_capacity(128);
    buf.put_u8(VERSION);
    let mut w = buf.writer();
    rmp_serde::encode::write(&mut w, value).map_err(|e| FrameError::Encode(e.to_string()))?;
    let buf = w.into_inner();
    if buf.len() > max {
        return Err(FrameError::TooLarge {
            size: buf.len(),
            limit: max,
        });
    }
    Ok(buf.freeze())
}

/// Decodes a frame payload produced by [`encode`].
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
    let (&version, body) = frame.split_first().ok_or(FrameError::Empty)?;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    rmp_serde::from_slice(body).map_err(|e| FrameError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let f = encode(&(7u64, "x".to_string()), 1024).unwrap();
        assert_eq!(f[0], VERSION);
        let (a, b): (u64, String) = decode(&f).unwrap();
        assert_eq!((a, b.as_str()), (7, "x"));
        let mut bad = f.to_vec();
        bad[0] = 9;
        assert!(matches!(
            decode::<(u64, String)>(&bad),
            Err(FrameError::Version(9))
        ));
        assert!(matches!(
            decode::<(u64, String)>(&f[..2]),
            Err(FrameError::Decode(_))
        ));
        assert!(matches!(decode::<u8>(&[]), Err(FrameError::Empty)));
        assert!(matches!(
            encode(&vec![0u8; 100], 10),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
