//! Security on the wire for the NATS medium, against real `nats-server`
//! processes on loopback: TLS with server verification, mutual TLS, token,
//! user/password and NKey authentication, and secrets kept out of `Debug`
//! output and logs. Every test is bounded in time.
//!
//! Not covered: `.creds` (JWT) files, which need a server in operator mode.

#![cfg(feature = "nats")]

use std::{path::PathBuf, time::Duration};

use aether_core::{
    Aether, AetherConfig, ConnectError, ConnectErrorKind, ConnectionEvent, Secret, Vibrator,
    config::{NatsAuth, NatsConfig, NatsTls},
};
use aether_testkit::{Auth, LogBuffer, NKeyUser, NatsServer, TestPki};
use serde_json::json;
use tokio::time::timeout;

/// Each test fails rather than hangs past this.
const LIMIT: Duration = Duration::from_secs(10);

const TOKEN: &str = "tok-7Qm2xV9c-never-print-me";
const WRONG_TOKEN: &str = "tok-WRONG-4bLp0s-never-print-me";
const USER: &str = "aether-user";
const PASSWORD: &str = "pw-Zr8Kq1u3-never-print-me";
const WRONG_PASSWORD: &str = "pw-WRONG-h6Tn2d-never-print-me";

fn config(url: String, tls: NatsTls, auth: NatsAuth) -> AetherConfig {
    AetherConfig {
        nats: NatsConfig {
            urls: vec![url],
            connect_timeout: Duration::from_millis(2000),
            reconnect_delay_max: Duration::from_millis(100),
            tls,
            auth,
            batch: aether_core::config::NatsBatch {
                enabled: aether_testkit::batch_frames(),
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

fn trust(ca: PathBuf) -> NatsTls {
    NatsTls {
        ca_file: Some(ca),
        ..Default::default()
    }
}

fn mtls(ca: PathBuf, cert: PathBuf, key: PathBuf) -> NatsTls {
    NatsTls {
        ca_file: Some(ca),
        cert_file: Some(cert),
        key_file: Some(key),
        ..Default::default()
    }
}

fn token(token: &str) -> NatsAuth {
    NatsAuth {
        token: Some(Secret::new(token)),
        ..Default::default()
    }
}

fn user_password(user: &str, password: &str) -> NatsAuth {
    NatsAuth {
        user: Some(user.to_string()),
        password: Some(Secret::new(password)),
        ..Default::default()
    }
}

fn nkey(seed: &str) -> NatsAuth {
    NatsAuth {
        nkey_seed: Some(Secret::new(seed)),
        ..Default::default()
    }
}

/// Connects, expecting success.
async fn connect(config: AetherConfig) -> Aether {
    Aether::connect(config)
        .await
        .unwrap_or_else(|e| panic!("expected to connect, got {e}"))
}

/// Connects, expecting a refusal; returns the error.
async fn refused(what: &str, config: AetherConfig) -> ConnectError {
    match Aether::connect(config).await {
        Ok(aether) => panic!("{what}: expected a refusal, connected: {aether:?}"),
        Err(e) => {
            eprintln!("{what}: refused, {:?}: {}", e.kind(), chain(&e));
            e
        }
    }
}

/// The error's text with its whole source chain.
fn chain(e: &ConnectError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(" <- ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A wave goes from one vibrator to another through the server.
async fn round_trip(aether: &Aether) {
    let mut rx = Vibrator::create("secure-rx", aether).await.unwrap();
    rx.resonate_on("secure.ping").await.unwrap();
    let tx = Vibrator::create("secure-tx", aether).await.unwrap();
    tx.emit_wave("secure.ping", json!({"n": 42})).await.unwrap();
    let wave = timeout(Duration::from_secs(5), rx.receive())
        .await
        .expect("the wave arrives in time")
        .expect("the aether is open");
    assert_eq!(wave.channel().as_str(), "secure.ping");
    assert_eq!(wave.payload()["n"], 42);
    assert_eq!(wave.source(), Some("secure-tx"));
}

/// Asserts `text` holds none of `secrets`.
fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{what} leaks a secret ({secret}):\n{text}"
        );
    }
}

async fn run(test: impl Future<Output = ()>) {
    timeout(LIMIT, test)
        .await
        .expect("the test finishes in time");
}

// ---------------------------------------------------------------- TLS

#[tokio::test]
async fn tls_with_server_verification_round_trips() {
    run(async {
        let pki = TestPki::generate().unwrap();
        let server = NatsServer::builder()
            .tls(&pki, false)
            .start()
            .await
            .unwrap();
        assert!(server.url().starts_with("tls://"), "{}", server.url());
        let aether = connect(config(
            server.url(),
            trust(pki.ca_pem_path()),
            NatsAuth::default(),
        ))
        .await;
        round_trip(&aether).await;
    })
    .await;
}

/// Asserts a refusal by the TLS handshake: kind `Tls` (retrying would not
/// help), and the error names the certificate.
fn assert_tls_refusal(err: &ConnectError) {
    let text = chain(err);
    assert!(
        text.to_lowercase().contains("cert"),
        "the error names the certificate as the problem: {text}"
    );
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{text}");
}

/// Refused by the TLS handshake with the server of `url`, which verifies
/// clients: no client certificate, and a client certificate of the other CA.
async fn client_certificate_refusals(pki: &TestPki, url: &str) -> Vec<ConnectError> {
    vec![
        refused(
            "client without a certificate",
            config(url.into(), trust(pki.ca_pem_path()), NatsAuth::default()),
        )
        .await,
        refused(
            "client certificate of the other CA",
            config(
                url.into(),
                mtls(
                    pki.ca_pem_path(),
                    pki.other_client_cert_path(),
                    pki.other_client_key_path(),
                ),
                NatsAuth::default(),
            ),
        )
        .await,
    ]
}

/// Refused by the TLS handshake with the server of `url`: its certificate
/// is checked against the other CA only.
async fn untrusted_server_refusal(pki: &TestPki, url: &str) -> ConnectError {
    refused(
        "trusting only the other CA",
        config(
            url.into(),
            trust(pki.other_ca_pem_path()),
            NatsAuth::default(),
        ),
    )
    .await
}

#[tokio::test]
async fn tls_server_signed_by_an_untrusted_ca_is_refused() {
    run(async {
        let pki = TestPki::generate().unwrap();
        let server = NatsServer::builder()
            .tls(&pki, false)
            .start()
            .await
            .unwrap();
        assert_tls_refusal(&untrusted_server_refusal(&pki, &server.url()).await);

        // A CA file that cannot be read is a TLS error too.
        let missing = refused(
            "a CA file that does not exist",
            config(
                server.url(),
                trust(pki.dir().join("no-such-ca.pem")),
                NatsAuth::default(),
            ),
        )
        .await;
        assert_eq!(missing.kind(), ConnectErrorKind::Tls, "{}", chain(&missing));
    })
    .await;
}

/// Every handshake refusal (untrusted server, client certificate missing or
/// from another CA) has kind `Tls`.
#[tokio::test]
async fn tls_handshake_failures_have_kind_tls() {
    run(async {
        let pki = TestPki::generate().unwrap();
        let server = NatsServer::builder().tls(&pki, true).start().await.unwrap();
        let mut errors = client_certificate_refusals(&pki, &server.url()).await;
        errors.push(untrusted_server_refusal(&pki, &server.url()).await);
        for err in errors {
            assert_eq!(err.kind(), ConnectErrorKind::Tls, "{}", chain(&err));
        }
    })
    .await;
}

#[tokio::test]
async fn plain_client_against_a_tls_server_is_refused() {
    run(async {
        let pki = TestPki::generate().unwrap();
        let server = NatsServer::builder()
            .tls(&pki, false)
            .start()
            .await
            .unwrap();
        let plain_url = format!("nats://127.0.0.1:{}", server.port());
        assert_ne!(plain_url, server.url());
        let err = refused(
            "plain nats:// client without a CA",
            config(plain_url, NatsTls::default(), NatsAuth::default()),
        )
        .await;
        // The client upgrades to TLS when the server's INFO requires it,
        // then cannot verify the test CA with the system's roots.
        assert_tls_refusal(&err);
    })
    .await;
}

#[tokio::test]
async fn mutual_tls_accepts_the_ca_signed_client_only() {
    run(async {
        let pki = TestPki::generate().unwrap();
        let server = NatsServer::builder().tls(&pki, true).start().await.unwrap();
        let aether = connect(config(
            server.url(),
            mtls(
                pki.ca_pem_path(),
                pki.client_cert_path(),
                pki.client_key_path(),
            ),
            NatsAuth::default(),
        ))
        .await;
        round_trip(&aether).await;

        // The same server refuses a client without a certificate, and one
        // with a certificate of the other CA.
        for err in client_certificate_refusals(&pki, &server.url()).await {
            assert_tls_refusal(&err);
        }
    })
    .await;
}

// ---------------------------------------------------------------- authentication

/// The server at `url` takes `auth` (a wave round trips, and the connected
/// aether's Debug holds none of `secrets`) and refuses each of `refusals`
/// as unauthorized, its error naming none of `secrets`.
async fn accepts_only(
    url: String,
    auth: NatsAuth,
    refusals: Vec<(&str, NatsAuth)>,
    secrets: &[&str],
) {
    let aether = connect(config(url.clone(), NatsTls::default(), auth)).await;
    round_trip(&aether).await;
    assert_no_secret(
        "the connected aether's Debug",
        &format!("{aether:?}"),
        secrets,
    );

    for (what, auth) in refusals {
        let err = refused(what, config(url.clone(), NatsTls::default(), auth)).await;
        assert_eq!(
            err.kind(),
            ConnectErrorKind::Authorization,
            "{what}: {}",
            chain(&err)
        );
        assert_no_secret(what, &format!("{} {err:?}", chain(&err)), secrets);
    }
}

#[tokio::test]
async fn token_auth_accepts_the_token_and_refuses_others() {
    run(async {
        let server = NatsServer::builder()
            .auth(Auth::Token(TOKEN.into()))
            .start()
            .await
            .unwrap();
        accepts_only(
            server.url(),
            token(TOKEN),
            vec![
                ("wrong token", token(WRONG_TOKEN)),
                ("no token", NatsAuth::default()),
            ],
            &[TOKEN, WRONG_TOKEN],
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn user_password_auth_accepts_the_pair_and_refuses_others() {
    run(async {
        let server = NatsServer::builder()
            .auth(Auth::UserPassword {
                user: USER.into(),
                password: PASSWORD.into(),
            })
            .start()
            .await
            .unwrap();
        accepts_only(
            server.url(),
            user_password(USER, PASSWORD),
            vec![
                ("wrong password", user_password(USER, WRONG_PASSWORD)),
                ("unknown user", user_password("intruder", PASSWORD)),
                ("no credentials", NatsAuth::default()),
            ],
            &[PASSWORD, WRONG_PASSWORD],
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn nkey_auth_accepts_the_key_and_refuses_others() {
    run(async {
        let user = NKeyUser::generate().unwrap();
        let stranger = NKeyUser::generate().unwrap();
        let server = NatsServer::builder()
            .auth(Auth::NKey {
                public_key: user.public_key().into(),
            })
            .start()
            .await
            .unwrap();
        accepts_only(
            server.url(),
            nkey(user.seed()),
            vec![
                ("another user's seed", nkey(stranger.seed())),
                ("a malformed seed", nkey("SUnot-a-seed")),
                ("no credentials", NatsAuth::default()),
            ],
            &[user.seed(), stranger.seed()],
        )
        .await;
    })
    .await;
}

// ---------------------------------------------------------------- secrets in Debug

#[test]
fn debug_of_a_config_holds_no_secret() {
    let seed = NKeyUser::generate().unwrap();
    let config = AetherConfig {
        nats: NatsConfig {
            auth: NatsAuth {
                token: Some(Secret::new(TOKEN)),
                user: Some(USER.into()),
                password: Some(Secret::new(PASSWORD)),
                nkey_seed: Some(Secret::new(seed.seed())),
                credentials_file: None,
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let secrets = [TOKEN, PASSWORD, seed.seed()];
    for (what, text) in [
        ("Debug", format!("{config:?}")),
        ("pretty Debug", format!("{config:#?}")),
        ("Debug of the auth", format!("{:?}", config.nats.auth)),
        ("serialized", serde_json::to_string(&config).unwrap()),
    ] {
        assert_no_secret(what, &text, &secrets);
        assert_eq!(text.matches("[redacted]").count(), 3, "{what}: {text}");
    }
}

// ---------------------------------------------------------------- secrets in logs

/// On one thread, so the subscriber set for this thread sees every log of
/// async-nats and of the aether.
#[tokio::test(flavor = "current_thread")]
async fn logs_hold_no_secret() {
    let logs = LogBuffer::default();
    let _guard = logs.capture_this_thread();
    let nkey_user = NKeyUser::generate().unwrap();

    run(async {
        // Token: accepted, then refused with a wrong one, then the server
        // dies under the connected aether.
        let mut server = NatsServer::builder()
            .auth(Auth::Token(TOKEN.into()))
            .start()
            .await
            .unwrap();
        let aether = connect(config(server.url(), NatsTls::default(), token(TOKEN))).await;
        round_trip(&aether).await;
        tracing::info!(?aether, "connected aether");
        let wrong = refused(
            "wrong token",
            config(server.url(), NatsTls::default(), token(WRONG_TOKEN)),
        )
        .await;
        tracing::info!(error = %wrong, "refused as expected");
        let mut events = aether.connection_events();
        server.kill().await.unwrap();
        timeout(Duration::from_secs(5), async {
            loop {
                match events.recv().await {
                    Ok(ConnectionEvent::Disconnected) => break,
                    Ok(_) => {}
                    Err(e) => panic!("no disconnect event: {e}"),
                }
            }
        })
        .await
        .expect("the disconnect is noticed");
        // A few reconnect attempts against the dead server.
        tokio::time::sleep(Duration::from_millis(300)).await;
        aether.close();
        drop(aether);

        // User and password, right then wrong.
        let server = NatsServer::builder()
            .auth(Auth::UserPassword {
                user: USER.into(),
                password: PASSWORD.into(),
            })
            .start()
            .await
            .unwrap();
        let aether = connect(config(
            server.url(),
            NatsTls::default(),
            user_password(USER, PASSWORD),
        ))
        .await;
        round_trip(&aether).await;
        refused(
            "wrong password",
            config(
                server.url(),
                NatsTls::default(),
                user_password(USER, WRONG_PASSWORD),
            ),
        )
        .await;
        aether.close();
        drop(aether);

        // NKey.
        let server = NatsServer::builder()
            .auth(Auth::NKey {
                public_key: nkey_user.public_key().into(),
            })
            .start()
            .await
            .unwrap();
        let aether = connect(config(
            server.url(),
            NatsTls::default(),
            nkey(nkey_user.seed()),
        ))
        .await;
        round_trip(&aether).await;
        aether.close();
    })
    .await;

    let text = logs.text();
    assert!(!text.is_empty(), "nothing was logged");
    assert!(
        text.contains("connected to NATS"),
        "the aether's own logs are captured:\n{text}"
    );
    assert!(
        text.contains("async_nats"),
        "async-nats's logs are captured:\n{text}"
    );
    assert!(
        text.contains("disconnected from NATS"),
        "the disconnect is logged:\n{text}"
    );
    assert_no_secret(
        "the logs",
        &text,
        &[
            TOKEN,
            WRONG_TOKEN,
            PASSWORD,
            WRONG_PASSWORD,
            nkey_user.seed(),
        ],
    );
}

// ---------------------------------------------------------------- what refusals say

/// A refused connect names the servers it tried (credentials redacted) and
/// says what to check: nobody listening, a plain server asked for TLS, a
/// TLS server without the client certificate it requires.
#[tokio::test]
async fn refusals_name_the_servers_and_what_to_check() {
    run(async {
        // Nobody listens on a free port.
        let port = aether_testkit::free_port().unwrap();
        let url = format!("nats://someone:{PASSWORD}@127.0.0.1:{port}");
        let mut unreachable = config(url, NatsTls::default(), NatsAuth::default());
        unreachable.nats.connect_timeout = Duration::from_millis(500);
        let err = refused("nobody listening", unreachable).await;
        let text = err.to_string();
        assert_eq!(err.kind(), ConnectErrorKind::Unreachable, "{text}");
        assert!(
            text.contains(&format!("nats://[redacted]@127.0.0.1:{port}")),
            "{text}"
        );
        assert!(text.contains("nats-server listens there"), "{text}");
        assert_no_secret("the refusal", &chain(&err), &[PASSWORD]);

        // TLS required of a server that speaks plain NATS.
        let plain = NatsServer::start().await.unwrap();
        let tls = NatsTls {
            required: true,
            ..Default::default()
        };
        let err = refused(
            "tls.required against a plain server",
            config(plain.url(), tls, NatsAuth::default()),
        )
        .await;
        assert_eq!(err.kind(), ConnectErrorKind::Tls, "{}", chain(&err));
        let text = err.to_string();
        assert!(text.contains(&plain.url()), "{text}");
        assert!(text.contains("TLS"), "{text}");

        // A server that requires a client certificate, and none is given.
        let pki = TestPki::generate().unwrap();
        let server = NatsServer::builder().tls(&pki, true).start().await.unwrap();
        let err = refused(
            "no client certificate",
            config(server.url(), trust(pki.ca_pem_path()), NatsAuth::default()),
        )
        .await;
        let text = err.to_string();
        assert_eq!(err.kind(), ConnectErrorKind::Tls, "{}", chain(&err));
        assert!(
            text.contains("cert_file") && text.contains("key_file"),
            "says which settings to give: {text}"
        );

        // A CA file that holds no certificate, or none at all: named.
        let not_pem = pki.dir().join("not-a-ca.txt");
        std::fs::write(&not_pem, "hello\n").unwrap();
        for (path, says) in [
            (not_pem.clone(), "holds no PEM CERTIFICATE"),
            (pki.dir().join("missing.pem"), "cannot be read"),
        ] {
            let err = refused(
                "an unusable ca_file",
                config(server.url(), trust(path.clone()), NatsAuth::default()),
            )
            .await;
            let text = err.to_string();
            assert_eq!(err.kind(), ConnectErrorKind::Tls, "{text}");
            assert!(text.contains("nats.tls.ca_file"), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(says), "{text}");
        }
    })
    .await;
}

/// Credentials in a server URL (`nats://user:password@host`) connect, and
/// show nowhere: not in `Debug` of the settings, not in the logs at TRACE
/// (the client is given them apart from the address it logs).
#[tokio::test(flavor = "current_thread")]
async fn credentials_in_a_url_are_redacted() {
    let logs = LogBuffer::default();
    let _guard = logs.capture_this_thread();
    run(async {
        let server = NatsServer::builder()
            .auth(Auth::UserPassword {
                user: USER.into(),
                password: PASSWORD.into(),
            })
            .start()
            .await
            .unwrap();
        let url = format!("nats://{USER}:{PASSWORD}@127.0.0.1:{}", server.port());
        let settings = config(url, NatsTls::default(), NatsAuth::default());
        let debug = format!("{settings:?} {settings:#?}");
        assert_no_secret("Debug of the settings", &debug, &[PASSWORD]);
        assert!(debug.contains("[redacted]@127.0.0.1"), "{debug}");
        tracing::debug!(?settings, "settings");
        let aether = connect(settings).await;
        round_trip(&aether).await;
        aether.close();
    })
    .await;
    let text = logs.text();
    assert!(
        text.contains("[redacted]"),
        "the settings were logged: {text}"
    );
    assert_no_secret("the logs", &text, &[PASSWORD]);
}
