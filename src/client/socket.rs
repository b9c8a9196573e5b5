//! The two sides of a client socket as the reader and writer tasks see
//! them. A plain TCP socket is shared (`Arc<TcpStream>`) rather than split,
//! so that besides the writer task a publisher can write to it in place
//! through `DirectWrite` (see `Outbound::flush_direct`); a TLS stream is
//! split and written by its writer task only.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use crate::outbound::DirectWrite;

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// What the reader task reads from.
pub enum ReadSide {
    Tcp(Arc<TcpStream>),
    Stream(BoxRead),
}

impl ReadSide {
    /// Read into `buf`'s spare capacity; `Ok(0)` at end of stream.
    /// Cancel-safe: nothing is read unless the future completes.
    pub async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            // `async_io` takes part in tokio's cooperative budget (a bare
            // `readable()` does not), so a reader whose socket always has
            // data still yields its worker now and then.
            ReadSide::Tcp(s) => {
                s.async_io(tokio::io::Interest::READABLE, || s.try_read_buf(buf))
                    .await
            }
            ReadSide::Stream(r) => r.read_buf(buf).await,
        }
    }
}

/// The writer task's side of a shared TCP socket.
pub struct TcpWrite(pub Arc<TcpStream>);

impl AsyncWrite for TcpWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The reader may still hold the socket; a write shutdown sends FIN
        // now instead of when the last reference goes.
        let r = socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write);
        Poll::Ready(match r {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        })
    }
}

impl DirectWrite for TcpStream {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }
}
