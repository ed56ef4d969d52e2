//! Logs: `tracing` events written as human-readable lines or JSON objects,
//! through a filter that can change while the program runs.
//!
//! [`init`] sets up the process's logging from the `[log]` settings and
//! returns a [`LogHandle`]; [`LogHandle::set_level`] changes the filter at
//! once (hot reload calls it when `log.level` changes).
//!
//! ```
//! use aether_ops::{logging, settings::LogSettings};
//!
//! let (dispatch, handle) = logging::dispatch(&LogSettings::default(), std::io::sink)?;
//! tracing::dispatcher::with_default(&dispatch, || {
//!     tracing::debug!("not written: the level is info");
//!     handle.set_level("debug,aether_core=warn")?;
//!     tracing::debug!("written");
//!     Ok::<_, logging::LoggingError>(())
//! })?;
//! assert!(handle.set_level("verbose").is_err()); // not a level: refused, unchanged
//! assert_eq!(handle.level(), "debug,aether_core=warn");
//! # Ok::<(), logging::LoggingError>(())
//! ```

use std::{
    io::IsTerminal,
    sync::{Arc, Mutex, PoisonError},
};

use tracing::Dispatch;
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    fmt::{self, MakeWriter},
    layer::SubscriberExt,
    reload,
};

use crate::settings::{LogFormat, LogSettings};

/// Logging could not be set up or changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// The filter directives do not parse, or name no level.
    #[error("invalid log level {directives:?}: {reason}")]
    InvalidLevel {
        /// The refused directives.
        directives: String,
        /// Why.
        reason: String,
    },
    /// This process already has a global `tracing` subscriber.
    #[error("logging is already set up in this process: {0}")]
    AlreadyInitialized(String),
    /// The subscriber that the handle changes has been dropped.
    #[error("the logging this handle changes is gone")]
    Gone,
}

impl LoggingError {
    /// Why, without the directives (for a settings error that names them).
    pub fn reason(&self) -> String {
        match self {
            Self::InvalidLevel { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }
}

/// Parses `tracing` filter directives, stricter than `EnvFilter` alone: a
/// directive without `=` must be a level (`trace`, `debug`, `info`, `warn`,
/// `error`, `off`), so that a typo like `inof` is refused instead of read
/// as a target name. Name targets as `target=level`.
pub fn parse_directives(directives: &str) -> Result<EnvFilter, LoggingError> {
    let refuse = |reason: String| LoggingError::InvalidLevel {
        directives: directives.to_string(),
        reason,
    };
    if directives.trim().is_empty() {
        return Err(refuse("no directive; write a level such as info".into()));
    }
    for directive in directives.split(',').map(str::trim) {
        if directive.is_empty() {
            return Err(refuse("an empty directive between commas".into()));
        }
        if !directive.contains('=')
            && directive
                .parse::<tracing::level_filters::LevelFilter>()
                .is_err()
        {
            return Err(refuse(format!(
                "{directive:?} is not a level (trace, debug, info, warn, error, off); \
                 name a target as target=level"
            )));
        }
    }
    EnvFilter::builder()
        .parse(directives)
        .map_err(|err| refuse(err.to_string()))
}

/// Changes the running program's log filter. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    directives: Arc<Mutex<String>>,
}

impl LogHandle {
    /// Replaces the filter with `directives` (see [`parse_directives`]);
    /// events after this call are filtered by it. Bad directives are
    /// refused and the filter stays.
    pub fn set_level(&self, directives: &str) -> Result<(), LoggingError> {
        let filter = parse_directives(directives)?;
        let mut current = self
            .directives
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.filter.reload(filter).map_err(|_| LoggingError::Gone)?;
        *current = directives.to_string();
        Ok(())
    }

