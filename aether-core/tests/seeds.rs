//! The core-API snippets users know from the product's first documents,
//! compiled and run. Each test keeps a snippet's statements as they were
//! written (adding only `?`/`unwrap` and a harness); helper tasks play the
//! other services and close the aether so that `while let` loops end.

use std::time::Duration;

use aether_core::{Aether, AetherConfig, Channel, DropReason, Vibrator, Wave};
use serde_json::json;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Receives one wave or fails after 5 s.
async fn recv(v: &mut Vibrator) -> Wave {
    tokio::time::timeout(Duration::from_secs(5), v.receive())
        .await
        .expect("no wave within 5 s")
        .expect("aether closed")
}

// README: "Initialize the Aether layer".
#[tokio::test]
async fn readme_initialize() -> Result {
    let aether = Aether::new(AetherConfig::default())?;
    assert_eq!(aether.config(), &AetherConfig::default());
    let aether = Aether::default();
    assert!(!aether.is_closed());
    Ok(())
}

// README: "Create a service": resonate, receive in a loop, emit.
#[tokio::test]
async fn readme_create_a_service() -> Result {
    let aether = Aether::default();
    let helper = {
        let aether = aether.clone();
        tokio::spawn(async move {
            let other = Vibrator::create("orders-source", &aether).await.unwrap();
            other.emit_wave("orders", json!({"n": 1})).await.unwrap();
            other.emit_wave("orders", json!({"n": 2})).await.unwrap();
            // Let the loop take both waves, then end it.
            while aether.stats().delivered < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            aether.close();
        })
    };
    let payload = json!({"order_id": "123"});
    let mut seen = 0;

    let mut vibrator = Vibrator::new("service-alpha", &aether)?;

    // Listen on a specific frequency (channel)
    vibrator.resonate_on(Channel::new("orders")).await?;

    // Receive messages
    while let Some(wave) = vibrator.receive().await {
        println!("Received wave: {:?}", wave);
        seen += 1;
    }

    // Send a message: the aether was closed to end the loop above, so the
    // emit is refused with a typed error rather than lost.
    let sent = vibrator.emit(Wave::new("order.created", payload)).await;
    assert_eq!(seen, 2);
    assert_eq!(sent.unwrap_err().kind(), aether_core::EmitErrorKind::Closed);
    helper.await?;
    Ok(())
}

// README quick start, steps 1-3.
#[tokio::test]
async fn readme_quick_start() -> Result {
    let aether = Aether::default();
    let mut watcher = Vibrator::create("watcher", &aether).await?;
    watcher.resonate_on("user.created").await?;

    let mut service = Vibrator::create("my-service", &aether).await?;
    service.resonate_on(Channel::new("events")).await?;

    // Send
    service
        .emit_wave(
            Channel::new("user.created"),
            serde_json::json!({"user_id": "123"}),
        )
        .await?;
    assert_eq!(recv(&mut watcher).await.payload()["user_id"], "123");

    let feeder = Vibrator::create("feeder", &aether).await?;
    feeder.emit_wave("events", json!({"kind": "ping"})).await?;
    let closer = aether.clone();
    tokio::spawn(async move {
        while closer.stats().delivered < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        closer.close();
    });

    // Receive
    let mut received = Vec::new();
    while let Some(wave) = service.receive().await {
        println!("Received: {:?}", wave.payload());
        received.push(wave.payload());
    }
    assert_eq!(received, vec![json!({"kind": "ping"})]);
    Ok(())
}

// ARCHITECTURE, Example 1: simple event notification.
#[tokio::test]
async fn architecture_example_1_notifier() -> Result {
    let aether = Aether::default();
    let helper = {
        let aether = aether.clone();
        tokio::spawn(async move {
            let mut mailer = Vibrator::create("mailer", &aether).await.unwrap();
            mailer.resonate_on("email.send").await.unwrap();
            let signup = Vibrator::create("signup", &aether).await.unwrap();
            signup
                .emit_wave("user.registered", json!({"email": "ada@example.org"}))
                .await
                .unwrap();
            let mail = recv(&mut mailer).await;
            aether.close();
            mail
        })
    };

    let mut service = Vibrator::create("notifier", &aether).await?;

    service.resonate_on(Channel::new("user.registered")).await?;

    while let Some(wave) = service.receive().await {
        println!("New user registered: {:?}", wave.payload());

        // Send welcome email
        service
            .emit_wave(
                Channel::new("email.send"),
                serde_json::json!({
                    "to": wave.payload()["email"],
                    "template": "welcome"
                }),
            )
            .await
            .unwrap();
    }

    let mail = helper.await?;
    assert_eq!(mail.payload()["to"], "ada@example.org");
    assert_eq!(mail.payload()["template"], "welcome");
    assert_eq!(mail.source(), Some("notifier"));
    Ok(())
}

