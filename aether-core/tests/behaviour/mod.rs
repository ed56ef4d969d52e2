//! The behaviour suite: what every medium must do, written once against the
//! public API. A test file instantiates it for one medium with
//! `behaviour_suite!(factory)`, where the factory makes an [`Aether`] from a
//! configuration.

#![allow(dead_code)]

use std::{future::Future, pin::Pin, time::Duration};

use aether_core::{
    Aether, AetherConfig, Channel, DropReason, EmitErrorKind, InterferenceEvent,
    InterferencePattern, Phase, PhysicsConfig, ReflectionReason, RequestErrorKind,
    ResonateErrorKind, Vibrator, VibratorErrorKind, Wave,
};
use futures_util::StreamExt;
use serde_json::json;

mod physics;

pub use self::physics::*;

/// Makes aethers on one medium.
pub trait Medium: Send + Sync {
    /// An aether with `config`.
    fn aether(&self, config: AetherConfig) -> Pin<Box<dyn Future<Output = Aether> + Send + '_>>;
}

/// Fails the test if `fut` takes longer than 10 s.
pub async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("behaviour case took longer than 10 s")
}

async fn default_aether(m: &dyn Medium) -> Aether {
    m.aether(AetherConfig::default()).await
}

/// Receives one wave, failing after 5 s.
pub async fn recv(v: &mut Vibrator) -> Wave {
    match tokio::time::timeout(Duration::from_secs(5), v.receive()).await {
        Ok(wave) => wave.expect("receive returned None"),
        Err(_) => panic!(
            "{} got no wave within 5 s; the aether's counters:\n{}\n{:?}",
            v.name(),
            v.aether().stats(),
            v.aether().connection()
        ),
    }
}

/// Asserts that nothing arrives within a short settle time.
pub async fn assert_silent(v: &mut Vibrator) {
    if let Ok(wave) = tokio::time::timeout(Duration::from_millis(100), v.receive()).await {
        panic!("expected no wave, got {wave:?}");
    }
}

/// Probes every 2 ms until `probe` gives something, failing after 5 s.
pub async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what} within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The next interference event, failing after 5 s.
async fn next_event<F>(next: F) -> InterferenceEvent
where
    F: Future<Output = Option<InterferenceEvent>>,
{
    tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("no interference event within 5 s")
        .expect("the events ended")
}

fn assert_near(got: f64, expected: f64, what: &str) {
    assert!((got - expected).abs() < 1e-9, "{what}: {got} != {expected}");
}

pub async fn delivers_on_exact_channel(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    rx.resonate_on(Channel::new("user.created")).await.unwrap();
    tx.emit_wave(Channel::new("user.created"), json!({"user_id": "123"}))
        .await
        .unwrap();
    let wave = recv(&mut rx).await;
    assert_eq!(wave.channel().as_str(), "user.created");
    assert_eq!(wave.payload()["user_id"], "123");
    assert_eq!(wave.source(), Some("tx"));
    assert_eq!(wave.propagation_count(), 0);
    assert_eq!(wave.amplitude().value(), 1.0);
    assert!(wave.emitted_at().is_some());
}

pub async fn wildcard_delivery_sets(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut tail = Vibrator::create("tail", &aether).await.unwrap();
    let mut inner = Vibrator::create("inner", &aether).await.unwrap();
    let mut all = Vibrator::create("all", &aether).await.unwrap();
    tail.resonate_on("orders.*").await.unwrap();
    inner.resonate_on("orders.*.done").await.unwrap();
    all.resonate_on("*").await.unwrap();
    let channels = ["orders", "orders.created", "orders.pay.done", "users.x"];
    for channel in channels {
        tx.emit_wave(channel, json!(channel)).await.unwrap();
    }
    let mut got_all = Vec::new();
    for _ in channels {
        got_all.push(recv(&mut all).await.channel().to_string());
    }
    assert_eq!(got_all, channels);
    assert_eq!(recv(&mut tail).await.channel(), "orders.created");
    assert_eq!(recv(&mut tail).await.channel(), "orders.pay.done");
    assert_eq!(recv(&mut inner).await.channel(), "orders.pay.done");
    assert_silent(&mut tail).await;
    assert_silent(&mut inner).await;
}

pub async fn unmatched_waves_are_not_delivered(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    rx.resonate_on("a.b").await.unwrap();
    tx.emit_wave("a.c", json!(1)).await.unwrap();
    tx.emit_wave("a.b.c", json!(2)).await.unwrap();
    tx.emit_wave("a", json!(3)).await.unwrap();
    assert_silent(&mut rx).await;
}

