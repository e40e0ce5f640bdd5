//! Carrying out the device core's requests against the server: each
//! [`Request`] is one HTTP call (docs/api.md), its answer a [`Response`].
//! An answer the core can act on (no such user, blocked, expired link) is a
//! response; anything else (network, TLS, an unexpected status) is this
//! crate's error, and the core is told the request failed.

use reqwest::{Method, StatusCode};
use sotto_api::{
    b64, codes, hex32, paths, Ack, Block, ClaimRequest, ClaimResponse, LinkApprove, LinkRequest,
    PrekeyStatus, PrekeyUpload, RemoveDevice, UserDevices,
};
use sotto_device::{
    Directory, EncodedBundle, FromOutput, LinkWaiting, Lookup, Op, OutgoingRequest, PrekeyCount,
    Request, Response,
};
use sotto_proto::{DeviceId, SignedPrekey, UserPublic};

use crate::net::{local_ms, ApiResult, Failure, NO_BODY};
use crate::{Client, Error, Result};

/// Prekeys as the API carries them (base64 of each encoding).
pub(crate) fn b64_prekeys(prekeys: &[SignedPrekey]) -> Vec<String> {
    prekeys.iter().map(|p| b64::encode(&p.encode())).collect()
}

/// A directory answer, its key parsed.
fn directory(ud: UserDevices) -> Result<Directory> {
    let user = hex32(&ud.user)
        .map(UserPublic)
        .ok_or_else(|| Error::BadResponse("user key is not hex".into()))?;
    Ok(Directory {
        user,
        devices: ud.devices.iter().filter_map(|d| b64::decode(d)).collect(),
        organisation: ud.organisation.clone(),
    })
}

/// The directory's entry for username hash `hash` (`None`: no such user),
/// asked as the device of `key`.
pub(crate) async fn lookup_user(
    api: &crate::net::Api,
    hash: &[u8; 32],
    key: Option<&sotto_proto::DeviceKey>,
) -> Result<Option<Directory>> {
    let r = api
        .call(Method::GET, &paths::user(hash), NO_BODY, key)
        .await;
    let found: Option<UserDevices> = unless(r, StatusCode::NOT_FOUND, None)?;
    found.map(directory).transpose()
}

/// `Ok(None)` for the given status (and code, if any): a "no" the core
/// understands.
fn unless<T>(r: ApiResult<T>, status: StatusCode, code: Option<&str>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Failure::Api(e))
            if e.status == status && (code.is_none() || code == Some(e.code.as_str())) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

