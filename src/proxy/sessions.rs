//! The sessions of one proxy as the admin console sees them, and the
//! `PAUSE` gate.
//!
//! Each established session has a [`SessionSlot`]; only that session
//! writes it (its state, when the state changes), so recording costs no
//! lock shared between connections. The admin console reads the slots.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use dashmap::DashMap;

/// What a session is doing, as of its last change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SessionState {
    /// Outside a transaction, nothing outstanding.
    Idle = 0,
    /// A statement (or pipeline) is running.
    Active = 1,
    /// Between statements of an open (or failed) transaction block.
    InTransaction = 2,
    /// Its next statement waits for `RESUME`.
    Held = 3,
}

impl SessionState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Idle,
            1 => Self::Active,
            2 => Self::InTransaction,
            _ => Self::Held,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Active => "active",
            Self::InTransaction => "idle in transaction",
            Self::Held => "held",
        }
    }

    /// Nothing of this session holds up a pause.
    fn drained(self) -> bool {
        matches!(self, Self::Idle | Self::Held)
    }
}

/// One established session.
#[derive(Debug)]
pub struct SessionSlot {
    pub id: u64,
    /// The upstream backend's PID (what the client sees as its PID).
    pub pid: i32,
    pub peer: String,
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub tls: bool,
    pub connected_at: SystemTime,
    /// The branch as of the session's last transaction end.
    branch: Mutex<String>,
    state: AtomicU8,
    gate: Arc<PauseGate>,
}

impl SessionSlot {
    pub fn state(&self) -> SessionState {
        SessionState::from_u8(self.state.load(SeqCst))
    }

    /// About to forward a new statement: busy before the gate is checked
    /// (SeqCst against [`PauseGate::pause`], which sets the gate and then
    /// reads the states: one side always sees the other).
    pub fn mark_active(&self) {
        self.state.store(SessionState::Active as u8, SeqCst);
    }

    pub fn branch(&self) -> String {
        self.branch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn gate(&self) -> &PauseGate {
        &self.gate
    }

    /// Records the session's state (the relay calls this after each
    /// wake-up; it writes only on a change). `branch`: the session's
    /// branch now, looked at when it becomes idle.
    pub fn publish(&self, state: SessionState, branch: Option<&str>) {
        if self.state.load(Relaxed) == state as u8 {
            return;
        }
        self.state.store(state as u8, SeqCst);
        if state == SessionState::Idle {
            if let Some(b) = branch {
                let mut current = self.branch.lock().unwrap_or_else(|e| e.into_inner());
                if *current != b {
                    *current = b.to_string();
                }
            }
        }
        if state.drained() && self.gate.is_paused() {
            self.gate.drained.notify_waiters();
        }
    }
}

/// What a session says about itself when it registers.
pub struct NewSession {
    pub pid: i32,
    pub peer: String,
    pub user: String,
    pub database: String,
    pub branch: String,
    pub application_name: String,
    pub tls: bool,
}

/// The live sessions and the pause gate.
#[derive(Default)]
pub struct Sessions {
    slots: DashMap<u64, Arc<SessionSlot>>,
    next_id: AtomicU64,
    pub gate: Arc<PauseGate>,
}

impl Sessions {
    /// Registers a session until the returned guard drops.
    pub fn register(self: &Arc<Self>, s: NewSession) -> SlotGuard {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let slot = Arc::new(SessionSlot {
            id,
            pid: s.pid,
            peer: s.peer,
            user: s.user,
            database: s.database,
            application_name: s.application_name,
            tls: s.tls,
            connected_at: SystemTime::now(),
            branch: Mutex::new(s.branch),
            state: AtomicU8::new(SessionState::Idle as u8),
            gate: self.gate.clone(),
        });
        self.slots.insert(id, slot.clone());
        SlotGuard {
            sessions: self.clone(),
            slot,
        }
    }

