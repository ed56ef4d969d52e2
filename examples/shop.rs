//! The sample shop, whole, in one process on the embedded medium:
//! `aether-service-alpha` orders, `aether-service-beta` reserves stock or
//! refuses, alpha confirms or cancels, and the gateway observes it all and
//! serves its metrics and dashboard.
//!
//! ```bash
//! cargo run --example shop                  # until Ctrl-C; open the printed URL
//! cargo run --example shop -- --seconds 5   # a bounded run, then the summary
//! cargo run --example shop -- --faults      # with a retry storm, duplicates and two deciders
//! ```
//!
//! At the end it prints what each service did and what the gateway
//! observed, checks that they agree and that the flow happened (at least
//! one order confirmed and one cancelled: the default stock has 3 gadgets,
//! gone after about 2 s at 5 orders per second), and exits with status 0,
//! or 1 when they do not.
//!
//! With `--faults`, alpha retries one order in twenty without backoff and
//! sends another one in twenty twice, and a second decider answers one
//! order in twenty the other way; the gateway's physics engine must find
//! each (a standing wave, constructive interference, a cancellation), and
//! without `--faults` it must find none.

use std::{
    error::Error,
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use aether_core::{Aether, AetherConfig};
use aether_gateway::{Gateway, GatewayConfig};
use aether_ops::shutdown::Shutdown;
use aether_service_alpha::{AlphaReport, AlphaSettings};
use aether_service_beta::{BetaReport, BetaSettings};
use clap::Parser;

/// The command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "shop",
    about = "Runs aether-service-alpha (orders), aether-service-beta (inventory) and the \
aether-gateway (metrics and dashboard) together, in one process on the embedded medium.",
    after_help = "It runs until SIGINT (Ctrl-C) or SIGTERM, or for --seconds, then prints a \
summary and exits with status 0 when the flow happened and the counts agree, 1 otherwise."
)]
struct Options {
    /// Stop after this many seconds, 0 or more (default: at Ctrl-C).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = seconds)]
    seconds: Option<Duration>,
    /// Orders per second, above 0 and at most 10,000.
    #[arg(
        long,
        value_name = "R",
        default_value_t = 5.0,
        allow_negative_numbers = true
    )]
    rate: f64,
    /// Where the gateway serves HTTP (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    listen: SocketAddr,
    /// Make faults on purpose, for the dashboard's interference panel: a
    /// retry storm, duplicates and conflicting answers, each on one order
    /// in twenty.
    #[arg(long)]
    faults: bool,
}

/// `--seconds`: a number of seconds, 0 or more. (A negative one reaches
/// this, and is refused with this message, rather than being taken for an
/// option.)
fn seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .ok_or_else(|| format!("must be a number of seconds, 0 or more, not {text}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    match shop(options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The value of `series` on the gateway's metrics page (0 if absent).
fn metric(gateway: &Gateway, series: &str) -> u64 {
    gateway
        .metrics_text()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == series).then(|| value.parse::<f64>().ok())?
        })
        .map_or(0, |value| value as u64)
}

/// What the gateway counted for `family`.
fn observed(gateway: &Gateway, family: &str) -> u64 {
    metric(
        gateway,
        &format!("aether_gateway_waves_observed_total{{family=\"{family}\"}}"),
    )
}

/// The interference patterns, and the fault each one shows in this shop.
const PATTERNS: [(&str, &str); 3] = [
    ("standing_wave", "the retry storm"),
    ("constructive", "the duplicates"),
    ("cancellation", "the conflicting answers"),
];

/// The interference events the gateway's engine found, by pattern.
fn interference(gateway: &Gateway) -> [u64; 3] {
    PATTERNS.map(|(pattern, _)| {
        metric(
            gateway,
            &format!("aether_interference_events_total{{pattern=\"{pattern}\"}}"),
        )
    })
}

const FAMILIES: [&str; 5] = [
    "orders.created",
    "inventory.reserved",
    "inventory.insufficient",
    "orders.confirmed",
    "orders.cancelled",
];

/// What the gateway should have counted, family by family (the answers to
/// repeated orders, and the second decider's, in either inventory family:
/// their sum is checked).
fn expected(alpha: &AlphaReport, beta: &BetaReport) -> [u64; 5] {
    [
        alpha.created + alpha.duplicated + alpha.retried,
        beta.reserved,
        beta.insufficient,
        alpha.confirmed,
        alpha.cancelled,
    ]
}

/// Whether the gateway's counts `seen` agree with `want`.
fn agree(seen: &[u64; 5], want: &[u64; 5], beta: &BetaReport) -> bool {
    let extra = beta.repeats + beta.conflicting;
    if extra == 0 {
        return seen == want;
    }
    seen[0] == want[0] && seen[3..] == want[3..] && seen[1] + seen[2] == want[1] + want[2] + extra
}