pub async fn invalid_channels_are_refused_and_nothing_is_sent(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    rx.resonate_on("*").await.unwrap();
    for bad in ["", "a..b", "a b", "a.*", "a.>", "ord*", &"x".repeat(300)] {
        let err = tx.emit_wave(bad, json!(1)).await.unwrap_err();
        assert_eq!(err.kind(), EmitErrorKind::InvalidChannel, "{bad:?}");
        assert!(err.to_string().contains("invalid channel"), "{err}");
    }
    for bad in ["", "a..b", "a.>.b", "x*"] {
        let err = rx.resonate_on(bad).await.unwrap_err();
        assert_eq!(err.kind(), ResonateErrorKind::InvalidChannel, "{bad:?}");
    }
    assert_eq!(aether.stats().emitted, 0);
    assert_silent(&mut rx).await;
}

/// The bus's own channels (replies, reflections, probes, hopping) are not
/// for applications: a forged reply or reflection would start there.
pub async fn system_channels_are_refused_to_applications(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    rx.resonate_on("*").await.unwrap();
    for system in [
        "_INBOX.x",
        "_hop.0123",
        "_reflect.x",
        "_probe.1.2",
        "_anything",
    ] {
        let err = tx.emit_wave(system, json!(1)).await.unwrap_err();
        assert_eq!(err.kind(), EmitErrorKind::InvalidChannel, "{system}");
        assert!(err.to_string().contains("bus's own channels"), "{err}");
        let err = tx
            .emit(Wave::builder(system).build().unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), EmitErrorKind::InvalidChannel, "{system}");
        let err = tx
            .request_with_timeout(Wave::new(system, ()), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), RequestErrorKind::Emit, "{system}: {err}");
        let err = tx.emit_hopping(Wave::new(system, ()), 4).await.unwrap_err();
        assert_eq!(err.kind(), EmitErrorKind::InvalidChannel, "{system}");
    }
    assert_silent(&mut rx).await;
    // A request whose reply channel is a system channel other than a reply
    // inbox is not answered there; a real request is.
    let forged = Wave::builder("questions")
        .reply_to("_reflect.alpha.0000000000000001")
        .build()
        .unwrap();
    let err = tx.reply(&forged, "a").await.unwrap_err();
    assert_eq!(err.kind(), EmitErrorKind::InvalidChannel, "{err}");
    let mut server = Vibrator::create("server", &aether).await.unwrap();
    server.resonate_on("questions").await.unwrap();
    let client = Vibrator::create("client", &aether).await.unwrap();
    let asking = tokio::spawn(async move {
        client
            .request_with_timeout(Wave::new("questions", "q"), Duration::from_secs(5))
            .await
    });
    let request = recv(&mut server).await;
    server.reply(&request, "a").await.unwrap();
    assert_eq!(&asking.await.unwrap().unwrap().payload_bytes()[..], b"a");
    assert_eq!(aether.stats().emitted, 2, "only the request and its reply");
    // rx hears every channel, the reply's inbox too: the request and the
    // reply come from two vibrators, so either may reach rx first (the
    // server can answer before the request's fan-out reaches rx).
    let mut heard = [
        recv(&mut rx).await.channel().to_string(),
        recv(&mut rx).await.channel().to_string(),
    ];
    heard.sort();
    assert_eq!(heard[1], "questions", "{heard:?}");
    assert!(heard[0].starts_with("_INBOX."), "{heard:?}");
    assert_silent(&mut rx).await;
}

pub async fn one_delivery_per_vibrator_however_many_patterns_match(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    rx.resonate_on("orders.created").await.unwrap();
    rx.resonate_on("orders.*").await.unwrap();
    rx.resonate_on("*").await.unwrap();
    tx.emit_wave("orders.created", json!(1)).await.unwrap();
    assert_eq!(recv(&mut rx).await.payload(), json!(1));
    assert_silent(&mut rx).await;
}

pub async fn noise_floor_hides_weak_waves_and_counts_them(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut quiet = Vibrator::builder("quiet")
        .noise_floor(0.5)
        .create(&aether)
        .await
        .unwrap();
    let mut open = Vibrator::create("open", &aether).await.unwrap();
    quiet.resonate_on("n.*").await.unwrap();
    open.resonate_on("n.*").await.unwrap();
    for (i, amplitude) in [0.2, 0.49, 0.5, 0.9].into_iter().enumerate() {
        let wave = Wave::builder(format!("n.{i}"))
            .amplitude(amplitude)
            .build()
            .unwrap();
        tx.emit(wave).await.unwrap();
    }
    for i in 0..4 {
        assert_eq!(recv(&mut open).await.channel().as_str(), format!("n.{i}"));
    }
    assert_eq!(recv(&mut quiet).await.amplitude().value(), 0.5);
    assert_eq!(recv(&mut quiet).await.amplitude().value(), 0.9);
    assert_silent(&mut quiet).await;
    assert_eq!(quiet.stats().dropped(DropReason::BelowNoiseFloor), 2);
    assert_eq!(quiet.stats().delivered, 2);
    assert_eq!(open.stats().dropped_total(), 0);

    // The floor can change while the vibrator runs.
    quiet.set_noise_floor(0.1).unwrap();
    tx.emit(Wave::builder("n.x").amplitude(0.2).build().unwrap())
        .await
        .unwrap();
    assert_eq!(recv(&mut quiet).await.channel(), "n.x");
    assert_eq!(
        quiet.set_noise_floor(1.5).unwrap_err().kind(),
        VibratorErrorKind::InvalidSetting
    );
}

