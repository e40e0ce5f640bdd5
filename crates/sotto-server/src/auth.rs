//! Request authentication: every request is signed by a device key (no
//! passwords, no sessions). [`Signed`] checks the signature and the time;
//! [`Caller`] also requires the device to be registered.
//!
//! A signed request could be replayed within the clock-skew window, so
//! every request that changes state (any method but GET, and the WebSocket
//! upgrade, whose socket can acknowledge) is single-use: its id, a hash of
//! the device and the signed bytes, is remembered in the store until the
//! window is over (in the store, so a replay to another node sharing the
//! database is refused too), and a second use is 409 `replayed`. A send
//! (`POST /v1/messages`, the hot path) hands its id to the transaction that
//! stores the datagram instead ([`Caller::once`]): one writer job per send.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, Uri};
use sha2::{Digest, Sha256};
use sotto_api::{codes, hex32, request_signing_bytes, AuthHeaders, CLOCK_SKEW_MS};
use sotto_proto::{verify_device_signature, DeviceId};
use sotto_store::server::{DeviceRecord, RequestId};
use tower_http::timeout::TimeoutBody;

use crate::api::ApiError;
use crate::state::{answer, now_ms, AppState};
use sotto_api::paths;

/// A request whose signature verifies under `device`.
pub(crate) struct Signed {
    pub device: DeviceId,
    pub body: Bytes,
}

/// A signed request from a registered device.
pub(crate) struct Caller {
    pub device: DeviceRecord,
    pub uri: Uri,
    pub body: Bytes,
    /// A send's request id, not yet remembered: the handler must pass it
    /// to the store call that writes (see the module doc). `None` for
    /// every other request (checked already, or a read).
    pub once: Option<RequestId>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized(format!("missing or invalid {name} header")))
}

/// Reads the body within the route's limit, mapping failures to API
/// errors. A body that stops arriving for `Limits::body_timeout` fails the
/// read (408), and the connection closes. (Only here, where bodies are
/// read: a request that reads none pays for no timer.)
pub(crate) async fn read_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let timeout = state.limits.body_timeout;
    let req = req.map(|body| Body::new(TimeoutBody::new(timeout, body)));
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::TOO_LARGE,
                "request body is too large",
            )
        } else {
            // The body stopped arriving (the body timeout) or the
            // connection broke; either way the connection is closed after.
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                codes::TIMEOUT,
                format!("the request body did not arrive in time: {rejection}"),
            )
        }
    })
}

/// Checks the auth headers and the signature. With `registered`, the
/// device must be registered, and that is checked before the body is read:
/// cheap refusals first, so only a registered device with current headers
/// can make the server buffer a large body.
/// What [`authenticate`] found: the device, its record when asked for,
/// the URI, the body and a deferred request id.
type Authenticated = (
    DeviceId,
    Option<DeviceRecord>,
    Uri,
    Bytes,
    Option<RequestId>,
);

async fn authenticate(
    req: Request,
    state: &AppState,
    registered: bool,
) -> Result<Authenticated, ApiError> {
    let method = req.method().as_str().to_owned();
    let uri = req.uri().clone();
    let headers = req.headers();
    let device = DeviceId(
        hex32(header(headers, AuthHeaders::DEVICE)?)
            .ok_or_else(|| ApiError::unauthorized("x-sotto-device is not a hex device id"))?,
    );
    let time: u64 = header(headers, AuthHeaders::TIME)?
        .parse()
        .map_err(|_| ApiError::unauthorized("x-sotto-time is not a number of milliseconds"))?;
    let mut signature = [0u8; 64];
    hex::decode_to_slice(header(headers, AuthHeaders::SIGNATURE)?, &mut signature)
        .map_err(|_| ApiError::unauthorized("x-sotto-signature is not a hex signature"))?;
    if now_ms().abs_diff(time) > CLOCK_SKEW_MS {
        return Err(ApiError::unauthorized(
            "request time is more than 5 minutes from the server clock (see GET /v1/clock)",
        ));
    }
    let record = if registered {
        Some(registered_device(state, device).await?)
    } else {
        None
    };
    let body = read_body(req, state).await?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let signed = request_signing_bytes(&method, path, time, &body);
    verify_device_signature(&device, &signed, &signature)
        .map_err(|_| ApiError::unauthorized("bad request signature"))?;
    let mut once = None;
    if method != "GET" || uri.path() == paths::WS {
        let id = request_id(&device, &signed, time);
        if uri.path() == paths::MESSAGES {
            once = Some(id);
        } else {
            answer(state.submit(move |s, reply| s.single_use(&id.id, id.expires_at, reply)))
                .await?;
        }
    }
    Ok((device, record, uri, body, once))
}

/// The id of a signed request, remembered until it could no longer pass
/// the time check.
fn request_id(device: &DeviceId, signed: &[u8], time: u64) -> RequestId {
    let mut h = Sha256::new();
    h.update(b"sotto/server/request-id\0");
    h.update(device.0);
    h.update(signed);
    RequestId {
        id: h.finalize().into(),
        expires_at: time.saturating_add(CLOCK_SKEW_MS).saturating_add(1),
    }
}

pub(crate) async fn registered_device(
    state: &AppState,
    device: DeviceId,
) -> Result<DeviceRecord, ApiError> {
    if let Some(record) = state.cached_device(&device) {
        return Ok(record);
    }
    let record = state
        .db(move |s| s.device(&device))
        .await?
        .ok_or_else(|| ApiError::unauthorized("this device is not registered"))?;
    state.cache_device(record.clone());
    Ok(record)
}

impl FromRequest<AppState> for Signed {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Signed, ApiError> {
        let (device, _, _, body, _) = authenticate(req, state, false).await?;
        Ok(Signed { device, body })
    }
}

impl FromRequest<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Caller, ApiError> {
        let (_, record, uri, body, once) = authenticate(req, state, true).await?;
        let device = record.expect("authenticate returns the record when asked");
        Ok(Caller {
            device,
            uri,
            body,
            once,
        })
    }
}
