//! Every acknowledged write survives `kill -9` of the node process.
//!
//! A real `amphi` process with a store on disk takes a stream of writes; it is killed with
//! SIGKILL while writes are in flight; after a restart every write that got a 2xx is there.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const AMPHI: &str = env!("CARGO_BIN_EXE_amphi");

fn amphi(args: &[&str]) {
    let out = Command::new(AMPHI).args(args).output().expect("amphi runs");
    assert!(
        out.status.success(),
        "amphi {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `amphi run` and returns the process and its admin address (read from its banner).
#[expect(
    clippy::zombie_processes,
    reason = "the caller kills and waits for the child"
)]
fn run(config: &Path) -> (Child, String) {
    let mut child = Command::new(AMPHI)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .expect("amphi run starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no banner from amphi run");
        let line = lines.next().expect("banner line").expect("utf-8");
        if let Some(addr) = line.split("admin on http://").nth(1) {
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (child, addr.trim().to_owned());
        }
    }
}

fn token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data/admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, office) = (tmp.path().join("ca"), tmp.path().join("bayin"));
    amphi(&[
        "ca",
        "init",
        "--dir",
        ca.to_str().unwrap(),
        "--org",
        "hoboksar",
    ]);
    amphi(&[
        "ca",
        "issue",
        "--ca",
        ca.to_str().unwrap(),
        "--org",
        "hoboksar/chagantolgay/bayin",
        "--out",
        office.to_str().unwrap(),
    ]);
    let config = office.join("amphi.toml");
    std::fs::write(
        &config,
        "data_dir = \"data\"\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ncert = \"node.crt\"\nkey = \"node.key\"\nca = \"ca.crt\"\n",
    )
    .unwrap();

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