pub async fn dead_waves_expire_and_are_counted(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    rx.resonate_on("e").await.unwrap();
    let weak = Wave::builder("e").amplitude(0.005).build().unwrap();
    assert!(weak.amplitude().value() < aether.config().min_amplitude);
    tx.emit(weak).await.unwrap();
    assert_silent(&mut rx).await;
    assert_eq!(aether.stats().dropped(DropReason::Expired), 1);
}

pub async fn time_decay_kills_relayed_waves(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut relay = Vibrator::create("relay", &aether).await.unwrap();
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    relay.resonate_on("d.in").await.unwrap();
    rx.resonate_on("d.out").await.unwrap();
    // ln(1/0.01)/11.5 s: the wave lives 400 ms; it is still above 0.1 for
    // its first 200 ms, time enough to cross any medium.
    let ttl = Duration::from_millis(400);
    let wave = Wave::builder("d.in")
        .time_to_live(ttl, 0.01)
        .build()
        .unwrap();
    tx.emit(wave).await.unwrap();
    let got = recv(&mut relay).await;
    assert!(got.amplitude().value() > 0.1, "{got:?}");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let before = aether.stats().dropped(DropReason::Expired);
    let relayed = Wave::builder("d.out")
        .time_to_live(ttl, 0.01)
        .build()
        .unwrap();
    tx.emit(relayed).await.unwrap();
    let fresh = recv(&mut rx).await;
    assert!(
        fresh.amplitude().value() > 0.1,
        "fresh wave lives: {fresh:?}"
    );
    let mut old = got;
    old.propagate();
    relay.emit(old).await.unwrap();
    assert_silent(&mut rx).await;
    assert_eq!(aether.stats().dropped(DropReason::Expired), before + 1);
}

pub async fn hops_attenuate_by_the_configured_factor(m: &dyn Medium) {
    let aether = m
        .aether(AetherConfig {
            attenuation_factor: 0.5,
            ..Default::default()
        })
        .await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut relay = Vibrator::create("relay", &aether).await.unwrap();
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    relay.resonate_on("h.a").await.unwrap();
    rx.resonate_on("h.b").await.unwrap();
    tx.emit(Wave::builder("h.a").amplitude(0.8).build().unwrap())
        .await
        .unwrap();
    let first = recv(&mut relay).await;
    assert_eq!(
        first.amplitude().value(),
        0.8,
        "no attenuation at first emit"
    );
    // Relay: same wave on another channel, one hop further.
    let mut hop = Wave::builder("h.b").amplitude(0.8).build().unwrap();
    hop.propagate();
    relay.emit(hop).await.unwrap();
    let second = recv(&mut rx).await;
    assert_eq!(second.propagation_count(), 1);
    assert!(
        (second.amplitude().value() - 0.4).abs() < 1e-9,
        "{second:?}"
    );
    assert_eq!(second.source_amplitude().value(), 0.8);
}

pub async fn propagation_limit_drops_looping_waves(m: &dyn Medium) {
    let aether = m
        .aether(AetherConfig {
            max_propagation: 3,
            ..Default::default()
        })
        .await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    rx.resonate_on("loop").await.unwrap();
    let mut wave = Wave::new("loop", ());
    for _ in 0..3 {
        wave.propagate();
    }
    assert!(wave.propagation_count() <= aether.config().max_propagation);
    tx.emit(wave.clone()).await.unwrap();
    assert_eq!(recv(&mut rx).await.propagation_count(), 3);
    wave.propagate();
    tx.emit(wave).await.unwrap();
    assert_silent(&mut rx).await;
    assert_eq!(aether.stats().dropped(DropReason::PropagationLimit), 1);
}

pub async fn propagation_limit_holds_at_its_maximum(m: &dyn Medium) {
    let aether = m
        .aether(AetherConfig {
            max_propagation: 255,
            attenuation_factor: 1.0,
            ..Default::default()
        })
        .await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    rx.resonate_on("loop").await.unwrap();
    let mut wave = Wave::new("loop", ());
    for _ in 0..300 {
        wave.propagate();
    }
    assert!(wave.propagation_count() > 255);
    tx.emit(wave).await.unwrap();
    assert_silent(&mut rx).await;
    assert_eq!(aether.stats().dropped(DropReason::PropagationLimit), 1);
    assert_eq!(tx.stats().emitted, 1, "a vibrator counts its own emits");
}

