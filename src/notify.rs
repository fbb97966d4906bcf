//! The systemd notify protocol (sd_notify(3)) over `NOTIFY_SOCKET`, via
//! the sd-notify crate: readiness, status, watchdog pings, reloading and
//! stopping. Without `NOTIFY_SOCKET` (not under systemd) every call does
//! nothing. A failed send is logged, never fatal: the watchdog must not
//! stop watching because its own watcher is unreachable.

use sd_notify::NotifyState;
use std::time::Duration;
use tracing::debug;

#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    /// `WATCHDOG_USEC`, when systemd expects pings (and `WATCHDOG_PID`, if
    /// set, is this process).
    watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog: sd_notify::watchdog_enabled().filter(|d| !d.is_zero()),
        }
    }

    /// How often to ping: half the watchdog timeout, as sd_watchdog_enabled(3)
    /// advises. `None`: no watchdog.
    pub fn ping_every(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    fn send(&self, what: &str, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            debug!(error = %e, message = what, "sd_notify failed");
        }
    }

    /// Startup is done: migrations and the startup orphan scan.
    pub fn ready(&self, status: &str) {
        let status = one_line(status);
        self.send("READY", &[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    pub fn status(&self, status: &str) {
        let status = one_line(status);
        self.send("STATUS", &[NotifyState::Status(&status)]);
    }

    /// Startup will take `more` longer than systemd's start timeout may
    /// allow (the startup scan waiting out exit grace).
    pub fn extend_start(&self, more: Duration) {
        let usec = u32::try_from(more.as_micros()).unwrap_or(u32::MAX);
        self.send(
            "EXTEND_TIMEOUT_USEC",
            &[NotifyState::ExtendTimeoutUsec(usec)],
        );
    }

    /// The main loop is making progress.
    pub fn ping(&self) {
        if self.watchdog.is_some() {
            self.send("WATCHDOG", &[NotifyState::Watchdog]);
        }
    }

    /// A reload begins (`READY=1` ends it). MONOTONIC_USEC goes with it, as
    /// systemd 253+ requires of `Type=notify-reload`.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send("RELOADING", &[NotifyState::Reloading, now]),
            Err(_) => self.send("RELOADING", &[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self) {
        self.send("STOPPING", &[NotifyState::Stopping]);
    }
}

/// A status on one line: each line of a notification is a command to
/// systemd, so text from elsewhere (an executor's stderr in a snapshot
/// error) must not add `WATCHDOG=trigger` or `MAINPID=1`.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_status_cannot_smuggle_commands() {
        assert_eq!(
            super::one_line("boom\nWATCHDOG=trigger\r\nMAINPID=1"),
            "boom WATCHDOG=trigger  MAINPID=1"
        );
    }
}
