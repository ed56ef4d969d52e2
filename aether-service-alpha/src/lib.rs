//! Service alpha: the shop of the sample flow.
//!
//! It emits `orders.created` (JSON `{order_id, item, qty}`, the items taken
//! in turn from a small catalogue) at a configured rate, resonates on
//! `inventory.*`, and for each answer about one of its own orders (matched
//! by the order id, which is also the correlation key) emits
//! `orders.confirmed` (phase 0) after `inventory.reserved`, or
//! `orders.cancelled` (phase π, [`Phase::RETRACT`]) after
//! `inventory.insufficient`. `aether-service-beta` gives the answers.
//!
//! An answer that is not one (not JSON, no `order_id` string, an order id
//! that is empty or longer than 256 bytes) is refused: counted by reason in
//! [`AlphaReport::refused`], warned about at most once per
//! [`refusals::WARN_EVERY`], and alpha goes on. An answer about an order
//! already answered is counted as [`AlphaReport::repeated`] (the same
//! answer) or [`AlphaReport::conflicting`] (the other one); about an order
//! it never made (another alpha's), as [`AlphaReport::unmatched`].
//!
//! `[alpha.faults]` (or `--faults`) makes two faults on purpose, for the
//! physics engine to find: a client that retries without backoff and a
//! producer that sends some orders twice ([`AlphaFaults`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use aether_ops::{faults, refusals};

use std::{
    collections::{BTreeMap, HashMap},
    error::Error,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aether_core::{
    Aether, AetherConfig, EmitError, EmitErrorKind, Phase, Vibrator, Wave, reliable,
};
use aether_ops::{
    resources::ResourceLimits,
    settings::{LogSettings, ServiceSettings, SettingsError, TelemetrySettings, Validate},
    shutdown::Shutdown,
};
use serde::{Deserialize, Serialize, de::IgnoredAny};
use serde_json::json;
use tokio::{sync::watch, time::Instant};
use tracing::Instrument;

use aether_ops::drops::DropWatch;

use crate::refusals::{Refusal, RefusalLog};

/// How often alpha looks for overdue orders and for its own drops.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Over how long alpha measures the pace of its orders against its rate.
const PACE_WINDOW: Duration = Duration::from_secs(3);

/// The pattern alpha resonates on for the answers to its orders.
pub const ANSWERS: &str = "inventory.*";

/// An error of a run: the aether refused something (closed, bad name).
pub type AlphaError = Box<dyn Error + Send + Sync>;

/// The `[alpha]` section.
///
/// ```toml
/// [alpha]
/// rate_per_s = 5
/// # count = 100          # stop after this many orders; default: until shutdown
/// items = ["widget", "gadget", "gizmo"]
/// qty = 1
/// drain_ms = 2000
/// answer_deadline_ms = 15000
///
/// [alpha.faults]
/// retry_storm_share = 0.0
/// retry_every_ms = 100
/// retries = 8
/// duplicate_share = 0.0
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlphaSettings {
    /// Orders emitted per second, above 0 and at most 10,000. Default 5.
    pub rate_per_s: f64,
    /// How many orders to emit; none (the default): until shutdown.
    pub count: Option<u64>,
    /// The catalogue, ordered in turn. Default widget, gadget, gizmo.
    pub items: Vec<String>,
    /// Units of each order, at least 1. Default 1.
    pub qty: u64,
    /// How long to wait for the answers still due after a shutdown, in
    /// milliseconds (after `count` orders, each is waited for until its
    /// `answer_deadline_ms` instead). Default 2,000.
    pub drain_ms: u64,
    /// An order still unanswered this long after it was emitted is
    /// counted as overdue (in the summary, with a warning at most once per
    /// 10 s); its answer is still taken if it comes. In milliseconds, 100
    /// to 3,600,000; default 15,000.
    pub answer_deadline_ms: u64,
    /// Faults to make, for the physics engine to find; none by default.
    pub faults: AlphaFaults,
}

/// The `[alpha.faults]` section: what goes wrong on purpose (`--faults`
/// turns it on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlphaFaults {
    /// Share of the orders (0 to 1) sent by a client that retries without
    /// backoff, its timeout shorter than the answer takes: the same order
    /// again every `retry_every_ms`, `retries` times, whatever comes back
    /// (a retry storm: a standing wave). Default 0.
    pub retry_storm_share: f64,
    /// The retrying client's interval, in milliseconds, 10 to 10,000.
    /// Default 100.
    pub retry_every_ms: u64,
    /// How many times it sends each such order again, 1 to 100. Default 8.
    pub retries: u32,
    /// Share of the orders (0 to 1) a faulty producer sends twice at once
    /// (duplicates: constructive interference). Default 0.
    pub duplicate_share: f64,
}

impl Default for AlphaFaults {
    fn default() -> Self {
        Self {
            retry_storm_share: 0.0,
            retry_every_ms: 100,
            retries: 8,
            duplicate_share: 0.0,
        }
    }
}

