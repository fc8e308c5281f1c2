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
