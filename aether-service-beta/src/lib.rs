//! Service beta: the inventory of the sample shop.
//!
//! It resonates on `orders.*` in the group `inventory` (several betas share
//! the orders, each order reaching one of them), keeps a stock (from its
//! settings, `[beta] stock`, at its first start; then in the replicated
//! map [`stock::MAP`], with a ledger in its data folder), and answers each
//! `orders.created`
//! with `inventory.reserved` (phase 0) when the stock covers it, or
//! `inventory.insufficient` (phase π, [`Phase::RETRACT`]) when it does not,
//! with the order id as correlation key. `orders.confirmed` and
//! `orders.cancelled` are heard and counted, nothing more.
//!
//! Each beta has its own stock: two betas with `gadget = 3` can reserve six
//! gadgets between them. A beta started again under its instance name goes
//! on from the stock it left.
//!
//! A wave on `orders.created` that is no order (not JSON, fields missing or
//! of the wrong type, an order id that is empty or longer than 256 bytes, an
//! item name empty or longer than 256 bytes, a quantity of 0) is refused:
//! counted by reason in [`BetaReport::refused`], warned about at most once
//! per [`refusals::WARN_EVERY`], and beta goes on.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use aether_ops::{faults, refusals};
pub mod stock;

use std::{
    collections::BTreeMap,
    error::Error,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use aether_core::{
    Aether, AetherConfig, EmitErrorKind, Phase, Vibrator, Wave, WaveError,
    reliable::{self, Reliable},
};
use aether_ops::{
    drops::DropWatch,
    resources::ResourceLimits,
    settings::{LogSettings, ServiceSettings, SettingsError, TelemetrySettings, Validate},
    shutdown::Shutdown,
};
use serde::{Deserialize, Serialize, de::IgnoredAny};
use serde_json::json;
use tokio::sync::watch;
use tracing::Instrument;

use crate::refusals::{Refusal, RefusalLog};

/// How often beta looks at its own drops, to warn of them.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The pattern beta resonates on.
pub const ORDERS: &str = "orders.*";
/// The group beta resonates in: one member hears each order.
pub const GROUP: &str = "inventory";
/// Most time beta waits at shutdown for its last answers to leave.
pub const DRAIN: Duration = Duration::from_secs(2);

/// An error of a run: the aether refused something (closed, bad name).
pub type BetaError = Box<dyn Error + Send + Sync>;

/// The `[beta]` section.
///
/// ```toml
/// [beta]
/// stock = { widget = 50, gadget = 3, gizmo = 20 }
///
/// [beta.faults]
/// conflict_share = 0.0
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BetaSettings {
    /// Units in stock at start, by item. An item not listed has none.
    /// Default: widget 50, gadget 3, gizmo 20.
    pub stock: BTreeMap<String, u64>,
    /// Faults to make, for the physics engine to find; none by default.
    pub faults: BetaFaults,
}

/// The `[beta.faults]` section: what goes wrong on purpose (`--faults`
/// turns it on).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BetaFaults {
    /// Share of the orders (0 to 1) that a second decider,
    /// `service-beta-shadow`, answers too, the other way: after beta's
    /// `inventory.reserved` comes its `inventory.insufficient` for the same
    /// order, or the reverse (conflicting messages: a cancellation). Stock
    /// is taken only by beta's own answer. Default 0.
    pub conflict_share: f64,
}

impl Default for BetaSettings {
    fn default() -> Self {
        Self {
            stock: [("widget", 50), ("gadget", 3), ("gizmo", 20)]
                .into_iter()
                .map(|(item, units)| (item.to_string(), units))
                .collect(),
            faults: BetaFaults::default(),
        }
    }
}

impl Validate for BetaSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        match self.stock.keys().find(|item| item.trim().is_empty()) {
            Some(item) => Err(SettingsError::invalid(
                "stock",
                item.clone(),
                "item names must not be empty",
            )),
            None => faults::check_share("faults.conflict_share", self.faults.conflict_share),
        }
    }
}

