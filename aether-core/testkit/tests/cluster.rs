//! Cluster tests: route formation, node failure, restart.

use std::time::Duration;

use aether_testkit::{NatsCluster, RawNats};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(25);
const WAIT: Duration = Duration::from_secs(2);

/// Publishes `payload` from `publisher` until `subscriber` receives it (bounded).
async fn deliver(publisher: &mut RawNats, subscriber: &mut RawNats, subject: &str, payload: &[u8]) {
    for _ in 0..50 {
        publisher.publish(subject, None, payload).await.unwrap();
        if let Some(m) = subscriber
            .next_message(Duration::from_millis(100))
            .await
            .unwrap()
        {
            assert_eq!(m.subject, subject);
            assert_eq!(m.payload, payload);
            return;
        }
    }
    panic!("message on {subject} never arrived");
}

#[tokio::test]
async fn three_node_cluster_routes_and_survives_node_loss() {
    timeout(LIMIT, async {
        let mut cluster = NatsCluster::start(3).await.expect("cluster starts");
        assert_eq!(cluster.len(), 3);
        let urls = cluster.urls();
        assert_eq!(urls.len(), 3);
        assert!(urls.iter().all(|u| u.starts_with("nats://127.0.0.1:")));

        // Published on node 2, received on node 0 (routes already proven by start()).
        let mut sub0 = RawNats::connect(cluster.node(0).addr()).await.unwrap();
        sub0.subscribe("tk.cluster", 1, None).await.unwrap();
        sub0.ping().await.unwrap();
        let mut pub2 = RawNats::connect(cluster.node(2).addr()).await.unwrap();
        deliver(&mut pub2, &mut sub0, "tk.cluster", b"from-2").await;

        // Kill node 0: node 1 still receives from node 2.
        cluster.kill(0).await.unwrap();
        assert!(!cluster.node(0).is_running());
        assert!(sub0.next_message(WAIT).await.is_err());
        let mut sub1 = RawNats::connect(cluster.node(1).addr()).await.unwrap();
        sub1.subscribe("tk.cluster", 1, None).await.unwrap();
        sub1.ping().await.unwrap();
        deliver(&mut pub2, &mut sub1, "tk.cluster", b"after-kill").await;

        // Restart node 0 on the same ports: it rejoins.
        let port0 = cluster.node(0).port();
        cluster.restart(0).await.unwrap();
        assert_eq!(cluster.node(0).port(), port0);
        let mut sub0 = RawNats::connect(cluster.node(0).addr()).await.unwrap();
        sub0.subscribe("tk.cluster", 1, None).await.unwrap();
        sub0.ping().await.unwrap();
        deliver(&mut pub2, &mut sub0, "tk.cluster", b"rejoined").await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn jetstream_cluster_becomes_ready() {
    timeout(LIMIT, async {
        let mut cluster = NatsCluster::builder(3)
            .jetstream(true)
            .start()
            .await
            .expect("JetStream cluster starts");
        let mut raw = RawNats::connect(cluster.node(1).addr()).await.unwrap();
        raw.subscribe("tk.inbox", 1, None).await.unwrap();
        let cfg = br#"{"name":"TKC","subjects":["tkc.>"],"num_replicas":3,"storage":"memory"}"#;
        raw.publish("$JS.API.STREAM.CREATE.TKC", Some("tk.inbox"), cfg)
            .await
            .unwrap();
        let m = raw
            .next_message(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("create answer");
        let text = String::from_utf8_lossy(&m.payload).to_string();
        assert!(!text.contains("\"error\""), "{text}");

        // A restarted node rejoins; restart() waits until R3 placement works again.
        cluster.kill(2).await.unwrap();
        cluster.restart(2).await.unwrap();
        let cfg = br#"{"name":"TKC2","subjects":["tkc2.>"],"num_replicas":3,"storage":"file"}"#;
        raw.publish("$JS.API.STREAM.CREATE.TKC2", Some("tk.inbox"), cfg)
            .await
            .unwrap();
        let m = raw
            .next_message(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("create answer");
        let text = String::from_utf8_lossy(&m.payload).to_string();
        assert!(!text.contains("\"error\""), "{text}");
    })
    .await
    .expect("test timed out");
}
