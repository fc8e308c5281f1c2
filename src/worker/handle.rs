//! The server's side: starts one worker per session and talks to it over its pipes. Every
//! exchange has a time limit; a worker that dies, hangs or misbehaves is killed and its
//! handle answers every later call with an error, never a hang.

use super::{WorkerError, frame};
use crate::proto::{SignJob, WorkerReply, WorkerRequest};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one exchange with the worker may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a worker lives at most unless told otherwise; it exits on its own then.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

/// How long an aborted worker gets to wipe itself and exit before it is killed.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// The worker's answer to a contribution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The share checked out and is kept; the worker holds `count` shares.
    Accepted { index: u8, count: u8 },
    /// Refused and not kept: `code` as the API's (`bad-ciphertext`, `bad-share`,
    /// `duplicate`, `not-waiting`), `why` for the holder and the audit log.
    Refused { code: String, why: String },
}

/// One running session worker. Dropping the handle kills the process.
#[derive(Debug)]
pub struct WorkerHandle {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    timeout: Duration,
    /// False once the worker failed, signed or was found dead.
    usable: bool,
}

fn describe(reply: &WorkerReply) -> String {
    match reply {
        WorkerReply::Opened { .. } => "opened".into(),
        WorkerReply::Accepted { holder_id, .. } => format!("accepted for {holder_id}"),
        WorkerReply::Refused { holder_id, .. } => format!("refused for {holder_id}"),
        WorkerReply::Signed { .. } => "signed".into(),
        WorkerReply::SignedBatch { ders } => format!("signed ({} certificates)", ders.len()),
        WorkerReply::Failed { why } => format!("failed ({why})"),
    }
}

impl WorkerHandle {
    /// Starts `program session-worker` (the server passes its own executable; tests pass
    /// the binary they built), to live at most [`DEFAULT_LIFETIME`]. Must run inside a
    /// Tokio runtime.
    pub async fn spawn(program: &Path) -> Result<Self, WorkerError> {
        Self::spawn_with_lifetime(program, DEFAULT_LIFETIME).await
    }

    /// Starts a worker that exits on its own after `lifetime` (whole seconds, at least
    /// one): the session's time to live plus a margin.
    pub async fn spawn_with_lifetime(
        program: &Path,
        lifetime: Duration,
    ) -> Result<Self, WorkerError> {
        Self::spawn_for(program, lifetime, None).await
    }

    /// Starts a worker for session `session` (named in its log lines), to live at most
    /// `lifetime`.
    async fn spawn_for(
        program: &Path,
        lifetime: Duration,
        session: Option<&str>,
    ) -> Result<Self, WorkerError> {
        let spawn_error = |reason: String| WorkerError::Spawn {
            program: program.display().to_string(),
            reason,
        };
        let mut command = Command::new(program);
        command
            .arg("session-worker")
            .arg("--lifetime-seconds")
            .arg(lifetime.as_secs().max(1).to_string());
        if let Some(id) = session {
            command.arg("--session").arg(id);
        }
        let mut child = command
            .env_clear()
            .env(
                crate::logging::FORMAT_VAR,
                crate::logging::format().as_str(),
            )
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| spawn_error(e.to_string()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(spawn_error("its pipes are missing".into()));
        };
        Ok(WorkerHandle {
            child,
            stdin,
            stdout,
            timeout: DEFAULT_TIMEOUT,
            usable: true,
        })
    }

    /// Starts a worker of the running executable for session `session` (named in its log
    /// lines), to live at most `lifetime`: what the server does. On Linux it runs `/proc/self/exe`, the very file the server was started
    /// from even if an upgrade has since replaced or deleted it, so server and worker always
    /// speak the same protocol.
    pub async fn spawn_current(lifetime: Duration, session: &str) -> Result<Self, WorkerError> {
        let own = Path::new("/proc/self/exe");
        if own.exists() {
            return Self::spawn_for(own, lifetime, Some(session)).await;
        }
        let program = std::env::current_exe().map_err(|e| WorkerError::Spawn {
            program: "the running executable".into(),
            reason: e.to_string(),
        })?;
        Self::spawn_for(&program, lifetime, Some(session)).await
    }

    /// Sets the time limit of each later exchange.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The worker's process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Opens the session for the CA of `manifest_json` (its registered manifest.json);
    /// returns the session's age recipient. The identity stays in the worker.
    pub async fn open(&mut self, manifest_json: &str) -> Result<String, WorkerError> {
        let request = WorkerRequest::Open {
            manifest_json: manifest_json.to_owned(),
        };
        match self.ask(&request, "open").await? {
            WorkerReply::Opened { recipient } => Ok(recipient),
            other => Err(self.unexpected("open", &other).await),
        }
    }

    /// Hands over one holder's sealed share; the worker decrypts and checks it.
    pub async fn contribute(
        &mut self,
        holder_id: &str,
        ciphertext: &str,
    ) -> Result<Verdict, WorkerError> {
        let request = WorkerRequest::Contribution {
            holder_id: holder_id.to_owned(),
            ciphertext: ciphertext.to_owned(),
        };
        match self.ask(&request, "a contribution").await? {
            WorkerReply::Accepted {
                holder_id: h,
                index,
                count,
            } if h == holder_id => Ok(Verdict::Accepted { index, count }),
            WorkerReply::Refused {
                holder_id: h,
                code,
                why,
            } if h == holder_id => Ok(Verdict::Refused { code, why }),
            other => Err(self.unexpected("a contribution", &other).await),
        }
    }

