//! Silences and maintenance windows: while one covers a finding, Foreman
//! still records it (so twin, `log` and `explain` say what it saw), but
//! holds its action and its alert: outcome `silenced`. When the silence
//! ends the next sweep judges afresh and acts. A silence is made with
//! `foreman silence` (kept in the activity log, so the daemon sees it at
//! its next sweep); a window is `[[maintenance]]` in foreman.toml.

use crate::activity::{parse_ts, ts};
use crate::config::Config;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// What a hold covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// A droid type.
    Type,
    /// One task, by id.
    Task,
    /// A host: every task of it (this host's Foreman: all of them).
    Host,
    /// A maintenance window, for its droid types (all when none listed).
    Maintenance,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Type => "type",
            Scope::Task => "task",
            Scope::Host => "host",
            Scope::Maintenance => "maintenance",
        }
    }
    fn parse(s: &str) -> Option<Scope> {
        [Scope::Type, Scope::Task, Scope::Host]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// A silence or a maintenance window in force.
#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    /// The silence's id (none for a maintenance window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub scope: Scope,
    /// The droid type, task id or host; for a window, its droid types
    /// joined (empty: every type).
    pub value: String,
    pub reason: String,
    pub until: DateTime<Utc>,
}

impl Hold {
    /// Whether this hold covers a finding about `task_id` of `droid_type`
    /// on `host` (None: this host).
    pub fn covers(
        &self,
        task_id: &str,
        droid_type: Option<&str>,
        host: Option<&str>,
        me: &str,
    ) -> bool {
        match self.scope {
            Scope::Task => self.value == task_id,
            Scope::Type => droid_type == Some(self.value.as_str()),
            Scope::Host => host.unwrap_or(me) == self.value,
            Scope::Maintenance => {
                self.value.is_empty()
                    || droid_type.is_some_and(|t| self.value.split(',').any(|v| v == t))
            }
        }
    }

    /// One line for people (`silence --list`, twin): id, scope, what,
    /// until, why; text from outside escaped.
    pub fn line(&self) -> String {
        format!(
            "{}  {:<11} {:<24} until {}  {}",
            self.id.map_or("-".to_string(), |i| format!("#{i}")),
            self.scope.as_str(),
            crate::logging::escaped(if self.value.is_empty() {
                "(every type)"
            } else {
                &self.value
            }),
            self.until
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            crate::logging::escaped(&self.reason)
        )
    }

    /// The note a held finding carries.
    pub fn note(&self) -> String {
        let what = match self.scope {
            Scope::Maintenance => "maintenance window".to_string(),
            s => format!(
                "silence #{} ({} {})",
                self.id.unwrap_or(0),
                s.as_str(),
                self.value
            ),
        };
        format!(
            "held by a {what} until {}: {}; recorded only, nothing done and no alert",
            self.until
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.reason
        )
    }
}

/// Make a silence, from `now` for `length`. Returns its id.
pub fn add(
    conn: &Connection,
    scope: Scope,
    value: &str,
    length: std::time::Duration,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<i64> {
    if value.is_empty() {
        bail!("a silence needs a droid type, task id or host");
    }
    let until = now
        .checked_add_signed(chrono::Duration::from_std(length).context("--for is too long")?)
        .context("--for is too long")?;
    conn.execute(
        "INSERT INTO silences (scope, value, reason, created_at, until) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![scope.as_str(), value, reason, ts(now), ts(until)],
    )?;
    Ok(conn.last_insert_rowid())
}

/// End a silence now. False when there is none by that id still in force.
pub fn clear(conn: &Connection, id: i64, now: DateTime<Utc>) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE silences SET cleared_at = ?2 WHERE id = ?1 AND cleared_at IS NULL AND until > ?2",
        params![id, ts(now)],
    )? > 0)
}

/// End every silence in force now; how many.
pub fn clear_all(conn: &Connection, now: DateTime<Utc>) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE silences SET cleared_at = ?1 WHERE cleared_at IS NULL AND until > ?1",
        params![ts(now)],
    )?)
}

/// The silences in force at `now` (none in a log from before them), and
/// the maintenance windows open at `now`.
pub fn active(conn: Option<&Connection>, config: &Config, now: DateTime<Utc>) -> Result<Vec<Hold>> {
    let mut out = Vec::new();
    if let Some(conn) = conn {
        let exists = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'silences'",
                [],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if exists {
            let mut stmt = conn.prepare_cached(
                "SELECT id, scope, value, reason, until FROM silences
                 WHERE cleared_at IS NULL AND until > ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([ts(now)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?;
            for row in rows {
                let (id, scope, value, reason, until) = row?;
                let (Some(scope), Ok(until)) = (Scope::parse(&scope), parse_ts(&until)) else {
                    continue;
                };
                out.push(Hold {
                    id: Some(id),
                    scope,
                    value,
                    reason: reason.unwrap_or_else(|| "silenced".into()),
                    until,
                });
            }
        }
    }
    for m in &config.maintenance {
        let Some(start) = m.schedule.latest_at_or_before(now) else {
            continue;
        };
        let Some(end) = chrono::Duration::from_std(m.duration)
            .ok()
            .and_then(|d| start.checked_add_signed(d))
        else {
            continue;
        };
        if now < end {
            out.push(Hold {
                id: None,
                scope: Scope::Maintenance,
                value: m.droid_types.join(","),
                reason: m.reason.clone(),
                until: end,
            });
        }
    }
    Ok(out)
}

/// The hold covering a finding, if any (the one that ends last).
pub fn covering<'h>(
    holds: &'h [Hold],
    task_id: &str,
    droid_type: Option<&str>,
    host: Option<&str>,
    me: &str,
) -> Option<&'h Hold> {
    holds
        .iter()
        .filter(|h| h.covers(task_id, droid_type, host, me))
        .max_by_key(|h| h.until)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(scope: Scope, value: &str) -> Hold {
        Hold {
            id: Some(1),
            scope,
            value: value.into(),
            reason: "r".into(),
            until: Utc::now(),
        }
    }

    #[test]
    fn each_scope_covers_what_it_names_and_nothing_else() {
        // (hold, task, type, host, covered)
        let table = [
            (hold(Scope::Task, "t1"), "t1", Some("b"), None, true),
            (hold(Scope::Task, "t1"), "t2", Some("b"), None, false),
            (
                hold(Scope::Type, "builder"),
                "t1",
                Some("builder"),
                None,
                true,
            ),
            (
                hold(Scope::Type, "builder"),
                "t1",
                Some("scribe"),
                None,
                false,
            ),
            (hold(Scope::Type, "builder"), "t1", None, None, false),
            (hold(Scope::Host, "me"), "t1", Some("b"), None, true),
            (hold(Scope::Host, "me"), "t1", Some("b"), Some("me"), true),
            (hold(Scope::Host, "other"), "t1", Some("b"), None, false),
            (hold(Scope::Maintenance, ""), "t1", None, None, true),
            (
                hold(Scope::Maintenance, "a,builder"),
                "t1",
                Some("builder"),
                None,
                true,
            ),
            (
                hold(Scope::Maintenance, "a,builder"),
                "t1",
                Some("build"),
                None,
                false,
            ),
        ];
        for (h, task, ty, host, want) in table {
            assert_eq!(
                h.covers(task, ty, host, "me"),
                want,
                "{h:?} {task} {ty:?} {host:?}"
            );
        }
    }
}
