//! Rates a guest is held to — readings published, commands, log lines —
//! on a clock of microseconds that never steps back (the gateway's steady
//! clock, or the harness's script clock), so the same limits hold in both.

/// A guest's log line is cut after this many bytes.
pub const MAX_LOG_BYTES: usize = 1024;

/// A rate limit (readings, commands or lines a second) on a clock of
/// microseconds that never steps back
/// ([`crate::shared::Shared::steady_micros`]: the harness's clock in the
/// harness).
pub(crate) struct TokenBucket {
    rate: f64,
    tokens: f64,
    refilled: Option<u64>,
}

impl TokenBucket {
    pub(crate) fn new(per_second: u32) -> Self {
        TokenBucket {
            rate: f64::from(per_second),
            tokens: f64::from(per_second),
            refilled: None,
        }
    }

    pub(crate) fn take(&mut self, now: u64) -> bool {
        let since = now.saturating_sub(self.refilled.unwrap_or(now));
        let earned = since as f64 / 1e6 * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate);
        self.refilled = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a guest writes reaches the log a line at a time, each cut to
/// [`MAX_LOG_BYTES`], at most so many a second; the lines dropped are
/// counted in the next one kept.
pub(crate) struct LogGate {
    lines: TokenBucket,
    suppressed: u64,
}

impl LogGate {
    pub(crate) fn new(lines_per_second: u32) -> Self {
        LogGate {
            lines: TokenBucket::new(lines_per_second),
            suppressed: 0,
        }
    }

    /// The line as the log keeps it, or `None` when it is over the rate
    /// (`now` on the steady clock).
    pub(crate) fn admit(&mut self, mut message: String, now: u64) -> Option<String> {
        if !self.lines.take(now) {
            self.suppressed += 1;
            return None;
        }
        if message.len() > MAX_LOG_BYTES {
            let mut cut = MAX_LOG_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        if self.suppressed > 0 {
            message = format!("({} lines suppressed) {message}", self.suppressed);
            self.suppressed = 0;
        }
        Some(message)
    }
}
