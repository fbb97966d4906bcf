//! An executor reached through commands: one prints the snapshot as JSON
//! (`{"tasks": [ … ]}`), the other marks a task failed. Arguments are passed
//! as separate argv items, never through a shell.

use super::{parse_enabled, parse_row, Executor, History, Marked};
use crate::config::{ExecutorConfig, ExecutorTz};
use crate::model::{Snapshot, Task};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;
use tracing::warn;
use wait_timeout::ChildExt;

pub struct CommandExecutor {
    snapshot: Vec<String>,
    mark: Vec<String>,
    timeout: Duration,
    history: Duration,
    tz: ExecutorTz,
}

impl CommandExecutor {
    pub fn new(cfg: &ExecutorConfig) -> CommandExecutor {
        CommandExecutor {
            snapshot: cfg.snapshot_command.clone(),
            mark: cfg.mark_failed_command.clone(),
            timeout: cfg.timeout,
            history: cfg.history_window,
            tz: cfg.timezone,
        }
    }
}

/// Run argv with a deadline; returns (exit code, stdout, stderr).
fn run(
    argv: &[String],
    timeout: Duration,
    env: &[(&str, String)],
) -> Result<(Option<i32>, String, String)> {
    let (prog, args) = argv.split_first().context("empty command")?;
    let mut child = crate::child::without_capabilities(&mut Command::new(prog))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        // Its own process group: a signal to Foreman's group (systemd's
        // stop, Ctrl-C) lets the command finish instead of turning a stop
        // into a failed snapshot.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {prog}"))?;
    // Drain both pipes on threads so a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().context("no stdout")?;
    let mut err = child.stderr.take().context("no stderr")?;
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = match child.wait_timeout(timeout)? {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{prog} did not finish within {}",
                humantime::format_duration(timeout)
            );
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok((
        status.code(),
        stdout,
        match status.signal() {
            Some(sig) => format!("killed by signal {sig}; {stderr}"),
            None => stderr,
        },
    ))
}

impl CommandExecutor {
    /// Run the snapshot command, asking for `history` of finished tasks
    /// (`FOREMAN_HISTORY_SECONDS`).
    fn fetch(&self, history: Duration) -> Result<History> {
        let env = [("FOREMAN_HISTORY_SECONDS", history.as_secs().to_string())];
        let (code, stdout, stderr) = run(&self.snapshot, self.timeout, &env)?;
        if code != Some(0) {
            bail!(
                "snapshot command {:?} exited with {:?}: {}",
                self.snapshot,
                code,
                stderr.trim()
            );
        }
        let doc: serde_json::Value =
            serde_json::from_str(&stdout).context("the snapshot command did not print JSON")?;
        let tasks = doc
            .get("tasks")
            .and_then(|t| t.as_array())
            .context("the snapshot command's JSON has no \"tasks\" array")?;
        let rows = tasks
            .iter()
            .map(|t| match t.as_object() {
                Some(map) => parse_row(map, self.tz),
                None => parse_row(&serde_json::Map::new(), self.tz),
            })
            .collect();
        // Optional: `"droid_types": [{"name": "builder", "enabled": true}]`.
        let droid_types = match doc.get("droid_types") {
            None | Some(serde_json::Value::Null) => None,
            Some(types) => {
                let types = types
                    .as_array()
                    .context("the snapshot command's \"droid_types\" is not an array")?;
                let mut out = BTreeMap::new();
                for t in types {
                    let name = t.get("name").and_then(|n| n.as_str());
                    let enabled = t.get("enabled").and_then(parse_enabled);
                    match (name, enabled) {
                        (Some(name), Some(on)) => {
                            out.insert(name.to_string(), on);
                        }
                        _ => {
                            warn!(row = %t, "droid_types entry left out: its name or enabled is unreadable")
                        }
                    }
                }
                Some(out)
            }
        };
        Ok(History {
            snapshot: Snapshot { rows },
            droid_types,
        })
    }
}

impl Executor for CommandExecutor {
    fn snapshot(&self) -> Result<Snapshot> {
        Ok(self.fetch(self.history)?.snapshot)
    }

    fn history(&self, window: Duration) -> Result<History> {
        self.fetch(window)
    }

    fn mark_failed(&self, task: &Task, reason: &str, _at: DateTime<Utc>) -> Result<Marked> {
        let pid = task.pid.map(|p| p.to_string()).unwrap_or_default();
        let attempt = task.attempt.to_string();
        let argv: Vec<String> = self
            .mark
            .iter()
            .map(|a| {
                substitute(
                    a,
                    &[
                        ("{id}", &task.id),
                        ("{attempt}", &attempt),
                        ("{pid}", &pid),
                        ("{reason}", reason),
                    ],
                )
            })
            .collect();
        let (code, _, stderr) = run(&argv, self.timeout, &[])?;
        match code {
            Some(0) => Ok(Marked::Failed),
            Some(3) => Ok(Marked::NotRunning),
            other => bail!("mark command exited with {other:?}: {}", stderr.trim()),
        }
    }
}

/// Fill placeholders in one pass: an inserted value is never scanned again,
/// so a task id holding `{reason}` stays that id.
pub(crate) fn substitute(arg: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    'scan: while !rest.is_empty() {
        for (name, value) in values {
            if let Some(after) = rest.strip_prefix(name) {
                out.push_str(value);
                rest = after;
                continue 'scan;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::substitute;

    #[test]
    fn placeholders_are_filled_once() {
        let v = [("{id}", "job-{pid}"), ("{pid}", "42")];
        assert_eq!(substitute("{id}:{pid}:{x}", &v), "job-{pid}:42:{x}");
        assert_eq!(substitute("plain", &v), "plain");
        assert_eq!(substitute("é{pid}é", &v), "é42é");
    }
}
