//! A spinner on stderr for the commands that take seconds (`review`'s
//! sandbox, `wellbeing` over a long history), so a person at a terminal
//! sees that something is happening. Only when stderr is a terminal and
//! the command is not printing JSON: never in a pipe, a log or a machine's
//! output. Cleared (the line erased) when dropped, before the result.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Start `what… 1.2s` with a spinner, if stderr is a terminal and
    /// `json` is false; otherwise nothing.
    pub fn start(what: &str, json: bool) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if json || !std::io::stderr().is_terminal() {
            return Progress { stop, thread: None };
        }
        let what = crate::logging::escaped(what);
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
                let started = Instant::now();
                let mut i = 0;
                while !flag.load(Ordering::Relaxed) {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(
                        err,
                        "\r\x1b[K{} {what}… {:.1}s",
                        FRAMES[i % FRAMES.len()],
                        started.elapsed().as_secs_f64()
                    );
                    let _ = err.flush();
                    drop(err);
                    i += 1;
                    std::thread::park_timeout(Duration::from_millis(100));
                }
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[K");
                let _ = err.flush();
            })
            .ok();
        Progress { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
