//! Who opens what: TLS, the bridge's token and tokens with rights, an
//! unknown map, and the reason a close gives.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_bridge_is_served_over_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let aether = Aether::default();
    let mut config = bridged(BridgeConfig::default());
    config.tls.cert = Some(cert_path);
    config.tls.key = Some(key_path);
    let gateway = start(&aether, config).await;
    let addr = gateway.addr();

    // Plain HTTP gets no answer.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(format!("ws://{addr}/bridge/board")),
    )
    .await
    .expect("a plain connection is dropped, not left hanging");
    assert!(plain.is_err(), "a plain WebSocket is refused");

    // TLS with the certificate as the root: the bridge speaks.
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let client = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("the TLS handshake");
    let (mut socket, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{}/bridge/board", addr.port()),
        tls,
    )
    .await
    .expect("the upgrade over TLS");
    let auth = json!({"type": "auth", "token": TOKEN, "replica": "00000000000000aa"});
    socket.send(Message::text(auth.to_string())).await.unwrap();
    let hello = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let hello: Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    assert_eq!(hello["type"], "hello");
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_generated_token_is_long_and_random() {
    let aether = Aether::default();
    let config = GatewayConfig {
        bridge: BridgeConfig {
            maps: vec!["board".into()],
            ..Default::default()
        },
        ..config()
    };
    let one = start(&aether, config.clone()).await;
    let token = one.bridge_token().unwrap().to_string();
    assert_eq!(token.len(), 32);
    one.stop().await.unwrap();
    let two = start(&aether, config).await;
    assert_ne!(two.bridge_token().unwrap(), token);
    two.stop().await.unwrap();
}

/// Tokens with rights: a read-only token reads the map live and each of
/// its writes is refused as `forbidden` (answered with the entry, counted);
/// a token with prefixes writes under them only; a token for other maps
/// opens none here (unauthorized); the bridge's own token writes anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_open_their_maps_and_write_within_their_rights() {
    const VIEWER: &str = "a-viewer-token-of-the-tests-0001";
    const CARDS: &str = "a-cards-token-of-the-tests-00002";
    const NOTES: &str = "a-notes-token-of-the-tests-00003";
    let aether = Aether::default();
    let token = |token: &str, maps: &[&str], read_only: bool, prefixes: &[&str]| {
        aether_gateway::BridgeToken {
            token: token.into(),
            maps: (!maps.is_empty()).then(|| maps.iter().map(|m| m.to_string()).collect()),
            read_only,
            prefixes: (!prefixes.is_empty())
                .then(|| prefixes.iter().map(|p| p.to_string()).collect()),
        }
    };
    let gateway = start(
        &aether,
        GatewayConfig {
            bridge: BridgeConfig {
                token: Some(TOKEN.into()),
                maps: vec!["board".into(), "notes".into()],
                tokens: vec![
                    token(VIEWER, &[], true, &[]),
                    token(CARDS, &["board"], false, &["cards/"]),
                    token(NOTES, &["notes"], false, &[]),
                ],
                ..Default::default()
            },
            ..config()
        },
    )
    .await;
    let service = service_board(&aether).await;
    let addr = gateway.addr();
    service.set_json("cards/1", &"first").await.unwrap();

    // Read-only: the map comes, changes come, writes are refused.
    let mut viewer = Client::connect(addr, "board", VIEWER).await;
    assert_eq!(viewer.received[1]["entries"]["cards/1"]["value"], "first");
    let stamp = viewer.stamp();
    viewer
        .send(json!({"type": "set", "key": "cards/1", "value": "mine", "stamp": stamp}))
        .await;
    let refusal = viewer.until("refused", Some("cards/1")).await;
    assert_eq!(refusal["reason"], "forbidden");
    assert_eq!(
        viewer.until("set", Some("cards/1")).await["value"],
        "first",
        "answered with the entry"
    );
    let stamp = viewer.stamp();
    viewer
        .send(json!({"type": "writes", "writes": [{"key": "title", "deleted": true, "stamp": stamp}]}))
        .await;
    assert_eq!(
        viewer.until("refused", Some("title")).await["reason"],
        "forbidden"
    );
    service.set_json("cards/2", &"second").await.unwrap();
    assert_eq!(
        viewer.until("set", Some("cards/2")).await["value"],
        "second"
    );

    // Prefixes: under them taken, elsewhere refused.
    let mut cards = Client::connect(addr, "board", CARDS).await;
    let stamp = cards.stamp();
    let outside = cards.stamp();
    cards
        .send(json!({"type": "writes", "writes": [
            {"key": "cards/3", "value": "third", "stamp": stamp},
            {"key": "title", "value": "not mine", "stamp": outside},
        ]}))
        .await;
    assert_eq!(
        cards.until("refused", Some("title")).await["reason"],
        "forbidden"
    );
    eventually("the card written under its prefix", || {
        service
            .get_json::<String>("cards/3")
            .ok()
            .flatten()
            .as_deref()
            == Some("third")
    })
    .await;
    assert!(service.get("title").is_none());

    // A token for other maps opens none here; the bridge's own writes.
    let mut wrong = open(addr, "board").await;
    let auth = json!({"type": "auth", "token": NOTES, "replica": "00000000000000c1"});
    wrong.send(Message::text(auth.to_string())).await.unwrap();
    let (code, reason) = close_of(&mut wrong).await.expect("a close frame");
    assert_eq!(code, 1008);
    assert!(reason.starts_with("unauthorized"), "{reason}");
    Client::connect(addr, "notes", NOTES).await;
    let mut owner = Client::connect(addr, "board", TOKEN).await;
    let stamp = owner.stamp();
    owner
        .send(json!({"type": "set", "key": "title", "value": "the board", "stamp": stamp}))
        .await;
    eventually("the bridge's own token writes anywhere", || {
        service.get("title").is_some()
    })
    .await;
    assert_eq!(
        metric(
            &gateway,
            "aether_bridge_writes_total{outcome=\"forbidden\"}"
        ),
        3
    );
    assert_eq!(refused(&gateway, "token"), 1);
    close_board(service, gateway).await;
}

