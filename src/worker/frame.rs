//! Frames on the worker's pipes: a 4-byte big-endian length, then that many bytes of JSON.
//! The same format both ways, read blocking by the worker and async by the server.

use super::WorkerError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{Read, Write};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame either side accepts (a CRL job or reply listing tens of thousands of
/// revocations still fits, and so does a 1,000-certificate batch job or reply).
pub const MAX_FRAME: usize = 16 << 20;

fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, WorkerError> {
    let json = serde_json::to_vec(message).map_err(|e| WorkerError::Malformed(e.to_string()))?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|n| *n as usize <= MAX_FRAME)
        .ok_or(WorkerError::TooLarge(json.len()))?;
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&json);
    Ok(frame)
}

fn length(prefix: [u8; 4]) -> Result<usize, WorkerError> {
    let len = u32::from_be_bytes(prefix) as usize;
    match len {
        0 => Err(WorkerError::Malformed("empty frame".into())),
        n if n > MAX_FRAME => Err(WorkerError::TooLarge(n)),
        n => Ok(n),
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, WorkerError> {
    serde_json::from_slice(body).map_err(|e| WorkerError::Malformed(e.to_string()))
}

/// Fills `buf`; `Ok(false)` when the input ended before its first byte.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> Result<bool, WorkerError> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..]) {
            Ok(0) if done == 0 => return Ok(false),
            Ok(0) => return Err(WorkerError::Closed),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WorkerError::Io(e.to_string())),
        }
    }
    Ok(true)
}

/// Reads one frame; `Ok(None)` at a clean end of input (between frames).
pub fn read<T: DeserializeOwned>(input: &mut impl Read) -> Result<Option<T>, WorkerError> {
    let mut prefix = [0u8; 4];
    if !fill(input, &mut prefix)? {
        return Ok(None);
    }
    let mut body = vec![0u8; length(prefix)?];
    if !fill(input, &mut body)? {
        return Err(WorkerError::Closed);
    }
    decode(&body).map(Some)
}

/// Writes one frame and flushes it.
pub fn write<T: Serialize>(output: &mut impl Write, message: &T) -> Result<(), WorkerError> {
    let frame = encode(message)?;
    output
        .write_all(&frame)
        .and_then(|()| output.flush())
        .map_err(|e| WorkerError::Io(e.to_string()))
}

/// Reads one frame; the end of input is an error here (the server always expects a reply).
pub async fn read_async<T: DeserializeOwned>(
    input: &mut (impl AsyncRead + Unpin),
) -> Result<T, WorkerError> {
    let eof = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WorkerError::Closed,
        _ => WorkerError::Io(e.to_string()),
    };
    let mut prefix = [0u8; 4];
    input.read_exact(&mut prefix).await.map_err(eof)?;
    let mut body = vec![0u8; length(prefix)?];
    input.read_exact(&mut body).await.map_err(eof)?;
    decode(&body)
}

/// Writes one frame and flushes it.
pub async fn write_async<T: Serialize>(
    output: &mut (impl AsyncWrite + Unpin),
    message: &T,
) -> Result<(), WorkerError> {
    let frame = encode(message)?;
    let broken = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::BrokenPipe => WorkerError::Closed,
        _ => WorkerError::Io(e.to_string()),
    };
    output.write_all(&frame).await.map_err(broken)?;
    output.flush().await.map_err(broken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::WorkerRequest;

    #[test]
    fn a_frame_round_trips_and_the_end_between_frames_is_clean() {
        let mut buf = Vec::new();
        write(&mut buf, &WorkerRequest::Abort {}).unwrap();
        assert_eq!(&buf[..4], &(buf.len() as u32 - 4).to_be_bytes());
        let mut input = buf.as_slice();
        assert_eq!(
            read::<WorkerRequest>(&mut input).unwrap(),
            Some(WorkerRequest::Abort {})
        );
        assert_eq!(read::<WorkerRequest>(&mut input).unwrap(), None);
    }

    #[test]
    fn truncated_oversized_empty_and_unknown_frames_are_refused() {
        let mut buf = Vec::new();
        write(&mut buf, &WorkerRequest::Abort {}).unwrap();
        let cut = &buf[..buf.len() - 1];
        assert!(matches!(
            read::<WorkerRequest>(&mut &cut[..]),
            Err(WorkerError::Closed)
        ));
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            read::<WorkerRequest>(&mut &huge[..]),
            Err(WorkerError::TooLarge(_))
        ));
        let empty = 0u32.to_be_bytes();
        assert!(matches!(
            read::<WorkerRequest>(&mut &empty[..]),
            Err(WorkerError::Malformed(_))
        ));
        let extra = br#"{"op":"abort","also":1}"#;
        let mut framed = (extra.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(extra);
        assert!(matches!(
            read::<WorkerRequest>(&mut framed.as_slice()),
            Err(WorkerError::Malformed(_))
        ));
    }
}
