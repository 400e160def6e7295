//! SIGTERM / Ctrl-C as a watch channel every loop selects on.

use tokio::sync::watch;

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
        let _ = tx.send(true);
    });
    rx
}