/// A mistyped map is told as such (a page would otherwise take the 404 of
/// its upgrade for a gateway that is down), and a plain request still
/// gets the 404; a close says its reason first, as the client reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_map_and_each_close_say_why() {
    let aether = Aether::default();
    let limits = BridgeConfig {
        messages_per_s: 5,
        burst: 5,
        ..Default::default()
    };
    let gateway = start(&aether, bridged(limits)).await;
    let addr = gateway.addr();
    let mut typo = open(addr, "bord").await;
    assert_eq!(
        close_of(&mut typo).await,
        Some((1008, "unknown_map".to_string()))
    );
    assert_eq!(refused(&gateway, "unknown_map"), 1);
    assert_eq!(get(addr, "/bridge/bord").await.status, 404);

    let mut wrong = Client::connect_silent(addr, "board", "not-the-token").await;
    assert_eq!(
        close_of(&mut wrong.socket).await,
        Some((1008, "unauthorized".to_string()))
    );

    let mut fast = Client::connect(addr, "board", TOKEN).await;
    for n in 0..20 {
        let set = json!({"type": "set", "key": format!("k{n}"), "value": n, "stamp": fast.stamp()});
        // The gateway closes it part way: later sends may fail.
        if fast
            .socket
            .send(Message::text(set.to_string()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = close_of(&mut fast.socket).await.expect("a close frame");
    assert_eq!(code, 1008);
    assert!(reason.starts_with("rate_limited: "), "{reason}");

    let mut odd = Client::connect(addr, "board", TOKEN).await;
    odd.send(
        json!({"type": "set", "key": "k", "value": 1, "stamp": stamp_now(), "prev": "yesterday"}),
    )
    .await;
    let (code, reason) = close_of(&mut odd.socket).await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (1008, "malformed: bad prev"));
    gateway.stop().await.unwrap();
}