    /// The directives in force.
    pub fn level(&self) -> String {
        self.directives
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Sets up this process's logging to stderr (with colours when stderr is a
/// terminal and the format is human) and returns the handle that changes
/// its level. Fails if the process already has a global subscriber.
pub fn init(settings: &LogSettings) -> Result<LogHandle, LoggingError> {
    let ansi = std::io::stderr().is_terminal();
    let (dispatch, handle) = build(settings, std::io::stderr, ansi)?;
    install(dispatch)?;
    Ok(handle)
}

/// Like [`init`], writing to `writer` (`std::io::stdout`, a file, a test's
/// buffer) without colours.
pub fn init_with_writer<W>(settings: &LogSettings, writer: W) -> Result<LogHandle, LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (dispatch, handle) = build(settings, writer, false)?;
    install(dispatch)?;
    Ok(handle)
}

/// The subscriber [`init_with_writer`] would install, without installing
/// it: use it with `tracing::dispatcher::with_default` (tests, or a part of
/// a program that logs elsewhere).
pub fn dispatch<W>(settings: &LogSettings, writer: W) -> Result<(Dispatch, LogHandle), LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    build(settings, writer, false)
}

pub(crate) fn install(dispatch: Dispatch) -> Result<(), LoggingError> {
    tracing::dispatcher::set_global_default(dispatch)
        .map_err(|err| LoggingError::AlreadyInitialized(err.to_string()))
}

/// A layer of the process's subscriber beside the log output, with its
/// own filter: the span export of [`crate::telemetry`].
pub(crate) type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync>;

fn build<W>(
    settings: &LogSettings,
    writer: W,
    ansi: bool,
) -> Result<(Dispatch, LogHandle), LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    build_with(settings, writer, ansi, None)
}

/// The subscriber: the log output under the reloadable level filter (a
/// filter of that layer only, so that the level never hides spans from
/// `extra`), and `extra` if any.
pub(crate) fn build_with<W>(
    settings: &LogSettings,
    writer: W,
    ansi: bool,
    extra: Option<ExtraLayer>,
) -> Result<(Dispatch, LogHandle), LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter, handle) = reload::Layer::new(parse_directives(&settings.level)?);
    let output: ExtraLayer = match settings.format {
        LogFormat::Human => Box::new(
            fmt::layer()
                .with_ansi(ansi)
                .with_writer(writer)
                .with_filter(filter),
        ),
        LogFormat::Json => Box::new(
            fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_writer(writer)
                .with_filter(filter),
        ),
    };
    let layers: Vec<ExtraLayer> = std::iter::once(output).chain(extra).collect();
    let subscriber = Registry::default().with(layers);
    let handle = LogHandle {
        filter: handle,
        directives: Arc::new(Mutex::new(settings.level.clone())),
    };
    Ok((Dispatch::new(subscriber), handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Captured;

    #[test]
    fn the_level_changes_while_running() {
        let out = Captured::default();
        let (dispatch, handle) = dispatch(&LogSettings::default(), out.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::debug!("first debug");
            tracing::info!("first info");
            handle.set_level("debug").unwrap();
            tracing::debug!("second debug");
            handle.set_level("warn,aether_ops=error").unwrap();
            tracing::warn!("third warn");
            tracing::warn!(target: "elsewhere", "fourth warn");
        });
        let text = out.text();
        assert!(!text.contains("first debug"), "{text}");
        assert!(text.contains("first info"), "{text}");
        assert!(
            text.contains("DEBUG") && text.contains("second debug"),
            "{text}"
        );
        assert!(!text.contains("third warn"), "{text}");
        assert!(text.contains("fourth warn"), "{text}");
        assert_eq!(handle.level(), "warn,aether_ops=error");
    }

    #[test]
    fn bad_levels_are_refused_and_the_filter_stays() {
        let out = Captured::default();
        let (dispatch, handle) = dispatch(&LogSettings::default(), out.clone()).unwrap();
        for bad in ["inof", "", "aether=loud", "info,,debug"] {
            let err = handle.set_level(bad).unwrap_err();
            assert!(
                matches!(err, LoggingError::InvalidLevel { .. }),
                "{bad}: {err}"
            );
        }
        tracing::dispatcher::with_default(&dispatch, || tracing::info!("still info"));
        assert!(out.text().contains("still info"));
        assert_eq!(handle.level(), "info");
        let bad = LogSettings {
            level: "loud".into(),
            ..Default::default()
        };
        assert!(logging_fails(&bad));
    }

    fn logging_fails(settings: &LogSettings) -> bool {
        dispatch(settings, std::io::sink).is_err()
    }

    #[test]
    fn json_lines_carry_level_message_and_fields() {
        let out = Captured::default();
        let settings = LogSettings {
            level: "info".into(),
            format: LogFormat::Json,
        };
        let (dispatch, _handle) = dispatch(&settings, out.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(channel = "orders.created", "wave emitted")
        });
        let text = out.text();
        let line = text.lines().next().unwrap();
        assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
        for part in [
            r#""level":"INFO""#,
            r#""message":"wave emitted""#,
            r#""channel":"orders.created""#,
        ] {
            assert!(line.contains(part), "{part} in {line}");
        }
    }
}
