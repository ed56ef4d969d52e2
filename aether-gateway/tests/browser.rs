//! The collaborative board in headless Chromium: pages are replicas of the
//! map `board` through the gateway's bridge, beside a Rust replica.
//!
//! The page and aether.js are served by a host of their own (as an
//! application serves its pages), so that a reload works while the gateway
//! is down. Needs Debian's `chromium`; without it the tests say so and pass.

mod support;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use aether_core::{Aether, state::StateMap};
use axum::{
    Router,
    extract::Path,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde_json::{Value, json};
use support::{cdp::Browser, config};

const TOKEN: &str = "a-token-of-the-browser-tests-42";

/// Serves the board's files from `aether-gateway/web` on a loopback port.
async fn app_host() -> SocketAddr {
    fn file(name: &str) -> String {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/web"));
        std::fs::read_to_string(dir.join(name)).unwrap()
    }
    let (html, board, client) = (file("board.html"), file("board.js"), file("aether.js"));
    let page = file("page.js");
    // The client's modules: the files of web/aether/, as the gateway
    // serves them.
    let modules: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/web/aether"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
    let js = || [(header::CONTENT_TYPE, "text/javascript")];
    let app = Router::new()
        .route(
            "/board.html",
            get(move || async move { axum::response::Html(html) }),
        )
        .route("/board.js", get(move || async move { (js(), board) }))
        .route("/aether.js", get(move || async move { (js(), client) }))
        .route(
            "/aether/{file}",
            get(move |Path(name): Path<String>| async move {
                match modules.contains(&name) {
                    true => (js(), file(&format!("aether/{name}"))).into_response(),
                    false => StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        .route("/page.js", get(move || async move { (js(), page) }))
        .route(
            "/blank.html",
            get(|| async { axum::response::Html("<!doctype html><title>blank</title>") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn board_url(app: SocketAddr, gateway: SocketAddr) -> String {
    format!("http://{app}/board.html#token={TOKEN}&gateway=ws://{gateway}")
}

/// Waits (up to 15 s) until `check` holds.
async fn settle(what: &str, mut check: impl FnMut() -> bool) {
    support::eventually(what, Duration::from_secs(15), || {
        let ok = check();
        async move { ok.then_some(()) }
    })
    .await
}

/// An aether, a gateway on it bridging the map `board`, and a service's
/// replica of that map.
async fn board() -> (Aether, aether_gateway::Gateway, StateMap) {
    support::board(TOKEN, config()).await
}

/// A blank page of the app's host, to run a client of its own in.
async fn blank_page(browser: &Browser, app: SocketAddr) -> support::cdp::Page<'_> {
    let page = browser.open(&format!("http://{app}/blank.html")).await;
    page.wait_for("the blank page", "document.title === 'blank'", 10)
        .await;
    page
}

/// The page's items as `{key: value}`, read through its client.
const ITEMS: &str = "Object.fromEntries(board.client.items())";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_and_a_rust_replica_converge() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let (_aether, gateway, service) = board().await;
    let app = app_host().await;
    let url = board_url(app, gateway.addr());
    let a = browser.open(&url).await;
    let b = browser.open(&url).await;
    a.wait_for("page a is live", "board.client.status === 'live'", 20)
        .await;
    b.wait_for("page b is live", "board.client.status === 'live'", 20)
        .await;

    // An edit in one page shows in the other within 200 ms (the clocks of
    // two tabs of one browser are one clock).
    b.eval(
        "window.arrived = new Promise((resolve) => board.client.on('item/first', \
         () => resolve(performance.timeOrigin + performance.now()))); true",
    )
    .await;
    let sent = a
        .eval(
            "(() => { const t = performance.timeOrigin + performance.now(); \
             board.client.set('item/first', {text: 'milk', done: false, at: 1}); return t; })()",
        )
        .await
        .as_f64()
        .unwrap();
    let arrived = b.eval("window.arrived").await.as_f64().unwrap();
    let took_ms = arrived - sent;
    eprintln!("page to page through the gateway: {took_ms:.2} ms");
    assert!(took_ms < 200.0, "took {took_ms} ms");
    b.wait_for(
        "page b draws the item",
        "document.querySelector('[data-key=\"item/first\"] .text')?.value === 'milk'",
        5,
    )
    .await;
    // Page b, with the focus in that item's text, still draws what others
    // add, and keeps the focus and what is typed.
    b.eval(
        "(() => { const f = document.querySelector('[data-key=\"item/first\"] .text'); \
         f.focus(); f.value = 'mil'; return true; })()",
    )
    .await;
    a.eval("board.client.set('item/second', {text: 'eggs', done: false, at: 5})")
        .await;
    b.wait_for(
        "page b draws a's item under a focused field",
        "!!document.querySelector('[data-key=\"item/second\"]') \
         && document.activeElement?.dataset.focus === 'text/item/first' \
         && document.activeElement.value === 'mil'",
        5,
    )
    .await;
    b.eval("document.activeElement.value = 'milk'; document.activeElement.blur(); true")
        .await;
    // The Rust replica has it too.
    settle("the service has item/first", || {
        service.get("item/first").is_some()
    })
    .await;

    // Concurrent edits of one key, from both pages at once: both pages and
    // the service settle on one value, the higher stamp's.
    let edit = |who: &str| {
        format!("board.client.set('item/race', {{text: 'from {who}', done: false, at: 2}})")
    };
    let (edit_a, edit_b) = (edit("a"), edit("b"));
    let (stamp_a, stamp_b) = tokio::join!(a.eval(&edit_a), b.eval(&edit_b));
    let (stamp_a, stamp_b) = (
        stamp_a.as_str().unwrap().to_string(),
        stamp_b.as_str().unwrap().to_string(),
    );
    let winner = if stamp_a > stamp_b {
        "from a"
    } else {
        "from b"
    };
    for (name, page) in [("a", &a), ("b", &b)] {
        page.wait_for(
            &format!("page {name} settles on {winner}"),
            &format!("board.client.get('item/race')?.text === '{winner}'"),
            5,
        )
        .await;
    }
    settle("the service settles", || {
        service
            .get_json::<Value>("item/race")
            .unwrap()
            .map(|v| v["text"].clone())
            == Some(json!(winner))
    })
    .await;
    assert_eq!(a.eval(ITEMS).await, b.eval(ITEMS).await);

    // A Rust service writes; the page shows it. The page writes; the
    // service's watch sees it.
    service
        .set_json(
            "item/rust",
            &json!({"text": "from rust", "done": true, "at": 3}),
        )
        .await
        .unwrap();
    a.wait_for(
        "page a draws the service's item",
        "document.querySelector('[data-key=\"item/rust\"]')?.dataset.done === 'true'",
        5,
    )
    .await;
    let mut watch = service.watch("item/from-page");
    a.eval("board.client.set('item/from-page', {text: 'typed', done: false, at: 4})")
        .await;
    let change = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut watch),
    )
    .await
    .expect("the service's watch sees the page's write")
    .unwrap();
    let value: Value = serde_json::from_slice(change.new.as_deref().unwrap()).unwrap();
    assert_eq!(value["text"], "typed");
    // A delete in a page deletes everywhere.
    b.eval("board.remove('first')").await;
    a.wait_for(
        "page a drops the item",
        "!board.client.has('item/first')",
        5,
    )
    .await;
    settle("the service drops it", || {
        service.get("item/first").is_none()
    })
    .await;

    // Presence: a page's cursor shows in the other.
    a.eval("board.client.setPresence(40, 50)").await;
    b.wait_for(
        "page b sees a's cursor",
        "[...board.client.presence().values()].some((c) => c.x === 40 && c.y === 50)",
        5,
    )
    .await;
    a.close().await;
    b.wait_for("a's cursor leaves", "board.client.presence().size === 0", 5)
        .await;
    service.close().await;
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_renders_from_the_cache_while_the_gateway_is_down_and_offline_edits_merge() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let bus = support::programs::BridgeBus::start("board").await;
    let (service, port) = (&bus.service, bus.port);
    let mut gateway = bus.gateway(&["board"], TOKEN).await;
    let gateway_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let app = app_host().await;
    let page = browser.open(&board_url(app, gateway_addr)).await;
    page.wait_for("the page is live", "board.client.status === 'live'", 20)
        .await;
    page.eval("board.client.set('item/milk', {text: 'milk', done: false, at: 1})")
        .await;
    settle("the service has milk", || {
        service.get("item/milk").is_some()
    })
    .await;

    // kill -9 of the gateway; the page reloads and renders from its cache.
    gateway.start_kill().unwrap();
    gateway.wait().await.unwrap();
    page.wait_for(
        "the page sees the gateway gone",
        "board.client.status !== 'live'",
        10,
    )
    .await;
    page.reload().await;
    page.wait_for(
        "the reloaded page draws milk from its cache",
        "document.querySelector('[data-key=\"item/milk\"] .text')?.value === 'milk' \
         && board.client.status !== 'live'",
        10,
    )
    .await;

    // Edits made offline: a new item, a rename, a delete; meanwhile a
    // service writes another.
    page.eval(
        "board.client.set('item/eggs', {text: 'eggs', done: false, at: 2}); \
         board.client.set('item/milk', {text: 'oat milk', done: false, at: 1}); true",
    )
    .await;
    service
        .set_json(
            "item/bread",
            &json!({"text": "bread", "done": false, "at": 3}),
        )
        .await
        .unwrap();
    page.wait_for(
        "the offline edits are drawn",
        "document.querySelectorAll('#items li').length === 2",
        5,
    )
    .await;
    // They are in the cache: a second reload while still offline keeps them.
    page.reload().await;
    page.wait_for(
        "the cache kept the offline edits",
        "board.client.get('item/eggs')?.text === 'eggs' \
         && board.client.get('item/milk')?.text === 'oat milk'",
        10,
    )
    .await;

    // The gateway comes back: the page reconnects by itself, its offline
    // edits merge, and it gets what it missed.
    let mut gateway = bus.gateway(&["board"], TOKEN).await;
    page.wait_for(
        "the page is live again",
        "board.client.status === 'live'",
        30,
    )
    .await;
    settle("the service has the offline edits", || {
        service.get_json::<Value>("item/eggs").unwrap().is_some()
            && service
                .get_json::<Value>("item/milk")
                .unwrap()
                .map(|v| v["text"].clone())
                == Some(json!("oat milk"))
    })
    .await;
    page.wait_for(
        "the page has the service's item",
        "document.querySelector('[data-key=\"item/bread\"] .text')?.value === 'bread'",
        10,
    )
    .await;
    let on_page = page.eval(ITEMS).await;
    let in_service: serde_json::Map<String, Value> = service
        .entries()
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_slice(&v).unwrap()))
        .collect();
    assert_eq!(on_page, Value::Object(in_service));
    gateway.start_kill().unwrap();
    let _ = gateway.wait().await;
    service.close().await;
}

/// A small deterministic generator (xorshift), for the cases below.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The client's merge is the Rust replica's: random writes and deletes of
/// a few keys (each with its own stamp), taken by pages in three orders
/// (as sent, reversed, shuffled with duplicates), end the same in every
/// page and the same as in a Rust replica that merged them
/// (`StateMap::merge`), 40 cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_merges_as_a_rust_replica_does() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = app_host().await;
    let page = blank_page(&browser, app).await;
    page.eval(
        "import('/aether.js').then((m) => { window.Aether = m.Aether; \
         window.Quiet = class { constructor() {} send() {} close() {} }; return true; })",
    )
    .await;
    let aether = Aether::default();
    let now = support::bridge::now_ns();
    for case in 0..40u64 {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (case + 1));
        let map = StateMap::builder(format!("case{case}"))
            .open(&aether)
            .await
            .unwrap();
        let mut ops = Vec::new();
        for n in 0..(5 + rng.below(40)) {
            let key = format!("k{}", rng.below(4));
            let physical = now - rng.below(5_000) * 1_000_000;
            let stamp =
                support::bridge::stamp(physical, n as u32, &format!("{:016x}", 1 + rng.below(3)));
            let value = (rng.below(5) != 0).then(|| json!({"n": rng.below(100)}));
            ops.push((key, value, stamp));
        }
        for (key, value, stamp) in &ops {
            let parts: Vec<&str> = stamp.split('-').collect();
            let stamp = aether_core::state::Stamp {
                physical_ns: u64::from_str_radix(parts[0], 16).unwrap(),
                logical: u32::from_str_radix(parts[1], 16).unwrap(),
                node: u64::from_str_radix(parts[2], 16).unwrap(),
            };
            let bytes = value.as_ref().map(|v| bytes::Bytes::from(v.to_string()));
            map.merge(key, bytes, stamp).await.unwrap();
        }
        let rust: serde_json::Map<String, Value> = map
            .stamped_entries()
            .into_iter()
            .map(|e| {
                let value: Value = e
                    .value
                    .map_or(Value::Null, |v| serde_json::from_slice(&v).unwrap());
                let stamp = format!(
                    "{:016x}-{:08x}-{:016x}",
                    e.stamp.physical_ns, e.stamp.logical, e.stamp.node
                );
                (e.key, json!([value, stamp]))
            })
            .collect();
        map.close().await;
        let messages: Vec<Value> = ops
            .iter()
            .map(|(key, value, stamp)| match value {
                Some(value) => json!({"type": "set", "key": key, "value": value, "stamp": stamp}),
                None => json!({"type": "delete", "key": key, "stamp": stamp}),
            })
            .collect();
        let shuffled_seed = rng.next() % 1_000_000;
        let script = format!(
            "(() => {{ const ops = {ops}; let seed = {seed};
               const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
               const shuffled = ops.concat(ops.slice(0, 5)).sort(() => random() - 0.5);
               return [ops, ops.slice().reverse(), shuffled].map((order) => {{
                 const page = new Aether('ws://127.0.0.1:9/bridge/x', {{ token: 't', cache: false, WebSocket: Quiet }});
                 order.forEach((m) => page.receive(m));
                 page.close();
                 return Object.fromEntries([...page.entries].map(([k, e]) => [k, [e.d ? null : e.v, e.s]]));
               }}); }})()",
            ops = Value::Array(messages),
            seed = shuffled_seed + 1,
        );
        let orders = page.eval(&script).await;
        let orders = orders.as_array().expect("three maps");
        for (n, got) in orders.iter().enumerate() {
            assert_eq!(
                got,
                &Value::Object(rust.clone()),
                "case {case}, order {n}: {ops:?}"
            );
        }
    }
}

