//! The relay frames the client's byte stream itself, so it must give the
//! same results however those bytes are cut into reads. Each case writes a
//! random pipeline (simple queries, extended-protocol sequences, failures,
//! notices, parameter changes, transactions) in random chunks of 1 to 64
//! bytes through the proxy, and compares every response with what the same
//! bytes, written at once, produce on a direct connection to PostgreSQL.
//!
//! Without a hook the relay forwards bytes it has only framed, so a framing
//! mistake shows in the responses only when it trips a length check. Each
//! case therefore also goes through two proxies with recording hooks: one
//! asks for every message, so the relay must hand each over whole (growing
//! its buffer past 32 KiB when needed); the other asks only for Query and
//! Parse (and CommandComplete, ErrorResponse, ReadyForQuery), as an SQL
//! classifier would, so the rest passes through framed by its header only.
//! Each hook's record must equal the messages written and read.
//!
//! The proxies are started once per test and shared by its cases: proptest
//! bodies are synchronous, so the proxies run on a multi-thread runtime built
//! here and each case blocks on its own client work.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use pgbranch::protocol::startup::StartupMessage;
use pgbranch::protocol::{put_message, query_message, read_u32, PROTOCOL_3_0};
use pgbranch::proxy::hooks::{ClientVerdict, HookFactory, SessionHook, SessionInfo};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// How long one response message may take before the case fails.
const MSG_TIMEOUT: Duration = Duration::from_secs(30);

/// One unit of the pipeline.
#[derive(Debug, Clone)]
enum Step {
    /// A simple Query.
    Simple(String),
    /// Parse / Bind / Describe / Execute [/ Flush] / Sync, all unnamed.
    Extended {
        sql: String,
        /// Text parameters (`None` = NULL).
        params: Vec<Option<String>>,
        /// Describe the statement (`S`) rather than the portal (`P`).
        describe_statement: bool,
        /// Execute's row limit (0 = all; otherwise PortalSuspended may come).
        max_rows: i32,
        flush: bool,
    },
}

impl Step {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Step::Simple(sql) => out.extend_from_slice(&query_message(sql)),
            Step::Extended {
                sql,
                params,
                describe_statement,
                max_rows,
                flush,
            } => {
                // Parse: unnamed statement, no parameter types.
                let mut b = vec![0];
                b.extend_from_slice(sql.as_bytes());
                b.push(0);
                b.extend_from_slice(&0i16.to_be_bytes());
                put_message(out, b'P', &b);
                // Bind: unnamed portal and statement, text everywhere.
                let mut b = vec![0, 0];
                b.extend_from_slice(&0i16.to_be_bytes());
                b.extend_from_slice(&(params.len() as i16).to_be_bytes());
                for p in params {
                    match p {
                        Some(v) => {
                            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                            b.extend_from_slice(v.as_bytes());
                        }
                        None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                    }
                }
                b.extend_from_slice(&0i16.to_be_bytes());
                put_message(out, b'B', &b);
                let kind = if *describe_statement { b'S' } else { b'P' };
                put_message(out, b'D', &[kind, 0]);
                let mut b = vec![0];
                b.extend_from_slice(&max_rows.to_be_bytes());
                put_message(out, b'E', &b);
                if *flush {
                    put_message(out, b'H', &[]);
                }
                put_message(out, b'S', &[]);
            }
        }
    }
}

/// The pipeline's bytes and how many ReadyForQuery it produces (one per
/// Query, one per Sync).
fn encode(steps: &[Step]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    for s in steps {
        s.encode(&mut out);
    }
    (out, steps.len())
}

fn simple_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just("SELECT 1".to_string()),
        Just("SELECT 1/0".to_string()),
        Just("SELEC 1".to_string()),
        Just(String::new()),
        Just("SELECT 1; SELECT 1/0; SELECT 3".to_string()),
        Just("SELECT 'a' AS x; ; SELECT 2".to_string()),
        (0u32..300).prop_map(|n| format!("SELECT generate_series(1, {n})")),
        // Rows larger than the relay buffer (32 KiB) now and then.
        (0u32..70_000).prop_map(|n| format!("SELECT repeat('x', {n}), {n}")),
        Just("DO $$BEGIN RAISE NOTICE 'notice from a pipeline'; END$$".to_string()),
        Just("SET application_name = 'chunked'".to_string()),
        Just("RESET application_name".to_string()),
        Just("BEGIN".to_string()),
        Just("COMMIT".to_string()),
        Just("ROLLBACK".to_string()),
    ]
    .prop_map(Step::Simple)
}