// ARCHITECTURE, Example 2: one emit reaches every interested service.
#[tokio::test]
async fn architecture_example_2_cooperation() -> Result {
    let aether = Aether::default();
    let mut services = Vec::new();
    for name in ["inventory", "payment", "notification"] {
        let mut v = Vibrator::create(name, &aether).await?;
        v.resonate_on(Channel::new("orders.*")).await?;
        services.push(v);
    }
    let service = Vibrator::create("orders", &aether).await?;

    // Order service
    service
        .emit_wave(
            Channel::new("orders.created"),
            json!({"order_id": "123", "items": ["A", "B"]}),
        )
        .await?;

    for v in &mut services {
        let wave = recv(v).await;
        assert_eq!(wave.payload()["items"][1], "B");
    }
    Ok(())
}

// ARCHITECTURE: attenuation, channels, resonance.
#[tokio::test]
async fn architecture_attenuation_and_channels() -> Result {
    let mut wave = Wave::new("orders.created", json!({}));
    // Natural decay over time
    wave.apply_time_decay();
    assert_eq!(wave.amplitude().value(), 1.0, "no decay configured");

    // Decay on each propagation
    wave.propagate(); // amplitude becomes 0.95x
    assert!((wave.amplitude().value() - 0.95).abs() < 1e-12);

    let aether = Aether::default();
    let mut vibrator = Vibrator::create("orders-watcher", &aether).await?;
    // Resonate at a specific frequency (channel)
    vibrator.resonate_on(Channel::new("orders.*")).await?;

    // Basic channel
    let basic = Channel::new("orders");
    // Hierarchical channels
    let created = Channel::new("orders.created");
    let updated = Channel::new("orders.updated");
    // Wildcard matching
    let all_orders = Channel::new("orders.*"); // All orders events
    let everything = Channel::new("*"); // All channels

    assert!(created.matches(&all_orders) && updated.matches(&all_orders));
    assert!(!basic.matches(&all_orders));
    assert!(basic.matches(&everything) && created.matches(&everything));
    Ok(())
}

// ARCHITECTURE: priority control with amplitude.
#[tokio::test]
async fn architecture_priority_with_amplitude() -> Result {
    let channel = Channel::new("orders.high_priority");
    // High‑priority messages with higher amplitude
    let high = Wave::builder(channel.clone())
        .amplitude(1.0) // highest priority
        .build()?;

    // Normal messages
    let normal = Wave::builder(channel)
        .amplitude(0.5) // normal priority
        .build()?;

    // Under pressure the stronger wave is the one kept.
    let aether = Aether::default();
    let mut rx = Vibrator::builder("rx")
        .queue_capacity(1)
        .create(&aether)
        .await?;
    rx.resonate_on("orders.*").await?;
    let tx = Vibrator::create("tx", &aether).await?;
    tx.emit(normal).await?;
    tx.emit(high).await?;
    assert_eq!(recv(&mut rx).await.amplitude().value(), 1.0);
    assert_eq!(rx.stats().dropped(DropReason::QueueFull), 1);
    Ok(())
}

// ARCHITECTURE: adjust attenuation factors; increase buffer size.
#[tokio::test]
async fn architecture_config_literals() -> Result {
    let config = AetherConfig {
        attenuation_factor: 0.95, // gentle attenuation
        max_propagation: 10,      // max 10 hops
        ..Default::default()
    };
    assert_eq!(Aether::new(config)?.config().max_propagation, 10);

    let config = AetherConfig {
        channel_buffer_size: 10000, // default: 1000
        ..Default::default()
    };
    assert_eq!(AetherConfig::default().channel_buffer_size, 1000);
    assert_eq!(Aether::new(config)?.config().channel_buffer_size, 10000);
    Ok(())
}

// ARCHITECTURE, troubleshooting: messages do not arrive.
#[tokio::test]
async fn troubleshooting_messages_do_not_arrive() -> Result {
    let aether = Aether::default();
    let wave = Wave::new("orders.created", json!({}));

    // Solution 1: Check channel matching
    let channel = Channel::new("orders.created");
    let pattern = Channel::new("orders.*");
    assert!(channel.matches(&pattern));

    // Solution 2: Check amplitude threshold
    assert!(wave.amplitude().value() > 0.01);

    // Solution 3: Check propagation count limits
    assert!(wave.propagation_count() < aether.config().max_propagation);
    Ok(())
}

