//! Framing: a 4-byte big-endian length, then that many bytes of MessagePack.
//!
//! A connection opens with the client's 8-byte handshake (`MTBL` and its
//! protocol version, big-endian u32); the server answers with one frame
//! holding `Result<ServerHello, ErrorInfo>` and, on error, closes. On a node
//! with a password, the first request must then be
//! [`crate::Command::Auth`]: every other request is refused with
//! [`ErrorCode::NoAuth`] until one succeeds.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{ErrorCode, ErrorInfo};
use crate::limits::{FRAME_SIZE_MAX_BYTES, HANDSHAKE_MAGIC, PROTOCOL_VERSION};
use crate::message::ServerHello;

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Capacity a frame buffer keeps between frames; more, left by a large
/// frame, is freed before the next.
const FRAME_BUFFER_KEPT_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("undecodable frame: {0}")]
    Decode(String),
    #[error("unencodable message: {0}")]
    Encode(String),
}

/// Appends `msg` as one frame to `out`. Refuses to produce an oversized frame.
pub fn encode_frame<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    rmp_serde::encode::write(out, msg).map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = out.len() - start - FRAME_HEADER_BYTES;
    if len > FRAME_SIZE_MAX_BYTES {
        out.truncate(start);
        return Err(FrameError::TooLarge { len, limit: FRAME_SIZE_MAX_BYTES });
    }
    let len = u32::try_from(len)
        .map_err(|_| FrameError::TooLarge { len, limit: FRAME_SIZE_MAX_BYTES })?;
    out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// The frame of a [`crate::Reply::Segment`] answer to request `id` that
/// carries `len` bytes, without those bytes: the sender writes exactly
/// `len` bytes right after it (from a file, with `sendfile`, so the bytes
/// never pass through its memory), which completes the frame. Decoded, it
/// is the frame [`encode_frame`] makes of that reply (its payload marked
/// as MessagePack `bin 32` whatever its length).
///
/// # Panics
/// Never for a `len` within [`FRAME_SIZE_MAX_BYTES`] less a few bytes:
/// the reply's encoding is fixed.
pub fn segment_reply_head(id: u64, len: u32) -> Vec<u8> {
    use crate::message::{Reply, Response};
    let empty = Response { id, result: Ok(Reply::Segment(Default::default())) };
    let mut out = Vec::with_capacity(32);
    encode_frame(&empty, &mut out).expect("an empty reply fits a frame");
    // An empty payload is encoded last, as `bin 8` of length 0.
    assert_eq!(out[out.len() - 2..], [0xc4, 0x00], "a segment reply ends with its payload");
    out.truncate(out.len() - 2);
    out.push(0xc6);
    out.extend_from_slice(&len.to_be_bytes());
    let payload = (out.len() - FRAME_HEADER_BYTES) as u64 + u64::from(len);
    let payload = u32::try_from(payload).expect("a segment read is far below 4 GiB");
    out[..FRAME_HEADER_BYTES].copy_from_slice(&payload.to_be_bytes());
    out
}

/// Decodes one frame's payload.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(payload).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Reads one frame's payload into `buf`. Returns `Ok(false)` on a clean end of
/// stream between frames. The length is checked before anything is allocated,
/// and the buffer holds no more than about twice the bytes that have come.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> Result<bool, FrameError> {
    read_frame_within(reader, buf, FRAME_SIZE_MAX_BYTES).await
}

/// [`read_frame`] with a smaller limit than [`FRAME_SIZE_MAX_BYTES`] (the
/// server reads an unauthenticated client's frames within
/// [`crate::limits::UNAUTHENTICATED_FRAME_SIZE_MAX_BYTES`]).
pub async fn read_frame_within<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<bool, FrameError> {
    read_frame_keeping(reader, buf, limit, FRAME_BUFFER_KEPT_BYTES).await
}

/// [`read_frame_within`], keeping up to `keep` bytes of capacity between
/// frames (a client reading large replies one after another, such as
/// segment reads of 1 MiB, spares re-growing its buffer for each).
pub async fn read_frame_keeping<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
    keep: usize,
) -> Result<bool, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            return if filled == 0 { Ok(false) } else { Err(FrameError::Truncated) };
        }
        filled += n;
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > limit.min(FRAME_SIZE_MAX_BYTES) {
        return Err(FrameError::TooLarge { len, limit: limit.min(FRAME_SIZE_MAX_BYTES) });
    }
    // The buffer grows as bytes arrive (doubling), never to the announced
    // length up front: a header alone costs its sender nothing to send and
    // must cost the receiver nothing to hold. A large buffer left by an
    // earlier frame is given back.
    buf.clear();
    if buf.capacity() > keep {
        buf.shrink_to(keep);
    }
    let read = reader.take(len as u64).read_to_end(buf).await?;
    if read < len {
        return Err(FrameError::Truncated);
    }
    Ok(true)
}

