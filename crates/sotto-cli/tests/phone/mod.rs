//! Helpers of the phone-number tests: the sender API over curl (as the
//! contract does), the SMS sink file, a local webhook receiver and a local
//! stand-in of Twilio's Messages API.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::common::*;

pub const NUMBER: &str = "+15551234567";

/// A server with the SMS sink in its data directory, and its paths.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub sink: PathBuf,
    pub server: Server,
}

pub fn setup(extra: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("srv");
    std::fs::create_dir_all(&data).unwrap();
    let sink = data.join("sms.jsonl");
    let mut args = vec!["--sms-sink", sink.to_str().unwrap()];
    args.extend_from_slice(extra);
    let server = Server::start_with(&data, "127.0.0.1:0", &args);
    Setup {
        dir,
        data,
        sink,
        server,
    }
}

/// `sotto admin --data DATA ARGS` that must succeed: its stdout.
pub fn admin(data: &Path, args: &[&str]) -> String {
    let out = sotto()
        .arg("admin")
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Adds sender `handle`; returns (api key, webhook secret).
pub fn add_sender(data: &Path, handle: &str, name: &str, webhook: &str) -> (String, String) {
    let out = admin(
        data,
        &[
            "sender",
            "add",
            handle,
            "--name",
            name,
            "--webhook",
            webhook,
        ],
    );
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("api key: "))
        .expect("api key line")
        .to_string();
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("webhook secret: "))
        .expect("webhook secret line")
        .to_string();
    (key, secret)
}

/// An HTTP answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `curl -k` as the contract does.
pub fn curl(args: &[&str]) -> Answer {
    let out = Command::new("curl")
        .args(["-k", "-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    Answer {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_string(),
    }
}

pub fn send(server: &Server, key: &str, body: &str) -> Answer {
    let auth = format!("Authorization: Bearer {key}");
    curl(&[
        "-H",
        &auth,
        "-H",
        "content-type: application/json",
        "-d",
        body,
        &format!("{}/v1/sender/messages", server.url),
    ])
}

pub fn status(server: &Server, key: &str, id: &str) -> Answer {
    let auth = format!("Authorization: Bearer {key}");
    curl(&[
        "-H",
        &auth,
        &format!("{}/v1/sender/messages/{id}", server.url),
    ])
}

/// The SMS in the sink: (to, text).
pub fn sms(sink: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(sink).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["to"].as_str().unwrap().to_string(),
                v["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Waits for an SMS to `to` containing `needle`; returns its text.
pub fn wait_sms(sink: &Path, to: &str, needle: &str) -> String {
    let mut found = None;
    wait_until(
        "the SMS",
        20,
        || {
            found = sms(sink)
                .into_iter()
                .rev()
                .find(|(t, text)| t == to && text.contains(needle))
                .map(|(_, text)| text);
            found.is_some()
        },
        || format!("sink: {:?}", sms(sink)),
    );
    found.unwrap()
}

/// The six-digit code of the last OTP SMS to `to`.
pub fn otp_for(sink: &Path, to: &str) -> String {
    let text = wait_sms(sink, to, "code");
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("a 6-digit code")
        .to_string()
}

/// Every file of `dir` (recursively) except `skip`, concatenated.
pub fn raw_files(dir: &Path, skip: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path == skip {
            continue;
        }
        if path.is_dir() {
            out.extend(raw_files(&path, skip));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// One request a local HTTP server received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A local HTTP/1.1 server that records requests and answers with the
/// status `respond` holds (e.g. 503 while "down").
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub respond: Arc<AtomicU16>,
}

impl Receiver {
    pub fn start(path: &str) -> Receiver {
        Receiver::start_with(path, None)
    }

    /// An https receiver presenting `cert` (see [`TestCa`]).
    pub fn start_tls(path: &str, cert: &Leaf) -> Receiver {
        Receiver::start_with(path, Some(cert))
    }

    fn start_with(path: &str, cert: Option<&Leaf>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if cert.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}{path}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let respond = Arc::new(AtomicU16::new(200));
        let (r, s) = (received.clone(), respond.clone());
        let tls = cert.map(|c| Arc::new(c.server_config()));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, s, tls) = (r.clone(), s.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve(stream, &r, &s),
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(conn, stream), &r, &s)
                    }
                });
            }
        });
        Receiver {
            url,
            received,
            respond,
        }
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until a request matches `f`.
    pub fn wait(&self, what: &str, f: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = self.all().into_iter().find(|r| f(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: never came; got {:?}",
                self.all()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn serve(stream: impl Read + Write, received: &Mutex<Vec<Received>>, respond: &AtomicU16) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).is_err() {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = respond.load(Ordering::SeqCst);
        if status == 200 {
            received.lock().unwrap().push(Received {
                path,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{{}}"
        );
        let w = reader.get_mut();
        if w.write_all(reply.as_bytes())
            .and_then(|()| w.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Checks a webhook post's `X-Sotto-Signature` with the sender's secret,
/// as a sender would (HMAC-SHA-256 over "<t>." and the body).
pub fn signature_ok(r: &Received, secret_hex: &str) -> bool {
    let Some(sig) = r.header("x-sotto-signature") else {
        return false;
    };
    let mut t = None;
    let mut v1 = None;
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_string()),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let key = hex::decode(secret_hex).unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(r.body.as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap_or_default())
        .is_ok()
}

/// The events of a webhook receiver, as JSON.
pub fn events(w: &Receiver) -> Vec<serde_json::Value> {
    w.all()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

/// A certificate authority made for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A server certificate for 127.0.0.1 and its key.
pub struct Leaf {
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// The CA certificate, PEM (what `--outgoing-ca` reads).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for 127.0.0.1 signed by this CA.
    pub fn leaf(&self) -> Leaf {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            chain: vec![cert.der().clone()],
            key: key.serialize_der(),
        }
    }
}

impl Leaf {
    fn server_config(&self) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                self.chain.clone(),
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.key.clone().into()),
            )
            .unwrap()
    }
}
