//! The least work a user-space relay can do per message, for the benchmarks
//! (`bench/run.sh`, target `epoll`): one thread, one `epoll` set, and per
//! readable socket one `recv` and one `send` of what it brought to the
//! other side. No framing, no runtime, no allocation after a connection is
//! set up: what is left is the kernel's share, which every relay (PgBouncer,
//! pgbranch, the tokio forwarder) pays alike. It bounds what a relay on
//! this machine can reach (docs/benchmarks.md).
//!
//! Not a proxy to use: the upstream connect and the sends block (a peer
//! that stops reading stalls every connection), errors just close the pair.
//!
//! Usage: pgbranch-bench-epoll LISTEN_ADDR UPSTREAM_ADDR

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

const BUF: usize = 64 * 1024;
const EVENTS: usize = 64;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn watch(epoll: RawFd, fd: RawFd) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd as u64,
    };
    // SAFETY: epoll and fd are open descriptors; ev outlives the call.
    check(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
    Ok(())
}

/// Sends all of `data` on the blocking socket `fd`.
fn send_all(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: data is a live slice of data.len() bytes.
        let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

fn close_pair(epoll: RawFd, peer: &mut [RawFd], fd: RawFd) {
    let other = peer[fd as usize];
    for f in [fd, other] {
        if f >= 0 {
            // SAFETY: f is an open descriptor of this relay; closing it
            // also removes it from the epoll set.
            unsafe {
                libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, f, std::ptr::null_mut());
                libc::close(f);
            }
            peer[f as usize] = -1;
        }
    }
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:6433".into());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:5432".into());
    let listener = TcpListener::bind(&listen)?;
    listener.set_nonblocking(true)?;
    // SAFETY: plain system call.
    let epoll = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    watch(epoll, listener.as_raw_fd())?;
    // peer[fd]: the other side of fd's pair, -1 when fd is not a relayed socket.
    let mut peer: Vec<RawFd> = vec![-1; 1024];
    let mut buf = vec![0u8; BUF];
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    loop {
        // SAFETY: events has room for EVENTS entries.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), EVENTS as i32, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            let fd = ev.u64 as RawFd;
            if fd == listener.as_raw_fd() {
                while let Ok((client, _)) = listener.accept() {
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    client.set_nonblocking(false)?;
                    client.set_nodelay(true)?;
                    server.set_nodelay(true)?;
                    let (c, s) = (client.into_raw_fd(), server.into_raw_fd());
                    let need = c.max(s) as usize + 1;
                    if peer.len() < need {
                        peer.resize(need * 2, -1);
                    }
                    peer[c as usize] = s;
                    peer[s as usize] = c;
                    watch(epoll, c)?;
                    watch(epoll, s)?;
                }
                continue;
            }
            let other = peer[fd as usize];
            if other < 0 {
                continue; // closed earlier in this batch
            }
            // SAFETY: buf is a live buffer of BUF bytes.
            let got = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), BUF, libc::MSG_DONTWAIT) };
            if got > 0 {
                if send_all(other, &buf[..got as usize]).is_err() {
                    close_pair(epoll, &mut peer, fd);
                }
            } else if got == 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                close_pair(epoll, &mut peer, fd);
            }
        }
    }
}