    /// Has the worker rebuild the key, do `job` and exit; returns the DER it signed. The
    /// worker is gone (exited and reaped, or killed) when this returns, whatever happened.
    pub async fn sign(mut self, job: SignJob) -> Result<Vec<u8>, WorkerError> {
        let reply = self.ask(&WorkerRequest::Sign { job }, "sign").await;
        self.usable = false;
        let result = match reply {
            Ok(WorkerReply::Signed { der }) => B64
                .decode(der)
                .map_err(|_| WorkerError::Malformed("the signed DER is not base64".into())),
            Ok(other) => Err(self.unexpected("sign", &other).await),
            Err(err) => Err(err),
        };
        self.end(self.timeout).await;
        result
    }

    /// Has the worker issue a batch ([`SignJob::IssueBatch`]) with the key rebuilt once;
    /// the exchange may take `timeout` (a batch of RSA-4096 signatures takes seconds).
    pub async fn sign_batch(
        mut self,
        job: SignJob,
        timeout: Duration,
    ) -> Result<Vec<Vec<u8>>, WorkerError> {
        self.timeout = timeout;
        let reply = self.ask(&WorkerRequest::Sign { job }, "sign").await;
        self.usable = false;
        let result = match reply {
            Ok(WorkerReply::SignedBatch { ders }) => ders
                .iter()
                .map(|der| {
                    B64.decode(der).map_err(|_| {
                        WorkerError::Malformed("a signed DER of the batch is not base64".into())
                    })
                })
                .collect(),
            Ok(other) => Err(self.unexpected("sign", &other).await),
            Err(err) => Err(err),
        };
        self.end(self.timeout).await;
        result
    }

    /// Tells the worker to wipe and exit, and kills it if it has not within a moment (at
    /// once if it cannot be told: a spent handle's pipe may be mid-frame).
    pub async fn abort(mut self) {
        let mut grace = Duration::ZERO;
        if self.usable {
            self.usable = false;
            let told = frame::write_async(&mut self.stdin, &WorkerRequest::Abort {});
            if let Ok(Ok(())) = tokio::time::timeout(ABORT_GRACE, told).await {
                grace = ABORT_GRACE;
            }
        }
        self.end(grace).await;
    }

    /// One request, one reply, within the time limit. A worker that failed, died, timed
    /// out or sent garbage is killed and the handle unusable. So is a handle whose
    /// exchange was dropped half-way (the caller's future cancelled): its pipe may hold
    /// half a frame, and it would read one reply as another's.
    async fn ask(
        &mut self,
        request: &WorkerRequest,
        asked: &'static str,
    ) -> Result<WorkerReply, WorkerError> {
        if !self.usable {
            return Err(WorkerError::Gone);
        }
        self.usable = false;
        let (stdin, stdout) = (&mut self.stdin, &mut self.stdout);
        let exchange = async {
            frame::write_async(stdin, request).await?;
            frame::read_async::<WorkerReply>(stdout).await
        };
        let outcome = tokio::time::timeout(self.timeout, exchange).await;
        match outcome {
            Ok(Ok(WorkerReply::Failed { why })) => {
                self.end(self.timeout).await;
                Err(WorkerError::Failed(why))
            }
            Ok(Ok(reply)) => {
                self.usable = true;
                Ok(reply)
            }
            Ok(Err(WorkerError::Closed)) => {
                let status = self.end(self.timeout).await;
                Err(WorkerError::Died(format!("{status}, while asked {asked}")))
            }
            Ok(Err(err)) => {
                self.end(Duration::ZERO).await;
                Err(err)
            }
            Err(_) => {
                self.end(Duration::ZERO).await;
                Err(WorkerError::Timeout(self.timeout.as_secs()))
            }
        }
    }

    async fn unexpected(&mut self, asked: &'static str, reply: &WorkerReply) -> WorkerError {
        self.usable = false;
        self.end(Duration::ZERO).await;
        WorkerError::Unexpected {
            asked,
            got: describe(reply),
        }
    }

    /// Waits up to `grace` for the worker to exit, kills it if it has not, reaps it, and
    /// says how it ended.
    async fn end(&mut self, grace: Duration) -> String {
        if let Ok(Ok(status)) = tokio::time::timeout(grace, self.child.wait()).await {
            return status.to_string();
        }
        let _ = self.child.start_kill();
        match self.child.wait().await {
            Ok(status) => format!("killed: {status}"),
            Err(e) => format!("killed, status unknown: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_is_send<F: std::future::Future + Send>(_: fn(WorkerHandle) -> F) {}

    /// The server keeps handles in shared state and drives them from spawned tasks.
    #[test]
    fn handles_and_their_exchanges_can_move_between_threads() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<WorkerHandle>();
        future_is_send(|mut h| async move {
            let _ = h.open("{}").await;
            let _ = h.contribute("NK001", "x").await;
            let job = SignJob::Crl {
                revoked: Vec::new(),
                number: 1,
                now: 0,
            };
            let _ = h.sign(job).await;
        });
        future_is_send(WorkerHandle::abort);
    }
}
