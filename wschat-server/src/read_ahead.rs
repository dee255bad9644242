//! A socket that reads ahead while data keeps arriving, so that a large
//! frame costs one socket read per [`AHEAD`] bytes, not one per 128
//! (README, "Where a waiting connection's memory goes", and "Limits: what
//! one client cannot do to the others").
//!
//! tungstenite reads into its own 128-byte buffer, kept small because it
//! is held by every waiting connection. Idle, this adapter holds nothing
//! but a null pointer and reads go straight into that buffer; when a read
//! fills it, more is likely waiting, so a read-ahead buffer is allocated
//! and refilled one socket read at a time. It is freed once drained after
//! a socket read that did not fill it, or when a refill would wait: a
//! connection that goes quiet holds no buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The read-ahead buffer's size: one socket read per this many bytes.
const AHEAD: usize = 8 * 1024;

/// `S`, reading ahead while data keeps arriving.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    inner: S,
    ahead: Option<Box<Ahead>>,
}

/// Bytes read from the socket and not yet handed on: `bytes[start..end]`.
#[derive(Debug)]
struct Ahead {
    start: usize,
    end: usize,
    /// Whether the last socket read filled the buffer, so that more is
    /// likely waiting.
    full: bool,
    bytes: [u8; AHEAD],
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadAhead { inner, ahead: None }
    }

    /// Whether a read-ahead buffer is held.
    #[cfg(test)]
    fn holds_buffer(&self) -> bool {
        self.ahead.is_some()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(mut ahead) = this.ahead.take() {
            if ahead.start == ahead.end {
                if !ahead.full {
                    // Drained after a short read: back to reading direct.
                    return this.read_direct(cx, buf);
                }
                let mut into = ReadBuf::new(&mut ahead.bytes);
                // Pending or an error drops the (empty) buffer.
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut into))?;
                let n = into.filled().len();
                if n == 0 {
                    return Poll::Ready(Ok(()));
                }
                ahead.start = 0;
                ahead.end = n;
                ahead.full = n == AHEAD;
            }
            let n = buf.remaining().min(ahead.end - ahead.start);
            buf.put_slice(&ahead.bytes[ahead.start..ahead.start + n]);
            ahead.start += n;
            this.ahead = Some(ahead);
            return Poll::Ready(Ok(()));
        }
        this.read_direct(cx, buf)
    }
}

