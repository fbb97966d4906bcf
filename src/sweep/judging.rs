//! Judging a sweep's RUNNING tasks: probe, prior observation, verdict (under
//! `judge::guarded`: a panic costs one task), next observation written at
//! once. Only the tasks that are not alive are kept, with their probe and
//! the inputs their finding keeps; an alive task's are dropped at once.

use super::record::Memory;
use super::resume::Earlier;
use super::Sight;
use crate::activity::OpenFinding;
use crate::config::Config;
use crate::judge::{guarded, Facts, Inputs, Judgement, PolicyInputs};
use crate::model::{Kind, Task};
use crate::observation::Observation;
use crate::probe::Probe;
use crate::watch::Watch;
use anyhow::Result;
use tracing::warn;

/// Tasks judged per batch (see `judge_running`).
const BATCH: usize = 256;

/// A task that is not alive, as decide and the findings need it.
pub(super) struct Judged<'t> {
    pub task: &'t Task,
    pub judgement: Judgement,
    pub probe: Option<Probe>,
    /// What the judge was given (`judge::Inputs`), kept with the finding.
    pub inputs: serde_json::Value,
}

/// One task of a batch as judged, before it is kept or dropped.
struct Seen {
    judgement: Judgement,
    probe: Option<Probe>,
    prior: Option<Observation>,
}

/// Judge every RUNNING task; bad rows are unverifiable with their reason
/// (planned elsewhere). Only the tasks that are not alive are kept: they
/// become findings. Tasks go through in batches, each stage over the whole
/// batch: as fast as stage-at-a-time over all tasks (the caches stay
/// warm), while memory holds one batch's probes and observations, not
/// every task's.
pub(super) fn judge_running<'t>(
    ctx: &Sight<'_>,
    memory: &Memory<'_>,
    running: &[&'t Task],
    earlier: &Earlier,
) -> Result<Vec<Judged<'t>>> {
    let mut judged: Vec<Judged<'t>> = Vec::new();
    for batch in running.chunks(BATCH) {
        let seen = judge_batch(ctx, memory, batch)?;
        for (task, s) in batch.iter().copied().zip(seen) {
            // An interrupted termination is finished below, not judged anew.
            if s.judgement.kind == Kind::Alive || earlier.resuming(task) {
                continue;
            }
            judged.push(keep(ctx, task, s, &earlier.open)?);
        }
    }
    Ok(judged)
}

