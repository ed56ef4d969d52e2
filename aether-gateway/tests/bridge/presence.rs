//! Presence and cursors: between pages, gateways and services, thinned
//! and held to their limits.

use super::*;

/// One page's cursor reaches the others at most 20 times a second, and its
/// latest position always arrives: a page cannot multiply its message rate
/// by the number of pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_are_thinned_to_the_latest_and_the_latest_arrives() {
    let aether = Aether::default();
    let gateway = start(&aether, bridged(BridgeConfig::default())).await;
    let addr = gateway.addr();
    let mut mover = Client::connect(addr, "board", TOKEN).await;
    let mut watcher = Client::connect(addr, "board", TOKEN).await;
    let started = std::time::Instant::now();
    for n in 0..150 {
        mover
            .send(json!({"type": "presence", "x": n, "y": -n}))
            .await;
    }
    let mut seen = Vec::new();
    loop {
        let message = watcher.until("presence", None).await;
        let Some(x) = message["x"].as_i64() else {
            continue; // the mover shown as it came, before it moved
        };
        seen.push(x);
        if message["x"] == 149 {
            assert_eq!(message["y"], -149);
            break;
        }
    }
    // At most one per 50 ms (and the first at once) while it moved.
    let allowed = started.elapsed().as_millis() as usize / 50 + 2;
    assert!(
        seen.len() <= allowed,
        "{} cursor messages in {:?}: {seen:?}",
        seen.len(),
        started.elapsed()
    );
    assert!(seen.len() < 150, "not thinned: {seen:?}");
    gateway.stop().await.unwrap();
}

/// A page's presence reaches pages of another gateway and services (as
/// `<node>/<slot>`), a service's reaches pages, and each goes when its
/// page closes or its slot is cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reaches_pages_of_other_gateways_and_services() {
    let aether = Aether::default();
    let one = start(&aether, bridged(BridgeConfig::default())).await;
    let two = start(&aether, bridged(BridgeConfig::default())).await;
    let service = service_board(&aether).await;
    let mut ada = Client::connect(one.addr(), "board", TOKEN).await;
    let mut far = Client::connect(two.addr(), "board", TOKEN).await;
    let ada_id = ada.received[0]["id"].as_str().unwrap().to_string();
    ada.send(json!({"type": "presence", "x": 5, "y": 6, "value": {"name": "Ada"}}))
        .await;
    // Until far sees Ada's page through the replicas (a page of its own
    // gateway never shows a slash).
    let remote = loop {
        let seen = far.until("presence", None).await;
        if seen["id"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{ada_id}"))
            && seen.get("value").is_some()
        {
            break seen;
        }
    };
    assert_eq!(
        (&remote["x"], &remote["y"], &remote["value"]),
        (&json!(5), &json!(6), &json!({"name": "Ada"})),
        "{remote}"
    );
    assert!(
        remote["color"]
            .as_str()
            .is_some_and(|c| c.starts_with("hsl("))
    );
    let remote_id = remote["id"].as_str().unwrap().to_string();
    // The service sees it as the gateway's presence value in the page's slot.
    eventually("the service sees Ada's page", || {
        service.presences().iter().any(|p| {
            format!("{}/{}", p.node, p.slot) == remote_id
                && serde_json::from_slice::<Value>(&p.value).unwrap()["value"]
                    == json!({"name": "Ada"})
        })
    })
    .await;
    // A service's value reaches every page, with a color of its own.
    service
        .set_presence_json("status", &json!({"busy": true}))
        .unwrap();
    for page in [&mut ada, &mut far] {
        let seen = loop {
            let seen = page.until("presence", None).await;
            if seen["id"] == "service/status" {
                break seen;
            }
        };
        assert_eq!(seen["value"], json!({"busy": true}), "{seen}");
        assert!(seen.get("x").is_none(), "a service has no cursor: {seen}");
        assert!(seen["color"].is_string());
    }
    // A page that comes later is told of both at once.
    let mut late = Client::connect(two.addr(), "board", TOKEN).await;
    let mut told = BTreeSet::new();
    let want = [remote_id.clone(), "service/status".to_string()];
    while !want.iter().all(|id| told.contains(id)) {
        let seen = late.until("presence", None).await;
        told.insert(seen["id"].as_str().unwrap().to_string());
    }
    // And of far, its neighbour on this gateway (an id without a slash).
    let far_id = far.received[0]["id"].as_str().unwrap().to_string();
    while !told.contains(&far_id) {
        let seen = late.until("presence", None).await;
        told.insert(seen["id"].as_str().unwrap().to_string());
    }
    // Each goes: a page closed, a slot cleared.
    ada.socket.close(None).await.unwrap();
    loop {
        let gone = far.until("presence-leave", None).await;
        if gone["id"] == remote_id.as_str() {
            break;
        }
    }
    eventually("the service lost Ada's page", || {
        service
            .presences()
            .iter()
            .all(|p| format!("{}/{}", p.node, p.slot) != remote_id)
    })
    .await;
    service.clear_presence("status").unwrap();
    assert_eq!(
        far.until("presence-leave", None).await["id"],
        "service/status"
    );
    service.close().await;
    one.stop().await.unwrap();
    two.stop().await.unwrap();
}

