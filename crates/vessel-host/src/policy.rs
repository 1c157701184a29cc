//! Failure policies and the reload backoff (ABI reference §6.6): what a
//! stream gets when a filter's VM has failed, and when a failed VM may be
//! replaced. One type of each for every embedding: the
//! [`HttpStream`](crate::stream::HttpStream) applies the policy to its
//! streams, and an embedder that keeps VMs (a pool, the scenario runner)
//! asks a [`ReloadGate`] when to build a new one. Time comes in as `now`,
//! so the backoff is tested on a fixed clock.

use std::time::{Duration, Instant};

/// What happens to a stream when its filter's VM has failed (Envoy's
/// `failure_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Every stream on the failed VM gets a 503 local reply, once, and so
    /// does every new stream: the VM stays failed (Envoy's default,
    /// `FAIL_CLOSED`).
    #[default]
    FailClosed,
    /// Streams that start after the failure pass through as if the filter
    /// were absent (`FAIL_OPEN`). The stream whose own callback failed gets
    /// a 503, as in Envoy.
    FailOpen,
    /// Streams on the failed VM get a 503, as with `FailClosed`; a new
    /// stream gets a fresh VM, unless the backoff holds the reload back, in
    /// which case it gets a 503 too (`FAIL_RELOAD`).
    FailReload(ReloadBackoff),
}

impl FailurePolicy {
    /// `FailReload` with the default backoff.
    pub fn fail_reload() -> Self {
        Self::FailReload(ReloadBackoff::default())
    }

    /// True if a stream that meets a failed VM passes through (only
    /// `FailOpen`).
    pub fn passes_through(self) -> bool {
        self == Self::FailOpen
    }

    /// Envoy's name: `FAIL_CLOSED`, `FAIL_OPEN` or `FAIL_RELOAD`.
    pub fn envoy_name(self) -> &'static str {
        match self {
            Self::FailClosed => "FAIL_CLOSED",
            Self::FailOpen => "FAIL_OPEN",
            Self::FailReload(_) => "FAIL_RELOAD",
        }
    }

    /// Parses Envoy's name; `FAIL_RELOAD` gets `backoff`.
    pub fn from_envoy_name(name: &str, backoff: ReloadBackoff) -> Option<Self> {
        match name {
            "FAIL_CLOSED" | "UNSPECIFIED" => Some(Self::FailClosed),
            "FAIL_OPEN" => Some(Self::FailOpen),
            "FAIL_RELOAD" => Some(Self::FailReload(backoff)),
            _ => None,
        }
    }
}

/// How soon a failed VM may be replaced (Envoy's `reload_config.backoff`).
///
/// A VM slot is reloaded only once `interval` has passed since its last
/// load (the first start, or the last reload attempt), as in Envoy, so a VM
/// that served for a while is replaced on the next stream. `interval` is
/// `base_interval` while the VMs of the slot work; it doubles, up to
/// `max_interval`, for each reload in a row whose VM failed again before
/// finishing a single stream, or did not start: a query of death cannot
/// make vessel rebuild VMs in a tight loop. (Envoy keeps a jittered
/// `base_interval` and ignores `max_interval`; see spec-tests/DEVIATIONS.md.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReloadBackoff {
    /// The shortest wait (Envoy's default: 1 s).
    pub base_interval: Duration,
    /// The longest wait (default: 10 × the default base).
    pub max_interval: Duration,
}

impl ReloadBackoff {
    /// Envoy's default `base_interval`: 1 s.
    pub const DEFAULT_BASE_INTERVAL: Duration = Duration::from_secs(1);
    /// The default `max_interval`: 10 s.
    pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(10);

    /// A backoff from `base_interval` up to `max_interval` (raised to
    /// `base_interval` if smaller). A zero base reloads on the next stream,
    /// always: for tests, not for production.
    pub fn new(base_interval: Duration, max_interval: Duration) -> Self {
        Self {
            base_interval,
            max_interval: max_interval.max(base_interval),
        }
    }

    /// The wait after `streak` reloads in a row that did not give a working
    /// VM: `base × 2^streak`, at most `max_interval`.
    pub fn interval(&self, streak: u32) -> Duration {
        let factor = 1u32.checked_shl(streak.min(31)).unwrap_or(u32::MAX);
        self.base_interval
            .checked_mul(factor)
            .unwrap_or(self.max_interval)
            .min(self.max_interval)
    }
}

impl Default for ReloadBackoff {
    fn default() -> Self {
        Self::new(Self::DEFAULT_BASE_INTERVAL, Self::DEFAULT_MAX_INTERVAL)
    }
}