impl Validate for AlphaFaults {
    fn validate(&self) -> Result<(), SettingsError> {
        faults::check_share("faults.retry_storm_share", self.retry_storm_share)?;
        faults::check_share("faults.duplicate_share", self.duplicate_share)?;
        if !(10..=10_000).contains(&self.retry_every_ms) {
            return Err(SettingsError::invalid(
                "faults.retry_every_ms",
                self.retry_every_ms.to_string(),
                "must be 10 to 10000",
            ));
        }
        if !(1..=100).contains(&self.retries) {
            return Err(SettingsError::invalid(
                "faults.retries",
                self.retries.to_string(),
                "must be 1 to 100",
            ));
        }
        Ok(())
    }
}

impl Default for AlphaSettings {
    fn default() -> Self {
        Self {
            rate_per_s: 5.0,
            count: None,
            items: ["widget", "gadget", "gizmo"].map(String::from).to_vec(),
            qty: 1,
            drain_ms: 2_000,
            answer_deadline_ms: 15_000,
            faults: AlphaFaults::default(),
        }
    }
}

impl Validate for AlphaSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if !(self.rate_per_s.is_finite() && self.rate_per_s > 0.0 && self.rate_per_s <= 10_000.0) {
            return Err(SettingsError::invalid(
                "rate_per_s",
                self.rate_per_s.to_string(),
                "must be above 0 and at most 10000",
            ));
        }
        if self.items.is_empty() || self.items.iter().any(|item| item.trim().is_empty()) {
            return Err(SettingsError::invalid(
                "items",
                format!("{:?}", self.items),
                "must name at least one item, none empty",
            ));
        }
        if self.qty == 0 {
            return Err(SettingsError::invalid("qty", "0", "must be at least 1"));
        }
        if !(100..=3_600_000).contains(&self.answer_deadline_ms) {
            return Err(SettingsError::invalid(
                "answer_deadline_ms",
                self.answer_deadline_ms.to_string(),
                "must be 100 to 3600000",
            ));
        }
        self.faults.validate()
    }
}

/// The program's settings: the shared sections and `[alpha]`. The
/// `[gateway]` and `[beta]` sections of a shared settings directory are
/// accepted and not read.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlphaProgramSettings {
    /// The aether's settings; `[aether.nats]` with `--nats`.
    pub aether: AetherConfig,
    /// Logging: level and format.
    pub log: LogSettings,
    /// Read and checked.
    pub service: ServiceSettings,
    /// Read and checked.
    pub resources: ResourceLimits,
    /// Read and checked.
    pub telemetry: TelemetrySettings,
    /// Alpha's own settings.
    pub alpha: AlphaSettings,
    /// The gateway's section, not read.
    pub gateway: IgnoredAny,
    /// Beta's section, not read.
    pub beta: IgnoredAny,
}

aether_ops::service_program_settings!(
    AlphaProgramSettings,
    applied: [
        "log.level",
        "service.noise_floor",
        "service.rate_limit_per_s",
        "service.rate_limit_wait_ms",
        "service.reliability",
        "alpha",
    ],
    others: ["gateway", "beta"],
    own: alpha,
);

/// The command line (`--help` describes it: its field docs are that text,
/// `[service] medium` a settings section, not a link).
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Clone, Debug, PartialEq, clap::Parser)]
#[command(
    name = "aether-service-alpha",
    version,
    about = "The shop of the sample flow: emits orders.created at a steady rate, hears \
inventory.reserved or inventory.insufficient for each, and emits orders.confirmed or \
orders.cancelled (phase RETRACT, pi).",
    after_help = "Settings come from DIR/default.toml, then DIR/$AETHER_ENV.toml, then \
AETHER__SECTION__KEY variables; its own are the [alpha] section (rate_per_s, count, items, \
qty, drain_ms). With --count it stops after that many orders and their answers (each waited \
for until answer_deadline_ms, and longer while orders wait in its outbox for a cut link); otherwise it runs until SIGINT (Ctrl-C) or SIGTERM. Either way it prints what it did and exits with \
status 0. It serves no HTTP port.\n\nWithout --nats it runs on the embedded medium and \
talks only to itself: no inventory answers. To reach aether-service-beta and \
aether-gateway in other processes, give all of them the same --nats URL (or run \
`cargo run --example shop` for all three in one process)."
)]
pub struct Options {
    /// Directory of the settings files (default.toml, then the AETHER_ENV
    /// overlay).
    #[arg(long, value_name = "DIR", default_value = "config")]
    pub config_dir: PathBuf,
    /// Join the bus of this NATS server (nats:// or tls://; repeat for a
    /// cluster) instead of the embedded medium.
    #[arg(long, value_name = "URL")]
    pub nats: Vec<String>,
    /// Join the bus on the LAN ([service] medium = "lan"): this machine's
    /// `aether node`, else one announced on the LAN (`AETHER_BUS`,
    /// `AETHER_SECRET_FILE` or [aether.lan] name the bus).
    #[arg(long, conflicts_with = "nats")]
    pub lan: bool,
    /// This process's name in its instance reports and the server's
    /// connection list ([aether.report] instance), stable across restarts
    /// so that dashboards and alerts follow it. Default: over NATS with a
    /// `[service] data_dir`, `<host>-aether-service-alpha-<k>` (its data folder's slot),
    /// else `aether-service-alpha-<process id>`.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// Serve this process's own Prometheus metrics at
    /// `http://ADDR/metrics` ([service] metrics_listen): its outbox, drops
    /// and connection, seen even when the bus is not.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Emit this many orders, then stop (default: until shutdown).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = order_count)]
    pub count: Option<u64>,
    /// Orders per second, above 0 and at most 10,000 (default 5).
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// Make faults on purpose: one order in twenty retried without backoff
    /// (a retry storm), one in twenty sent twice (duplicates)
    /// ([alpha.faults] retry_storm_share and duplicate_share = 0.05).
    #[arg(long)]
    pub faults: bool,
}

