//! One socket type for every kind of connection the proxy holds, so the
//! relay is compiled once, with static dispatch.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A client or upstream connection.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A client connection whose TLS the proxy terminates.
    ClientTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A TLS connection the proxy opened to the upstream.
    UpstreamTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::ClientTls(_) | Stream::UpstreamTls(_))
    }

    /// Reads what is available into `buf`, as `poll_read` does, but for
    /// plain sockets a short read (fewer bytes than `buf` holds) also
    /// clears the socket's readiness: the kernel buffer is drained, so the
    /// next read would only return EAGAIN. That saves one `read` system
    /// call per direction per round trip. Tokio clears readiness only for
    /// the readiness event it observed (`try_io`), so data that arrives in
    /// the meantime raises a new event and is not missed.
    pub fn poll_read_relay(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(s) => loop {
                std::task::ready!(s.poll_read_ready(cx))?;
                let fd = s.as_raw_fd();
                match read_drained(fd, buf, |f| s.try_io(tokio::io::Interest::READABLE, f)) {
                    Some(r) => return Poll::Ready(r),
                    None => continue,
                }
            },
            Stream::Unix(s) => loop {
                std::task::ready!(s.poll_read_ready(cx))?;
                let fd = s.as_raw_fd();
                match read_drained(fd, buf, |f| s.try_io(tokio::io::Interest::READABLE, f)) {
                    Some(r) => return Poll::Ready(r),
                    None => continue,
                }
            },
            other => {
                let mut rb = ReadBuf::new(buf);
                std::task::ready!(Pin::new(other).poll_read(cx, &mut rb))?;
                Poll::Ready(Ok(rb.filled().len()))
            }
        }
    }
}

/// One `read(2)` through `try_io`; `None` means the socket was not
/// readable after all (readiness cleared, poll again).
fn read_drained(
    fd: RawFd,
    buf: &mut [u8],
    try_io: impl FnOnce(&mut dyn FnMut() -> io::Result<usize>) -> io::Result<usize>,
) -> Option<io::Result<usize>> {
    let len = buf.len();
    let mut got = 0usize;
    let mut read = || loop {
        // SAFETY: `buf` is valid for `len` bytes of writes for the whole
        // call, and `fd` is an open socket owned by the caller.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), len) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got = r as usize;
        // A short read drained the socket: report WouldBlock so that the
        // readiness is cleared, and hand the bytes over below.
        return if got > 0 && got < len {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(got)
        };
    };
    match try_io(&mut read) {
        Ok(n) => Some(Ok(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => (got > 0).then_some(Ok(got)),
        Err(e) => Some(Err(e)),
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::ClientTls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
            Stream::UpstreamTls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        dispatch!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::ClientTls(s) => s.is_write_vectored(),
            Stream::UpstreamTls(s) => s.is_write_vectored(),
        }
    }
}
