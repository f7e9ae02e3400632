//! A hand-written protocol client, so a test controls every byte and when
//! (or whether) anything is read.

use std::time::Duration;

use pgbranch::protocol::put_message;
use pgbranch::protocol::startup::StartupMessage;
use pgbranch::protocol::PROTOCOL_3_0;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long one protocol message may take to arrive before the test fails.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(60);

pub struct RawConn {
    io: BufReader<TcpStream>,
}

pub type Msg = (u8, Vec<u8>);

impl RawConn {
    /// Connects, sends a StartupMessage with `params` (trust auth expected)
    /// and returns the connection and every message up to and including
    /// ReadyForQuery.
    pub async fn connect(port: u16, params: &[(&str, &[u8])]) -> (RawConn, Vec<Msg>) {
        Self::connect_version(port, PROTOCOL_3_0, params).await
    }

    /// [`RawConn::connect`] with a chosen protocol version.
    pub async fn connect_version(
        port: u16,
        version: u32,
        params: &[(&str, &[u8])],
    ) -> (RawConn, Vec<Msg>) {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut conn = RawConn::new(tcp);
        let msgs = conn.login(version, params).await;
        (conn, msgs)
    }

    /// Wraps a connected socket (e.g. after SSLRequest/GSSENCRequest
    /// exchanges done by hand).
    pub fn new(tcp: TcpStream) -> RawConn {
        tcp.set_nodelay(true).unwrap();
        RawConn {
            io: BufReader::new(tcp),
        }
    }

    /// Sends a StartupMessage with `params` (trust auth expected) and
    /// returns every message up to and including ReadyForQuery.
    pub async fn login(&mut self, version: u32, params: &[(&str, &[u8])]) -> Vec<Msg> {
        let startup = StartupMessage {
            version,
            params: params
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
                .collect(),
        };
        self.send(&startup.encode()).await;
        let msgs = self.until_ready().await;
        let (_, body) = msgs.iter().find(|m| m.0 == b'R').expect("authentication");
        assert_eq!(&body[..4], &[0, 0, 0, 0], "expected AuthenticationOk");
        msgs
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    /// Sends a simple Query whose text is given as raw bytes (any encoding).
    pub async fn send_query_bytes(&mut self, sql: &[u8]) {
        let mut body = sql.to_vec();
        body.push(0);
        let mut msg = Vec::new();
        put_message(&mut msg, b'Q', &body);
        self.send(&msg).await;
    }

    pub async fn recv(&mut self) -> Msg {
        let read = async {
            let tag = self.io.read_u8().await?;
            let len = self.io.read_u32().await? as usize;
            assert!(len >= 4, "bad message length {len}");
            let mut body = vec![0; len - 4];
            self.io.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>((tag, body))
        };
        tokio::time::timeout(RECV_TIMEOUT, read)
            .await
            .expect("message arrives in time")
            .expect("connection stays open")
    }

    /// Reads messages up to and including ReadyForQuery; an ErrorResponse
    /// fails the test.
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        loop {
            let m = self.recv().await;
            assert_ne!(m.0, b'E', "server error: {}", String::from_utf8_lossy(&m.1));
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// Reads one message; `None` when the peer closed the connection
    /// cleanly between messages.
    pub async fn recv_opt(&mut self) -> Option<Msg> {
        let read = async {
            let tag = match self.io.read_u8().await {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            };
            let len = self.io.read_u32().await? as usize;
            assert!(len >= 4, "bad message length {len}");
            let mut body = vec![0; len - 4];
            self.io.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(Some((tag, body)))
        };
        tokio::time::timeout(RECV_TIMEOUT, read)
            .await
            .expect("message or EOF arrives in time")
            .expect("connection reads cleanly")
    }

    /// Reads messages up to and including ReadyForQuery, errors included.
    pub async fn until_ready_allow_errors(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        loop {
            let m = self.recv().await;
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
    }

    pub async fn terminate(mut self) {
        let _ = self.io.get_mut().write_all(&[b'X', 0, 0, 0, 4]).await;
    }
}
