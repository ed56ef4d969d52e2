//! The bus's own time: a LAN of devices that never see an NTP server
//! still shares one order.
//!
//! Some programs are the bus's time sources (`[aether.clock] source`:
//! `aether node`, `aether keep` and the gateway are). Each program that
//! crosses processes measures its clock against them when it connects,
//! again after 1, 2, 4, 8 and 16 s (a bus forming: sources start before
//! they hear each other), then every `interval_ms`; every second while
//! the sources it hears change or disagree on the bus's time (a program
//! starting waits up to 4 s for them to agree, and for a source that
//! started or heard the sources change moments ago, and so says it is
//! settling, to settle); at once when its system
//! clock jumps, and soon when it refused a stamp from its future (its own
//! clock may be the one off). It measures as NTP and Cristian's
//! algorithm do: it asks, a source answers with its clocks, and the offset
//! is the source's time less the middle of the round trip, its uncertainty
//! half the round trip; of a few exchanges with each source the fastest
//! counts.
//!
//! The bus's time is the median of the bus's time as the sources read it
//! (each its clock plus its offset; of an even number, the later of the
//! two middle ones): a source counts its own reading among them, and any
//! other program takes the same median, so one that hears only some of
//! the sources (its own machine's, on a loaded LAN) still reads the time
//! they agreed on. Before the sources measured each other their readings
//! are their own clocks, so a bus forming settles on the median of its
//! clocks; once settled, a source that joins (its reading its own clock)
//! or leaves is one reading against the many that agree, and the bus's
//! time stays: it never goes back, which would leave every write stamped
//! before in the future of every clock. Two buses that settled apart and
//! then join (a partition healed) take the time of the one with more
//! sources; of two of one size, the later. With `follow`, the named
//! source's own clock. The process's clock ([`crate::wave`]'s) then reads the
//! system clock plus that offset: stamps, drift checks, tombstone
//! horizons, hopping slots and wave ages all follow it. Stamps never go
//! back ([`crate::state::hlc`]).
//!
//! On the wire (system channels, all sources listen): `_clock.who`, a
//! request one source answers (none: no sources, measured no further);
//! `_clock.ask`, to all sources; their answers on
//! `_clock.time.<asker as 16 hex digits>`. An ask is `asker u64 | ask
//! u64` (asks count up through the asker's life), an answer `ask u64 | the
//! source's clock, Unix ns u64 | its offset from the bus's time, ns i64`,
//! little endian. A source is known by its waves' source name; where
//! signatures are required, only signed answers count.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use crate::wave::clock::{ClockStatus, bus_now as now, status};
use crate::{
    Aether, Channel, Vibrator, Wave,
    wave::clock::{
        latest_stamped, offset, set_alone, set_offset, status_cell, steps, system_unix_nanos,
        take_future, take_jump, unmeasured,
    },
};

/// The request one source answers.
const WHO: &str = "_clock.who";
/// The ask every source answers.
const ASK: &str = "_clock.ask";
/// The queue group of the sources on [`WHO`].
const GROUP: &str = "clock";
/// Asks to all sources a measurement makes.
const ASKS: u64 = 3;
/// How long answers to one ask are awaited.
const WINDOW: Duration = Duration::from_millis(50);
/// How long answers to a measurement's first ask are awaited: every
/// source is heard out, on a loaded LAN too.
const FIRST_WINDOW: Duration = Duration::from_millis(100);
/// How long [`WHO`] is awaited.
const WHO_TIMEOUT: Duration = Duration::from_millis(300);
/// How often a jump of the system clock is looked for.
const JUMP_CHECK: Duration = Duration::from_secs(1);
/// The first wait between measurements, doubled after each up to
/// `interval_ms`, and taken again when the sources heard change.
const SOON: Duration = Duration::from_secs(1);
/// The least time between measurements a stamp from the future starts.
const FUTURE_SPACING: Duration = Duration::from_secs(2);
/// How long a program's start waits for the sources it hears to agree on
/// the bus's time and to be settled (a bus forming), measuring every
/// [`SETTLING_PAUSE`].
const SETTLING: Duration = Duration::from_secs(4);
/// The pause between measurements while the sources disagree at a start.
const SETTLING_PAUSE: Duration = Duration::from_millis(300);

