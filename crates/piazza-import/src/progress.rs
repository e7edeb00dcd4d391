//! The progress bar: records done, rate and ETA, on stderr when it is a
//! terminal; hidden otherwise (logs and CI output stay clean).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for `total` records (a spinner with a rate when unknown).
    pub(crate) fn new(enabled: bool, total: Option<u64>, label: &str) -> Self {
        let target = if enabled && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(total, target);
        let template = if total.is_some() {
            "{msg:>12} [{bar:40.cyan/blue}] {human_pos}/{human_len} {rate} ETA {eta}"
        } else {
            "{msg:>12} {spinner} {human_pos} {rate}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            // Whole records per second: indicatif's own {per_sec} shows four decimals.
            let style = style.with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", state.per_sec());
            });
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_owned());
        Self { bar }
    }

    pub(crate) fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    pub(crate) fn set_label(&self, label: &str) {
        self.bar.set_message(label.to_owned());
    }

    /// Runs `f` (that writes to stderr, e.g. a log line) with the bar
    /// cleared, then redraws it.
    pub(crate) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Prints a line above the bar without tearing it.
    pub(crate) fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.suspend(|| eprintln!("{line}"));
        }
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
