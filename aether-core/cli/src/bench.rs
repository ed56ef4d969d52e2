//! `bench`: emit/receive and request/reply against the server named (or
//! the embedded medium), reported as the project's benchmarks report: rates,
//! latency percentiles, loss.

use std::time::{Duration, Instant};

use aether_core::{Aether, Vibrator, Wave};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::{
    Failure,
    cli::{BenchArgs, BenchMode, Connection},
    connect::{config, connect},
};

/// Percentiles of `samples` (milliseconds): p50, p90, p99, max.
fn percentiles(samples: &mut [f64]) -> [f64; 4] {
    if samples.is_empty() {
        return [f64::NAN; 4];
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    [at(0.5), at(0.9), at(0.99), samples[samples.len() - 1]]
}

fn progress(count: u64) -> ProgressBar {
    let bar = ProgressBar::new(count);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Shown only on a terminal, and only for runs long enough to watch.
    if count < 10_000 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

pub async fn run(connection: &Connection, args: BenchArgs) -> Result<(), Failure> {
    if args.count == 0 {
        return Err(Failure::usage("--count is at least 1"));
    }
    if args.size > 1 << 20 {
        return Err(Failure::usage("--size is at most 1 MiB (the largest wave)"));
    }
    let (aether, medium) = if args.embedded {
        (Aether::default(), "embedded".to_string())
    } else {
        let urls = config(connection).await?.0.nats.redacted_urls().join(", ");
        (connect(connection).await?, urls)
    };
    let channel = args
        .channel
        .clone()
        .unwrap_or_else(|| format!("bench.{}", std::process::id()));
    aether_core::Channel::new(channel.as_str())
        .validate()
        .map_err(|e| Failure::usage(format!("--channel {channel:?}: {e}")))?;
    match args.mode {
        BenchMode::Emit => emit(&aether, &medium, &channel, &args).await,
        BenchMode::Request => request(&aether, &medium, &channel, &args).await,
    }
}

async fn emit(
    aether: &Aether,
    medium: &str,
    channel: &str,
    args: &BenchArgs,
) -> Result<(), Failure> {
    let capacity = usize::try_from(args.count)
        .unwrap_or(usize::MAX)
        .min(1_000_000);
    let mut receiver = Vibrator::builder("bench-receiver")
        .queue_capacity(capacity)
        .create(aether)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    receiver
        .resonate_on(channel)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let sender =
        Vibrator::new("bench-sender", aether).map_err(|e| Failure::runtime(e.to_string()))?;
    let payload = Bytes::from(vec![b'x'; args.size]);
    let count = args.count;
    let bar = progress(count);
    let receiving = {
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(capacity);
            let mut last = Instant::now();
            // Until every wave came, or nothing came for 2 s.
            while (latencies.len() as u64) < count {
                match tokio::time::timeout(Duration::from_secs(2), receiver.receive()).await {
                    Ok(Some(wave)) => {
                        let age = wave
                            .emitted_at()
                            .and_then(|at| std::time::SystemTime::now().duration_since(at).ok())
                            .unwrap_or_default();
                        latencies.push(age.as_secs_f64() * 1000.0);
                        last = Instant::now();
                        if latencies.len() % 1024 == 0 {
                            bar.set_position(latencies.len() as u64);
                        }
                    }
                    _ => break,
                }
            }
            (latencies, last)
        })
    };
    let started = Instant::now();
    for _ in 0..count {
        sender
            .emit(Wave::new(channel, payload.clone()))
            .await
            .map_err(|e| Failure::runtime(format!("emit: {e}")))?;
    }
    let _ = aether.flush(Duration::from_secs(30)).await;
    let sent_in = started.elapsed();
    let (mut latencies, last) = receiving
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    bar.finish_and_clear();
    let received_in = last.duration_since(started);
    let received = latencies.len() as u64;
    let [p50, p90, p99, max] = percentiles(&mut latencies);
    let lost = count - received;
    let stats = aether.stats();
    let drops: Vec<String> = stats
        .drops()
        .filter(|(_, n)| *n > 0)
        .map(|(reason, n)| format!("{} {n}", reason.as_str()))
        .collect();
    let sent_rate = count as f64 / sent_in.as_secs_f64();
    let received_rate = received as f64 / received_in.as_secs_f64().max(1e-9);
    if args.json {
        println!(
            "{}",
            json!({
                "mode": "emit", "medium": medium, "count": count, "size": args.size,
                "sent_per_s": sent_rate, "received_per_s": received_rate,
                "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "max": max},
                "received": received, "lost": lost,
            })
        );
    } else {
        println!(
            "emit/receive: {count} waves of {} bytes on {channel}, {medium}",
            args.size
        );
        println!(
            "  sent      {count} in {:.3} s: {:.0} waves/s",
            sent_in.as_secs_f64(),
            sent_rate
        );
        println!(
            "  received  {received} in {:.3} s: {:.0} waves/s",
            received_in.as_secs_f64(),
            received_rate
        );
        println!("  latency   p50 {p50:.3} ms  p90 {p90:.3} ms  p99 {p99:.3} ms  max {max:.3} ms");
        println!(
            "  loss      {lost} ({:.2}%){}",
            lost as f64 * 100.0 / count as f64,
            if drops.is_empty() {
                String::new()
            } else {
                format!("  dropped here: {}", drops.join(", "))
            }
        );
    }
    if lost > 0 {
        return Err(Failure::runtime(format!(
            "{lost} of {count} waves did not arrive"
        )));
    }
    Ok(())
}

