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
//! With THREADS > 1 (default 1), each thread has its own `epoll` set and
//! the accepting thread hands new connections to them in turn: the bound
//! for a relay that spreads its sessions over threads. With `PLACE=cpu` in
//! the environment, thread k runs on CPU k only and a connection goes to
//! the thread of the CPU its client's packets arrive on
//! (`SO_INCOMING_CPU`; CPU c goes to thread c mod THREADS; each choice is
//! logged to stderr).
//!
//! Usage: [PLACE=cpu] pgbranch-bench-epoll LISTEN_ADDR UPSTREAM_ADDR [THREADS]

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{
    AtomicI32, AtomicU32, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::Arc;

const BUF: usize = 64 * 1024;
const EVENTS: usize = 64;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Watches `fd` in `epoll`; its events carry the descriptor and the
/// generation of its pair.
fn watch(epoll: RawFd, fd: RawFd, gen: u32) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: (u64::from(gen) << 32) | fd as u64,
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

/// The relayed descriptors, indexed by descriptor: written by the
/// accepting thread before a pair is watched, cleared by the one thread
/// that watches the pair.
struct Table {
    /// The other side of the descriptor's pair, -1 when it is not relayed.
    peer: Vec<AtomicI32>,
    /// Raised for each new pair on the descriptor: an event still queued
    /// for a closed pair whose descriptor number was reused is skipped.
    gen: Vec<AtomicU32>,
}

type Shared = Arc<Table>;

const MAX_FDS: usize = 65536;

/// Closes `fd` and its peer, once.
fn close_pair(t: &Table, fd: RawFd) {
    let other = t.peer[fd as usize].swap(-1, Relaxed);
    if other < 0 {
        return;
    }
    t.peer[other as usize].store(-1, Relaxed);
    for f in [fd, other] {
        // SAFETY: f is an open descriptor of this relay, closed once (the
        // swap above took the pair); closing it also removes it from its
        // epoll set.
        unsafe { libc::close(f) };
    }
}

/// Relays every pair watched by `epoll`, forever.
fn relay(epoll: RawFd, t: Shared) -> io::Result<()> {
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
            let (fd, gen) = (ev.u64 as u32 as RawFd, (ev.u64 >> 32) as u32);
            if t.gen[fd as usize].load(Acquire) != gen {
                continue; // a pair closed earlier, its number reused since
            }
            let other = t.peer[fd as usize].load(Acquire);
            if other < 0 {
                continue; // closed earlier in this batch
            }
            // SAFETY: buf is a live buffer of BUF bytes.
            let got = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), BUF, libc::MSG_DONTWAIT) };
            if got > 0 {
                if send_all(other, &buf[..got as usize]).is_err() {
                    close_pair(&t, fd);
                }
            } else if got == 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                close_pair(&t, fd);
            }
        }
    }
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:6433".into());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:5432".into());
    let threads: usize = match args.next() {
        Some(t) => t.parse().ok().filter(|&t| t > 0).ok_or_else(|| {
            io::Error::other(format!("THREADS must be a positive number, not {t:?}"))
        })?,
        None => 1,
    };
    let by_cpu = std::env::var("PLACE").is_ok_and(|p| p == "cpu");
    let listener = TcpListener::bind(&listen)?;
    let table: Shared = Arc::new(Table {
        peer: (0..MAX_FDS).map(|_| AtomicI32::new(-1)).collect(),
        gen: (0..MAX_FDS).map(|_| AtomicU32::new(0)).collect(),
    });
    let mut sets = Vec::with_capacity(threads);
    for k in 0..threads {
        // SAFETY: plain system call.
        let epoll = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let t = table.clone();
        std::thread::spawn(move || {
            let run = || {
                if by_cpu {
                    pin(k)?;
                }
                relay(epoll, t)
            };
            // A thread that stops would leave its connections hanging.
            if let Err(e) = run() {
                eprintln!("relay thread {k}: {e}");
                std::process::exit(1);
            }
        });
        sets.push(epoll);
    }
    for (i, client) in listener.incoming().enumerate() {
        let Ok(client) = client else { continue };
        let i = match by_cpu.then(|| incoming_cpu(client.as_raw_fd())) {
            Some(Some(cpu)) => {
                eprintln!("connection from CPU {cpu} to thread {}", cpu % threads);
                cpu
            }
            _ => i,
        };
        let Ok(server) = TcpStream::connect(&upstream) else {
            continue;
        };
        if let Err(e) = client.set_nodelay(true).and(server.set_nodelay(true)) {
            eprintln!("connection dropped: {e}");
            continue;
        }
        let (c, s) = (client.into_raw_fd(), server.into_raw_fd());
        if c.max(s) as usize >= MAX_FDS {
            // SAFETY: both are open and ours.
            unsafe {
                libc::close(c);
                libc::close(s);
            }
            continue;
        }
        table.peer[c as usize].store(s, Release);
        table.peer[s as usize].store(c, Release);
        let gc = table.gen[c as usize].fetch_add(1, Release).wrapping_add(1);
        let gs = table.gen[s as usize].fetch_add(1, Release).wrapping_add(1);
        let epoll = sets[i % threads];
        if let Err(e) = watch(epoll, c, gc).and(watch(epoll, s, gs)) {
            eprintln!("connection dropped: {e}");
            close_pair(&table, c);
        }
    }
    Ok(())
}

/// Runs the calling thread on CPU `cpu` only.
fn pin(cpu: usize) -> io::Result<()> {
    // SAFETY: set is a plain bit set, initialised by CPU_ZERO.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        check(libc::sched_setaffinity(
            0,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        ))?;
    }
    Ok(())
}

/// The CPU the socket's packets were last received on.
fn incoming_cpu(fd: RawFd) -> Option<usize> {
    let mut cpu: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: cpu and len are live and sized for the option.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_INCOMING_CPU,
            (&mut cpu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0 && cpu >= 0).then_some(cpu as usize)
}
