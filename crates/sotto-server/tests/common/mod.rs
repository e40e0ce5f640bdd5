//! A small test client for the server: real TLS (pinned by fingerprint),
//! real signatures, real protocol devices from sotto-proto.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand_core::OsRng;
use reqwest::{Method, StatusCode};
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sotto_api::*;
use sotto_proto::*;
use sotto_server::{Config, Running};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub async fn start(dir: &Path, retention: Duration) -> Running {
    start_with(dir, |c| c.retention = retention).await
}

/// A server on 127.0.0.1 whose config `f` adjusts (limits, retention).
pub async fn start_with(dir: &Path, f: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    f(&mut config);
    sotto_server::start(config).await.expect("server starts")
}

/// A TLS connection to `server` from the local address `from` (any of
/// 127.0.0.0/8 works on loopback): what an attacker holds.
pub async fn tls_from(
    from: IpAddr,
    server: SocketAddr,
    fingerprint: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let tcp = socket.connect(server).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(fingerprint)));
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// The client side's TLS: the server's certificate pinned by `fingerprint`
/// (sotto-api's verifier, as the client and the load generator use).
pub fn tls_config(fingerprint: &str) -> rustls::ClientConfig {
    sotto_api::pin::pinned_config(Some(fingerprint.to_string()))
        .expect("the ring provider's default protocol versions")
        .0
}

/// An HTTP client for one server.
#[derive(Clone)]
pub struct Http {
    pub addr: SocketAddr,
    pub fingerprint: String,
    pub client: reqwest::Client,
}

impl Http {
    /// The text of `/metrics` (no signature needed).
    pub async fn metrics_text(&self) -> String {
        let resp = self.client.get(self.url("/metrics")).send().await.unwrap();
        resp.text().await.unwrap()
    }

    pub fn new(addr: SocketAddr, fingerprint: &str) -> Http {
        Http::from_ip(addr, fingerprint, "127.0.0.1".parse().unwrap())
    }