impl Client {
    /// One request to the server.
    async fn execute(&self, request: &Request) -> Result<Response> {
        let api = self.api()?;
        let key = Some(self.core.device().key());
        Ok(match request {
            Request::Lookup(Lookup::User(h)) => Response::User(lookup_user(api, h, key).await?),
            Request::Lookup(Lookup::Own) => {
                let ud: UserDevices = api.call(Method::GET, paths::DEVICES, NO_BODY, key).await?;
                Response::User(Some(directory(ud)?))
            }
            Request::Claim { user, devices } => {
                let body = ClaimRequest {
                    devices: devices.iter().map(|d| hex::encode(d.0)).collect(),
                };
                let r = api
                    .call(Method::POST, &paths::bundles(user), Some(&body), key)
                    .await;
                let claimed: Option<ClaimResponse> =
                    unless(r, StatusCode::NOT_FOUND, Some(codes::UNKNOWN_USER))?;
                Response::Bundles(claimed.map(|c| {
                    c.bundles
                        .iter()
                        .filter_map(|b| {
                            Some(EncodedBundle {
                                cert: b64::decode(&b.cert)?,
                                prekey: b64::decode(&b.prekey)?,
                            })
                        })
                        .collect()
                }))
            }
            Request::Post { datagram, .. } => {
                let body = Some((datagram.clone(), "application/octet-stream"));
                let r = api.send(Method::POST, paths::MESSAGES, body, key).await;
                match unless(r, StatusCode::FORBIDDEN, Some(codes::BLOCKED))? {
                    Some(_) => Response::Posted,
                    None => Response::Blocked,
                }
            }
            Request::Ack(tags) => {
                let ack = Ack {
                    seqs: tags.iter().map(|t| t.0).collect(),
                };
                let _: serde_json::Value = api
                    .call(Method::POST, paths::MAILBOX_ACK, Some(&ack), key)
                    .await?;
                Response::Done
            }
            Request::Fetch { datagram_id } => {
                // Not retained, or not this user's to read: the same to the
                // core (the grant cannot be used).
                match api
                    .send(Method::GET, &paths::datagram(datagram_id), None, key)
                    .await
                {
                    Ok(bytes) => Response::Datagram(Some(bytes)),
                    Err(Failure::Api(_)) => Response::Datagram(None),
                    Err(e) => return Err(e.into()),
                }
            }
            Request::PrekeyStatus => {
                let s: PrekeyStatus = api.call(Method::GET, paths::PREKEYS, NO_BODY, key).await?;
                Response::Prekeys(PrekeyCount {
                    one_time: s.one_time,
                    reserve_served: s.reserve_served,
                })
            }
            Request::UploadPrekeys { one_time, reserve } => {
                let body = PrekeyUpload {
                    prekeys: b64_prekeys(one_time),
                    reserve: reserve.as_ref().map(|p| b64::encode(&p.encode())),
                };
                let _: PrekeyStatus = api
                    .call(Method::POST, paths::PREKEYS, Some(&body), key)
                    .await?;
                Response::Done
            }
            Request::ReadLink { link_id } => {
                let r = api
                    .call(Method::GET, &paths::link(link_id), NO_BODY, key)
                    .await;
                let waiting: Option<LinkRequest> = unless(r, StatusCode::NOT_FOUND, None)?;
                Response::LinkRequest(
                    waiting
                        .map(|w| {
                            let device = hex32(&w.device).map(DeviceId);
                            let dh = hex32(&w.dh);
                            let proof = hex32(&w.proof);
                            match (device, dh, proof) {
                                (Some(device), Some(dh), Some(proof)) => {
                                    Ok(LinkWaiting { device, dh, proof })
                                }
                                _ => {
                                    Err(Error::BadResponse("link request keys are not hex".into()))
                                }
                            }
                        })
                        .transpose()?,
                )
            }
            Request::ApproveLink {
                link_id,
                cert,
                approval,
            } => {
                let body = LinkApprove {
                    cert: b64::encode(&cert.encode()),
                    approval: b64::encode(approval),
                };
                let r = api
                    .call(
                        Method::POST,
                        &paths::link_approve(link_id),
                        Some(&body),
                        key,
                    )
                    .await;
                let done: Option<serde_json::Value> = unless(r, StatusCode::NOT_FOUND, None)?;
                done.map_or(Response::LinkGone, |_| Response::Done)
            }
            Request::Block { user } => {
                let body = Block {
                    username_hash: hex::encode(user),
                };
                let _: serde_json::Value = api
                    .call(Method::POST, paths::BLOCKS, Some(&body), key)
                    .await?;
                Response::Done
            }
            Request::Unblock { user } => {
                let _: serde_json::Value = api
                    .call(Method::DELETE, &paths::block(user), NO_BODY, key)
                    .await?;
                Response::Done
            }
            Request::RemoveDevice {
                device,
                time_ms,
                signature,
            } => {
                let body = RemoveDevice {
                    time_ms: *time_ms,
                    signature: b64::encode(signature),
                };
                let r = api
                    .call(Method::DELETE, &paths::device(&device.0), Some(&body), key)
                    .await;
                let removed: Option<serde_json::Value> =
                    unless(r, StatusCode::NOT_FOUND, Some(codes::UNKNOWN_DEVICE))?;
                match removed {
                    Some(_) => Response::Done,
                    None => Response::UnknownDevice,
                }
            }
        })
    }

    /// Carries out one request and reports its answer to the core.
    async fn step(&mut self, req: OutgoingRequest) -> Result<()> {
        match self.execute(&req.request).await {
            Ok(response) => {
                self.core.handle_response(local_ms(), req.id, response);
                Ok(())
            }
            Err(e) => {
                self.core.fail_request(local_ms(), req.id);
                Err(e)
            }
        }
    }

    /// Carries out requests until the core has none left.
    pub(crate) async fn drain(&mut self) -> Result<()> {
        while let Some(req) = self.core.poll_request() {
            self.step(req).await?;
        }
        Ok(())
    }

    /// Carries out requests until `op` finished (and whatever it left
    /// queued); its result.
    pub(crate) async fn run<T: FromOutput>(&mut self, op: Op<T>) -> Result<T> {
        loop {
            if let Some(r) = self.core.take_result(&op) {
                self.drain().await?;
                return Ok(r?);
            }
            let Some(req) = self.core.poll_request() else {
                return Err(Error::BadResponse(
                    "internal: an operation waits for no request".into(),
                ));
            };
            if let Err(e) = self.step(req).await {
                let _ = self.core.take_result(&op);
                return Err(e);
            }
        }
    }
}
