//! The behaviour suite's cases of the physics that every medium shows: the
//! engine's followers (interference, standing waves), the resonance graph,
//! diffraction, and reflections of undeliverable and refused waves.

#[allow(clippy::wildcard_imports)]
use super::*;

pub async fn followers_hear_conflicts_and_nothing_unrelated(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let mut inventory = Vibrator::create("inventory", &aether).await.unwrap();
    inventory.resonate_on("orders.*").await.unwrap();
    let mut audit = Vibrator::create("audit", &aether).await.unwrap();
    audit.resonate_on("*").await.unwrap();
    let mut orders = inventory.follow_interference("orders.*").unwrap();
    let physics = aether.physics();
    let mut everything = physics.events();
    let shop = Vibrator::create("shop", &aether).await.unwrap();

    // Unrelated waves: other channels, keys and payloads.
    for (i, channel) in ["orders.created", "orders.paid", "users.created"]
        .into_iter()
        .enumerate()
    {
        let wave = Wave::builder(channel).correlation_key(format!("k-{i}"));
        shop.emit(wave.json(&i).build().unwrap()).await.unwrap();
    }
    // A conflict on a channel this follower does not follow.
    for phase in [Phase::ASSERT, Phase::RETRACT] {
        let wave = Wave::builder("users.review").correlation_key("user-7");
        shop.emit(wave.phase(phase).build().unwrap()).await.unwrap();
    }
    // Approved and rejected, for the same order.
    let review = |verdict: &str, phase: Phase| {
        Wave::builder("orders.review")
            .correlation_key("order-42")
            .phase(phase)
            .json(&verdict)
            .build()
            .unwrap()
    };
    let approved = shop.emit(review("approved", Phase::ASSERT)).await.unwrap();
    let rejected = shop.emit(review("rejected", Phase::RETRACT)).await.unwrap();

    // Inventory hears the four orders waves and audit all seven: once the
    // engine has observed the eleven deliveries, it has said all it will.
    eventually("11 deliveries observed", || {
        (physics.stats().observed == 11).then_some(())
    })
    .await;
    let stats = physics.stats();
    assert_eq!(stats.dropped_buffer_full + stats.skipped_over_budget, 0);
    assert_eq!(stats.events_total(), 2, "{stats:?}");
    assert_eq!(stats.cancellations, 2, "{stats:?}");
    let mut all = [
        next_event(everything.next()).await,
        next_event(everything.next()).await,
    ];
    assert!(everything.try_next().is_none());
    all.sort_by(|a, b| a.channel.as_str().cmp(b.channel.as_str()));
    assert_eq!(all[1].channel, "users.review");

    let event = orders.try_next().expect("the orders cancellation");
    assert!(orders.try_next().is_none(), "users.review is not followed");
    assert_eq!(event, all[0]);
    assert_eq!(event.pattern, InterferencePattern::Cancellation);
    assert_eq!(event.channel, "orders.review");
    assert_eq!(event.correlation_key, "order-42");
    // Heard by inventory and audit, each wave counts once. (In the order
    // the engine observed them, which over NATS need not be the order of
    // emission: each subscription delivers on its own.)
    let mut waves: Vec<_> = event
        .waves
        .iter()
        .map(|w| (w.id(), w.phase(), w.source()))
        .collect();
    waves.sort_by_key(|(id, _, _)| *id);
    assert_eq!(
        waves,
        [
            (approved, Phase::ASSERT, Some("shop")),
            (rejected, Phase::RETRACT, Some("shop"))
        ]
    );
    assert!(event.resultant_amplitude < 1e-9);
}

