//! The injection hook point: a test hook records every `CREATE TABLE` into
//! an audit table on the client's own upstream connection, inside the
//! client's transaction, and swallows the responses — exactly what DDL
//! history will do. The client must see the responses it would have seen
//! without the proxy, and the audit row must commit or roll back with the
//! statement.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use pgbranch::protocol::{put_message, query_message, read_u32, take_cstr};
use pgbranch::proxy::hooks::{ClientVerdict, HookFactory, SessionHook, SessionInfo};
use tokio_postgres::SimpleQueryMessage;

const AUDIT_INSERT: &str = "INSERT INTO audit(stmt) VALUES ($1)";

/// Records CREATE TABLE statements into `audit`.
#[derive(Default)]
struct AuditHook {
    /// Prepared statement name -> SQL.
    statements: HashMap<Vec<u8>, String>,
    /// Portal name -> SQL of its statement.
    portals: HashMap<Vec<u8>, String>,
    /// CREATE TABLE executed since the last Sync.
    executed: Option<String>,
}

fn is_create_table(sql: &str) -> bool {
    sql.trim_start()
        .to_ascii_uppercase()
        .starts_with("CREATE TABLE")
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Parse/Bind/Execute/Close of the audit insert on a named statement and
/// portal, so the client's unnamed ones are left alone.
fn injected_extended(sql: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut parse = b"pgb_audit\0".to_vec();
    parse.extend_from_slice(AUDIT_INSERT.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    put_message(&mut out, b'P', &parse);
    let mut bind = b"pgb_audit\0pgb_audit\0".to_vec();
    bind.extend_from_slice(&[0, 0, 0, 1]);
    bind.extend_from_slice(&(sql.len() as u32).to_be_bytes());
    bind.extend_from_slice(sql.as_bytes());
    bind.extend_from_slice(&[0, 0]);
    put_message(&mut out, b'B', &bind);
    put_message(&mut out, b'E', b"pgb_audit\0\0\0\0\0");
    put_message(&mut out, b'C', b"Ppgb_audit\0");
    put_message(&mut out, b'C', b"Spgb_audit\0");
    out
}

impl SessionHook for AuditHook {
    fn wants_client(&self, tag: u8) -> bool {
        matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'S')
    }

    fn on_client_message(&mut self, tag: u8, body: &[u8]) -> ClientVerdict {
        match tag {
            b'Q' => {
                let sql = String::from_utf8_lossy(take_cstr(body).unwrap().0).into_owned();
                if !is_create_table(&sql) {
                    return ClientVerdict::forward();
                }
                let rewritten = format!(
                    "{}; INSERT INTO audit(stmt) VALUES ({})",
                    sql.trim_end().trim_end_matches(';'),
                    quote_literal(&sql)
                );
                ClientVerdict {
                    replace: Some(query_message(&rewritten)),
                    swallow_statements: [1].into_iter().collect(),
                    ..ClientVerdict::default()
                }
            }
            b'P' => {
                let (name, rest) = take_cstr(body).unwrap();
                let sql = String::from_utf8_lossy(take_cstr(rest).unwrap().0).into_owned();
                self.statements.insert(name.to_vec(), sql);
                ClientVerdict::forward()
            }
            b'B' => {
                let (portal, rest) = take_cstr(body).unwrap();
                let (stmt, _) = take_cstr(rest).unwrap();
                let sql = self.statements.get(stmt).cloned().unwrap_or_default();
                self.portals.insert(portal.to_vec(), sql);
                ClientVerdict::forward()
            }
            b'E' => {
                let (portal, _) = take_cstr(body).unwrap();
                if let Some(sql) = self.portals.get(portal).filter(|s| is_create_table(s)) {
                    self.executed = Some(sql.clone());
                }
                ClientVerdict::forward()
            }
            b'S' => match self.executed.take() {
                Some(sql) => ClientVerdict {
                    before: injected_extended(&sql),
                    ..ClientVerdict::default()
                },
                None => ClientVerdict::forward(),
            },
            _ => ClientVerdict::forward(),
        }
    }
}

struct AuditHooks;

impl HookFactory for AuditHooks {
    fn create(&self, _: &SessionInfo) -> Box<dyn SessionHook> {
        Box::new(AuditHook::default())
    }
}

async fn audit_rows(db: &str) -> Vec<String> {
    let direct = connect(&cluster().direct(db)).await;
    column(&direct, "SELECT stmt FROM audit ORDER BY id").await
}

async fn setup() -> (String, TestProxy) {
    let db = cluster().fresh_db();
    cluster().psql_socket(
        &db,
        "CREATE TABLE audit (id serial primary key, stmt text not null)",
    );
    let proxy = start_proxy_with_hooks(
        test_config(),
        &cluster().tcp_url(),
        Some(Arc::new(AuditHooks)),
    )
    .await;
    (db, proxy)
}

#[tokio::test]
async fn simple_protocol_injection_is_atomic_and_invisible() {
    let (db, proxy) = setup().await;
    let client = connect(&proxy.conn_str("postgres", &db)).await;

    // The client sees exactly one CommandComplete: the INSERT's is swallowed.
    let msgs = client
        .simple_query("CREATE TABLE t1 (a int)")
        .await
        .unwrap();
    let completes: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(completes, vec![0]);
    assert_eq!(audit_rows(&db).await, vec!["CREATE TABLE t1 (a int)"]);

    // A failing statement leaves no audit row, and the client sees its error.
    let err = client
        .simple_query("CREATE TABLE t1 (a int)")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE)
    );
    assert_eq!(audit_rows(&db).await.len(), 1);

    // Rolled back with the client's transaction.
    client.simple_query("BEGIN").await.unwrap();
    client
        .simple_query("CREATE TABLE t2 (a int)")
        .await
        .unwrap();
    client.simple_query("ROLLBACK").await.unwrap();
    assert_eq!(audit_rows(&db).await.len(), 1);

    // Committed with it.
    client.simple_query("BEGIN").await.unwrap();
    client
        .simple_query("CREATE TABLE t3 (a int)")
        .await
        .unwrap();
    client.simple_query("COMMIT").await.unwrap();
    assert_eq!(audit_rows(&db).await.len(), 2);

    // Statements the hook leaves alone are untouched, and the session is
    // in a normal state afterwards.
    let n: i64 = client
        .query_one("SELECT count(*) FROM t1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    proxy.stop().await;
}

