//! Who a page may speak for: its own writes and replica id only.

use super::*;

/// A page writes shared keys only: a node-owned key is refused
/// (`not_owner`), the gateway's own node's too, and never reaches the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_may_not_write_the_gateways_node_keys() {
    let (_aether, gateway, service) = board().await;
    let mut page = Client::connect(gateway.addr(), "board", TOKEN).await;
    eventually("the service sees the gateway's replica", || {
        !service.peers().is_empty()
    })
    .await;
    let node = service.peers()[0].clone();
    let key = format!("node/{node}/status");
    let stamp = page.stamp();
    page.send(json!({"type": "set", "key": key, "value": "forged", "stamp": stamp}))
        .await;
    assert_eq!(
        page.until("refused", Some(&key)).await["reason"],
        "not_owner"
    );
    page.set("after", json!(1)).await;
    eventually("the service has after", || service.get("after").is_some()).await;
    assert!(service.get(&key).is_none(), "the forged node key spread");
    close_board(service, gateway).await;
}

/// A change stamped with a page's replica id that the page did not send
/// itself (here a service's merge) reaches that page: the bridge leaves
/// out only what the connection itself merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_gets_every_change_it_did_not_send_whatever_its_stamp() {
    let (_aether, gateway, service) = board().await;
    let mut victim = Client::connect(gateway.addr(), "board", TOKEN).await;
    let node = u64::from_str_radix(&victim.replica, 16).unwrap();
    let forged = aether_core::state::Stamp {
        physical_ns: now_ns(),
        logical: 7,
        node,
    };
    service
        .merge("title", Some("\"forged\"".into()), forged)
        .await
        .unwrap();
    let seen = victim.until("set", Some("title")).await;
    assert_eq!(seen["value"], "forged");
    // Its own writes still do not come back.
    victim.set("own", json!(1)).await;
    eventually("the service has own", || service.get("own").is_some()).await;
    assert!(
        victim.try_next(Duration::from_millis(300)).await.is_none(),
        "a page does not get its own write back"
    );
    close_board(service, gateway).await;
}

/// A replica id another open page holds is refused at `auth` (1008,
/// `replica_in_use`, counted), and a write stamped in another open page's
/// name is refused (`stamp`); a stamp of a page that is not connected (an
/// offline write relayed from the cache) is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_may_not_speak_for_another_open_page() {
    let (_aether, gateway, service) = board().await;
    let addr = gateway.addr();
    let mut victim = Client::connect(addr, "board", TOKEN).await;
    let mut twin = Client::connect_as(addr, "board", TOKEN, &victim.replica.clone()).await;
    assert_eq!(
        close_of(&mut twin.socket).await,
        Some((1008, "replica_in_use".to_string()))
    );
    assert_eq!(refused(&gateway, "replica_in_use"), 1);

    let mut forger = Client::connect(addr, "board", TOKEN).await;
    let theirs = stamp(now_ns(), 3, &victim.replica);
    forger
        .send(json!({"type": "set", "key": "k", "value": "forged", "stamp": theirs}))
        .await;
    assert_eq!(forger.until("refused", Some("k")).await["reason"], "stamp");
    assert_eq!(
        metric(&gateway, "aether_bridge_writes_total{outcome=\"stamp\"}"),
        1
    );
    // An earlier page load of this browser, not connected now: taken.
    let offline = stamp(now_ns(), 0, "00000000000000f1");
    forger
        .send(json!({"type": "set", "key": "k", "value": "offline", "stamp": offline}))
        .await;
    eventually("the service has the offline write", || {
        service.get_json::<String>("k").unwrap().as_deref() == Some("offline")
    })
    .await;
    assert_eq!(victim.until("set", Some("k")).await["value"], "offline");
    // Once the victim is gone, its id is free again.
    let id = victim.replica.clone();
    victim.socket.close(None).await.unwrap();
    drop(victim);
    let mut back = None;
    for _ in 0..100 {
        let mut again = Client::connect_as(addr, "board", TOKEN, &id).await;
        if again
            .try_next(Duration::from_secs(5))
            .await
            .is_some_and(|m| m["type"] == "hello")
        {
            back = Some(again);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back.is_some(), "the id was given back");
    close_board(service, gateway).await;
}

/// Two writes of one key with equal stamps and different values (possible
/// only with a forged id): every replica keeps the same one, and the page
/// whose write lost is answered with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_stamps_settle_on_one_value_everywhere() {
    let (_aether, gateway, service) = board().await;
    let mut page = Client::connect(gateway.addr(), "board", TOKEN).await;
    let same = stamp(now_ns(), 0, "00000000000000f2");
    page.send(json!({"type": "set", "key": "tie", "value": "b", "stamp": same}))
        .await;
    eventually("the service has b", || service.get("tie").is_some()).await;
    page.send(json!({"type": "set", "key": "tie", "value": "a", "stamp": same}))
        .await;
    let answer = page.until("set", Some("tie")).await;
    assert_eq!(
        (answer["value"].clone(), answer["stamp"].clone()),
        (json!("b"), json!(same))
    );
    assert_eq!(
        service.get_json::<String>("tie").unwrap().as_deref(),
        Some("b")
    );
    close_board(service, gateway).await;
}
