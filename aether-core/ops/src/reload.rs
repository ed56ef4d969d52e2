//! Hot reload: settings files are polled, and a change is loaded, validated
//! and published, or refused while the old settings stay.
//!
//! [`watch`] starts a [`Watcher`] on a thread of its own. Every `interval`
//! it looks at the files (modification time and content, so that two
//! writes within one tick of the file system's clock are not missed); when
//! they changed, and stayed the same for one more interval (so that a file
//! is not read half written), it loads and validates the settings again:
//!
//! - accepted: `on_change(old, new)` is called, the reload is counted,
//!   then the new value is published to every [`Watcher::subscribe`]
//!   receiver (so a receiver that sees it knows the callback has run);
//! - refused (a missing file, bad TOML, an unknown key, a value out of
//!   range): a `warn!` names the key and the value, the old value stays and
//!   the refusal is counted. The same bad files are not tried again until
//!   they change.
//!
//! Environment variables are read once more at each reload, but a change
//! of them alone does not start one: only the files are watched. Dropping
//! the watcher (or [`Watcher::stop`]) stops the thread; receivers keep the
//! last value.
//!
//! Settings a program reads once at start (a NATS URL, a listen address)
//! do not change by being published: the program decides in `on_change`
//! what it applies (a log level, a noise floor) and names it in its
//! [`ReloadScope`]. Each accepted reload logs the settings it changed that
//! the program applies, and warns, by name, of every other setting it
//! changed: those take effect only at the next start.

use std::{
    collections::hash_map::DefaultHasher,
    fmt,
    hash::{Hash, Hasher},
    io,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, SystemTime},
};

use serde::de::DeserializeOwned;
use tokio::sync::watch as channel;

use aether_core::AetherConfig;

use crate::{
    logging::LogHandle,
    settings::{
        LogSettings, ServiceSettings, SettingsError, SettingsSource, TelemetrySettings, Validate,
    },
};

/// The settings of a service program: what [`Service::start`](crate::service::Service::start)
/// and its reloads need of them.
pub trait ProgramSettings: serde::de::DeserializeOwned + Validate + Send + Sync + 'static {
    /// The `[aether]` section.
    fn aether(&self) -> &AetherConfig;
    /// The `[log]` section.
    fn log(&self) -> &LogSettings;
    /// The `[telemetry]` section.
    fn telemetry(&self) -> &TelemetrySettings;
    /// The `[service]` section, for a program that has one (its medium,
    /// metrics address and data directory). Default: none.
    fn service(&self) -> Option<&ServiceSettings> {
        None
    }
    /// Where the program serves its own metrics, if anywhere
    /// (`[service] metrics_listen`).
    fn metrics_listen(&self) -> Option<std::net::SocketAddr> {
        self.service().and_then(|s| s.metrics_listen)
    }
    /// Where the program keeps what must outlive it (`[service]
    /// data_dir`), if anywhere.
    fn data_dir(&self) -> Option<&std::path::Path> {
        self.service().and_then(|s| s.data_dir.as_deref())
    }
    /// What the program applies on reload; a reload names every other
    /// setting it changed as waiting for a restart. Default: the log level.
    const RELOAD_SCOPE: ReloadScope = ReloadScope {
        applied: &["log.level"],
        others: &[],
    };
}

/// How many reloads were accepted and refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReloadStats {
    /// Changes loaded, validated and published.
    pub reloads: u64,
    /// Changes refused (the old value stayed).
    pub refusals: u64,
}

#[derive(Debug, Default)]
struct Counters {
    reloads: AtomicU64,
    refusals: AtomicU64,
}

/// What a program does with a reload: the settings it applies while it
/// runs, and the sections of a shared settings file that are other
/// programs' (their changes are not this program's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReloadScope {
    /// Dotted names (`service.noise_floor`) or whole sections (`alpha`)
    /// applied on reload.
    pub applied: &'static [&'static str],
    /// Sections, or dotted names, that belong to other programs (a shared
    /// section's settings this program does not read).
    pub others: &'static [&'static str],
}