    /// A client whose connections come from the local address `from`.
    pub fn from_ip(addr: SocketAddr, fingerprint: &str, from: IpAddr) -> Http {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(fingerprint))
            .local_address(from)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Http {
            addr,
            fingerprint: fingerprint.to_string(),
            client,
        }
    }

    pub fn of(server: &Running) -> Http {
        Http::new(server.addr, &server.fingerprint)
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr, path)
    }

    /// A request signed by `key` at `time` (now when `None`).
    pub async fn signed_at(
        &self,
        key: &DeviceKey,
        method: Method,
        path: &str,
        body: Vec<u8>,
        time: Option<u64>,
    ) -> reqwest::Result<reqwest::Response> {
        let time = time.unwrap_or_else(now_ms);
        let sig = key.sign(&request_signing_bytes(method.as_str(), path, time, &body));
        self.client
            .request(method, self.url(path))
            .header(AuthHeaders::DEVICE, hex::encode(key.id().0))
            .header(AuthHeaders::TIME, time.to_string())
            .header(AuthHeaders::SIGNATURE, hex::encode(sig))
            .body(body)
            .send()
            .await
    }

    pub async fn signed(
        &self,
        key: &DeviceKey,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.signed_at(key, method, path, body, None)
            .await
            .expect("request sent")
    }

    /// A signed JSON call expected to succeed.
    pub async fn call<T: DeserializeOwned>(
        &self,
        key: &DeviceKey,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> T {
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let resp = self.signed(key, method.clone(), path, bytes).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// A signed JSON call expected to fail: (status, error code).
    pub async fn fail(
        &self,
        key: &DeviceKey,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> (StatusCode, String) {
        error_of(self.signed(key, method, path, body).await).await
    }

    pub async fn clock(&self) -> u64 {
        let c: Clock = self
            .client
            .get(self.url("/v1/clock"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        c.now_ms
    }
}

/// Status and `ErrorBody.code` of a failed response (asserting the shape).
pub async fn error_of(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body: ErrorBody =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not an ErrorBody: {status} {text}"));
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{status} {text}"
    );
    (status, body.code)
}

/// The time for a signed request: strictly increasing within the test
/// process, so two identical requests (two sockets of one device opened in
/// the same millisecond) are two requests, not a replay.
pub fn now_ms() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let prev = LAST.fetch_max(now, Ordering::SeqCst);
    if prev < now {
        now
    } else {
        LAST.fetch_add(1, Ordering::SeqCst) + 1
    }
}

pub const NO_BODY: Option<&()> = None;

/// One device of one user, with its protocol state.
pub struct Dev {
    pub username: String,
    pub device: Device,
}

impl Dev {
    pub fn key(&self) -> &DeviceKey {
        self.device.key()
    }
    pub fn id(&self) -> DeviceId {
        self.device.id()
    }
    pub fn user(&self) -> UserPublic {
        self.device.cert().user
    }
}

pub struct User {
    pub name: String,
    pub key: UserKey,
}

impl User {
    pub fn new(name: &str) -> User {
        User {
            name: name.to_string(),
            key: UserKey::generate(&mut OsRng),
        }
    }

    pub fn hash(&self) -> String {
        hex::encode(username_hash(&self.name))
    }

    /// A new device certified by this user (not yet known to the server).
    pub fn device(&self) -> Dev {
        let key = DeviceKey::generate(&mut OsRng);
        let cert = self.key.certify(&key.public_keys(), now_ms());
        Dev {
            username: self.name.clone(),
            device: Device::new(key, cert).unwrap(),
        }
    }

    /// Registers the user with a first device holding `prekeys` one-time
    /// prekeys.
    pub async fn register(&self, http: &Http, prekeys: u32) -> Dev {
        let mut dev = self.device();
        let req = register_request(self, &mut dev, prekeys);
        let _: serde_json::Value = http
            .call(dev.key(), Method::POST, "/v1/register", Some(&req))
            .await;
        dev
    }
}

impl User {
    /// Links a new device to this user: requested by the new device,
    /// approved by `approver` (which must be a device of this user).
    pub async fn link(&self, http: &Http, approver: &Dev) -> Dev {
        let mut dev = self.device();
        let otks = dev.device.generate_prekeys(&mut OsRng, 3);
        let reserve = dev.device.generate_reserve(&mut OsRng);
        let keys = dev.key().public_keys();
        let req = LinkRequest {
            device: hex::encode(keys.id.0),
            dh: hex::encode(keys.dh),
            proof: hex::encode([0u8; 32]),
            prekeys: otks.iter().map(|p| b64::encode(&p.encode())).collect(),
            reserve: b64::encode(&reserve.encode()),
        };
        let created: LinkCreated = http
            .call(dev.key(), Method::POST, "/v1/link", Some(&req))
            .await;
        let approve = LinkApprove {
            cert: b64::encode(&dev.device.cert().encode()),
            approval: b64::encode(b"sealed"),
        };
        let path = format!("/v1/link/{}/approve", created.link_id);
        let _: serde_json::Value = http
            .call(approver.key(), Method::POST, &path, Some(&approve))
            .await;
        dev
    }
}

/// The body of a test binary's `child_server` test: when `env` names a
/// directory, serves it (printing "READY addr fingerprint") until killed;
/// otherwise returns at once (an ordinary test run).
pub fn child_server(env: &str, retention: Duration) {
    let Ok(dir) = std::env::var(env) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let running = start(Path::new(&dir), retention).await;
        println!("READY {} {}", running.addr, running.fingerprint);
        std::future::pending::<()>().await;
    });
}

/// Kills a child server even when the test fails half-way.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs this test binary's test `test` in a child process with `env` set
/// to `dir`: that test starts a server there, prints "READY addr
/// fingerprint" and waits to be killed (see `durability.rs`).
#[allow(clippy::zombie_processes)] // KillOnDrop waits for it
pub fn spawn_child(test: &str, env: &str, dir: &Path) -> (KillOnDrop, SocketAddr, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("child prints READY").unwrap();
        // libtest may have printed "test child_server ... " on the same line.
        if let Some((_, rest)) = line.split_once("READY ") {
            let (addr, fp) = rest.split_once(' ').unwrap();
            return (KillOnDrop(child), addr.parse().unwrap(), fp.to_string());
        }
    }
}

