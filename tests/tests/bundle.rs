//! When the link is down: a bundle carries a village's work to its township and the
//! township's back, with no network between them. The gate judges a bundle's changes as a
//! link's: a change out of the village's authority is refused and reported while the rest is
//! applied; a bundle changed after it was made is refused whole; importing one twice is
//! harmless and says so.

use amphi_cluster_tests::County;
use amphi_cluster_tests::hostile::{self, ChangeBuilder, RawSyncMessage};
use amphi_protocol::bundle::Bundle;
use amphi_protocol::syncmsg::{SyncMessage, decode_change};
use amphi_protocol::wire::Frame;
use automerge::{AutoCommit, ROOT, ReadDoc, ScalarValue};
use serde_json::Value;

const BAYIN: &str = "hoboksar/chagantolgay/bayin";
const TOWNSHIP: &str = "hoboksar/chagantolgay";

/// Downloads a bundle from `office` for `to` (the dashboard's and the CLI's API call).
async fn export(office: &amphi_cluster_tests::Office, to: &str) -> Vec<u8> {
    let resp = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/bundle?for={to}",
            office.config.admin
        ))
        .bearer_auth(&office.node().token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap().to_vec()
}

/// Uploads a bundle to `office`: (status, report).
async fn import(office: &amphi_cluster_tests::Office, bytes: Vec<u8>) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/bundle", office.config.admin))
        .bearer_auth(&office.node().token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Bayin and its township, started with no `[[peers]]`: the two never connect.
async fn village_and_township_without_a_link() -> County {
    let mut county = County::new();
    county.status_interval_ms = 0;
    let ca = county.ca().to_owned();
    county
        .start_office("chagantolgay", TOWNSHIP, &[], &ca)
        .await;
    county.start_office("bayin", BAYIN, &[], &ca).await;
    county
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_carries_work_both_ways_and_the_gate_judges_every_change() {
    let county = village_and_township_without_a_link().await;
    let (bayin, township) = (county.office("bayin"), county.office("chagantolgay"));
    let member = bayin.create_member("Saruul").await;
    assert_eq!(
        bayin.record_activity(&member, "study in the village").await,
        201
    );
    assert!(township.case_file(&member).await.is_none());

    // Village → township, with one change in it that the village may not make: a report-in
    // (only the residence office may record one), signed with the village's own key.
    let bundle = export(bayin, TOWNSHIP).await;
    let mut opened = Bundle::open(&bundle).unwrap().bundle;
    let mut doc = AutoCommit::new();
    for frame in &opened.frames {
        if let Frame::Sync {
            doc: id, message, ..
        } = frame
            && id.as_str() == member
        {
            for chunk in SyncMessage::decode(message).unwrap().changes {
                doc.apply_changes([decode_change(&chunk).unwrap()]).unwrap();
            }
        }
    }
    let identity = bayin.identity();
    let (_, residence) = doc.get(ROOT, "residence").unwrap().unwrap();
    let (_, reports) = doc.get(&residence, "reports").unwrap().unwrap();
    let report_in = ChangeBuilder::following(&mut doc, &identity)
        .op(hostile::put(
            hostile::object(&reports),
            BAYIN,
            ScalarValue::from("2026-10-15"),
            vec![],
        ))
        .build();
    opened.frames.push(Frame::Sync {
        doc: amphi_protocol::DocId::parse(&member).unwrap(),
        message: RawSyncMessage::carrying(&doc.get_heads(), [&report_in]).encode(),
        attestations: vec![hostile::sign(&identity, &report_in)],
    });
    let signer = amphi_node::trust::Signer::new(&identity).unwrap();
    let with_refusal = opened.seal(|msg| signer.sign_bytes(msg));

    let (code, report) = import(township, with_refusal.clone()).await;
    assert_eq!(code, 200, "{report}");
    assert!(report["applied"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["refused"].as_object().unwrap().len(), 1, "{report}");
    assert_eq!(report["from"], BAYIN);
    let case = township
        .case_file(&member)
        .await
        .expect("the township holds the file");
    assert_eq!(township.activities(&member).await.len(), 1, "{case}");
    assert!(
        case.to_string().contains("study in the village")
            && !case.to_string().contains("2026-10-15"),
        "the refused report-in is not applied: {case}"
    );
    let quarantine = township.quarantine_reasons().await;
    assert_eq!(quarantine, vec!["not_residence_authority"]);
    assert_eq!(report["refused"]["not_residence_authority"], 1, "{report}");

    // The same bundle again: nothing new, nothing refused twice over.
    let (code, again) = import(township, with_refusal).await;
    assert_eq!(code, 200);
    assert_eq!(again["applied"], 0, "{again}");
    assert!(again["summary"].as_str().unwrap().len() > 10);

    // Township → village: the township corrects the phone number (an ancestor may).
    let (code, body) = township
        .patch(
            &format!("/api/v1/members/{member}"),
            serde_json::json!({"phone": "13900000000"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let back = export(township, BAYIN).await;
    let (code, report) = import(bayin, back).await;
    assert_eq!(code, 200, "{report}");
    assert!(report["applied"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(
        bayin.case_file(&member).await.unwrap()["phone"],
        "13900000000"
    );

    // A bundle changed after it was made is refused whole: nothing of it is applied.
    let newcomer = bayin.create_member("Bold").await;
    let mut tampered = export(bayin, TOWNSHIP).await;
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    let (code, body) = import(township, tampered).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused whole"),
        "{body}"
    );
    assert!(township.case_file(&newcomer).await.is_none());
    // A cut-off copy too.
    let whole = export(bayin, TOWNSHIP).await;
    let (code, _) = import(township, whole[..whole.len() - 10].to_vec()).await;
    assert_eq!(code, 400);
    // And one made for another office.
    let (code, body) = import(bayin, whole).await;
    assert_eq!(code, 400, "{body}");
    assert!(township.case_file(&newcomer).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_downloads_and_uploads_bundles_for_a_signed_in_admin_only() {
    let county = village_and_township_without_a_link().await;
    let (bayin, township) = (county.office("bayin"), county.office("chagantolgay"));
    let member = bayin.create_member("Saruul").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |office: &amphi_cluster_tests::Office| {
        let (http, admin, token) = (
            http.clone(),
            office.config.admin,
            office.node().token.clone(),
        );
        async move {
            let resp = http
                .post(format!("http://{admin}/login"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={token}"))
                .send()
                .await
                .unwrap();
            let cookie = resp.headers()["set-cookie"].to_str().unwrap();
            cookie.split(';').next().unwrap().to_owned()
        }
    };
    let (bayin_cookie, township_cookie) = (sign_in(bayin).await, sign_in(township).await);

    let page = http
        .get(format!("http://{}/", bayin.config.admin))
        .header("cookie", &bayin_cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("U盘传递") && page.contains(TOWNSHIP),
        "the page offers the parent"
    );

    let url = format!(
        "http://{}/dashboard/bundle?for={TOWNSHIP}",
        bayin.config.admin
    );
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 303, "no bundle without a session");
    let file = http
        .get(&url)
        .header("cookie", &bayin_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert!(
        file.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(".bundle")
    );
    let bytes = file.bytes().await.unwrap().to_vec();
    assert!(Bundle::open(&bytes).is_ok());

    let upload = format!("http://{}/dashboard/bundle", township.config.admin);
    let form_post = http
        .post(&upload)
        .header("cookie", &township_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        form_post.status(),
        403,
        "a plain form (from any site) cannot import: it lacks the page's form token"
    );
    // The page's import button carries the session's form token; the script sends it.
    let page = http
        .get(format!("http://{}/", township.config.admin))
        .header("cookie", &township_cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = page
        .split("data-form-token=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the import button carries the form token")
        .to_owned();
    let with_form_type = http
        .post(&upload)
        .header("cookie", &township_cookie)
        .header("x-form-token", &token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(with_form_type.status(), 415, "only a file body imports");
    let anonymous = http
        .post(&upload)
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let report: Value = http
        .post(&upload)
        .header("cookie", &township_cookie)
        .header("x-form-token", &token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(report["applied"].as_u64().unwrap() >= 1, "{report}");
    assert!(township.case_file(&member).await.is_some());
}
