//! The session worker: a short-lived process of this same binary (`nkpki session-worker`)
//! that holds one session's secrets — its age identity, the holders' shares, the rebuilt
//! KEK and CA key — signs once and exits, so that nothing of them, nor what libraries leave
//! behind in memory, outlives the session in the long-running server.
//!
//! [`run_worker`] is the worker's side, [`WorkerHandle`] the server's; [`frame`] is the pipe
//! format and [`crate::proto::WorkerRequest`]/[`crate::proto::WorkerReply`] its messages.
//! `docs/protocol.md` ("The session worker") describes the exchange.

mod batch;
pub mod frame;
mod handle;
mod reshare;
mod session;

pub use handle::{DEFAULT_LIFETIME, DEFAULT_TIMEOUT, Verdict, WorkerHandle};
pub use session::run_worker;

/// What can go wrong on either side of the pipe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    #[error("cannot start the session worker {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("the session worker's pipe: {0}")]
    Io(String),
    #[error("the other end of the session worker's pipe closed")]
    Closed,
    #[error("the session worker exited before answering ({0})")]
    Died(String),
    #[error("the session worker did not answer within {0} s and was killed")]
    Timeout(u64),
    #[error("a frame of {0} bytes is over the {max} byte limit", max = frame::MAX_FRAME)]
    TooLarge(usize),
    #[error("malformed frame on the session worker's pipe: {0}")]
    Malformed(String),
    #[error("the session worker answered {got} to {asked}")]
    Unexpected { asked: &'static str, got: String },
    #[error("the session worker is no longer usable (it failed, signed or was aborted)")]
    Gone,
    /// The worker refused the request (bad manifest, too few shares, issuance mismatch…)
    /// and exited.
    #[error("{0}")]
    Failed(String),
}

/// Ends the process after `lifetime`, whatever it is doing: a worker the server forgot
/// (or cannot reach to kill) does not keep a session's secrets past it.
pub fn exit_after(lifetime: std::time::Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(lifetime);
        tracing::warn!(
            "session-worker: its lifetime of {} s is over; exiting",
            lifetime.as_secs()
        );
        std::process::exit(3);
    });
}
