//! `listen`, `emit`, `request` and `reply`.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use aether_core::{Aether, Channel, EmitErrorKind, Vibrator, Wave, WaveBuilder};
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::{
    Failure,
    cli::{Connection, EmitArgs, ListenArgs, ReplyArgs, RequestArgs, WaveArgs},
    connect::connect,
    show,
};

/// A vibrator of this tool, named `--name`.
async fn vibrator(aether: &Aether, connection: &Connection) -> Result<Vibrator, Failure> {
    Vibrator::builder(connection.name.clone())
        .queue_capacity(65_536)
        .create(aether)
        .await
        .map_err(|e| Failure::usage(format!("--name {:?}: {e}", connection.name)))
}

fn channel(text: &str) -> Result<Channel, Failure> {
    let channel = Channel::new(text);
    channel
        .validate()
        .map_err(|e| Failure::usage(format!("channel {text:?}: {e}")))?;
    Ok(channel)
}

pub async fn listen(connection: &Connection, args: ListenArgs) -> Result<(), Failure> {
    if !(0.0..=1.0).contains(&args.noise_floor) {
        return Err(Failure::usage("--noise-floor is in [0, 1]"));
    }
    let pattern = channel(&args.pattern)?;
    let aether = connect(connection).await?;
    let mut vibrator = Vibrator::builder(connection.name.clone())
        .queue_capacity(65_536)
        .noise_floor(args.noise_floor)
        .create(&aether)
        .await
        .map_err(|e| Failure::usage(format!("{e}")))?;
    let resonated = match &args.group {
        Some(group) => vibrator.resonate_in_group(pattern, group).await,
        None => vibrator.resonate_on(pattern).await,
    };
    resonated.map_err(|e| Failure::usage(format!("cannot listen on {:?}: {e}", args.pattern)))?;
    eprintln!("listening on {} (Ctrl-C stops)", show::safe(&args.pattern));
    let stop = Interruption::watch()?;
    // Waves this listener did not get (its queue full while the output
    // lags, or refused on arrival) are said on stderr as they happen, once
    // a second at most, by a task of their own (printing the waves may
    // block on a slow reader), and in all at the end.
    let said = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = tokio::spawn({
        let (aether, said) = (aether.clone(), Arc::clone(&said));
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let before = said.load(Ordering::Acquire);
                said.store(say_drops(&aether, before, false), Ordering::Release);
            }
        }
    });
    let mut heard: u64 = 0;
    let outcome = loop {
        if args.count.is_some_and(|n| heard >= n) {
            break Ok(());
        }
        let wave = tokio::select! {
            wave = vibrator.receive() => wave,
            // Ctrl-C is how a listener ends: not a failure.
            () = stop.wait() => break Ok(()),
        };
        let Some(wave) = wave else {
            break Err(Failure::runtime("the connection closed"));
        };
        heard += 1;
        if args.json {
            println!("{}", show::json_line(&show::wave_json(&wave)));
        } else {
            println!("{}", show::wave_text(&wave));
        }
    };
    watcher.abort();
    say_drops(&aether, said.load(Ordering::Acquire), true);
    if stop.signal().is_some() {
        let left = vibrator.queued();
        let unprinted = match left {
            0 => String::new(),
            n => format!(", {n} more received and not printed (it stopped first)"),
        };
        eprintln!(
            "heard {heard} wave{}{unprinted}",
            if heard == 1 { "" } else { "s" }
        );
    }
    outcome
}