    /// Every session, oldest first.
    pub fn list(&self) -> Vec<Arc<SessionSlot>> {
        let mut all: Vec<_> = self.slots.iter().map(|e| e.value().clone()).collect();
        all.sort_by_key(|s| s.id);
        all
    }

    /// Sessions still running a statement or inside a transaction.
    pub fn busy(&self) -> usize {
        self.slots
            .iter()
            .filter(|e| !e.value().state().drained())
            .count()
    }

    /// Waits until no session is busy (see [`Sessions::busy`]), at most
    /// `timeout`. Returns how many are still busy.
    pub async fn wait_drained(&self, timeout: std::time::Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.gate.drained.notified();
            tokio::pin!(notified);
            // Registered before looking, so a change in between wakes us.
            notified.as_mut().enable();
            let busy = self.busy();
            if busy == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.busy();
            }
        }
    }
}

/// Removes its session from the registry when dropped.
pub struct SlotGuard {
    sessions: Arc<Sessions>,
    pub slot: Arc<SessionSlot>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.sessions.slots.remove(&self.slot.id);
        if self.sessions.gate.is_paused() {
            self.sessions.gate.drained.notify_waiters();
        }
    }
}

/// `PAUSE` / `RESUME`: while paused, a session's next statement outside a
/// transaction waits.
#[derive(Debug, Default)]
pub struct PauseGate {
    paused: AtomicBool,
    /// Sessions waiting for `RESUME`.
    waiting: Mutex<Vec<Waker>>,
    /// Signalled when a session stops being busy during a pause.
    drained: tokio::sync::Notify,
}

impl PauseGate {
    pub fn is_paused(&self) -> bool {
        self.paused.load(SeqCst)
    }

    /// Returns false when already paused.
    pub fn pause(&self) -> bool {
        let _w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        !self.paused.swap(true, SeqCst)
    }

    /// Lets held sessions go on. Returns false when not paused.
    pub fn resume(&self) -> bool {
        let wakers = {
            let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if !self.paused.swap(false, SeqCst) {
                return false;
            }
            std::mem::take(&mut *w)
        };
        for w in wakers {
            w.wake();
        }
        true
    }

    /// Ready when not paused; otherwise wakes the task at `RESUME`.
    pub fn poll_open(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_paused() {
            return Poll::Ready(());
        }
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        // Checked again under the lock `resume` takes: no lost wake-up.
        if !self.is_paused() {
            return Poll::Ready(());
        }
        if !w.iter().any(|x| x.will_wake(cx.waker())) {
            w.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_session(sessions: &Arc<Sessions>) -> SlotGuard {
        sessions.register(NewSession {
            pid: 1,
            peer: "127.0.0.1:1".into(),
            user: "u".into(),
            database: "d".into(),
            branch: "main".into(),
            application_name: String::new(),
            tls: false,
        })
    }

    #[tokio::test]
    async fn pause_waits_for_busy_sessions() {
        let sessions = Arc::new(Sessions::default());
        let a = new_session(&sessions);
        let _b = new_session(&sessions);
        assert_eq!(sessions.list().len(), 2);
        a.slot.publish(SessionState::InTransaction, None);
        assert!(sessions.gate.pause());
        assert!(!sessions.gate.pause());
        let waiter = {
            let s = sessions.clone();
            tokio::spawn(async move { s.wait_drained(std::time::Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        a.slot.publish(SessionState::Idle, Some("feature"));
        assert_eq!(waiter.await.unwrap(), 0);
        assert_eq!(a.slot.branch(), "feature");
        drop(a);
        assert_eq!(sessions.list().len(), 1);
        assert!(sessions.gate.resume());
        assert!(!sessions.gate.resume());
    }

    #[tokio::test]
    async fn wait_drained_gives_up_after_its_timeout() {
        let sessions = Arc::new(Sessions::default());
        let a = new_session(&sessions);
        a.slot.publish(SessionState::Active, None);
        sessions.gate.pause();
        let busy = sessions
            .wait_drained(std::time::Duration::from_millis(10))
            .await;
        assert_eq!(busy, 1);
    }
}