pub async fn full_queue_sheds_the_weakest_first(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut rx = Vibrator::builder("rx")
        .queue_capacity(3)
        .create(&aether)
        .await
        .unwrap();
    rx.resonate_on("q").await.unwrap();
    let mut marker = Vibrator::create("marker", &aether).await.unwrap();
    marker.resonate_on("q").await.unwrap();
    for amplitude in [0.5, 0.2, 0.9, 0.6, 0.5] {
        tx.emit(Wave::builder("q").amplitude(amplitude).build().unwrap())
            .await
            .unwrap();
    }
    // Wait until all five were routed (the marker has a big queue) and,
    // over NATS, where each resonance delivers on its own, offered to rx:
    // four queued (one of them shedding a weaker wave) and two shed.
    for _ in 0..5 {
        recv(&mut marker).await;
    }
    eventually("five waves offered to rx", || {
        let stats = rx.stats();
        (stats.delivered + stats.dropped(DropReason::QueueFull) == 6).then_some(())
    })
    .await;
    let got: Vec<f64> = (0..3)
        .map(|_| {
            rx.try_receive()
                .expect("three waves kept")
                .amplitude()
                .value()
        })
        .collect();
    assert_eq!(got, vec![0.5, 0.9, 0.6]);
    assert!(rx.try_receive().is_none());
    assert_eq!(rx.stats().dropped(DropReason::QueueFull), 2);
    assert_eq!(aether.stats().dropped(DropReason::QueueFull), 2);
}

pub async fn groups_share_waves_one_member_each(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut members = Vec::new();
    for i in 0..3 {
        let mut v = Vibrator::create(format!("worker-{i}"), &aether)
            .await
            .unwrap();
        v.resonate_in_group("jobs.*", "workers").await.unwrap();
        members.push(v);
    }
    let mut audit = Vibrator::create("audit", &aether).await.unwrap();
    audit.resonate_on("jobs.*").await.unwrap();
    let total = 60;
    for i in 0..total {
        tx.emit_wave("jobs.run", json!(i)).await.unwrap();
        // Over NATS, waves that leave together travel as one batch frame,
        // which one member gets whole: flushed one by one, each is a
        // message of its own and the group spreads them.
        aether.flush(Duration::from_secs(5)).await.unwrap();
    }
    for _ in 0..total {
        recv(&mut audit).await;
    }
    let mut seen = Vec::new();
    let mut per_member = Vec::new();
    for v in &mut members {
        let mut n = 0;
        while let Ok(Some(w)) = tokio::time::timeout(Duration::from_millis(200), v.receive()).await
        {
            seen.push(w.payload().as_i64().unwrap());
            n += 1;
        }
        per_member.push(n);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..total).collect::<Vec<_>>(),
        "each wave exactly once"
    );
    assert!(per_member.iter().all(|n| *n > 0), "{per_member:?}");
    assert!(
        members[0]
            .resonate_in_group("x", "bad group")
            .await
            .unwrap_err()
            .kind()
            == ResonateErrorKind::InvalidGroup
    );
}

/// A vibrator in several groups whose patterns match a wave gets it once,
/// in order, as with several patterns of its own; and so does one in a
/// group beside a resonance of its own. (On NATS each group is a queue
/// subscription of its own, and the server sends one copy to each.)
pub async fn one_delivery_per_vibrator_however_many_groups_match(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut worker = Vibrator::create("worker", &aether).await.unwrap();
    worker
        .resonate_in_group("jobs.*", "all-jobs")
        .await
        .unwrap();
    worker
        .resonate_in_group("jobs.run", "runners")
        .await
        .unwrap();
    worker.resonate_in_group("*", "everything").await.unwrap();
    let mut auditor = Vibrator::create("auditor", &aether).await.unwrap();
    auditor
        .resonate_in_group("jobs.*", "auditors")
        .await
        .unwrap();
    auditor.resonate_on("jobs.run").await.unwrap();
    let total = 50;
    for i in 0..total {
        tx.emit_wave("jobs.run", json!(i)).await.unwrap();
    }
    for v in [&mut worker, &mut auditor] {
        for i in 0..total {
            assert_eq!(recv(v).await.payload(), json!(i), "{}", v.name());
        }
        assert_silent(v).await;
        assert_eq!(v.stats().delivered, total as u64, "{}", v.name());
        assert_eq!(v.stats().dropped_total(), 0, "{}", v.name());
    }
    // Leaving groups until one is left: still once each.
    worker.stop_resonating("jobs.run").await.unwrap();
    worker.stop_resonating("*").await.unwrap();
    tx.emit_wave("jobs.run", json!("last")).await.unwrap();
    assert_eq!(recv(&mut worker).await.payload(), json!("last"));
    assert_silent(&mut worker).await;
}