async fn request(
    aether: &Aether,
    medium: &str,
    channel: &str,
    args: &BenchArgs,
) -> Result<(), Failure> {
    let mut replier =
        Vibrator::new("bench-replier", aether).map_err(|e| Failure::runtime(e.to_string()))?;
    replier
        .resonate_on(channel)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let answering = tokio::spawn(async move {
        while let Some(request) = replier.receive().await {
            let payload = request.payload_bytes().clone();
            let _ = replier.reply(&request, payload).await;
        }
    });
    let requester =
        Vibrator::new("bench-requester", aether).map_err(|e| Failure::runtime(e.to_string()))?;
    let payload = Bytes::from(vec![b'x'; args.size]);
    let bar = progress(args.count);
    let mut latencies = Vec::with_capacity(usize::try_from(args.count).unwrap_or(0).min(1_000_000));
    let mut failed = 0u64;
    let started = Instant::now();
    for n in 0..args.count {
        let at = Instant::now();
        match requester
            .request_with_timeout(Wave::new(channel, payload.clone()), Duration::from_secs(5))
            .await
        {
            Ok(_) => latencies.push(at.elapsed().as_secs_f64() * 1000.0),
            Err(_) => failed += 1,
        }
        if n % 256 == 0 {
            bar.set_position(n);
        }
    }
    let took = started.elapsed();
    bar.finish_and_clear();
    answering.abort();
    let rate = latencies.len() as f64 / took.as_secs_f64();
    let [p50, p90, p99, max] = percentiles(&mut latencies);
    if args.json {
        println!(
            "{}",
            json!({
                "mode": "request", "medium": medium, "count": args.count, "size": args.size,
                "requests_per_s": rate,
                "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "max": max},
                "failed": failed,
            })
        );
    } else {
        println!(
            "request/reply: {} requests of {} bytes, one at a time, on {channel}, {medium}",
            args.count, args.size
        );
        println!(
            "  answered  {} in {:.3} s: {rate:.0} requests/s",
            latencies.len(),
            took.as_secs_f64()
        );
        println!("  latency   p50 {p50:.3} ms  p90 {p90:.3} ms  p99 {p99:.3} ms  max {max:.3} ms");
        println!("  failed    {failed}");
    }
    if failed > 0 {
        return Err(Failure::runtime(format!(
            "{failed} of {} requests failed",
            args.count
        )));
    }
    Ok(())
}
