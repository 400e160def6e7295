//! Logging setup. Logs go to stderr (stdout carries data in `mapper map`) and carry metadata
//! only — tenant, detector, labels, offsets. Nothing in the code base logs a `DetectorEvent`
//! whole, and its raw content has a redacting `Debug`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