/// What the client tells a page, against the real gateway: a mistyped map
/// and a wrong token end `whenLive` with their reasons (and the wrong
/// token's write is dropped, never kept for another page to send), pending
/// writes are counted until the gateway confirms them, a value that is not
/// JSON is a TypeError, and a write made after reading another page's is
/// no lost race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_says_what_became_of_the_page_and_its_writes() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let (_aether, gateway, service) = board().await;
    let app = app_host().await;
    let url = board_url(app, gateway.addr());
    let a = browser.open(&url).await;
    let b = browser.open(&url).await;
    for page in [&a, &b] {
        page.wait_for("the page is live", "board.client.status === 'live'", 20)
            .await;
    }
    // Each counts the other before any pointer moved.
    for page in [&a, &b] {
        page.wait_for(
            "one other here",
            "document.getElementById('peers').dataset.peers === '1'",
            5,
        )
        .await;
    }
    let gw = gateway.addr();
    let typo = a
        .eval(&format!(
            "(async () => {{ const {{ Aether }} = await import('/aether.js');
               const typo = new Aether('ws://{gw}/bridge/bord', {{ token: '{TOKEN}' }});
               try {{ await typo.whenLive(); return 'live'; }}
               catch (e) {{ return `${{e.name}} ${{e.reason}} ${{typo.status}}`; }} }})()"
        ))
        .await;
    assert_eq!(typo, "AetherError unknown_map unknown_map");
    let wrong = a
        .eval(&format!(
            "(async () => {{ const {{ Aether }} = await import('/aether.js');
               const wrong = new Aether('ws://{gw}/bridge/board', {{ token: 'not-the-token' }});
               const refused = [];
               wrong.onRefused((r) => refused.push(`${{r.key}} ${{r.reason}}`));
               wrong.set('x/wrongtoken', 1);
               try {{ await wrong.whenLive(); return 'live'; }}
               catch (e) {{ return [e.reason, wrong.has('x/wrongtoken'), refused.join(),
                 Object.values(localStorage).filter((v) => v.includes('wrongtoken')).length].join(' '); }} }})()"
        ))
        .await;
    assert_eq!(wrong, "unauthorized false x/wrongtoken unauthorized 0");

    let pending = a
        .eval(
            "(async () => { const c = board.client; c.set('p/1', 1); c.set('p/2', 2);
               const before = c.pendingWrites; await c.waitForPendingWrites();
               return `${before} ${c.pendingWrites}`; })()",
        )
        .await;
    assert_eq!(pending, "2 0");
    settle("the service has the confirmed writes", || {
        service.get("p/1").is_some() && service.get("p/2").is_some()
    })
    .await;
    // Reloaded, page b sends nothing of the wrong token's.
    b.reload().await;
    b.wait_for("page b is live again", "board.client.status === 'live'", 20)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(service.get("x/wrongtoken").is_none());

    let not_json = a
        .eval(
            "(() => { try { board.client.set('when', { at: new Date(0) }); return 'taken'; }
               catch (e) { return `${e.constructor.name}: ${e.message}`; } })()",
        )
        .await;
    assert_eq!(
        not_json,
        "TypeError: the value of \"when\" at .at is a Date, not JSON (write its toISOString() or getTime())"
    );

    // The client paces itself at half the rates the gateway's hello tells:
    // 400 writes at once leave in one message, never cut off.
    let paced = a
        .eval(&format!(
            "(async () => {{ const {{ Aether }} = await import('/aether.js');
               const fast = new Aether('ws://{gw}/bridge/board', {{ token: '{TOKEN}', sendPerSecond: 2000, sendBurst: 2000, cache: false }});
               const seen = [];
               fast.onStatus((status, reason) => {{ if (status === 'offline') seen.push(reason); }});
               await fast.whenLive();
               for (let i = 0; i < 400; i++) fast.set(`fast/${{i}}`, i);
               await fast.waitForPendingWrites();
               fast.close();
               return seen.join(' '); }})()"
        ))
        .await;
    assert_eq!(paced, "", "never cut off");
    settle("the service has the fast page's writes", || {
        (0..400).all(|i| service.get(&format!("fast/{i}")).is_some())
    })
    .await;
    // A page of another make sending far past the gateway's limit is cut
    // off, and the browser reads the reason in the close frame (not lost
    // to a reset).
    let cut = a
        .eval(&format!(
            "new Promise((resolve) => {{
               const ws = new WebSocket('ws://{gw}/bridge/board');
               ws.onopen = () => ws.send(JSON.stringify({{ type: 'auth', token: '{TOKEN}', replica: '00000000000000fe' }}));
               let flooded = false;
               ws.onmessage = () => {{
                 if (flooded) return;
                 flooded = true;
                 for (let i = 0; i < 2000; i++) ws.send(JSON.stringify({{ type: 'sync', id: i }}));
               }};
               ws.onclose = (e) => resolve(`${{e.code}} ${{e.reason}}`);
             }})"
        ))
        .await;
    let cut = cut.as_str().expect("the close");
    assert!(cut.starts_with("1008 rate_limited"), "{cut}");

    // B changes the title after seeing A's: A is not told of a lost race.
    a.eval(
        "window.lost = []; board.client.onSupersede((s) => window.lost.push(s));
         board.client.set('title', 'from a'); true",
    )
    .await;
    b.wait_for(
        "b sees a's title",
        "board.client.get('title') === 'from a'",
        5,
    )
    .await;
    b.eval("board.client.set('title', 'from b'); true").await;
    a.wait_for(
        "a sees b's title",
        "board.client.get('title') === 'from b'",
        5,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.eval("window.lost.length").await, 0);
    service.close().await;
    gateway.stop().await.unwrap();
}

