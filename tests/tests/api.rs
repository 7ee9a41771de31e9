//! The admin API's edges on a real node: token, bounded and validated bodies, error shape.

use amphi_cluster_tests::County;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_checks_token_size_and_fields_and_answers_in_one_error_shape() {
    let mut county = County::new();
    county.start("county").await;
    county.start("chagantolgay").await;
    county.start("bayin").await;
    let bayin = county.office("bayin");
    let base = format!("http://{}", bayin.node().admin_addr);
    let http = reqwest::Client::new();

    // No token, wrong token: 401; healthz and metrics need none.
    let r = http
        .get(format!("{base}/api/v1/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let r = http
        .get(format!("{base}/api/v1/status"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("amphi_documents{kind=\"member\"}"),
        "{metrics}"
    );

    // Oversized body: 413 in the JSON error shape.
    let huge = json!({"name": "x".repeat(100_000)});
    let (code, body) = bayin.post("/api/v1/members", huge).await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large");

    // Invalid fields are named.
    let good = json!({"name": "Bayar", "gender": "male", "ethnicity": "Mongol", "birth_date": "1971-03-02",
                      "joined_at": "1996-07-01", "home_org": "hoboksar/chagantolgay/bayin"});
    for (field, value) in [
        ("birth_date", json!("1971-02-30")),
        ("gender", json!("x")),
        ("home_org", json!("Not/AnOrg")),
        ("colour", json!("red")),
    ] {
        let mut body = good.clone();
        body[field] = value;
        let (code, reply) = bayin.post("/api/v1/members", body).await;
        assert_eq!(code, 400, "{field}: {reply}");
        assert_eq!(reply["error"]["field"], field, "{reply}");
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("joined_at");
    let (code, reply) = bayin.post("/api/v1/members", missing).await;
    assert_eq!(
        (code, reply["error"]["field"].as_str()),
        (400, Some("joined_at")),
        "{reply}"
    );

    // A member for an office outside Bayin's authority: 403.
    let mut elsewhere = good.clone();
    elsewhere["home_org"] = json!("hoboksar/chagantolgay/tebke");
    let (code, reply) = bayin.post("/api/v1/members", elsewhere).await;
    assert_eq!(code, 403, "{reply}");

    // Unknown id: 404; malformed id: 400; ending a residence that does not exist: 409.
    assert_eq!(bayin.get("/api/v1/members/m-0000000000000000").await.0, 404);
    assert_eq!(bayin.get("/api/v1/members/not-an-id").await.0, 400);
    let id = bayin.create_member("Batu").await;
    assert_eq!(
        bayin
            .delete(&format!("/api/v1/members/{id}/residence"))
            .await
            .0,
        409
    );
    assert_eq!(
        bayin
            .post(&format!("/api/v1/members/{id}/report-in"), json!({}))
            .await
            .0,
        409
    );
    // Residence at the home org itself makes no sense: 400.
    let (code, _) = bayin
        .put(
            &format!("/api/v1/members/{id}/residence"),
            json!({"org": "hoboksar/chagantolgay/bayin", "since": "2026-01-01"}),
        )
        .await;
    assert_eq!(code, 400);

    // The roster shows home members and, at the county, nothing for a sibling it never saw.
    let (code, roster) = bayin
        .get("/api/v1/orgs/hoboksar/chagantolgay/bayin/roster")
        .await;
    assert_eq!(code, 200);
    assert_eq!(roster["members"][0]["relation"], "home");
    assert_eq!(roster["members"][0]["id"], id.as_str());
    county.shutdown().await;
}
