//! The core does no I/O: nothing in its dependency tree is an async
//! runtime, a socket, HTTP, TLS or a database, and its code names no
//! socket, file, process, clock or OS randomness (time and randomness are
//! passed in). What a shell needs, the shell brings.

use std::path::Path;
use std::process::Command;

/// Crates that do I/O (or exist to serve it): none may be in the tree.
const FORBIDDEN_CRATES: &[&str] = &[
    "tokio",
    "async-std",
    "smol",
    "mio",
    "socket2",
    "hyper",
    "hyper-util",
    "reqwest",
    "axum",
    "tower",
    "rustls",
    "tokio-rustls",
    "tokio-tungstenite",
    "tungstenite",
    "rusqlite",
    "libsqlite3-sys",
    "postgres",
    "sqlx",
    "libp2p",
];

/// What the core's code may not name.
const FORBIDDEN_PATHS: &[&str] = &[
    "std::net",
    "std::fs",
    "std::process",
    "std::thread",
    "std::io::stdin",
    "SystemTime",
    "Instant::now",
    "OsRng",
    "getrandom",
    "thread_rng",
];

fn tree(features: &[&str]) -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none"])
        .args(["--format", "{p}", "--manifest-path"])
        .arg(&manifest)
        .args(features)
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn the_dependency_tree_holds_no_io_crate() {
    for features in [&[][..], &["--all-features"][..]] {
        let crates = tree(features);
        assert!(
            crates.iter().any(|c| c == "sotto-proto"),
            "the tree was read: {crates:?}"
        );
        for bad in FORBIDDEN_CRATES {
            assert!(
                !crates.iter().any(|c| c == bad),
                "{bad} is in sotto-device's dependency tree ({features:?})"
            );
        }
    }
}

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
}

#[test]
fn the_code_names_no_socket_file_clock_or_os_randomness() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 10, "the sources were read");
    for (path, text) in &files {
        for bad in FORBIDDEN_PATHS {
            assert!(!text.contains(bad), "{path} names {bad}");
        }
    }
}
