//! The fleet leader's sweep: the RUNNING tasks of lost hosts (`fleet::assess`)
//! become `host_lost` findings, go through the same brake (per sweep and
//! rolling window) and shadow mode as this host's own, are recorded before
//! anything acts, and are marked with the same compare-and-set; nothing is
//! signalled (the processes, if any are left, are on another host). The
//! fleet brake (more than half the known hosts lost at once) holds every
//! one of them. Recorded only when it finds or settles something, so a
//! quiet fleet writes nothing.

use super::act;
use super::judging::Judged;
use super::plan;
use super::record::{self, Memory};
use super::{finish, LogAccess, SweepReport};
use crate::activity::{ActivityLog, SweepRecord};
use crate::config::Config;
use crate::decide::{decide_sweep, SweepFacts};
use crate::executor::Executor;
use crate::fleet;
use crate::judge::{Evidence, Judgement};
use crate::model::{Kind, Mode, Outcome, SweepKind, Task};
use crate::probe::{boot_facts, Clocks, ProcTable};
use anyhow::Result;
use chrono::Utc;
use serde_json::json;
use tracing::warn;

/// The leader's look at the fleet (`view`), or, from a Foreman that no
/// longer leads (`None`), only the settling of the `host_lost` findings it
/// left open when it stopped leading (a crash between record and mark):
/// read back by id and closed as they ended. `None` when there was
/// nothing to find or settle (nothing recorded).
pub fn fleet_sweep(
    config: &Config,
    executor: &dyn Executor,
    log: &mut ActivityLog,
    view: Option<&fleet::View>,
) -> Result<Option<SweepReport>> {
    let (Some(fleet), Some(fc)) = (executor.fleet(), config.fleet.as_ref()) else {
        return Ok(None);
    };
    let open: Vec<_> = log
        .open_findings()?
        .into_iter()
        .filter(|o| o.kind == Kind::HostLost.as_str())
        .collect();
    let empty = fleet::View {
        now: Utc::now(),
        leader: None,
        hosts: Vec::new(),
    };
    let view = view.unwrap_or(&empty);
    let silent = fleet::silent_hosts(view, &config.host, fc.host_lost_after);
    if silent.is_empty() && open.is_empty() {
        return Ok(None);
    }
    let ids: Vec<String> = open.iter().map(|o| o.task_id.clone()).collect();
    let tasks = fleet.tasks_of(&silent, &ids)?;
    let a = fleet::assess(view, &tasks, &config.host, fc.host_lost_after);
    for host in &a.foreman_down {
        warn!(target: "foreman::sweep", host = %host, "this host's Foreman is silent but some of its tasks still beat: the host lives, its Foreman does not (nothing is failed)");
    }
    if a.lost.is_empty() && open.is_empty() {
        return Ok(None);
    }

    let started_at = Utc::now();
    let boot = boot_facts()?;
    let judged: Vec<Judged> = a
        .lost
        .iter()
        .flat_map(|lost| lost.tasks.iter().map(move |t| (lost, t)))
        .map(|(lost, t)| judged(lost, t, view, fc.host_lost_after, &config.host))
        .collect();
    let window =
        chrono::Duration::from_std(config.defaults.timeout).unwrap_or(chrono::Duration::MAX);
    let recent_actions = log.actions_since(
        started_at
            .checked_sub_signed(window)
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC),
    )?;
    let (mut decisions, _) = decide_sweep(
        &plan::cases(config, &judged),
        &SweepFacts {
            now: started_at,
            starved: None,
            // The 20% of the brake's default limit is of the fleet's
            // RUNNING tasks: one host of ten lost is a tenth of the fleet.
            running: view.hosts.iter().map(|h| h.running).sum(),
            max_actions: config.defaults.max_actions_per_sweep,
            shared_pids: Vec::new(),
            recent_actions,
            window_limit: config.defaults.max_actions_per_window,
            window: config.defaults.timeout,
            extra_actions: 0,
        },
    );
    if let Some(why) = &a.brake {
        warn!(target: "foreman::sweep", reason = %why, "fleet brake");
        for d in decisions.iter_mut().filter(|d| d.action.acts()) {
            d.outcome = Outcome::Braked;
            d.note = Some(why.clone());
        }
    }
    let mut planned = plan::findings(&judged, decisions, &ProcTable::empty())?;
    let holds = crate::silence::active(Some(log.conn()), config, started_at)?;
    plan::hold(&mut planned, &holds, &config.host);
    let record = SweepRecord {
        kind: SweepKind::Fleet.as_str(),
        host: config.host.clone(),
        mode: match config.mode {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        },
        started_at,
        tasks_seen: tasks.rows.len(),
        tasks_checked: judged.len(),
        error: None,
        deferral: None,
        boot_id: boot.boot_id.clone(),
        clocks: Clocks::now(),
        hang_floor: None,
        observations: Vec::new(),
        findings: planned.iter().map(|p| p.finding.clone()).collect(),
        closes: mine_or_not(
            plan::closes(&open, &planned, &tasks),
            &open,
            &tasks,
            &config.host,
        ),
        alerts: plan::alerts(config, &planned),
    };
    let mut report = super::empty_report(config, SweepKind::Fleet, false, started_at, None);
    report.tasks_seen = record.tasks_seen;
    report.tasks_checked = record.tasks_checked;
    let memory = Memory::Writing(log.begin(&record)?);
    let recorded = record::commit(memory, &record, &planned)?;
    report.sweep_id = recorded.sweep_id;
    fail::fail_point!("fleet::before_act");
    let mut access = LogAccess::Write(log);
    let acted = act::act(config, executor, &mut access, &planned, &recorded.ids)?;
    finish(&mut access, report, planned, recorded, acted).map(Some)
}