/// One exchange with a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Exchange {
    pub(crate) source: String,
    /// The source's time less the middle of the round trip by this one's.
    pub(crate) offset_ns: i64,
    /// The round trip, nanoseconds.
    pub(crate) rtt_ns: u64,
}

impl Exchange {
    /// The exchange of an ask sent at `sent` and answered at `received`
    /// (this machine's clock) with the source's clock `theirs`.
    pub(crate) fn of(source: &str, sent: u64, received: u64, theirs: u64) -> Self {
        let rtt = received.saturating_sub(sent);
        let middle = sent + rtt / 2;
        Self {
            source: source.to_string(),
            offset_ns: (i128::from(theirs) - i128::from(middle))
                .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            rtt_ns: rtt,
        }
    }
}

/// The offset and its uncertainty the exchanges give, and how many
/// sources they came from: the fastest exchange of each source; the
/// median source by offset (the later of the two middle ones), or the one
/// `follow` names. `own`: this process is a source named so, whose own
/// reading of the bus's time is its clock plus this offset, and counts
/// itself. None when no source (or not the followed one) was heard.
pub(crate) fn settle(
    exchanges: &[Exchange],
    own: Option<(&str, i64)>,
    follow: Option<&str>,
) -> Option<(i64, u64, usize)> {
    let mut best = fastest(exchanges);
    if let Some((own, offset)) = own {
        best.insert(own, (offset, 0));
    }
    if let Some(follow) = follow {
        let (offset, rtt) = *best.get(follow)?;
        return Some((offset, rtt / 2, best.len()));
    }
    if best.is_empty() || (own.is_some() && best.len() == 1) {
        return None;
    }
    let mut sources: Vec<(i64, u64)> = best.values().copied().collect();
    sources.sort_unstable();
    // Of an even number, the upper middle: the later of the two middle
    // readings, the same one whichever source reckons it, so that sources
    // that hear each other settle on one time, and a bus of one that a
    // second source joins does not go back to the newcomer's clock.
    let (offset, rtt) = sources[sources.len() / 2];
    Some((offset, rtt / 2, sources.len()))
}

fn ask_payload(asker: u64, ask: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(16);
    out.put_u64_le(asker);
    out.put_u64_le(ask);
    out.freeze()
}

fn answer_payload(ask: u64, now: u64, offset: i64, settling: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(ANSWER_BYTES);
    out.put_u64_le(ask);
    out.put_u64_le(now);
    out.put_i64_le(offset);
    out.put_u64_le(u64::from(settling));
    out.freeze()
}

/// The length of an answer.
const ANSWER_BYTES: usize = 32;

/// `(first, second)` of a 16-byte payload (an ask); None for any other.
fn pair(payload: &Bytes) -> Option<(u64, u64)> {
    let mut b = payload.clone();
    (b.remaining() == 16).then(|| (b.get_u64_le(), b.get_u64_le()))
}

/// A source's answer, read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Answer {
    /// The ask it answers.
    ask: u64,
    /// The source's own clock.
    clock: u64,
    /// The bus's time by the source: its clock plus its offset
    /// (saturating).
    bus: u64,
    /// The source is settling: it started, or the sources it hears
    /// changed, moments ago; its time may move yet.
    settling: bool,
}

/// An answer; None for any other payload (a flag other than 0 or 1
/// included).
fn answer_of(payload: &Bytes) -> Option<Answer> {
    let mut b = payload.clone();
    if b.remaining() != ANSWER_BYTES {
        return None;
    }
    let (ask, clock, offset, flag) = (
        b.get_u64_le(),
        b.get_u64_le(),
        b.get_i64_le(),
        b.get_u64_le(),
    );
    (flag <= 1).then(|| Answer {
        ask,
        clock,
        bus: clock.saturating_add_signed(offset),
        settling: flag == 1,
    })
}

/// How long a source says it is settling after the sources it hears
/// change.
const SETTLING_AFTER_CHANGE: Duration = Duration::from_secs(3);

/// Until when (ms since [`epoch`]) this process, as a source, says it is
/// settling.
static SETTLING_UNTIL_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// This process, as a source, says it is settling for `for_how_long` from
/// now (or longer, if it already said so): programs starting meanwhile
/// wait for it a moment (up to 4 s). A source that expects to hear others
/// soon says so when it starts (`aether node`: its bus is forming); any
/// source does for 3 s after the sources it hears change.
pub fn settle_for(for_how_long: Duration) {
    let until = (epoch().elapsed() + for_how_long).as_millis() as u64;
    SETTLING_UNTIL_MS.fetch_max(until, std::sync::atomic::Ordering::Relaxed);
}

