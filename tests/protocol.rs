//! Protocol-level behaviour checked with a raw client that writes the
//! bytes itself: protocol 3.2 negotiation, GSSENCRequest and SSLRequest
//! answers, cancel keys of the negotiated length.

mod common;

use common::*;
use pgbranch::protocol::backend::{error_code, negotiated_minor};
use pgbranch::protocol::startup::{cancel_request, ssl_request};
use pgbranch::protocol::{query_message, read_u32, PROTOCOL_3_0, PROTOCOL_3_2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn protocol_3_2_negotiation_is_relayed_and_cancel_keys_follow_it() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let (mut s, msgs) = RawConn::connect_version(
        proxy.port(),
        PROTOCOL_3_2,
        &[
            ("user", b"postgres"),
            ("database", db.as_bytes()),
            ("_pq_.pgbranch_test", b"1"),
        ],
    )
    .await;
    // PostgreSQL 15 answers 3.2 with NegotiateProtocolVersion (newest
    // minor 0, listing the unknown protocol option); it reaches the client.
    let (_, v) = msgs
        .iter()
        .find(|(t, _)| *t == b'v')
        .expect("NegotiateProtocolVersion relayed");
    assert_eq!(negotiated_minor(v), Some(0));
    assert!(String::from_utf8_lossy(v).contains("_pq_.pgbranch_test"));
    // The key has the negotiated (3.0) length, with the real backend PID.
    let (_, k) = msgs
        .iter()
        .find(|(t, _)| *t == b'K')
        .expect("BackendKeyData");
    assert_eq!(k.len(), 8);
    let pid = read_u32(k, 0) as i32;
    let secret = k[4..].to_vec();

    s.send(&query_message("SELECT pg_backend_pid()")).await;
    let rows = s.until_ready().await;
    let (_, data_row) = rows.iter().find(|(t, _)| *t == b'D').unwrap();
    assert_eq!(String::from_utf8_lossy(&data_row[6..]), pid.to_string());

    // The proxy-issued key cancels the right query.
    s.send(&query_message("SELECT pg_sleep(60)")).await;
    let direct = connect(&cluster().direct(&db)).await;
    wait_query_active(&direct, pid, "pg_sleep(60)").await;
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(&cancel_request(pid, &secret)).await.unwrap();
    let mut sink = Vec::new();
    let _ = c.read_to_end(&mut sink).await;
    let reply = s.until_ready_allow_errors().await;
    let (_, err) = reply
        .iter()
        .find(|(t, _)| *t == b'E')
        .expect("ErrorResponse");
    assert_eq!(error_code(err).as_deref(), Some("57014"));
    proxy.stop().await;
}

#[tokio::test]
async fn gssenc_and_ssl_requests_are_refused_cleanly_without_tls() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // GSSENCRequest, then SSLRequest, each answered 'N'; startup goes on.
    let mut gss = 8u32.to_be_bytes().to_vec();
    gss.extend_from_slice(&80_877_104u32.to_be_bytes());
    s.write_all(&gss).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'N');
    s.write_all(&ssl_request()).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'N');
    let msgs = RawConn::new(s)
        .login(
            PROTOCOL_3_0,
            &[("user", b"postgres"), ("database", db.as_bytes())],
        )
        .await;
    assert_eq!(msgs.last().unwrap().1, b"I");
    proxy.stop().await;
}

#[tokio::test]
async fn unsupported_protocol_version_is_refused() {
    let proxy = start_proxy(test_config()).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut v2 = 9u32.to_be_bytes().to_vec();
    v2.extend_from_slice(&(2u32 << 16).to_be_bytes());
    v2.push(0);
    s.write_all(&v2).await.unwrap();
    let (tag, body) = RawConn::new(s).recv().await;
    assert_eq!(tag, b'E');
    assert_eq!(error_code(&body).as_deref(), Some("08P01"));
    assert!(String::from_utf8_lossy(&body).contains("unsupported frontend protocol 2.0"));
    proxy.stop().await;
}

/// A client that answers a password request with another message is told
/// why the connection ends, instead of being dropped silently.
#[tokio::test]
async fn wrong_message_during_authentication_gets_a_protocol_error() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let mut raw = RawConn::new(tcp);
    let startup = pgbranch::protocol::startup::StartupMessage {
        version: PROTOCOL_3_0,
        params: vec![
            (b"user".to_vec(), b"pgb_md5".to_vec()),
            (b"database".to_vec(), db.into_bytes()),
        ],
    };
    raw.send(&startup.encode()).await;
    let (tag, body) = raw.recv().await;
    assert_eq!(tag, b'R');
    assert_eq!(read_u32(&body, 0), 5, "md5 password requested");
    raw.send(&query_message("SELECT 1")).await;
    let (tag, body) = raw.recv().await;
    assert_eq!(tag, b'E');
    assert_eq!(error_code(&body).as_deref(), Some("08P01"));
    assert!(String::from_utf8_lossy(&body).contains("expected an authentication response"));
    assert!(raw.recv_opt().await.is_none(), "connection closed");
    proxy.stop().await;
}