/// Pages on machines whose clocks are two hours off (one behind, one
/// ahead; their `Date.now` and `performance.timeOrigin` moved): each
/// stamps by the gateway's clock (its `hello` says it), so a write made
/// later wins whoever made it: the page behind overwrites a service's
/// earlier write, and a service's later write overwrites the page ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_whose_clocks_are_hours_off_write_in_the_bus_order() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let (_aether, gateway, service) = board().await;
    let app = app_host().await;
    let gw = gateway.addr();
    let mut pages = Vec::new();
    for skew_ms in [-7_200_000i64, 7_200_000] {
        let page = blank_page(&browser, app).await;
        let ready = page
            .eval(&format!(
                "(async () => {{
                   const skew = {skew_ms};
                   const origin = performance.timeOrigin + skew;
                   Object.defineProperty(performance, 'timeOrigin', {{ get: () => origin }});
                   const now = Date.now; Date.now = () => now() + skew;
                   const {{ Aether }} = await import('/aether.js');
                   window.client = new Aether('ws://{gw}/bridge/board', {{ token: '{TOKEN}', cache: false }});
                   await window.client.whenLive();
                   return Math.round((performance.timeOrigin + performance.now() - now()) / 60000); }})()"
            ))
            .await;
        assert_eq!(ready, json!(skew_ms / 60_000), "the page's clock is off");
        pages.push(page);
    }
    let (behind, ahead) = (&pages[0], &pages[1]);
    // A service writes, then the page two hours behind.
    service.set_json("first", &"service").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    behind
        .eval(
            "(async () => { client.set('first', 'page behind'); \
             await client.waitForPendingWrites(); return true; })()",
        )
        .await;
    settle("the later write, the page's, wins at the service", || {
        service
            .get_json::<String>("first")
            .ok()
            .flatten()
            .as_deref()
            == Some("page behind")
    })
    .await;
    // The page two hours ahead writes, then the service.
    ahead
        .eval(
            "(async () => { client.set('second', 'page ahead'); \
             await client.waitForPendingWrites(); return true; })()",
        )
        .await;
    settle("the service has the page's write", || {
        service
            .get_json::<String>("second")
            .ok()
            .flatten()
            .as_deref()
            == Some("page ahead")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    service.set_json("second", &"service").await.unwrap();
    for page in [behind, ahead] {
        page.wait_for(
            "every page has the later writes",
            "client.get('first') === 'page behind' && client.get('second') === 'service'",
            10,
        )
        .await;
    }
    assert_eq!(
        service.get_json::<String>("second").unwrap().as_deref(),
        Some("service")
    );
}

/// A paste of 10,000 keys in one page (a loop of `set`, as an import makes
/// it) is confirmed, and seen whole by another page and by a service,
/// within seconds: the writes leave many a message, under the gateway's
/// rates, and come to the other page many a message. (About 2 s on a quiet
/// machine, in the test build; bounded at 20 s for a loaded one: one write
/// a message at the default pace took 200 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_writes_of_one_page_reach_another_within_seconds() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let (_aether, gateway, service) = board().await;
    let app = app_host().await;
    let gw = gateway.addr();
    let mut pages = Vec::new();
    for _ in 0..2 {
        let page = blank_page(&browser, app).await;
        page.eval(&format!(
            "(async () => {{
               const {{ Aether }} = await import('/aether.js');
               window.client = new Aether('ws://{gw}/bridge/board', {{ token: '{TOKEN}' }});
               await window.client.whenLive();
               return true; }})()"
        ))
        .await;
        pages.push(page);
    }
    let (writer, reader) = (&pages[0], &pages[1]);
    reader
        .eval(
            "window.seen = new Promise((resolve) => { let n = 0; \
             client.on('paste/*', (value, old) => { if (old === undefined && ++n === 10000) \
             resolve(performance.timeOrigin + performance.now()); }); }); true",
        )
        .await;
    let written = writer
        .eval(
            "(async () => { const start = performance.timeOrigin + performance.now(); \
             for (let i = 0; i < 10000; i++) client.set(`paste/${i}`, { title: `card ${i}`, column: 'todo' }); \
             const made = performance.timeOrigin + performance.now(); \
             await client.waitForPendingWrites(); \
             return [start, made, performance.timeOrigin + performance.now(), client.status]; })()",
        )
        .await;
    let seen = tokio::time::timeout(Duration::from_secs(30), reader.eval("window.seen"))
        .await
        .expect("the other page saw every write within 30 s")
        .as_f64()
        .unwrap();
    let start = written[0].as_f64().unwrap();
    let (made, confirmed) = (written[1].as_f64().unwrap(), written[2].as_f64().unwrap());
    eprintln!(
        "10,000 set() calls: {:.0} ms; confirmed after {:.0} ms; seen whole by the other page after {:.0} ms",
        made - start,
        confirmed - start,
        seen - start
    );
    assert_eq!(written[3], "live", "never closed for its rate");
    assert!(
        confirmed - start < 20_000.0,
        "confirmed after {} ms",
        confirmed - start
    );
    assert!(seen - start < 20_000.0, "seen after {} ms", seen - start);
    settle("the service has the paste", || service.len() == 10_000).await;
    let refused = gateway
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("aether_bridge_refused_total{reason=\"rate_limited\"}"))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect::<Vec<_>>();
    assert!(refused.iter().all(|n| n == "0"), "{refused:?}");
}

