//! Decoders of request bodies as the server receives them: untrusted
//! bytes in, typed and checked values out (certificates and prekeys
//! verified, ids parsed, counts bounded), or a [`BodyError`] that says what
//! is wrong. Total and bounded: no input makes them panic or allocate more
//! than the input's size suggests (the JSON body itself is capped by the
//! server). The server's handlers call these, and so do the fuzz targets
//! (`crates/sotto-fuzz`).

use serde::de::DeserializeOwned;
use sotto_proto::link::MAX_SEALED_APPROVAL;
use sotto_proto::{DeviceCert, DeviceId, PrekeyKind, SignedPrekey};

use crate::{
    b64, hex32, Ack, Block, ClaimRequest, LinkApprove, LinkRequest, PrekeyUpload, RegisterRequest,
    RemoveDevice,
};

/// Most one-time prekeys in one upload (registration, link, refill).
pub const MAX_UPLOAD: usize = 1000;
/// Most sequence numbers in one acknowledgement.
pub const MAX_ACK: usize = 10_000;
/// Most devices named in one claim.
pub const MAX_CLAIM_DEVICES: usize = 1000;

/// Why a body was refused (the server answers 400 with this text).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("invalid JSON body: {0}")]
    Json(String),
    #[error("{field} must be {expected}")]
    Field {
        field: &'static str,
        expected: &'static str,
    },
    #[error("certificate: {0}")]
    Certificate(sotto_proto::Error),
    #[error("prekey: {0}")]
    Prekey(sotto_proto::Error),
    #[error("prekey {id} has the wrong kind")]
    PrekeyKind { id: u32 },
    #[error("prekey {id}: {error}")]
    PrekeySignature { id: u32, error: sotto_proto::Error },
    #[error("at most {max} {what} per request")]
    TooMany { what: &'static str, max: usize },
}

type Result<T> = std::result::Result<T, BodyError>;

/// Verified prekeys as the store takes them: one-time prekeys and the
/// reserve, each as (id, encoded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pool {
    pub one_time: Vec<(u32, Vec<u8>)>,
    pub reserve: Option<(u32, Vec<u8>)>,
}

/// A JSON body of type `T`.
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))
}

/// A 32-byte value in hex (device ids, username hashes, datagram ids).
pub fn hex_id(field: &'static str, s: &str) -> Result<[u8; 32]> {
    hex32(s).ok_or(BodyError::Field {
        field,
        expected: "64 hex characters",
    })
}

/// A b64 certificate whose user signature verifies, with its bytes.
pub fn cert(s: &str) -> Result<(DeviceCert, Vec<u8>)> {
    let bytes = b64::decode(s).ok_or(BodyError::Field {
        field: "cert",
        expected: "base64",
    })?;
    let cert = DeviceCert::decode(&bytes).map_err(BodyError::Certificate)?;
    cert.verify().map_err(BodyError::Certificate)?;
    Ok((cert, bytes))
}

/// A b64 prekey of `kind` signed by `device`: (id, encoded).
fn prekey(device: &DeviceId, s: &str, kind: PrekeyKind) -> Result<(u32, Vec<u8>)> {
    let bytes = b64::decode(s).ok_or(BodyError::Field {
        field: "prekey",
        expected: "base64",
    })?;
    let prekey = SignedPrekey::decode(&bytes).map_err(BodyError::Prekey)?;
    if prekey.kind != kind {
        return Err(BodyError::PrekeyKind { id: prekey.id });
    }
    prekey
        .verify(device)
        .map_err(|error| BodyError::PrekeySignature {
            id: prekey.id,
            error,
        })?;
    Ok((prekey.id, bytes))
}

/// One-time prekeys and an optional reserve, all signed by `device`.
pub fn pool(device: &DeviceId, prekeys: &[String], reserve: Option<&str>) -> Result<Pool> {
    if prekeys.len() > MAX_UPLOAD {
        return Err(BodyError::TooMany {
            what: "prekeys",
            max: MAX_UPLOAD,
        });
    }
    Ok(Pool {
        one_time: prekeys
            .iter()
            .map(|p| prekey(device, p, PrekeyKind::OneTime))
            .collect::<Result<_>>()?,
        reserve: reserve
            .map(|r| prekey(device, r, PrekeyKind::Reserve))
            .transpose()?,
    })
}

/// `POST /v1/register`.
pub struct Register {
    pub username_hash: [u8; 32],
    pub cert: DeviceCert,
    pub cert_bytes: Vec<u8>,
    pub pool: Pool,
}

