//! TcpProxy fault-injection tests.

use std::time::Duration;

use aether_testkit::{Error, NatsServer, RawNats, TcpProxy};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn proxy_forwards_cuts_stalls_and_refuses() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let proxy = TcpProxy::start(server.addr()).await.unwrap();
        assert_eq!(proxy.url(), format!("nats://{}", proxy.addr()));
        assert_eq!(proxy.upstream(), server.addr());

        // Forwarding.
        let mut raw = RawNats::connect(proxy.addr()).await.unwrap();
        assert_eq!(proxy.connections(), 1);
        raw.subscribe("tk.proxy", 1, None).await.unwrap();
        raw.publish("tk.proxy", None, b"through").await.unwrap();
        let m = raw.next_message(WAIT).await.unwrap().expect("forwarded");
        assert_eq!(m.payload, b"through");

        // Stall: a ping times out; resume: it goes through (late PONG matched correctly).
        proxy.stall();
        let err = raw
            .ping_timeout(Duration::from_millis(300))
            .await
            .expect_err("stalled");
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        raw.publish("tk.proxy", None, b"held").await.unwrap();
        assert!(
            raw.next_message(Duration::from_millis(200))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(proxy.connections(), 1, "stall keeps the socket open");
        proxy.resume();
        raw.ping_timeout(WAIT).await.unwrap();
        let m = raw.next_message(WAIT).await.unwrap().expect("held message");
        assert_eq!(m.payload, b"held");

        // Cut: the next read sees EOF or an error; new connections still work.
        proxy.cut();
        let err = raw.next_message(WAIT).await.expect_err("cut");
        assert!(
            matches!(err, Error::ConnectionClosed | Error::Io { .. }),
            "{err:?}"
        );
        let mut raw = RawNats::connect(proxy.addr()).await.unwrap();
        raw.ping().await.unwrap();
        assert_eq!(proxy.connections(), 1);
        assert_eq!(proxy.total_connections(), 2);

        // Refuse: new connections are closed at once; existing ones keep working.
        proxy.refuse(true);
        let err = RawNats::connect(proxy.addr()).await.expect_err("refused");
        assert!(
            matches!(err, Error::ConnectionClosed | Error::Io { .. }),
            "{err:?}"
        );
        raw.ping().await.unwrap();
        proxy.refuse(false);
        RawNats::connect(proxy.addr())
            .await
            .unwrap()
            .ping()
            .await
            .unwrap();

        // Dropping the proxy closes its connections.
        drop(proxy);
        assert!(raw.next_message(WAIT).await.is_err());
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn proxy_sees_upstream_restart() {
    timeout(LIMIT, async {
        let mut server = NatsServer::start().await.unwrap();
        let proxy = TcpProxy::start(server.addr()).await.unwrap();
        let mut raw = RawNats::connect(proxy.addr()).await.unwrap();
        raw.ping().await.unwrap();

        server.kill().await.unwrap();
        assert!(raw.next_message(WAIT).await.is_err());
        // Upstream down: the proxy closes the client connection.
        assert!(RawNats::connect(proxy.addr()).await.is_err());

        server.restart().await.unwrap();
        let mut raw = RawNats::connect(proxy.addr()).await.unwrap();
        raw.ping().await.unwrap();
    })
    .await
    .expect("test timed out");
}
