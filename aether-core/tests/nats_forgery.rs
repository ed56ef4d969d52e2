//! Forgeries from outside, over real `nats-server` processes on loopback:
//! waves carrying the reflected flag where no reflection may come, hopping
//! waves from sources the ACL does not allow, the bus's own subjects under
//! the generated NATS permissions, and captured signed waves played again.
//! The attacker is a raw NATS client that writes envelopes by hand, as a
//! foreign client would from the wire format. Every test is bounded in time.

#![cfg(feature = "nats")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aether_core::Operator;
use aether_core::{
    Aether, AetherConfig, Channel, DropReason, EmitErrorKind, ReflectionReason, ResonateErrorKind,
    Secret, Vibrator, Wave,
    config::{AclRule, DurabilityConfig, HoppingBase, NatsConfig, NatsPermissions, SecurityConfig},
    hopping::HopKey,
    subject::durable_consumer_name,
    wire,
};
use aether_testkit::{Auth, ClientAuth, NatsServer, RawNats, User};
use security_support::{ALPHA_KEY, BETA_KEY, keys, rules, until_dropped};
use tokio::time::timeout;

mod security_support;

const LIMIT: Duration = Duration::from_secs(30);

/// Keys of alpha and beta, signatures required, the ACL of `rules`.
fn strict() -> SecurityConfig {
    let mut security = keys(&[("alpha", ALPHA_KEY), ("beta", BETA_KEY)]);
    security.require_signatures = true;
    security.acl = rules();
    security
}

fn over(url: &str, security: SecurityConfig) -> AetherConfig {
    AetherConfig {
        nats: NatsConfig {
            urls: vec![url.into()],
            connect_timeout: Duration::from_millis(2000),
            reconnect_delay_max: Duration::from_millis(100),
            batch: aether_core::config::NatsBatch {
                enabled: aether_testkit::batch_frames(),
                ..Default::default()
            },
            ..Default::default()
        },
        security,
        ..Default::default()
    }
}

/// Orders and answers durable, in the stream `AETHER`.
fn durability() -> DurabilityConfig {
    DurabilityConfig {
        channels: vec!["orders.*".into(), "inventory.*".into()],
        ..Default::default()
    }
}

/// A JetStream server whose users are `rules`' sources (password
/// `<source>-pw`), each with the generated permissions for the durable
/// channels of [`durability`] (its vibrator and the group `workers`),
/// shaped further by `shape`.
async fn durable_server(
    rules: &[AclRule],
    shape: impl Fn(&AclRule, NatsPermissions) -> NatsPermissions,
) -> NatsServer {
    let users = rules
        .iter()
        .map(|rule| {
            let permissions = rule.nats_permissions("aether").with_jetstream(
                rule,
                "aether",
                &durability(),
                &["workers"],
            );
            let mut permissions = shape(rule, permissions);
            // The test server's own readiness probe logs in as a user.
            permissions.subscribe.push("_TESTKIT_INBOX.>".into());
            User {
                user: rule.source.clone(),
                password: format!("{}-pw", rule.source),
                extra: permissions.to_server_config(),
            }
        })
        .collect();
    NatsServer::builder()
        .jetstream(true)
        .auth(Auth::Users(users))
        .start()
        .await
        .unwrap()
}

/// Settings of `user` on the server at `url`: its own inbox prefix, the
/// durable channels of [`durability`], which only `manager` manages.
fn durable_login(url: &str, user: &str, manager: &str) -> AetherConfig {
    let mut config = over(url, SecurityConfig::default());
    config.nats.auth.user = Some(user.into());
    config.nats.auth.password = Some(Secret::new(format!("{user}-pw")));
    config.nats.inbox_prefix = Some(format!("aether._INBOX.{user}"));
    config.durability = durability();
    config.durability.manage_stream = user == manager;
    config
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// An envelope written by hand, as a foreign client would from the wire
/// format: a fresh wave with payload `payload`, stamped now, with `source`
/// (none if empty) and `origin`, and, if `reflected_from` is given, the
/// reflected flag and a reflection section (reason "no resonator") naming
/// that channel.
fn envelope(source: &str, origin: u64, reflected_from: Option<&str>, payload: &[u8]) -> Vec<u8> {
    let plain = wire::encode_as(
        wire::WireVersion::V1,
        &Wave::builder("any.channel")
            .payload(payload.to_vec())
            .build()
            .unwrap(),
    );
    let mut header = plain[..wire::HEADER_LEN].to_vec();
    let mut flags = u16::from_le_bytes([header[2], header[3]]);
    if reflected_from.is_some() {
        flags |= wire::FLAG_REFLECTED;
    }
    header[2..4].copy_from_slice(&flags.to_le_bytes());
    let id = now_ns() as u128 ^ (u128::from(origin) << 64) ^ u128::from(payload.len() as u64);
    header[4..20].copy_from_slice(&id.to_be_bytes());
    header[20..28].copy_from_slice(&now_ns().to_le_bytes());
    header[28..36].copy_from_slice(&origin.to_le_bytes());
    header[wire::HEADER_LEN - 1] = source.len() as u8;
    let mut body = header;
    body.extend_from_slice(source.as_bytes());
    if let Some(channel) = reflected_from {
        body.push(0); // no resonator
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&(channel.len() as u16).to_le_bytes());
        body.extend_from_slice(channel.as_bytes());
    }
    body.extend_from_slice(payload);
    body
}

