//! Streaming through the proxy: COPY of 100+ MB each way with bounded proxy
//! memory, backpressure from a client that stops reading, non-UTF-8 client
//! encodings byte for byte, large objects (FunctionCall), notices inside
//! result streams, and ParameterStatus relayed exactly as the server sent it.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use pgbranch::protocol::query_message;

/// Limit for the proxy process's peak resident memory, far below the
/// amount of data that passes through it.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// The columns of a DataRow body (None for NULL).
fn data_row_columns(body: &[u8]) -> Vec<Option<Vec<u8>>> {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut cols = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4;
        if len < 0 {
            cols.push(None);
        } else {
            cols.push(Some(body[at..at + len as usize].to_vec()));
            at += len as usize;
        }
    }
    assert_eq!(at, body.len(), "DataRow fully consumed");
    cols
}

/// ParameterStatus messages as (name, value) pairs.
fn parameter_statuses(msgs: &[Msg]) -> Vec<(String, String)> {
    msgs.iter()
        .filter(|(t, _)| *t == b'S')
        .map(|(_, b)| {
            let mut parts = b.split(|&c| c == 0);
            let name = String::from_utf8(parts.next().unwrap().to_vec()).unwrap();
            let value = String::from_utf8(parts.next().unwrap().to_vec()).unwrap();
            (name, value)
        })
        .collect()
}

/// Starts the proxy binary in front of the shared cluster (off the runtime's
/// threads: starting waits for the port).
async fn start_proxy_binary() -> ProxyProcess {
    let url = cluster().tcp_url();
    tokio::task::spawn_blocking(move || ProxyProcess::start(&url, &[], &[]))
        .await
        .unwrap()
}