/// `--count`: a whole number, 0 or more. (A negative one reaches this, and
/// is refused with this message, rather than being taken for an option.)
fn order_count(text: &str) -> Result<u64, String> {
    text.parse::<u64>().map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow => {
            format!(
                "{text} orders are more than can be counted (at most {})",
                u64::MAX
            )
        }
        _ => format!("must be a whole number of orders, 0 or more, not {text}"),
    })
}

impl Default for Options {
    fn default() -> Self {
        <Self as clap::Parser>::parse_from(["aether-service-alpha"])
    }
}

impl Options {
    /// Puts the options given over `settings`.
    pub fn apply(&self, settings: &mut AlphaProgramSettings) {
        aether_ops::service::apply_service_options(
            &mut settings.aether,
            &mut settings.service,
            self.instance.as_ref(),
            self.metrics_listen,
            &self.nats,
            self.lan,
        );
        // Its own `[service.programs.alpha]` over the shared `[service]`.
        settings.service = settings.service.for_program("alpha");
        if let Some(count) = self.count {
            settings.alpha.count = Some(count);
        }
        if let Some(rate) = self.rate {
            settings.alpha.rate_per_s = rate;
        }
        if self.faults {
            settings.alpha.faults.retry_storm_share = faults::DEMO_SHARE;
            settings.alpha.faults.duplicate_share = faults::DEMO_SHARE;
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlphaReport {
    /// `orders.created` emitted.
    pub created: u64,
    /// `orders.confirmed` emitted (after `inventory.reserved`).
    pub confirmed: u64,
    /// `orders.cancelled` emitted (after `inventory.insufficient`).
    pub cancelled: u64,
    /// Orders left without an answer when it stopped.
    pub unanswered: u64,
    /// Waves accepted but still in the aether's outboxes when it ended, the
    /// server unreachable: lost with it (orders and outcomes, and the
    /// instance's own reports and its maps' messages).
    pub unsent: u64,
    /// Orders and outcomes safe in the durable outbox on disk when it
    /// ended, the server unreachable: sent by its next start.
    pub kept: u64,
    /// Orders still unanswered `answer_deadline_ms` after they were
    /// emitted (whether or not an answer came later).
    pub overdue: u64,
    /// Orders and outcomes not emitted because the medium failed past what
    /// `[service.reliability]` allows (timeouts, an open circuit, a full
    /// outbox), or at the first failure without it.
    pub failed: u64,
    /// Orders and outcomes not emitted because the vibrator was over its
    /// rate limit (`[service] rate_limit_per_s`).
    pub rate_limited: u64,
    /// Emits that waited for their turn under the rate limit (it shapes:
    /// `rate_limit_wait_ms`), then went out.
    pub shaped: u64,
    /// Answers about no order it waits for: another alpha's order, or one
    /// never made (or answered too long ago to remember); nothing emitted.
    pub unmatched: u64,
    /// Answers about an order it already had the same answer for (its
    /// retries and duplicates answered again); nothing emitted.
    pub repeated: u64,
    /// Answers about an order it already had the other answer for
    /// (reserved after insufficient, or the reverse: two deciders
    /// disagree); nothing emitted, the first answer stands.
    pub conflicting: u64,
    /// Orders sent again by the retrying client (`[alpha.faults]`).
    pub retried: u64,
    /// Orders sent twice by the faulty producer (`[alpha.faults]`).
    pub duplicated: u64,
    /// Answers that are not answers, refused, by reason: `not_json`,
    /// `bad_fields` (no `order_id` string), `bad_order_id` (empty or longer
    /// than 256 bytes). See [`refusals`].
    pub refused: BTreeMap<&'static str, u64>,
    /// Waves its vibrator did not get, by reason (a full queue sheds the
    /// weakest first: `queue_full`).
    pub dropped: BTreeMap<&'static str, u64>,
}

impl std::fmt::Display for AlphaReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "service-alpha: created {}, confirmed {}, cancelled {}, unanswered {}, \
             unsent {}, kept {}, overdue {}, rate_limited {}, shaped {}, failed {}, unmatched {}, repeated {}, \
             conflicting {}, retried {}, duplicated {}, refused {}, dropped {}",
            self.created,
            self.confirmed,
            self.cancelled,
            self.unanswered,
            self.unsent,
            self.kept,
            self.overdue,
            self.rate_limited,
            self.shaped,
            self.failed,
            self.unmatched,
            self.repeated,
            self.conflicting,
            self.retried,
            self.duplicated,
            refusals::summary(&self.refused),
            aether_ops::drops::summary(&self.dropped)
        )
    }
}

