//! Sockets: TLS with a pinned (or, on loopback, any) server certificate,
//! signed HTTP requests and the signed WebSocket upgrade, as in docs/api.md.

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use sotto_api::{paths, request_signing_bytes, AuthHeaders};
use sotto_proto::DeviceKey;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type Result<T> = std::result::Result<T, String>;

/// How the server certificate is checked.
#[derive(Clone, Debug)]
pub enum CertCheck {
    /// SHA-256 of the server's DER certificate must equal this.
    Pinned([u8; 32]),
    /// Any certificate (only ever used with a loopback target): the first
    /// one presented is pinned for the run.
    AnyOnLoopback,
}

/// Parses a SHA-256 fingerprint ([`sotto_api::pin::parse_fingerprint`]).
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32]> {
    sotto_api::pin::parse_fingerprint(s)
        .and_then(|hex| sotto_api::hex32(&hex))
        .ok_or_else(|| format!("bad fingerprint {s:?}: want the SHA-256 of the certificate in hex"))
}

/// A rustls client configuration that checks the server certificate as
/// told, with the verifier the client uses ([`sotto_api::pin`]).
pub fn tls_config(check: CertCheck) -> Result<Arc<rustls::ClientConfig>> {
    let expected = match check {
        CertCheck::Pinned(fp) => Some(hex::encode(fp)),
        CertCheck::AnyOnLoopback => None,
    };
    let (cfg, _) = sotto_api::pin::pinned_config(expected).map_err(|e| format!("tls: {e}"))?;
    Ok(Arc::new(cfg))
}

/// Refuses any target that does not resolve to loopback addresses only.
pub fn check_loopback(host: &str, port: u16) -> Result<()> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {host}: {e}"))?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty() || !addrs.iter().all(|ip| ip.is_loopback()) {
        return Err(format!("refusing non-loopback target {host} ({addrs:?})"));
    }
    Ok(())
}

/// Splits `https://host:port` into (host, port), refusing anything else.
pub fn parse_server(url: &str) -> Result<(String, u16)> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("--server must be https://HOST:PORT, got {url}"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains(']') => (
            &rest[..i],
            rest[i + 1..]
                .parse()
                .map_err(|_| format!("bad port in {url}"))?,
        ),
        _ => (rest, 443),
    };
    Ok((host.to_string(), port))
}

/// An error with its chain of causes (reqwest hides the TLS reason in it).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// ms since the Unix epoch by this machine's clock.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The three authentication headers for one request.
pub fn auth_headers(
    key: &DeviceKey,
    method: &str,
    path_and_query: &str,
    time_ms: u64,
    body: &[u8],
) -> HeaderMap {
    let sig = key.sign(&request_signing_bytes(
        method,
        path_and_query,
        time_ms,
        body,
    ));
    let mut h = HeaderMap::with_capacity(4);
    h.insert(
        AuthHeaders::DEVICE,
        HeaderValue::from_str(&hex::encode(key.id().0)).expect("hex"),
    );
    h.insert(AuthHeaders::TIME, HeaderValue::from(time_ms));
    h.insert(
        AuthHeaders::SIGNATURE,
        HeaderValue::from_str(&hex::encode(sig)).expect("hex"),
    );
    h
}

/// The server's API over one reqwest client (a pool of HTTP/1.1
/// connections over TLS).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    /// server clock minus local clock, ms.
    pub clock_offset_ms: i64,
}