/// `body` (published on `subject`) signed with `key`, through the
/// documented signature: decoded, then encoded signed.
fn signed(subject: &str, body: &[u8], key: &str) -> Vec<u8> {
    let channel = Channel::new(subject.strip_prefix("aether.").unwrap());
    let wave = wire::decode(channel, body.to_vec().into(), &wire::Limits::default()).unwrap();
    wire::encode_signed(&wave, subject, key.as_bytes()).to_vec()
}

async fn quiet(vibrator: &mut Vibrator) {
    if let Ok(Some(wave)) = timeout(Duration::from_millis(300), vibrator.receive()).await {
        panic!(
            "{} received {:?} (reflected: {})",
            vibrator.name(),
            wave.channel().as_str(),
            wave.is_reflected()
        );
    }
}

/// A reflection is accepted only on the reflection channel of the source
/// and origin it names, signed where signatures are required, and with a
/// channel its source may emit on; a real one still comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_reflections_are_refused_and_a_real_one_comes_back() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let url = server.url();
        let alpha_side = Aether::connect(over(&url, strict())).await.unwrap();
        let beta_side = Aether::connect(over(&url, strict())).await.unwrap();
        let mut alpha = Vibrator::create("alpha", &alpha_side).await.unwrap();
        let mut beta = Vibrator::create("beta", &beta_side).await.unwrap();
        beta.resonate_on("orders.created").await.unwrap();

        // A real reflection: nobody resonates on orders.unheard.x.
        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        raw.subscribe("aether._reflect.>", 1, None).await.unwrap();
        raw.ping().await.unwrap();
        let lost = Wave::builder("orders.unheard.x")
            .correlation_key("o-1")
            .reflect_on_failure(true)
            .build()
            .unwrap();
        alpha.emit(lost).await.unwrap();
        let back = timeout(Duration::from_secs(5), alpha.receive())
            .await
            .expect("the reflection comes back")
            .unwrap();
        assert_eq!(back.reflection(), Some(&ReflectionReason::NoResonator));
        assert_eq!(back.channel().as_str(), "orders.unheard.x");
        let seen = raw
            .next_message(Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        let subject = seen.subject.clone();
        let origin_hex = subject.rsplit('.').next().unwrap();
        assert_eq!(subject, format!("aether._reflect.alpha.{origin_hex}"));
        let origin = u64::from_str_radix(origin_hex, 16).unwrap();
        // Its captured body is signed for its own subject.
        assert_eq!(
            wire::verify(&subject, &seen.payload, ALPHA_KEY.as_bytes()),
            wire::Signature::Valid
        );

        // 1. The reflected flag on an application subject, naming alpha and
        //    a channel alpha may not emit on: refused by beta's aether.
        let body = envelope("alpha", origin, Some("orders.cancelled"), b"forged");
        raw.publish("aether.orders.created", None, &body)
            .await
            .unwrap();
        // ... even signed with alpha's key (a leaked key cannot move a
        //    reflection off its channel either).
        let body = signed(
            "aether.orders.created",
            &envelope("alpha", origin, Some("orders.cancelled"), b"forged-signed"),
            ALPHA_KEY,
        );
        raw.publish("aether.orders.created", None, &body)
            .await
            .unwrap();
        raw.ping().await.unwrap();
        until_dropped(&beta_side, DropReason::Forged, 2).await;
        quiet(&mut beta).await;

        let forged_before = alpha_side.stats().dropped(DropReason::Forged);
        for (source, reflected_from, payload) in [
            // 2. No source, on alpha's reflection subject.
            ("", Some("orders.created"), b"a"),
            // 3. A stranger's name with alpha's origin, on alpha's subject.
            ("mallory", Some("orders.created"), b"b"),
            // 4. Unsigned, naming alpha, on alpha's subject: signatures
            //    required.
            ("alpha", Some("orders.created"), b"c"),
            // 5. Not a reflection at all, on a reflection subject.
            ("alpha", None, b"d"),
        ] {
            let body = envelope(source, origin, reflected_from, payload);
            raw.publish(&subject, None, &body).await.unwrap();
        }
        raw.ping().await.unwrap();
        until_dropped(&alpha_side, DropReason::Forged, forged_before + 4).await;
        // 6. Signed with alpha's key on the right subject, but its channel is
        //    one alpha may not emit on: denied.
        let signed_by_alpha = |reflected_from: &str, payload: &[u8]| {
            let body = envelope("alpha", origin, Some(reflected_from), payload);
            signed(&subject, &body, ALPHA_KEY)
        };
        let body = signed_by_alpha("inventory.reserved", b"e");
        raw.publish(&subject, None, &body).await.unwrap();
        raw.ping().await.unwrap();
        until_dropped(&alpha_side, DropReason::Denied, 1).await;
        // 7. Signed, on the right subject, reflecting one of the bus's own
        //    channels (a report, a reply, a hop): no application emitted
        //    there, so it is forged.
        let forged_before = alpha_side.stats().dropped(DropReason::Forged);
        for inner in ["_report.spoof", "_INBOX.x.1", "_hop.0123"] {
            let body = signed_by_alpha(inner, b"f");
            raw.publish(&subject, None, &body).await.unwrap();
        }
        raw.ping().await.unwrap();
        until_dropped(&alpha_side, DropReason::Forged, forged_before + 3).await;
        quiet(&mut alpha).await;

        // A genuine reflection, written by hand and signed, is still taken.
        let body = signed_by_alpha("orders.created", b"real");
        raw.publish(&subject, None, &body).await.unwrap();
        let echo = timeout(Duration::from_secs(5), alpha.receive())
            .await
            .expect("a well-formed reflection is delivered")
            .unwrap();
        assert!(echo.is_reflected());
        assert_eq!(echo.channel().as_str(), "orders.created");
        assert_eq!(&echo.payload_bytes()[..], b"real");
    })
    .await
    .expect("bounded");
}

