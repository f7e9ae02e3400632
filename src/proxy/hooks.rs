//! Hook points of the relay for later features (DDL history, branches,
//! time travel, metrics).
//!
//! A [`SessionHook`] sees the complete client messages it asks for (by tag)
//! before they are forwarded, and the server messages it asks for after
//! they are classified. It may:
//! - forward a client message unchanged (the default, byte for byte);
//! - replace it with other bytes (e.g. a rewritten Query); for a simple
//!   Query it may mark statements whose results are swallowed, so that
//!   `DDL; INSERT INTO history ...` runs as one implicit transaction and the
//!   client sees only the DDL's responses;
//! - inject messages of its own before or after it: their responses are
//!   swallowed and handed back to the hook.
//!
//! The relay keeps a queue of who owns each expected response
//! (`relay::Pending`), so injected responses are recognised exactly, also
//! under pipelining and after errors (`FIELD-NOTES.md`, "Injecting
//! statements").

/// Who a response belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Sent by the client: forwarded.
    Client,
    /// Injected by the proxy: swallowed and handed to the hook.
    Proxy,
}

/// A hook's decision about one client message.
#[derive(Debug, Default)]
pub struct ClientVerdict {
    /// Messages injected before the client's message (complete frames).
    pub before: Vec<u8>,
    /// Replacement of the client's message (complete frames); `None`
    /// forwards the original bytes.
    pub replace: Option<Vec<u8>>,
    /// For a simple Query: the statements (counting from 0) whose
    /// responses belong to the proxy.
    pub swallow_statements: StatementSet,
    /// Messages injected after the client's message (complete frames).
    pub after: Vec<u8>,
    /// The message runs alone: the relay frames no later client message
    /// until every response to it has arrived, hands those responses to
    /// [`SessionHook::on_alone_response`], and sends what that returns
    /// before anything the client sent later. For statements that must be
    /// recorded right after they succeed, outside any transaction the
    /// client opens behind them. (Responses to messages sent earlier never
    /// reach `on_alone_response`.)
    pub alone: bool,
    /// For a replacement that holds text of the proxy's own before or
    /// between the client's statements: how to give the positions of
    /// errors (the `P` field) in the text the client sent.
    pub positions: Option<std::sync::Arc<PositionMap>>,
    /// What kinds of rewrite this is ([`rewrite`] flags), for
    /// `pgbranch_rewrites_total`; not part of what the relay does.
    pub rewrites: u8,
}

/// Kinds of rewrite a hook reports in [`ClientVerdict::rewrites`].
pub mod rewrite {
    /// Schema names mapped to a branch's copies.
    pub const BRANCH_NAMES: u8 = 1;
    /// A pgbranch command (branch commands, `SET pgbranch.branch`,
    /// history commands) answered through pgbranch's SQL functions.
    pub const COMMAND: u8 = 2;
    /// DDL wrapped with its history recording.
    pub const HISTORY: u8 = 4;
    /// A branch session's search_path restored after RESET / DISCARD.
    pub const PATH_RESTORE: u8 = 8;
    /// DDL on a protected branch replaced by its refusal.
    pub const REFUSED: u8 = 16;
    /// AS OF / FOR SYSTEM_TIME clauses turned into history functions.
    pub const TIME_TRAVEL: u8 = 32;
    /// Every kind with its label.
    pub const KINDS: [(u8, &str); 6] = [
        (BRANCH_NAMES, "branch_names"),
        (COMMAND, "command"),
        (HISTORY, "history"),
        (PATH_RESTORE, "path_restore"),
        (REFUSED, "refused"),
        (TIME_TRAVEL, "time_travel"),
    ];
}

impl ClientVerdict {
    pub fn forward() -> Self {
        Self::default()
    }

    pub fn is_forward(&self) -> bool {
        self.before.is_empty()
            && self.replace.is_none()
            && self.after.is_empty()
            && self.swallow_statements.is_empty()
            && !self.alone
            && self.positions.is_none()
    }
}

