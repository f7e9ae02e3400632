//! Cancel keys: the client sees the upstream backend's real PID with a
//! secret key issued by the proxy; a CancelRequest carrying that pair is
//! forwarded to the right upstream backend with the upstream's own key.
//! A forged or stale pair matches nothing and reaches no backend.

use std::sync::Arc;

use dashmap::DashMap;
use rand::RngCore;
use tokio::io::AsyncWriteExt;

use super::upstream::Connector;
use crate::protocol::backend::BackendKey;
use crate::protocol::startup::cancel_request;

/// What a cancel must reach.
#[derive(Clone)]
pub struct CancelTarget {
    pub connector: Arc<Connector>,
    pub upstream: BackendKey,
}

/// Map from the keys the proxy issued to the upstream keys.
#[derive(Default)]
pub struct CancelMap {
    entries: DashMap<(i32, Box<[u8]>), CancelTarget>,
}

/// Removes its entry when the session ends.
pub struct Registration {
    map: Arc<CancelMap>,
    key: (i32, Box<[u8]>),
}

impl Registration {
    /// The session's PID (the upstream backend's).
    pub fn pid(&self) -> i32 {
        self.key.0
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.map.entries.remove(&self.key);
    }
}

impl CancelMap {
    /// Issues a client-facing key for an upstream key: same PID, a fresh
    /// random secret of the same length as the upstream's (4 bytes in
    /// protocol 3.0, longer in 3.2).
    pub fn register(self: &Arc<Self>, target: CancelTarget) -> (BackendKey, Registration) {
        let mut rng = rand::rng();
        let len = target.upstream.secret.len();
        loop {
            let mut secret = vec![0u8; len];
            rng.fill_bytes(&mut secret);
            let key = (target.upstream.pid, secret.clone().into_boxed_slice());
            // A collision (same PID and secret) would let one client cancel
            // another's query; draw again.
            if let dashmap::mapref::entry::Entry::Vacant(v) = self.entries.entry(key.clone()) {
                v.insert(target.clone());
                let client_key = BackendKey {
                    pid: target.upstream.pid,
                    secret,
                };
                return (
                    client_key,
                    Registration {
                        map: self.clone(),
                        key,
                    },
                );
            }
        }
    }

    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        self.entries
            .get(&(pid, secret.to_vec().into_boxed_slice()))
            .map(|e| e.clone())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Sends a CancelRequest to the upstream backend of `target`.
pub async fn forward_cancel(target: &CancelTarget) -> std::io::Result<()> {
    // Over TLS when the upstream is configured for it, so the key does not
    // cross the network in the clear (PostgreSQL accepts a CancelRequest
    // after SSL negotiation).
    let mut stream = target
        .connector
        .connect()
        .await
        .map_err(std::io::Error::other)?;
    stream
        .write_all(&cancel_request(
            target.upstream.pid,
            &target.upstream.secret,
        ))
        .await?;
    stream.flush().await?;
    // PostgreSQL closes the connection without answering; wait for that so
    // the request is not cut short.
    let mut sink = [0u8; 1];
    let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await;
    Ok(())
}
