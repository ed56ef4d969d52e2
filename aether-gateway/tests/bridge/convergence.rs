//! Pages and a Rust replica converge by stamps.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_a_rust_replica_converge_by_stamps() {
    let (_aether, gateway, service) = board().await;
    let addr = gateway.addr();
    let mut a = Client::connect(addr, "board", TOKEN).await;
    let mut b = Client::connect(addr, "board", TOKEN).await;

    // A page writes; the other page and the service see it.
    let mut watch = service.watch("title");
    let stamp_a = a.set("title", json!("from a")).await;
    let seen = b.until("set", Some("title")).await;
    assert_eq!(
        (seen["value"].clone(), seen["stamp"].clone()),
        (json!("from a"), json!(stamp_a))
    );
    let change = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.new.as_deref(), Some(&b"\"from a\""[..]));
    // (Presence may come: the other page shown as it came.)
    let own = async {
        while let Some(message) = a.try_next(Duration::from_millis(200)).await {
            if message["type"] != "presence" {
                return Some(message);
            }
        }
        None
    };
    assert_eq!(own.await, None, "a page does not get its own write back");

    // Concurrent writes of one key: every replica settles on the higher
    // stamp, whichever came last.
    let now = now_ns();
    let low = stamp(now, 0, &a.replica);
    let high = stamp(now, 1, &b.replica);
    b.send(json!({"type": "set", "key": "race", "value": "b wins", "stamp": high}))
        .await;
    eventually("the service has b's write", || {
        service.get_json::<String>("race").unwrap().as_deref() == Some("b wins")
    })
    .await;
    assert_eq!(a.until("set", Some("race")).await["value"], "b wins");
    // A's write, made at the same moment but lower: it lost at the
    // gateway, and its page is answered with the winner.
    a.send(json!({"type": "set", "key": "race", "value": "lower", "stamp": low}))
        .await;
    let answer = a.until("set", Some("race")).await;
    assert_eq!(
        (answer["value"].clone(), answer["stamp"].clone()),
        (json!("b wins"), json!(high))
    );
    assert_eq!(
        service.get_json::<String>("race").unwrap().as_deref(),
        Some("b wins")
    );
    assert_eq!(
        metric(&gateway, "aether_bridge_writes_total{outcome=\"stale\"}"),
        1
    );

    // A write made offline, older than the map's: it loses on return.
    let old = stamp(now_ns() - 60_000_000_000, 0, &a.replica);
    a.send(json!({"type": "set", "key": "title", "value": "stale", "stamp": old}))
        .await;
    let answer = a.until("set", Some("title")).await;
    assert_eq!(answer["value"], "from a");
    // A delete from a page is a tombstone for the service too.
    let stamp_b = b.stamp();
    b.send(json!({"type": "delete", "key": "title", "stamp": stamp_b}))
        .await;
    eventually("the service deleted title", || {
        service.get("title").is_none()
    })
    .await;
    a.until("delete", Some("title")).await;

    // A stamp too far ahead (a page with a wrong clock) is refused.
    let ahead = stamp(now_ns() + 3_600_000_000_000, 0, &a.replica);
    a.send(json!({"type": "set", "key": "clock", "value": 1, "stamp": ahead}))
        .await;
    let refusal = a.until("refused", Some("clock")).await;
    assert_eq!(refusal["reason"], "stamp");
    assert!(service.get("clock").is_none());
    assert_eq!(
        metric(&gateway, "aether_bridge_writes_total{outcome=\"stamp\"}"),
        1
    );
    // Another node's keys are not a page's to write.
    let stamp_owned = a.stamp();
    a.send(json!({"type": "set", "key": "node/service/x", "value": 1, "stamp": stamp_owned}))
        .await;
    assert_eq!(
        a.until("refused", Some("node/service/x")).await["reason"],
        "not_owner"
    );

    // A service writing raw bytes (not JSON): counted, not sent.
    service.set("raw", &b"\xff\x00"[..]).await.unwrap();
    service.set_json("after-raw", &1).await.unwrap();
    a.until("set", Some("after-raw")).await;
    assert!(!a.received.iter().any(|m| {
        m["key"] == "raw"
            || m["changes"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["key"] == "raw"))
    }));
    // Counted once per page it was not sent to (a and b).
    eventually("counted for both pages", || {
        metric(&gateway, "aether_bridge_values_not_json_total") == 2
    })
    .await;
    close_board(service, gateway).await;
}
