//! Single-server tests: pub/sub, restart, auth, TLS, JetStream.

use std::time::Duration;

use aether_testkit::{
    Auth, ClientAuth, Error, NKeyUser, NatsServer, RawNats, TestPki, free_port, nats_server_path,
};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(2);

#[test]
fn finds_nats_server_binary() {
    let path = nats_server_path().expect("nats-server installed");
    assert!(path.ends_with("nats-server"), "{}", path.display());
    assert_ne!(free_port().unwrap(), 0);
}

#[tokio::test]
async fn raw_pub_sub_round_trip() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.expect("server starts");
        assert!(server.is_running());
        assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));

        let mut sub = RawNats::connect(server.addr()).await.unwrap();
        assert_eq!(sub.info()["server_name"], server.server_name());
        sub.subscribe("tk.echo.>", 7, None).await.unwrap();
        sub.subscribe("tk.echo.q", 8, Some("workers"))
            .await
            .unwrap();
        sub.ping().await.unwrap();

        let mut publisher = RawNats::connect(server.addr()).await.unwrap();
        // Payload with CRLF and "MSG" inside, to check exact byte counting.
        let payload = b"line one\r\nMSG fake 1 3\r\nabc\r\n\x00\xff";
        publisher
            .publish("tk.echo.a", Some("tk.reply"), payload)
            .await
            .unwrap();
        publisher.publish("tk.echo.q", None, b"").await.unwrap();
        publisher.ping().await.unwrap();

        let m = sub
            .next_message(WAIT)
            .await
            .unwrap()
            .expect("first message");
        assert_eq!(m.subject, "tk.echo.a");
        assert_eq!(m.sid, 7);
        assert_eq!(m.reply.as_deref(), Some("tk.reply"));
        assert_eq!(m.payload, payload);

        let mut got = vec![];
        for _ in 0..2 {
            let m = sub
                .next_message(WAIT)
                .await
                .unwrap()
                .expect("queue message");
            assert_eq!(m.subject, "tk.echo.q");
            assert!(m.payload.is_empty());
            got.push(m.sid);
        }
        got.sort();
        assert_eq!(got, vec![7, 8]);

        sub.unsubscribe(7).await.unwrap();
        sub.ping().await.unwrap();
        publisher.publish("tk.echo.b", None, b"x").await.unwrap();
        publisher.ping().await.unwrap();
        assert!(
            sub.next_message(Duration::from_millis(200))
                .await
                .unwrap()
                .is_none()
        );

        // Messages arriving during a ping are kept.
        publisher.publish("tk.echo.q", None, b"kept").await.unwrap();
        publisher.ping().await.unwrap();
        sub.ping().await.unwrap();
        let m = sub.next_message(WAIT).await.unwrap().expect("kept message");
        assert_eq!(m.payload, b"kept");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn kill_then_restart_on_same_port() {
    timeout(LIMIT, async {
        let mut server = NatsServer::start().await.unwrap();
        let port = server.port();
        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        raw.subscribe("tk.restart", 1, None).await.unwrap();
        raw.ping().await.unwrap();

        server.kill().await.unwrap();
        assert!(!server.is_running());
        let err = raw
            .next_message(WAIT)
            .await
            .expect_err("connection must drop");
        assert!(
            matches!(err, Error::ConnectionClosed | Error::Io { .. }),
            "{err:?}"
        );
        assert!(RawNats::connect(server.addr()).await.is_err());

        server.restart().await.unwrap();
        assert!(server.is_running());
        assert_eq!(server.port(), port);

        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        raw.subscribe("tk.restart", 1, None).await.unwrap();
        raw.ping().await.unwrap();
        raw.publish("tk.restart", None, b"again").await.unwrap();
        let m = raw.next_message(WAIT).await.unwrap().expect("message");
        assert_eq!(m.payload, b"again");

        server.stop().await.unwrap();
        assert!(!server.is_running());
        assert!(server.log().contains("Server is ready"));
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn jetstream_store_survives_restart() {
    timeout(LIMIT, async {
        let mut server = NatsServer::builder()
            .jetstream(true)
            .max_payload(2 * 1024 * 1024)
            .start()
            .await
            .unwrap();
        let store = server.store_dir().expect("store dir");
        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        assert_eq!(raw.info()["jetstream"], true);
        assert_eq!(raw.info()["max_payload"], 2 * 1024 * 1024);

        // Create a stream through the JetStream API.
        raw.subscribe("tk.inbox", 1, None).await.unwrap();
        let cfg = br#"{"name":"TK","subjects":["tk.js.>"],"storage":"file"}"#;
        raw.publish("$JS.API.STREAM.CREATE.TK", Some("tk.inbox"), cfg)
            .await
            .unwrap();
        let m = raw
            .next_message(WAIT)
            .await
            .unwrap()
            .expect("create answer");
        let text = String::from_utf8_lossy(&m.payload).to_string();
        assert!(!text.contains("\"error\""), "{text}");

        server.restart().await.unwrap();
        assert!(store.exists());
        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        raw.subscribe("tk.inbox", 1, None).await.unwrap();
        raw.publish("$JS.API.STREAM.INFO.TK", Some("tk.inbox"), b"")
            .await
            .unwrap();
        let m = raw.next_message(WAIT).await.unwrap().expect("info answer");
        let text = String::from_utf8_lossy(&m.payload).to_string();
        assert!(
            text.contains("\"name\":\"TK\"") && !text.contains("\"error\""),
            "{text}"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn token_auth_refuses_without_token_and_accepts_with_it() {
    timeout(LIMIT, async {
        let server = NatsServer::builder()
            .auth(Auth::Token("s3cret \"token\"".into()))
            .start()
            .await
            .unwrap();
        let info = RawNats::fetch_info(server.addr()).await.unwrap();
        assert_eq!(info["auth_required"], true);

        match RawNats::connect(server.addr()).await {
            Err(Error::Server(msg)) => assert!(msg.contains("Authorization"), "{msg}"),
            Err(Error::ConnectionClosed) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
        match RawNats::connect_with(server.addr(), ClientAuth::Token("wrong".into())).await {
            Err(Error::Server(_) | Error::ConnectionClosed) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }

        let mut raw =
            RawNats::connect_with(server.addr(), ClientAuth::Token("s3cret \"token\"".into()))
                .await
                .unwrap();
        raw.subscribe("tk.auth", 1, None).await.unwrap();
        raw.publish("tk.auth", None, b"ok").await.unwrap();
        assert_eq!(
            raw.next_message(WAIT).await.unwrap().unwrap().payload,
            b"ok"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn user_password_and_nkey_auth() {
    timeout(LIMIT, async {
        let server = NatsServer::builder()
            .auth(Auth::UserPassword {
                user: "alice".into(),
                password: "pa ss".into(),
            })
            .start()
            .await
            .unwrap();
        assert!(RawNats::connect(server.addr()).await.is_err());
        let bad = ClientAuth::UserPassword {
            user: "alice".into(),
            password: "nope".into(),
        };
        assert!(RawNats::connect_with(server.addr(), bad).await.is_err());
        let good = ClientAuth::UserPassword {
            user: "alice".into(),
            password: "pa ss".into(),
        };
        RawNats::connect_with(server.addr(), good)
            .await
            .unwrap()
            .ping()
            .await
            .unwrap();

        let user = NKeyUser::generate().unwrap();
        assert!(user.public_key().starts_with('U'));
        assert!(user.seed().starts_with("SU"));
        let server = NatsServer::builder()
            .auth(Auth::NKey {
                public_key: user.public_key().to_string(),
            })
            .start()
            .await
            .unwrap();
        assert!(RawNats::connect(server.addr()).await.is_err());
        let stranger = NKeyUser::generate().unwrap();
        let wrong = ClientAuth::NKey {
            seed: stranger.seed().to_string(),
        };
        assert!(RawNats::connect_with(server.addr(), wrong).await.is_err());
        let right = ClientAuth::NKey {
            seed: user.seed().to_string(),
        };
        RawNats::connect_with(server.addr(), right)
            .await
            .unwrap()
            .ping()
            .await
            .unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn tls_server_starts_and_requires_tls() {
    timeout(LIMIT, async {
        let pki = TestPki::generate().unwrap();
        for path in [
            pki.ca_pem_path(),
            pki.server_cert_path(),
            pki.server_key_path(),
            pki.client_cert_path(),
            pki.client_key_path(),
            pki.other_ca_pem_path(),
        ] {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.starts_with("-----BEGIN"), "{}", path.display());
        }
        assert_ne!(pki.ca_pem(), pki.other_ca_pem());

        for verify in [false, true] {
            let server = NatsServer::builder()
                .tls(&pki, verify)
                .start()
                .await
                .unwrap();
            assert!(server.url().starts_with("tls://127.0.0.1:"));
            let info = RawNats::fetch_info(server.addr()).await.unwrap();
            assert_eq!(info["tls_required"], true, "{info}");
            if verify {
                assert_eq!(info["tls_verify"], true, "{info}");
            }
            // A plain CONNECT is rejected.
            assert!(RawNats::connect(server.addr()).await.is_err());
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn bad_config_reports_log_tail() {
    timeout(LIMIT, async {
        let err = NatsServer::builder()
            .extra_config("this is { not valid")
            .start()
            .await
            .expect_err("invalid config must fail");
        let text = err.to_string();
        assert!(text.contains("server log"), "{text}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn fixed_port_in_use_fails_fast_with_log() {
    timeout(LIMIT, async {
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = squatter.local_addr().unwrap().port();
        let started = std::time::Instant::now();
        let err = NatsServer::builder()
            .port(port)
            .start()
            .await
            .expect_err("port is taken");
        let text = err.to_string();
        assert!(text.contains("address already in use"), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    })
    .await
    .expect("test timed out");
}
