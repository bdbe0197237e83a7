//! How the `statefs` command shows progress (`statefs::progress`): a bar on a terminal (indicatif),
//! otherwise a plain line when a task has run a while and then every few seconds, and one when it
//! ends. Quick tasks print nothing.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use statefs::progress::{Display, Shown};

/// How often a plain line is printed (and how long a task runs before its first one).
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    terminal: bool,
}

impl Progress {
    /// Bars if stderr is a terminal, plain lines otherwise (a log, the journal, a pipe).
    pub fn for_stderr() -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
        }
    }
}

impl Display for Progress {
    fn start(&self, what: &str, total: Option<u64>) -> Box<dyn Shown> {
        if self.terminal {
            let bar = match total {
                Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr())
                    .with_style(
                        ProgressStyle::with_template(
                            "{msg} [{bar:30}] {pos}/{len} ({elapsed}, {eta} left)",
                        )
                        .expect("a valid template")
                        .progress_chars("=> "),
                    ),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                    .with_style(
                        ProgressStyle::with_template("{spinner} {msg}: {pos} ({elapsed})")
                            .expect("a valid template"),
                    ),
            };
            bar.set_message(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            Box::new(Bar(bar))
        } else {
            Box::new(Plain {
                what: what.to_string(),
                total,
                started: Instant::now(),
                last: Mutex::new(Instant::now()),
            })
        }
    }
}

struct Bar(ProgressBar);

impl Shown for Bar {
    fn update(&self, done: u64) {
        self.0.set_position(done);
    }

    fn finish(&self, done: u64, ok: bool) {
        self.0.set_position(done);
        if ok {
            self.0.finish();
        } else {
            self.0.abandon();
        }
    }
}

struct Plain {
    what: String,
    total: Option<u64>,
    started: Instant,
    last: Mutex<Instant>,
}

impl Plain {
    fn line(&self, done: u64, state: &str) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        match self.total {
            Some(t) if t > 0 => format!(
                "statefs: {}: {done}/{t} ({:.0}%) {state}after {secs:.0} s",
                self.what,
                done as f64 * 100.0 / t as f64
            ),
            _ => format!("statefs: {}: {done} {state}after {secs:.0} s", self.what),
        }
    }
}

impl Shown for Plain {
    fn update(&self, done: u64) {
        let mut last = self.last.lock();
        if last.elapsed() >= PLAIN_EVERY {
            *last = Instant::now();
            eprintln!("{}", self.line(done, ""));
        }
    }

    fn finish(&self, done: u64, ok: bool) {
        // Only tasks that printed along the way, or that took a while, get a closing line.
        if self.started.elapsed() >= PLAIN_EVERY {
            eprintln!("{}", self.line(done, if ok { "done " } else { "stopped " }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_how_far_and_how_long() {
        let p = Plain {
            what: "gc: deleting garbage".into(),
            total: Some(400),
            started: Instant::now() - Duration::from_secs(12),
            last: Mutex::new(Instant::now()),
        };
        assert_eq!(
            p.line(100, ""),
            "statefs: gc: deleting garbage: 100/400 (25%) after 12 s"
        );
        assert_eq!(
            p.line(400, "done "),
            "statefs: gc: deleting garbage: 400/400 (100%) done after 12 s"
        );
    }
}