fn extended_step() -> impl Strategy<Value = Step> {
    let stmt = prop_oneof![
        Just(("SELECT 1".to_string(), vec![])),
        // Fails at Execute.
        Just(("SELECT 1/0".to_string(), vec![])),
        // Fails at Parse.
        Just(("SELEC 1".to_string(), vec![])),
        // Empty statement: EmptyQueryResponse.
        Just((String::new(), vec![])),
        // Fails at Bind when the parameter is not an integer.
        prop_oneof![
            (0i32..1000).prop_map(|n| Some(n.to_string())),
            Just(Some("abc".to_string())),
            Just(None),
        ]
        .prop_map(|p| ("SELECT $1::int + 1".to_string(), vec![p])),
        (0u32..300).prop_map(|n| (
            "SELECT generate_series(1, $1::int)".to_string(),
            vec![Some(n.to_string())]
        )),
        (0u32..70_000).prop_map(|n| (
            "SELECT repeat('y', $1::int)".to_string(),
            vec![Some(n.to_string())]
        )),
        Just((
            "DO $$BEGIN RAISE NOTICE 'extended notice'; END$$".to_string(),
            vec![]
        )),
    ];
    (
        stmt,
        any::<bool>(),
        prop_oneof![3 => Just(0), 1 => 1i32..5],
        any::<bool>(),
    )
        .prop_map(
            |((sql, params), describe_statement, max_rows, flush)| Step::Extended {
                sql,
                params,
                describe_statement,
                max_rows,
                flush,
            },
        )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![simple_step(), extended_step()]
}

/// Chunk sizes, used cyclically until the stream is written.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(1usize..=64, 1..32)
}

/// What a recording hook saw: client messages and server messages.
#[derive(Default)]
struct Seen {
    client: Vec<Msg>,
    server: Vec<Msg>,
}

/// Which tags a recording hook asks for (`None` = all).
#[derive(Clone, Copy)]
struct Interest {
    client: Option<&'static [u8]>,
    server: Option<&'static [u8]>,
}

impl Interest {
    fn client(&self, tag: u8) -> bool {
        self.client.is_none_or(|t| t.contains(&tag))
    }

    fn server(&self, tag: u8) -> bool {
        self.server.is_none_or(|t| t.contains(&tag))
    }
}

/// Every message whole.
const ALL: Interest = Interest {
    client: None,
    server: None,
};

/// What an SQL classifier would ask for: statements whole, everything
/// else (Bind, Execute, Sync, DataRow, …) passed through by its header.
const SOME: Interest = Interest {
    client: Some(b"QP"),
    server: Some(b"CEZ"),
};

/// A hook that forwards everything unchanged and records what it asked for.
struct Recording {
    interest: Interest,
    seen: Arc<Mutex<Seen>>,
}

impl SessionHook for Recording {
    fn wants_client(&self, tag: u8) -> bool {
        self.interest.client(tag)
    }

    fn on_client_message(&mut self, tag: u8, body: &[u8]) -> ClientVerdict {
        self.seen.lock().unwrap().client.push((tag, body.to_vec()));
        ClientVerdict::forward()
    }

    fn wants_server(&self, tag: u8) -> bool {
        self.interest.server(tag)
    }

    fn on_server_message(&mut self, tag: u8, body: &[u8]) -> Vec<u8> {
        self.seen.lock().unwrap().server.push((tag, body.to_vec()));
        Vec::new()
    }
}

/// Hands each session a [`Recording`] hook, filed under its
/// application_name (unique per case).
struct Recorder {
    interest: Interest,
    sessions: Mutex<HashMap<String, Arc<Mutex<Seen>>>>,
}

impl HookFactory for Recorder {
    fn create(&self, info: &SessionInfo) -> Box<dyn SessionHook> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let name = info.application_name.clone().unwrap_or_default();
        self.sessions
            .lock()
            .unwrap()
            .insert(name, Arc::clone(&seen));
        Box::new(Recording {
            interest: self.interest,
            seen,
        })
    }
}

/// A proxy whose hook records the messages it asks for.
struct Observed {
    proxy: TestProxy,
    recorder: Arc<Recorder>,
}

impl Observed {
    async fn start(interest: Interest) -> Observed {
        let recorder = Arc::new(Recorder {
            interest,
            sessions: Mutex::default(),
        });
        let factory: Arc<dyn HookFactory> = recorder.clone();
        let proxy =
            start_proxy_with_hooks(test_config(), &cluster().tcp_url(), Some(factory)).await;
        Observed { proxy, recorder }
    }

