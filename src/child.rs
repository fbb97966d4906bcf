//! Commands Foreman starts (executor commands, alert and wellbeing command
//! sinks) never inherit the capabilities an operator granted Foreman
//! (`AmbientCapabilities=CAP_KILL CAP_SYS_PTRACE …` in a drop-in): those
//! are for signalling droids and reading their /proc, not for a pager
//! script.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Clear the ambient capability set in the child before it runs the
/// program: a non-root program then starts with no capabilities at all.
pub fn without_capabilities(command: &mut Command) -> &mut Command {
    // SAFETY: the closure runs between fork and exec and only calls
    // prctl(2), which is async-signal-safe; it allocates nothing. A kernel
    // without ambient capabilities (EINVAL) has nothing to clear.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        })
    }
}