#[tokio::test]
async fn extended_protocol_injection_before_sync() {
    let (db, proxy) = setup().await;
    let client = connect(&proxy.conn_str("postgres", &db)).await;

    // tokio-postgres: Parse/Describe/Sync, then Bind/Execute/Sync; the hook
    // injects its Parse/Bind/Execute/Close before the second Sync.
    let n = client
        .execute("CREATE TABLE e1 (a int)", &[])
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(audit_rows(&db).await, vec!["CREATE TABLE e1 (a int)"]);

    // Failure: the server skips everything up to Sync, injected messages
    // included; nothing is recorded and the client sees its own error.
    let err = client
        .execute("CREATE TABLE e1 (a int)", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE)
    );
    assert_eq!(audit_rows(&db).await.len(), 1);

    // Explicit transaction rolled back: no row.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute("CREATE TABLE e2 (a int)", &[])
        .await
        .unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(audit_rows(&db).await.len(), 1);

    // Pipelined statements around an injection keep their responses.
    let (a, b, c) = tokio::join!(
        client.query_one("SELECT 1::int", &[]),
        client.execute("CREATE TABLE e3 (a int)", &[]),
        client.query_one("SELECT 3::int", &[]),
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(b.unwrap(), 0);
    assert_eq!(c.unwrap().get::<_, i32>(0), 3);
    assert_eq!(
        audit_rows(&db).await,
        vec!["CREATE TABLE e1 (a int)", "CREATE TABLE e3 (a int)"]
    );
    proxy.stop().await;
}

#[test]
fn injected_frames_are_well_formed() {
    let bytes = injected_extended("CREATE TABLE x ()");
    let mut at = 0;
    let mut tags = Vec::new();
    while at < bytes.len() {
        tags.push(bytes[at]);
        at += 1 + read_u32(&bytes, at + 1) as usize;
    }
    assert_eq!(at, bytes.len());
    assert_eq!(tags, b"PBECC");
}
