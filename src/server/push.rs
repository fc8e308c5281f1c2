//! Server push: a session's status as a stream of server-sent events, for the session page
//! and any operator client. One watcher task per watched session reads the status once
//! per change and hands it to every stream of that session, so a hundred open pages cost
//! one read, not a hundred. Streams are capped per operator and in all, end with the
//! session, and are dropped (with their slot) when the client goes away.

use super::guard::{ConnectionLimiter, ConnectionSlot};
use super::state::{ApiErr, ApiResult, State};
use crate::proto::{SessionState, SessionStatus};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Event streams one operator may hold open at once (a browser holds one per open
/// session page).
pub const MAX_STREAMS_PER_OPERATOR: usize = 256;
/// Event streams open at once in all: well under `serve`'s default 4096 connections, so
/// pages can never take the agents' connections.
pub const MAX_STREAMS: usize = 2048;
/// A comment line this often keeps proxies from closing an idle stream and tells the
/// server soon when the client has gone.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A watcher reads the status at least this often (the time left), and stops when no
/// stream is left.
const REFRESH: Duration = Duration::from_secs(20);

/// What a watcher hands its streams.
#[derive(Clone, Debug)]
enum Frame {
    /// The session's status (JSON); `done` once it is final.
    Status { json: Arc<str>, done: bool },
    /// The session cannot be read any more.
    Gone(Arc<str>),
}

/// The watchers and the stream limits.
pub struct Push {
    watchers: Mutex<HashMap<String, watch::Sender<Option<Frame>>>>,
    per_operator: ConnectionLimiter<String>,
    total: Arc<Semaphore>,
}

impl Default for Push {
    fn default() -> Self {
        Push {
            watchers: Mutex::default(),
            per_operator: ConnectionLimiter::new(MAX_STREAMS_PER_OPERATOR),
            total: Arc::new(Semaphore::new(MAX_STREAMS)),
        }
    }
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Push({} streams, {} sessions watched)",
            self.open_streams(),
            self.watched_sessions()
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One open stream's places in the limits, given back when the stream is dropped.
struct Slot {
    _operator: ConnectionSlot<String>,
    _total: OwnedSemaphorePermit,
}

impl Push {
    /// Event streams open now.
    pub fn open_streams(&self) -> usize {
        MAX_STREAMS.saturating_sub(self.total.available_permits())
    }

    /// Sessions with a watcher now.
    pub fn watched_sessions(&self) -> usize {
        lock(&self.watchers).len()
    }

    fn admit(&self, operator: &str) -> ApiResult<Slot> {
        let too_many = |what: &str| {
            ApiErr::new(
                503,
                "too-many-streams",
                format!(
                    "{what} (hint: close session pages that are no longer needed; a session's \
                     status is also at GET /api/v1/sessions/<id>?wait=20)"
                ),
            )
        };
        let total = self.total.clone().try_acquire_owned().map_err(|_| {
            too_many(&format!(
                "the server holds {MAX_STREAMS} event streams already"
            ))
        })?;
        let operator = self
            .per_operator
            .admit(operator.to_owned())
            .ok_or_else(|| {
                too_many(&format!(
                    "operator {operator} holds {MAX_STREAMS_PER_OPERATOR} event streams already"
                ))
            })?;
        Ok(Slot {
            _operator: operator,
            _total: total,
        })
    }
}

/// Session `session_id`'s events for `operator`: a `status` event (a [`SessionStatus`] as
/// JSON) at once and after every change, the last one when the session is final; a
/// `gone` event if it can no longer be read. A session that does not exist is a 404 before
/// any stream opens.
pub async fn session_events(
    state: Arc<State>,
    operator: &str,
    session_id: &str,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>> {
    let well_formed = !session_id.is_empty()
        && session_id.len() <= 64
        && session_id.bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return Err(ApiErr::new(
            404,
            "not-found",
            format!("no session {}", crate::pki::text::escape(session_id)),
        ));
    }
    let (s, id) = (state.clone(), session_id.to_owned());
    tokio::task::spawn_blocking(move || s.status(&id))
        .await
        .map_err(|e| ApiErr::new(500, "internal", e.to_string()))??;
    let slot = state.push.admit(operator)?;
    let rx = subscribe(&state, session_id);
    let events = stream::unfold(Some((rx, slot)), |open| async move {
        let (mut rx, slot) = open?;
        loop {
            // an error: the watcher ended after its last frame, which was seen
            rx.changed().await.ok()?;
            let frame = rx.borrow_and_update().clone();
            match frame {
                None => continue,
                Some(Frame::Status { json, done }) => {
                    let event = Event::default().event("status").data(&*json);
                    return Some((Ok(event), (!done).then_some((rx, slot))));
                }
                Some(Frame::Gone(why)) => {
                    return Some((Ok(Event::default().event("gone").data(&*why)), None));
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// A receiver of session `id`'s frames, its watcher started if it has none; it sees the
/// current frame first.
fn subscribe(state: &Arc<State>, id: &str) -> watch::Receiver<Option<Frame>> {
    let mut watchers = lock(&state.push.watchers);
    let mut rx = match watchers.get(id) {
        Some(tx) => tx.subscribe(),
        None => {
            let (tx, rx) = watch::channel(None);
            watchers.insert(id.to_owned(), tx);
            tokio::spawn(watch_session(state.clone(), id.to_owned()));
            rx
        }
    };
    rx.mark_changed();
    rx
}

/// The status as compared between reads: without the time left, which always moves.
fn change_key(status: &SessionStatus) -> String {
    let mut status = status.clone();
    status.seconds_left = 0;
    serde_json::to_string(&status).unwrap_or_default()
}

/// Reads session `id`'s status after every change and hands it on; ends when the session
/// is final (after handing on its last status) or when no stream is left.
async fn watch_session(state: Arc<State>, id: String) {
    let mut changes = state.subscribe();
    let mut last_key = String::new();
    let mut refreshed = true;
    loop {
        let (s, i) = (state.clone(), id.clone());
        let read = tokio::task::spawn_blocking(move || s.status(&i)).await;
        let frame = match read {
            Ok(Ok(status)) => {
                let key = change_key(&status);
                if key == last_key && !refreshed {
                    None
                } else {
                    last_key = key;
                    Some(Frame::Status {
                        json: serde_json::to_string(&status).unwrap_or_default().into(),
                        done: status.state != SessionState::Waiting,
                    })
                }
            }
            Ok(Err(e)) if e.status == 404 => Some(Frame::Gone(e.message.into())),
            // a store that refuses a read now may answer at the next change
            Ok(Err(e)) => {
                tracing::debug!("session events: reading session {id}: {}", e.message);
                None
            }
            Err(e) => Some(Frame::Gone(format!("internal: {e}").into())),
        };
        {
            let mut watchers = lock(&state.push.watchers);
            let Some(tx) = watchers.get(&id) else { return };
            if tx.receiver_count() == 0 {
                watchers.remove(&id);
                return;
            }
            let last = matches!(
                frame,
                Some(Frame::Gone(_) | Frame::Status { done: true, .. })
            );
            if let Some(frame) = frame {
                tx.send_replace(Some(frame));
            }
            if last {
                // dropping the sender ends every stream after it has sent this frame
                watchers.remove(&id);
                return;
            }
        }
        refreshed = tokio::time::timeout(REFRESH, changes.changed())
            .await
            .is_err();
    }
}
