//! HTTP to the server: pinned TLS, signed requests, the master clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sotto_api::{paths, request_signing_bytes, AuthHeaders, Clock, ErrorBody};
use sotto_proto::DeviceKey;

use crate::error::{Error, Result};
use crate::tls::{pinned_config, PinState};

/// A failed request, before the caller gives it a specific meaning.
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Error {
        Error::Server {
            status: e.status.as_u16(),
            code: e.code,
            message: e.message,
        }
    }
}

pub(crate) enum Failure {
    Api(ApiError),
    Other(Error),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::Api(a) => a.into(),
            Failure::Other(e) => e,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Other(e)
    }
}

pub(crate) type ApiResult<T> = std::result::Result<T, Failure>;

/// This machine's wall clock, ms since the Unix epoch: the `now` every
/// input to the device core carries.
pub(crate) fn local_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Validates and normalizes a server URL (https only, no trailing slash).
pub fn normalize_url(url: &str) -> Result<String> {
    let u = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(u).map_err(|_| Error::BadServerUrl(url.to_string()))?;
    if parsed.scheme() != "https"
        || parsed.host_str().is_none()
        || parsed.path() != "/" && !parsed.path().is_empty()
    {
        return Err(Error::BadServerUrl(url.to_string()));
    }
    Ok(u.to_string())
}

pub(crate) struct Api {
    http: reqwest::Client,
    pub base: String,
    pub tls: Arc<rustls::ClientConfig>,
    pin: Arc<Mutex<PinState>>,
    /// Server clock minus local clock, once known.
    offset: Mutex<Option<i64>>,
    /// The time of the last signed request: each is later, so that two
    /// identical requests are two requests (the server refuses a signed
    /// request it has seen as a replay).
    last_signed: Mutex<u64>,
}

impl Api {
    /// `expected`: the pinned fingerprint, or `None` to pin on first contact.
    pub fn new(base: &str, expected: Option<String>) -> Result<Api> {
        let base = normalize_url(base)?;
        let (config, pin) = pinned_config(expected)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(config.clone())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::BadResponse(format!("HTTP client setup: {e}")))?;
        Ok(Api {
            http,
            base,
            tls: Arc::new(config),
            pin,
            offset: Mutex::new(None),
            last_signed: Mutex::new(0),
        })
    }

    /// The fingerprint of the certificate the server presented (pinned).
    pub fn fingerprint(&self) -> Option<String> {
        let st = self.pin.lock().expect("pin");
        st.expected.clone()
    }

    /// Maps a transport failure: a pin mismatch is `CertificateChanged`.
    pub fn transport_error(&self, reason: String) -> Error {
        let st = self.pin.lock().expect("pin");
        if let (Some(presented), Some(pinned)) = (&st.mismatch, &st.expected) {
            return Error::CertificateChanged {
                pinned: pinned.clone(),
                presented: presented.clone(),
            };
        }
        Error::ServerUnreachable {
            url: self.base.clone(),
            reason,
        }
    }

    /// Forgets a previous mismatch before a new request.
    fn reset_mismatch(&self) {
        self.pin.lock().expect("pin").mismatch = None;
    }

    fn map_reqwest(&self, e: reqwest::Error) -> Error {
        let mut reason = e.to_string();
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
        while let Some(s) = src {
            reason = s.to_string();
            src = s.source();
        }
        self.transport_error(reason)
    }

    /// The offset to the master clock (server minus local, ms), measured
    /// against `GET /v1/clock` on first use in this process.
    pub async fn offset(&self) -> Result<i64> {
        let known = *self.offset.lock().expect("offset");
        match known {
            Some(o) => Ok(o),
            None => self.sync_clock().await,
        }
    }

    /// Server time in ms: the local clock corrected by the offset.
    pub async fn now(&self) -> Result<u64> {
        Ok(local_ms().saturating_add_signed(self.offset().await?))
    }

    async fn sync_clock(&self) -> Result<i64> {
        self.reset_mismatch();
        let before = local_ms();
        let resp = self
            .http
            .get(format!("{}{}", self.base, paths::CLOCK))
            .send()
            .await
            .map_err(|e| self.map_reqwest(e))?;
        if !resp.status().is_success() {
            return Err(Error::BadResponse(format!(
                "clock: status {}",
                resp.status()
            )));
        }
        let clock: Clock = resp
            .json()
            .await
            .map_err(|e| Error::BadResponse(format!("clock: {e}")))?;
        let after = local_ms();
        let offset = clock.now_ms as i64 - ((before + after) / 2) as i64;
        *self.offset.lock().expect("offset") = Some(offset);
        Ok(offset)
    }

    /// Headers for a signed request.
    pub async fn auth_headers(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        key: &DeviceKey,
    ) -> Result<[(&'static str, String); 3]> {
        let now = self.now().await?;
        let time = {
            let mut last = self.last_signed.lock().expect("last_signed");
            *last = (*last + 1).max(now);
            *last
        };
        let sig = key.sign(&request_signing_bytes(method, path, time, body));
        Ok([
            (AuthHeaders::DEVICE, hex::encode(key.id().0)),
            (AuthHeaders::TIME, time.to_string()),
            (AuthHeaders::SIGNATURE, hex::encode(sig)),
        ])
    }

    /// One request; the body is JSON (or raw bytes with `raw`). Returns the
    /// answer's bytes on success.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &'static str)>,
        key: Option<&DeviceKey>,
    ) -> ApiResult<Vec<u8>> {
        let url = format!("{}{}", self.base, path);
        self.reset_mismatch();
        let mut req = self.http.request(method.clone(), &url);
        let bytes = body.as_ref().map(|(b, _)| b.clone()).unwrap_or_default();
        if let Some(key) = key {
            for (k, v) in self
                .auth_headers(method.as_str(), path, &bytes, key)
                .await?
            {
                req = req.header(k, v);
            }
        }
        if let Some((b, ctype)) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, ctype).body(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Other(self.map_reqwest(e)))?;
        let status = resp.status();
        let data = resp
            .bytes()
            .await
            .map_err(|e| Failure::Other(self.map_reqwest(e)))?
            .to_vec();
        if status.is_success() {
            return Ok(data);
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&data) {
            Ok(b) => (b.code, b.error),
            Err(_) => (
                String::new(),
                String::from_utf8_lossy(&data).chars().take(200).collect(),
            ),
        };
        Err(Failure::Api(ApiError {
            status,
            code,
            message,
        }))
    }

    /// A JSON request with a JSON answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        key: Option<&DeviceKey>,
    ) -> ApiResult<T> {
        let body = match body {
            Some(b) => Some((
                serde_json::to_vec(b)
                    .map_err(|e| Failure::Other(Error::BadResponse(e.to_string())))?,
                "application/json",
            )),
            None => None,
        };
        let data = self.send(method, path, body, key).await?;
        let data = if data.is_empty() {
            b"null".to_vec()
        } else {
            data
        };
        serde_json::from_slice(&data)
            .map_err(|e| Failure::Other(Error::BadResponse(format!("{path}: {e}"))))
    }
}

/// `None` body for [`Api::call`].
pub(crate) const NO_BODY: Option<&()> = None;