async fn fresh_db() -> String {
    tokio::task::spawn_blocking(|| cluster().fresh_db())
        .await
        .unwrap()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------
// 1. COPY in both directions through the binary, memory bounded.
// ---------------------------------------------------------------------

const COPY_ROWS: u64 = 105_000;
const PAD: &str = "abcdefghijklmnopqrstuvwxyz";
const PAD_REPEAT: usize = 39; // 10 digits + 26 * 39 = 1024 bytes per value

/// The `v` value of row `id`.
fn copy_value(id: u64) -> String {
    format!("{id:010}{}", PAD.repeat(PAD_REPEAT))
}

/// Bytes of the COPY text representation of all rows (id, tab, v, newline).
fn copy_total_bytes() -> u64 {
    (1..=COPY_ROWS)
        .map(|id| id.to_string().len() as u64 + 1 + 1024 + 1)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_100mb_each_way_through_the_binary_with_bounded_memory() {
    let db = fresh_db().await;
    let proxy = start_proxy_binary().await;
    let client = connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}",
        proxy.port
    ))
    .await;
    client
        .batch_execute("CREATE UNLOGGED TABLE big (id bigint, v text)")
        .await
        .unwrap();
    let (rss_start, _) = rss_kib(proxy.pid());

    // COPY FROM STDIN: rows generated chunk by chunk (~256 KB CopyData
    // messages, far larger than the proxy's relay buffer).
    let expected_bytes = copy_total_bytes();
    assert!(expected_bytes > 100 * 1024 * 1024, "{expected_bytes}");
    let sink = client
        .copy_in::<_, Bytes>("COPY big (id, v) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let mut chunk = String::with_capacity(300 * 1024);
    let mut sent = 0u64;
    for id in 1..=COPY_ROWS {
        chunk.push_str(&id.to_string());
        chunk.push('\t');
        chunk.push_str(&copy_value(id));
        chunk.push('\n');
        if chunk.len() >= 256 * 1024 || id == COPY_ROWS {
            sent += chunk.len() as u64;
            sink.send(Bytes::from(std::mem::take(&mut chunk)))
                .await
                .unwrap();
            chunk.reserve(300 * 1024);
        }
    }
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, COPY_ROWS);
    assert_eq!(sent, expected_bytes);
    let (rss_after_in, hwm_after_in) = rss_kib(proxy.pid());

    // Everything arrived, byte for byte.
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), sum(length(v))::bigint, sum(id)::bigint,
                        count(*) FILTER (WHERE v = lpad(id::text, 10, '0') || repeat('{PAD}', {PAD_REPEAT}))
                 FROM big"
            ),
            &[],
        )
        .await
        .unwrap();
    let n = COPY_ROWS as i64;
    assert_eq!(row.get::<_, i64>(0), n);
    assert_eq!(row.get::<_, i64>(1), n * 1024);
    assert_eq!(row.get::<_, i64>(2), n * (n + 1) / 2);
    assert_eq!(row.get::<_, i64>(3), n, "rows with exactly the sent value");

    // COPY TO STDOUT: counted and checked line by line while streaming.
    let stream = client.copy_out("COPY big (id, v) TO STDOUT").await.unwrap();
    futures_util::pin_mut!(stream);
    let mut received = 0u64;
    let mut lines = 0u64;
    let mut id_sum = 0u64;
    let mut partial: Vec<u8> = Vec::new();
    while let Some(data) = stream.next().await {
        let data = data.unwrap();
        received += data.len() as u64;
        partial.extend_from_slice(&data);
        let mut consumed = 0;
        while let Some(nl) = partial[consumed..].iter().position(|&b| b == b'\n') {
            let line = &partial[consumed..consumed + nl];
            let tab = line.iter().position(|&b| b == b'\t').expect("tab");
            let id: u64 = std::str::from_utf8(&line[..tab]).unwrap().parse().unwrap();
            assert_eq!(&line[tab + 1..], copy_value(id).as_bytes(), "row {id}");
            id_sum += id;
            lines += 1;
            consumed += nl + 1;
        }
        partial.drain(..consumed);
        assert!(partial.len() < 4096, "line longer than any row");
    }
    assert!(partial.is_empty(), "trailing partial line");
    assert_eq!(lines, COPY_ROWS);
    assert_eq!(received, expected_bytes);
    assert_eq!(id_sum, COPY_ROWS * (COPY_ROWS + 1) / 2);

    let (rss_end, hwm_end) = rss_kib(proxy.pid());
    eprintln!(
        "proxy RSS: start {:.1} MiB, after COPY IN {:.1} MiB (peak {:.1}), after COPY OUT {:.1} MiB (peak {:.1}); {:.1} MiB each way",
        mib(rss_start),
        mib(rss_after_in),
        mib(hwm_after_in),
        mib(rss_end),
        mib(hwm_end),
        expected_bytes as f64 / 1048576.0
    );
    assert!(
        hwm_end < RSS_LIMIT_KIB,
        "proxy peak RSS {hwm_end} KiB after {expected_bytes} bytes each way"
    );
    client.batch_execute("DROP TABLE big").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_in_and_out_through_the_simple_protocol() {
    let db = fresh_db().await;
    let proxy = start_proxy_binary().await;
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}",
        proxy.port
    );
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.tsv");
    let output = dir.path().join("out.tsv");
    // ~5 MB with escapes and multibyte text, which COPY must keep intact.
    let mut data = String::new();
    for id in 1..=20_000u32 {
        data.push_str(&format!(
            "{id}\tzeile {id} \\t mit tab, ünïcödé € and a backslash \\\\ {}\n",
            "q".repeat(200)
        ));
    }
    std::fs::write(&input, &data).unwrap();
    let (ok, _, stderr) = psql(
        &conn,
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "CREATE TABLE c (id int primary key, v text)",
            "-c",
            &format!("\\copy c FROM '{}'", input.display()),
            "-c",
            &format!(
                "\\copy (SELECT * FROM c ORDER BY id) TO '{}'",
                output.display()
            ),
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let back = std::fs::read(&output).unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data.as_bytes(), "psql COPY round trip differs");
    let direct = connect(&cluster().direct(&db)).await;
    let row = direct
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE strpos(v, E'\\t') > 0 AND strpos(v, 'ünïcödé € and a backslash \\ q') > 0) FROM c",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 20_000);
    assert_eq!(row.get::<_, i64>(1), 20_000);
}