/// Whether this source is settling now.
fn settling() -> bool {
    (epoch().elapsed().as_millis() as u64)
        < SETTLING_UNTIL_MS.load(std::sync::atomic::Ordering::Relaxed)
}

fn answers_of(asker: u64) -> Channel {
    Channel::new(format!("_clock.time.{asker:016x}"))
}

/// Starts the bus's time on `aether`, once: a source answers; an aether
/// that crosses processes measures its clock (the first measurement before
/// this returns, within a second; while the sources it hears disagree or
/// one says it is settling, as on a bus forming, again until they agree,
/// for up to 4 s), then keeps measuring while it lives.
/// [`StateMap::open`](crate::state::StateMap::open) calls it; a program
/// whose stamps matter before (the command line, the gateway, Python)
/// calls it once connected.
pub async fn start(aether: &Aether) {
    if !aether.crosses_processes() {
        return;
    }
    aether.clock_started().get_or_init(|| run(aether)).await;
}

async fn run(aether: &Aether) {
    let config = aether.config().clock.clone();
    let name = aether.config().report.instance_name();
    if config.source {
        match answering(aether, &name).await {
            Ok(vibrator) => {
                tokio::spawn(answer(vibrator));
            }
            Err(error) => {
                tracing::warn!(%error, "this program is not a time source of the bus");
            }
        }
    }
    let asker: u64 = crate::wave::unique_odd_id();
    let Ok(mut vibrator) = Vibrator::builder(format!("{name}-clock"))
        .queue_capacity(1024)
        .build(aether)
    else {
        return;
    };
    if vibrator.resonate_on(answers_of(asker)).await.is_err() {
        return;
    }
    let own = config.source.then_some(name);
    let mut measurer = Measurer {
        vibrator,
        asker,
        ask: 0,
        own,
        follow: config.follow.clone(),
        warned: None,
        max_drift: aether.config().state.max_drift,
        heard_settling: false,
    };
    // The first measurement; while the sources heard disagree (a bus
    // forming: they have not measured each other yet), again until they
    // agree, for up to SETTLING.
    let started = Instant::now();
    let mut heard = loop {
        let heard = tokio::time::timeout(Duration::from_secs(1), measurer.measure())
            .await
            .unwrap_or_default();
        // (A source starts at once: the others measure against it.)
        if heard.agreed || measurer.own.is_some() || started.elapsed() >= SETTLING {
            break heard;
        }
        tokio::time::sleep(SETTLING_PAUSE).await;
    };
    let interval = config.interval;
    tokio::spawn(async move {
        let mut last = Instant::now();
        let mut wait = SOON.min(interval);
        loop {
            tokio::time::sleep(JUMP_CHECK).await;
            if measurer.vibrator.aether().is_closed() {
                return;
            }
            let since = last.elapsed();
            if take_jump() || since >= wait || (since >= FUTURE_SPACING && take_future()) {
                last = Instant::now();
                let now = measurer.measure().await;
                if now.sources != heard.sources && measurer.own.is_some() {
                    settle_for(SETTLING_AFTER_CHANGE);
                }
                // Soon again while the sources heard change or disagree.
                wait = if now.sources == heard.sources && now.agreed {
                    (wait * 2).min(interval)
                } else {
                    SOON.min(interval)
                };
                heard = now;
            }
        }
    });
}

/// What a measurement heard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Heard {
    /// The sources heard (0: none).
    sources: usize,
    /// The bus's time as each source read it agrees, within half of
    /// `max_drift` (one source, or none, agrees with itself).
    agreed: bool,
}

/// Each source's fastest exchange: `(offset, round trip)` by source.
fn fastest(exchanges: &[Exchange]) -> HashMap<&str, (i64, u64)> {
    let mut best: HashMap<&str, (i64, u64)> = HashMap::new();
    for e in exchanges {
        let entry = best.entry(&e.source).or_insert((e.offset_ns, e.rtt_ns));
        if e.rtt_ns < entry.1 {
            *entry = (e.offset_ns, e.rtt_ns);
        }
    }
    best
}