/// The program's settings: the shared sections and `[beta]`. The
/// `[gateway]` and `[alpha]` sections of a shared settings directory are
/// accepted and not read.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BetaProgramSettings {
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
    /// Beta's own settings.
    pub beta: BetaSettings,
    /// The gateway's section, not read.
    pub gateway: IgnoredAny,
    /// Alpha's section, not read.
    pub alpha: IgnoredAny,
}

aether_ops::service_program_settings!(
    BetaProgramSettings,
    applied: [
        "log.level",
        "service.noise_floor",
        "service.rate_limit_per_s",
        "service.rate_limit_wait_ms",
        "service.reliability",
    ],
    others: ["gateway", "alpha"],
    own: beta,
);

/// The command line (`--help` describes it: its field docs are that text,
/// `[service] medium` a settings section, not a link).
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Clone, Debug, PartialEq, clap::Parser)]
#[command(
    name = "aether-service-beta",
    version,
    about = "The inventory of the sample shop: resonates on orders.* (group \"inventory\"), \
reserves stock for each orders.created and answers inventory.reserved, or \
inventory.insufficient in phase RETRACT (pi) when the stock is short.",
    after_help = "Settings come from DIR/default.toml, then DIR/$AETHER_ENV.toml, then \
AETHER__SECTION__KEY variables; the stock is the [beta] section, for example \
stock = { widget = 50, gadget = 3 }. It runs until SIGINT (Ctrl-C) or SIGTERM, prints \
what it did and exits with status 0. It serves no HTTP port.\n\nWithout --nats it runs on \
the embedded medium and hears only its own process, that is nothing: to serve \
aether-service-alpha in another process, give both the same --nats URL."
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
    /// `[service] data_dir`, `<host>-aether-service-beta-<k>` (its data folder's slot),
    /// else `aether-service-beta-<process id>`.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// Serve this process's own Prometheus metrics at
    /// `http://ADDR/metrics` ([service] metrics_listen): its outbox, drops
    /// and connection, seen even when the bus is not.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Make conflicting answers on purpose: a second decider answers one
    /// order in twenty the other way ([beta.faults] conflict_share = 0.05).
    #[arg(long)]
    pub faults: bool,
}

impl Default for Options {
    fn default() -> Self {
        <Self as clap::Parser>::parse_from(["aether-service-beta"])
    }
}

impl Options {
    /// Puts the options given over `settings`.
    pub fn apply(&self, settings: &mut BetaProgramSettings) {
        aether_ops::service::apply_service_options(
            &mut settings.aether,
            &mut settings.service,
            self.instance.as_ref(),
            self.metrics_listen,
            &self.nats,
            self.lan,
        );
        // Its own `[service.programs.beta]` over the shared `[service]`.
        settings.service = settings.service.for_program("beta");
        if self.faults {
            settings.beta.faults.conflict_share = faults::DEMO_SHARE;
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BetaReport {
    /// Orders answered `inventory.reserved`.
    pub reserved: u64,
    /// Orders answered `inventory.insufficient`.
    pub insufficient: u64,
    /// `orders.confirmed` and `orders.cancelled` heard.
    pub outcomes_heard: u64,
    /// Waves on other `orders.*` channels (neither `orders.created` nor an
    /// outcome), ignored.
    pub ignored: u64,
    /// Orders left unanswered because the vibrator was over its rate limit
    /// (`[service] rate_limit_per_s`); their stock stays.
    pub rate_limited: u64,
    /// Emits that waited for their turn under the rate limit (it shapes:
    /// `rate_limit_wait_ms`), then went out.
    pub shaped: u64,
    /// Orders left unanswered because the medium failed past what
    /// `[service.reliability]` allows (timeouts, an open circuit, a full
    /// outbox), or at the first failure without it; their stock stays.
    pub failed: u64,
    /// The stock left, by item.
    pub stock: BTreeMap<String, u64>,
    /// Waves on `orders.created` that are no order, refused and left
    /// unanswered, by reason: `not_json`, `bad_fields`, `bad_order_id`,
    /// `bad_item`, `bad_qty` (see [`refusals`] and [`read_order`]).
    pub refused: BTreeMap<&'static str, u64>,
    /// Waves its vibrator did not get, by reason (a full queue sheds the
    /// weakest first: `queue_full`).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Answers accepted but still in the aether's outboxes when it ended,
    /// the server unreachable: lost with it.
    pub unsent: u64,
    /// Answers safe in the durable outbox on disk when it ended, the
    /// server unreachable: sent by its next start.
    pub kept: u64,
    /// Orders heard again (a client retrying, a producer sending twice):
    /// answered again with the first answer, the stock untouched.
    pub repeats: u64,
    /// Orders the second decider answered the other way (`[beta.faults]`).
    pub conflicting: u64,
    /// Items whose units the stock's map had not taken when beta ended
    /// (refused for now, its rate limit or a full map): a restart goes on
    /// from their older units.
    pub stock_unsaved: u64,
}

impl std::fmt::Display for BetaReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "service-beta: reserved {}, insufficient {}, outcomes heard {}, ignored {}, \
             rate_limited {}, shaped {}, failed {}, unsent {}, kept {}, repeats {}, conflicting {}, stock left {:?}, \
             stock unsaved {}, refused {}, dropped {}",
            self.reserved,
            self.insufficient,
            self.outcomes_heard,
            self.ignored,
            self.rate_limited,
            self.shaped,
            self.failed,
            self.unsent,
            self.kept,
            self.repeats,
            self.conflicting,
            self.stock,
            self.stock_unsaved,
            refusals::summary(&self.refused),
            aether_ops::drops::summary(&self.dropped)
        )
    }
}

