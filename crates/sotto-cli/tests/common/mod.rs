//! Helpers shared by the command-line tests: the real `sotto` binary, a
//! real `sotto server` process, and commands run as a user would.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const PASS: &str = "correct horse battery staple";

pub fn sotto() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
    c.env("SOTTO_PASSPHRASE", PASS)
        .env_remove("SOTTO_HOME")
        .stdin(Stdio::null());
    c
}

pub struct Server {
    child: Child,
    pub url: String,
    pub fingerprint: String,
}

impl Server {
    /// Starts `sotto server` on a free port and reads its two start lines.
    pub fn start(data: &Path) -> Server {
        Server::start_on(data, "127.0.0.1:0")
    }

    pub fn start_on(data: &Path, listen: &str) -> Server {
        Server::start_with(data, listen, &[])
    }

    /// Starts `sotto server --listen LISTEN --data DATA` with `extra` flags.
    pub fn start_with(data: &Path, listen: &str, extra: &[&str]) -> Server {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--listen".as_ref(),
            listen.as_ref(),
            "--data".as_ref(),
            data.as_os_str(),
        ];
        args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
        Server::start_args(&args)
    }

    /// `sotto server ARGS`, once it prints its two start lines.
    pub fn start_args(args: &[&std::ffi::OsStr]) -> Server {
        let mut child = sotto()
            .arg("server")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sotto server");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("server printed nothing").unwrap();
        let addr = first
            .strip_prefix("listening on https://")
            .unwrap_or_else(|| panic!("unexpected: {first}"));
        let second = lines.next().expect("no fingerprint line").unwrap();
        let fingerprint = second
            .strip_prefix("fingerprint: ")
            .unwrap_or_else(|| panic!("unexpected: {second}"));
        assert_eq!(fingerprint.len(), 64, "fingerprint is hex SHA-256");
        Server {
            child,
            url: format!("https://{addr}"),
            fingerprint: fingerprint.to_string(),
        }
    }

    pub fn kill9(mut self) {
        // Child::kill sends SIGKILL on Unix: no clean shutdown.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(home: &Path, args: &[&str]) -> Output {
    sotto()
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .expect("run sotto")
}

pub fn ok(home: &Path, args: &[&str]) -> String {
    let out = run(home, args);
    assert!(
        out.status.success(),
        "sotto {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with one clear line on stderr.
pub fn err(home: &Path, args: &[&str]) -> String {
    let out = run(home, args);
    assert!(!out.status.success(), "sotto {args:?} should have failed");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line on stderr, got: {stderr}"
    );
    stderr
}

pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub fn register(dir: &Path, name: &str, server: &Server) -> PathBuf {
    let home = dir.join(name);
    ok(&home, &["register", name, "--server", &server.url]);
    home
}

pub fn link(dir: &Path, name: &str, approver: &Path, server: &Server) -> PathBuf {
    let home = dir.join(name);
    let mut child = sotto()
        .arg("--home")
        .arg(&home)
        .args(["link", "--server", &server.url])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let code = loop {
        let line = lines.next().expect("link printed no code").unwrap();
        if let Some(code) = line.strip_prefix("code: ") {
            break code.trim().to_string();
        }
    };
    ok(approver, &["approve", &code]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "link exited with {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "link did not finish after approval"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    home
}

/// Reads a long-running command's first line, which must start with
/// `prefix`, and returns the rest; keeps draining its output afterwards so
/// it never blocks on a full pipe.
pub fn first_line(child: &mut Child, prefix: &str) -> String {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().expect("printed nothing").unwrap();
    std::thread::spawn(move || for _ in lines {});
    line.strip_prefix(prefix)
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string()
}

/// Polls `f` every 100 ms for up to `secs`; on timeout panics with `what`
/// and what `explain` says about the state.
pub fn wait_until(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> bool,
    explain: impl Fn() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not happen in {secs} s; {}", explain());
}

/// Starts `sotto rendezvous --listen LISTEN`; returns it and the address it
/// printed ("rendezvous: <multiaddr>").
pub fn rendezvous(listen: &str) -> (Child, String) {
    let mut child = sotto()
        .args(["rendezvous", "--listen", listen])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sotto rendezvous");
    let point = first_line(&mut child, "rendezvous: ");
    (child, point)
}

/// A running `p2p up` (killed on drop) and the address it printed.
pub struct Up {
    pub child: Child,
    pub addr: String,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sotto p2p up` (loopback, any port unless `extra` has
/// `--listen`, mDNS off) and reads its address.
pub fn up(home: &Path, extra: &[&str]) -> Up {
    let mut child = sotto()
        .arg("--home")
        .arg(home)
        .args(["p2p", "up", "--no-mdns"])
        .args(if extra.contains(&"--listen") {
            &[][..]
        } else {
            &["--listen", "127.0.0.1:0"][..]
        })
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr = first_line(&mut child, "peer: ");
    Up { child, addr }
}

/// `asker` (connected to `answerer`'s running peer at `addr`) asks for a
/// session and `answerer` accepts it.
pub fn p2p_session(asker: &Path, answerer: &Path, answerer_name: &str, addr: &str) {
    ok(asker, &["p2p", "connect", addr]);
    let asking = sotto()
        .arg("--home")
        .arg(asker)
        .args(["p2p", "request", answerer_name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "the request arriving",
        20,
        || !ok(answerer, &["p2p", "requests"]).trim().is_empty(),
        String::new,
    );
    let requests = ok(answerer, &["p2p", "requests"]);
    let who = requests.split_whitespace().next().unwrap().to_string();
    ok(answerer, &["p2p", "accept", &who]);
    let out = asking.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "accepted");
}