// ARCHITECTURE, troubleshooting: duplicate messages (filter your own).
#[tokio::test]
async fn troubleshooting_duplicate_messages() -> Result {
    let aether = Aether::default();
    let mut vibrator = Vibrator::create("chat", &aether).await?;
    vibrator.resonate_on("room").await?;
    let other = Vibrator::create("friend", &aether).await?;
    vibrator.emit_wave("room", json!("mine")).await?;
    other.emit_wave("room", json!("theirs")).await?;
    let closer = aether.clone();
    tokio::spawn(async move {
        while closer.stats().delivered < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        closer.close();
    });

    let mut kept = Vec::new();
    while let Some(wave) = vibrator.receive().await {
        // Solution: Check the source and filter your own messages
        if wave.source() == Some(vibrator.name()) {
            continue; // skip messages sent by yourself
        }
        kept.push(wave.payload());
    }
    assert_eq!(kept, vec![json!("theirs")]);
    Ok(())
}

// ARCHITECTURE: CQRS, saga, error handling, logging and the test example.
#[tokio::test]
async fn architecture_patterns() -> Result {
    let aether = Aether::default();
    let mut saga = Vibrator::create("saga", &aether).await?;
    let vibrator = Vibrator::create("cqrs", &aether).await?;
    saga.resonate_on("saga.*").await?;
    saga.resonate_on("commands.*").await?;
    saga.resonate_on("queries.*").await?;
    let command_payload = json!({"order": 1});
    let query_payload = json!({"order": 1});

    // Command
    vibrator
        .emit_wave(Channel::new("commands.create_order"), command_payload)
        .await?;
    // Query
    vibrator
        .emit_wave(Channel::new("queries.get_order"), query_payload)
        .await?;
    assert_eq!(recv(&mut saga).await.channel(), "commands.create_order");
    assert_eq!(recv(&mut saga).await.channel(), "queries.get_order");

    // Saga: each step resonates on the previous one and emits the next.
    let steps = [
        ("saga.order.start", "saga.inventory.reserve"),
        ("saga.inventory.reserve", "saga.payment.process"),
        ("saga.payment.process", "saga.order.complete"),
    ];
    vibrator.emit_wave(steps[0].0, json!({"order": 7})).await?;
    for (heard, next) in steps {
        let wave = recv(&mut saga).await;
        assert_eq!(wave.channel(), heard);
        saga.emit_wave(next, wave.payload()).await?;
    }
    assert_eq!(recv(&mut saga).await.channel(), "saga.order.complete");

    // Error handling
    let channel = Channel::new("bad channel");
    let payload = json!({});
    let mut failed = false;
    if let Err(e) = vibrator.emit_wave(channel, payload).await {
        tracing::error!("Send failed: {}", e);
        failed = true;
        // retry logic
    }
    assert!(failed);

    // Logging and monitoring
    let wave = Wave::new("orders.created", ());
    tracing::info!(
        "Wave received: channel={}, amplitude={:.2}",
        wave.channel(),
        wave.amplitude().value()
    );
    Ok(())
}

// ARCHITECTURE, best practices: the test example, verbatim.
#[tokio::test]
async fn test_wave_propagation() {
    let aether = Aether::default();
    let sender = Vibrator::create("sender", &aether).await.unwrap();
    let mut receiver = Vibrator::create("receiver", &aether).await.unwrap();

    receiver.resonate_on(Channel::new("test")).await.unwrap();

    sender
        .emit_wave(Channel::new("test"), json!({"data": "test"}))
        .await
        .unwrap();

    let wave = receiver.receive().await;
    assert!(wave.is_some());
}

// The `[aether]` section of config/default.toml is the default
// configuration, but for what the shipped settings turn on: instance reports
// and the sample saga's durable channels, with bounded retention. (The
// programs' loaders are held to this plain reading of the file in their own
// crates' tests.)
#[test]
fn default_toml_matches_default_config() -> Result {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/default.toml");
    let loaded = config::Config::builder()
        .add_source(config::File::with_name(path))
        .build()?
        .get::<AetherConfig>("aether")?;
    assert_eq!(loaded, shipped());
    Ok(())
}

