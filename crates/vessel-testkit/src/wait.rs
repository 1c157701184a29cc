//! Polling with a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long the `eventually` functions wait before they panic.
pub const WAIT: Duration = Duration::from_secs(60);

/// How often they poll.
const POLL: Duration = Duration::from_millis(20);

fn timed_out(what: &str, within: Duration) -> ! {
    panic!("timed out after {within:?} waiting until {what}")
}

/// Polls `f` (on the tokio timer) until it returns `Some`, at most
/// [`WAIT`]; panics naming `what` if it never does.
pub async fn eventually_some<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_some_within(what, WAIT, f).await
}

/// [`eventually_some`] with another deadline than [`WAIT`].
pub async fn eventually_some_within<T>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            timed_out(what, within);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `f` (on the tokio timer) until it holds, at most [`WAIT`];
/// panics naming `what` if it never does.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    eventually_some(what, || f().then_some(())).await;
}

/// [`eventually`] with an async condition; each poll is bounded by what is
/// left of [`WAIT`] too.
pub async fn eventually_async<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(true) = tokio::time::timeout_at(deadline, f()).await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            timed_out(what, WAIT);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for synchronous code: sleeps the thread between polls.
pub fn eventually_blocking(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        if Instant::now() >= deadline {
            timed_out(what, WAIT);
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let mut polls = 0;
        let v = eventually_some("the third poll", || {
            polls += 1;
            (polls == 3).then_some(polls)
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting until the sky falls")]
    async fn panics_naming_what_it_awaited() {
        eventually_some_within("the sky falls", Duration::from_millis(50), || None::<()>).await;
    }

    #[test]
    fn blocking_flavour_polls_too() {
        let start = Instant::now();
        eventually_blocking("40 ms have passed", || {
            start.elapsed() >= Duration::from_millis(40)
        });
        assert!(start.elapsed() >= Duration::from_millis(40));
    }
}
