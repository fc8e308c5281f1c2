//! Process hardening for every command that may hold a secret: no core dumps, and no
//! ptrace or /proc/PID/mem access by other processes of the same user.

/// Applies what the OS allows and returns what it could not do, for a warning.
pub fn process() -> Vec<String> {
    let mut failed = Vec::new();
    let zero = rustix::process::Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Core, zero) {
        failed.push(format!("disabling core dumps: {e}"));
    }
    #[cfg(target_os = "linux")]
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        failed.push(format!("marking the process non-dumpable: {e}"));
    }
    failed
}

/// Locks all current and future memory of the process (the server, which rebuilds CA keys),
/// when the memory-lock limit allows it without risking allocation failures later.
/// Returns why it did not, for a warning.
pub fn lock_memory() -> Result<(), String> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Memlock);
    if limit.current.is_some() {
        // a privileged process (root, CAP_SYS_RESOURCE) may lift even a finite hard limit
        let unlimited = rustix::process::Rlimit {
            current: None,
            maximum: None,
        };
        if setrlimit(Resource::Memlock, unlimited).is_err() {
            return Err(format!(
                "memory not locked: RLIMIT_MEMLOCK is {} bytes (set LimitMEMLOCK=infinity for the service)",
                limit.current.unwrap_or(0)
            ));
        }
    }
    rustix::mm::mlockall(rustix::mm::MlockAllFlags::CURRENT | rustix::mm::MlockAllFlags::FUTURE)
        .map_err(|e| format!("memory not locked: mlockall: {e}"))
}

/// Why a core dump might still be written despite [`process`], if the system says so:
/// with `fs.suid_dumpable = 2` the kernel dumps even non-dumpable processes, to a root-only
/// file or to a core-dump handler that may ignore RLIMIT_CORE.
pub fn core_dump_risk() -> Option<String> {
    let setting = std::fs::read_to_string("/proc/sys/fs/suid_dumpable").ok()?;
    (setting.trim() != "0").then(|| {
        format!(
            "fs.suid_dumpable is {} (not 0): a crash may still dump this process's memory \
             (set it to 0: sysctl fs.suid_dumpable=0)",
            setting.trim()
        )
    })
}
