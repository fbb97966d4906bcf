//! A plan as the monitor sees it: counts by state, the health score, the
//! stalled tasks. Pure: built from the monitor's rows.

use crate::model::TaskState;
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pending: u64,
    pub running: u64,
    pub success: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl Counts {
    pub fn add(&mut self, state: TaskState) {
        self.add_n(state, 1);
    }

    /// `n` tasks in `state` (counted by SQLite, `store::plan_counts`).
    pub fn add_n(&mut self, state: TaskState, n: u64) {
        let slot = match state {
            TaskState::Pending => &mut self.pending,
            TaskState::Running => &mut self.running,
            TaskState::Success => &mut self.success,
            TaskState::Failed => &mut self.failed,
            TaskState::Skipped => &mut self.skipped,
        };
        *slot = slot.saturating_add(n);
    }

    pub fn total(&self) -> u64 {
        self.pending + self.running + self.success + self.failed + self.skipped
    }

    /// Each state with its count, lowercase names (the metrics' `state`).
    pub fn by_state(&self) -> [(&'static str, u64); 5] {
        [
            ("pending", self.pending),
            ("running", self.running),
            ("success", self.success),
            ("failed", self.failed),
            ("skipped", self.skipped),
        ]
    }
}

/// SUCCESS / (SUCCESS + FAILED + RUNNING): a running task might still
/// fail, so it counts against health; PENDING and SKIPPED are left out.
/// 1.0 when nothing counts yet.
pub fn health_score(c: &Counts) -> f64 {
    let denominator = c.success + c.failed + c.running;
    if denominator == 0 {
        1.0
    } else {
        c.success as f64 / denominator as f64
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonitorView {
    pub plan_id: String,
    pub counts: Counts,
    pub health_score: f64,
    /// RUNNING tasks the last sweep found hung (no progress past their
    /// droid type's timeout).
    pub stalled: Vec<String>,
    pub is_complete: bool,
    /// When a task of the plan last changed state.
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// `GET /plans`: plans in plan id order, a page at a time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub plans: Vec<MonitorView>,
    /// The `after` of the next page; `null` on the last.
    pub next: Option<String>,
}

/// Plans per page of `/plans` when `limit` is not given.
pub const DEFAULT_PAGE: usize = 100;
/// The largest `limit` of `/plans`; a larger one is taken as this.
pub const MAX_PAGE: usize = 1000;

/// What `/plans?limit=&after=` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// 1 to `MAX_PAGE`.
    pub limit: usize,
    /// Plans after this plan id (the previous page's `next`).
    pub after: Option<String>,
}

/// Parse the query string of `/plans` (percent-encoded, `+` a space):
/// `limit` (1 or more, at most `MAX_PAGE` taken; `DEFAULT_PAGE` when
/// absent) and `after` (a plan id). Anything else is refused, with the
/// reason.
pub fn page_request(query: Option<&str>) -> Result<PageRequest, String> {
    let mut req = PageRequest {
        limit: DEFAULT_PAGE,
        after: None,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or_else(|| format!("{k}: not valid percent-encoded UTF-8"))?;
        match percent_decode(k).as_deref() {
            Some("limit") => {
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("limit {v:?} is not a whole number"))?;
                if n == 0 {
                    return Err("limit must be at least 1".into());
                }
                req.limit = n.min(MAX_PAGE);
            }
            Some("after") => req.after = Some(v),
            _ => return Err(format!("unknown parameter {k:?}; give limit and after")),
        }
    }
    Ok(req)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// One task row of a plan, as the view needs it.
#[derive(Debug, Clone)]
pub struct Row {
    pub task_id: String,
    pub state: TaskState,
    pub stalled: bool,
    pub updated_at: DateTime<Utc>,
}

/// The view of one plan from its task rows (at least one).
pub fn build(plan_id: &str, rows: &[Row], completed_at: Option<DateTime<Utc>>) -> MonitorView {
    let mut counts = Counts::default();
    let mut stalled = Vec::new();
    let mut updated_at = DateTime::<Utc>::MIN_UTC;
    for r in rows {
        counts.add(r.state);
        if r.stalled && r.state == TaskState::Running {
            stalled.push(r.task_id.clone());
        }
        updated_at = updated_at.max(r.updated_at);
    }
    stalled.sort();
    let is_complete = counts.total() > 0 && counts.pending + counts.running == 0;
    MonitorView {
        plan_id: plan_id.to_string(),
        health_score: health_score(&counts),
        counts,
        stalled,
        is_complete,
        updated_at,
        completed_at: completed_at.filter(|_| is_complete),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    fn at(s: u32) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_795_000_000 + i64::from(s), 0).expect("time")
    }

    fn row(id: &str, state: TaskState, stalled: bool, t: u32) -> Row {
        Row {
            task_id: id.into(),
            state,
            stalled,
            updated_at: at(t),
        }
    }

    /// The seed's diamond DAG: A, then B and C (both after A), then D
    /// (after B and C). Each step is the plan after one more event.
    #[test]
    fn diamond_dag_step_by_step() {
        let steps: &[(&str, [TaskState; 4], f64, bool)] = &[
            (
                "planned: all pending",
                [Pending, Pending, Pending, Pending],
                1.0,
                false,
            ),
            (
                "TASK_STARTED A",
                [Running, Pending, Pending, Pending],
                0.0,
                false,
            ),
            (
                "TASK_COMPLETED A",
                [Success, Pending, Pending, Pending],
                1.0,
                false,
            ),
            (
                "TASK_STARTED B",
                [Success, Running, Pending, Pending],
                0.5,
                false,
            ),
            (
                "TASK_STARTED C",
                [Success, Running, Running, Pending],
                1.0 / 3.0,
                false,
            ),
            (
                "TASK_COMPLETED B",
                [Success, Success, Running, Pending],
                2.0 / 3.0,
                false,
            ),
            (
                "TASK_FAILED C",
                [Success, Success, Failed, Pending],
                2.0 / 3.0,
                false,
            ),
            (
                "TASK_RETRIED C",
                [Success, Success, Running, Pending],
                2.0 / 3.0,
                false,
            ),
            (
                "TASK_COMPLETED C",
                [Success, Success, Success, Pending],
                1.0,
                false,
            ),
            (
                "TASK_STARTED D",
                [Success, Success, Success, Running],
                0.75,
                false,
            ),
            (
                "TASK_COMPLETED D: PLAN_COMPLETED",
                [Success, Success, Success, Success],
                1.0,
                true,
            ),
        ];
        for (i, (what, states, health, complete)) in steps.iter().enumerate() {
            let rows: Vec<Row> = ["A", "B", "C", "D"]
                .iter()
                .zip(states)
                .map(|(id, s)| row(id, *s, false, i as u32))
                .collect();
            let v = build("diamond", &rows, Some(at(99)));
            assert!(
                (v.health_score - health).abs() < 1e-12,
                "{what}: {}",
                v.health_score
            );
            assert_eq!(v.is_complete, *complete, "{what}");
            assert_eq!(v.counts.total(), 4, "{what}");
            assert_eq!(v.completed_at.is_some(), *complete, "{what}");
        }
    }

    #[test]
    fn health_counts_running_against_and_leaves_out_pending_and_skipped() {
        let c = |pending, running, success, failed, skipped| Counts {
            pending,
            running,
            success,
            failed,
            skipped,
        };
        let table = [
            (c(0, 0, 0, 0, 0), 1.0),
            (c(5, 0, 0, 0, 3), 1.0),
            (c(0, 1, 0, 0, 0), 0.0),
            (c(0, 0, 0, 1, 0), 0.0),
            (c(0, 1, 1, 0, 0), 0.5),
            (c(9, 1, 2, 1, 9), 0.5),
            (c(0, 0, 3, 1, 0), 0.75),
        ];
        for (counts, want) in table {
            assert!((health_score(&counts) - want).abs() < 1e-12, "{counts:?}");
        }
    }

    #[test]
    fn page_requests_default_clamp_decode_and_refuse() {
        let ok = |q: Option<&str>, limit: usize, after: Option<&str>| {
            assert_eq!(
                page_request(q),
                Ok(PageRequest {
                    limit,
                    after: after.map(String::from)
                }),
                "{q:?}"
            );
        };
        ok(None, DEFAULT_PAGE, None);
        ok(Some(""), DEFAULT_PAGE, None);
        ok(Some("limit=5"), 5, None);
        ok(Some("limit=99999"), MAX_PAGE, None);
        ok(Some("after=p%2F1+x&limit=2"), 2, Some("p/1 x"));
        ok(Some("after="), DEFAULT_PAGE, Some(""));
        for bad in [
            "limit=0",
            "limit=-1",
            "limit=x",
            "offset=3",
            "after=%zz",
            "after=%ff",
            "after=%4",
        ] {
            assert!(page_request(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn stalled_lists_only_running_tasks_flagged_hung() {
        let rows = [
            row("b", Running, true, 1),
            row("a", Running, true, 2),
            row("c", Running, false, 3),
            row("d", Failed, true, 4),
        ];
        let v = build("p", &rows, None);
        assert_eq!(v.stalled, ["a", "b"]);
        assert_eq!(v.updated_at, at(4));
        assert!(!v.is_complete);
        assert_eq!(v.completed_at, None);
    }
}
