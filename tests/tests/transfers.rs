//! Transfers of affiliation between real nodes: a village member moves to a community under
//! another township; concurrent transfers resolve by the rule and are listed as conflicts;
//! org profiles; members nobody has contacted.

use std::time::Duration;

use amphi_cluster_tests::{County, Office, eventually};
use amphi_protocol::DocId;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const BAYIN: &str = "hoboksar/chagantolgay/bayin";
const XINGFU: &str = "hoboksar/hoboksar-town/xingfu";

async fn open(office: &Office, member: &str, to: &str) -> (u16, serde_json::Value) {
    office
        .post(
            "/api/v1/transfers",
            json!({"member_id": member, "to_org": to, "reason": "moved to town for good"}),
        )
        .await
}

async fn roster(office: &Office, org: &str) -> serde_json::Value {
    office.get(&format!("/api/v1/orgs/{org}/roster")).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_village_member_moves_to_a_community_under_another_township() {
    let mut county = County::new();
    county
        .start_all(&[
            "county",
            "chagantolgay",
            "hoboksar-town",
            "bayin",
            "tebke",
            "xingfu",
        ])
        .await;
    let bayin = county.office("bayin");
    let id = bayin.create_member("Naran").await;
    assert_eq!(bayin.record_activity(&id, "village study").await, 201);

    let (code, t) = open(bayin, &id, XINGFU).await;
    assert_eq!(code, 201, "{t}");
    assert_eq!(t["state"], "open");
    let tid = t["id"].as_str().unwrap().to_owned();
    let (code, second) = open(bayin, &id, "hoboksar/chagantolgay/tebke").await;
    assert_eq!(code, 409, "a second transfer while one is open: {second}");

    // While open, the target holds the file.
    let xingfu = county.office("xingfu");
    eventually(WAIT, "the target holds the file", || async {
        xingfu.case_file(&id).await.map(|_| ())
    })
    .await;
    // Only the target (or its ancestors) may accept.
    let (code, body) = county
        .office("chagantolgay")
        .post(&format!("/api/v1/transfers/{tid}/accept"), json!({}))
        .await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = xingfu
        .post(&format!("/api/v1/transfers/{tid}/accept"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "accepted");

    // The new home can write identity; the roster lists the member as home.
    let (code, body) = xingfu
        .patch(
            &format!("/api/v1/members/{id}"),
            json!({"phone": "13700001111"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let r = roster(xingfu, XINGFU).await;
    assert!(
        r["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == id.as_str() && m["relation"] == "home"),
        "{r}"
    );

    // The old home keeps a history line and no longer holds the file.
    eventually(
        WAIT,
        "Bayin's roster shows the member transferred out",
        || async {
            let r = roster(bayin, BAYIN).await;
            let line = r["history"]
                .as_array()?
                .iter()
                .find(|l| l["id"] == id.as_str())?
                .clone();
            (line["event"] == "transferred-out" && line["to_org"] == XINGFU).then_some(())
        },
    )
    .await;
    assert!(bayin.case_file(&id).await.is_none());
    // The case file records every step, and the village's activity went with the member.
    let case = eventually(WAIT, "the county sees the accepted transfer", || async {
        let c = county.office("county").case_file(&id).await?;
        (c["home_org"] == XINGFU && c["phone"] == "13700001111").then_some(c)
    })
    .await;
    let transfer = &case["transfers"][0];
    assert_eq!(
        (
            transfer["opened_by"].as_str(),
            transfer["steps"][0]["step"].as_str(),
            transfer["steps"][0]["by"].as_str()
        ),
        (Some(BAYIN), Some("accept"), Some(XINGFU))
    );
    assert_eq!(case["activities"][0]["recorded_by"], BAYIN);
    let (_, listed) = county
        .office("county")
        .get("/api/v1/transfers?org=hoboksar/hoboksar-town")
        .await;
    assert_eq!(listed["transfers"][0]["state"], "accepted", "{listed}");

    county.stop("bayin").await;
    let store = county.office("bayin").open_store();
    assert!(
        store.load(&DocId::parse(&id).unwrap()).unwrap().is_none(),
        "the old home's store no longer holds the body"
    );
    drop(store);
    assert!(
        county.office("tebke").case_file(&id).await.is_none(),
        "a sibling never saw it"
    );
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_resolve_by_the_rule_and_are_listed_until_acknowledged() {
    let mut county = County::new();
    county
        .start_all(&["county", "chagantolgay", "hoboksar-town", "bayin", "xingfu"])
        .await;
    let id = county.office("bayin").create_member("Erdene").await;
    eventually(WAIT, "the township holds the file", || async {
        county
            .office("chagantolgay")
            .case_file(&id)
            .await
            .map(|_| ())
    })
    .await;

    // Partition: the village, cut off from its township, opens a transfer to Xingfu...
    county.stop("chagantolgay").await;
    let (code, first) = open(county.office("bayin"), &id, XINGFU).await;
    assert_eq!(code, 201, "{first}");
    county.stop("bayin").await;
    // ...and the township, not knowing, opens another one to the county itself.
    county.start("chagantolgay").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (code, second) = open(county.office("chagantolgay"), &id, "hoboksar").await;
    assert_eq!(code, 201, "{second}");
    county.start("bayin").await;

    // Every office that sees the file settles on the earliest transfer and lists the conflict.
    for office in ["bayin", "chagantolgay", "county"] {
        let o = county.office(office);
        let conflicts = eventually(WAIT, &format!("{office} lists the conflict"), || async {
            let (_, c) = o.get("/api/v1/conflicts").await;
            let list = c["conflicts"].as_array()?.clone();
            (!list.is_empty()).then_some(list)
        })
        .await;
        assert_eq!(conflicts.len(), 1, "{office}: {conflicts:?}");
        assert_eq!(
            conflicts[0]["transfer_id"], second["id"],
            "{office}: the later one lost"
        );
        assert_eq!(conflicts[0]["winner"], first["id"]);
        assert!(conflicts[0]["rule"].as_str().unwrap().contains("earliest"));
    }
    let case = county.office("county").case_file(&id).await.unwrap();
    let states: Vec<&str> = case["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["open", "superseded"]);

    // An admin acknowledges it at the county; it leaves every office's list.
    let conflict_id = {
        let (_, c) = county.office("county").get("/api/v1/conflicts").await;
        c["conflicts"][0]["id"].as_str().unwrap().to_owned()
    };
    let (code, body) = county
        .office("county")
        .post(&format!("/api/v1/conflicts/{conflict_id}/ack"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    for office in ["county", "chagantolgay", "bayin"] {
        let o = county.office(office);
        eventually(
            WAIT,
            &format!("{office} sees the acknowledgement"),
            || async {
                let (_, c) = o.get("/api/v1/conflicts").await;
                c["conflicts"].as_array()?.is_empty().then_some(())
            },
        )
        .await;
    }
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_profiles_and_members_nobody_has_contacted() {
    let mut county = County::new();
    county.start_all(&["county", "chagantolgay", "bayin"]).await;
    let bayin = county.office("bayin");
    let quiet = bayin.create_member("Batu").await;
    let seen = bayin.create_member("Oyun").await;
    assert_eq!(
        bayin
            .put(
                &format!("/api/v1/members/{seen}/contact"),
                json!({"person": "Secretary Wang"})
            )
            .await
            .0,
        200
    );
    let (_, list) = bayin
        .get(&format!("/api/v1/members?org={BAYIN}&no_contact_days=30"))
        .await;
    assert_eq!(
        list["members"].as_array().unwrap().len(),
        2,
        "naming a contact person is not a contact"
    );
    assert_eq!(
        bayin
            .put(&format!("/api/v1/members/{seen}/contact"), json!({}))
            .await
            .0,
        200,
        "records a contact today"
    );

    let (_, list) = bayin
        .get(&format!("/api/v1/members?org={BAYIN}&no_contact_days=30"))
        .await;
    let ids: Vec<&str> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![quiet.as_str()],
        "only the member nobody contacted: {list}"
    );
    let case = bayin.case_file(&seen).await.unwrap();
    assert_eq!(case["contact"]["person"], "Secretary Wang");

    // The township edits its village's profile; the village sees it.
    let township = county.office("chagantolgay");
    let profile = json!({"name": "Bayin village", "kind": "village", "secretary": "Bayar", "grids": {"grid-1": "Tsetseg"}});
    let (code, body) = township
        .patch(&format!("/api/v1/orgs/{BAYIN}"), profile)
        .await;
    assert_eq!(code, 200, "{body}");
    eventually(WAIT, "the village sees its profile", || async {
        let (code, p) = bayin.get(&format!("/api/v1/orgs/{BAYIN}")).await;
        (code == 200
            && p["profile"]["name"] == "Bayin village"
            && p["grids"]["grid-1"] == "Tsetseg")
            .then_some(())
    })
    .await;
    // A village cannot edit its township's profile; bad kinds are named.
    assert_eq!(
        bayin
            .patch("/api/v1/orgs/hoboksar/chagantolgay", json!({"name": "x"}))
            .await
            .0,
        403
    );
    let (code, body) = township
        .patch(&format!("/api/v1/orgs/{BAYIN}"), json!({"kind": "castle"}))
        .await;
    assert_eq!((code, body["error"]["field"].as_str()), (400, Some("kind")));
    county.shutdown().await;
}