/// A vibrator with a handler (`on_wave`) takes each wave in it, where the
/// wave arrives, in order and once however many of its patterns match,
/// under its noise floor and without its own waves as a queue would; its
/// queue stays empty.
pub async fn handlers_take_waves_where_they_arrive(m: &dyn Medium) {
    use std::sync::{Arc, Mutex};
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let taken = Arc::new(Mutex::new(Vec::new()));
    let into = taken.clone();
    let mut meter = Vibrator::builder("meter")
        .noise_floor(0.5)
        .skip_own_waves(true)
        .on_wave(move |wave: Wave| into.lock().unwrap().push(wave.payload()))
        .create(&aether)
        .await
        .unwrap();
    meter.resonate_on("meter.*").await.unwrap();
    meter.resonate_on("meter.a").await.unwrap();
    let mut queue = Vibrator::create("queue", &aether).await.unwrap();
    queue.resonate_on("meter.a").await.unwrap();
    let total = 40;
    for i in 0..total {
        tx.emit_wave("meter.a", json!(i)).await.unwrap();
    }
    tx.emit(
        Wave::builder("meter.a")
            .amplitude(0.2)
            .payload(json!("weak"))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    meter.emit_wave("meter.a", json!("own")).await.unwrap();
    tx.emit_wave("meter.b", json!("last")).await.unwrap();
    let mut expected: Vec<_> = (0..total).map(|i| json!(i)).collect();
    expected.push(json!("last"));
    eventually("the handler took every wave", || {
        (taken.lock().unwrap().len() >= expected.len()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*taken.lock().unwrap(), expected);
    assert!(meter.try_receive().is_none(), "nothing queued");
    assert_eq!(meter.stats().delivered, expected.len() as u64);
    assert_eq!(meter.stats().dropped(DropReason::BelowNoiseFloor), 1);
    assert_eq!(meter.stats().handler_panics, 0);
    // A queue beside it is not touched.
    for i in 0..total {
        assert_eq!(recv(&mut queue).await.payload(), json!(i));
    }
}

/// A handler that panics on a wave is counted, and takes the next wave as
/// before; other vibrators are not touched.
pub async fn a_panicking_handler_is_counted_and_goes_on(m: &dyn Medium) {
    use std::sync::{Arc, Mutex};
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let taken = Arc::new(Mutex::new(Vec::new()));
    let into = taken.clone();
    let mut fragile = Vibrator::builder("fragile")
        .on_wave(move |wave: Wave| {
            let value = wave.payload();
            assert_ne!(value, json!("boom"), "the handler fails on this one");
            into.lock().unwrap().push(value);
        })
        .create(&aether)
        .await
        .unwrap();
    fragile.resonate_on("jobs").await.unwrap();
    let mut steady = Vibrator::create("steady", &aether).await.unwrap();
    steady.resonate_on("jobs").await.unwrap();
    for value in [json!(1), json!("boom"), json!(2), json!("boom"), json!(3)] {
        tx.emit_wave("jobs", value).await.unwrap();
    }
    eventually("the handler took the waves after the panics", || {
        (taken.lock().unwrap().len() >= 3).then_some(())
    })
    .await;
    assert_eq!(*taken.lock().unwrap(), [json!(1), json!(2), json!(3)]);
    assert_eq!(fragile.stats().handler_panics, 2);
    assert_eq!(fragile.stats().delivered, 5);
    assert_eq!(aether.stats().handler_panics, 2);
    for _ in 0..5 {
        recv(&mut steady).await;
    }
    assert_eq!(steady.stats().handler_panics, 0);
    // Its queue never fills: receive() waits (nothing comes) until the
    // aether closes, then ends.
    assert!(fragile.try_receive().is_none());
    aether.close();
    assert!(fragile.receive().await.is_none());
}

pub async fn own_waves_can_be_skipped(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let mut chatty = Vibrator::builder("chatty")
        .skip_own_waves(true)
        .create(&aether)
        .await
        .unwrap();
    let mut echo = Vibrator::create("echo", &aether).await.unwrap();
    let other = Vibrator::create("other", &aether).await.unwrap();
    chatty.resonate_on("room").await.unwrap();
    echo.resonate_on("room").await.unwrap();
    chatty.emit_wave("room", json!("mine")).await.unwrap();
    echo.emit_wave("room", json!("echo's")).await.unwrap();
    other.emit_wave("room", json!("theirs")).await.unwrap();
    assert_eq!(recv(&mut chatty).await.payload(), json!("echo's"));
    assert_eq!(recv(&mut chatty).await.payload(), json!("theirs"));
    // Without the option, a vibrator hears itself, and can filter by source.
    assert_eq!(recv(&mut echo).await.source(), Some("chatty"));
    let own = recv(&mut echo).await;
    assert_eq!(own.source(), Some(echo.name()));
}

pub async fn request_gets_the_reply(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let mut server = Vibrator::create("pricing", &aether).await.unwrap();
    server.resonate_on("price.get").await.unwrap();
    let server_task = tokio::spawn(async move {
        let request = recv(&mut server).await;
        let sku = request.payload()["sku"].as_str().unwrap().to_owned();
        server
            .reply(&request, json!({"sku": sku, "price": 42}))
            .await
            .unwrap();
        server
    });
    let client = Vibrator::create("shop", &aether).await.unwrap();
    let request = Wave::builder("price.get")
        .json(&json!({"sku": "A-1"}))
        .correlation_key("A-1")
        .build()
        .unwrap();
    let reply = client
        .request_with_timeout(request, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply.payload()["price"], 42);
    assert_eq!(reply.source(), Some("pricing"));
    assert_eq!(reply.correlation_key(), "A-1");
    server_task.await.unwrap();
}

/// A vibrator receives in one task while its emitter, in another, emits and
/// asks: `request_wave` is `request` with a JSON payload, and its reply
/// comes to the vibrator's reply inbox, which outlives the vibrator while
/// an emitter holds it.
pub async fn an_emitter_emits_and_asks_while_its_vibrator_receives(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let mut pricing = Vibrator::create("pricing", &aether).await.unwrap();
    pricing.resonate_on("price.get").await.unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let request = recv(&mut pricing).await;
            let sku = request.payload()["sku"].clone();
            pricing
                .reply(&request, json!({"sku": sku, "price": 7}))
                .await
                .unwrap();
        }
    });
    let mut shop = Vibrator::create("shop", &aether).await.unwrap();
    shop.resonate_on("shop.note").await.unwrap();
    let emitter = shop.emitter();
    let asking = tokio::spawn(async move {
        emitter.emit_wave("shop.note", "asked").await.unwrap();
        let reply = emitter
            .request_wave("price.get", json!({"sku": "A-1"}))
            .await
            .unwrap();
        (emitter, reply)
    });
    assert_eq!(recv(&mut shop).await.payload(), json!("asked"));
    let (emitter, reply) = asking.await.unwrap();
    assert_eq!(reply.payload()["price"], 7);
    // The vibrator gone, its emitter still asks.
    drop(shop);
    let again = emitter
        .request_wave("price.get", json!({"sku": "B-2"}))
        .await
        .unwrap();
    assert_eq!(again.payload()["sku"], "B-2");
    server.await.unwrap();
    let err = emitter
        .request_wave("nobody.home", json!(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RequestErrorKind::NoResponders);
    assert!(err.to_string().contains("\"nobody.home\""), "{err}");
}

/// Counts the waves `receiver` takes, and answers each of `rounds` questions
/// on `question` with the count so far, yielding `work` times per wave.
async fn count_then_answer(mut receiver: Vibrator, question: &str, rounds: u64, work: u32) {
    let mut counted = 0u64;
    for _ in 0..rounds {
        loop {
            let wave = recv(&mut receiver).await;
            if wave.channel().as_str() == question {
                receiver.reply(&wave, json!(counted)).await.unwrap();
                break;
            }
            for _ in 0..work {
                tokio::task::yield_now().await;
            }
            counted += 1;
        }
    }
}

/// A request goes out after the plain waves its emitter sent before it
/// (batch frames included): a receiver whose one resonance hears both has
/// every order before the question, round after round.
pub async fn a_request_never_overtakes_the_waves_emitted_before_it(m: &dyn Medium) {
    const ROUNDS: u64 = 30;
    const ORDERS: u64 = 40;
    let aether = default_aether(m).await;
    let mut billing = Vibrator::create("billing", &aether).await.unwrap();
    billing.resonate_on("shop.*").await.unwrap();
    let server = tokio::spawn(count_then_answer(billing, "shop.quote", ROUNDS, 0));
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    for round in 0..ROUNDS {
        for i in 0..ORDERS {
            shop.emit_wave("shop.order", json!(i)).await.unwrap();
        }
        let reply = shop.request_wave("shop.quote", json!(round)).await.unwrap();
        assert_eq!(
            reply.payload(),
            json!((round + 1) * ORDERS),
            "round {round}: the quote was answered before the orders emitted ahead of it"
        );
    }
    server.await.unwrap();
}

/// Waves of one emitter come out of `receive()` in emission order, whatever
/// resonances of the receiver heard them: orders on `orders.*`, then a
/// question on `billing.quote` (plain, then in a group), with the receiver
/// slow on each order.
pub async fn one_emitter_s_waves_keep_their_order_across_resonances(m: &dyn Medium) {
    const ROUNDS: u64 = 30;
    const ORDERS: u64 = 20;
    for grouped in [false, true] {
        let aether = default_aether(m).await;
        let mut billing = Vibrator::create("billing", &aether).await.unwrap();
        billing.resonate_on("orders.*").await.unwrap();
        if grouped {
            billing
                .resonate_in_group("billing.quote", "quotes")
                .await
                .unwrap();
        } else {
            billing.resonate_on("billing.quote").await.unwrap();
        }
        // A receiver with work to do on each order.
        let server = tokio::spawn(count_then_answer(billing, "billing.quote", ROUNDS, 3));
        let shop = Vibrator::create("shop", &aether).await.unwrap();
        for round in 0..ROUNDS {
            for i in 0..ORDERS {
                let channel = if i % 5 == 4 {
                    "orders.cancelled"
                } else {
                    "orders.created"
                };
                shop.emit_wave(channel, json!(i)).await.unwrap();
            }
            let reply = shop
                .request_wave("billing.quote", json!(round))
                .await
                .unwrap();
            assert_eq!(
                reply.payload(),
                json!((round + 1) * ORDERS),
                "grouped {grouped}, round {round}: the quote overtook orders emitted before it"
            );
        }
        server.await.unwrap();
    }
}

pub async fn request_without_responders_fails_fast(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let client = Vibrator::create("shop", &aether).await.unwrap();
    let started = std::time::Instant::now();
    let err = client
        .request_with_timeout(Wave::new("nobody.home", ()), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RequestErrorKind::NoResponders);
    assert!(started.elapsed() < Duration::from_secs(2));
}

pub async fn request_times_out_without_reply(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let mut mute = Vibrator::create("mute", &aether).await.unwrap();
    mute.resonate_on("ask").await.unwrap();
    let client = Vibrator::create("shop", &aether).await.unwrap();
    let err = client
        .request_with_timeout(Wave::new("ask", ()), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RequestErrorKind::TimedOut);
    // The request itself was delivered.
    assert!(recv(&mut mute).await.reply_to().is_some());
}

pub async fn reply_needs_a_request(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let v = Vibrator::create("v", &aether).await.unwrap();
    let err = v.reply(&Wave::new("a", ()), ()).await.unwrap_err();
    assert_eq!(err.kind(), EmitErrorKind::NotARequest);
    assert_eq!(
        err.to_string(),
        format!(
            "not a request: wave {} is not a request: it has no reply channel",
            aether_core::WaveId::NIL
        )
    );
}

/// What the errors a newcomer meets first say: each prefix once, a long
/// name cut with an ellipsis, a pattern refused when the wave is built.
pub async fn errors_say_it_once(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let v = Vibrator::create("v", &aether).await.unwrap();
    let err = v.emit_wave("orders..created", 1).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid channel \"orders..created\": token 1 is empty (no leading, trailing or doubled dots)"
    );
    let long = format!("{}..x", "a".repeat(100));
    let err = v.emit_wave(long.as_str(), 1).await.unwrap_err().to_string();
    assert!(err.contains(&format!("\"{}…\"", "a".repeat(64))), "{err}");
    let built = Wave::builder("orders.*").build().unwrap_err().to_string();
    assert!(built.contains("wildcard"), "{built}");
    aether.close();
    let err = v
        .emit_wave("orders.created", 1)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err.matches("aether closed").count(), 1, "{err}");
}

