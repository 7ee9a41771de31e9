//! Every acknowledged write survives `kill -9` of the node process.
//!
//! A real `amphi` process with a store on disk takes a stream of writes; it is killed with
//! SIGKILL while writes are in flight; after a restart every write that got a 2xx is there.

mod common;

use std::time::Duration;

use common::{office, run, token};

use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let config = office(tmp.path(), "hoboksar/chagantolgay/bayin");
    let office = config.parent().unwrap().to_owned();

    let (mut child, admin) = run(&config);
    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", token(&office));
    // Writers keep going until the process dies under them; every 2xx is recorded.
    let writer = {
        let (http, auth, admin) = (http.clone(), auth.clone(), admin.clone());
        tokio::spawn(async move {
            let mut acked: Vec<(String, String)> = Vec::new();
            for n in 0.. {
                let name = format!("Member {n}");
                let body = json!({"name": name, "gender": "male", "ethnicity": "Mongol", "birth_date": "1971-03-02",
                                  "joined_at": "1996-07-01", "home_org": "hoboksar/chagantolgay/bayin"});
                let resp = http
                    .post(format!("http://{admin}/api/v1/members"))
                    .header("Authorization", &auth)
                    .json(&body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 201 => {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        if let Some(id) = v["id"].as_str() {
                            acked.push((id.to_owned(), name));
                        }
                    }
                    _ => return acked,
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
    child.wait().unwrap();
    let acked = writer.await.unwrap();
    assert!(
        acked.len() >= 5,
        "the node took only {} writes before the kill",
        acked.len()
    );

    let (mut child, admin) = run(&config);
    for (id, name) in &acked {
        let r = http
            .get(format!("http://{admin}/api/v1/members/{id}"))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "acknowledged member {id} lost after kill -9"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["name"], name.as_str());
    }
    println!("{} acknowledged writes all survived kill -9", acked.len());
    child.kill().unwrap();
    child.wait().unwrap();
}