// ---------------------------------------------------------------------
// 2. Backpressure: a client that stops reading blocks the server, not the
//    proxy's memory.
// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stops_reading_blocks_the_server_not_proxy_memory() {
    let db = fresh_db().await;
    let proxy = start_proxy_binary().await;
    let direct = connect(&cluster().direct(&db)).await;

    let (mut raw, _) = RawConn::connect(
        proxy.port,
        &[("user", b"postgres"), ("database", db.as_bytes())],
    )
    .await;
    // About 2 GB of result; the client reads none of it for now.
    raw.send(&query_message(
        "SELECT repeat('x', 1000) FROM generate_series(1, 2000000)",
    ))
    .await;

    let probe = "SELECT pid, wait_event FROM pg_stat_activity
                 WHERE query LIKE 'SELECT repeat%' AND datname = current_database()
                   AND pid <> pg_backend_pid()";
    // The backend must sit in ClientWrite for several consecutive polls
    // (a full send buffer can show ClientWrite for a moment while the
    // proxy is still reading; a stalled relay shows it for good).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut streak = 0;
    let backend_pid = loop {
        let rows = direct.query(probe, &[]).await.unwrap();
        let last = rows
            .iter()
            .map(|r| (r.get::<_, i32>(0), r.get::<_, Option<String>>(1)))
            .collect::<Vec<_>>();
        match last.as_slice() {
            [(pid, Some(w))] if w == "ClientWrite" => {
                streak += 1;
                if streak >= 10 {
                    break *pid;
                }
            }
            _ => streak = 0,
        }
        assert!(
            Instant::now() < deadline,
            "the backend never stayed blocked on ClientWrite: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The proxy holds only a buffer's worth, not the result.
    let (rss, hwm) = rss_kib(proxy.pid());
    eprintln!(
        "proxy RSS with the backend blocked on ClientWrite: {:.1} MiB (peak {:.1} MiB)",
        mib(rss),
        mib(hwm)
    );
    assert!(hwm < RSS_LIMIT_KIB, "proxy peak RSS {hwm} KiB");

    // The stream resumes intact when the client reads again.
    let (tag, body) = raw.recv().await;
    assert_eq!(tag, b'T', "RowDescription first");
    assert!(!body.is_empty());
    for _ in 0..5_000 {
        let (tag, body) = raw.recv().await;
        assert_eq!(tag, b'D');
        assert_eq!(data_row_columns(&body), vec![Some(vec![b'x'; 1000])]);
    }

    let terminated: bool = direct
        .query_one("SELECT pg_terminate_backend($1)", &[&backend_pid])
        .await
        .unwrap()
        .get(0);
    assert!(terminated);
    raw.terminate().await;
    wait_backend_gone(&direct, backend_pid).await;
    // The proxy serves on.
    let c = connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}",
        proxy.port
    ))
    .await;
    let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