/// The ACL judges a hopping wave by its base channel: at emit, at
/// `resonate_hopping`, and on arrival.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_applies_to_the_base_channel_of_hopping() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let url = server.url();
        let security = SecurityConfig {
            acl: rules(),
            ..Default::default()
        };
        let guarded = Aether::connect(over(&url, security)).await.unwrap();
        let open = Aether::connect(over(&url, SecurityConfig::default()))
            .await
            .unwrap();

        let alpha = Vibrator::create("alpha", &guarded).await.unwrap();
        let err = alpha
            .emit_hopping(Wave::new("inventory.reserved", "x"), 4)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), EmitErrorKind::Denied, "{err}");
        let mut beta = Vibrator::create("beta", &guarded).await.unwrap();
        let err = beta
            .resonate_hopping("inventory.hidden", 4)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ResonateErrorKind::Denied, "{err}");
        beta.resonate_hopping("orders.hidden", 4).await.unwrap();

        // From another aether with no rules, a stranger hops on the base:
        // beta's aether refuses it by the base channel.
        let mallory = Vibrator::create("mallory", &open).await.unwrap();
        timeout(Duration::from_secs(5), async {
            while guarded.stats().dropped(DropReason::Denied) == 0 {
                mallory
                    .emit_hopping(Wave::new("orders.hidden", "from mallory"), 4)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the stranger's hopping waves are denied");
        // alpha, allowed on orders.*, hops through.
        timeout(Duration::from_secs(5), async {
            loop {
                alpha
                    .emit_hopping(Wave::new("orders.hidden", "from alpha"), 4)
                    .await
                    .unwrap();
                if let Ok(Some(wave)) = timeout(Duration::from_millis(50), beta.receive()).await {
                    assert_eq!(wave.source(), Some("alpha"));
                    assert_eq!(wave.channel().as_str(), "orders.hidden");
                    break;
                }
            }
        })
        .await
        .expect("alpha's hopping waves arrive");
        while let Ok(Some(wave)) = timeout(Duration::from_millis(100), beta.receive()).await {
            assert_eq!(wave.source(), Some("alpha"), "only alpha's waves arrive");
        }
    })
    .await
    .expect("bounded");
}