/// The client's half of the handshake.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<Result<ServerHello, ErrorInfo>, FrameError> {
    let mut hello = [0u8; 8];
    hello[..4].copy_from_slice(&HANDSHAKE_MAGIC);
    hello[4..].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    stream.write_all(&hello).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    if !read_frame(stream, &mut buf).await? {
        return Err(FrameError::Truncated);
    }
    decode_payload(&buf)
}

/// Checks a client's 8-byte handshake; the error is what to send back.
pub fn check_handshake(hello: &[u8; 8]) -> Result<(), ErrorInfo> {
    if hello[..4] != HANDSHAKE_MAGIC {
        return Err(ErrorInfo::new(
            ErrorCode::BadRequest,
            "not a Monotable client: the connection must open with the MTBL handshake",
        ));
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&hello[4..]);
    let version = u32::from_be_bytes(version);
    if version != PROTOCOL_VERSION {
        return Err(ErrorInfo::new(
            ErrorCode::ProtocolVersion,
            format!(
                "client speaks protocol version {version}, this server speaks {PROTOCOL_VERSION}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Command, Request};

    /// A segment reply's head followed by its bytes reads back as the
    /// reply, at every width MessagePack would pick for the length.
    #[tokio::test]
    async fn a_segment_reply_head_and_its_bytes_make_the_reply() {
        use crate::message::{Reply, Response};
        for len in [0usize, 1, 255, 256, 65_535, 65_536, 1 << 20] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let id = u64::MAX - len as u64;
            let mut frame = segment_reply_head(id, len as u32);
            frame.extend_from_slice(&bytes);
            let mut reader = &frame[..];
            let mut buf = Vec::new();
            assert!(read_frame(&mut reader, &mut buf).await.expect("one whole frame"));
            assert!(reader.is_empty(), "the length covers the bytes, no more");
            let back: Response = decode_payload(&buf).expect("decodes");
            assert_eq!(back.id, id);
            match back.result {
                Ok(Reply::Segment(got)) => assert_eq!(got.into_vec(), bytes, "len {len}"),
                other => panic!("not a segment: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn frame_round_trip() {
        let req = Request { id: 7, command: Command::Ping };
        let mut out = Vec::new();
        encode_frame(&req, &mut out).expect("small");
        let mut reader = &out[..];
        let mut buf = Vec::new();
        assert!(read_frame(&mut reader, &mut buf).await.expect("valid"));
        let back: Request = decode_payload(&buf).expect("valid");
        assert_eq!(back.id, 7);
        assert!(!read_frame(&mut reader, &mut buf).await.expect("clean eof"));
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_allocating() {
        let bytes = u32::MAX.to_be_bytes();
        let mut reader = &bytes[..];
        let mut buf = Vec::new();
        assert!(matches!(
            read_frame(&mut reader, &mut buf).await,
            Err(FrameError::TooLarge { .. })
        ));
        assert!(buf.capacity() < 1024);
    }

    // Regression: a 4-byte header alone made the server allocate the 32 MiB
    // it announced (40 such connections held 1.3 GB).
    #[tokio::test]
    async fn a_header_alone_allocates_little() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&(FRAME_SIZE_MAX_BYTES as u32).to_be_bytes()).await.expect("write");
        client.write_all(b"some").await.expect("write");
        let mut buf = Vec::new();
        let read = read_frame(&mut server, &mut buf);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), read).await;
        assert!(waited.is_err(), "the frame is incomplete");
        assert!(buf.capacity() < 1024 * 1024, "{} bytes held", buf.capacity());
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error() {
        let mut bytes = 10u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        let mut reader = &bytes[..];
        let mut buf = Vec::new();
        assert!(matches!(read_frame(&mut reader, &mut buf).await, Err(FrameError::Truncated)));
    }

    #[test]
    fn handshake_checks_magic_and_version() {
        let mut hello = [0u8; 8];
        hello[..4].copy_from_slice(&HANDSHAKE_MAGIC);
        hello[4..].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        assert!(check_handshake(&hello).is_ok());
        hello[7] ^= 0xFF;
        assert_eq!(check_handshake(&hello).map_err(|e| e.code), Err(ErrorCode::ProtocolVersion));
        assert_eq!(check_handshake(b"GET / HT").map_err(|e| e.code), Err(ErrorCode::BadRequest));
    }
}