/// An open `host_lost` finding whose task is now FAILED by Foreman was
/// marked by this Foreman only if the reason names it: after a crash
/// between record and mark another leader may have marked it, and then
/// this finding did nothing (no second `recover` for recovery).
fn mine_or_not(
    closes: Vec<(i64, Outcome, String)>,
    open: &[crate::activity::OpenFinding],
    tasks: &crate::model::Snapshot,
    me: &str,
) -> Vec<(i64, Outcome, String)> {
    let by_me = fleet::marked_by(me);
    closes
        .into_iter()
        .map(|(id, outcome, detail)| {
            if outcome != Outcome::MarkedFailed {
                return (id, outcome, detail);
            }
            // `closes` found the row FAILED by a Foreman; which one?
            let task = open.iter().find(|o| o.id == id).map(|o| o.task_id.as_str());
            let mine = tasks.rows.iter().any(|r| match r {
                crate::model::Row::Task(t) => {
                    Some(t.id.as_str()) == task
                        && t.error.as_deref().is_some_and(|e| e.contains(&by_me))
                }
                crate::model::Row::Bad(_) => false,
            });
            if mine {
                (id, outcome, detail)
            } else {
                (
                    id,
                    Outcome::AlreadyFinished,
                    "marked failed by another Foreman of the fleet".to_string(),
                )
            }
        })
        .collect()
}

/// A lost host's task as a finding: the host's row and the task's own
/// last sign of life, both against the database's clock.
fn judged<'t>(
    lost: &fleet::Lost,
    task: &'t Task,
    view: &fleet::View,
    lost_after: std::time::Duration,
    me: &str,
) -> Judged<'t> {
    let evidence = Evidence {
        reason: fleet::reason(lost, task, view.now, lost_after, me),
        task_started_at: task.started_at,
        heartbeat_at: task.last_progress_at,
        boot_id: lost.foreman.boot_id.clone(),
        ..Evidence::default()
    };
    Judged {
        task,
        judgement: Judgement {
            kind: Kind::HostLost,
            evidence,
            grace_exempt: true,
            pooled: false,
            unproven: false,
            starved: None,
            observation: None,
        },
        probe: None,
        inputs: json!(null),
    }
}

/// What a sweep's findings were in the leader's fleet step, for tests.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{ForemanRow, Lost, View};
    use std::time::Duration;

    #[test]
    fn a_lost_hosts_task_is_a_finding_that_names_the_host_and_its_silence() {
        let now = Utc::now();
        let task = Task {
            id: "t1".into(),
            plan_id: None,
            droid_type: "builder".into(),
            state: crate::model::TaskState::Running,
            pid: Some(4242),
            host: Some("b".into()),
            attempt: 1,
            started_at: Some(now - chrono::Duration::minutes(30)),
            last_progress_at: Some(now - chrono::Duration::minutes(12)),
            finished_at: None,
            error: None,
            pid_start_ticks: None,
            created_at: None,
        };
        let lost = Lost {
            host: "b".into(),
            foreman: ForemanRow {
                boot_id: "boot-b".into(),
                version: "0.1.0".into(),
                last_seen: now - chrono::Duration::minutes(11),
                last_sweep_at: None,
                silent: Duration::from_secs(660),
                running_reported: Some(1),
                findings: Some(0),
                actions: Some(0),
                snapshot_error: None,
            },
            tasks: vec![task.clone()],
        };
        let view = View {
            now,
            leader: Some("a".into()),
            hosts: Vec::new(),
        };
        let j = judged(&lost, &task, &view, Duration::from_secs(600), "a");
        assert_eq!(j.judgement.kind, Kind::HostLost);
        let r = &j.judgement.evidence.reason;
        assert!(r.contains("host \"b\" is lost") && r.contains("11m"), "{r}");
        assert!(r.contains("12m ago"), "{r}");
        assert_eq!(j.judgement.evidence.boot_id, "boot-b");
    }
}
