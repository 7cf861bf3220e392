//! Refusing a gateway with another cluster key at once.
//!
//! The private network's handshake only swaps nonces, so a gateway with
//! another key gets through it, and from then on what it sends decrypts to
//! noise. multistream-select reads that noise as a length prefix and may
//! wait for bytes that never come: the refusal came only at the upgrade's
//! 10 s timeout, holding the connection meanwhile. Yet every libp2p peer's
//! first bytes after that handshake are multistream-select's header, in
//! both directions; so the connection compares them as they arrive and
//! fails at the first one that differs.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::{AsyncRead, AsyncWrite};

/// What both ends send first: multistream-select 1.0's header, with its
/// length.
const HEADER: &[u8] = b"\x13/multistream/1.0.0\n";

/// A connection whose reads fail unless the first bytes that come in are
/// [`HEADER`]'s. Writes pass through.
pub struct KeyCheck<S> {
    inner: S,
    /// How much of the header has come in so far.
    matched: usize,
}

impl<S> KeyCheck<S> {
    pub fn new(inner: S) -> Self {
        KeyCheck { inner, matched: 0 }
    }
}

/// Checks `bytes`, which come in after the first `matched` of the header;
/// returns how much of the header has now come in.
fn check(matched: usize, bytes: &[u8]) -> io::Result<usize> {
    let expected = &HEADER[matched.min(HEADER.len())..];
    let compared = bytes.len().min(expected.len());
    if bytes[..compared] != expected[..compared] {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the other end holds another cluster key",
        ));
    }
    Ok(matched + compared)
}

impl<S: AsyncRead + Unpin> AsyncRead for KeyCheck<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let read = ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if self.matched < HEADER.len() {
            self.matched = check(self.matched, &buf[..read])?;
        }
        Poll::Ready(Ok(read))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for KeyCheck<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::AsyncReadExt;
    use futures_util::io::Cursor;
    use proptest::prelude::*;

    /// Reads all of `incoming` through a check, `chunk` bytes at a time.
    fn read_through(incoming: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let mut stream = KeyCheck::new(Cursor::new(incoming.to_vec()));
        let mut all = Vec::new();
        let mut buf = vec![0; chunk];
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            loop {
                let read = stream.read(&mut buf).await?;
                if read == 0 {
                    return Ok(all);
                }
                all.extend_from_slice(&buf[..read]);
            }
        })
    }

    #[test]
    fn a_peer_with_the_key_passes_however_its_bytes_arrive() {
        let mut incoming = HEADER.to_vec();
        incoming.extend_from_slice(b"\x07/noise\n and then anything at all");
        for chunk in 1..=incoming.len() {
            assert_eq!(read_through(&incoming, chunk).unwrap(), incoming, "{chunk}");
        }
    }

    #[test]
    fn the_first_byte_that_differs_ends_the_connection() {
        let mut incoming = HEADER.to_vec();
        incoming[5] ^= 1;
        for chunk in 1..=incoming.len() {
            let error = read_through(&incoming, chunk).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        }
    }

    proptest! {
        /// Whatever comes in, however it is split, passes exactly when it
        /// begins as the header does (over the length both have).
        #[test]
        fn only_the_header_passes(
            incoming in proptest::collection::vec(any::<u8>(), 0..64),
            chunk in 1usize..32,
        ) {
            let compared = incoming.len().min(HEADER.len());
            let genuine = incoming[..compared] == HEADER[..compared];
            prop_assert_eq!(read_through(&incoming, chunk).is_ok(), genuine);
        }

        /// A genuine header followed by anything passes.
        #[test]
        fn after_the_header_anything_goes(
            rest in proptest::collection::vec(any::<u8>(), 0..64),
            chunk in 1usize..32,
        ) {
            let mut incoming = HEADER.to_vec();
            incoming.extend_from_slice(&rest);
            prop_assert_eq!(read_through(&incoming, chunk).unwrap(), incoming);
        }
    }
}