pub async fn followers_hear_a_standing_wave(m: &dyn Medium) {
    // A machine under load wakes late now and then: allow the intervals to
    // vary by up to 90 % of their mean.
    let aether = m
        .aether(AetherConfig {
            physics: PhysicsConfig {
                standing_jitter: 0.9,
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
    let mut worker = Vibrator::create("worker", &aether).await.unwrap();
    worker.resonate_on("jobs.*").await.unwrap();
    let mut loops = worker.follow_interference("jobs.*").unwrap();
    let stuck = Vibrator::create("stuck", &aether).await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..10 {
        tick.tick().await;
        stuck
            .emit_wave("jobs.retry", json!({"job": 9}))
            .await
            .unwrap();
    }
    // The same payload repeated: constructive at first, then a standing wave.
    let standing = loop {
        let event = next_event(loops.next()).await;
        match event.pattern {
            InterferencePattern::StandingWave => break event,
            other => assert_eq!(other, InterferencePattern::Constructive, "{event:?}"),
        }
    };
    assert_eq!(standing.channel, "jobs.retry");
    assert_eq!(standing.waves.len(), 4, "standing_min_repeats");
    let period = standing.period.expect("a standing wave has a period");
    assert!(
        period >= Duration::from_millis(10) && period <= Duration::from_millis(200),
        "{period:?}"
    );
}

pub async fn the_resonance_graph_shows_who_hears_whom(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let physics = aether.physics();
    assert!(physics.is_running());
    let mut inventory = Vibrator::create("inventory", &aether).await.unwrap();
    inventory.resonate_on("orders.*").await.unwrap();
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    for i in 0..5 {
        shop.emit_wave("orders.created", json!(i)).await.unwrap();
    }
    for _ in 0..5 {
        recv(&mut inventory).await;
    }
    let edge = eventually("an edge of 5 deliveries", || {
        physics.edges().into_iter().find(|e| e.deliveries == 5)
    })
    .await;
    assert_eq!(edge.emitter, "shop");
    assert_eq!(edge.resonator, "inventory");
    assert_eq!(edge.channel, "orders.created");
    assert!(edge.rate_per_s > 0.0, "{edge:?}");
    assert_near(edge.mean_amplitude, 1.0, "mean amplitude");
    assert_eq!(physics.edges().len(), 1);
    assert_eq!(physics.stats().observed, 5);
}

pub async fn diffracting_waves_bend_to_the_nearest_parent_with_a_resonator(m: &dyn Medium) {
    let aether = m
        .aether(AetherConfig {
            physics: PhysicsConfig {
                diffraction_factor: 0.4,
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
    let mut alerts = Vibrator::create("alerts", &aether).await.unwrap();
    alerts.resonate_on("alerts").await.unwrap();
    let mut metrics = Vibrator::create("metrics", &aether).await.unwrap();
    metrics.resonate_on("metrics").await.unwrap();
    let mut tx = Vibrator::create("tx", &aether).await.unwrap();
    let diffracting = |channel: &str, tag: &str| {
        Wave::builder(channel)
            .diffracting(true)
            .json(&tag)
            .build()
            .unwrap()
    };

    // Not diffracting: not bent (were it bent, it would arrive first).
    tx.emit_wave("alerts.net", json!("plain")).await.unwrap();
    // To the parent, one hop, weakened by the factor.
    tx.emit(diffracting("alerts.disk", "disk")).await.unwrap();
    let wave = recv(&mut alerts).await;
    assert_eq!(wave.payload(), json!("disk"), "the plain wave was bent");
    assert_eq!(wave.channel(), "alerts");
    assert_eq!(wave.propagation_count(), 1);
    assert!(wave.is_diffracting());
    assert_near(wave.source_amplitude().value(), 0.4, "a0");
    assert_near(wave.amplitude().value(), 0.4 * 0.95, "amplitude");
    assert_eq!(aether.stats().diffracted, 1);

    // To the grandparent when the parent has nobody: two bends.
    tx.emit(diffracting("metrics.cpu.load", "cpu"))
        .await
        .unwrap();
    let wave = recv(&mut metrics).await;
    assert_eq!(wave.channel(), "metrics");
    assert_eq!(wave.propagation_count(), 2);
    assert_near(wave.amplitude().value(), 0.16 * 0.95 * 0.95, "amplitude");
    assert_eq!(aether.stats().diffracted, 3);

    // Nobody on any parent: unrouted, and back to its source if it reflects,
    // on the channel it was emitted on.
    let lost = Wave::builder("void.deep.down")
        .diffracting(true)
        .reflect_on_failure(true)
        .build()
        .unwrap();
    let id = tx.emit(lost).await.unwrap();
    let echo = recv(&mut tx).await;
    assert_eq!(echo.id(), id);
    assert_eq!(echo.channel(), "void.deep.down");
    assert_eq!(echo.reflection(), Some(&ReflectionReason::NoResonator));
    assert_eq!(aether.stats().diffracted, 5);
    assert_silent(&mut alerts).await;
}

/// Checks `echo` is `id` reflected for `reason`, from phase `sent`.
fn assert_reflected(echo: &Wave, id: aether_core::WaveId, sent: Phase, reason: ReflectionReason) {
    assert!(echo.is_reflected(), "{echo:?}");
    assert_eq!(echo.reflection(), Some(&reason), "{echo:?}");
    assert_eq!(echo.id(), id);
    assert_eq!(echo.phase(), sent.inverted(), "phase shifted by π");
    assert_eq!(echo.amplitude().value(), 1.0);
    assert!(!echo.reflects_on_failure());
}

pub async fn undeliverable_waves_reflect_to_their_source(m: &dyn Medium) {
    let aether = m
        .aether(AetherConfig {
            max_propagation: 3,
            ..Default::default()
        })
        .await;
    // A vibrator that skips its own waves still gets its reflections.
    let mut shop = Vibrator::builder("shop")
        .skip_own_waves(true)
        .create(&aether)
        .await
        .unwrap();
    let mut relay = Vibrator::create("relay", &aether).await.unwrap();
    relay.resonate_on("relay.*").await.unwrap();

    // Nobody resonates on its channel.
    let order = Wave::builder("nobody.home")
        .correlation_key("order-7")
        .reflect_on_failure(true)
        .json(&json!({"order_id": 7}));
    let id = shop.emit(order.build().unwrap()).await.unwrap();
    let echo = recv(&mut shop).await;
    assert_reflected(&echo, id, Phase::ASSERT, ReflectionReason::NoResonator);
    assert_eq!(echo.channel(), "nobody.home");
    assert_eq!(echo.correlation_key(), "order-7");
    assert_eq!(echo.payload()["order_id"], 7);
    assert_eq!(echo.source(), Some("shop"));

    // A wave that dies: relayed after its time to live (200 ms, long enough
    // to arrive alive on a loaded machine).
    let short = Wave::builder("relay.short")
        .time_to_live(Duration::from_millis(200), 0.01)
        .phase(Phase::RETRACT)
        .reflect_on_failure(true)
        .build()
        .unwrap();
    let id = shop.emit(short).await.unwrap();
    let mut got = recv(&mut relay).await;
    assert!(got.reflects_on_failure());
    tokio::time::sleep(Duration::from_millis(400)).await;
    got.propagate();
    relay.emit(got).await.unwrap();
    let echo = recv(&mut shop).await;
    assert_reflected(&echo, id, Phase::RETRACT, ReflectionReason::Expired);
    assert_eq!(echo.channel(), "relay.short");
    assert_eq!(echo.decay_per_s(), 0.0);

    // A wave relayed past the hop limit comes back to its first emitter.
    let id = shop
        .emit(
            Wave::builder("relay.loop")
                .reflect_on_failure(true)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let mut looping = recv(&mut relay).await;
    for _ in 0..4 {
        looping.propagate();
    }
    relay.emit(looping).await.unwrap();
    let echo = recv(&mut shop).await;
    assert_reflected(&echo, id, Phase::ASSERT, ReflectionReason::PropagationLimit);
    assert_eq!(echo.propagation_count(), 0);

    let stats = aether.stats();
    assert_eq!(stats.reflected, 3);
    assert_eq!(stats.dropped(DropReason::Expired), 1);
    assert_eq!(stats.dropped(DropReason::PropagationLimit), 1);
    assert_silent(&mut relay).await;
}

pub async fn receivers_reflect_waves_they_refuse(m: &dyn Medium) {
    let aether = default_aether(m).await;
    let mut inventory = Vibrator::create("inventory", &aether).await.unwrap();
    inventory.resonate_on("orders.*").await.unwrap();
    let mut shop = Vibrator::create("shop", &aether).await.unwrap();
    let order = |n: u32| {
        Wave::builder("orders.created")
            .correlation_key(format!("order-{n}"))
            .reflect_on_failure(true)
            .json(&json!({"order_id": n}))
            .build()
            .unwrap()
    };

    let id = shop.emit(order(9)).await.unwrap();
    let got = recv(&mut inventory).await;
    let out_of_stock = ReflectionReason::Refused("out of stock".into());
    inventory.reflect(&got, out_of_stock.clone()).await.unwrap();
    let echo = recv(&mut shop).await;
    assert_reflected(&echo, id, Phase::ASSERT, out_of_stock);
    assert_eq!(echo.channel(), "orders.created");
    assert_eq!(echo.correlation_key(), "order-9");
    assert_eq!(echo.payload()["order_id"], 9);

    // A handler error: a negative acknowledgement.
    let id = shop.emit(order(10)).await.unwrap();
    let got = recv(&mut inventory).await;
    let failed = ReflectionReason::HandlerError("database unreachable".into());
    inventory.reflect(&got, failed.clone()).await.unwrap();
    let echo = recv(&mut shop).await;
    assert_reflected(&echo, id, Phase::ASSERT, failed);

    // Only a wave that asked for it, and never a reflection.
    shop.emit_wave("orders.created", json!("plain"))
        .await
        .unwrap();
    let plain = recv(&mut inventory).await;
    let refused = ReflectionReason::Refused("no".into());
    let err = inventory
        .reflect(&plain, refused.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), EmitErrorKind::Reflection);
    let err = shop.reflect(&echo, refused).await.unwrap_err();
    assert_eq!(err.kind(), EmitErrorKind::Reflection);

    assert_eq!(aether.stats().reflected, 2);
    assert_eq!(inventory.stats().emitted, 2);
    assert_silent(&mut shop).await;
}