#[derive(Deserialize)]
struct Answer {
    order_id: String,
}

/// The order id of an answer, or why the wave is no answer.
fn read_answer(wave: &Wave) -> Result<String, Refusal> {
    let answer: Answer = refusals::read_json(wave)?;
    refusals::check_order_id(&answer.order_id)?;
    Ok(answer.order_id)
}

/// A prefix for this run's order ids, so that several alphas on one bus
/// tell their orders apart.
fn run_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:08x}", std::process::id(), nanos)
}

/// Emits orders on `aether` as `settings` say and confirms or cancels each
/// as its answer arrives, until `settings.count` orders were made (then
/// waits for each pending answer until its `answer_deadline_ms`, or
/// `drain_ms` after a shutdown, whichever comes first) or `shutdown` (then
/// waits at most `settings.drain_ms` for the answers still due), flushes the aether (so that no outcome is left unsent when the
/// program exits), and returns what it did. Its vibrator has the aether's
/// default noise floor and no rate limit; [`run_live`] takes them from
/// `[service]`, and follows changes.
pub async fn run(
    aether: &Aether,
    settings: &AlphaSettings,
    shutdown: Shutdown,
) -> Result<AlphaReport, AlphaError> {
    let program = AlphaProgramSettings {
        alpha: settings.clone(),
        service: ServiceSettings {
            noise_floor: aether.config().default_noise_floor,
            ..ServiceSettings::default()
        },
        ..AlphaProgramSettings::default()
    };
    let (_keep, settings) = watch::channel(Arc::new(program));
    run_live(aether, settings, shutdown).await
}

/// How often alpha, done with its --count, looks whether orders still wait
/// in its outbox.
const OUTBOX_LOOK: Duration = Duration::from_millis(250);

/// Like [`run`], with the settings in force in `settings` (the receiver of
/// a hot-reload watcher, `aether_ops::reload::Watcher::subscribe`): the
/// order rate (`alpha.rate_per_s`), the vibrator's noise floor and rate
/// limit (`service.noise_floor`, `service.rate_limit_per_s`) and the other
/// `[alpha]` keys change as soon as a new value is published. Each change
/// is logged (`info`).
pub async fn run_live(
    aether: &Aether,
    mut settings: watch::Receiver<Arc<AlphaProgramSettings>>,
    shutdown: Shutdown,
) -> Result<AlphaReport, AlphaError> {
    let mut current = Arc::clone(&settings.borrow_and_update());
    let mut alpha = Vibrator::create("service-alpha", aether).await?;
    current.service.apply_to(&alpha)?;
    let mut reliable = current.service.reliable(aether)?;
    alpha.resonate_on(ANSWERS).await?;
    let mut orders = Orders::new(run_prefix());
    let mut checks = tokio::time::interval(CHECK_EVERY);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pace = Pace::new(orders.sequence);
    let mut ticks = order_ticks(current.alpha.rate_per_s);
    let mut drain = Duration::from_millis(current.alpha.drain_ms);
    let mut drain_until = (current.alpha.count == Some(0)).then(|| Instant::now() + drain);
    let mut stopping = false;
    let mut finished_by_count = false;
    // With --count, orders wait in an outbox (a cut link) past the time
    // the last order was due.
    let mut waiting_for_outbox = false;
    tracing::info!(
        rate_per_s = current.alpha.rate_per_s,
        count = ?current.alpha.count,
        noise_floor = current.service.noise_floor,
        rate_limit_per_s = ?current.service.rate_limit_per_s,
        "service-alpha orders"
    );
    loop {
        let ordering = drain_until.is_none();
        if !ordering && orders.pending.is_empty() {
            break;
        }
        let until = drain_until.unwrap_or_else(|| Instant::now() + drain);
        tokio::select! {
            biased;
            () = shutdown.wait(), if ordering => drain_until = Some(Instant::now() + drain),
            // Asked to stop while waiting for the last answers: at most the
            // drain time more.
            () = shutdown.wait(), if !ordering && !stopping => {
                stopping = true;
                drain_until = drain_until.map(|until| until.min(Instant::now() + drain));
            }
            Ok(()) = settings.changed() => {
                let new = Arc::clone(&settings.borrow_and_update());
                if new.alpha.rate_per_s != current.alpha.rate_per_s {
                    ticks = order_ticks(new.alpha.rate_per_s);
                    pace = Pace::new(orders.sequence);
                }
                new.service.apply_to(&alpha)?;
                if new.service.reliability != current.service.reliability {
                    reliable = new.service.reliable(aether)?;
                }
                drain = Duration::from_millis(new.alpha.drain_ms);
                tracing::info!(
                    rate_per_s = new.alpha.rate_per_s,
                    count = ?new.alpha.count,
                    noise_floor = new.service.noise_floor,
                    rate_limit_per_s = ?new.service.rate_limit_per_s,
                    "service-alpha settings applied"
                );
                current = new;
            }
            _ = ticks.tick(), if ordering => {
                let settings = &current.alpha;
                orders.place(&alpha, reliable.as_ref(), settings).await?;
                // Looked at here: while emits wait, this branch is ready
                // again at once and the checks' turn does not come.
                pace.check(orders.sequence, settings.rate_per_s, || alpha.stats().rate_limit_waits);
                if settings.count.is_some_and(|count| orders.report.created >= count) {
                    // Every order made: each pending one is waited for
                    // until its answer deadline (the last order's is the
                    // latest), or until shutdown.
                    let deadline = Duration::from_millis(settings.answer_deadline_ms);
                    drain_until = Some(Instant::now() + deadline.max(drain));
                    finished_by_count = true;
                }
            }
            _ = checks.tick() => orders.check(&alpha, current.alpha.answer_deadline_ms),
            () = tokio::time::sleep_until(until), if !ordering => {
                // With --count, orders still in an outbox (the link to the
                // bus cut) have not reached beta yet: wait for them to
                // leave, and then for their answers, unless asked to stop.
                // Looked at every OUTBOX_LOOK while it holds orders; once it
                // is empty, each order that left it gets its whole answer
                // deadline again.
                let status = aether.connection();
                let held = status.durable_outbox_len + status.outbox_len;
                if finished_by_count && !stopping && held > 0 {
                    if !waiting_for_outbox {
                        tracing::info!(
                            held,
                            "service-alpha: orders still in the outbox; waiting for them to \
                             leave and for their answers"
                        );
                    }
                    waiting_for_outbox = true;
                    drain_until = Some(Instant::now() + OUTBOX_LOOK);
                    continue;
                }
                if waiting_for_outbox && !stopping {
                    waiting_for_outbox = false;
                    let deadline = Duration::from_millis(current.alpha.answer_deadline_ms);
                    drain_until = Some(Instant::now() + deadline.max(drain));
                    continue;
                }
                break;
            }
            wave = alpha.receive() => {
                let Some(wave) = wave else { break };
                orders.answer(&alpha, reliable.as_ref(), &wave).await?;
            }
        }
    }
    let mut report = orders.finish(&alpha, aether).await;
    // After its count, the outcomes are waited for as long as an answer
    // would be (a cluster electing a new leader holds them for seconds);
    // after a shutdown, the drain time.
    let flush_for = if finished_by_count && !stopping {
        drain.max(Duration::from_millis(current.alpha.answer_deadline_ms))
    } else {
        drain
    };
    if let Err(error) = aether.flush(flush_for).await {
        tracing::warn!(%error, "outcomes may be left unsent");
    }
    // What was accepted and has still not left the process when it ends:
    // counted, never lost in silence.
    let left = aether_ops::drops::left_at_exit(aether);
    (report.unsent, report.kept) = (left.unsent, left.kept);
    tracing::info!("{report}");
    Ok(report)
}