/// An order, as alpha emits it on `orders.created`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Unique on the bus; the correlation key of every wave about it: 1 to
    /// [`refusals::MAX_ORDER_ID_BYTES`] bytes.
    pub order_id: String,
    /// What is ordered: 1 to [`MAX_ITEM_BYTES`] bytes.
    pub item: String,
    /// How many, at least 1.
    pub qty: u64,
}

/// Longest item name of an order, in bytes.
pub const MAX_ITEM_BYTES: usize = 256;

/// Refused: the item name is empty or longer than [`MAX_ITEM_BYTES`].
pub const BAD_ITEM: &str = "bad_item";
/// Refused: a quantity of 0.
pub const BAD_QTY: &str = "bad_qty";

/// The order of a wave on `orders.created`, or why it is none: its payload
/// is not JSON ([`refusals::NOT_JSON`]) or not an order
/// ([`refusals::BAD_FIELDS`]), its order id cannot be a correlation key
/// ([`refusals::BAD_ORDER_ID`]), its item name is empty or too long
/// ([`BAD_ITEM`]), or it orders nothing ([`BAD_QTY`]). An order that passes
/// can always be answered.
pub fn read_order(wave: &Wave) -> Result<Order, Refusal> {
    let order: Order = refusals::read_json(wave)?;
    refusals::check_order_id(&order.order_id)?;
    if order.item.is_empty() || order.item.len() > MAX_ITEM_BYTES {
        return Err(Refusal::new(
            BAD_ITEM,
            format_args!(
                "an item name of {} bytes (1 to {MAX_ITEM_BYTES})",
                order.item.len()
            ),
        ));
    }
    if order.qty == 0 {
        return Err(Refusal::new(BAD_QTY, "a quantity of 0"));
    }
    Ok(order)
}

/// Answers orders on `aether` from the stock of `settings` until
/// `shutdown` (or until the aether is closed); then answers the orders
/// already queued, flushes the aether for at most [`DRAIN`] (so that no
/// answer is left unsent when the program exits), and returns what it did.
/// Its vibrator has the aether's default noise floor and no rate limit;
/// [`run_live`] takes them from `[service]`, and follows changes.
pub async fn run(
    aether: &Aether,
    settings: &BetaSettings,
    shutdown: Shutdown,
) -> Result<BetaReport, BetaError> {
    let program = BetaProgramSettings {
        beta: settings.clone(),
        service: ServiceSettings {
            noise_floor: aether.config().default_noise_floor,
            ..ServiceSettings::default()
        },
        ..BetaProgramSettings::default()
    };
    let (_keep, settings) = watch::channel(Arc::new(program));
    run_live(aether, settings, shutdown).await
}

