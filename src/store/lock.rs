//! One server per data directory. Two servers on one database would each believe they own
//! the open sessions (the second would abort the first's), so `serve` holds an exclusive
//! lock on `DIR/serve.lock` for its whole life, taken before anything is read or written.
//! The kernel drops the lock when the process dies, however it dies.

use super::{Result, StoreError};
use rustix::fs::{FlockOperation, flock};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

/// Held while the server runs; dropping it releases the directory.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock, or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let fail = |reason: String| StoreError::DataDir {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let path = dir.join("serve.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| fail(format!("{}: {e}", path.display())))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let pid = holder.trim();
            return Err(StoreError::InUse {
                path: dir.display().to_string(),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.to_owned()
                },
            });
        }
        let record = (|| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_all()
        })();
        record.map_err(|e| fail(format!("{}: {e}", path.display())))?;
        Ok(DataDirLock { _file: file })
    }
}
