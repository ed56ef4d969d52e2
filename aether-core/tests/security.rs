//! Source authentication and channel access rules (`[aether.security]`):
//! on the embedded medium, and over real `nats-server` processes on
//! loopback with an attacker that holds no key (another aether, or a raw
//! NATS client replaying captured bytes). Every test is bounded in time.

#![cfg(feature = "nats")]

use std::time::Duration;

use aether_core::{
    Aether, AetherConfig, DropReason, EmitErrorKind, ResonateErrorKind, Secret, Vibrator, Wave,
    config::{AclRule, NatsConfig, SecurityConfig},
    wire::{self, Signature},
};
use aether_testkit::{Auth, ClientAuth, LogBuffer, NatsServer, RawNats, User};
use security_support::{ALPHA_KEY, BETA_KEY, keys, rules, until_dropped};
use tokio::time::timeout;

mod security_support;

const LIMIT: Duration = Duration::from_secs(20);

fn over(url: &str, security: SecurityConfig) -> AetherConfig {
    AetherConfig {
        nats: NatsConfig {
            urls: vec![url.into()],
            connect_timeout: Duration::from_millis(2000),
            reconnect_delay_max: Duration::from_millis(100),
            ..Default::default()
        },
        security,
        ..Default::default()
    }
}

/// Emits `wave` from `tx` until `rx` hears something (its subscription is
/// live on the server), and returns what it heard.
async fn emit_until_heard(tx: &Vibrator, wave: &Wave, rx: &mut Vibrator) -> Wave {
    loop {
        tx.emit(wave.clone()).await.unwrap();
        if let Ok(Some(heard)) = timeout(Duration::from_millis(50), rx.receive()).await {
            return heard;
        }
    }
}