/// Where a rewritten simple Query holds text the proxy inserted, so that
/// an error position (a character offset into the Query string) can be
/// given in the client's own text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PositionMap {
    /// `(at, len)`: `len` characters inserted before character `at`
    /// (0-based) of the client's text, in order.
    pub inserted: Vec<(u32, u32)>,
    /// Per statement of the rewritten Query: for a statement of the
    /// client's, the number of characters inserted before it; `None` for
    /// the proxy's own.
    pub statement_shift: Vec<Option<u32>>,
}

impl PositionMap {
    /// The client's position (1-based, as in the `P` field) for position
    /// `position` of the rewritten Query, reported while its statement
    /// `statement` (0-based) ran. An error in a statement after the first
    /// lies within that statement; an error before any statement completed
    /// may be a syntax error anywhere in the text.
    pub fn map(&self, position: u32, statement: u32) -> u32 {
        if position == 0 {
            return 0;
        }
        if statement > 0 {
            if let Some(Some(shift)) = self.statement_shift.get(statement as usize) {
                return position.saturating_sub(*shift).max(1);
            }
        }
        let at = position - 1;
        let mut shift = 0u32;
        for &(orig, len) in &self.inserted {
            let start = orig.saturating_add(shift);
            if at < start {
                break;
            }
            if at < start.saturating_add(len) {
                // Inside the proxy's text: where it was inserted.
                return orig + 1;
            }
            shift = shift.saturating_add(len);
        }
        at - shift + 1
    }

    /// An ErrorResponse or NoticeResponse body with its `P` field mapped;
    /// `None` when it has none (or is malformed).
    pub fn rewrite_fields(&self, body: &[u8], statement: u32) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(body.len() + 4);
        let mut rest = body;
        let mut found = false;
        loop {
            let (&field, after) = rest.split_first()?;
            out.push(field);
            if field == 0 {
                break;
            }
            let nul = after.iter().position(|&b| b == 0)?;
            let value = &after[..nul];
            match std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u32>().ok())
            {
                Some(p) if field == b'P' => {
                    found = true;
                    out.extend_from_slice(self.map(p, statement).to_string().as_bytes());
                }
                _ => out.extend_from_slice(value),
            }
            out.push(0);
            rest = &after[nul + 1..];
        }
        found.then_some(out)
    }
}

/// A set of statement indexes within one simple Query (a bitset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementSet(Vec<u64>);

impl StatementSet {
    pub fn insert(&mut self, i: usize) {
        let word = i / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (i % 64);
    }

    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
}

impl FromIterator<usize> for StatementSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut set = Self::default();
        for i in iter {
            set.insert(i);
        }
        set
    }
}

/// Per-connection hook. One instance per session, called from the
/// session's own task only.
pub trait SessionHook: Send {
    /// Whether the hook wants to see client messages with this tag.
    fn wants_client(&self, _tag: u8) -> bool {
        false
    }

    /// For a tag the hook wants: messages longer than this many bytes
    /// (body) are not held whole; they stream through unchanged and the
    /// hook gets [`SessionHook::on_client_prefix`] instead. `usize::MAX`
    /// (the default) holds every message whole, up to `max_message_size`.
    fn client_peek_limit(&self, _tag: u8) -> usize {
        usize::MAX
    }

    /// Called instead of `on_client_message` for a message longer than
    /// its peek limit, with the first `limit` bytes of its body; the
    /// message is forwarded unchanged.
    fn on_client_prefix(&mut self, _tag: u8, _prefix: &[u8]) {}

    /// Called with a complete client message (tag and body).
    fn on_client_message(&mut self, _tag: u8, _body: &[u8]) -> ClientVerdict {
        ClientVerdict::forward()
    }

    /// Whether the hook wants to see server messages with this tag that
    /// are forwarded to the client (e.g. CommandComplete, ErrorResponse,
    /// ReadyForQuery).
    fn wants_server(&self, _tag: u8) -> bool {
        false
    }

