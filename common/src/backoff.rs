//! Exponential backoff between reconnection attempts to a peer daemon.

use std::time::Duration;

/// Delays that double after every failed attempt, from `initial` up to `max`, and start over
/// after a success ([`Backoff::reset`]). No jitter: the daemons reconnect to one peer each,
/// so there is no herd to spread out, and fixed delays keep tests and logs predictable.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First delay after a success.
    initial: Duration,
    /// Upper bound of any delay.
    max: Duration,
    /// Delay that the next call to [`Backoff::next_delay`] returns.
    current: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max` (`max` is raised to `initial` when
    /// smaller; a zero `initial` is treated as one millisecond so that delays can grow).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The delay to wait before the next attempt; doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    /// Starts over at the initial delay (call after a successful connection).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 500, 500]);

        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn degenerate_bounds_are_repaired() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.next_delay(), Duration::from_millis(1));
        assert_eq!(b.next_delay(), Duration::from_millis(1));
    }
}