impl ReloadScope {
    /// Of `changed` (dotted names), those applied on reload, and those
    /// that wait for a restart; other programs' are left out.
    pub fn split(&self, changed: &[String]) -> (Vec<String>, Vec<String>) {
        let covered = |names: &[&str], name: &str| {
            names.iter().any(|n| {
                name == *n || (name.starts_with(n) && name.as_bytes().get(n.len()) == Some(&b'.'))
            })
        };
        changed
            .iter()
            .filter(|name| !covered(self.others, name))
            .cloned()
            .partition(|name| covered(self.applied, name))
    }
}

/// The dotted names of the settings whose values differ between two raw
/// settings trees (a key added, removed or changed).
pub fn changed_settings(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    fn walk(
        path: &str,
        old: Option<&serde_json::Value>,
        new: Option<&serde_json::Value>,
        out: &mut Vec<String>,
    ) {
        let (a, b) = (
            old.and_then(serde_json::Value::as_object),
            new.and_then(serde_json::Value::as_object),
        );
        if a.is_none() && b.is_none() {
            if old != new {
                out.push(path.to_string());
            }
            return;
        }
        // A table on either side: its keys, the other side's missing ones
        // as absent.
        let empty = serde_json::Map::new();
        let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for key in keys {
            let name = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            walk(&name, a.get(key), b.get(key), out);
        }
    }
    let mut out = Vec::new();
    walk("", Some(old), Some(new), &mut out);
    out
}

/// Watches settings files and publishes each accepted change. Stops when
/// dropped.
pub struct Watcher<T> {
    receiver: channel::Receiver<Arc<T>>,
    counters: Arc<Counters>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl<T> fmt::Debug for Watcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("stats", &self.stats())
            .field("running", &self.thread.is_some())
            .finish()
    }
}

/// Watches the files of `source` every `interval` (200 ms is a good
/// value), starting from `current` (the settings the program loaded at
/// start). See the [module documentation](self).
pub fn watch<T, F>(
    source: SettingsSource,
    interval: Duration,
    current: T,
    scope: ReloadScope,
    on_change: F,
) -> io::Result<Watcher<T>>
where
    T: DeserializeOwned + Validate + Send + Sync + 'static,
    F: Fn(&T, &T) + Send + 'static,
{
    let paths = source.files();
    let (load, on_change) = scoped(source, scope, |source| source.load::<T>(), on_change);
    watch_with(paths, interval, current, load, on_change)
}