/// Every duration of `[aether]` is read as milliseconds or as text with its
/// unit, from a file as from the environment; a text that is neither is
/// refused, saying what it takes.
#[test]
fn durations_are_read_as_milliseconds_or_with_their_unit() -> Result {
    let toml = r#"
        [aether]
        request_timeout_ms = "2.5s"
        [aether.durability]
        ack_wait_ms = "1m"
        max_age_ms = "2h"
        duplicate_window_ms = 60000
        [aether.state]
        anti_entropy_interval_ms = "250ms"
        [aether.nats]
        connect_timeout_ms = "3s"
    "#;
    let loaded: AetherConfig = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("AETHER_DURATIONS_TEST")
                .prefix_separator("__")
                .separator("__")
                .source(Some(
                    [
                        (
                            "AETHER_DURATIONS_TEST__AETHER__PHYSICS__COHERENCE_WINDOW_MS"
                                .to_string(),
                            "750ms".to_string(),
                        ),
                        (
                            "AETHER_DURATIONS_TEST__AETHER__REPORT__INTERVAL_MS".to_string(),
                            "2000".to_string(),
                        ),
                    ]
                    .into_iter()
                    .collect(),
                )),
        )
        .build()?
        .get("aether")?;
    loaded.validate()?;
    assert_eq!(loaded.request_timeout, Duration::from_millis(2500));
    assert_eq!(loaded.durability.ack_wait, Duration::from_secs(60));
    assert_eq!(loaded.durability.max_age, Duration::from_secs(7200));
    assert_eq!(loaded.durability.duplicate_window, Duration::from_secs(60));
    assert_eq!(
        loaded.state.anti_entropy_interval,
        Duration::from_millis(250)
    );
    assert_eq!(loaded.nats.connect_timeout, Duration::from_secs(3));
    assert_eq!(loaded.physics.coherence_window, Duration::from_millis(750));
    assert_eq!(loaded.report.interval, Duration::from_secs(2));
    let bad = config::Config::builder()
        .add_source(config::File::from_str(
            "[aether.durability]\nack_wait_ms = \"five seconds\"",
            config::FileFormat::Toml,
        ))
        .build()?
        .get::<AetherConfig>("aether")
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("\"five seconds\"") && bad.contains("\"5s\""),
        "{bad}"
    );
    Ok(())
}

