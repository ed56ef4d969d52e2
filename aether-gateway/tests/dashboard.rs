//! End to end: headless Chromium opens the live dashboard while waves flow,
//! and the page it renders shows them: the page received server-sent
//! events and drew them.
//!
//! Needs Debian's `chromium` (`apt-get install -y chromium`); without it
//! the test says so and passes.

mod support;

use std::{process::Stdio, time::Duration};

use aether_core::{Aether, Phase, Vibrator, Wave};
use support::{config, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sees_waves_arrive_on_the_dashboard() {
    let profile = tempfile::tempdir().unwrap();
    let Some(mut chromium) = support::cdp::chromium(profile.path()) else {
        return;
    };
    let aether = Aether::default();
    let gateway = start(&aether, config()).await;
    let mut inventory = Vibrator::create("inventory", &aether).await.unwrap();
    inventory.resonate_on("orders.*").await.unwrap();
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    let emitting = tokio::spawn(async move {
        for n in 0..3000u32 {
            let phase = if n % 2 == 0 {
                Phase::ASSERT
            } else {
                Phase::RETRACT
            };
            // Markup in a key is shown as text, never run.
            let wave = Wave::builder("orders.created")
                .correlation_key(format!("<i>order</i>-{}", n / 2))
                .phase(phase)
                .json(&n)
                .build()
                .unwrap();
            shop.emit(wave).await.unwrap();
            while inventory.try_receive().is_some() {}
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    // The page stops listening after 4 snapshots (`?snapshots=4`): a page
    // with an open stream never settles, and Chromium would not dump it.
    let url = format!("http://{}/?snapshots=4", gateway.addr());
    let run = chromium
        .args(["--virtual-time-budget=3000", "--dump-dom", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("chromium dumps the page within 60 s")
        .expect("chromium runs");
    emitting.abort();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && !dom.is_empty(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let attribute = |name: &str| -> Option<String> {
        let start = dom.find(&format!("{name}=\""))? + name.len() + 2;
        Some(dom[start..start + dom[start..].find('"')?].to_string())
    };
    assert_eq!(attribute("data-snapshots").as_deref(), Some("4"), "{dom}");
    assert_eq!(attribute("data-stream").as_deref(), Some("closed"), "{dom}");
    let row = "<tr data-family=\"orders.created\" data-waves=\"";
    let start = dom
        .find(row)
        .unwrap_or_else(|| panic!("no orders row: {dom}"))
        + row.len();
    let waves: u64 = dom[start..start + dom[start..].find('"').unwrap()]
        .parse()
        .unwrap();
    assert!(waves > 0, "{dom}");
    // The resonance graph and the interference list were drawn too.
    assert!(dom.contains("<circle"), "no graph: {dom}");
    assert!(dom.contains("badge cancellation"), "no event: {dom}");
    // Each event with what it means and its waves, phases and sources.
    assert!(dom.contains("conflicting messages"), "no diagnosis: {dom}");
    assert!(
        dom.contains("<ol class=\"involved\"><li>+"),
        "no waves: {dom}"
    );
    assert!(
        dom.contains("shop · retract") || dom.contains("shop \u{b7} retract"),
        "{dom}"
    );
    assert!(
        dom.contains("&lt;i&gt;order&lt;/i&gt;"),
        "the key as text: {dom}"
    );
    assert!(
        !dom.contains("<i>order</i>"),
        "markup from the bus ran: {dom}"
    );
    gateway.stop().await.unwrap();
}

/// The main job's dashboard, as a new user opens it: with instance reports
/// on, the Instances and Replicated maps panels fill; the connection badge
/// never says the gateway is unreachable while snapshots come, and says so
/// once the gateway is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panels_fill_and_the_badge_says_what_is_true() {
    let Some(browser) = support::cdp::Browser::launch().await else {
        return;
    };
    let mut settings = aether_core::AetherConfig::default();
    settings.report.interval = Duration::from_millis(200);
    settings.report.instance = Some("shop".into());
    let aether = Aether::new(settings).unwrap();
    let gateway = start(&aether, config()).await;
    let _board = aether_core::state::StateMap::builder("board")
        .node("shop")
        .open(&aether)
        .await
        .unwrap();
    let page = browser.open(&format!("http://{}/", gateway.addr())).await;
    page.wait_for(
        "the dashboard is up",
        "!!document.getElementById('connection')",
        10,
    )
    .await;
    // Every badge the page shows from here on.
    page.eval(
        "window.badges = []; const badge = document.getElementById('connection'); \
         new MutationObserver(() => badges.push(badge.textContent + '|' + badge.className)) \
         .observe(badge, {childList: true, characterData: true, subtree: true, attributes: true}); true",
    )
    .await;
    page.wait_for(
        "the instance's row",
        "!!document.querySelector('#instances tr[data-instance=\"shop\"]')",
        15,
    )
    .await;
    page.wait_for(
        "the map's row",
        "!!document.querySelector('#maps tr[data-map=\"board\"]')",
        15,
    )
    .await;
    page.wait_for(
        "the badge is the gateway's own status",
        "document.getElementById('connection').className === 'badge ok'",
        5,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let badges = page.eval("window.badges").await;
    let shown: Vec<&str> = badges
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b.as_str())
        .collect();
    assert!(
        shown
            .iter()
            .all(|b| !b.contains("unreachable") && !b.ends_with(" bad")),
        "the badge said something untrue while snapshots came: {shown:?}"
    );
    gateway.stop().await.unwrap();
    page.wait_for(
        "the badge says the gateway is gone, and the panels are greyed",
        "document.getElementById('connection').textContent === 'gateway unreachable' \
         && document.body.dataset.stale === 'true'",
        15,
    )
    .await;
}