/// Says on stderr the waves this process dropped since `said` were
/// counted (by reason), or at the `end`, all of them if any; returns the
/// count said.
fn say_drops(aether: &aether_core::Aether, said: u64, end: bool) -> u64 {
    let stats = aether.stats();
    let total = stats.dropped_total();
    if total == 0 || (total == said && !end) {
        return total;
    }
    let reasons: Vec<String> = stats
        .drops()
        .filter(|(_, n)| *n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    if end {
        eprintln!("dropped {total} waves in all ({})", reasons.join(", "));
    } else {
        eprintln!(
            "dropped {} more waves ({} in all: {}): queue_full means this listener falls behind \
             what comes (its output is slower than the bus)",
            total - said,
            total,
            reasons.join(", ")
        );
    }
    total
}

/// A wave of `args` on `channel` with `payload`.
fn wave(channel: &Channel, args: &WaveArgs, payload: Bytes) -> Result<Wave, Failure> {
    let phase = show::parse_phase(&args.phase).map_err(Failure::usage)?;
    let mut builder: WaveBuilder = Wave::builder(channel.clone())
        .amplitude(args.amplitude)
        .phase(phase)
        .decay_per_s(args.decay)
        .payload(payload);
    if let Some(key) = &args.key {
        builder = builder.correlation_key(key);
    }
    builder.build().map_err(|e| Failure::usage(format!("{e}")))
}

pub async fn emit(connection: &Connection, args: EmitArgs) -> Result<(), Failure> {
    let target = channel(&args.channel)?;
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        return Err(Failure::usage(
            "--rate is a number of waves a second, above 0",
        ));
    }
    // The first wave is built before connecting: a bad option fails at once.
    let first = args.payload.as_deref().map(show::payload_of);
    wave(&target, &args.wave, first.clone().unwrap_or_default())?;
    let aether = connect(connection).await?;
    let vibrator = vibrator(&aether, connection).await?;
    let stop = Interruption::watch()?;
    let gap = args.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut tick = gap.map(tokio::time::interval);
    let mut sent: u64 = 0;
    let mut empty: u64 = 0;
    let mut send = async |payload: Bytes| -> Result<(), Failure> {
        for _ in 0..args.count {
            stop.check()?;
            if let Some(tick) = tick.as_mut() {
                tick.tick().await;
            }
            let wave = wave(&target, &args.wave, payload.clone())?;
            emit_waiting(&vibrator, wave, args.wait)
                .await
                .map_err(|e| Failure::runtime(format!("emit on {}: {e}", args.channel)))?;
            sent += 1;
        }
        Ok(())
    };
    let outcome = match first {
        Some(payload) => send(payload).await,
        None => {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            let mut number: u64 = 0;
            loop {
                let line = tokio::select! {
                    line = lines.next_line() => line,
                    () = stop.wait() => break stop.check(),
                };
                number += 1;
                match line {
                    Ok(Some(line)) if line.is_empty() => empty += 1,
                    Ok(Some(line)) => {
                        if let Err(mut failure) = send(show::payload_of(&line)).await {
                            if stop.signal().is_none() {
                                // Which line, and that the rest is not sent.
                                failure.message = format!(
                                    "line {number} of standard input: {}; the lines after it \
                                     were not read",
                                    failure.message
                                );
                            }
                            break Err(failure);
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(Failure::runtime(format!("reading standard input: {e}"))),
                }
            }
        }
    };
    // Every accepted wave leaves before the process does, or is counted as
    // abandoned. A signal during the wait stops it.
    let waiting = aether.connection().unsent();
    if waiting > 0 && stop.signal().is_some() {
        eprintln!(
            "interrupted: waiting up to {:?} for {waiting} unsent waves (again to abandon them)",
            args.wait
        );
    }
    let wait_started = tokio::time::Instant::now();
    tokio::select! {
        _ = aether.flush(args.wait) => {}
        () = stop.wait_again() => {}
    }
    let waited = wait_started.elapsed();
    let unsent = aether.connection().unsent();
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    if unsent > 0 {
        let cause = match &outcome {
            Err(failure) => format!("{}; ", failure.message()),
            Ok(()) => String::new(),
        };
        let status = match &outcome {
            Err(failure) if stop.signal().is_some() => failure.status,
            _ => 1,
        };
        return Err(Failure {
            message: format!(
                "{cause}{sent} wave{} accepted on {}, {unsent} not sent after waiting {:.1?} for \
                 the connection: abandoned",
                plural(sent),
                args.channel,
                waited.min(args.wait)
            ),
            status,
        });
    }
    if let Err(failure) = outcome {
        if stop.signal().is_some() {
            // Interrupted, and nothing left unsent: say what it did.
            eprintln!(
                "emitted {sent} wave{} on {}, all sent",
                plural(sent),
                args.channel
            );
        }
        return Err(failure);
    }
    let skipped = match empty {
        0 => String::new(),
        n => format!(" ({n} empty line{} skipped)", plural(n)),
    };
    eprintln!(
        "emitted {sent} wave{} on {}{skipped}",
        plural(sent),
        args.channel
    );
    Ok(())
}

/// SIGINT or SIGTERM while emitting: the emits stop, what was accepted gets
/// up to `--wait` to leave, and the tool says how many it sent and
/// abandoned, exiting 130 (SIGINT) or 143 (SIGTERM). A second signal ends
/// the wait.
struct Interruption {
    /// The signal's number, 0 until one came.
    signal: Arc<AtomicU8>,
    /// How many came.
    count: Arc<AtomicU8>,
    notify: Arc<tokio::sync::Notify>,
}

impl Interruption {
    fn watch() -> Result<Self, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind| {
            signal(kind).map_err(|e| Failure::runtime(format!("cannot watch for signals: {e}")))
        };
        let (mut int, mut term) = (
            listen(SignalKind::interrupt())?,
            listen(SignalKind::terminate())?,
        );
        let this = Self {
            signal: Arc::new(AtomicU8::new(0)),
            count: Arc::new(AtomicU8::new(0)),
            notify: Arc::new(tokio::sync::Notify::new()),
        };
        let (signal, count, notify) = (
            Arc::clone(&this.signal),
            Arc::clone(&this.count),
            Arc::clone(&this.notify),
        );
        tokio::spawn(async move {
            loop {
                let number = tokio::select! {
                    Some(()) = int.recv() => 2,
                    Some(()) = term.recv() => 15,
                    else => return,
                };
                let _ = signal.compare_exchange(0, number, Ordering::AcqRel, Ordering::Acquire);
                count.fetch_add(1, Ordering::AcqRel);
                notify.notify_waiters();
            }
        });
        Ok(this)
    }

    /// The signal that came, if one did.
    fn signal(&self) -> Option<u8> {
        match self.signal.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }

    /// Fails once a signal came: status 128 + its number.
    fn check(&self) -> Result<(), Failure> {
        match self.signal() {
            None => Ok(()),
            Some(n) => Err(Failure {
                message: format!(
                    "interrupted by {}",
                    if n == 2 { "SIGINT" } else { "SIGTERM" }
                ),
                status: 128 + n,
            }),
        }
    }

    /// Until a signal comes (at once if one came).
    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.signal().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Until a signal beyond the first comes.
    async fn wait_again(&self) {
        loop {
            let notified = self.notify.notified();
            if self.count.load(Ordering::Acquire) >= 2 {
                return;
            }
            notified.await;
        }
    }
}

/// Emits `wave`, waiting up to `wait` while the outbox is full (the
/// connection is down and the outbox took all it may).
async fn emit_waiting(
    vibrator: &Vibrator,
    wave: Wave,
    wait: Duration,
) -> Result<(), aether_core::EmitError> {
    let start = tokio::time::Instant::now();
    loop {
        match vibrator.emit(wave.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == EmitErrorKind::OutboxFull && start.elapsed() < wait => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

pub async fn request(connection: &Connection, args: RequestArgs) -> Result<(), Failure> {
    let target = channel(&args.channel)?;
    let request = wave(&target, &args.wave, show::payload_of(&args.payload))?;
    let aether = connect(connection).await?;
    let vibrator = vibrator(&aether, connection).await?;
    let reply = vibrator
        .request_with_timeout(request, args.timeout)
        .await
        .map_err(|e| {
            let hint = match e.kind() {
                aether_core::RequestErrorKind::NoResponders => format!(
                    "\n  nobody answers on {}: start a replier (`aether reply {} --payload ...`) or check the channel",
                    args.channel, args.channel
                ),
                aether_core::RequestErrorKind::TimedOut => format!(
                    "\n  no reply within {:?}: the replier may be slow (--timeout), or gone",
                    args.timeout
                ),
                _ => String::new(),
            };
            Failure::runtime(format!("request on {}: {e}{hint}", args.channel))
        })?;
    if args.json {
        println!("{}", show::json_line(&show::wave_json(&reply)));
    } else {
        println!("{}", show::wave_text(&reply));
    }
    Ok(())
}

/// The reply to `request`: the fixed payload, or what `command` prints with
/// the request's payload on its standard input.
async fn answer(args: &ReplyArgs, request: &Wave) -> Result<Bytes, String> {
    if let Some(payload) = &args.payload {
        return Ok(show::payload_of(payload));
    }
    let command = args.command.as_deref().unwrap_or("cat");
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = request.payload_bytes().clone();
    let writing = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let mut output = Vec::new();
    let mut stdout = child.stdout.take().expect("piped");
    let read = tokio::time::timeout(Duration::from_secs(30), stdout.read_to_end(&mut output)).await;
    let _ = writing.await;
    let status = child.wait().await.map_err(|e| e.to_string())?;
    match read {
        Err(_) => Err(format!("{command:?} took more than 30 s")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(_)) if !status.success() => Err(format!("{command:?} exited with {status}")),
        Ok(Ok(_)) => {
            let text = String::from_utf8_lossy(&output);
            Ok(show::payload_of(text.trim_end_matches('\n')))
        }
    }
}

pub async fn reply(connection: &Connection, args: ReplyArgs) -> Result<(), Failure> {
    let pattern = channel(&args.channel)?;
    let aether = connect(connection).await?;
    let mut vibrator = vibrator(&aether, connection).await?;
    let resonated = match &args.group {
        Some(group) => vibrator.resonate_in_group(pattern, group).await,
        None => vibrator.resonate_on(pattern).await,
    };
    resonated.map_err(|e| Failure::usage(format!("cannot answer on {:?}: {e}", args.channel)))?;
    eprintln!("answering on {} (Ctrl-C stops)", show::safe(&args.channel));
    let mut answered = 0;
    while args.count.is_none_or(|n| answered < n) {
        let Some(request) = vibrator.receive().await else {
            return Err(Failure::runtime("the connection closed"));
        };
        if request.reply_to().is_none() {
            eprintln!(
                "[{}] a wave on {} that is no request: passed over",
                show::clock(),
                show::safe(request.channel().as_str())
            );
            continue;
        }
        match answer(&args, &request).await {
            Ok(payload) => {
                if let Err(e) = vibrator.reply(&request, payload).await {
                    eprintln!("[{}] reply not sent: {e}", show::clock());
                }
            }
            Err(why) => eprintln!("[{}] no reply: {why}", show::clock()),
        }
        answered += 1;
    }
    aether
        .flush(Duration::from_secs(5))
        .await
        .map_err(|e| Failure::runtime(format!("replies not all sent: {e}")))?;
    Ok(())
}
