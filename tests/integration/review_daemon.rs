//! `[review] schedule` inside `foreman run`: the sandbox review runs on its
//! slots, is recorded, and a pass pings `ping_url` (a real HTTP receiver).

use crate::cli::{wait_for, Running, World, PATIENCE};
use crate::receiver::Receiver;

#[test]
fn scheduled_reviews_are_recorded_and_each_pass_pings() {
    let _g = crate::exclusive();
    let receiver = Receiver::start(0);
    let w = World::new();
    w.config(&format!(
        "interval = \"1s\"\n[defaults]\ntimeout = \"30s\"\n\
         [review]\nschedule = \"*/2 * * * * *\"\ntimezone = \"UTC\"\nping_url = \"{}/ping/abc\"",
        receiver.url()
    ));
    w.executor();
    let mut daemon = Running::start(&mut w.foreman(&["run"]));
    // Two passing reviews, two pings: each pass pings, nothing else does.
    let passed = wait_for("two passing scheduled reviews", PATIENCE * 2, || {
        let n =
            w.log_i64("SELECT COUNT(*) FROM review_runs WHERE passed = 1 AND kind = 'sandbox'")?;
        (n >= 2).then_some(n)
    });
    let pings = receiver.wait_for(2, PATIENCE);
    assert!(
        pings
            .iter()
            .all(|r| r.method == "GET" && r.path.ends_with("/ping/abc")),
        "{pings:?}"
    );
    daemon.signal(libc::SIGTERM);
    let out = daemon.finish(PATIENCE);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let runs = w.log_i64("SELECT COUNT(*) FROM review_runs").unwrap_or(0);
    let checks = w.log_i64("SELECT COUNT(*) FROM review_checks").unwrap_or(0);
    assert_eq!(checks, runs * 12, "every run keeps its twelve checks");
    assert!(passed >= 2);
    // The sandbox's own findings are not the deployment's: none in its log
    // stream, none in its activity log.
    assert!(!out.stderr.contains("review-host"), "{}", out.stderr);
    assert_eq!(w.log_i64("SELECT COUNT(*) FROM findings"), Some(0));
    // Every ping followed a pass: no more pings than passing runs.
    let pinged = receiver.requests().len() as i64;
    let passing = w
        .log_i64("SELECT COUNT(*) FROM review_runs WHERE passed = 1")
        .unwrap_or(0);
    assert!(pinged <= passing, "{pinged} pings for {passing} passes");
}