/// A wave emitted `at_ms` after an arbitrary instant, with any phase and key
/// (`wire::Parts` builds waves with a given emission time, so the physics
/// snippets need no sleeping).
fn wave_at(channel: &str, key: &str, phase: f64, payload: &str, at_ms: u64) -> Wave {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    aether_core::wire::Parts {
        id: u128::from(NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        emitted_at_ns: (1_700_000_000_000 + at_ms) * 1_000_000,
        phase,
        source: Some("orders-service".to_string()),
        correlation_key: Some(key.to_string()),
        payload: payload.to_string().into(),
        ..Default::default()
    }
    .into_wave(Channel::new(channel))
    .expect("valid wave")
}

// ARCHITECTURE, Example 3: using the physics engine. A stuck producer repeats
// the same order every 100 ms (a standing wave), then the order is approved
// and rejected at once (a cancellation).
#[test]
fn architecture_example_3_physics_engine() {
    use aether_core::InterferencePattern;
    use aether_core::{Interference, PhysicsEngine};

    let approved = wave_at("orders", "order-7", 0.0, "approved", 1000);
    let rejected = wave_at("orders", "order-7", std::f64::consts::PI, "rejected", 1020);
    let mut waves = (0..4)
        .map(|n| {
            wave_at(
                "orders",
                &format!("retry-{n}"),
                0.0,
                r#"{"order_id":1}"#,
                n * 100,
            )
        })
        .collect::<Vec<_>>();
    waves.extend([approved.clone(), rejected.clone()]);
    let (mut standing, mut cancelled) = (0, 0);

    let mut physics = PhysicsEngine::new();

    for wave in waves {
        // Detect interference patterns
        if let Some(pattern) = physics.detect_patterns("orders", wave) {
            match pattern {
                InterferencePattern::StandingWave => {
                    println!("Standing wave detected: the same pattern repeats");
                    standing += 1;
                }
                InterferencePattern::Cancellation => {
                    println!("Wave cancellation detected: conflicting messages exist");
                    cancelled += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!((standing, cancelled), (1, 1));
    let interference: Interference = physics.calculate_interference(&approved, &rejected);
    assert!(interference.coherent && interference.amplitude < 1e-9);
}

// ARCHITECTURE, Example 3 over a live aether: approved and rejected for the
// same order, emitted by two services and heard by a third.
#[tokio::test]
async fn architecture_physics_engine_on_received_waves() -> Result {
    use aether_core::{InterferencePattern, Phase, PhysicsEngine};

    let aether = Aether::default();
    let mut auditor = Vibrator::create("auditor", &aether).await?;
    auditor.resonate_on("orders.*").await?;
    let risk = Vibrator::create("risk", &aether).await?;
    let fraud = Vibrator::create("fraud", &aether).await?;
    let decision = |channel: &str, phase: Phase| {
        Wave::builder(Channel::new(channel))
            .correlation_key("order-7")
            .phase(phase)
            .build()
    };
    risk.emit(decision("orders.approved", Phase::ASSERT)?)
        .await?;
    fraud
        .emit(decision("orders.rejected", Phase::RETRACT)?)
        .await?;

    let mut physics = PhysicsEngine::new();
    let first = recv(&mut auditor).await;
    assert_eq!(physics.detect_patterns("orders", first), None);
    let wave = recv(&mut auditor).await;
    let event = physics.detect_on("orders", &wave).expect("a cancellation");
    assert_eq!(event.pattern, InterferencePattern::Cancellation);
    let sources: Vec<_> = event.waves.iter().map(|w| w.source()).collect();
    assert_eq!(sources, [Some("risk"), Some("fraud")]);
    Ok(())
}

// ARCHITECTURE: interference. In-phase waves reinforce, out-of-phase waves
// weaken.
#[test]
fn architecture_interference() -> Result {
    use aether_core::{InterferenceKind, PhysicsEngine};

    let physics_engine = PhysicsEngine::new();
    let strong = |phase: f64| {
        Wave::builder("orders.review")
            .amplitude(0.8)
            .phase(phase)
            .build()
    };
    let weak = |phase: f64| {
        Wave::builder("orders.review")
            .amplitude(0.5)
            .phase(phase)
            .build()
    };

    // Constructive interference: in‑phase waves reinforce
    let (wave1, wave2) = (strong(0.0)?, weak(0.0)?);
    let interference = physics_engine.calculate_interference(&wave1, &wave2);
    assert!((interference.amplitude - 1.3).abs() < 1e-9);
    assert_eq!(interference.kind, InterferenceKind::Constructive);

    // Destructive interference: out‑of‑phase waves weaken
    let (wave1, wave2) = (strong(0.0)?, weak(std::f64::consts::PI)?);
    let interference = physics_engine.calculate_interference(&wave1, &wave2);
    assert!((interference.amplitude - 0.3).abs() < 1e-9);
    assert_eq!(interference.kind, InterferenceKind::Destructive);
    assert!(interference.coherent);
    Ok(())
}

// README: "Time-synchronized hopping & noise floor (quick demo)": the channel
// rotates every slot, and the receiver gets the wave on its base channel.
#[tokio::test]
async fn readme_time_synchronized_hopping() -> Result {
    let aether = Aether::default();
    use aether_core::{Channel, Vibrator, Wave};

    let hop_count = 4;
    let hop_interval_ms = 200;

    let mut receiver = Vibrator::create("receiver", &aether).await?;
    receiver
        .resonate_hopping(Channel::new("orders"), hop_count)
        .await?;

    let sender = Vibrator::create("sender", &aether).await?;
    sender
        .emit_time_hopping_wave(
            Channel::new("orders"),
            hop_count,
            hop_interval_ms,
            serde_json::json!({"msg": "hop"}),
        )
        .await?;

    let wave: Wave = recv(&mut receiver).await;
    assert_eq!(wave.channel(), "orders");
    assert_eq!(wave.payload()["msg"], "hop");
    assert_eq!(wave.source(), Some("sender"));
    Ok(())
}

/// The library's default configuration but for what the shipped settings
/// turn on: instance reports, the sample saga's durable channels with
/// bounded retention, and beta's two answers correlated.
fn shipped() -> AetherConfig {
    let mut shipped = AetherConfig::default();
    shipped.report.interval = Duration::from_millis(1000);
    shipped.durability.channels = vec!["orders.*".into(), "inventory.*".into()];
    shipped.durability.ack_wait = Duration::from_millis(5000);
    shipped.durability.max_age = Duration::from_millis(86_400_000);
    shipped.durability.max_bytes = 1 << 30;
    shipped.physics.correlate = vec!["inventory.*".into()];
    shipped
}