impl<S: AsyncRead + Unpin> ReadAhead<S> {
    /// Reads straight into `buf` (not empty); if that fills it, starts
    /// reading ahead.
    fn read_direct(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let wanted = buf.remaining();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.remaining() == 0 && wanted < AHEAD {
            self.ahead = Some(Box::new(Ahead {
                start: 0,
                end: 0,
                full: true,
                bytes: [0; AHEAD],
            }));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
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

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A reader over scripted results, counting its reads; once the script
    /// is done it waits for ever.
    struct Scripted {
        script: std::collections::VecDeque<io::Result<Vec<u8>>>,
        reads: usize,
    }

    impl Scripted {
        fn new(script: Vec<io::Result<Vec<u8>>>) -> Self {
            Scripted {
                script: script.into(),
                reads: 0,
            }
        }
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            match self.script.pop_front() {
                None => Poll::Pending,
                Some(Err(e)) => Poll::Ready(Err(e)),
                Some(Ok(mut bytes)) => {
                    let n = bytes.len().min(buf.remaining());
                    buf.put_slice(&bytes[..n]);
                    if n < bytes.len() {
                        self.script.push_front(Ok(bytes.split_off(n)));
                    }
                    Poll::Ready(Ok(()))
                }
            }
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Reads into a 128-byte buffer, as tungstenite does; `None` if the
    /// read waits.
    fn read_128(r: &mut ReadAhead<Scripted>) -> Option<io::Result<Vec<u8>>> {
        let mut bytes = [0u8; 128];
        let mut buf = ReadBuf::new(&mut bytes);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(r).poll_read(&mut cx, &mut buf) {
            Poll::Pending => None,
            Poll::Ready(read) => Some(read.map(|()| buf.filled().to_vec())),
        }
    }

    #[test]
    fn streaming_takes_one_socket_read_per_buffer_full() {
        let sent = pattern(1 << 20);
        // As a socket with a deep receive queue gives it: as much as asked.
        let mut r = ReadAhead::new(Scripted::new(vec![Ok(sent.clone())]));
        let mut got = Vec::new();
        while let Some(read) = read_128(&mut r) {
            got.extend(read.expect("no error scripted"));
        }
        assert!(got == sent, "bytes lost or reordered");
        let reads = r.inner.reads;
        assert!(
            reads < (1 << 20) / 4096 * 2,
            "{reads} socket reads for 1 MiB"
        );
    }

    #[test]
    fn a_connection_that_goes_quiet_holds_no_buffer() {
        let chunks = vec![Ok(pattern(10_000)), Ok(pattern(300))];
        let mut r = ReadAhead::new(Scripted::new(chunks));
        let mut got = Vec::new();
        while let Some(read) = read_128(&mut r) {
            got.extend(read.expect("no error scripted"));
        }
        assert_eq!(got.len(), 10_300);
        assert!(got[..10_000] == pattern(10_000)[..] && got[10_000..] == pattern(300)[..]);
        assert!(!r.holds_buffer());

        // Drained after a socket read that filled it: the refill waits.
        let mut r = ReadAhead::new(Scripted::new(vec![Ok(pattern(128 + AHEAD))]));
        let mut n = 0;
        while let Some(read) = read_128(&mut r) {
            n += read.expect("no error scripted").len();
        }
        assert_eq!(n, 128 + AHEAD);
        assert!(!r.holds_buffer());

        // A short read into the caller's buffer never allocates.
        let mut r = ReadAhead::new(Scripted::new(vec![Ok(pattern(100))]));
        assert_eq!(
            read_128(&mut r).map(|r| r.map(|b| b.len()).ok()),
            Some(Some(100))
        );
        assert!(!r.holds_buffer());
    }

    #[test]
    fn end_of_stream_and_errors_pass_through() {
        let script = vec![
            Ok(pattern(1000)),
            Ok(Vec::new()),
            Err(io::ErrorKind::ConnectionReset.into()),
        ];
        let mut r = ReadAhead::new(Scripted::new(script));
        let mut got = Vec::new();
        loop {
            let read = read_128(&mut r).expect("scripted reads do not wait");
            let read = read.expect("the error comes after the end");
            if read.is_empty() {
                break;
            }
            got.extend(read);
        }
        assert!(got == pattern(1000));
        let err = read_128(&mut r).expect("scripted").expect_err("the error");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(!r.holds_buffer());

        // An error mid-stream, with bytes read ahead: they come first.
        let script = vec![
            Ok(pattern(128 + AHEAD + 50)),
            Err(io::ErrorKind::BrokenPipe.into()),
        ];
        let mut r = ReadAhead::new(Scripted::new(script));
        let mut n = 0;
        let err = loop {
            match read_128(&mut r).expect("scripted") {
                Ok(b) => n += b.len(),
                Err(e) => break e,
            }
        };
        assert_eq!(n, 128 + AHEAD + 50);
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn an_empty_read_is_not_the_end() {
        let mut r = ReadAhead::new(Scripted::new(vec![Ok(pattern(AHEAD * 2))]));
        assert!(read_128(&mut r).is_some_and(|r| r.is_ok_and(|b| b.len() == 128)));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut empty = ReadBuf::new(&mut []);
        let read = Pin::new(&mut r).poll_read(&mut cx, &mut empty);
        assert!(matches!(read, Poll::Ready(Ok(()))));
        let mut rest = 128;
        while let Some(read) = read_128(&mut r) {
            rest += read.expect("no error scripted").len();
        }
        assert_eq!(rest, AHEAD * 2);
    }

    #[tokio::test]
    async fn writes_and_reads_pass_through_a_socket() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let mut r = ReadAhead::new(a);
        let sent = pattern(50_000);
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                b.write_all(&sent).await?;
                b.shutdown().await?;
                let mut echo = Vec::new();
                b.read_to_end(&mut echo).await?;
                io::Result::Ok(echo)
            })
        };
        let mut got = Vec::new();
        let mut chunk = [0u8; 128];
        loop {
            let n = r.read(&mut chunk).await.expect("duplex read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got == sent);
        assert!(!r.holds_buffer());
        r.write_all(b"back").await.expect("duplex write");
        r.shutdown().await.expect("duplex shutdown");
        let echo = writer.await.expect("writer task").expect("writer io");
        assert_eq!(echo, b"back");
    }
}