pub fn register_request(user: &User, dev: &mut Dev, prekeys: u32) -> RegisterRequest {
    let otks = dev.device.generate_prekeys(&mut OsRng, prekeys);
    let reserve = dev.device.generate_reserve(&mut OsRng);
    RegisterRequest {
        username_hash: user.hash(),
        cert: b64::encode(&dev.device.cert().encode()),
        prekeys: otks.iter().map(|p| b64::encode(&p.encode())).collect(),
        reserve: b64::encode(&reserve.encode()),
    }
}

/// Claims bundles of every device of `to`, starts sessions, and seals a
/// text datagram for them.
pub async fn seal_to(http: &Http, from: &mut Dev, to: &User, text: &str) -> Vec<u8> {
    let path = format!("/v1/users/{}/bundles", to.hash());
    let claim: ClaimResponse = http
        .call(
            from.key(),
            Method::POST,
            &path,
            Some(&ClaimRequest::default()),
        )
        .await;
    let mut recipients = Vec::new();
    for b in &claim.bundles {
        let cert = DeviceCert::decode(&b64::decode(&b.cert).unwrap()).unwrap();
        let prekey = SignedPrekey::decode(&b64::decode(&b.prekey).unwrap()).unwrap();
        let verified = PrekeyBundle { cert, prekey }
            .verify(&to.key.public())
            .unwrap();
        from.device.start_session(&mut OsRng, &verified).unwrap();
        recipients.push(cert.device);
    }
    seal_for(from, &recipients, text)
}

/// Seals for devices `from` already has sessions with.
pub fn seal_for(from: &mut Dev, recipients: &[DeviceId], text: &str) -> Vec<u8> {
    let payload = Payload {
        message_id: rand16(),
        conversation: [7; 32],
        sender: from.user(),
        sent_at: now_ms(),
        ttl: 0,
        content_type: content::TEXT,
        body: text.as_bytes().to_vec(),
    };
    from.device.seal(&mut OsRng, &payload, recipients).unwrap()
}

fn rand16() -> [u8; 16] {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b
}

pub async fn send(http: &Http, from: &Dev, datagram: Vec<u8>) -> reqwest::Response {
    http.signed(from.key(), Method::POST, "/v1/messages", datagram)
        .await
}

pub async fn fetch(http: &Http, dev: &Dev) -> MailboxBatch {
    http.call(
        dev.key(),
        Method::GET,
        "/v1/mailbox?after=0&limit=100",
        NO_BODY,
    )
    .await
}

pub fn open_text(dev: &mut Dev, item: &MailboxItem) -> String {
    let opened = dev
        .device
        .open(&b64::decode(&item.datagram).unwrap())
        .unwrap();
    String::from_utf8(opened.payload.body).unwrap()
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the push WebSocket of `dev`.
pub async fn websocket(http: &Http, dev: &Dev) -> Ws {
    try_websocket(http, dev).await.unwrap()
}

/// Tries to open the push WebSocket of `dev`.
pub async fn try_websocket(
    http: &Http,
    dev: &Dev,
) -> std::result::Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("wss://{}/v1/ws", http.addr)
        .into_client_request()
        .unwrap();
    let time = now_ms();
    let sig = dev
        .key()
        .sign(&request_signing_bytes("GET", "/v1/ws", time, b""));
    let h = req.headers_mut();
    h.insert(
        AuthHeaders::DEVICE,
        hex::encode(dev.id().0).parse().unwrap(),
    );
    h.insert(AuthHeaders::TIME, time.to_string().parse().unwrap());
    h.insert(AuthHeaders::SIGNATURE, hex::encode(sig).parse().unwrap());
    let connector = tokio_tungstenite::Connector::Rustls(Arc::new(tls_config(&http.fingerprint)));
    let (ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector)).await?;
    Ok(ws)
}

/// The next `Push` on `ws` (skipping pings), within 10 s.
pub async fn next_push(ws: &mut Ws) -> Push {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a push within 10 s");
        match msg.expect("socket open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Waits until the server closes `ws` (a close frame or the end).
pub async fn closed(ws: &mut Ws) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.to_string())).await.unwrap();
}