/// One run's orders: those waiting for their answers, the answers seen,
/// the retrying client's tasks, and what the run counted.
struct Orders {
    /// The run's prefix of order ids.
    prefix: String,
    /// Orders made so far.
    sequence: u64,
    /// Each order waiting for its answer: its item, and when it is overdue
    /// (`None` once counted so).
    pending: HashMap<String, (String, Option<Instant>)>,
    /// The answers of the latest orders answered: whether confirmed.
    answered: faults::Latest<bool>,
    /// The retrying client's orders, each sending its order again.
    storms: tokio::task::JoinSet<u64>,
    report: AlphaReport,
    refusal_log: RefusalLog,
    drops: DropWatch,
    overdue_warned: u64,
    last_overdue_warning: Option<Instant>,
}

impl Orders {
    fn new(prefix: String) -> Self {
        Self {
            prefix,
            sequence: 0,
            pending: HashMap::new(),
            answered: faults::Latest::default(),
            storms: tokio::task::JoinSet::new(),
            report: AlphaReport::default(),
            refusal_log: RefusalLog::new("service-alpha", refusals::WARN_EVERY),
            drops: DropWatch::new("service-alpha", refusals::WARN_EVERY),
            overdue_warned: 0,
            last_overdue_warning: None,
        }
    }

    /// Makes the next order, and its faults if the settings ask for them.
    async fn place(
        &mut self,
        alpha: &Vibrator,
        reliable: Option<&reliable::Reliable>,
        settings: &AlphaSettings,
    ) -> Result<(), AlphaError> {
        let item = &settings.items[(self.sequence % settings.items.len() as u64) as usize];
        self.sequence += 1;
        let sequence = self.sequence;
        let order_id = format!("{}-{sequence}", self.prefix);
        let order = Wave::builder("orders.created")
            .correlation_key(&order_id)
            .json(&json!({"order_id": order_id, "item": item, "qty": settings.qty}))
            .build()?;
        let faults = &settings.faults;
        let duplicate =
            faults::picked(faults.duplicate_share, sequence, 0.5).then(|| order.clone());
        let storm = faults::picked(faults.retry_storm_share, sequence, 0.0).then(|| order.clone());
        match reliable::emit_with(reliable, alpha, order).await {
            Ok(_) => {
                self.report.created += 1;
                let deadline = Duration::from_millis(settings.answer_deadline_ms);
                self.pending.insert(
                    order_id.clone(),
                    (item.clone(), Some(Instant::now() + deadline)),
                );
                if let Some(again) = duplicate {
                    match alpha.emit(again).await {
                        Ok(_) => self.report.duplicated += 1,
                        Err(error) => self.report.count_failure(error)?,
                    }
                }
                if let Some(again) = storm {
                    self.storms
                        .spawn(retry_storm(alpha.emitter(), again, faults.clone()));
                }
            }
            Err(error) => {
                tracing::debug!(%error, "order not emitted");
                self.report.count_failure(error)?;
            }
        }
        Ok(())
    }