/// `load` and `on_change` that also read the raw settings, and on each
/// accepted change log what changed: applied, or waiting for a restart.
fn scoped<T, L, F>(
    source: SettingsSource,
    scope: ReloadScope,
    load: L,
    on_change: F,
) -> (
    impl FnMut() -> Result<T, SettingsError> + Send + 'static,
    impl Fn(&T, &T) + Send + 'static,
)
where
    T: Send + Sync + 'static,
    L: Fn(&SettingsSource) -> Result<T, SettingsError> + Send + 'static,
    F: Fn(&T, &T) + Send + 'static,
{
    let raw = |source: &SettingsSource| source.load_unvalidated::<serde_json::Value>().ok();
    // The raw tree in force, and the one just loaded (both on the
    // watcher's thread: load, then on_change if accepted).
    let started = raw(&source);
    let trees = Arc::new(std::sync::Mutex::new((started.clone(), None)));
    let loading = Arc::clone(&trees);
    let load = move || {
        let settings = load(&source)?;
        lock(&loading).1 = raw(&source);
        Ok(settings)
    };
    let on_change = move |old: &T, new: &T| {
        let mut trees = lock(&trees);
        let fresh = trees.1.take();
        if let (Some(before), Some(after)) = (&trees.0, &fresh) {
            let (applied, restart) = scope.split(&changed_settings(before, after));
            if !applied.is_empty() {
                tracing::info!(settings = %applied.join(", "), "settings applied");
            }
            // A start-only setting put back to the value it started with
            // waits for nothing.
            let since_start = started
                .as_ref()
                .map(|started| changed_settings(started, after))
                .unwrap_or_default();
            let (restart, back): (Vec<String>, Vec<String>) = restart
                .into_iter()
                .partition(|name| since_start.contains(name));
            if !back.is_empty() {
                tracing::info!(
                    settings = %back.join(", "),
                    "settings back to the values in force since the start: {}",
                    back.join(", ")
                );
            }
            if !restart.is_empty() {
                tracing::warn!(
                    settings = %restart.join(", "),
                    "settings changed that take effect only at the next start: {}",
                    restart.join(", ")
                );
            }
        }
        if fresh.is_some() {
            trees.0 = fresh;
        }
        drop(trees);
        on_change(old, new);
    };
    (load, on_change)
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Watches a program's settings as the sample services do: every 200 ms,
/// a changed file is read again, `apply` puts the command-line options back
/// over it, the result is validated, and a new log level is put in force
/// through `log`. A refused change is logged and counted, and the settings
/// in force stay.
pub fn watch_program<T: ProgramSettings>(
    source: SettingsSource,
    current: T,
    log: LogHandle,
    apply: impl Fn(&mut T) + Send + 'static,
) -> io::Result<Watcher<T>> {
    let paths = source.files();
    let (load, on_change) = scoped(
        source,
        T::RELOAD_SCOPE,
        move |source| {
            let mut settings: T = source.load_unvalidated()?;
            apply(&mut settings);
            settings.validate()?;
            Ok(settings)
        },
        move |old: &T, new: &T| {
            let level = &new.log().level;
            if &old.log().level != level {
                match log.set_level(level) {
                    Ok(()) => tracing::info!(%level, "log level changed"),
                    Err(error) => tracing::warn!(%error, "log level kept"),
                }
            }
        },
    );
    watch_with(paths, Duration::from_millis(200), current, load, on_change)
}

/// Like [`watch`] with any loader: `load` is called when one of `paths`
/// changes, and must validate.
pub fn watch_with<T, L, F>(
    paths: Vec<PathBuf>,
    interval: Duration,
    current: T,
    mut load: L,
    on_change: F,
) -> io::Result<Watcher<T>>
where
    T: Send + Sync + 'static,
    L: FnMut() -> Result<T, SettingsError> + Send + 'static,
    F: Fn(&T, &T) + Send + 'static,
{
    let (sender, receiver) = channel::channel(Arc::new(current));
    let counters = Arc::new(Counters::default());
    let (stop, stopped) = mpsc::channel::<()>();
    let mut seen = fingerprint(&paths);
    let mut settling = false;
    // The thread logs to the subscriber in force where `watch` was called
    // (the global one, in a program).
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let thread = {
        let counters = Arc::clone(&counters);
        thread::Builder::new()
            .name("aether-settings-watch".into())
            .spawn(move || {
                let _logs = tracing::dispatcher::set_default(&dispatch);
                // Sleeps until the next poll, or returns when the watcher is
                // dropped (the sender is gone).
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    let now = fingerprint(&paths);
                    if now != seen {
                        // Changed: load at the next poll if it stays so, not
                        // a file caught half written.
                        seen = now;
                        settling = true;
                        continue;
                    }
                    if !settling {
                        continue;
                    }
                    settling = false;
                    // Log, count and call back before publishing: whoever
                    // sees the new value (or the count) sees all of it done.
                    match load() {
                        Ok(new) => {
                            let old = Arc::clone(&sender.borrow());
                            let new = Arc::new(new);
                            tracing::info!(files = ?paths, "settings reloaded");
                            on_change(&old, &new);
                            counters.reloads.fetch_add(1, Ordering::Relaxed);
                            sender.send_replace(new);
                        }
                        Err(err) => {
                            // One line, whatever the parser's message spans.
                            let error = err
                                .to_string()
                                .split_whitespace()
                                .collect::<Vec<_>>()
                                .join(" ");
                            match (err.key(), err.value()) {
                                (Some(key), Some(value)) => tracing::warn!(
                                    key,
                                    value,
                                    error,
                                    "settings change refused; the previous settings stay"
                                ),
                                _ => tracing::warn!(
                                    error,
                                    "settings change refused; the previous settings stay"
                                ),
                            }
                            counters.refusals.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })?
    };
    Ok(Watcher {
        receiver,
        counters,
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl<T> Watcher<T> {
    /// A receiver of the settings in force: `borrow()` gives the latest,
    /// `changed().await` waits for the next accepted change.
    pub fn subscribe(&self) -> channel::Receiver<Arc<T>> {
        self.receiver.clone()
    }

    /// The settings in force.
    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.receiver.borrow())
    }

    /// Reloads accepted and refused so far (for a metrics exporter).
    pub fn stats(&self) -> ReloadStats {
        ReloadStats {
            reloads: self.counters.reloads.load(Ordering::Relaxed),
            refusals: self.counters.refusals.load(Ordering::Relaxed),
        }
    }

    /// Stops watching and waits for the thread (at most one poll and one
    /// load). Receivers keep the last value.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A panic in `on_change` ended the thread already; nothing to do.
            let _ = thread.join();
        }
    }
}

impl<T> Drop for Watcher<T> {
    fn drop(&mut self) {
        self.shut();
    }
}

/// What identifies the state of the files: for each, its modification
/// time, and a hash of its content (none if it cannot be read).
fn fingerprint(paths: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .iter()
        .map(|path| {
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
            let content = std::fs::read(path).ok()?;
            let mut hasher = DefaultHasher::new();
            content.hash(&mut hasher);
            Some((modified, hasher.finish()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::test_support::{Captured, Program, eventually};

    const BOUND: Duration = Duration::from_secs(5);

    fn write(dir: &tempfile::TempDir, text: &str) {
        std::fs::write(dir.path().join("default.toml"), text).unwrap();
    }

    #[tokio::test]
    async fn a_change_is_published_a_bad_one_refused_and_a_fix_accepted() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir,
            "[service]\nnoise_floor = 0.1\n[log]\nlevel = \"info\"\n",
        );
        let source =
            SettingsSource::new(dir.path(), None, [("AETHER__AETHER__MAX_PROPAGATION", "7")]);
        let start: Program = source.load().unwrap();
        let changes = Arc::new(Mutex::new(Vec::new()));
        let watcher = {
            let changes = Arc::clone(&changes);
            watch(
                source,
                Duration::from_millis(20),
                start,
                Program::RELOAD_SCOPE,
                move |old: &Program, new| {
                    changes
                        .lock()
                        .unwrap()
                        .push((old.log.level.clone(), new.log.level.clone()));
                },
            )
            .unwrap()
        };
        let mut settings = watcher.subscribe();
        assert_eq!(settings.borrow().service.noise_floor, 0.1);

        write(
            &dir,
            "[service]\nnoise_floor = 0.2\n[log]\nlevel = \"debug\"\n",
        );
        tokio::time::timeout(BOUND, settings.changed())
            .await
            .unwrap()
            .unwrap();
        let now = watcher.current();
        assert_eq!(
            (now.service.noise_floor, now.log.level.as_str()),
            (0.2, "debug")
        );
        assert_eq!(now.aether.max_propagation, 7, "the variables still apply");
        assert_eq!(
            *changes.lock().unwrap(),
            [("info".to_string(), "debug".to_string())]
        );
        assert_eq!(
            watcher.stats(),
            ReloadStats {
                reloads: 1,
                refusals: 0
            }
        );

        write(
            &dir,
            "[service]\nnoise_floor = 1.5\n[log]\nlevel = \"debug\"\n",
        );
        eventually("the refusal", BOUND, || watcher.stats().refusals == 1).await;
        assert_eq!(
            watcher.current().service.noise_floor,
            0.2,
            "the old value stays"
        );
        assert!(!settings.has_changed().unwrap());

        write(
            &dir,
            "[service]\nnoise_floor = 0.3\n[log]\nlevel = \"debug\"\n",
        );
        tokio::time::timeout(BOUND, settings.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(settings.borrow_and_update().service.noise_floor, 0.3);
        assert_eq!(
            watcher.stats(),
            ReloadStats {
                reloads: 2,
                refusals: 1
            }
        );

        // A removed file is refused too; putting it back is a change.
        std::fs::remove_file(dir.path().join("default.toml")).unwrap();
        eventually("the second refusal", BOUND, || {
            watcher.stats().refusals == 2
        })
        .await;
        write(&dir, "[service]\nnoise_floor = 0.4\n");
        tokio::time::timeout(BOUND, settings.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(watcher.current().service.noise_floor, 0.4);
        watcher.stop();
        assert!(settings.changed().await.is_err(), "closed once stopped");
        assert_eq!(
            settings.borrow().service.noise_floor,
            0.4,
            "the last value stays"
        );
    }

    #[tokio::test]
    async fn a_refusal_is_logged_with_the_key_and_the_value() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir, "");
        let out = Captured::default();
        let (dispatch, _handle) =
            crate::logging::dispatch(&crate::settings::LogSettings::default(), out.clone())
                .unwrap();
        let source = SettingsSource::new(dir.path(), None, Vec::<(String, String)>::new());
        // The watcher logs where it was started.
        let watcher = tracing::dispatcher::with_default(&dispatch, || {
            watch(
                source,
                Duration::from_millis(20),
                Program::default(),
                Program::RELOAD_SCOPE,
                |_, _| {},
            )
            .unwrap()
        });
        write(&dir, "[service]\nnoise_floor = 1.5\n");
        eventually("the refusal", BOUND, || watcher.stats().refusals == 1).await;
        let text = out.text();
        assert!(text.contains("WARN"), "{text}");
        assert!(
            text.contains("key=\"service.noise_floor\" value=\"1.5\""),
            "{text}"
        );
        assert!(text.contains("the previous settings stay"), "{text}");
        // Bad TOML: no key to name, and one line.
        write(&dir, "[service\nnoise_floor = 0.1\n");
        eventually("the second refusal", BOUND, || {
            watcher.stats().refusals == 2
        })
        .await;
        let text = out.text();
        let line = text.lines().last().unwrap();
        assert!(
            line.contains("WARN") && line.contains("the previous settings stay"),
            "{text}"
        );
        assert!(!line.contains("key=\"-\""), "{line}");
    }

    #[tokio::test]
    async fn a_reload_names_the_settings_it_applies_and_those_that_wait_for_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir,
            "[service]\nnoise_floor = 0.1\nshutdown_grace_ms = 500\n[gateway]\nlisten = \"a\"\n",
        );
        let out = Captured::default();
        let (dispatch, _handle) =
            crate::logging::dispatch(&crate::settings::LogSettings::default(), out.clone())
                .unwrap();
        let source = SettingsSource::new(dir.path(), None, Vec::<(String, String)>::new());
        let start: Program = source.load().unwrap();
        let watcher = tracing::dispatcher::with_default(&dispatch, || {
            watch(
                source,
                Duration::from_millis(20),
                start,
                Program::RELOAD_SCOPE,
                |_, _| {},
            )
            .unwrap()
        });
        // One applied, one read at start, one of another program's section.
        write(
            &dir,
            "[service]\nnoise_floor = 0.2\nshutdown_grace_ms = 900\n[gateway]\nlisten = \"b\"\n",
        );
        eventually("the reload", BOUND, || watcher.stats().reloads == 1).await;
        let text = out.text();
        let applied = text
            .lines()
            .find(|l| l.contains("settings applied"))
            .expect(&text);
        assert!(applied.contains("service.noise_floor"), "{applied}");
        let restart = text
            .lines()
            .find(|l| l.contains("only at the next start"))
            .expect(&text);
        assert!(
            restart.contains("WARN") && restart.contains("service.shutdown_grace_ms"),
            "{restart}"
        );
        assert!(!text.contains("gateway.listen"), "{text}");
        // The start-only setting put back: nothing waits for a restart.
        write(
            &dir,
            "[service]\nnoise_floor = 0.2\nshutdown_grace_ms = 500\n[gateway]\nlisten = \"b\"\n",
        );
        eventually("the second reload", BOUND, || watcher.stats().reloads == 2).await;
        let text = out.text();
        let waits = text
            .lines()
            .filter(|l| l.contains("only at the next start"))
            .count();
        assert_eq!(waits, 1, "the revert said as waiting: {text}");
        let back = text
            .lines()
            .find(|l| l.contains("back to the values in force since the start"))
            .expect(&text);
        assert!(back.contains("service.shutdown_grace_ms"), "{back}");
    }

    #[test]
    fn changed_settings_are_named_by_their_dotted_paths() {
        let old = serde_json::json!({"a": {"b": 1, "c": {"d": "x"}}, "e": [1]});
        let new = serde_json::json!({"a": {"b": 2, "c": {}}, "e": [1], "f": {"g": true}});
        assert_eq!(changed_settings(&old, &new), ["a.b", "a.c.d", "f.g"]);
        let scope = ReloadScope {
            applied: &["a.b", "f"],
            others: &["e"],
        };
        let (applied, restart) = scope.split(&changed_settings(&old, &new));
        assert_eq!(applied, ["a.b", "f.g"]);
        assert_eq!(restart, ["a.c.d"]);
        // A prefix is a whole name: `a.b` does not cover `a.bc`.
        let (applied, _) = scope.split(&["a.bc".to_string()]);
        assert!(applied.is_empty());
    }
}
