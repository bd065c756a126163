//! Spinners for steps that take a while on a terminal (statistics, open datasets); hidden otherwise.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner saying `what` is running, drawn only when `enabled` (stderr is a terminal, not `-q`).
pub fn spinner(enabled: bool, what: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