    /// The periodic look: its drops, the retrying client's finished tasks,
    /// and the orders past their deadline (warned at most once per
    /// [`refusals::WARN_EVERY`]).
    fn check(&mut self, alpha: &Vibrator, deadline_ms: u64) {
        self.drops.check(&alpha.stats());
        // The retrying client's finished tasks, joined as they end: a task
        // kept until the run's end holds its memory for as long as faults
        // last.
        while let Some(sent) = self.storms.try_join_next() {
            self.report.retried += sent.unwrap_or(0);
        }
        let now = Instant::now();
        for (order_id, (_, due)) in self.pending.iter_mut() {
            if due.is_some_and(|due| due <= now) {
                *due = None;
                self.report.overdue += 1;
                tracing::debug!(order_id, "order overdue");
            }
        }
        let quiet = self
            .last_overdue_warning
            .is_some_and(|last| now.duration_since(last) < refusals::WARN_EVERY);
        if self.report.overdue > self.overdue_warned && !quiet {
            tracing::warn!(
                overdue = self.report.overdue - self.overdue_warned,
                deadline_ms,
                "service-alpha: orders unanswered past their deadline"
            );
            self.overdue_warned = self.report.overdue;
            self.last_overdue_warning = Some(now);
        }
    }

    /// Takes an answer of beta's: the order it answers is confirmed or
    /// cancelled, once; anything else is counted.
    async fn answer(
        &mut self,
        alpha: &Vibrator,
        reliable: Option<&reliable::Reliable>,
        wave: &Wave,
    ) -> Result<(), AlphaError> {
        // The outcome is emitted in the answer's consumer span.
        let span = alpha.span_of(wave);
        let (channel, phase) = match wave.channel().as_str() {
            "inventory.reserved" => ("orders.confirmed", Phase::ASSERT),
            "inventory.insufficient" => ("orders.cancelled", Phase::RETRACT),
            _ => return Ok(()),
        };
        let order_id = match read_answer(wave) {
            Ok(order_id) => order_id,
            Err(refusal) => {
                self.refusal_log
                    .refuse(&mut self.report.refused, refusal, wave.channel().as_str());
                return Ok(());
            }
        };
        // Only orders it waits for are confirmed or cancelled.
        let confirmed = phase == Phase::ASSERT;
        let Some((item, due)) = self.pending.remove(&order_id) else {
            match self.answered.get(&order_id) {
                Some(&first) if first == confirmed => self.report.repeated += 1,
                Some(_) => {
                    self.report.conflicting += 1;
                    tracing::warn!(
                        order_id,
                        channel = %wave.channel(),
                        "service-alpha: conflicting answers for one order; the first stands"
                    );
                }
                None => self.report.unmatched += 1,
            }
            return Ok(());
        };
        self.answered.insert(order_id.clone(), confirmed);
        // Answered past its deadline before a check counted it.
        if due.is_some_and(|due| due <= Instant::now()) {
            self.report.overdue += 1;
        }
        // The key is one of its own order ids: the outcome builds.
        let outcome = Wave::builder(channel)
            .phase(phase)
            .correlation_key(&order_id)
            .json(&json!({"order_id": order_id, "item": item}))
            .build()?;
        match reliable::emit_with(reliable, alpha, outcome)
            .instrument(span)
            .await
        {
            Ok(_) if phase == Phase::ASSERT => self.report.confirmed += 1,
            Ok(_) => self.report.cancelled += 1,
            Err(error) => {
                tracing::warn!(%error, order_id, "outcome not emitted");
                self.report.count_failure(error)?;
            }
        }
        Ok(())
    }

    /// The run's report once it stopped ordering and waiting: the retrying
    /// client's last tasks joined, what is still unanswered, the drops.
    async fn finish(mut self, alpha: &Vibrator, aether: &Aether) -> AlphaReport {
        // The retrying client stops by itself, after its retries.
        while let Some(sent) = self.storms.join_next().await {
            self.report.retried += sent.unwrap_or(0);
        }
        let mut report = self.report;
        report.unanswered = self.pending.len() as u64;
        // Orders whose deadline passed since the last check.
        let now = Instant::now();
        report.overdue += self
            .pending
            .values()
            .filter(|(_, due)| due.is_some_and(|due| due <= now))
            .count() as u64;
        report.dropped = aether_ops::drops::of_service(&alpha.stats(), &aether.stats());
        report.shaped = alpha.stats().rate_limit_waits;
        report
    }
}