async fn shop(options: Options) -> Result<bool, Box<dyn Error + Send + Sync>> {
    let mut alpha_settings = AlphaSettings {
        rate_per_s: options.rate,
        ..AlphaSettings::default()
    };
    let mut beta_settings = BetaSettings::default();
    if options.faults {
        alpha_settings.faults.retry_storm_share = aether_service_alpha::faults::DEMO_SHARE;
        alpha_settings.faults.duplicate_share = aether_service_alpha::faults::DEMO_SHARE;
        beta_settings.faults.conflict_share = aether_service_beta::faults::DEMO_SHARE;
    }
    aether_ops::settings::Validate::validate(&alpha_settings)?;
    let signals = Shutdown::on_signals()?;
    // Beta's two answers interfere as one channel, as in config/default.toml:
    // two deciders answering one order both ways cancel.
    let mut aether_config = AetherConfig::default();
    aether_config.physics.correlate = vec!["inventory.*".into()];
    // It reports what it does every second, as the shipped settings make
    // the programs do: the dashboard's Instances and Replicated maps panels.
    aether_config.report.interval = std::time::Duration::from_millis(1000);
    aether_config.report.instance = Some("shop".into());
    let aether = Aether::new(aether_config)?;
    let mut config = GatewayConfig {
        listen: options.listen,
        ..GatewayConfig::default()
    };
    // The collaborative pages, on the browser bridge.
    config.bridge.maps = vec!["board".into(), "kanban".into(), "notebook".into()];
    let gateway = Gateway::start(&aether, config, Shutdown::new()).await?;
    println!(
        "shop: dashboard http://{addr}/  metrics http://{addr}/metrics  stock {:?}",
        beta_settings.stock,
        addr = gateway.addr()
    );
    if let Some(token) = gateway.bridge_token() {
        println!(
            "shop: collaborative board http://{}/board#token={token}",
            gateway.addr()
        );
        for page in ["kanban", "notebook"] {
            println!(
                "shop: {page} http://{}/{page}#token={token}",
                gateway.addr()
            );
        }
    }
    let stop_beta = Shutdown::new();
    let beta = tokio::spawn({
        let (aether, stop) = (aether.clone(), stop_beta.clone());
        async move { aether_service_beta::run(&aether, &beta_settings, stop).await }
    });
    let stop_alpha = Shutdown::new();
    let alpha = tokio::spawn({
        let (aether, stop) = (aether.clone(), stop_alpha.clone());
        async move { aether_service_alpha::run(&aether, &alpha_settings, stop).await }
    });
    match options.seconds {
        Some(seconds) => tokio::select! {
            () = signals.wait() => {}
            () = tokio::time::sleep(seconds) => {}
        },
        None => {
            println!("shop: running until Ctrl-C");
            signals.wait().await;
        }
    }
    // Alpha first (it stops ordering and waits for the answers due), then
    // beta, then the gateway once it has seen everything.
    stop_alpha.trigger();
    let alpha = alpha.await??;
    stop_beta.trigger();
    let beta = beta.await??;
    let want = expected(&alpha, &beta);
    let counted = || FAMILIES.map(|family| observed(&gateway, family));
    let deadline = Instant::now() + Duration::from_secs(3);
    while !agree(&counted(), &want, &beta) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = counted();
    let agreed = agree(&seen, &want, &beta);
    // The engine looks at what it observed every 10 ms.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let events = interference(&gateway);
    println!("{alpha}");
    println!("{beta}");
    println!("gateway observed:");
    for ((family, seen), want) in FAMILIES.iter().zip(seen).zip(want) {
        if seen == want || agreed {
            println!("  {family:<24} {seen}");
        } else {
            println!("  {family:<24} {seen}  (expected {want})");
        }
    }
    println!("interference found:");
    for ((pattern, fault), n) in PATTERNS.iter().zip(events) {
        println!("  {pattern:<24} {n}  ({fault})");
    }
    gateway.stop().await?;
    aether.close();

    let mut problems = Vec::new();
    if alpha.confirmed == 0 {
        problems.push("no order was confirmed".to_string());
    }
    if alpha.cancelled == 0 {
        problems.push(
            "no order was cancelled (the gadgets run out after about 2 s: run longer)".to_string(),
        );
    }
    if (alpha.confirmed, alpha.cancelled) != (beta.reserved, beta.insufficient) {
        problems.push("alpha's outcomes do not match beta's answers".to_string());
    }
    if alpha.confirmed + alpha.cancelled + alpha.unanswered != alpha.created {
        problems.push("alpha's orders do not add up".to_string());
    }
    if !agreed {
        problems.push("the gateway's counts differ from the services'".to_string());
    }
    let faults_made = [alpha.retried, alpha.duplicated, beta.conflicting];
    for (((pattern, fault), n), made) in PATTERNS.iter().zip(events).zip(faults_made) {
        if options.faults && made > 0 && n == 0 {
            problems.push(format!("{fault} made no {pattern} event"));
        }
        if !options.faults && n > 0 {
            problems.push(format!("the plain flow made {n} {pattern} events"));
        }
    }
    for problem in &problems {
        eprintln!("shop: {problem}");
    }
    Ok(problems.is_empty())
}

#[cfg(test)]
mod tests {
    use clap::{Parser, error::ErrorKind};

    use super::*;

    fn parse(line: &str) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("shop").chain(line.split_whitespace()))
    }

    /// Negative numbers are values, not options: `--seconds -5` reaches
    /// its own check, `--rate -5` alpha's settings check.
    #[test]
    fn negative_numbers_reach_the_checks() {
        for line in ["--seconds -5", "--seconds inf", "--seconds x"] {
            let refusal = parse(line).unwrap_err();
            assert_eq!(refusal.kind(), ErrorKind::ValueValidation, "{line}");
            assert!(
                refusal.to_string().contains("0 or more"),
                "{line}: {refusal}"
            );
        }
        assert_eq!(
            parse("--seconds 1.5").unwrap().seconds,
            Some(Duration::from_millis(1_500))
        );
        let rate = parse("--rate -5").unwrap().rate;
        let settings = AlphaSettings {
            rate_per_s: rate,
            ..AlphaSettings::default()
        };
        let refusal = aether_ops::settings::Validate::validate(&settings).unwrap_err();
        assert!(refusal.to_string().contains("must be above 0"), "{refusal}");
    }
}
