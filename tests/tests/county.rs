//! A county of six real nodes over QUIC: the two-dwelling story end to end.
//!
//! county ─┬─ chagantolgay ─┬─ bayin (village, home)
//!         │                └─ tebke (sibling village)
//!         └─ hoboksar-town ─── xingfu (residence community)

use std::time::{Duration, Instant};

use amphi_cluster_tests::{County, eventually};
use serde_json::json;

const ALL: &[&str] = &[
    "county",
    "chagantolgay",
    "hoboksar-town",
    "bayin",
    "tebke",
    "xingfu",
];
const XINGFU: &str = "hoboksar/hoboksar-town/xingfu";
const BAYIN: &str = "hoboksar/chagantolgay/bayin";
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_dwelling_file_is_shared_by_village_and_community_with_both_offices_activities() {
    let mut county = County::new();
    county.start_all(ALL).await;
    let started = Instant::now();
    let id = county.two_dwelling_member("Tsetseg").await;
    println!(
        "case file reached the community (4 hops) in {:?}",
        started.elapsed()
    );
    let (bayin, xingfu) = (county.office("bayin"), county.office("xingfu"));

    let (code, body) = xingfu
        .post(
            &format!("/api/v1/members/{id}/report-in"),
            json!({"date": "2026-10-20"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        bayin
            .record_activity(&id, "busy-season branch meeting")
            .await,
        201
    );
    assert_eq!(
        xingfu
            .record_activity(&id, "slack-season study at Xingfu")
            .await,
        201
    );

    let expected = vec![
        ("busy-season branch meeting".to_owned(), BAYIN.to_owned()),
        ("slack-season study at Xingfu".to_owned(), XINGFU.to_owned()),
    ];
    let started = Instant::now();
    for office in ["bayin", "xingfu", "county", "chagantolgay", "hoboksar-town"] {
        let o = county.office(office);
        eventually(
            WAIT,
            &format!("{office} sees both offices' activities"),
            || async { (o.activities(&id).await == expected).then_some(()) },
        )
        .await;
    }
    println!(
        "both activities converged on 5 offices in {:?}",
        started.elapsed()
    );
    let case = bayin.case_file(&id).await.unwrap();
    assert_eq!(
        case["residence"]["reported_in_at"], "2026-10-20",
        "the village sees the report-in"
    );
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sibling_village_never_receives_the_file() {
    let mut county = County::new();
    county.start_all(ALL).await;
    let id = county.two_dwelling_member("Tsetseg").await;
    // Make sure the county and Tebke's township have it, so Tebke had every chance to get it.
    for office in ["county", "chagantolgay"] {
        let o = county.office(office);
        eventually(WAIT, "relays hold the file", || async {
            o.case_file(&id).await.map(|_| ())
        })
        .await;
    }
    let tebke = county.office("tebke");
    let own = tebke.create_member("Gulnar").await;
    eventually(WAIT, "Tebke's own member reaches its township", || async {
        county
            .office("chagantolgay")
            .case_file(&own)
            .await
            .map(|_| ())
    })
    .await;
    assert!(
        tebke.case_file(&id).await.is_none(),
        "the sibling must not hold the file"
    );
    let (_, list) = tebke.get("/api/v1/members").await;
    let ids: Vec<&str> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![own.as_str()], "Tebke lists only its own member");
    let (_, list) = county.office("xingfu").get("/api/v1/members").await;
    assert!(
        list["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"] != own.as_str()),
        "Xingfu never sees Tebke's member"
    );
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_community_cannot_change_identity_or_write_the_review() {
    let mut county = County::new();
    county
        .start_all(&["county", "hoboksar-town", "chagantolgay", "bayin", "xingfu"])
        .await;
    let id = county.two_dwelling_member("Tsetseg").await;
    let xingfu = county.office("xingfu");
    let (code, body) = xingfu
        .patch(&format!("/api/v1/members/{id}"), json!({"name": "Changed"}))
        .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let review = json!({"period": "2026H1", "rating": "good", "comment": "from the community"});
    let (code, _) = xingfu
        .post(&format!("/api/v1/members/{id}/reviews"), review.clone())
        .await;
    assert_eq!(code, 403);
    // The home village may do both.
    let bayin = county.office("bayin");
    assert_eq!(
        bayin
            .patch(
                &format!("/api/v1/members/{id}"),
                json!({"phone": "13900000000"})
            )
            .await
            .0,
        200
    );
    assert_eq!(
        bayin
            .post(&format!("/api/v1/members/{id}/reviews"), review)
            .await
            .0,
        201
    );
    // The refused writes left no trace anywhere.
    let case = xingfu.case_file(&id).await.unwrap();
    assert_eq!(case["name"], "Tsetseg");
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_at_both_ends_converge_after_the_link_heals() {
    let mut county = County::new();
    county
        .start_all(&["county", "chagantolgay", "hoboksar-town", "bayin", "xingfu"])
        .await;
    let id = county.two_dwelling_member("Tsetseg").await;
    // The county goes down: the two townships (and so village and community) are cut apart.
    county.stop("county").await;
    let (bayin, xingfu) = (county.office("bayin"), county.office("xingfu"));
    assert_eq!(
        bayin
            .record_activity(&id, "village edit while cut off")
            .await,
        201
    );
    assert_eq!(
        bayin
            .patch(
                &format!("/api/v1/members/{id}"),
                json!({"phone": "13911112222"})
            )
            .await
            .0,
        200
    );
    assert_eq!(
        xingfu
            .record_activity(&id, "community edit while cut off")
            .await,
        201
    );
    assert_eq!(
        xingfu
            .post(&format!("/api/v1/members/{id}/report-in"), json!({}))
            .await
            .0,
        201
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        xingfu.activities(&id).await.len(),
        1,
        "nothing crosses while the link is down"
    );

    let healed = Instant::now();
    county.start("county").await;
    let (bayin, xingfu) = (county.office("bayin"), county.office("xingfu"));
    let at_bayin = eventually(WAIT, "Bayin has the community's edits", || {
        converged(bayin, &id)
    })
    .await;
    let at_xingfu = eventually(WAIT, "Xingfu has the village's edits", || {
        converged(xingfu, &id)
    })
    .await;
    println!("converged {:?} after the link healed", healed.elapsed());
    assert_eq!(at_bayin, at_xingfu, "both ends hold the same case file");
    county.shutdown().await;
}

/// The case file once it holds both offline activities, the village's phone and the report-in.
async fn converged(office: &amphi_cluster_tests::Office, id: &str) -> Option<serde_json::Value> {
    let case = office.case_file(id).await?;
    let done = case["activities"].as_array()?.len() == 2
        && case["phone"] == "13911112222"
        && case["residence"]["reported_in_at"].is_string();
    done.then_some(case)
}