impl Api {
    pub fn new(base: &str, tls: Arc<rustls::ClientConfig>, pool: usize) -> Result<Api> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .pool_max_idle_per_host(pool.max(1))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            http,
            clock_offset_ms: 0,
        })
    }

    /// The server's time estimate: local clock plus the measured offset.
    pub fn server_now_ms(&self) -> u64 {
        (wall_ms() as i64 + self.clock_offset_ms) as u64
    }

    /// `GET /v1/clock` (also used to warm up connections).
    pub async fn clock(&self) -> Result<u64> {
        let r = self
            .http
            .get(format!("{}{}", self.base, paths::CLOCK))
            .send()
            .await
            .map_err(|e| format!("GET /v1/clock: {}", chain(&e)))?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| format!("GET /v1/clock: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "GET /v1/clock: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let c: sotto_api::Clock =
            serde_json::from_slice(&body).map_err(|e| format!("GET /v1/clock: {e}"))?;
        Ok(c.now_ms)
    }

    pub async fn sync_clock(&mut self) -> Result<()> {
        let before = wall_ms();
        let server = self.clock().await?;
        let after = wall_ms();
        self.clock_offset_ms = server as i64 - ((before + after) / 2) as i64;
        Ok(())
    }

    /// Opens up to `n` pooled connections (TLS handshakes done before any
    /// timed phase).
    pub async fn warm_up(&self, n: usize) -> Result<()> {
        let mut hs = Vec::with_capacity(n);
        for _ in 0..n {
            let me = self.clone();
            hs.push(tokio::spawn(async move { me.clock().await }));
        }
        for h in hs {
            h.await.map_err(|e| e.to_string())??;
        }
        Ok(())
    }

    /// One signed request; returns the status and the body.
    pub async fn signed(
        &self,
        key: &DeviceKey,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Result<(StatusCode, Vec<u8>)> {
        let headers = auth_headers(
            key,
            method.as_str(),
            path_and_query,
            self.server_now_ms(),
            &body,
        );
        let mut req = self
            .http
            .request(method.clone(), format!("{}{}", self.base, path_and_query))
            .headers(headers);
        if !body.is_empty() || method == Method::POST {
            req = req.header(CONTENT_TYPE, content_type).body(body);
        }
        let r = req
            .send()
            .await
            .map_err(|e| format!("{method} {path_and_query}: {}", chain(&e)))?;
        let status = r.status();
        let body = r
            .bytes()
            .await
            .map_err(|e| format!("{method} {path_and_query}: {e}"))?;
        Ok((status, body.to_vec()))
    }

    /// A signed JSON request that must succeed; the answer parsed.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        key: &DeviceKey,
        method: Method,
        path_and_query: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T> {
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let (status, answer) = self
            .signed(
                key,
                method.clone(),
                path_and_query,
                bytes,
                "application/json",
            )
            .await?;
        if !status.is_success() {
            return Err(format!(
                "{method} {path_and_query}: {status} {}",
                String::from_utf8_lossy(&answer)
            ));
        }
        let answer = if answer.is_empty() {
            b"null".to_vec()
        } else {
            answer
        };
        serde_json::from_slice(&answer)
            .map_err(|e| format!("{method} {path_and_query}: bad answer: {e}"))
    }

    /// The signed WebSocket upgrade to `GET /v1/ws`.
    pub async fn websocket(&self, key: &DeviceKey, tls: Arc<rustls::ClientConfig>) -> Result<Ws> {
        let url = format!(
            "{}{}",
            self.base.replacen("https://", "wss://", 1),
            paths::WS
        );
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("ws request: {e}"))?;
        for (k, v) in auth_headers(key, "GET", paths::WS, self.server_now_ms(), b"").iter() {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let connector = tokio_tungstenite::Connector::Rustls(tls);
        let (ws, _resp) =
            tokio_tungstenite::connect_async_tls_with_config(req, None, true, Some(connector))
                .await
                .map_err(|e| format!("GET /v1/ws: {}", chain(&e)))?;
        Ok(ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_common_spellings() {
        let hex64 = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&hex64).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert_eq!(
            parse_fingerprint(&format!("sha256:{hex64}")).unwrap(),
            [0xab; 32]
        );
        assert!(parse_fingerprint("abcd").is_err());
    }

    #[test]
    fn only_loopback_targets() {
        assert!(check_loopback("127.0.0.1", 7443).is_ok());
        assert!(check_loopback("localhost", 7443).is_ok());
        assert!(check_loopback("10.0.0.1", 7443).is_err());
        assert_eq!(
            parse_server("https://127.0.0.1:7443").unwrap(),
            ("127.0.0.1".into(), 7443)
        );
        assert!(parse_server("http://127.0.0.1:7443").is_err());
    }
}
