//! PKCS#11 calls can block for ever on a misbehaving reader (OpenSC waiting on pcscd).
//! A call made under a [`Watchdog`] that does not return in time ends the process with a
//! clear message: a stuck token cannot be cancelled, and a hung holder tool helps no one.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

/// How long any single token operation may take.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Watchdog {
    cancel: Option<Sender<()>>,
}

impl Watchdog {
    /// Arms a watchdog for `function` (a PKCS#11 function name, for the message).
    pub fn arm(function: &'static str) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("pkcs11-watchdog".into())
            .spawn(move || {
                if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(TOKEN_TIMEOUT) {
                    eprintln!(
                        "error: the token did not answer C_{function} within {} s\n\
                     hint: check the reader and that pcscd is running, then try again",
                        TOKEN_TIMEOUT.as_secs()
                    );
                    std::process::exit(1);
                }
            });
        Watchdog {
            cancel: spawned.ok().map(|_| tx),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.cancel.take() {
            let _ = tx.send(());
        }
    }
}