/// Whether the bus's times the sources read, as offsets from this
/// process's clock (their fastest exchange each), lie within `within` of
/// each other.
pub(crate) fn agree(exchanges: &[Exchange], within: Duration) -> bool {
    let best = fastest(exchanges);
    let offsets = best.values().map(|(offset, _)| i128::from(*offset));
    let (low, high) = offsets.fold((i128::MAX, i128::MIN), |(lo, hi), o| (lo.min(o), hi.max(o)));
    low > high || high - low <= within.as_nanos() as i128
}

/// A source's vibrator, listening.
async fn answering(aether: &Aether, name: &str) -> Result<Vibrator, crate::ResonateError> {
    let mut vibrator = Vibrator::builder(name)
        .queue_capacity(1024)
        .build(aether)
        .map_err(|e| crate::ResonateError::with_source(crate::ResonateErrorKind::Closed, e))?;
    vibrator.resonate_on(ASK).await?;
    vibrator.resonate_in_group(WHO, GROUP).await?;
    Ok(vibrator)
}

/// Answers every ask with this machine's clock and its offset.
async fn answer(mut vibrator: Vibrator) {
    while let Some(wave) = vibrator.receive().await {
        let Some((asker, ask)) = pair(wave.payload_bytes()) else {
            continue;
        };
        // A step of this machine's clock not seen yet is seen now (and,
        // once measured, taken out of the offset): no answer gives a time
        // stepped back or forward.
        steps();
        let answer = answer_payload(ask, system_unix_nanos(), offset(), settling());
        let sent = if wave.channel().as_str() == WHO {
            vibrator.reply(&wave, answer).await.map(|_| ())
        } else {
            vibrator
                .emitter()
                .emit_own(Wave::new(answers_of(asker), answer))
                .await
                .map(|_| ())
        };
        if let Err(error) = sent {
            tracing::debug!(%error, "a clock answer was not sent");
        }
    }
}

/// What a process whose offset from the bus's time is `offset_ns` is
/// told, past half of `max_drift`: how far its machine's clock is off.
pub fn off_note(offset_ns: i64, max_drift: Duration) -> Option<String> {
    let off = Duration::from_nanos(offset_ns.unsigned_abs());
    (off > max_drift / 2).then(|| {
        format!(
            "this machine's clock is {:.3} s {} the bus's: its stamps, checks and hopping \
             follow the bus's time; set its clock right (NTP) all the same",
            off.as_secs_f64(),
            if offset_ns > 0 { "behind" } else { "ahead of" }
        )
    })
}

/// Measures this process's clock against the sources.
struct Measurer {
    vibrator: Vibrator,
    asker: u64,
    /// The last ask sent: asks count up, so a late answer to an earlier
    /// measurement is not taken for one of this one.
    ask: u64,
    /// This process's name as a source, if it is one.
    own: Option<String>,
    follow: Option<String>,
    /// The offset last warned about, if any.
    warned: Option<i64>,
    max_drift: Duration,
    /// A source heard in the last round said it is settling.
    heard_settling: bool,
}

impl Measurer {
    /// Measures: the sources heard, and whether they agree.
    async fn measure(&mut self) -> Heard {
        let steps = steps();
        let (exchanges, bus_times) = self.exchanges().await;
        // Sources that disagree, or one that says it is settling (it
        // started, or the sources it hears changed, moments ago), are not
        // agreed yet.
        let agreed = agree(&bus_times, self.max_drift / 2) && !self.heard_settling;
        let own = self.own.as_deref().map(|name| (name, offset()));
        let settled = settle(&exchanges, own, self.follow.as_deref());
        let mut status = status_cell().lock().unwrap_or_else(|e| e.into_inner());
        status.measurements += 1;
        let Some((offset_ns, uncertainty_ns, sources)) = settled else {
            status.sources = 0;
            if self.own.is_some() && self.follow.is_none() {
                drop(status);
                return self.alone(steps, agreed);
            }
            set_alone(false);
            unmeasured();
            if let Some(follow) = &self.follow
                && !exchanges.is_empty()
            {
                tracing::warn!(
                    follow,
                    "the time source [aether.clock] follow names did not answer; the clock \
                     keeps its last offset"
                );
            }
            return Heard { sources: 0, agreed };
        };
        let before = offset();
        let heard = Heard { sources, agreed };
        set_alone(false);
        if !set_offset(offset_ns, steps) {
            // The system clock stepped while it measured: again at once.
            return Heard {
                agreed: false,
                ..heard
            };
        }
        status.sources = sources;
        status.uncertainty_ns = uncertainty_ns;
        drop(status);
        // Warned once, and again whenever the offset moved by more than
        // max_drift since (a bus forming settles on another time).
        let off = off_note(offset_ns, self.max_drift);
        let moved = self
            .warned
            .is_none_or(|warned| warned.abs_diff(offset_ns) > self.max_drift.as_nanos() as u64);
        if let (Some(note), true) = (&off, moved) {
            self.warned = Some(offset_ns);
            tracing::warn!(offset_ms = offset_ns / 1_000_000, sources, "{note}");
        } else if before.abs_diff(offset_ns) > 100_000_000 {
            tracing::info!(
                offset_ms = offset_ns / 1_000_000,
                before_ms = before / 1_000_000,
                sources,
                "the clock's offset from the bus changed"
            );
        }
        heard
    }