/// With the generated permissions, a user's inboxes and reflections are its
/// own, hop subjects follow the ACL of their bases, and request/reply still
/// works through `allow_responses`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_permissions_keep_each_users_system_subjects_its_own() {
    timeout(LIMIT, async {
        let key = HopKey::new(None);
        let hopping = vec![HoppingBase {
            base: "orders.hidden".into(),
            wire_channels: (0..4)
                .map(|h| {
                    key.wire_channel(&Channel::new("orders.hidden"), h)
                        .as_str()
                        .to_string()
                })
                .collect(),
        }];
        let users = rules()
            .iter()
            .map(|rule| User {
                user: rule.source.clone(),
                password: format!("{}-pw", rule.source),
                extra: rule
                    .nats_permissions_hopping("aether", &hopping)
                    .to_server_config(),
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
            config.nats.inbox_prefix = Some(format!("aether._INBOX.{user}"));
            config
        };
        let alpha_aether = Aether::connect(login("alpha")).await.unwrap();
        let beta_aether = Aether::connect(login("beta")).await.unwrap();
        let mut beta = Vibrator::create("beta", &beta_aether).await.unwrap();
        beta.resonate_on("orders.*").await.unwrap();
        let alpha = Vibrator::create("alpha", &alpha_aether).await.unwrap();

        // Request and reply across users: the reply reaches alpha's own
        // inbox through allow_responses.
        let responder = tokio::spawn(async move {
            let request = beta.receive().await.unwrap();
            beta.reply(&request, "answer").await.unwrap();
            beta
        });
        let reply = loop {
            let request = Wave::new("orders.check", "question");
            match alpha
                .request_with_timeout(request, Duration::from_millis(500))
                .await
            {
                Ok(reply) => break reply,
                Err(e) => assert_ne!(e.kind(), aether_core::RequestErrorKind::Closed, "{e}"),
            }
        };
        assert_eq!(&reply.payload_bytes()[..], b"answer");
        let _beta = responder.await.unwrap();

        let raw_as = |user: &'static str| {
            let addr = server.addr();
            async move {
                RawNats::connect_with(
                    addr,
                    ClientAuth::UserPassword {
                        user: user.into(),
                        password: format!("{user}-pw"),
                    },
                )
                .await
                .unwrap()
            }
        };
        let refused = |what: &str, result: Result<(), aether_testkit::Error>, verb: &str| {
            let error = result.expect_err(what).to_string();
            assert!(
                error.contains(&format!("Permissions Violation for {verb}")),
                "{what}: {error}"
            );
        };
        // beta may not read alpha's inboxes or reflections.
        for subject in [
            "aether._INBOX.alpha.>",
            "aether._reflect.alpha.*",
            "aether._INBOX.>",
        ] {
            let mut raw = raw_as("beta").await;
            raw.subscribe(subject, 1, None).await.unwrap();
            refused(subject, raw.ping().await, "Subscription");
        }
        // Nor write into alpha's inbox unasked, nor hop on a base its rule
        // does not let it emit on.
        let hop = format!("aether.{}", hopping[0].wire_channels[0]);
        for subject in ["aether._INBOX.alpha.x.1", hop.as_str()] {
            let mut raw = raw_as("beta").await;
            raw.publish(subject, None, b"x").await.unwrap();
            refused(subject, raw.ping().await, "Publish");
        }
        // alpha may hop on orders.hidden, and read its own inboxes.
        let mut raw = raw_as("alpha").await;
        raw.publish(&hop, None, b"x").await.unwrap();
        raw.subscribe("aether._INBOX.alpha.>", 1, None)
            .await
            .unwrap();
        raw.ping().await.expect("alpha's own subjects");
    })
    .await
    .expect("bounded");
}

