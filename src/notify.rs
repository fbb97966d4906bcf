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
        self.send("READY", &[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send("STATUS", &[NotifyState::Status(status)]);
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