/// One batch, stage by stage: probe every task, read every prior, judge
/// every task, write every next observation.
fn judge_batch(ctx: &Sight<'_>, memory: &Memory<'_>, batch: &[&Task]) -> Result<Vec<Seen>> {
    let probes: Vec<Option<Probe>> = batch
        .iter()
        .map(|t| {
            t.pid.map(|p| match (ctx.table.probe(p), ctx.blind) {
                (Probe::Gone, Some(why)) => Probe::Unreadable(format!(
                    "not visible, and /proc cannot show every process ({why})"
                )),
                (probe, _) => probe,
            })
        })
        .collect();
    let priors = batch
        .iter()
        .map(|t| match t.pid {
            Some(pid) => memory.prior(t, pid),
            None => Ok(None),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut judgements: Vec<Judgement> = batch
        .iter()
        .zip(&probes)
        .zip(&priors)
        .map(|((task, probe), prior)| {
            guarded(
                ctx.judge,
                task,
                probe.as_ref(),
                prior.as_ref(),
                ctx.config.policy(&task.droid_type),
                &ctx.facts,
            )
        })
        .collect();
    for ((task, j), (probe, prior)) in batch
        .iter()
        .zip(&mut judgements)
        .zip(probes.iter().zip(&priors))
    {
        let Some(o) = j.observation.take() else {
            continue;
        };
        // Written only when something in it changed (or it is due a
        // refresh): a steady task costs no write.
        if prior.as_ref().is_none_or(|p| !o.unchanged_since(p)) {
            memory.observe(&o)?;
        }
        if let Some(w) = ctx.watch {
            hold(w, task, &j.kind, probe.as_ref(), &o, &ctx.facts);
        }
    }
    Ok(judgements
        .into_iter()
        .zip(probes)
        .zip(priors)
        .map(|((judgement, probe), prior)| Seen {
            judgement,
            probe,
            prior,
        })
        .collect())
}

/// Hold a pidfd for a live task whose identity is bound in this boot and
/// is the process just probed; the watch opens it, then checks the start
/// ticks again, so the fd names exactly that process. Running out of
/// descriptors is said once: the rest are read from `/proc`.
fn hold(
    w: &Watch,
    task: &Task,
    kind: &Kind,
    probe: Option<&Probe>,
    o: &Observation,
    facts: &Facts,
) {
    let bound = o
        .binding
        .and(o.start_ticks)
        .filter(|_| o.boot_id == facts.boot.boot_id);
    let leader = probe.and_then(Probe::leader).map(|l| l.start_ticks);
    let (Some(ticks), false) = (bound.filter(|t| Some(*t) == leader), kind.is_gone()) else {
        return;
    };
    if let Err(e) = w.hold(task, ticks, facts.now) {
        warn!(target: "foreman::sweep", task_id = %task.id, error = %e, "could not hold a pidfd for this task: it is read from /proc each sweep");
    }
}

/// A task that is not alive, kept with what its finding records.
fn keep<'t>(
    ctx: &Sight<'_>,
    task: &'t Task,
    seen: Seen,
    open: &[OpenFinding],
) -> Result<Judged<'t>> {
    let Seen {
        judgement: mut j,
        probe,
        prior,
    } = seen;
    let (config, facts) = (ctx.config, &ctx.facts);
    // A gone task keeps the kind of its open finding (an orphan
    // found at startup is still that orphan at the next sweep).
    let verdict = j.kind;
    if j.kind.is_gone() {
        if let Some(o) = open
            .iter()
            .find(|o| o.task_id == task.id && o.attempt == task.attempt)
        {
            if let Some(k) = gone_kind(&o.kind) {
                j.kind = k;
            }
        }
    }
    let inputs = Inputs {
        task: task.clone(),
        probe: probe.clone(),
        prior,
        policy: PolicyInputs::of(config.policy(&task.droid_type)),
        now: facts.now,
        boot: facts.boot.clone(),
        host: config.host.clone(),
        sweep: facts.sweep,
        hang_floor: facts.hang_floor,
        future_tolerance_ms: Some(config.future_tolerance.as_millis() as u64),
        pid_max: facts.pid_max,
        config_fingerprint: config.fingerprint.clone(),
        verdict,
        continues: Some(j.kind).filter(|k| *k != verdict),
    };
    Ok(Judged {
        task,
        judgement: j,
        probe,
        inputs: serde_json::to_value(&inputs)?,
    })
}

/// The RUNNING tasks of this host: the brake's base, and what makes a
/// snapshot trusted for strays. None of them here is worth a warning.
pub(super) fn local_running(config: &Config, running: &[&Task]) -> usize {
    let local = running
        .iter()
        .filter(|t| t.host.as_deref().is_none_or(|h| h == config.host))
        .count();
    if !running.is_empty() && local == 0 {
        warn!(target: "foreman::sweep", host = %config.host, running = running.len(), "every RUNNING task is on another host: is `host` in foreman.toml right?");
    }
    local
}

/// Say which other hosts' RUNNING rows the snapshot holds, once per host
/// an hour (per process): they are not judged here, and a WARN with every
/// sweep would drown the journal and say nothing new.
pub(super) fn note_foreign(config: &Config, running: &[&Task]) {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    static SAID: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);
    const AGAIN: Duration = Duration::from_secs(3600);
    let mut foreign: BTreeMap<&str, usize> = BTreeMap::new();
    for t in running {
        if let Some(h) = t.host.as_deref().filter(|h| *h != config.host) {
            *foreign.entry(h).or_default() += 1;
        }
    }
    if foreign.is_empty() {
        return;
    }
    let Ok(mut said) = SAID.lock() else { return };
    let said = said.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    for (host, n) in foreign {
        if said
            .get(host)
            .is_some_and(|at| now.duration_since(*at) < AGAIN)
        {
            continue;
        }
        said.insert(host.to_string(), now);
        warn!(target: "foreman::sweep", host = %host, running = n, this_host = %config.host, "the snapshot holds RUNNING tasks of another host: they are not judged here (said once an hour per host); give that host its own Foreman, or [executor] kind = \"postgres\" for a fleet");
    }
}

/// The kind an open finding of a gone task carries on.
fn gone_kind(s: &str) -> Option<Kind> {
    match s {
        "dead" => Some(Kind::Dead),
        "zombie" => Some(Kind::Zombie),
        "pid_reused" => Some(Kind::PidReused),
        "orphan" => Some(Kind::Orphan),
        _ => None,
    }
}