/// Where signatures are required, a captured signed wave played again is
/// refused as a replay, and so is one stamped outside the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_of_signed_waves_are_refused() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let url = server.url();
        let receiving = Aether::connect(over(&url, strict())).await.unwrap();
        let sending = Aether::connect(over(&url, strict())).await.unwrap();
        let mut beta = Vibrator::create("beta", &receiving).await.unwrap();
        beta.resonate_on("orders.*").await.unwrap();
        let alpha = Vibrator::create("alpha", &sending).await.unwrap();

        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        raw.subscribe("aether.orders.created", 1, None)
            .await
            .unwrap();
        raw.ping().await.unwrap();
        let first = loop {
            alpha.emit_wave("orders.created", "order 7").await.unwrap();
            if let Ok(Some(wave)) = timeout(Duration::from_millis(50), beta.receive()).await {
                break wave;
            }
        };
        // The captured body of the wave beta took.
        let captured = loop {
            let message = raw
                .next_message(Duration::from_secs(5))
                .await
                .unwrap()
                .unwrap();
            let wave = wire::decode(
                Channel::new("orders.created"),
                message.payload.clone().into(),
                &wire::Limits::default(),
            )
            .unwrap();
            if wave.id() == first.id() {
                break message.payload;
            }
        };
        while timeout(Duration::from_millis(100), beta.receive())
            .await
            .is_ok()
        {}
        let replays_before = receiving.stats().dropped(DropReason::Replay);
        for _ in 0..3 {
            raw.publish("aether.orders.created", None, &captured)
                .await
                .unwrap();
        }
        raw.ping().await.unwrap();
        until_dropped(&receiving, DropReason::Replay, replays_before + 3).await;
        quiet(&mut beta).await;

        // Signed by the key's holder, but stamped a minute ago: outside the
        // 30 s window.
        let mut stale = envelope("alpha", 9, None, b"stale");
        let minute_ago = now_ns() - 60_000_000_000;
        stale[20..28].copy_from_slice(&minute_ago.to_le_bytes());
        let stale = signed("aether.orders.created", &stale, ALPHA_KEY);
        raw.publish("aether.orders.created", None, &stale)
            .await
            .unwrap();
        raw.ping().await.unwrap();
        until_dropped(&receiving, DropReason::Replay, replays_before + 4).await;
        quiet(&mut beta).await;

        // A fresh signed wave still passes.
        let fresh = signed(
            "aether.orders.created",
            &envelope("alpha", 9, None, b"fresh"),
            ALPHA_KEY,
        );
        raw.publish("aether.orders.created", None, &fresh)
            .await
            .unwrap();
        let wave = timeout(Duration::from_secs(5), beta.receive())
            .await
            .expect("a fresh wave is taken")
            .unwrap();
        assert_eq!(&wave.payload_bytes()[..], b"fresh");
    })
    .await
    .expect("bounded");
}

/// The generated permissions with JetStream's subjects for the stream are
/// enough for durable channels and instance reports, and no more: a user
/// reports in its own name only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_channels_and_reports_work_under_the_generated_permissions() {
    timeout(LIMIT, async {
        let mut rules = rules();
        rules.push(AclRule {
            source: "gateway".into(),
            emit: vec![],
            resonate: vec!["*".into()],
        });
        let server = durable_server(&rules, |rule, permissions| {
            if rule.source == "gateway" {
                // The gateway's user manages the stream here.
                permissions.managing_stream("AETHER")
            } else {
                permissions
            }
        })
        .await;
        let login = |user: &str| {
            let mut config = durable_login(&server.url(), user, "gateway");
            config.report.interval = Duration::from_millis(100);
            config.report.instance = Some(format!("{user}.1"));
            config
        };
        // The gateway's user, which manages the stream and may hear every
        // channel, reads reports.
        let gateway_aether = Aether::connect(login("gateway")).await.unwrap();
        let alpha_aether = Aether::connect(login("alpha")).await.unwrap();
        let beta_aether = Aether::connect(login("beta")).await.unwrap();
        let mut beta = Vibrator::create("beta", &beta_aether).await.unwrap();
        beta.resonate_on("orders.*").await.unwrap();
        let mut reports = Vibrator::create("gateway", &gateway_aether).await.unwrap();
        reports.resonate_on("_report.*").await.unwrap();
        let alpha = Vibrator::create("alpha", &alpha_aether).await.unwrap();
        alpha.emit_wave("orders.created", "stored").await.unwrap();
        let wave = timeout(Duration::from_secs(10), beta.receive())
            .await
            .expect("the durable wave arrives")
            .unwrap();
        assert_eq!(wave.json::<String>().unwrap(), "stored");
        // Reports of both users arrive, each in its own name.
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 2 {
            let wave = timeout(Duration::from_secs(5), reports.receive())
                .await
                .expect("reports arrive")
                .unwrap();
            seen.insert(wave.channel().as_str().to_string());
        }
        seen.retain(|channel| channel != "_report.gateway.1");
        while seen.len() < 2 {
            let wave = timeout(Duration::from_secs(5), reports.receive())
                .await
                .expect("reports arrive")
                .unwrap();
            seen.insert(wave.channel().as_str().to_string());
            seen.retain(|channel| channel != "_report.gateway.1");
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            ["_report.alpha.1", "_report.beta.1"]
        );
        // A user reporting for another is refused by the server.
        let mut raw = RawNats::connect_with(
            server.addr(),
            ClientAuth::UserPassword {
                user: "alpha".into(),
                password: "alpha-pw".into(),
            },
        )
        .await
        .unwrap();
        raw.publish("aether._report.beta.1", None, b"{}")
            .await
            .unwrap();
        let error = raw.ping().await.expect_err("refused").to_string();
        assert!(
            error.contains("Permissions Violation for Publish"),
            "{error}"
        );
    })
    .await
    .expect("bounded");
}