    /// Runs `exchange` through this proxy and checks that the hook saw
    /// exactly the messages of its interest, client and server side.
    async fn exchange(
        &self,
        db: &str,
        app: &str,
        bytes: &[u8],
        chunks: &[usize],
        readies: usize,
    ) -> Result<Vec<Msg>, TestCaseError> {
        let msgs = exchange(self.proxy.port(), db, app, bytes, chunks, readies).await;
        let seen = self
            .recorder
            .sessions
            .lock()
            .unwrap()
            .remove(app)
            .expect("the proxy made a hook for the session");
        let seen = seen.lock().unwrap();
        let interest = self.recorder.interest;
        // The Terminate sent after the last response may or may not have
        // been seen yet; the pipeline itself holds none.
        let client: Vec<Msg> = seen
            .client
            .iter()
            .filter(|m| m.0 != b'X')
            .cloned()
            .collect();
        let sent: Vec<Msg> = frames(bytes)
            .into_iter()
            .filter(|m| interest.client(m.0))
            .collect();
        same_messages("client messages seen by the hook", &client, &sent)?;
        let received: Vec<Msg> = msgs
            .iter()
            .filter(|m| interest.server(m.0))
            .cloned()
            .collect();
        same_messages("server messages seen by the hook", &seen.server, &received)?;
        Ok(msgs)
    }
}

/// Splits a stream of complete frontend messages into (tag, body).
fn frames(mut bytes: &[u8]) -> Vec<Msg> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let total = 1 + read_u32(bytes, 1) as usize;
        out.push((bytes[0], bytes[5..total].to_vec()));
        bytes = &bytes[total..];
    }
    out
}

/// One test's proxies, database and the runtime they live on.
struct Env {
    rt: Runtime,
    /// No hook: messages are framed and forwarded as bytes.
    plain: Option<TestProxy>,
    /// A hook that wants every message whole.
    all: Option<Observed>,
    /// A hook that wants some messages whole; the rest pass through.
    some: Option<Observed>,
    db: String,
    cases: AtomicU32,
}

impl Env {
    fn new() -> Env {
        let db = cluster().fresh_db();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (plain, all, some) = rt.block_on(async {
            (
                start_proxy(test_config()).await,
                Observed::start(ALL).await,
                Observed::start(SOME).await,
            )
        });
        Env {
            rt,
            plain: Some(plain),
            all: Some(all),
            some: Some(some),
            db,
            cases: AtomicU32::new(0),
        }
    }

    /// Runs one case: the stream chunked through each proxy, then at once
    /// directly; the responses after login must be identical, and each
    /// hook must have seen exactly what was exchanged.
    fn check(&self, steps: &[Step], chunks: &[usize]) -> Result<(), TestCaseError> {
        let (bytes, readies) = encode(steps);
        let app = format!(
            "chunking-{}-{}",
            std::process::id(),
            self.cases.fetch_add(1, Ordering::SeqCst)
        );
        let plain_port = self.plain.as_ref().unwrap().port();
        let (all, some) = (self.all.as_ref().unwrap(), self.some.as_ref().unwrap());
        self.rt.block_on(async {
            let direct = exchange(cluster().port, &self.db, &app, &bytes, &[], readies).await;
            let plain = exchange(plain_port, &self.db, &app, &bytes, chunks, readies).await;
            same_messages("no hook", &plain, &direct)?;
            let msgs = all
                .exchange(&self.db, &app, &bytes, chunks, readies)
                .await?;
            same_messages("hook wanting all messages", &msgs, &direct)?;
            let msgs = some
                .exchange(&self.db, &app, &bytes, chunks, readies)
                .await?;
            same_messages("hook wanting some messages", &msgs, &direct)
        })
    }
}

/// Compares two message sequences, describing the first difference.
fn same_messages(what: &str, got: &[Msg], want: &[Msg]) -> Result<(), TestCaseError> {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        prop_assert!(
            g == w,
            "{}: message {} differs: got ({}, {} bytes, {:?}) want ({}, {} bytes, {:?})",
            what,
            i,
            g.0 as char,
            g.1.len(),
            String::from_utf8_lossy(&g.1[..g.1.len().min(120)]),
            w.0 as char,
            w.1.len(),
            String::from_utf8_lossy(&w.1[..w.1.len().min(120)]),
        );
    }
    prop_assert_eq!(
        got.len(),
        want.len(),
        "{}: message counts differ: got tags {:?}, want tags {:?}",
        what,
        tags(got),
        tags(want)
    );
    Ok(())
}

impl Drop for Env {
    fn drop(&mut self) {
        let proxies = [
            self.plain.take(),
            self.all.take().map(|o| o.proxy),
            self.some.take().map(|o| o.proxy),
        ];
        for p in proxies.into_iter().flatten() {
            self.rt.block_on(p.stop());
        }
    }
}

fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.0 as char).collect()
}

