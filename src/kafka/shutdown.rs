//! SIGTERM / Ctrl-C as a watch channel every loop selects on.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// The same request, readable from synchronous code: the bounded retry loops of
/// [`super::offsets`] run on a worker thread, outside any `select!`, and stop retrying once
/// it is set (a rewind during a broker outage once held SIGTERM for ~50 s).
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether the process has been asked to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Turns `true` once, when the process is asked to stop.
pub type Shutdown = watch::Receiver<bool>;

pub fn shutdown_signal() -> Shutdown {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutdown requested");
        // The channel first: code that saw the flag may rely on the channel being set too.
        let _ = tx.send(true);
        REQUESTED.store(true, Ordering::SeqCst);
    });
    rx
}
