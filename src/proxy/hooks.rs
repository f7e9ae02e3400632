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
    /// For a simple Query: bit `i` set = the responses of statement `i`
    /// (counting from 0) belong to the proxy.
    pub swallow_statements: u64,
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
            && self.swallow_statements == 0
    }
}

/// Per-connection hook. One instance per session, called from the
/// session's own task only.
pub trait SessionHook: Send {
    /// Whether the hook wants to see client messages with this tag.
    fn wants_client(&self, _tag: u8) -> bool {
        false
    }

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
    fn on_server_message(&mut self, _tag: u8, _body: &[u8]) {}

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