    /// A source that heard no other: the bus's time is its own, and goes
    /// on from where it is. A step of its machine's clock is taken out of
    /// the offset as for any program measured (the bus's time neither
    /// leaps nor goes back with it), and the time is held at or past the
    /// latest stamp this process made or kept in a ledger (a source
    /// restarted on a clock set back does not take the bus behind the
    /// writes it holds).
    fn alone(&mut self, steps: u64, agreed: bool) -> Heard {
        let behind = i128::from(latest_stamped()) - i128::from(system_unix_nanos());
        let least = behind.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        let before = offset();
        let offset_ns = before.max(least);
        if !set_offset(offset_ns, steps) {
            // The system clock stepped while it measured: again at once.
            return Heard {
                sources: 0,
                agreed: false,
            };
        }
        set_alone(true);
        if offset_ns != before {
            tracing::warn!(
                offset_ms = offset_ns / 1_000_000,
                before_ms = before / 1_000_000,
                "this time source, alone on the bus, holds the bus's time at the latest \
                 write it holds: this machine's clock is behind it; set its clock right (NTP)"
            );
        }
        Heard { sources: 0, agreed }
    }

    /// The time an answer gives: the bus's time as the source reads it
    /// (a source measures so too), or, following a named source, its own
    /// clock.
    fn time_of(&self, clock: u64, bus: u64) -> u64 {
        if self.follow.is_some() { clock } else { bus }
    }

    /// Takes `answer` from `source` to an ask sent at `sent` and answered
    /// at `received`: an exchange against the time this process follows,
    /// and one against the bus's time as the source reads it (a settling
    /// source's is noted).
    fn take(
        &mut self,
        source: &str,
        sent: u64,
        received: u64,
        answer: Answer,
        exchanges: &mut Vec<Exchange>,
        bus_times: &mut Vec<Exchange>,
    ) {
        let theirs = self.time_of(answer.clock, answer.bus);
        exchanges.push(Exchange::of(source, sent, received, theirs));
        bus_times.push(Exchange::of(source, sent, received, answer.bus));
        if self.own.as_deref() != Some(source) {
            self.heard_settling |= answer.settling;
        }
    }