pub async fn receive_wakes_on_arrival(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    rx.resonate_on("late").await.unwrap();
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let waiter = tokio::spawn(async move { recv(&mut rx).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    tx.emit_wave("late", json!("now")).await.unwrap();
    assert_eq!(waiter.await.unwrap().payload(), json!("now"));
}

pub async fn receive_is_cancel_safe(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    rx.resonate_on("c").await.unwrap();
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    for round in 0..20 {
        tokio::select! {
            _ = rx.receive() => panic!("nothing was emitted yet"),
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
        tx.emit_wave("c", json!(round)).await.unwrap();
        assert_eq!(recv(&mut rx).await.payload(), json!(round));
    }
}

pub async fn waves_arrive_in_order_as_a_stream(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    rx.resonate_on("seq").await.unwrap();
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let n = 500;
    let emitter = tx.emitter();
    let producer = tokio::spawn(async move {
        for i in 0..n {
            emitter.emit_wave("seq", json!(i)).await.unwrap();
        }
    });
    let got: Vec<i64> = (&mut rx)
        .take(n)
        .map(|w| w.payload().as_i64().unwrap())
        .collect()
        .await;
    producer.await.unwrap();
    assert_eq!(got, (0..n as i64).collect::<Vec<_>>());
}

pub async fn stop_resonating_and_drop_unsubscribe(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    rx.resonate_on("s.a").await.unwrap();
    rx.resonate_on("s.b").await.unwrap();
    rx.stop_resonating("s.a").await.unwrap();
    let error = rx.stop_resonating("s.zz").await.unwrap_err();
    assert_eq!(error.kind(), aether_core::ResonateErrorKind::NotResonating);
    assert!(error.to_string().contains("s.zz"), "{error}");
    tx.emit_wave("s.a", json!(1)).await.unwrap();
    tx.emit_wave("s.b", json!(2)).await.unwrap();
    assert_eq!(recv(&mut rx).await.payload(), json!(2));
    assert_silent(&mut rx).await;
    drop(rx);
    // A marker tells when wave 3 has been routed: only the marker got it.
    let mut marker = Vibrator::create("marker", &aether).await.unwrap();
    marker.resonate_on("s.b").await.unwrap();
    let before = aether.stats().delivered;
    tx.emit_wave("s.b", json!(3)).await.unwrap();
    assert_eq!(recv(&mut marker).await.payload(), json!(3));
    assert_silent(&mut marker).await;
    assert_eq!(aether.stats().delivered, before + 1);
}

pub async fn close_drains_then_ends(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    rx.resonate_on("z").await.unwrap();
    tx.emit_wave("z", json!(1)).await.unwrap();
    tx.emit_wave("z", json!(2)).await.unwrap();
    recv(&mut rx).await;
    // Close once wave 2 is queued (a networked medium may still carry it).
    while rx.queued() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    aether.close();
    assert!(aether.is_closed());
    assert_eq!(recv(&mut rx).await.payload(), json!(2));
    assert!(rx.receive().await.is_none());
    assert_eq!(
        tx.emit_wave("z", json!(3)).await.unwrap_err().kind(),
        EmitErrorKind::Closed
    );
    assert_eq!(
        Vibrator::create("late", &aether).await.unwrap_err().kind(),
        VibratorErrorKind::Closed
    );
}

pub async fn bad_vibrator_settings_are_refused(m: &dyn Medium) {
    let aether = default_aether(m).await;
    for bad in [
        "",
        "has space",
        "sl/ash",
        &"n".repeat(65),
        "a..b",
        ".a",
        "a.",
    ] {
        let err = Vibrator::create(bad, &aether).await.unwrap_err();
        assert_eq!(err.kind(), VibratorErrorKind::InvalidName, "{bad:?}");
    }
    let err = Vibrator::builder("ok")
        .noise_floor(-0.1)
        .create(&aether)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), VibratorErrorKind::InvalidSetting);
    assert!(err.to_string().contains("noise_floor"), "{err}");
    let err = Vibrator::builder("ok")
        .queue_capacity(0)
        .create(&aether)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), VibratorErrorKind::InvalidSetting);
}

