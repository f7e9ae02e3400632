//! Protocol-level behaviour checked with a raw client that writes the
//! bytes itself: protocol 3.2 negotiation, GSSENCRequest and SSLRequest
//! answers, cancel keys of the negotiated length.

mod common;

use common::*;
use pgbranch::protocol::backend::{error_code, negotiated_minor};
use pgbranch::protocol::startup::{cancel_request, StartupMessage};
use pgbranch::protocol::{query_message, read_u32, PROTOCOL_3_2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one tagged message.
async fn read_msg(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let tag = s.read_u8().await.unwrap();
    let len = s.read_u32().await.unwrap() as usize;
    let mut body = vec![0; len - 4];
    s.read_exact(&mut body).await.unwrap();
    (tag, body)
}

/// Reads messages up to and including ReadyForQuery.
async fn read_until_ready(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let m = read_msg(s).await;
        let done = m.0 == b'Z';
        out.push(m);
        if done {
            return out;
        }
    }
}

fn startup(version: u32, db: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut params = vec![
        (b"user".to_vec(), b"postgres".to_vec()),
        (b"database".to_vec(), db.as_bytes().to_vec()),
    ];
    for (k, v) in extra {
        params.push((k.as_bytes().to_vec(), v.as_bytes().to_vec()));
    }
    StartupMessage { version, params }.encode()
}

#[tokio::test]
async fn protocol_3_2_negotiation_is_relayed_and_cancel_keys_follow_it() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&startup(PROTOCOL_3_2, &db, &[("_pq_.pgbranch_test", "1")]))
        .await
        .unwrap();
    let msgs = read_until_ready(&mut s).await;
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

    s.write_all(&query_message("SELECT pg_backend_pid()"))
        .await
        .unwrap();
    let rows = read_until_ready(&mut s).await;
    let (_, data_row) = rows.iter().find(|(t, _)| *t == b'D').unwrap();
    let pid_text = String::from_utf8_lossy(&data_row[6..]).to_string();
    assert_eq!(pid_text, pid.to_string());

    // The proxy-issued secret differs from nothing we can see upstream,
    // but it cancels the right query.
    s.write_all(&query_message("SELECT pg_sleep(60)"))
        .await
        .unwrap();
    // Wait until the query runs (bounded polling through a direct session).
    let direct = connect(&cluster().direct(&db)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let active: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query = 'SELECT pg_sleep(60)' AND state = 'active'",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if active == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "query never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(&cancel_request(pid, &secret)).await.unwrap();
    let mut sink = Vec::new();
    let _ = c.read_to_end(&mut sink).await;
    let reply = tokio::time::timeout(std::time::Duration::from_secs(20), read_until_ready(&mut s))
        .await
        .expect("cancel ended the query");
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
    s.write_all(&pgbranch::protocol::startup::ssl_request())
        .await
        .unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'N');
    s.write_all(&startup(pgbranch::protocol::PROTOCOL_3_0, &db, &[]))
        .await
        .unwrap();
    let msgs = read_until_ready(&mut s).await;
    assert!(msgs.iter().any(|(t, _)| *t == b'R'));
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
    let (tag, body) = read_msg(&mut s).await;
    assert_eq!(tag, b'E');
    assert_eq!(error_code(&body).as_deref(), Some("08P01"));
    assert!(String::from_utf8_lossy(&body).contains("unsupported frontend protocol 2.0"));
    proxy.stop().await;
}
