//! The dashboard in a real headless Chromium, driven by `chromedriver` over the W3C WebDriver
//! HTTP protocol: before sign-in the page holds no member data; after it, the community
//! finds a two-dwelling member by name and opens the case file, which shows both offices'
//! activities, each with its recording office.
//!
//! Needs `chromedriver` and Chromium on PATH (see `amphi_cluster_tests::browser`).
//! Screenshots at 1366×768: `target/dashboard.png` (overview) and
//! `target/dashboard-casefile.png` (case file).

use std::time::{Duration, Instant};

use amphi_cluster_tests::browser::{Driver, find_chromedriver, target_dir};
use amphi_cluster_tests::{County, eventually};

const XINGFU: &str = "hoboksar/hoboksar-town/xingfu";
const BAYIN: &str = "hoboksar/chagantolgay/bayin";
const WAIT: Duration = Duration::from_secs(30);
const NAME: &str = "Tsetseg Dorji";
const BAYIN_ACTIVITY: &str = "busy-season branch meeting";
/// Markup in user data must show as text, never as markup.
const XINGFU_ACTIVITY: &str = "slack-season study <i>at</i> Xingfu";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_community_signs_in_finds_a_two_dwelling_member_and_sees_both_offices_activities() {
    let chromedriver = find_chromedriver();
    let started = Instant::now();

    // Bayin registers a two-dwelling member resident at Xingfu; both offices record an activity.
    let mut county = County::new();
    county
        .start_all(&["county", "chagantolgay", "hoboksar-town", "bayin", "xingfu"])
        .await;
    let (bayin, xingfu) = (county.office("bayin"), county.office("xingfu"));
    let id = county.two_dwelling_member(NAME).await;
    let other = xingfu.create_member("Gulbahar").await;
    assert_eq!(bayin.record_activity(&id, BAYIN_ACTIVITY).await, 201);
    assert_eq!(xingfu.record_activity(&id, XINGFU_ACTIVITY).await, 201);
    let expected = vec![
        (BAYIN_ACTIVITY.to_owned(), BAYIN.to_owned()),
        (XINGFU_ACTIVITY.to_owned(), XINGFU.to_owned()),
    ];
    eventually(WAIT, "Xingfu holds both offices' activities", || async {
        (xingfu.activities(&id).await == expected).then_some(())
    })
    .await;
    println!("cluster ready in {:?}", started.elapsed());

    let base = format!("http://{}", xingfu.node().admin_addr);
    let token = xingfu.node().token.clone();

    // Without a session no data route answers, with or without a guess at the API's token.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(format!("{base}/dashboard/sync"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/dashboard/members/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the case file redirects to sign-in");
    let r = http
        .get(format!("{base}/dashboard/members/{id}"))
        .header(
            "cookie",
            format!(
                "{}={token}",
                amphi_node::dashboard::session_cookie(&xingfu.node().node_id)
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the raw token is not a session");

    let browser_started = Instant::now();
    let mut driver = Driver::start(&chromedriver).await;
    let screenshots = target_dir();

    // Signed out: only the sign-in form, no member data.
    driver.goto(&format!("{base}/")).await;
    driver.wait_for("input[name=token]").await;
    let source = driver.source().await;
    assert!(!source.contains("Tsetseg"), "member data before sign-in");
    assert!(!source.contains(XINGFU), "status data before sign-in");
    assert!(driver.find("input[name=q]").await.is_none());

    // A wrong token re-shows the form with an error.
    let field = driver.wait_for("input[name=token]").await;
    driver.type_into(&field, "not-the-token").await;
    driver
        .click(&driver.wait_for("form.login button").await)
        .await;
    let error = driver.wait_for(".login .error").await;
    assert!(driver.text(&error).await.contains("Wrong token"));
    assert!(!driver.source().await.contains("Tsetseg"));

    // The right token signs in; the cookie is HttpOnly, SameSite=Strict, and not the token.
    let field = driver.wait_for("input[name=token]").await;
    driver.type_into(&field, &token).await;
    driver
        .click(&driver.wait_for("form.login button").await)
        .await;
    driver.wait_for("input[name=q]").await;
    let cookies = driver.cmd("GET", "/cookie", None).await;
    let session = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("amphi_session_"))
        })
        .unwrap_or_else(|| panic!("no session cookie in {cookies}"));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    assert!(!session["value"].as_str().unwrap().contains(&token));
    let sync = driver.text(&driver.wait_for("#sync").await).await;
    assert!(
        sync.contains("hoboksar/hoboksar-town") && sync.contains("connected"),
        "the parent shows as a peer: {sync}"
    );

    // Search by name: the member is found, Xingfu's other member is not.
    let search = driver.wait_for("input[name=q]").await;
    driver.type_into(&search, "tsetseg").await;
    driver
        .click(&driver.wait_for(".search-form button").await)
        .await;
    eventually(Duration::from_secs(10), "the search answers", || async {
        driver
            .current_url()
            .await
            .contains("q=tsetseg")
            .then_some(())
    })
    .await;
    let results = driver.text(&driver.wait_for("#results").await).await;
    assert!(results.contains(NAME), "{results}");
    assert!(!results.contains("Gulbahar"), "{results}");
    driver.screenshot(&screenshots.join("dashboard.png")).await;

    // The case file: both activities, each with its recording office; markup shown as text.
    let link = driver
        .wait_for(&format!("#results a[href='/dashboard/members/{id}']"))
        .await;
    driver.click(&link).await;
    let activities = driver.text(&driver.wait_for("#activities").await).await;
    for expected in [BAYIN_ACTIVITY, XINGFU_ACTIVITY, BAYIN, XINGFU] {
        assert!(
            activities.contains(expected),
            "{expected:?} missing from the activities: {activities}"
        );
    }
    assert!(activities.contains("记录组织 Recorded by"), "{activities}");
    assert!(
        driver.find("#activities i").await.is_none(),
        "a description's markup was rendered"
    );
    let affiliation = driver.text(&driver.wait_for("#affiliation").await).await;
    assert!(
        affiliation.contains(BAYIN) && affiliation.contains(XINGFU),
        "{affiliation}"
    );
    driver
        .screenshot(&screenshots.join("dashboard-casefile.png"))
        .await;

    // Sign out: the form again, and the case file is out of reach.
    driver.click(&driver.wait_for(".logout button").await).await;
    driver.wait_for("input[name=token]").await;
    driver
        .goto(&format!("{base}/dashboard/members/{other}"))
        .await;
    driver.wait_for("input[name=token]").await;
    assert!(!driver.source().await.contains("Gulbahar"));

    driver.quit().await;
    println!(
        "browser part took {:?}; screenshots in {}",
        browser_started.elapsed(),
        screenshots.display()
    );
    drop((driver, http));
    county.shutdown().await;
}