pub async fn stats_account_for_every_wave(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut rx = Vibrator::builder("rx")
        .noise_floor(0.3)
        .create(&aether)
        .await
        .unwrap();
    rx.resonate_on("acct.*").await.unwrap();
    let amplitudes = [1.0, 0.2, 0.005, 0.9, 0.1];
    for a in amplitudes {
        tx.emit(Wave::builder("acct.x").amplitude(a).build().unwrap())
            .await
            .unwrap();
    }
    recv(&mut rx).await;
    recv(&mut rx).await;
    assert_silent(&mut rx).await;
    let stats = aether.stats();
    assert_eq!(stats.emitted, 5);
    assert_eq!(stats.delivered, 2);
    assert_eq!(stats.dropped(DropReason::Expired), 1);
    assert_eq!(stats.dropped(DropReason::BelowNoiseFloor), 2);
    assert_eq!(
        stats.emitted,
        stats.delivered + stats.unrouted + stats.dropped_total()
    );
}

/// Instantiates every case for one medium: `behaviour_suite!(factory)`,
/// with `factory: impl Medium` built once per test.
#[macro_export]
macro_rules! behaviour_suite {
    ($factory:expr) => {
        $crate::behaviour_suite!(@cases $factory;
            delivers_on_exact_channel,
            wildcard_delivery_sets,
            unmatched_waves_are_not_delivered,
            invalid_channels_are_refused_and_nothing_is_sent,
            system_channels_are_refused_to_applications,
            one_delivery_per_vibrator_however_many_patterns_match,
            noise_floor_hides_weak_waves_and_counts_them,
            dead_waves_expire_and_are_counted,
            time_decay_kills_relayed_waves,
            hops_attenuate_by_the_configured_factor,
            propagation_limit_drops_looping_waves,
            propagation_limit_holds_at_its_maximum,
            full_queue_sheds_the_weakest_first,
            groups_share_waves_one_member_each,
            one_delivery_per_vibrator_however_many_groups_match,
            own_waves_can_be_skipped,
            handlers_take_waves_where_they_arrive,
            a_panicking_handler_is_counted_and_goes_on,
            request_gets_the_reply,
            request_without_responders_fails_fast,
            request_times_out_without_reply,
            reply_needs_a_request,
            an_emitter_emits_and_asks_while_its_vibrator_receives,
            a_request_never_overtakes_the_waves_emitted_before_it,
            one_emitter_s_waves_keep_their_order_across_resonances,
            errors_say_it_once,
            receive_wakes_on_arrival,
            receive_is_cancel_safe,
            waves_arrive_in_order_as_a_stream,
            stop_resonating_and_drop_unsubscribe,
            close_drains_then_ends,
            bad_vibrator_settings_are_refused,
            stats_account_for_every_wave,
            followers_hear_conflicts_and_nothing_unrelated,
            followers_hear_a_standing_wave,
            the_resonance_graph_shows_who_hears_whom,
            diffracting_waves_bend_to_the_nearest_parent_with_a_resonator,
            undeliverable_waves_reflect_to_their_source,
            receivers_reflect_waves_they_refuse,
        );
    };
    (@cases $factory:expr; $($case:ident,)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let medium = $factory;
                behaviour::within(behaviour::$case(&medium)).await;
            }
        )+
    };
}