/// Where signatures are required, an aether sends no instance report it
/// cannot sign (every receiver would count it as forged); named after a
/// source whose key it holds, it reports, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_sent_only_where_they_can_be_signed() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let url = server.url();
        let mut watching = over(&url, strict());
        watching.security.acl.clear();
        let watcher_side = Aether::connect(watching).await.unwrap();
        let mut watcher = Vibrator::create("alpha", &watcher_side).await.unwrap();
        watcher.resonate_on("_report.*").await.unwrap();
        let reporting = |instance: &str| {
            let mut config = over(&url, strict());
            config.security.acl.clear();
            config.report.interval = Duration::from_millis(100);
            config.report.instance = Some(instance.into());
            config
        };
        let unsigned = Aether::connect(reporting("beta-1")).await.unwrap();
        let signed = Aether::connect(reporting("beta")).await.unwrap();
        let wave = timeout(Duration::from_secs(5), watcher.receive())
            .await
            .expect("a report arrives")
            .unwrap();
        assert_eq!(wave.channel().as_str(), "_report.beta");
        for _ in 0..5 {
            let wave = timeout(Duration::from_secs(5), watcher.receive())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(wave.channel().as_str(), "_report.beta", "never beta-1's");
        }
        assert_eq!(watcher_side.stats().dropped(DropReason::Forged), 0);
        drop((unsigned, signed));
    })
    .await
    .expect("bounded");
}

