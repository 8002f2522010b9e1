//! quinn `AsyncUdpSocket` adapter onto `turmoil::net::UdpSocket`
//! (worked out in a prototype: turmoil 0.7.2, quinn 0.11.12).
//!
//! turmoil 0.7's UdpSocket has no `poll_*` API: only `try_send_to` (never
//! blocks: UDP in turmoil has no back-pressure), `try_recv_from`
//! (WouldBlock when empty) and `async fn readable()` (which buffers one
//! datagram and holds the socket's internal tokio Mutex while pending).
//! So `poll_recv` keeps a boxed `readable()` future across polls.

use std::{
    fmt,
    future::Future,
    io::{self, IoSliceMut},
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

type ReadableFut = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// A turmoil UDP socket as quinn's `AsyncUdpSocket`.
pub struct TurmoilUdpSocket {
    inner: Arc<turmoil::net::UdpSocket>,
    /// Pending `readable()` future, kept across `poll_recv` calls so its waker
    /// registration survives. Only quinn's endpoint driver calls poll_recv.
    readable: Mutex<Option<ReadableFut>>,
}

impl TurmoilUdpSocket {
    /// Wraps a bound turmoil socket.
    pub fn new(inner: turmoil::net::UdpSocket) -> Self {
        Self {
            inner: Arc::new(inner),
            readable: Mutex::new(None),
        }
    }
}

impl fmt::Debug for TurmoilUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurmoilUdpSocket")
            .field("inner", &self.inner)
            .finish()
    }
}

/// turmoil UDP sockets are always writable (`writable()` is `Ok(())`).
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for TurmoilUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        // max_transmit_segments() == 1 so quinn never batches (GSO), but be
        // safe and split on segment_size anyway.
        let seg = t.segment_size.unwrap_or(t.contents.len()).max(1);
        for chunk in t.contents.chunks(seg) {
            // Partitions/holds are NOT errors (turmoil drops/queues silently).
            // turmoil returns ConnectionRefused if no link to dst exists
            // (unknown IP). Mirror quinn-udp's real socket, which logs and
            // swallows every send error except WouldBlock: returning Err here
            // would make quinn kill the whole connection driver.
            match self.inner.try_send_to(chunk, t.destination) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(_) => {}
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut slot = match self.readable.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        loop {
            if let Some(fut) = slot.as_mut() {
                // While this future is pending it holds turmoil's rx lock, so
                // we must not call try_recv_from (it would say WouldBlock).
                let res = match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
                *slot = None;
                res?;
            }
            let mut n = 0;
            while n < bufs.len().min(meta.len()) {
                match self.inner.try_recv_from(&mut bufs[n]) {
                    Ok((len, from)) => {
                        meta[n] = RecvMeta {
                            addr: from,
                            len,
                            stride: len,
                            ecn: None,
                            dst_ip: None,
                        };
                        n += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        if n == 0 {
                            return Poll::Ready(Err(e));
                        }
                        break;
                    }
                }
            }
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            let sock = self.inner.clone();
            *slot = Some(Box::pin(async move { sock.readable().await }));
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn may_fragment(&self) -> bool {
        false
    }
}