/// Like [`run`], with the settings in force in `settings` (the receiver of
/// a hot-reload watcher): the vibrator's noise floor and rate limit
/// (`service.noise_floor`, `service.rate_limit_per_s`) change as soon as a
/// new value is published, and each change is logged (`info`). The stock
/// is read once, at start.
pub async fn run_live(
    aether: &Aether,
    settings: watch::Receiver<Arc<BetaProgramSettings>>,
    shutdown: Shutdown,
) -> Result<BetaReport, BetaError> {
    run_live_then(aether, settings, shutdown, None, || {}).await
}

/// [`run_live`], with the stock's ledger in `data` (the program's data
/// folder, `aether_ops::data::DataDir::state`; None: the stock's replica
/// lives in memory), calling `resonating` once beta's resonance holds (the
/// program tells scripts then, and only then, that it listens).
pub async fn run_live_then(
    aether: &Aether,
    mut settings: watch::Receiver<Arc<BetaProgramSettings>>,
    shutdown: Shutdown,
    data: Option<&Path>,
    resonating: impl FnOnce(),
) -> Result<BetaReport, BetaError> {
    let start = Arc::clone(&settings.borrow_and_update());
    let mut beta = Vibrator::create("service-beta", aether).await?;
    start.service.apply_to(&beta)?;
    let mut reliable = start.service.reliable(aether)?;
    let mut reliability = start.service.reliability;
    beta.resonate_in_group(ORDERS, GROUP).await?;
    // Orders heard meanwhile wait in beta's queue.
    let mut ledger = stock::Ledger::open(aether, data).await?;
    let stock = ledger.start(&start.beta.stock).await;
    resonating();
    let shadow = if start.beta.faults.conflict_share > 0.0 {
        tracing::warn!(
            share = start.beta.faults.conflict_share,
            "service-beta: faults on: a second decider answers some orders the other way"
        );
        Some(Vibrator::create("service-beta-shadow", aether).await?)
    } else {
        None
    };
    let mut books = Books {
        report: BetaReport {
            stock,
            ..BetaReport::default()
        },
        ledger,
        refusal_log: RefusalLog::new("service-beta", refusals::WARN_EVERY),
        unsent_log: RefusalLog::new("service-beta", refusals::WARN_EVERY),
        answered: faults::Latest::default(),
        shadow,
        conflict_share: start.beta.faults.conflict_share,
        orders: 0,
    };
    let mut drops = DropWatch::new("service-beta", refusals::WARN_EVERY);
    let mut checks = tokio::time::interval(CHECK_EVERY);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(
        stock = ?books.report.stock,
        noise_floor = start.service.noise_floor,
        rate_limit_per_s = ?start.service.rate_limit_per_s,
        "service-beta resonates on {ORDERS} in group {GROUP}"
    );
    loop {
        let wave = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            Ok(()) = settings.changed() => {
                let new = Arc::clone(&settings.borrow_and_update());
                new.service.apply_to(&beta)?;
                if new.service.reliability != reliability {
                    reliable = new.service.reliable(aether)?;
                    reliability = new.service.reliability;
                }
                tracing::info!(
                    noise_floor = new.service.noise_floor,
                    rate_limit_per_s = ?new.service.rate_limit_per_s,
                    "service-beta settings applied"
                );
                continue;
            }
            _ = checks.tick() => {
                drops.check(&beta.stats());
                books.ledger.save(&books.report.stock).await;
                continue;
            }
            wave = beta.receive() => match wave {
                Some(wave) => wave,
                None => break,
            },
        };
        handle_in_span(&beta, reliable.as_ref(), &mut books, wave).await?;
    }
    // It takes no more orders (a durable one not taken yet comes again, to
    // another member or at the next start), and answers those queued when
    // the shutdown came, within its grace (less the final drain): past it,
    // its rate limit refuses an answer instead of waiting (counted), and the
    // orders still queued are left, not taken.
    let _ = beta.stop_resonating(ORDERS).await;
    let grace = settings.borrow().service.shutdown_grace();
    let deadline = tokio::time::Instant::now() + grace.saturating_sub(DRAIN);
    for _ in 0..beta.queued() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        if let Some(limit) = beta.rate_limit() {
            beta.set_rate_limit(Some(limit.waiting_up_to(left)));
        }
        let Some(wave) = beta.try_receive() else {
            break;
        };
        handle_in_span(&beta, reliable.as_ref(), &mut books, wave).await?;
    }
    if let Err(error) = aether.flush(DRAIN).await {
        tracing::warn!(%error, "answers may be left unsent");
    }
    let mut report = books.report;
    report.stock_unsaved = books.ledger.close(&report.stock).await as u64;
    // What was accepted and has still not left the process when it ends:
    // counted, never lost in silence.
    let left = aether_ops::drops::left_at_exit(aether);
    (report.unsent, report.kept) = (left.unsent, left.kept);
    drops.check(&beta.stats());
    report.dropped = aether_ops::drops::of_service(&beta.stats(), &aether.stats());
    report.shaped = beta.stats().rate_limit_waits;
    tracing::info!("{report}");
    Ok(report)
}

