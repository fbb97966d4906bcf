//! `foreman twin --fleet`: every host's Foreman (last sweep, version,
//! silent or lost) and the RUNNING tasks per host, read from the fleet
//! table and the executor's tasks with the database's clock. The state
//! line is twin's: OK, WARNING (a Foreman silent, a host nobody watches,
//! RUNNING rows naming no host), CRITICAL (a host lost), UNKNOWN (the
//! fleet cannot be read).

use crate::config::Config;
use crate::executor;
use crate::fleet::{self, HostRow, View};
use crate::twin::State;
use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt::Write;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct FleetTwin {
    pub state: State,
    pub summary: String,
    /// The database's clock when read.
    pub now: DateTime<Utc>,
    pub leader: Option<String>,
    pub this_host: String,
    #[serde(serialize_with = "secs")]
    pub host_lost_after: Duration,
    pub hosts: Vec<Host>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    #[serde(flatten)]
    pub row: HostRow,
    /// ok, silent (past three intervals), foreman_down (silent past
    /// host_lost_after, tasks still beating), lost, braked (lost, but the
    /// fleet brake holds), unwatched, no_host.
    pub status: &'static str,
    pub leader: bool,
}

/// Read the fleet now.
pub fn take(config: &Config) -> Result<FleetTwin> {
    let Some(fc) = &config.fleet else {
        bail!("--fleet needs [executor] kind = \"postgres\" (the hosts meet in its database)");
    };
    let exec = executor::open(config)?;
    let Some(f) = exec.fleet() else {
        bail!("this executor has no fleet");
    };
    let view = f.view()?;
    let silent = fleet::silent_hosts(&view, "", fc.host_lost_after);
    let tasks = if silent.is_empty() {
        crate::model::Snapshot::default()
    } else {
        f.tasks_of(&silent, &[])?
    };
    // As the leader would see it from outside every host.
    let a = fleet::assess(&view, &tasks, "", fc.host_lost_after);
    Ok(build(config, fc.host_lost_after, view, &a))
}

fn build(config: &Config, lost_after: Duration, view: View, a: &fleet::Assessment) -> FleetTwin {
    let late = config.interval.saturating_mul(3);
    let mut hosts = Vec::new();
    for row in view.hosts {
        let name = row.host.clone();
        let is = |list: &[String]| name.as_ref().is_some_and(|n| list.contains(n));
        let lost: Vec<String> = a.lost.iter().map(|l| l.host.clone()).collect();
        let status = match (&name, &row.foreman) {
            (None, _) => "no_host",
            _ if is(&lost) && a.brake.is_some() => "braked",
            _ if is(&lost) => "lost",
            _ if is(&a.foreman_down) => "foreman_down",
            (Some(_), None) => "unwatched",
            (Some(_), Some(f)) if f.silent > late => "silent",
            _ => "ok",
        };
        hosts.push(Host {
            leader: name.is_some() && name == view.leader,
            row,
            status,
        });
    }
    let count = |s: &str| hosts.iter().filter(|h| h.status == s).count();
    let lost = count("lost") + count("braked");
    let warn = count("silent") + count("foreman_down") + count("unwatched") + count("no_host");
    let state = if lost > 0 {
        State::Critical
    } else if warn > 0 || view.leader.is_none() {
        State::Warning
    } else {
        State::Ok
    };
    let watched = hosts.iter().filter(|h| h.row.foreman.is_some()).count();
    let mut summary = format!(
        "{} hosts, {watched} watched, {lost} lost, {} silent",
        hosts.iter().filter(|h| h.row.host.is_some()).count(),
        count("silent") + count("foreman_down")
    );
    match &view.leader {
        Some(l) => {
            let _ = write!(summary, "; leader {l}");
        }
        None => summary.push_str("; no leader (no Foreman holds the fleet's lock)"),
    }
    if let Some(b) = &a.brake {
        let _ = write!(summary, "; {b}");
    }
    FleetTwin {
        state,
        summary,
        now: view.now,
        leader: view.leader,
        this_host: config.host.clone(),
        host_lost_after: lost_after,
        hosts,
    }
}

