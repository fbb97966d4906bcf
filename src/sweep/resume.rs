//! What a sweep takes up from the sweeps before it: the open findings (to
//! act on again or close), the actions within the brake's rolling window,
//! and the terminations a crash interrupted (to complete).
//!
//! Read from the log after the snapshot, before `/proc` is scanned.

use crate::activity::{ActivityLog, Interrupted, OpenFinding};
use crate::config::Config;
use crate::judge::Inputs;
use crate::model::{Action, Kind, Task};
use anyhow::Result;
use chrono::{DateTime, Utc};
use tracing::warn;

/// The earlier sweeps' business this sweep continues.
pub(super) struct Earlier {
    pub open: Vec<OpenFinding>,
    /// Actions within the rolling window (`[defaults] timeout`) before this
    /// sweep, for the brake.
    pub recent_actions: usize,
    /// Interrupted terminations, with the inputs that decided them.
    pub interrupted: Vec<(Interrupted, Inputs)>,
}

impl Earlier {
    /// Read what the log holds (nothing without a log: a dry run on a
    /// fresh host).
    pub(super) fn load(
        reader: Option<&ActivityLog>,
        config: &Config,
        boot_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Earlier> {
        // A lost host's findings are the fleet sweep's to settle: this
        // host's snapshot never holds their tasks.
        let mut open = reader
            .map(|l| l.open_findings())
            .transpose()?
            .unwrap_or_default();
        open.retain(|o| o.kind != Kind::HostLost.as_str());
        let recent_actions = match reader {
            Some(l) => {
                let window = chrono::Duration::from_std(config.defaults.timeout)
                    .unwrap_or(chrono::Duration::MAX);
                let since = now
                    .checked_sub_signed(window)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC);
                l.actions_since(since)?
            }
            None => 0,
        };
        let interrupted = match reader {
            Some(l) => interrupted(l, &open, boot_id)?,
            None => Vec::new(),
        };
        Ok(Earlier {
            open,
            recent_actions,
            interrupted,
        })
    }

    /// An event sweep's share: its tasks' open findings only (the others
    /// are not judged, so must not be closed), and no interrupted
    /// termination (the next full sweep completes those).
    pub(super) fn focus(&mut self, ids: &std::collections::HashSet<String>) {
        self.open.retain(|o| ids.contains(&o.task_id));
        self.interrupted.clear();
    }

    /// This task's termination was interrupted: it is finished, not judged
    /// anew.
    pub(super) fn resuming(&self, task: &Task) -> bool {
        self.interrupted
            .iter()
            .any(|(_, i)| i.task.id == task.id && i.task.attempt == task.attempt)
    }
}

/// Terminations a crash interrupted: a hung or timed_out finding still pending whose
/// intent to signal was recorded, in this boot (after a reboot there is
/// nothing left of the tree to finish). They are completed whatever the
/// task or its process looks like now: Foreman had begun killing it.
fn interrupted(
    l: &ActivityLog,
    open: &[OpenFinding],
    boot_id: &str,
) -> Result<Vec<(Interrupted, Inputs)>> {
    let mut interrupted: Vec<(Interrupted, Inputs)> = Vec::new();
    for o in open.iter().filter(|o| {
        (o.kind == Kind::Hung.as_str() || o.kind == Kind::TimedOut.as_str())
            && o.action == Action::TerminateAndMark
    }) {
        if !l.finding_intended(o.id)? {
            continue;
        }
        let Some(r) = l.resume_of(o.id)? else {
            continue;
        };
        match serde_json::from_value::<Inputs>(r.inputs.clone()) {
            Ok(i) if i.boot.boot_id == boot_id => interrupted.push((r, i)),
            Ok(_) => {}
            Err(e) => {
                warn!(target: "foreman::sweep", finding_id = o.id, error = %e, "an interrupted termination's inputs cannot be read; it is not resumed")
            }
        }
    }
    Ok(interrupted)
}
