//! One socket type for every kind of connection the proxy holds, so the
//! relay is compiled once, with static dispatch.

use std::io;
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
}

/// Reads one tagged protocol message whose length must be within
/// `4..=max`: the I/O error, or the 08P01 error for the client when the
/// length is out of range, or the message.
pub async fn read_tagged<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Result<(u8, Vec<u8>), crate::protocol::backend::PgError>> {
    use tokio::io::AsyncReadExt;
    let tag = r.read_u8().await?;
    let len = r.read_u32().await? as usize;
    if !(4..=max).contains(&len) {
        return Ok(Err(crate::protocol::backend::PgError::fatal(
            "08P01",
            "invalid message length",
        )));
    }
    let mut body = vec![0; len - 4];
    r.read_exact(&mut body).await?;
    Ok(Ok((tag, body)))
}