/// The table, cut to `width` columns.
pub fn text(t: &FleetTwin, width: usize) -> String {
    let mut out = format!(
        "FLEET {} - {}\n",
        t.state.as_str(),
        crate::logging::escaped(&t.summary)
    );
    let ago =
        |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string();
    let rows: Vec<[String; 6]> = t
        .hosts
        .iter()
        .map(|h| {
            let f = h.row.foreman.as_ref();
            // Host names and versions come from the database: a control
            // character in one must not drive the operator's terminal.
            let mut name = h
                .row
                .host
                .as_deref()
                .map_or_else(|| "(no host)".into(), crate::logging::escaped);
            if h.leader {
                name.push_str(" *");
            }
            if h.row.host.as_deref() == Some(t.this_host.as_str()) {
                name.push_str(" (this)");
            }
            [
                name,
                h.status.to_string(),
                h.row.running.to_string(),
                f.map_or("-".into(), |f| ago(f.silent)),
                f.and_then(|f| f.last_sweep_at).map_or("-".into(), |s| {
                    s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                }),
                f.map_or("-".into(), |f| crate::logging::escaped(&f.version)),
            ]
        })
        .collect();
    let head = [
        "HOST",
        "STATUS",
        "RUNNING",
        "SILENT",
        "LAST SWEEP",
        "VERSION",
    ];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{c:<w$}");
        }
        let l = l.trim_end().to_string();
        let cut: String = l.chars().take(width.max(20)).collect();
        cut + "\n"
    };
    out.push_str(&line(head.to_vec()));
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out.push_str("(* holds the fleet's lock: it looks for lost hosts)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::ForemanRow;

    fn row(host: Option<&str>, silent: Option<u64>, running: usize) -> HostRow {
        HostRow {
            host: host.map(str::to_string),
            foreman: silent.map(|s| ForemanRow {
                boot_id: "b".into(),
                version: "0.1.0".into(),
                last_seen: Utc::now(),
                last_sweep_at: None,
                silent: Duration::from_secs(s),
                running_reported: None,
                findings: None,
                actions: None,
                snapshot_error: None,
            }),
            running,
        }
    }

    #[test]
    fn each_host_gets_its_status_and_the_worst_decides_the_state() {
        let config = crate::config::Config::parse(
            "host = \"a\"\ninterval = \"10s\"\n[executor]\nkind = \"sqlite\"\npath = \"x.db\"\n",
            std::path::Path::new("/etc/foreman/foreman.toml"),
        )
        .expect("config");
        let view = View {
            now: Utc::now(),
            leader: Some("a".into()),
            hosts: vec![
                row(Some("a"), Some(1), 2),
                row(Some("b"), Some(45), 1),
                row(Some("c"), None, 4),
                row(None, None, 1),
            ],
        };
        let t = build(
            &config,
            Duration::from_secs(600),
            view,
            &fleet::Assessment::default(),
        );
        let status: Vec<&str> = t.hosts.iter().map(|h| h.status).collect();
        assert_eq!(status, ["ok", "silent", "unwatched", "no_host"]);
        assert_eq!(t.state, State::Warning);
        assert!(t.hosts[0].leader);
        let text = text(&t, 120);
        let mut hostile = t.clone();
        hostile.hosts[1].row.host = Some("b\x1b[2J\nx".into());
        let shown = super::text(&hostile, 120);
        assert!(
            !shown.contains('\x1b') && shown.contains("b\\u{1b}[2J\\nx"),
            "{shown}"
        );
        assert!(
            text.starts_with("FLEET WARNING - 3 hosts, 2 watched, 0 lost, 1 silent; leader a"),
            "{text}"
        );
        assert!(text.contains("a * (this)"), "{text}");
    }
}