/// A page with a read-only token reads the board live, and its writes are
/// refused at `set` (`forbidden`, as the gateway's hello tells its rights):
/// nothing is shown or sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_page_is_told_its_writes_are_forbidden() {
    const VIEWER: &str = "a-viewer-token-of-the-browser-01";
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let mut with_viewer = config();
    with_viewer.bridge.tokens = vec![aether_gateway::BridgeToken {
        token: VIEWER.into(),
        maps: None,
        read_only: true,
        prefixes: None,
    }];
    let (_aether, gateway, service) = support::board(TOKEN, with_viewer).await;
    service.set_json("title", &"the service's").await.unwrap();
    let app = app_host().await;
    let gw = gateway.addr();
    let page = blank_page(&browser, app).await;
    let told = page
        .eval(&format!(
            "(async () => {{
               const {{ Aether }} = await import('/aether.js');
               const viewer = new Aether('ws://{gw}/bridge/board', {{ token: '{VIEWER}', cache: false }});
               await viewer.whenLive();
               let reason = null;
               try {{ viewer.set('title', 'the viewer\\'s'); }} catch (e) {{ reason = `${{e.name}} ${{e.reason}}`; }}
               return [reason, viewer.get('title'), viewer.pendingWrites, viewer.status]; }})()"
        ))
        .await;
    assert_eq!(
        told,
        json!(["AetherError forbidden", "the service's", 0, "live"])
    );
    assert_eq!(
        service.get_json::<String>("title").unwrap().as_deref(),
        Some("the service's")
    );
}