impl AlphaReport {
    /// Counts an emit that failed in a way a later one may not (over the
    /// rate limit, a timeout, an open circuit, a full outbox); any other
    /// failure ends the run.
    fn count_failure(&mut self, error: EmitError) -> Result<(), AlphaError> {
        match error.kind() {
            EmitErrorKind::RateLimited => self.rate_limited += 1,
            kind if reliable::failed_for_now(kind) => self.failed += 1,
            _ => return Err(error.into()),
        }
        Ok(())
    }
}

/// The fault of a client whose timeout is shorter than its answer takes:
/// sends `order` again every `retry_every_ms`, without backoff, `retries`
/// times, whatever comes back. Returns how many it sent.
async fn retry_storm(alpha: aether_core::Emitter, order: Wave, faults: AlphaFaults) -> u64 {
    let mut ticks = tokio::time::interval(Duration::from_millis(faults.retry_every_ms));
    ticks.tick().await;
    let mut sent = 0;
    for _ in 0..faults.retries {
        ticks.tick().await;
        match alpha.emit(order.clone()).await {
            Ok(_) => sent += 1,
            Err(error) => {
                tracing::debug!(%error, "retry not sent");
                break;
            }
        }
    }
    sent
}

/// The pace of alpha's orders against its rate: said when it falls short
/// (emits that wait: a rate limit shaping them, a slow medium), at most
/// once every [`refusals::WARN_EVERY`].
struct Pace {
    since: Instant,
    made: u64,
    warned: Option<Instant>,
}

impl Pace {
    fn new(made: u64) -> Self {
        Self {
            since: Instant::now(),
            made,
            warned: None,
        }
    }

    /// `made` orders tried so far, at the rate `rate_per_s`; `shaped`
    /// counts the emits that waited.
    fn check(&mut self, made: u64, rate_per_s: f64, shaped: impl FnOnce() -> u64) {
        let elapsed = self.since.elapsed();
        if elapsed < PACE_WINDOW {
            return;
        }
        let pace = (made - self.made) as f64 / elapsed.as_secs_f64();
        let quiet = self
            .warned
            .is_some_and(|at| at.elapsed() < refusals::WARN_EVERY);
        if pace < 0.9 * rate_per_s && !quiet {
            tracing::warn!(
                pace_per_s = format!("{pace:.1}"),
                rate_per_s,
                shaped = shaped(),
                "service-alpha: ordering below its rate (its emits wait: a rate limit \
                 shaping them, counted as shaped, or a slow medium)"
            );
            self.warned = Some(Instant::now());
        }
        (self.since, self.made) = (Instant::now(), made);
    }
}

/// A steady clock of orders at `rate_per_s`, first tick at once; a late
/// tick delays the next ones rather than bursting.
fn order_ticks(rate_per_s: f64) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate_per_s));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

#[cfg(test)]
mod tests {
    use aether_ops::settings::SettingsSource;
    use aether_service_beta::BetaSettings;
    use clap::{Parser, error::ErrorKind};

    use super::*;