/// On a bus shared by several NATS users, the generated JetStream
/// permissions let each user use its own durable consumers and nothing
/// else: a user allowed only `metrics.*` cannot make a consumer of the
/// orders, change or shrink the stream, read its messages directly, nor
/// pull from or acknowledge for beta's consumer; a user with a consumer of
/// its own cannot stretch its filter to the orders; a program that does
/// not manage the stream says so when it is missing. And the saga runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_may_use_only_its_own_durable_consumers() {
    timeout(Duration::from_secs(60), async {
        let mut rules = rules();
        rules.push(AclRule {
            source: "mallory".into(),
            emit: vec!["metrics.*".into()],
            resonate: vec!["metrics.*".into()],
        });
        rules.push(AclRule {
            source: "operator".into(),
            emit: vec![],
            resonate: vec![],
        });
        let server = durable_server(&rules, |rule, permissions| match rule.source.as_str() {
            "operator" => permissions.managing_stream("AETHER"),
            // Beta reads through consumers the manager made.
            "beta" => permissions.without_consumer_creation(),
            _ => permissions,
        })
        .await;
        let login = |user: &str| durable_login(&server.url(), user, "operator");
        // Before the stream exists, a program that does not manage it
        // refuses to start and says who makes it.
        let error = Aether::connect(login("beta"))
            .await
            .expect_err("the stream is missing");
        assert!(error.to_string().contains("manage_stream"), "{error}");
        let operator = Aether::connect(login("operator")).await.unwrap();
        let beta_rule = rules.iter().find(|r| r.source == "beta").unwrap();
        operator
            .make_durable_consumers(&beta_rule.durable_consumers("aether", &durability(), &[]))
            .await
            .unwrap();
        let alpha_aether = Aether::connect(login("alpha")).await.unwrap();
        let beta_aether = Aether::connect(login("beta")).await.unwrap();
        let mut beta = Vibrator::create("beta", &beta_aether).await.unwrap();
        beta.resonate_on("orders.*").await.unwrap();
        let mut alpha = Vibrator::create("alpha", &alpha_aether).await.unwrap();
        alpha.resonate_on("inventory.*").await.unwrap();
        for n in 0..3 {
            alpha.emit_wave("orders.created", n).await.unwrap();
        }

        let raw_as = |user: &'static str| {
            let addr = server.addr();
            async move {
                RawNats::connect_with(
                    addr,
                    ClientAuth::UserPassword {
                        user: user.into(),
                        password: format!("{user}-pw"),
                    },
                )
                .await
                .unwrap()
            }
        };
        let consumer = |name: &str, filter: &str| {
            serde_json::json!({
                "stream_name": "AETHER",
                "config": {
                    "durable_name": name,
                    "filter_subject": filter,
                    "ack_policy": "explicit",
                    "deliver_policy": "all",
                }
            })
            .to_string()
        };
        let beta_consumer = durable_consumer_name("beta", false, "aether.orders.>");
        let attacks = [
            // Its own consumer of the orders, under any name or none.
            (
                "$JS.API.CONSUMER.CREATE.AETHER.mallory-1.aether.orders.>".to_string(),
                consumer("mallory-1", "aether.orders.>"),
            ),
            (
                "$JS.API.CONSUMER.CREATE.AETHER".to_string(),
                consumer("", "aether.orders.>"),
            ),
            (
                "$JS.API.CONSUMER.DURABLE.CREATE.AETHER.mallory-2".to_string(),
                consumer("mallory-2", "aether.orders.>"),
            ),
            // The replies into the stream; the stream cut to one message.
            (
                "$JS.API.STREAM.UPDATE.AETHER".to_string(),
                serde_json::json!({
                    "name": "AETHER",
                    "subjects": ["aether.orders.>", "aether.inventory.>", "aether._INBOX.>"],
                    "max_msgs": 1,
                })
                .to_string(),
            ),
            ("$JS.API.STREAM.PURGE.AETHER".to_string(), "{}".to_string()),
            ("$JS.API.STREAM.DELETE.AETHER".to_string(), String::new()),
            // Its messages read directly.
            (
                "$JS.API.STREAM.MSG.GET.AETHER".to_string(),
                r#"{"seq":1}"#.to_string(),
            ),
            (
                "$JS.API.DIRECT.GET.AETHER".to_string(),
                r#"{"seq":1}"#.to_string(),
            ),
            // Beta's consumer: pulled from, acknowledged for, deleted.
            (
                format!("$JS.API.CONSUMER.MSG.NEXT.AETHER.{beta_consumer}"),
                r#"{"batch":5}"#.to_string(),
            ),
            (
                format!("$JS.ACK.AETHER.{beta_consumer}.1.1.1.1.0"),
                String::new(),
            ),
            (
                format!("$JS.API.CONSUMER.DELETE.AETHER.{beta_consumer}"),
                String::new(),
            ),
        ];
        // Beta, without the right to make consumers, cannot make its own a
        // push consumer that delivers the orders where it may not publish.
        let push = serde_json::json!({
            "stream_name": "AETHER",
            "config": {
                "durable_name": beta_consumer,
                "filter_subject": "aether.orders.>",
                "deliver_subject": "aether.metrics.injected",
                "ack_policy": "none",
            }
        })
        .to_string();
        let attacks = attacks.into_iter().map(|(s, b)| ("mallory", s, b)).chain([(
            "beta",
            format!("$JS.API.CONSUMER.CREATE.AETHER.{beta_consumer}.aether.orders.>"),
            push,
        )]);
        for (user, subject, body) in attacks {
            let mut raw = raw_as(user).await;
            let inbox = format!("aether._INBOX.{user}.x");
            raw.subscribe(&inbox, 1, None).await.unwrap();
            raw.publish(&subject, Some(&inbox), body.as_bytes())
                .await
                .unwrap();
            let error = raw.ping().await.expect_err(&subject).to_string();
            assert!(
                error.contains("Permissions Violation for Publish"),
                "{subject}: {error}"
            );
        }
        // alpha may make its own consumer, but only with its own filter.
        let alpha_consumer = durable_consumer_name("alpha", false, "aether.inventory.>");
        let mut raw = raw_as("alpha").await;
        raw.subscribe("aether._INBOX.alpha.x", 1, None)
            .await
            .unwrap();
        raw.publish(
            &format!("$JS.API.CONSUMER.CREATE.AETHER.{alpha_consumer}.aether.inventory.>"),
            Some("aether._INBOX.alpha.x"),
            consumer(&alpha_consumer, "aether.orders.>").as_bytes(),
        )
        .await
        .unwrap();
        let answer = raw
            .next_message(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("JetStream answers");
        let answer: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap();
        assert!(answer.get("error").is_some(), "{answer}");

        // The saga: beta takes every order and answers; alpha hears them.
        for n in 0..3 {
            let order = timeout(Duration::from_secs(10), beta.receive())
                .await
                .expect("every order arrives")
                .unwrap();
            assert_eq!(order.json::<i32>().unwrap(), n);
            beta.emit_wave("inventory.reserved", n).await.unwrap();
        }
        for n in 0..3 {
            let answer = timeout(Duration::from_secs(10), alpha.receive())
                .await
                .expect("every answer arrives")
                .unwrap();
            assert_eq!(answer.json::<i32>().unwrap(), n);
        }
    })
    .await
    .expect("bounded");
}