// ---------------------------------------------------------------------
// 3. Non-UTF-8 client encoding: bytes pass unchanged.
// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_bytes_pass_through_unchanged() {
    let db = format!("latin1_{}", std::process::id());
    let create = format!(
        "CREATE DATABASE {db} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    );
    tokio::task::spawn_blocking(move || cluster().psql_socket("postgres", &create))
        .await
        .unwrap();
    let proxy = start_proxy(test_config()).await;

    let (mut raw, startup) = RawConn::connect(
        proxy.port(),
        &[
            ("user", b"postgres"),
            ("database", db.as_bytes()),
            ("client_encoding", b"LATIN1"),
        ],
    )
    .await;
    let params: BTreeMap<_, _> = parameter_statuses(&startup).into_iter().collect();
    assert_eq!(params["client_encoding"], "LATIN1");
    assert_eq!(params["server_encoding"], "LATIN1");

    // 0xE9 is 'é' in LATIN1 and not valid UTF-8 on its own.
    raw.send_query_bytes(
        b"CREATE TABLE t (v text); INSERT INTO t VALUES ('caf\xe9 cr\xe8me'); \
          SELECT v, length(v), octet_length(v), v = 'caf\xe9 cr\xe8me' FROM t",
    )
    .await;
    let msgs = raw.until_ready().await;
    let rows: Vec<_> = msgs
        .iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, b)| data_row_columns(b))
        .collect();
    assert_eq!(
        rows,
        vec![vec![
            Some(b"caf\xe9 cr\xe8me".to_vec()),
            Some(b"10".to_vec()),
            Some(b"10".to_vec()),
            Some(b"t".to_vec()),
        ]]
    );
    raw.terminate().await;

    // The server stored 'é' (seen by a UTF-8 client directly).
    let direct = connect(&cluster().direct(&db)).await;
    let v: String = direct
        .query_one("SELECT v FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "café crème");

    // psql with PGCLIENTENCODING=LATIN1: a script file with LATIN1 bytes
    // in, LATIN1 bytes out.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("q.sql");
    std::fs::write(
        &script,
        b"INSERT INTO t VALUES ('na\xefve');\nSELECT v FROM t ORDER BY v;\n",
    )
    .unwrap();
    let out = tokio::process::Command::new("psql")
        .arg("-X")
        .arg(proxy.conn_str("postgres", &db))
        .args(["-q", "-At", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&script)
        .env("PGCLIENTENCODING", "LATIN1")
        .env_remove("PGPASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"caf\xe9 cr\xe8me\nna\xefve\n".to_vec());
    let v: String = direct
        .query_one("SELECT v FROM t WHERE v LIKE 'na%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "naïve");
    proxy.stop().await;
}

// ---------------------------------------------------------------------
// 4. Large objects: libpq's lo_* API speaks FunctionCall.
// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_object_import_export_through_function_calls() {
    let db = fresh_db().await;
    let proxy = start_proxy(test_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("blob.bin");
    let output = dir.path().join("blob.out");
    // 3 MB of every byte value in a pseudo-random order.
    let mut data = Vec::with_capacity(3 * 1024 * 1024 + 17);
    let mut x: u32 = 0x1234_5678;
    while data.len() < 3 * 1024 * 1024 + 17 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push((x >> 7) as u8);
    }
    std::fs::write(&input, &data).unwrap();
    let (ok, stdout, stderr) = psql(
        &proxy.conn_str("postgres", &db),
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("\\lo_import '{}'", input.display()),
            "-c",
            &format!("\\lo_export :LASTOID '{}'", output.display()),
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let oid: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("lo_import "))
        .unwrap_or_else(|| panic!("no lo_import line in {stdout:?}"))
        .trim()
        .parse()
        .unwrap();
    let back = std::fs::read(&output).unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "large object round trip differs");

    let direct = connect(&cluster().direct(&db)).await;
    let stored: Vec<u8> = direct
        .query_one("SELECT lo_get($1)", &[&oid])
        .await
        .unwrap()
        .get(0);
    assert!(stored == data, "stored large object differs");
    proxy.stop().await;
}

// ---------------------------------------------------------------------
// 5. Notices and warnings.
// ---------------------------------------------------------------------

/// The next notice or warning from a connection's message stream.
async fn next_notice(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
) -> Result<tokio_postgres::error::DbError, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let tokio_postgres::AsyncMessage::Notice(n) =
                rx.recv().await.expect("connection alive")
            {
                return n;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_arrive_and_a_warning_mid_stream_does_not_break_it() {
    let db = fresh_db().await;
    let proxy = start_proxy(test_config()).await;
    let (client, mut rx) = connect_with_messages(&proxy.conn_str("postgres", &db)).await;
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello %', 1; END $$")
        .await
        .unwrap();
    let notice = next_notice(&mut rx).await.expect("notice arrives");
    assert_eq!(notice.severity(), "NOTICE");
    assert_eq!(notice.message(), "hello 1");

    // A WARNING raised while rows are being sent, half-way through.
    client
        .batch_execute(
            "CREATE FUNCTION warn_at(i int) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN RAISE WARNING 'half way at %', i; RETURN 'warned'; END $$",
        )
        .await
        .unwrap();
    let sql = "SELECT i, CASE WHEN i = 50000 THEN warn_at(i) ELSE repeat('y', 100) END
               FROM generate_series(1, 100000) i";
    let rows = client.query(sql, &[]).await.unwrap();
    assert_eq!(rows.len(), 100_000);
    for (n, r) in rows.iter().enumerate() {
        let i: i32 = r.get(0);
        let v: &str = r.get(1);
        assert_eq!(i as usize, n + 1);
        if i == 50_000 {
            assert_eq!(v, "warned");
        } else {
            assert_eq!(v.len(), 100);
        }
    }
    let warning = next_notice(&mut rx).await.expect("warning arrives");
    assert_eq!(warning.severity(), "WARNING");
    assert_eq!(warning.message(), "half way at 50000");

    // Byte level: the NoticeResponse sits between the DataRows, where the
    // server put it.
    let (mut raw, _) = RawConn::connect(
        proxy.port(),
        &[("user", b"postgres"), ("database", db.as_bytes())],
    )
    .await;
    raw.send(&query_message(sql)).await;
    let msgs = raw.until_ready().await;
    let notice_at = msgs
        .iter()
        .position(|(t, _)| *t == b'N')
        .expect("NoticeResponse");
    let before = msgs[..notice_at].iter().filter(|(t, _)| *t == b'D').count();
    let after = msgs[notice_at..].iter().filter(|(t, _)| *t == b'D').count();
    assert_eq!((before, after), (49_999, 50_001));
    assert!(String::from_utf8_lossy(&msgs[notice_at].1).contains("half way at 50000"));
    raw.terminate().await;
    proxy.stop().await;
}

// ---------------------------------------------------------------------
// 6. ParameterStatus.
// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_status_reaches_the_client_as_sent() {
    let db = fresh_db().await;
    let proxy = start_proxy(test_config()).await;
    let params: &[(&str, &[u8])] = &[
        ("user", b"postgres"),
        ("database", db.as_bytes()),
        ("application_name", b"ps_test"),
        ("client_encoding", b"UTF8"),
        ("DateStyle", b"ISO, DMY"),
    ];
    let (mut direct, direct_msgs) = RawConn::connect(cluster().port, params).await;
    let (mut via_proxy, proxy_msgs) = RawConn::connect(proxy.port(), params).await;
    let direct_ps = parameter_statuses(&direct_msgs);
    let proxy_ps = parameter_statuses(&proxy_msgs);
    let direct_map: BTreeMap<_, _> = direct_ps.iter().cloned().collect();
    let proxy_map: BTreeMap<_, _> = proxy_ps.iter().cloned().collect();
    assert_eq!(proxy_map, direct_map);
    assert_eq!(proxy_ps.len(), direct_ps.len(), "no duplicates, none lost");
    for name in [
        "application_name",
        "client_encoding",
        "DateStyle",
        "integer_datetimes",
        "IntervalStyle",
        "is_superuser",
        "server_encoding",
        "server_version",
        "session_authorization",
        "standard_conforming_strings",
        "TimeZone",
    ] {
        assert!(
            proxy_map.contains_key(name),
            "{name} missing: {proxy_map:?}"
        );
    }
    assert_eq!(proxy_map["application_name"], "ps_test");
    assert_eq!(proxy_map["DateStyle"], "ISO, DMY");

    for (sql, name, value) in [
        ("SET application_name = 'x'", "application_name", "x"),
        ("SET TimeZone = 'Asia/Tokyo'", "TimeZone", "Asia/Tokyo"),
        ("SET DateStyle = 'SQL, MDY'", "DateStyle", "SQL, MDY"),
        ("RESET application_name", "application_name", "ps_test"),
    ] {
        via_proxy.send(&query_message(sql)).await;
        let msgs = via_proxy.until_ready().await;
        // Exactly the messages, in the order, that the server sends a
        // direct client (PostgreSQL 14+ reports at ReadyForQuery).
        direct.send(&query_message(sql)).await;
        assert_eq!(msgs, direct.until_ready().await, "{sql}");
        assert_eq!(
            parameter_statuses(&msgs),
            vec![(name.to_string(), value.to_string())],
            "{sql}"
        );
    }
    via_proxy.terminate().await;
    direct.terminate().await;
    proxy.stop().await;
}