    /// A round of exchanges, and the same against the bus's time as each
    /// source reads it: none if no source answers [`WHO`].
    async fn exchanges(&mut self) -> (Vec<Exchange>, Vec<Exchange>) {
        self.heard_settling = false;
        let mut exchanges = Vec::new();
        let mut bus_times = Vec::new();
        let emitter = self.vibrator.emitter();
        let sent = system_unix_nanos();
        let who = Wave::new(WHO, ask_payload(self.asker, 0));
        match emitter.request_on(who, WHO_TIMEOUT).await {
            Ok(reply) => {
                let received = system_unix_nanos();
                if let (Some(answer), Some(source)) =
                    (answer_of(reply.payload_bytes()), reply.source())
                    && answer.ask == 0
                {
                    self.take(
                        source,
                        sent,
                        received,
                        answer,
                        &mut exchanges,
                        &mut bus_times,
                    );
                }
            }
            Err(_) => return (exchanges, bus_times),
        }
        let mut first_heard = 0;
        for n in 1..=ASKS {
            self.ask += 1;
            let ask = self.ask;
            let sent = system_unix_nanos();
            let wave = Wave::new(ASK, ask_payload(self.asker, ask));
            if emitter.emit_own(wave).await.is_err() {
                return (exchanges, bus_times);
            }
            let first = n == 1;
            let deadline = tokio::time::Instant::now() + if first { FIRST_WINDOW } else { WINDOW };
            // The first ask is heard out to the end of its window (a source
            // new to the bus, or slower, counts too); the next ones end
            // once as many answered.
            let mut answered = 0;
            let known = if first { 0 } else { first_heard };
            while let Ok(Some(wave)) =
                tokio::time::timeout_at(deadline, self.vibrator.receive()).await
            {
                let received = system_unix_nanos();
                let (Some(answer), Some(source)) = (answer_of(wave.payload_bytes()), wave.source())
                else {
                    continue;
                };
                if answer.ask != ask {
                    continue;
                }
                self.take(
                    source,
                    sent,
                    received,
                    answer,
                    &mut exchanges,
                    &mut bus_times,
                );
                answered += 1;
                if known > 0 && answered >= known {
                    break;
                }
            }
            if first {
                first_heard = answered;
            }
        }
        (exchanges, bus_times)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn exchange(source: &str, offset_ns: i64, rtt_ns: u64) -> Exchange {
        Exchange {
            source: source.into(),
            offset_ns,
            rtt_ns,
        }
    }

    #[test]
    fn an_exchange_takes_the_middle_of_its_round_trip() {
        // Asked at 1,000, answered at 1,400 with 10,200: offset 9,000.
        let e = Exchange::of("pi", 1_000, 1_400, 10_200);
        assert_eq!((e.offset_ns, e.rtt_ns), (9_000, 400));
        // A source behind.
        assert_eq!(Exchange::of("pi", 5_000, 5_000, 1_000).offset_ns, -4_000);
    }

    #[test]
    fn an_answer_gives_the_sources_clock_and_its_bus_time() {
        let hour = 3_600_000_000_000u64;
        let answer = answer_payload(7, 10 * hour, -2 * hour as i64, true);
        assert_eq!(
            answer_of(&answer),
            Some(Answer {
                ask: 7,
                clock: 10 * hour,
                bus: 8 * hour,
                settling: true
            })
        );
        // A bus time past either end of a u64 saturates.
        let low = answer_of(&answer_payload(1, 5, -10, false)).unwrap();
        assert_eq!((low.bus, low.settling), (0, false));
        let high = answer_of(&answer_payload(1, u64::MAX - 1, 10, false)).unwrap();
        assert_eq!(high.bus, u64::MAX);
        // Asks and answers are told apart by their lengths; a flag other
        // than 0 or 1 is no answer.
        assert_eq!(answer_of(&ask_payload(1, 2)), None);
        assert_eq!(pair(&answer), None);
        assert_eq!(answer_of(&answer.slice(..31)), None);
        let mut flagged = BytesMut::from(&answer[..]);
        flagged[24] = 2;
        assert_eq!(answer_of(&flagged.freeze()), None);
    }

    #[test]
    fn sources_agree_within_half_of_max_drift() {
        let within = Duration::from_millis(250);
        assert!(agree(&[], within), "none agree");
        let one = [exchange("a", 5_000_000_000, 100)];
        assert!(agree(&one, within));
        let close = [
            exchange("a", 100_000_000, 100),
            exchange("b", 300_000_000, 100),
            // A slower exchange of b's, further off, does not count.
            exchange("b", 900_000_000, 900),
        ];
        assert!(agree(&close, within));
        let hours = [exchange("a", 0, 100), exchange("b", 7_200_000_000_000, 100)];
        assert!(!agree(&hours, within));
    }

    #[test]
    fn the_bus_follows_the_median_source_or_the_one_named() {
        let hour = 3_600_000_000_000i64;
        let heard = [
            exchange("a", -2 * hour, 900),
            exchange("b", 10, 500),
            exchange("b", 30, 300),
            exchange("c", 2 * hour, 400),
        ];
        // The median of three: b's fastest exchange.
        assert_eq!(settle(&heard, None, None), Some((30, 150, 3)));
        // A source counts its own reading: a, self (0), b, c: of the two
        // middles, the later, b's.
        assert_eq!(settle(&heard, Some(("d", 0)), None), Some((30, 150, 4)));
        // Two sources two hours apart settle on the later reading.
        let two = [exchange("a", -2 * hour, 900)];
        assert_eq!(settle(&two, Some(("b", 0)), None), Some((0, 0, 2)));
        let two = [exchange("b", 2 * hour, 900)];
        assert_eq!(settle(&two, Some(("a", 0)), None), Some((2 * hour, 450, 2)));
        // A source's own reading is its clock plus its offset.
        let one = [exchange("b", 5 * hour, 900)];
        assert_eq!(
            settle(&one, Some(("a", 5 * hour)), None),
            Some((5 * hour, 450, 2))
        );
        assert_eq!(settle(&heard, None, Some("c")), Some((2 * hour, 200, 3)));
        assert_eq!(
            settle(&heard, None, Some("z")),
            None,
            "the one named is not heard"
        );
        assert_eq!(settle(&[], None, None), None);
        assert_eq!(
            settle(&[], Some(("d", 0)), None),
            None,
            "a source alone follows itself"
        );
    }

    proptest! {
        /// Sources that hear each other settle on one time, whatever
        /// their number and their clocks (an even number included).
        #[test]
        fn sources_that_hear_each_other_agree(
            clocks in prop::collection::vec(-100_000i64..100_000, 1..9),
        ) {
            let names: Vec<String> = (0..clocks.len()).map(|n| format!("s{n}")).collect();
            let mut times = Vec::new();
            for (i, own) in clocks.iter().enumerate() {
                let heard: Vec<Exchange> = clocks
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(j, theirs)| exchange(&names[j], theirs - own, 100))
                    .collect();
                let offset = settle(&heard, Some((&names[i], 0)), None).map_or(0, |(o, _, _)| o);
                times.push(own + offset);
            }
            prop_assert!(times.windows(2).all(|w| w[0] == w[1]), "{:?} from {:?}", times, clocks);
        }

        /// A bus that settled keeps its time when a source joins (its
        /// reading its own clock, however far off) and when sources leave:
        /// every source that stays reads the time it read, or a later one
        /// (a bus of one joined by a clock ahead of it), never an earlier.
        #[test]
        fn a_settled_bus_never_goes_back(
            clocks in prop::collection::vec(-100_000i64..100_000, 1..8),
            joiner in any::<i32>(),
            leaving in 0usize..8,
        ) {
            let bus = clocks[0];
            let names: Vec<String> = (0..=clocks.len()).map(|n| format!("s{n}")).collect();
            // Settled: each reads `bus` (its clock plus its offset).
            let mut readings: Vec<(i64, i64)> = clocks.iter().map(|c| (*c, bus - c)).collect();
            readings.push((i64::from(joiner), 0));
            let settled = clocks.len();
            for (round, stay) in [(0, readings.len()), (1, settled)] {
                // Round 0: the newcomer joined; round 1: it and one more
                // left (when more than one stays).
                let keep: Vec<usize> = (0..stay)
                    .filter(|i| round == 0 || stay < 2 || *i != leaving % stay)
                    .collect();
                for &i in keep.iter().filter(|i| **i < settled) {
                    let (own_clock, own_offset) = readings[i];
                    let heard: Vec<Exchange> = keep
                        .iter()
                        .filter(|j| **j != i)
                        .map(|&j| exchange(&names[j], readings[j].0 + readings[j].1 - own_clock, 100))
                        .collect();
                    let Some((offset, _, _)) = settle(&heard, Some((&names[i], own_offset)), None)
                    else {
                        continue;
                    };
                    let time = own_clock + offset;
                    if settled >= 2 {
                        prop_assert_eq!(time, bus);
                    } else {
                        prop_assert!(time >= bus);
                    }
                }
            }
        }

        /// Fewer than half the sources, however wrong, cannot move the
        /// bus's time outside the honest sources' offsets.
        #[test]
        fn a_minority_of_wrong_clocks_cannot_move_the_bus(
            honest in prop::collection::vec(-1_000i64..1_000, 3..9),
            wrong in prop::collection::vec(any::<i64>(), 0..3),
        ) {
            prop_assume!(wrong.len() * 2 < honest.len());
            let mut heard = Vec::new();
            for (n, offset) in honest.iter().enumerate() {
                heard.push(exchange(&format!("h{n}"), *offset, 100));
            }
            for (n, offset) in wrong.iter().enumerate() {
                heard.push(exchange(&format!("w{n}"), *offset, 100));
            }
            let (offset, _, sources) = settle(&heard, None, None).unwrap();
            prop_assert_eq!(sources, honest.len() + wrong.len());
            prop_assert!(honest.iter().min().unwrap() <= &offset);
            prop_assert!(&offset <= honest.iter().max().unwrap());
        }
    }
}