#[tokio::test]
async fn the_acl_refuses_emits_and_resonances_it_does_not_allow() {
    let aether = Aether::new(AetherConfig {
        security: SecurityConfig {
            acl: rules(),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let alpha = Vibrator::create("alpha", &aether).await.unwrap();
    let mut beta = Vibrator::create("beta", &aether).await.unwrap();
    beta.resonate_on("orders.*").await.unwrap();
    alpha
        .emit_wave("orders.created", serde_json::json!({"id": 1}))
        .await
        .unwrap();
    assert_eq!(
        beta.receive().await.unwrap().channel().as_str(),
        "orders.created"
    );

    let err = alpha
        .emit_wave("inventory.reserved", serde_json::json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), EmitErrorKind::Denied);
    assert!(err.to_string().contains("\"alpha\""), "{err}");
    assert!(err.to_string().contains("inventory.reserved"), "{err}");

    // Wider than allowed, or not allowed at all.
    let mut alpha = alpha;
    for pattern in ["*", "inventory.>.x", "orders.*"] {
        match alpha.resonate_on(pattern).await {
            Err(e) if pattern == "inventory.>.x" => {
                assert_eq!(e.kind(), ResonateErrorKind::InvalidChannel)
            }
            Err(e) => assert_eq!(e.kind(), ResonateErrorKind::Denied, "{pattern}"),
            Ok(_) => panic!("{pattern} allowed"),
        }
    }
    alpha.resonate_on("inventory.reserved").await.unwrap();
    // A vibrator no rule names may do nothing.
    let mut stranger = Vibrator::create("stranger", &aether).await.unwrap();
    assert_eq!(
        stranger.resonate_on("orders.*").await.unwrap_err().kind(),
        ResonateErrorKind::Denied
    );
    assert_eq!(
        stranger
            .emit_wave("orders.created", ())
            .await
            .unwrap_err()
            .kind(),
        EmitErrorKind::Denied
    );
    // Refused emits were not accepted: not counted as emitted.
    assert_eq!(aether.stats().emitted, 1);
}

#[tokio::test]
async fn bad_security_settings_are_refused_at_start() {
    let short = keys(&[("alpha", "tiny-k")]);
    let err = Aether::new(AetherConfig {
        security: short,
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.key(), "security.signing_keys");
    assert!(!err.to_string().contains("tiny-k"), "{err}");

    let nobody = SecurityConfig {
        require_signatures: true,
        ..Default::default()
    };
    let err = Aether::new(AetherConfig {
        security: nobody,
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.key(), "security.require_signatures");

    let bad_rule = SecurityConfig {
        acl: vec![AclRule {
            source: "alpha".into(),
            emit: vec!["orders..x".into()],
            resonate: vec![],
        }],
        ..Default::default()
    };
    let err = Aether::new(AetherConfig {
        security: bad_rule,
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.key(), "security.acl.emit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_drop_waves_whose_source_is_forged() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let url = server.url();
        // The receiver knows alpha's key; alpha holds it; mallory does not,
        // and names its vibrator "alpha".
        let receiving = Aether::connect(over(&url, keys(&[("alpha", ALPHA_KEY)])))
            .await
            .unwrap();
        let sending = Aether::connect(over(&url, keys(&[("alpha", ALPHA_KEY)])))
            .await
            .unwrap();
        let forging = Aether::connect(over(&url, SecurityConfig::default()))
            .await
            .unwrap();
        let mut rx = Vibrator::create("rx", &receiving).await.unwrap();
        rx.resonate_on("orders.*").await.unwrap();
        let alpha = Vibrator::create("alpha", &sending).await.unwrap();
        let mallory = Vibrator::create("alpha", &forging).await.unwrap();

        let genuine = Wave::builder("orders.created")
            .payload("genuine")
            .build()
            .unwrap();
        let heard = emit_until_heard(&alpha, &genuine, &mut rx).await;
        assert_eq!(heard.source(), Some("alpha"));
        assert_eq!(&heard.payload_bytes()[..], b"genuine");
        while timeout(Duration::from_millis(100), rx.receive())
            .await
            .is_ok()
        {}

        // The forgery, then a genuine wave: only the genuine one arrives.
        mallory.emit_wave("orders.created", "forged").await.unwrap();
        forging.flush(Duration::from_secs(5)).await.unwrap();
        until_dropped(&receiving, DropReason::Forged, 1).await;
        alpha.emit(genuine.clone()).await.unwrap();
        let next = timeout(Duration::from_secs(5), rx.receive())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&next.payload_bytes()[..], b"genuine");
        assert_eq!(receiving.stats().dropped(DropReason::Forged), 1);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_signed_body_cannot_be_moved_to_another_channel() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let url = server.url();
        let receiving = Aether::connect(over(&url, keys(&[("alpha", ALPHA_KEY)])))
            .await
            .unwrap();
        let sending = Aether::connect(over(&url, keys(&[("alpha", ALPHA_KEY)])))
            .await
            .unwrap();
        let mut rx = Vibrator::create("rx", &receiving).await.unwrap();
        rx.resonate_on("orders.*").await.unwrap();
        let alpha = Vibrator::create("alpha", &sending).await.unwrap();

        // An eavesdropper captures a signed body off the wire.
        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        raw.subscribe("aether.orders.created", 1, None)
            .await
            .unwrap();
        raw.ping().await.unwrap();
        let wave = Wave::builder("orders.created")
            .payload("42 units")
            .build()
            .unwrap();
        emit_until_heard(&alpha, &wave, &mut rx).await;
        let captured = raw
            .next_message(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("the eavesdropper sees the wave");
        let body = captured.payload.to_vec();
        assert_eq!(
            wire::verify("aether.orders.created", &body, ALPHA_KEY.as_bytes()),
            Signature::Valid
        );

        // Replayed onto another channel: refused as forged.
        raw.publish("aether.orders.cancelled", None, &body)
            .await
            .unwrap();
        raw.ping().await.unwrap();
        until_dropped(&receiving, DropReason::Forged, 1).await;
        // Altered payload on the right channel: refused too.
        let mut altered = body.clone();
        let at = altered.len() - wire::SIGNATURE_LEN - 1;
        altered[at] ^= 0x01;
        raw.publish("aether.orders.created", None, &altered)
            .await
            .unwrap();
        raw.ping().await.unwrap();
        until_dropped(&receiving, DropReason::Forged, 2).await;
        // Nothing of either reached the vibrator.
        while let Ok(Some(extra)) = timeout(Duration::from_millis(200), rx.receive()).await {
            assert_eq!(extra.channel().as_str(), "orders.created");
            assert_eq!(&extra.payload_bytes()[..], b"42 units");
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_signatures_and_rules_hold_on_arrival() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let url = server.url();
        let mut strict = keys(&[("alpha", ALPHA_KEY), ("beta", BETA_KEY)]);
        strict.require_signatures = true;
        strict.acl = rules();
        let receiving = Aether::connect(over(&url, strict)).await.unwrap();
        // Signs as beta, but breaks no rule of its own aether (it has none).
        let rogue = Aether::connect(over(&url, keys(&[("beta", BETA_KEY)])))
            .await
            .unwrap();
        let unsigned = Aether::connect(over(&url, SecurityConfig::default()))
            .await
            .unwrap();
        let mut rx = Vibrator::create("beta", &receiving).await.unwrap();
        rx.resonate_on("orders.*").await.unwrap();

        // A source with no key: dropped as forged.
        let nobody = Vibrator::create("nobody", &unsigned).await.unwrap();
        let probe = Wave::builder("orders.created")
            .payload("x")
            .build()
            .unwrap();
        let mut sent = 0u64;
        timeout(Duration::from_secs(5), async {
            while receiving.stats().dropped(DropReason::Forged) == 0 {
                nobody.emit(probe.clone()).await.unwrap();
                sent += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the unsigned waves are dropped");
        assert!(sent >= 1);

        // beta, genuinely signed, on a channel its rule does not allow.
        let beta = Vibrator::create("beta", &rogue).await.unwrap();
        beta.emit_wave("orders.created", "not yours").await.unwrap();
        rogue.flush(Duration::from_secs(5)).await.unwrap();
        until_dropped(&receiving, DropReason::Denied, 1).await;
        // Nothing was delivered.
        assert!(
            timeout(Duration::from_millis(200), rx.receive())
                .await
                .is_err()
        );
        assert_eq!(receiving.stats().delivered, 0);
    })
    .await
    .expect("bounded");
}

/// The NATS permissions `AclRule::nats_permissions` gives make the server
/// enforce the same rules, even for a client with no ACL of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_enforces_the_generated_permissions() {
    timeout(LIMIT, async {
        let users = rules()
            .iter()
            .map(|rule| User {
                user: rule.source.clone(),
                password: format!("{}-pw", rule.source),
                extra: rule.nats_permissions("aether").to_server_config(),
            })
            .collect();
        let server = NatsServer::builder()
            .auth(Auth::Users(users))
            .start()
            .await
            .unwrap();
        let login = |user: &str| {
            let mut config = over(&server.url(), SecurityConfig::default());
            config.nats.auth.user = Some(user.into());
            config.nats.auth.password = Some(Secret::new(format!("{user}-pw")));
            config
        };
        let alpha_aether = Aether::connect(login("alpha")).await.unwrap();
        let beta_aether = Aether::connect(login("beta")).await.unwrap();
        let mut beta = Vibrator::create("beta", &beta_aether).await.unwrap();
        beta.resonate_on("orders.*").await.unwrap();
        let mut alpha = Vibrator::create("alpha", &alpha_aether).await.unwrap();
        alpha.resonate_on("inventory.*").await.unwrap();

        // Allowed both ways.
        let order = Wave::builder("orders.created")
            .payload("order")
            .build()
            .unwrap();
        emit_until_heard(&alpha, &order, &mut beta).await;
        let answer = Wave::builder("inventory.reserved")
            .payload("ok")
            .build()
            .unwrap();
        emit_until_heard(&beta, &answer, &mut alpha).await;
        while timeout(Duration::from_millis(100), beta.receive())
            .await
            .is_ok()
        {}

        // A client logged in as alpha publishing where only beta may: the
        // server drops it. The PONG proves it was processed before beta's
        // answer was sent, so had it got through it would arrive first.
        let mut raw = RawNats::connect_with(
            server.addr(),
            ClientAuth::UserPassword {
                user: "alpha".into(),
                password: "alpha-pw".into(),
            },
        )
        .await
        .unwrap();
        let forbidden = wire::encode(&Wave::new("inventory.reserved", "forbidden"));
        raw.publish("aether.inventory.reserved", None, &forbidden)
            .await
            .unwrap();
        let refusal = raw
            .ping()
            .await
            .expect_err("the server refuses the publish");
        assert!(
            refusal
                .to_string()
                .contains("Permissions Violation for Publish"),
            "{refusal}"
        );
        beta.emit(answer.clone()).await.unwrap();
        let heard = timeout(Duration::from_secs(5), alpha.receive())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            &heard.payload_bytes()[..],
            b"ok",
            "the forbidden wave got through"
        );

        // alpha may not subscribe to orders: nothing reaches it there.
        let mut watcher = Vibrator::create("alpha", &alpha_aether).await.unwrap();
        watcher.resonate_on("orders.*").await.unwrap();
        alpha.emit(order.clone()).await.unwrap();
        beta.receive().await.unwrap();
        assert!(
            timeout(Duration::from_millis(300), watcher.receive())
                .await
                .is_err(),
            "alpha heard orders it may not subscribe to"
        );
    })
    .await
    .expect("bounded");
}

#[test]
fn signing_keys_never_show() {
    let mut security = keys(&[("alpha", ALPHA_KEY)]);
    security.acl = rules();
    let config = AetherConfig {
        security,
        ..Default::default()
    };
    for text in [
        format!("{config:?}"),
        format!("{config:#?}"),
        serde_json::to_string(&config).unwrap(),
    ] {
        assert!(!text.contains(ALPHA_KEY), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
}

/// Signed, hopping and forged traffic over NATS logged at TRACE: no key or
/// secret appears in the log. On one thread, so that the capture sees every
/// event.
#[tokio::test(flavor = "current_thread")]
async fn logs_hold_no_signing_key_or_hopping_secret() {
    const HOPPING_SECRET: &str = "hop-secret-5d1c9a7e-never-print";
    let logs = LogBuffer::default();
    let _guard = logs.capture_this_thread();
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let mut config = over(&server.url(), keys(&[("alpha", ALPHA_KEY)]));
        config.hopping.secret = Some(Secret::new(HOPPING_SECRET));
        let receiving = Aether::connect(config.clone()).await.unwrap();
        let sending = Aether::connect(config).await.unwrap();
        let forging = Aether::connect(over(&server.url(), SecurityConfig::default()))
            .await
            .unwrap();
        tracing::info!(?receiving, config = ?receiving.config(), "aether up");
        let mut rx = Vibrator::create("rx", &receiving).await.unwrap();
        rx.resonate_on("orders.*").await.unwrap();
        let alpha = Vibrator::create("alpha", &sending).await.unwrap();
        let wave = Wave::builder("orders.created")
            .payload("p")
            .build()
            .unwrap();
        emit_until_heard(&alpha, &wave, &mut rx).await;
        Vibrator::create("alpha", &forging)
            .await
            .unwrap()
            .emit_wave("orders.created", "forged")
            .await
            .unwrap();
        forging.flush(Duration::from_secs(5)).await.unwrap();
        until_dropped(&receiving, DropReason::Forged, 1).await;
    })
    .await
    .expect("bounded");
    let text = logs.text();
    assert!(text.len() > 1000, "the log captured traffic: {text}");
    assert!(text.contains("[redacted]"), "the config was logged");
    for secret in [ALPHA_KEY, HOPPING_SECRET] {
        assert!(!text.contains(secret), "{secret} in the log");
    }
}