    fn parse(line: &str) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("bin").chain(line.split_whitespace()))
    }

    #[test]
    fn parses_options_and_says_what_it_does() {
        assert_eq!(parse("").unwrap(), Options::default());
        let help = parse("--help").unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        let help = help.to_string();
        for words in [
            "orders.created",
            "--nats",
            "--config-dir",
            "--count",
            "--rate",
        ] {
            assert!(help.contains(words), "{words}: {help}");
        }
        let mut settings = AlphaProgramSettings::default();
        parse("--nats nats://a:4222 --count 3 --rate 20")
            .unwrap()
            .apply(&mut settings);
        assert_eq!(settings.aether.nats.urls, vec!["nats://a:4222".to_string()]);
        assert_eq!(
            (settings.alpha.count, settings.alpha.rate_per_s),
            (Some(3), 20.0)
        );
        assert!(parse("--count x").is_err());
        assert!(parse("--what").is_err());
    }

    /// Negative numbers are values, not options: `--rate -5` reaches the
    /// settings' check and its message, `--count -5` the option's own.
    #[test]
    fn negative_numbers_reach_the_checks() {
        let mut settings = AlphaProgramSettings::default();
        parse("--rate -5").unwrap().apply(&mut settings);
        let refusal = settings.validate().unwrap_err().to_string();
        assert!(
            refusal.contains("alpha.rate_per_s") && refusal.contains("must be above 0"),
            "{refusal}"
        );
        let refusal = parse("--count -5").unwrap_err();
        assert_eq!(refusal.kind(), ErrorKind::ValueValidation);
        let refusal = refusal.to_string();
        assert!(
            refusal.contains("--count") && refusal.contains("0 or more"),
            "{refusal}"
        );
        assert_eq!(parse("--count 0").unwrap().count, Some(0));
        let refusal = parse("--count 99999999999999999999999")
            .unwrap_err()
            .to_string();
        assert!(refusal.contains("more than can be counted"), "{refusal}");
    }

    fn load(toml: &str) -> Result<AlphaProgramSettings, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("default.toml"), toml).unwrap();
        SettingsSource::new(dir.path(), None, std::iter::empty::<(String, String)>())
            .list_key("alpha.items")
            .load()
    }

    #[test]
    fn reads_and_checks_its_section() {
        assert_eq!(load("").unwrap().alpha, AlphaSettings::default());
        let settings = load("[alpha]\nrate_per_s = 50\ncount = 7\nitems = [\"a\"]\n[beta]\nstock = { a = 1 }\n[gateway]\nlisten = \"127.0.0.1:0\"\n").unwrap();
        assert_eq!(settings.alpha.count, Some(7));
        assert_eq!(settings.alpha.items, vec!["a".to_string()]);
        let refusal = load("[alpha]\nrate_per_s = 0\n").unwrap_err().to_string();
        assert!(refusal.contains("alpha.rate_per_s"), "{refusal}");
        assert!(load("[alpha]\nitems = []\n").is_err());
        assert!(load("[alpha]\nrates = 1\n").is_err());
    }

    /// The whole flow on the embedded medium, with beta in the same
    /// process: some orders confirmed, the gadgets past the stock cancelled.
    #[tokio::test]
    async fn confirms_what_beta_reserves_and_cancels_the_rest() {
        let aether = Aether::default();
        let stop_beta = Shutdown::new();
        let beta = tokio::spawn({
            let (aether, stop) = (aether.clone(), stop_beta.clone());
            async move {
                aether_service_beta::run(&aether, &BetaSettings::default(), stop)
                    .await
                    .unwrap()
            }
        });
        // Beta resonates before the first order: it is spawned first, on
        // this (current-thread) runtime, and runs as soon as alpha waits.
        tokio::task::yield_now().await;
        let settings = AlphaSettings {
            rate_per_s: 1_000.0,
            count: Some(12),
            ..AlphaSettings::default()
        };
        let report = tokio::time::timeout(
            Duration::from_secs(10),
            run(&aether, &settings, Shutdown::new()),
        )
        .await
        .unwrap()
        .unwrap();
        // 4 gadgets ordered, 3 in stock.
        assert_eq!(
            report,
            AlphaReport {
                created: 12,
                confirmed: 11,
                cancelled: 1,
                unanswered: 0,
                unsent: 0,
                kept: 0,
                overdue: 0,
                rate_limited: 0,
                shaped: 0,
                failed: 0,
                unmatched: 0,
                repeated: 0,
                conflicting: 0,
                retried: 0,
                duplicated: 0,
                refused: BTreeMap::new(),
                dropped: BTreeMap::new(),
            }
        );
        stop_beta.trigger();
        let beta = beta.await.unwrap();
        assert_eq!((beta.reserved, beta.insufficient), (11, 1));
    }

    /// With `[service.reliability]`, an order over the rate limit is tried
    /// again after a backoff instead of being counted as refused.
    #[tokio::test]
    async fn the_reliability_policy_retries_what_the_rate_limit_refuses() {
        let program = |reliability| AlphaProgramSettings {
            alpha: AlphaSettings {
                rate_per_s: 1_000.0,
                count: Some(8),
                drain_ms: 10,
                // Alone: no answer comes, each order is waited for this long.
                answer_deadline_ms: 100,
                ..AlphaSettings::default()
            },
            service: ServiceSettings {
                // A burst of 5, then one every 100 ms, refused at once
                // (no wait for a turn).
                rate_limit_per_s: Some(5.0),
                rate_limit_wait_ms: 0,
                reliability,
                ..ServiceSettings::default()
            },
            ..AlphaProgramSettings::default()
        };
        let run_with = |reliability| async move {
            let aether = Aether::default();
            let (_keep, settings) = watch::channel(Arc::new(program(reliability)));
            let report = tokio::time::timeout(
                Duration::from_secs(10),
                run_live(&aether, settings, Shutdown::new()),
            )
            .await
            .unwrap()
            .unwrap();
            (report, aether.stats())
        };
        let (plain, _) = run_with(None).await;
        assert_eq!(plain.created, 8);
        assert!(plain.rate_limited > 0, "{plain}");
        let policy = aether_core::reliable::ReliabilityConfig {
            attempts: 20,
            base_backoff_ms: 20,
            max_backoff_ms: 100,
            ..Default::default()
        };
        let (retried, stats) = run_with(Some(policy)).await;
        assert_eq!(retried.created, 8);
        assert_eq!(retried.rate_limited, 0, "{retried}");
        assert!(stats.retries > 0, "{stats:?}");
    }

    /// Alone, after its count it waits for each answer until its deadline
    /// (not only the drain time), then counts it unanswered.
    #[tokio::test]
    async fn alone_it_stops_after_the_answer_deadline() {
        let settings = AlphaSettings {
            rate_per_s: 1_000.0,
            count: Some(3),
            drain_ms: 50,
            answer_deadline_ms: 400,
            ..AlphaSettings::default()
        };
        let started = std::time::Instant::now();
        let report = run(&Aether::default(), &settings, Shutdown::new())
            .await
            .unwrap();
        // Each past its deadline by the end, counted overdue whether or not
        // a check ran after its deadline.
        assert_eq!(
            (report.created, report.unanswered, report.overdue),
            (3, 3, 3),
            "{report}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "waited for the deadline"
        );
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let report = run(&Aether::default(), &AlphaSettings::default(), shutdown)
            .await
            .unwrap();
        assert_eq!(report, AlphaReport::default());
    }
}
