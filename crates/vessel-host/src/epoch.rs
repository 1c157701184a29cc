//! The epoch ticker: one thread per [`Engine`](crate::Engine) that advances
//! the epoch of its wasmtime engines (two when the engine is tiered: the
//! Winch baseline and Cranelift) every [`EngineConfig::epoch_period`](crate::EngineConfig::epoch_period),
//! which is what interrupts a guest callback that runs past its
//! [`Limits::callback_timeout`](crate::Limits::callback_timeout) (ABI
//! reference §6.6, "Interruption").
//!
//! The thread holds only weak references to the wasmtime engines. It stops,
//! and is joined, when the last clone of the [`Engine`](crate::Engine)
//! (including the clones inside plugins and VMs) is dropped.
//!
//! This is the one place the host reads a clock of its own: a CPU budget is
//! about real time spent on a worker, which an injected clock cannot give.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// The ticker thread's name (visible in `top -H`, `/proc/<pid>/task/*/comm`).
pub const TICKER_THREAD_NAME: &str = "vessel-epoch";

/// A running ticker. Dropping it stops and joins the thread.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts a thread that increments the epoch of every one of `engines`
    /// (the optimizing engine and, when tiered, the baseline one) every
    /// `period`.
    pub(crate) fn start(engines: &[&wasmtime::Engine], period: Duration) -> std::io::Result<Self> {
        let weak: Vec<_> = engines.iter().map(|e| e.weak()).collect();
        let (stop, stopped) = mpsc::channel::<()>();
        let (ready, started) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(TICKER_THREAD_NAME.to_owned())
            .spawn(move || {
                let _ = ready.send(());
                loop {
                    match stopped.recv_timeout(period) {
                        Err(RecvTimeoutError::Timeout) => {
                            let mut alive = false;
                            for engine in weak.iter().filter_map(wasmtime::EngineWeak::upgrade) {
                                engine.increment_epoch();
                                alive = true;
                            }
                            if !alive {
                                return;
                            }
                        }
                        // A stop message or the handle was dropped.
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        // Return once the thread runs (and carries its name).
        let _ = started.recv();
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread at once.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread never panics; nothing to report if it somehow did.
            let _ = thread.join();
        }
    }
}
