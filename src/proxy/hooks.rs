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

    /// Called with each swallowed response to an injected message.
    /// Returning `true` forwards it to the client after all (e.g. an
    /// ErrorResponse the client must see because its transaction failed).
    fn on_injected_response(&mut self, tag: u8, _body: &[u8]) -> bool {
        tag == b'E'
    }
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
}

/// Factory for [`NoHook`].
pub struct NoHooks;

impl HookFactory for NoHooks {
    fn create(&self, _: &SessionInfo) -> Box<dyn SessionHook> {
        Box::new(NoHook)
    }
}