/// Pages flooding presence within every limit (large values, often) do not
/// flood the others: a page is sent the others' presence within its
/// allowance of bytes, each other's latest in turn, so an honest page's
/// name still arrives, seconds late at worst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_flood_delays_honest_pages_without_burying_them() {
    let (_aether, gateway, service) = board().await;
    let addr = gateway.addr();
    let mut watcher = Client::connect(addr, "board", TOKEN).await;
    let mut honest = Client::connect(addr, "board", TOKEN).await;
    let honest_id = honest.received[0]["id"].as_str().unwrap().to_string();
    let mut flood = Vec::new();
    for _ in 0..30 {
        flood.push(Client::connect(addr, "board", TOKEN).await);
    }
    let pad = "p".repeat(3_800);
    let flooding = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_secs(4) {
            for page in &mut flood {
                page.send(json!({"type": "presence", "x": n, "value": {"pad": pad}}))
                    .await;
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        flood
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    honest
        .send(json!({"type": "presence", "value": {"name": "Ada"}}))
        .await;
    let sent = std::time::Instant::now();
    // Read what the watcher is sent for 4 s: the bytes, and when Ada's
    // name came.
    let (mut bytes, mut ada) = (0, None);
    while sent.elapsed() < Duration::from_secs(4) {
        let Some(message) = watcher.try_next(Duration::from_millis(200)).await else {
            continue;
        };
        if message["type"] == "presence" {
            bytes += message.to_string().len();
            if message["id"] == honest_id.as_str() && message["value"]["name"] == "Ada" {
                ada.get_or_insert(sent.elapsed());
            }
        }
    }
    let flood = flooding.await.unwrap();
    let ada = ada.expect("the honest page's name arrived within 4 s of the flood");
    // 30 pages of 4 KB, 16 a second: about 2 MB/s offered; the watcher is
    // sent at most its allowance (256 KiB a second, 256 KiB at once) over
    // the 4.5 s since the flood began (read in 4 s, with what waited).
    let most = 256 * 1024 * 6;
    assert!(
        bytes <= most,
        "{bytes} bytes of presence in 4 s (at most {most})"
    );
    assert!(
        bytes >= 256 * 1024,
        "{bytes} bytes: the flood was not sent at all?"
    );
    eprintln!("presence flood: {bytes} bytes in 4 s to a page, Ada's name after {ada:?}");
    drop(flood);
    close_board(service, gateway).await;
}

/// A presence value past the limit closes the page with 1009; one nested
/// too deep with 1008; both counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_values_are_held_to_their_limits() {
    let (_aether, gateway, service) = board().await;
    let addr = gateway.addr();
    let limit = {
        let c = Client::connect(addr, "board", TOKEN).await;
        c.received[0]["limits"]["max_presence_bytes"]
            .as_u64()
            .unwrap() as usize
    };
    let fits = "x".repeat(limit - 2);
    let mut ok = Client::connect(addr, "board", TOKEN).await;
    ok.send(json!({"type": "presence", "value": fits})).await;
    ok.send(json!({"type": "sync", "id": 1})).await;
    ok.until("synced", None).await;
    let mut big = Client::connect(addr, "board", TOKEN).await;
    big.send(json!({"type": "presence", "value": "x".repeat(limit - 1)}))
        .await;
    assert_eq!(close_of(&mut big.socket).await.map(|c| c.0), Some(1009));
    let mut deep = Client::connect(addr, "board", TOKEN).await;
    let nested = format!("{}{}", "[".repeat(200), "]".repeat(200));
    deep.send_text(format!(r#"{{"type":"presence","value":{nested}}}"#))
        .await;
    assert_eq!(close_of(&mut deep.socket).await.map(|c| c.0), Some(1008));
    assert_eq!(refused(&gateway, "too_large"), 1);
    eventually("the page that fits is shown to the service", || {
        service
            .presences()
            .iter()
            .any(|p| serde_json::from_slice::<Value>(&p.value).unwrap()["value"] == json!(fits))
    })
    .await;
    close_board(service, gateway).await;
}