/// [`handle`] in the wave's consumer span, so that the answer continues its
/// trace.
async fn handle_in_span(
    beta: &Vibrator,
    reliable: Option<&Reliable>,
    books: &mut Books,
    wave: Wave,
) -> Result<(), BetaError> {
    let span = beta.span_of(&wave);
    handle(beta, reliable, books, wave).instrument(span).await
}

/// What beta keeps between orders.
struct Books {
    report: BetaReport,
    refusal_log: RefusalLog,
    /// Warns about answers that could not be sent, at most once per interval.
    unsent_log: RefusalLog,
    /// The answers to the latest orders, to answer one heard again the
    /// same way without touching the stock.
    answered: faults::Latest<Wave>,
    /// The second decider, when `[beta.faults] conflict_share` asks for one.
    shadow: Option<Vibrator>,
    conflict_share: f64,
    /// Orders answered, counting from 1: the faults pick among them.
    orders: u64,
    /// The stock's replica.
    ledger: stock::Ledger,
}

/// Emits `answer` with `reliable`; an emit that failed for now (over the
/// rate limit past its wait, the medium failing) is counted, warned about at
/// most once per interval, and `false`.
async fn send(
    beta: &Vibrator,
    reliable: Option<&Reliable>,
    report: &mut BetaReport,
    log: &mut RefusalLog,
    answer: Wave,
) -> Result<bool, BetaError> {
    match reliable::emit_with(reliable, beta, answer).await {
        Ok(_) => Ok(true),
        Err(error) if reliable::failed_for_now(error.kind()) => {
            if error.kind() == EmitErrorKind::RateLimited {
                report.rate_limited += 1;
            } else {
                report.failed += 1;
            }
            if let Some(since) = log.due_now() {
                tracing::warn!(
                    %error,
                    unanswered = since,
                    rate_limited = report.rate_limited,
                    failed = report.failed,
                    "service-beta: {since} orders not answered since the last warning; \
                     the summary and the instance report count them"
                );
            }
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

/// Answers an order, counts an outcome, or ignores anything else; refuses
/// (and counts) a wave on `orders.created` that is no order. Fails only
/// when the aether does (closed, or an emit refused for good).
async fn handle(
    beta: &Vibrator,
    reliable: Option<&Reliable>,
    books: &mut Books,
    wave: Wave,
) -> Result<(), BetaError> {
    let report = &mut books.report;
    match wave.channel().as_str() {
        "orders.created" => {
            let answered = read_order(&wave).and_then(|order| {
                answer(&report.stock, &order)
                    .map(|answer| (order, answer))
                    .map_err(|error| Refusal::new(refusals::BAD_ORDER_ID, error))
            });
            let (order, answer) = match answered {
                Ok(answered) => answered,
                Err(refusal) => {
                    books
                        .refusal_log
                        .refuse(&mut report.refused, refusal, wave.channel().as_str());
                    return Ok(());
                }
            };
            // Heard again: the same answer, the stock untouched.
            if let Some(first) = books.answered.get(&order.order_id) {
                report.repeats += 1;
                send(beta, reliable, report, &mut books.unsent_log, first.clone()).await?;
                return Ok(());
            }
            let reserved = answer.channel().as_str() == "inventory.reserved";
            // Taken from the stock before the emit, given back if it fails.
            if reserved {
                report.reserved += 1;
                if let Some(units) = report.stock.get_mut(&order.item) {
                    *units -= order.qty;
                }
                // Written before the answer leaves: a beta killed after
                // answering never starts again with the units it gave.
                books.ledger.changed(&order.item);
                books.ledger.save(&report.stock).await;
            } else {
                report.insufficient += 1;
            }
            if !send(
                beta,
                reliable,
                report,
                &mut books.unsent_log,
                answer.clone(),
            )
            .await?
            {
                if reserved {
                    report.reserved -= 1;
                    *report.stock.entry(order.item.clone()).or_default() += order.qty;
                    books.ledger.changed(&order.item);
                    books.ledger.save(&report.stock).await;
                } else {
                    report.insufficient -= 1;
                }
                return Ok(());
            }
            books.answered.insert(order.order_id.clone(), answer);
            books.orders += 1;
            // The fault: a second decider answers the other way.
            if let Some(shadow) = &books.shadow
                && faults::picked(books.conflict_share, books.orders, 0.25)
            {
                // The same order id built beta's answer: it builds.
                let other = answer_as(!reserved, &order, 0)?;
                if send(shadow, None, report, &mut books.unsent_log, other).await? {
                    report.conflicting += 1;
                }
            }
        }
        "orders.confirmed" | "orders.cancelled" => {
            tracing::debug!(channel = %wave.channel(), key = wave.correlation_key(), "outcome");
            report.outcomes_heard += 1;
        }
        _ => report.ignored += 1,
    }
    Ok(())
}

/// The answer to `order` from `stock`: `inventory.reserved` when the stock
/// covers it, else `inventory.insufficient` in phase RETRACT. Nothing is
/// taken from the stock here. Fails only for an order [`read_order`]
/// refuses (an order id that cannot be a correlation key).
fn answer(stock: &BTreeMap<String, u64>, order: &Order) -> Result<Wave, WaveError> {
    let available = stock.get(&order.item).copied().unwrap_or(0);
    let reserved = available >= order.qty && available > 0;
    answer_as(reserved, order, available)
}

/// `inventory.reserved` of `order` (with the units `available` before it),
/// or `inventory.insufficient` in phase RETRACT.
fn answer_as(reserved: bool, order: &Order, available: u64) -> Result<Wave, WaveError> {
    if reserved {
        Wave::builder("inventory.reserved")
            .phase(Phase::ASSERT)
            .correlation_key(&order.order_id)
            .json(&json!({
                "order_id": order.order_id,
                "item": order.item,
                "qty": order.qty,
                "left": available.saturating_sub(order.qty),
            }))
            .build()
    } else {
        Wave::builder("inventory.insufficient")
            .phase(Phase::RETRACT)
            .correlation_key(&order.order_id)
            .json(&json!({
                "order_id": order.order_id,
                "item": order.item,
                "qty": order.qty,
                "available": available,
            }))
            .build()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aether_ops::settings::SettingsSource;
    use clap::{Parser, error::ErrorKind};

    use super::*;

    fn parse(line: &str) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("bin").chain(line.split_whitespace()))
    }

    #[test]
    fn parses_options_and_says_what_it_does() {
        assert_eq!(parse("").unwrap(), Options::default());
        assert_eq!(Options::default().config_dir, PathBuf::from("config"));
        let help = parse("--help").unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        let help = help.to_string();
        for words in ["inventory.reserved", "--nats", "--config-dir", "[beta]"] {
            assert!(help.contains(words), "{words}: {help}");
        }
        let options = parse("--nats nats://a:4222 --nats nats://b:4222").unwrap();
        let mut settings = BetaProgramSettings::default();
        options.apply(&mut settings);
        assert_eq!(settings.aether.nats.urls.len(), 2);
        assert!(parse("--what").is_err());
    }

    fn load(toml: &str, vars: &[(&str, &str)]) -> Result<BetaProgramSettings, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("default.toml"), toml).unwrap();
        SettingsSource::new(dir.path(), None, vars.iter().copied()).load()
    }

    #[test]
    fn reads_its_stock_and_tolerates_the_other_programs_sections() {
        let settings = load("", &[]).unwrap();
        assert_eq!(settings.beta, BetaSettings::default());
        let settings = load(
            "[beta]\nstock = { widget = 2 }\n[gateway]\nlisten = \"127.0.0.1:0\"\n[alpha]\nrate_per_s = 1\n",
            &[("AETHER__BETA__STOCK__GADGET", "7")],
        )
        .unwrap();
        assert_eq!(settings.beta.stock.get("widget"), Some(&2));
        assert_eq!(settings.beta.stock.get("gadget"), Some(&7));
        assert!(load("[beta]\nstocks = 1\n", &[]).is_err());
        assert!(load("[betta]\n", &[]).is_err());
    }

    /// An order heard again gets its first answer again, the stock
    /// untouched; with `conflict_share`, a second decider answers the
    /// picked orders the other way.
    #[tokio::test]
    async fn repeats_are_answered_alike_and_the_shadow_decider_disagrees() {
        let aether = Aether::default();
        let shutdown = Shutdown::new();
        let settings = BetaSettings {
            stock: [("gadget".to_string(), 1)].into_iter().collect(),
            faults: BetaFaults {
                conflict_share: 0.5,
            },
        };
        let mut shop = Vibrator::create("shop", &aether).await.unwrap();
        shop.resonate_on("inventory.*").await.unwrap();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let beta = tokio::spawn({
            let (aether, shutdown) = (aether.clone(), shutdown.clone());
            let program = BetaProgramSettings {
                beta: settings,
                ..BetaProgramSettings::default()
            };
            let (_keep, settings) = watch::channel(Arc::new(program));
            async move {
                run_live_then(&aether, settings, shutdown, None, || {
                    let _ = ready_tx.send(());
                })
                .await
                .unwrap()
            }
        });
        ready.await.unwrap();
        let order = |n: u32| json!({"order_id": format!("o-{n}"), "item": "gadget", "qty": 1});
        // o-1 twice (a retry), then o-2: the stock of one gadget goes to o-1.
        for order in [order(1), order(1), order(2)] {
            shop.emit_wave("orders.created", order).await.unwrap();
        }
        let mut heard = Vec::new();
        while heard.len() < 4 {
            let wave = tokio::time::timeout(Duration::from_secs(5), shop.receive())
                .await
                .expect("answers")
                .unwrap();
            heard.push((
                wave.correlation_key().to_string(),
                wave.channel().as_str().to_string(),
                wave.source().unwrap_or_default().to_string(),
            ));
        }
        let answer = |key: &str, channel: &str, source: &str| {
            (key.to_string(), channel.to_string(), source.to_string())
        };
        assert_eq!(
            heard,
            [
                answer("o-1", "inventory.reserved", "service-beta"),
                answer("o-1", "inventory.reserved", "service-beta"),
                answer("o-2", "inventory.insufficient", "service-beta"),
                // The second order beta answered is picked (share 0.5).
                answer("o-2", "inventory.reserved", "service-beta-shadow"),
            ]
        );
        shutdown.trigger();
        let report = beta.await.unwrap();
        assert_eq!(
            (
                report.reserved,
                report.insufficient,
                report.repeats,
                report.conflicting
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(report.stock["gadget"], 0);
    }

    /// Beta started again on its data folder goes on from the stock it
    /// left (its ledger), not from its settings; a replica of the map
    /// reads each beta's units.
    #[tokio::test]
    async fn the_stock_goes_on_from_its_ledger_after_a_restart() {
        let data = tempfile::tempdir().unwrap();
        let settings = BetaSettings {
            stock: [("gadget".to_string(), 2)].into_iter().collect(),
            ..BetaSettings::default()
        };
        let mut answers = Vec::new();
        for run in 0..2 {
            let aether = Aether::new(AetherConfig {
                report: aether_core::config::ReportConfig {
                    interval: std::time::Duration::ZERO,
                    instance: Some("beta-1".into()),
                },
                ..AetherConfig::default()
            })
            .unwrap();
            let shutdown = Shutdown::new();
            let mut shop = Vibrator::create("shop", &aether).await.unwrap();
            shop.resonate_on("inventory.*").await.unwrap();
            let (ready_tx, ready) = tokio::sync::oneshot::channel();
            let beta = tokio::spawn({
                let (aether, shutdown, dir) =
                    (aether.clone(), shutdown.clone(), data.path().to_path_buf());
                let program = BetaProgramSettings {
                    beta: settings.clone(),
                    ..BetaProgramSettings::default()
                };
                let (_keep, settings) = watch::channel(Arc::new(program));
                async move {
                    run_live_then(&aether, settings, shutdown, Some(&dir), || {
                        let _ = ready_tx.send(());
                    })
                    .await
                    .unwrap()
                }
            });
            ready.await.unwrap();
            let order = json!({"order_id": format!("o-{run}"), "item": "gadget", "qty": 2 - run});
            shop.emit_wave("orders.created", order).await.unwrap();
            let wave = tokio::time::timeout(Duration::from_secs(5), shop.receive())
                .await
                .expect("an answer")
                .unwrap();
            answers.push(wave.channel().as_str().to_string());
            let reader = aether_core::state::StateMap::open(&aether, stock::MAP)
                .await
                .unwrap();
            let units = reader.get("node/beta-1/gadget");
            shutdown.trigger();
            let report = beta.await.unwrap();
            assert_eq!(report.stock_unsaved, 0);
            assert_eq!(units.as_deref(), Some(&b"0"[..]), "run {run}");
        }
        // The first run took both gadgets; the second started with none.
        assert_eq!(answers, ["inventory.reserved", "inventory.insufficient"]);
    }

    #[tokio::test]
    async fn reserves_until_the_stock_runs_out_then_refuses_in_retract() {
        let aether = Aether::default();
        let shutdown = Shutdown::new();
        let settings = BetaSettings {
            stock: [("gadget".to_string(), 2)].into_iter().collect(),
            ..BetaSettings::default()
        };
        let beta = tokio::spawn({
            let (aether, shutdown) = (aether.clone(), shutdown.clone());
            async move { run(&aether, &settings, shutdown).await.unwrap() }
        });
        let mut shop = Vibrator::create("shop", &aether).await.unwrap();
        shop.resonate_on("inventory.*").await.unwrap();
        let mut answers = Vec::new();
        for (n, item) in ["gadget", "gadget", "gadget", "widget"].iter().enumerate() {
            let order = json!({"order_id": format!("o-{n}"), "item": item, "qty": 1});
            // Beta may not resonate yet: emit until it answers.
            let answer = loop {
                shop.emit_wave("orders.created", order.clone())
                    .await
                    .unwrap();
                if let Ok(answer) =
                    tokio::time::timeout(Duration::from_millis(100), shop.receive()).await
                {
                    break answer.unwrap();
                }
            };
            assert_eq!(answer.correlation_key(), format!("o-{n}"));
            answers.push((answer.channel().as_str().to_string(), answer.phase()));
        }
        assert_eq!(
            answers,
            vec![
                ("inventory.reserved".to_string(), Phase::ASSERT),
                ("inventory.reserved".to_string(), Phase::ASSERT),
                ("inventory.insufficient".to_string(), Phase::RETRACT),
                ("inventory.insufficient".to_string(), Phase::RETRACT),
            ]
        );
        shutdown.trigger();
        let report = tokio::time::timeout(Duration::from_secs(5), beta)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((report.reserved, report.insufficient), (2, 2));
        assert_eq!(report.stock.get("gadget"), Some(&0));
    }
}