pub fn register(body: &[u8]) -> Result<Register> {
    let req: RegisterRequest = json(body)?;
    let username_hash = hex_id("username_hash", &req.username_hash)?;
    let (cert, cert_bytes) = cert(&req.cert)?;
    let pool = pool(&cert.device, &req.prekeys, Some(&req.reserve))?;
    Ok(Register {
        username_hash,
        cert,
        cert_bytes,
        pool,
    })
}

/// `POST /v1/link` (also what the server keeps and serves back).
pub struct Link {
    pub request: LinkRequest,
    pub device: DeviceId,
    pub dh: [u8; 32],
    /// The new device's MAC under the link code's secret (the server
    /// cannot check it; the approving device does).
    pub proof: [u8; 32],
}

/// The link request's shape and ids; [`link_pool`] verifies its prekeys.
pub fn link(body: &[u8]) -> Result<Link> {
    let request: LinkRequest = json(body)?;
    let device = DeviceId(hex_id("device", &request.device)?);
    let dh = hex_id("dh", &request.dh)?;
    let proof = hex_id("proof", &request.proof)?;
    Ok(Link {
        request,
        device,
        dh,
        proof,
    })
}

/// The prekeys of a link request, verified against its device.
pub fn link_pool(link: &Link) -> Result<Pool> {
    pool(
        &link.device,
        &link.request.prekeys,
        Some(&link.request.reserve),
    )
}

/// `POST /v1/link/{id}/approve`.
pub struct Approve {
    /// The new device's certificate (its user signature verified).
    pub cert: DeviceCert,
    pub cert_bytes: Vec<u8>,
    /// The sealed approval, opaque to the server.
    pub approval: Vec<u8>,
}

/// `POST /v1/link/{id}/approve`: the new device's certificate and the
/// sealed approval (bounded by [`MAX_SEALED_APPROVAL`]).
pub fn link_approve(body: &[u8]) -> Result<Approve> {
    let approve: LinkApprove = json(body)?;
    let (cert, cert_bytes) = cert(&approve.cert)?;
    if approve.approval.len() > MAX_SEALED_APPROVAL.div_ceil(3) * 4 {
        return Err(BodyError::TooMany {
            what: "approval bytes",
            max: MAX_SEALED_APPROVAL,
        });
    }
    let approval = b64::decode(&approve.approval)
        .filter(|a| !a.is_empty() && a.len() <= MAX_SEALED_APPROVAL)
        .ok_or(BodyError::Field {
            field: "approval",
            expected: "base64 of 1 to 524288 bytes",
        })?;
    Ok(Approve {
        cert,
        cert_bytes,
        approval,
    })
}

/// `POST /v1/users/{h}/bundles`: the devices named (all when empty; an
/// empty body is an empty request).
pub fn claim(body: &[u8]) -> Result<Vec<DeviceId>> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let req: ClaimRequest = json(body)?;
    if req.devices.len() > MAX_CLAIM_DEVICES {
        return Err(BodyError::TooMany {
            what: "devices",
            max: MAX_CLAIM_DEVICES,
        });
    }
    req.devices
        .iter()
        .map(|d| hex_id("device id", d).map(DeviceId))
        .collect()
}

/// `POST /v1/prekeys`: a refill of `device`'s pool.
pub fn prekey_upload(device: &DeviceId, body: &[u8]) -> Result<Pool> {
    let upload: PrekeyUpload = json(body)?;
    pool(device, &upload.prekeys, upload.reserve.as_deref())
}

/// `POST /v1/mailbox/ack` and the WebSocket's ack frames.
pub fn ack(body: &[u8]) -> Result<Vec<u64>> {
    let ack: Ack = json(body)?;
    if ack.seqs.len() > MAX_ACK {
        return Err(BodyError::TooMany {
            what: "sequence numbers",
            max: MAX_ACK,
        });
    }
    Ok(ack.seqs)
}

/// `POST /v1/blocks`: the username hash to block.
pub fn block(body: &[u8]) -> Result<[u8; 32]> {
    let block: Block = json(body)?;
    hex_id("username_hash", &block.username_hash)
}

/// `DELETE /v1/devices/{id}`: (time, user-key signature).
pub fn remove_device(body: &[u8]) -> Result<(u64, [u8; 64])> {
    let req: RemoveDevice = json(body)?;
    let sig = b64::decode(&req.signature)
        .and_then(|s| <[u8; 64]>::try_from(s).ok())
        .ok_or(BodyError::Field {
            field: "signature",
            expected: "a base64 Ed25519 signature",
        })?;
    Ok((req.time_ms, sig))
}
