//! File writing with the care secrets need: new files only (unless forced), owner-only
//! modes, and whole directories that appear at once or not at all.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `bytes` to a new file with `mode`. With `force`, an existing file is replaced
/// (through a temporary file and a rename, so it is never half-written).
pub fn write_new(path: &Path, bytes: &[u8], mode: u32, force: bool) -> io::Result<()> {
    if !force {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        f.write_all(bytes)?;
        return f.sync_all();
    }
    let tmp = sibling(path, "tmp");
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A hidden path next to `path`, unique to this process and moment.
pub fn sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut random = [0u8; 6];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut random);
    path.with_file_name(format!(".{name}.{tag}-{}", hex::encode(random)))
}

/// The directory holding `path` (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// True when `dir` does not exist or is an empty directory.
pub fn is_absent_or_empty(dir: &Path) -> io::Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// A directory being filled under a temporary name; `commit` renames it into place,
/// dropping it uncommitted removes it.
#[derive(Debug)]
pub struct StagedDir {
    staging: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagedDir {
    pub fn new(target: &Path) -> io::Result<Self> {
        let staging = sibling(target, "partial");
        fs::create_dir_all(parent(&staging))?;
        fs::create_dir(&staging)?;
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o700))?;
        Ok(StagedDir {
            staging,
            target: target.to_owned(),
            committed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.staging
    }

    pub fn commit(mut self) -> io::Result<()> {
        if self.target.exists() {
            // only an empty directory may be replaced; remove_dir refuses anything else
            fs::remove_dir(&self.target)?;
        }
        fs::rename(&self.staging, &self.target)?;
        File::open(parent(&self.target))?.sync_all()?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}
