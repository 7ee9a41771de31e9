//! `county-in-containers`: runs the lab county (see `amphi_cluster_tests::lab`) against
//! built images and prints its report; exits 1 when anything did not hold.
//!
//! ```text
//! county-in-containers --image amphi:lab [--previous amphi:previous] [--seed N]
//!                      [--soak-minutes N] [--converge-within-s 300] [--dir DIR]
//! ```
//! Needs Docker and root (or a user in the docker group); `tests/county-in-containers.sh`
//! builds the images first.

use std::path::PathBuf;
use std::time::Duration;

use amphi_cluster_tests::lab::{self, Options};

fn usage() -> ! {
    eprintln!(
        "usage: county-in-containers --image IMAGE [--previous IMAGE] [--seed N] \
         [--soak-minutes N] [--converge-within-s S] [--dir DIR]"
    );
    std::process::exit(2)
}

fn parse() -> Options {
    let mut opts = Options {
        image: String::new(),
        previous: None,
        seed: 1,
        soak: None,
        dir: PathBuf::new(),
        converge_within: Duration::from_secs(300),
    };
    let mut dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        let number = |v: String| v.parse::<u64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--image" => opts.image = value(),
            "--previous" => opts.previous = Some(value()),
            "--seed" => opts.seed = number(value()),
            "--soak-minutes" => opts.soak = Some(Duration::from_secs(60 * number(value()))),
            "--converge-within-s" => {
                opts.converge_within = Duration::from_secs(number(value()));
            }
            "--dir" => dir = Some(PathBuf::from(value())),
            _ => usage(),
        }
    }
    if opts.image.is_empty() {
        usage();
    }
    opts.dir = dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("amphi-lab-{}", std::process::id())));
    opts
}

#[tokio::main]
async fn main() {
    let opts = parse();
    if let Err(e) = std::fs::create_dir_all(&opts.dir) {
        eprintln!("county-in-containers: {}: {e}", opts.dir.display());
        std::process::exit(1);
    }
    println!(
        "county-in-containers: image {}, previous {}, seed {}, {}, folder {}",
        opts.image,
        opts.previous.as_deref().unwrap_or("(none)"),
        opts.seed,
        opts.soak
            .map_or("one round of faults".to_owned(), |s| format!(
                "soak {} min",
                s.as_secs() / 60
            )),
        opts.dir.display()
    );
    match lab::run(&opts).await {
        Ok(report) => {
            report.print();
            println!("PASS");
            let _ = std::fs::remove_dir_all(&opts.dir);
        }
        Err(e) => {
            eprintln!("FAIL: {e:#}");
            eprintln!("(the lab's folder is kept: {})", opts.dir.display());
            std::process::exit(1);
        }
    }
}