    /// Called with a complete server message forwarded to the client.
    /// Returns messages (complete frames) to send to the upstream as soon
    /// as the client stream is between messages; their responses are the
    /// proxy's, like those of `ClientVerdict::before`. Used to record a
    /// statement that cannot run in a transaction block after it succeeded.
    fn on_server_message(&mut self, _tag: u8, _body: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    /// Called with each response (not asynchronous messages) to a client
    /// message sent [alone](ClientVerdict::alone) that the hook wants
    /// (see [`SessionHook::wants_server`]), after `on_server_message`.
    /// Returns messages (complete frames) to send upstream once all its
    /// responses have arrived, before any later client message; their
    /// responses are the proxy's.
    fn on_alone_response(&mut self, _tag: u8, _body: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    /// Called with each response to an injected message. By default an
    /// ErrorResponse is forwarded to the client (its transaction failed,
    /// and it must know why) and everything else is swallowed.
    fn on_injected_response(&mut self, tag: u8, _body: &[u8]) -> Injected {
        if tag == b'E' {
            Injected::Forward
        } else {
            Injected::Swallow
        }
    }

    /// The branch the session is on now, when the hook follows branches
    /// (`SET pgbranch.branch` moves a session).
    fn branch(&self) -> Option<&str> {
        None
    }

    /// Called after each pass in which the relay frames what arrived from
    /// one side (the client's or the server's; usually what one read
    /// brought), whether or not any message went to the hook. Lets a hook
    /// do once per batch what would cost more per message (the metrics
    /// hook reads the clock here).
    fn end_of_batch(&mut self) {}
}

/// What the relay does with a response to an injected message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injected {
    /// Not sent to the client.
    Swallow,
    /// Sent to the client as it is.
    Forward,
    /// Sent to the client as these bytes instead (complete frames).
    Replace(Vec<u8>),
}

/// The hook used when no feature is active.
#[derive(Debug, Default)]
pub struct NoHook;

impl SessionHook for NoHook {}

/// Builds one hook per session.
pub trait HookFactory: Send + Sync {
    fn create(&self, info: &SessionInfo) -> Box<dyn SessionHook>;
}

/// What a hook factory knows about a new session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub user: String,
    pub database: String,
    pub branch: String,
    pub application_name: Option<String>,
    pub peer: String,
    /// On a branch other than main: its schemas, (logical, physical).
    pub schemas: Vec<(String, String)>,
    /// A search_path set at session level at startup (the one in the
    /// startup packet was wrong): RESET and DISCARD must return to it.
    pub reset_path: Option<String>,
    /// An as-of session: its time (absolute, as the server printed it).
    pub as_of: Option<String>,
}

/// Factory for [`NoHook`].
pub struct NoHooks;

impl HookFactory for NoHooks {
    fn create(&self, _: &SessionInfo) -> Box<dyn SessionHook> {
        Box::new(NoHook)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_mapped_back_to_the_client_text() {
        // Client text "ab;cd;ef" with 10 characters inserted before "cd"
        // (statements 1-2 of the rewritten Query are the proxy's) and 3
        // after it.
        let map = PositionMap {
            inserted: vec![(3, 10), (5, 3)],
            statement_shift: vec![Some(0), None, None, Some(10), None, Some(13)],
        };
        // A syntax error (no statement ran yet) anywhere in the text.
        assert_eq!(map.map(1, 0), 1);
        assert_eq!(map.map(3, 0), 3);
        assert_eq!(
            map.map(4, 0),
            4,
            "inside the proxy's text: where it was inserted"
        );
        assert_eq!(map.map(13, 0), 4);
        assert_eq!(map.map(14, 0), 4);
        assert_eq!(map.map(15, 0), 5);
        assert_eq!(map.map(19, 0), 6);
        assert_eq!(
            map.map(16, 0),
            6,
            "inside the proxy's text: where it was inserted"
        );
        // Errors of a statement that ran.
        assert_eq!(map.map(14, 3), 4);
        assert_eq!(map.map(20, 5), 7);
        assert_eq!(map.map(0, 5), 0);
        let body = b"SERROR\0C42601\0Msyntax error\0P19\0\0";
        assert_eq!(
            map.rewrite_fields(body, 0).unwrap(),
            b"SERROR\0C42601\0Msyntax error\0P6\0\0"
        );
        assert_eq!(map.rewrite_fields(b"SERROR\0\0", 0), None);
    }
}