/// Where signatures are required, a group takes a captured wave played
/// again once, whichever of its members NATS gives each copy to; and a
/// resonance that starts after a wave was stamped does not take it when it
/// is played again within the replay window (a restarted service would
/// act on it twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_pass_neither_a_group_nor_a_fresh_resonance() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let url = server.url();
        let receiving = Aether::connect(over(&url, strict())).await.unwrap();
        let sending = Aether::connect(over(&url, strict())).await.unwrap();
        let mut members = Vec::new();
        for _ in 0..3 {
            let mut member = Vibrator::create("beta", &receiving).await.unwrap();
            member
                .resonate_in_group("orders.*", "workers")
                .await
                .unwrap();
            members.push(member);
        }
        let alpha = Vibrator::create("alpha", &sending).await.unwrap();
        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        raw.subscribe("aether.orders.created", 1, None)
            .await
            .unwrap();
        raw.ping().await.unwrap();
        // Until the group is heard (its subscriptions reach the server).
        let taken_by = |members: &mut Vec<Vibrator>| {
            let mut taken = 0;
            for member in members.iter_mut() {
                while member.try_receive().is_some() {
                    taken += 1;
                }
            }
            taken
        };
        let first = 'first: loop {
            alpha.emit_wave("orders.created", "order 7").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            for member in members.iter_mut() {
                if let Some(wave) = member.try_receive() {
                    break 'first wave;
                }
            }
        };
        let captured = loop {
            let message = raw
                .next_message(Duration::from_secs(5))
                .await
                .unwrap()
                .unwrap();
            let wave = wire::decode(
                Channel::new("orders.created"),
                message.payload.clone().into(),
                &wire::Limits::default(),
            )
            .unwrap();
            if wave.id() == first.id() {
                break message.payload;
            }
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        taken_by(&mut members);
        let replays_before = receiving.stats().dropped(DropReason::Replay);
        for _ in 0..30 {
            raw.publish("aether.orders.created", None, &captured)
                .await
                .unwrap();
        }
        raw.ping().await.unwrap();
        until_dropped(&receiving, DropReason::Replay, replays_before + 30).await;
        assert_eq!(taken_by(&mut members), 0, "a member took a replay");

        // A resonance started after the wave: a restarted service.
        tokio::time::sleep(crate_start_skew()).await;
        let later = Aether::connect(over(&url, strict())).await.unwrap();
        let mut restarted = Vibrator::create("beta", &later).await.unwrap();
        restarted.resonate_on("orders.*").await.unwrap();
        let mut probe = Vibrator::create("beta", &later).await.unwrap();
        probe.resonate_on("orders.*").await.unwrap();
        // Heard once the subscription is at the server: a fresh wave.
        loop {
            alpha.emit_wave("orders.created", "fresh").await.unwrap();
            if let Ok(Some(_)) = timeout(Duration::from_millis(100), probe.receive()).await {
                break;
            }
        }
        while timeout(Duration::from_millis(100), restarted.receive())
            .await
            .is_ok()
        {}
        let before = later.stats().dropped(DropReason::Replay);
        raw.publish("aether.orders.created", None, &captured)
            .await
            .unwrap();
        raw.ping().await.unwrap();
        until_dropped(&later, DropReason::Replay, before + 1).await;
        quiet(&mut restarted).await;
    })
    .await
    .expect("bounded");
}

/// A little more than the skew a fresh replay memory allows before its
/// start (1 s).
fn crate_start_skew() -> Duration {
    Duration::from_millis(1_100)
}