async fn read_msg<R: AsyncRead + Unpin>(r: &mut R) -> Msg {
    let read = async {
        let tag = r.read_u8().await?;
        let len = r.read_u32().await? as usize;
        assert!(len >= 4, "bad message length {len}");
        let mut body = vec![0; len - 4];
        r.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>((tag, body))
    };
    tokio::time::timeout(MSG_TIMEOUT, read)
        .await
        .expect("response arrives in time")
        .expect("connection stays open")
}

/// Reads messages until `readies` ReadyForQuery have arrived.
async fn read_until_readies<R: AsyncRead + Unpin>(r: &mut R, readies: usize) -> Vec<Msg> {
    let mut out = Vec::new();
    let mut seen = 0;
    while seen < readies {
        let m = read_msg(r).await;
        if m.0 == b'Z' {
            seen += 1;
        }
        out.push(m);
    }
    out
}

/// Logs in on `port` (user postgres, trust, `application_name` naming the
/// case), then writes `bytes` cut into `chunks` (cyclically; empty = one
/// write) while reading the responses up to the `readies`-th ReadyForQuery.
/// Returns the messages after login, without BackendKeyData.
async fn exchange(
    port: u16,
    db: &str,
    application_name: &str,
    bytes: &[u8],
    chunks: &[usize],
    readies: usize,
) -> Vec<Msg> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (rd, mut wr) = tcp.into_split();
    let mut rd = BufReader::new(rd);
    let startup = StartupMessage {
        version: PROTOCOL_3_0,
        params: vec![
            (b"user".to_vec(), b"postgres".to_vec()),
            (b"database".to_vec(), db.as_bytes().to_vec()),
            (
                b"application_name".to_vec(),
                application_name.as_bytes().to_vec(),
            ),
        ],
    };
    wr.write_all(&startup.encode()).await.unwrap();
    let login = read_until_readies(&mut rd, 1).await;
    assert!(
        login
            .iter()
            .any(|(t, b)| *t == b'R' && b.as_slice() == [0, 0, 0, 0]),
        "login on port {port} failed: {:?}",
        tags(&login)
    );

    let write = async {
        if chunks.is_empty() {
            wr.write_all(bytes).await.unwrap();
            wr.flush().await.unwrap();
            return;
        }
        let mut at = 0;
        for &n in chunks.iter().cycle() {
            if at == bytes.len() {
                break;
            }
            let end = (at + n).min(bytes.len());
            wr.write_all(&bytes[at..end]).await.unwrap();
            wr.flush().await.unwrap();
            at = end;
            // Let the proxy run between chunks (it lives on other threads
            // too; this only makes separate reads likelier, never required).
            tokio::task::yield_now().await;
        }
    };
    let (_, msgs) = tokio::join!(write, read_until_readies(&mut rd, readies));
    let _ = wr.write_all(&[b'X', 0, 0, 0, 4]).await;
    msgs.into_iter().filter(|(t, _)| *t != b'K').collect()
}

fn run_cases<S>(cases: u32, strategy: S, env: &Env)
where
    S: Strategy<Value = (Vec<Step>, Vec<usize>)>,
{
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        // Shrinking talks to PostgreSQL too: bounded, but enough to get a
        // readable failing pipeline.
        max_shrink_iters: 200,
        max_shrink_time: 120_000,
        // No source file to file regressions beside; the failure message
        // prints the minimal case.
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    if let Err(e) = runner.run(&strategy, |(steps, chunks)| env.check(&steps, &chunks)) {
        panic!("{e}");
    }
}

#[test]
fn pipelines_give_the_same_responses_however_they_are_split() {
    let env = Env::new();
    run_cases(16, (vec(step(), 1..12), chunk_sizes()).boxed(), &env);
}

/// Messages larger than the relay buffer (32 KiB): a 100 KB Query and a
/// Bind with a 100 KB parameter pass through the relay piece by piece,
/// split at random, among ordinary messages.
#[test]
fn messages_larger_than_the_relay_buffer_split_randomly() {
    let big = (40_000usize..120_000, any::<bool>()).prop_map(|(n, extended)| {
        let payload = "x".repeat(n);
        if extended {
            Step::Extended {
                sql: "SELECT length($1), md5($1)".into(),
                params: vec![Some(payload)],
                describe_statement: false,
                max_rows: 0,
                flush: false,
            }
        } else {
            Step::Simple(format!("SELECT length('{payload}'), md5('{payload}')"))
        }
    });
    let strategy = (
        vec(step(), 0..4),
        vec(big, 1..3),
        any::<proptest::sample::Index>(),
        chunk_sizes(),
    )
        .prop_map(|(mut steps, bigs, at, chunks)| {
            for b in bigs {
                let i = at.index(steps.len() + 1);
                steps.insert(i, b);
            }
            (steps, chunks)
        });
    let env = Env::new();
    run_cases(8, strategy, &env);
}
