//! An executor reached through commands: one prints the snapshot as JSON
//! (`{"tasks": [ … ]}`), the other marks a task failed. Arguments are passed
//! as separate argv items, never through a shell.

use super::{parse_enabled, parse_row, Executor, History, Marked};
use crate::child::{self, Failure, Limits};
use crate::config::{ExecutorConfig, ExecutorTz};
use crate::model::{Snapshot, Task};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use tracing::warn;

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

/// The most a snapshot command may print on stdout: far above a snapshot of
/// 10,000 tasks (a few MiB), far below what would hurt Foreman. More is an
/// error (the command is killed), not a snapshot.
pub const MAX_STDOUT: usize = 64 << 20;
/// Of an executor command's stderr, the first and the last this many bytes
/// are kept for the error.
pub const KEEP_STDERR: usize = 4096;

/// Run argv with a deadline (`crate::child::run`: its own group, killed with
/// everything it started once it exits or times out; the reads bounded by
/// the same deadline and by `MAX_STDOUT`); returns (exit code, stdout, stderr).
fn run(
    argv: &[String],
    timeout: Duration,
    env: &[(&str, String)],
) -> Result<(Option<i32>, Vec<u8>, String)> {
    let (prog, args) = argv.split_first().context("empty command")?;
    let mut command = Command::new(prog);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null());
    let limits = Limits {
        timeout,
        stdout: Some(MAX_STDOUT),
        stderr: KEEP_STDERR,
    };
    let done = match child::run(&mut command, limits) {
        Ok(done) => done,
        Err(Failure::Start(e)) => return Err(e).with_context(|| format!("starting {prog}")),
        Err(Failure::TimedOut { stderr }) => {
            let said = String::from_utf8_lossy(&stderr);
            let first = said
                .lines()
                .map(|l| l.trim().chars().take(200).collect::<String>())
                .find(|l| !l.is_empty());
            bail!(
                "{prog} did not finish within {}{}",
                humantime::format_duration(timeout),
                first.map(|l| format!(" (stderr: {l})")).unwrap_or_default()
            )
        }
        Err(e) => bail!("{prog}: {e}"),
    };
    let stdout = done.stdout;
    let stderr = String::from_utf8_lossy(&done.stderr).into_owned();
    Ok((
        done.status.code(),
        stdout,
        match done.status.signal() {
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
        // Never the whole document as one `serde_json::Value` (a tree of
        // small values costs up to 80 times its bytes): its arrays are split
        // into raw slices of stdout, and each row is read, parsed and
        // dropped in turn, so memory holds stdout and one row's tree.
        let doc = read_doc(&stdout)?;
        let tasks = doc
            .tasks
            .context("the snapshot command's JSON has no \"tasks\" array")?;
        let rows = tasks
            .iter()
            .map(
                |raw| match serde_json::from_str::<serde_json::Value>(raw.get()) {
                    Ok(serde_json::Value::Object(map)) => parse_row(&map, self.tz),
                    _ => parse_row(&serde_json::Map::new(), self.tz),
                },
            )
            .collect();
        // Optional: `"droid_types": [{"name": "builder", "enabled": true}]`.
        let droid_types = match doc.droid_types {
            None => None,
            Some(raw) if raw.get() == "null" => None,
            Some(raw) => {
                let types: Vec<&serde_json::value::RawValue> = serde_json::from_str(raw.get())
                    .context("the snapshot command's \"droid_types\" is not an array")?;
                let mut out = BTreeMap::new();
                for raw in types {
                    let t: serde_json::Value =
                        serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null);
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

/// The snapshot command's document. Only a JSON object is one: serde reads
/// a struct from a JSON array too, by position (`[[…tasks…], […types…]]`),
/// which is no format the contract documents; such output is malformed, and
/// taking it would turn a command printing the wrong thing into a snapshot.
fn read_doc(stdout: &[u8]) -> Result<Doc<'_>> {
    const NOT_AN_OBJECT: &str = "the snapshot command did not print a JSON object";
    // JSON's whitespace; serde_json skips the same before the value.
    let first = stdout
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        bail!(
            "{NOT_AN_OBJECT} ({}): it must print {{\"tasks\": [ … ]}}",
            match first {
                None => "its output is empty",
                Some(b'[') => "it printed a JSON array",
                Some(_) => "it printed something else",
            }
        );
    }
    serde_json::from_slice(stdout).context(NOT_AN_OBJECT)
}

/// The snapshot command's document, its arrays left as slices of stdout.
#[derive(serde::Deserialize)]
struct Doc<'a> {
    #[serde(borrow, default)]
    tasks: Option<Vec<&'a serde_json::value::RawValue>>,
    #[serde(borrow, default)]
    droid_types: Option<&'a serde_json::value::RawValue>,
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
    use super::{read_doc, substitute};

    #[test]
    fn only_a_json_object_is_a_snapshot_document() {
        // serde would read these as the struct, by position: one row each.
        for doc in [
            "[[null]]",
            " [[{\"id\": \"a\"}]]",
            "[]",
            "",
            "  ",
            "\"tasks\"",
            "null",
        ] {
            let e = read_doc(doc.as_bytes()).err();
            assert!(
                e.as_ref()
                    .is_some_and(|e| e.to_string().contains("did not print a JSON object")),
                "{doc:?} was taken: {e:?}"
            );
        }
        let doc = read_doc(b"\n {\"tasks\": [null, {\"id\": \"a\"}]}").ok();
        assert_eq!(doc.and_then(|d| d.tasks).map(|t| t.len()), Some(2));
    }

    #[test]
    fn placeholders_are_filled_once() {
        let v = [("{id}", "job-{pid}"), ("{pid}", "42")];
        assert_eq!(substitute("{id}:{pid}:{x}", &v), "job-{pid}:42:{x}");
        assert_eq!(substitute("plain", &v), "plain");
        assert_eq!(substitute("é{pid}é", &v), "é42é");
    }
}