/// What a [`ReloadGate`] decided for a stream that found its VM failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReloadDecision {
    /// Build a new VM now (the gate has counted the attempt); a stream that
    /// then finishes on it is reported with [`ReloadGate::served`].
    Reload,
    /// The backoff holds the reload back until `until`: the stream gets the
    /// policy's 503 (Envoy's `vm_reload_backoff`).
    Backoff {
        /// The earliest time of the next attempt.
        until: Instant,
    },
}

/// The reload state of one VM slot under `FAIL_RELOAD`: a sans-IO clock of
/// loads and failed streaks. The embedder asks it, with `now`, whether a
/// failed VM may be replaced.
#[derive(Debug, Clone)]
pub struct ReloadGate {
    backoff: ReloadBackoff,
    /// The last load: the first start or the last reload attempt.
    last_load: Instant,
    /// Reloads in a row that did not give a VM that finished a stream.
    streak: u32,
    /// A stream finished on the current VM while it worked.
    served: bool,
}

impl ReloadGate {
    /// A gate for a slot whose VM was loaded at `now`.
    pub fn new(backoff: ReloadBackoff, now: Instant) -> Self {
        Self {
            backoff,
            last_load: now,
            streak: 0,
            served: false,
        }
    }

    /// The backoff.
    pub fn backoff(&self) -> ReloadBackoff {
        self.backoff
    }

    /// Records that a stream finished on the current VM while it worked: a
    /// VM that served is no query of death, so its failure does not grow
    /// the wait.
    pub fn served(&mut self) {
        self.served = true;
    }

    /// Reloads in a row that did not give a working VM.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Asked when a new stream finds the slot's VM failed.
    pub fn decide(&mut self, now: Instant) -> ReloadDecision {
        if std::mem::take(&mut self.served) {
            self.streak = 0;
        }
        let wait = self.backoff.interval(self.streak);
        let until = self.last_load.checked_add(wait).unwrap_or(now);
        if now < until {
            return ReloadDecision::Backoff { until };
        }
        self.last_load = now;
        self.streak = self.streak.saturating_add(1);
        ReloadDecision::Reload
    }

    /// The wait before the next attempt if the VM built after
    /// [`ReloadDecision::Reload`] fails again (or did not start).
    pub fn next_wait(&self) -> Duration {
        self.backoff.interval(self.streak)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_failed_reload_up_to_the_max() {
        let b = ReloadBackoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let waits: Vec<u128> = (0..6).map(|s| b.interval(s).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.interval(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn backoff_defaults_are_envoys_base_and_a_ten_times_cap() {
        let b = ReloadBackoff::default();
        assert_eq!(b.interval(0), Duration::from_secs(1));
        assert_eq!(b.interval(10), Duration::from_secs(10));
        let b = ReloadBackoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.max_interval, Duration::from_secs(2));
        assert_eq!(
            ReloadBackoff::new(Duration::ZERO, Duration::ZERO).interval(5),
            Duration::ZERO
        );
    }

    #[test]
    fn policy_names_and_pass_through() {
        assert_eq!(FailurePolicy::default(), FailurePolicy::FailClosed);
        assert!(FailurePolicy::FailOpen.passes_through());
        assert!(!FailurePolicy::FailClosed.passes_through());
        assert!(!FailurePolicy::fail_reload().passes_through());
        assert_eq!(FailurePolicy::fail_reload().envoy_name(), "FAIL_RELOAD");
        let b = ReloadBackoff::default();
        assert_eq!(
            FailurePolicy::from_envoy_name("FAIL_OPEN", b),
            Some(FailurePolicy::FailOpen)
        );
        assert_eq!(FailurePolicy::from_envoy_name("fail_open", b), None);
    }

    #[test]
    fn gate_on_a_fixed_clock() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut g = ReloadGate::new(ReloadBackoff::new(ms(100), ms(1000)), t0);
        // Failed 10 ms after its start: held back until 100 ms.
        assert_eq!(
            g.decide(t0 + ms(10)),
            ReloadDecision::Backoff {
                until: t0 + ms(100)
            }
        );
        assert_eq!(g.decide(t0 + ms(100)), ReloadDecision::Reload);
        // The new VM failed before serving: the wait doubles from its load.
        assert_eq!(g.next_wait(), ms(200));
        assert_eq!(
            g.decide(t0 + ms(250)),
            ReloadDecision::Backoff {
                until: t0 + ms(300)
            }
        );
        assert_eq!(g.decide(t0 + ms(300)), ReloadDecision::Reload);
        assert_eq!(g.streak(), 2);
        // This one served a stream before failing: back to the base.
        g.served();
        assert_eq!(
            g.decide(t0 + ms(350)),
            ReloadDecision::Backoff {
                until: t0 + ms(400)
            }
        );
        assert_eq!(g.decide(t0 + ms(400)), ReloadDecision::Reload);
        assert_eq!(g.streak(), 1);
    }
}
