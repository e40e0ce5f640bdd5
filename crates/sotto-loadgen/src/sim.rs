//! Simulated devices: one user with one device each, registered through the
//! API with a real certificate and real signed prekeys, and real sessions
//! started from claimed prekey bundles.

use rand_core::OsRng;
use reqwest::Method;
use sotto_api::{b64, ClaimRequest, ClaimResponse, RegisterRequest};
use sotto_proto::{
    DeviceCert, DeviceId, DeviceKey, PrekeyBundle, SignedPrekey, UserKey, UserPublic,
};

use crate::net::{Api, Result};

pub struct SimDevice {
    pub name: String,
    pub username_hash: [u8; 32],
    pub user: UserPublic,
    pub device: sotto_proto::Device,
}

impl SimDevice {
    pub fn id(&self) -> DeviceId {
        self.device.id()
    }

    pub fn key(&self) -> &DeviceKey {
        self.device.key()
    }
}

/// Creates the keys of a new user with one device and the body of its
/// registration (`one_time` one-time prekeys and a reserve).
pub fn new_device(name: &str, one_time: u32, now_ms: u64) -> Result<(SimDevice, RegisterRequest)> {
    let mut rng = OsRng;
    let user = UserKey::generate(&mut rng);
    let key = DeviceKey::generate(&mut rng);
    let cert = user.certify(&key.public_keys(), now_ms);
    let mut device = sotto_proto::Device::new(key, cert).map_err(|e| format!("device: {e}"))?;
    let prekeys = device.generate_prekeys(&mut rng, one_time);
    let reserve = device.generate_reserve(&mut rng);
    device.take_changes();
    let username_hash = sotto_api::username_hash(name);
    let req = RegisterRequest {
        username_hash: hex::encode(username_hash),
        cert: b64::encode(&cert.encode()),
        prekeys: prekeys.iter().map(|p| b64::encode(&p.encode())).collect(),
        reserve: b64::encode(&reserve.encode()),
    };
    Ok((
        SimDevice {
            name: name.to_string(),
            username_hash,
            user: user.public(),
            device,
        },
        req,
    ))
}

/// Creates and registers a device (`POST /v1/register`, signed by it).
pub async fn register(api: &Api, name: &str, one_time: u32) -> Result<SimDevice> {
    let (dev, req) = new_device(name, one_time, api.server_now_ms())?;
    let _: serde_json::Value = api
        .json(
            dev.key(),
            Method::POST,
            sotto_api::paths::REGISTER,
            Some(&req),
        )
        .await?;
    Ok(dev)
}

/// Claims a prekey bundle of `peer`'s device, verifies the chain against
/// the user key we know for it, and starts a session.
pub async fn start_session(
    api: &Api,
    me: &mut SimDevice,
    peer_hash: &[u8; 32],
    peer_user: &UserPublic,
) -> Result<()> {
    let path = sotto_api::paths::bundles(peer_hash);
    let claim: ClaimResponse = api
        .json(
            me.key(),
            Method::POST,
            &path,
            Some(&ClaimRequest::default()),
        )
        .await?;
    let b = claim
        .bundles
        .first()
        .ok_or_else(|| format!("{path}: no bundle"))?;
    let cert = DeviceCert::decode(&b64::decode(&b.cert).ok_or("bundle cert: bad base64")?)
        .map_err(|e| format!("bundle cert: {e}"))?;
    let prekey = SignedPrekey::decode(&b64::decode(&b.prekey).ok_or("bundle prekey: bad base64")?)
        .map_err(|e| format!("bundle prekey: {e}"))?;
    let verified = PrekeyBundle { cert, prekey }
        .verify(peer_user)
        .map_err(|e| format!("bundle: {e}"))?;
    me.device
        .start_session(&mut OsRng, &verified)
        .map_err(|e| format!("session: {e}"))?;
    me.device.take_changes();
    Ok(())
}
