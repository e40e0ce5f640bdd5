//! Setting up a device: registering a new user, opening an existing home,
//! the accessors, and the device state every state-changing operation
//! starts from (the home lock, then a reload of what another process may
//! have changed).

use std::path::Path;

use rand_core::OsRng;
use reqwest::{Method, StatusCode};
use sotto_api::{b64, codes, username_hash, RegisterRequest};
use sotto_proto::{Device, DeviceCert, DeviceKey, PrekeySecret, Session, UserKey};
use sotto_store::client::{Account, ClientStore};

use crate::lock::{Guard, HomeLock};
use crate::net::{Api, ApiResult, Failure};
use crate::prekeys::generate_prekeys;
use crate::{check_username, parse_fingerprint, Client, Error, Result, PREKEY_BATCH};

/// Opens the store in `home`, or creates it; refuses a home that already
/// holds an account.
pub(crate) fn store_or_create(home: &Path, passphrase: &str) -> Result<ClientStore> {
    let store = if ClientStore::exists(home) {
        ClientStore::open(home, passphrase)?
    } else {
        ClientStore::create(home, passphrase)?
    };
    if store.account()?.is_some() {
        return Err(Error::AlreadyRegistered(home.to_path_buf()));
    }
    Ok(store)
}

/// Restores the device (keys, prekeys, sessions) that `store` holds for
/// `account`.
fn load_device(store: &ClientStore, account: &Account) -> Result<Device> {
    let key = DeviceKey::from_bytes(&account.device_key);
    let cert = DeviceCert::decode(&account.device_cert)?;
    let prekeys = store
        .prekeys()?
        .iter()
        .map(|b| PrekeySecret::from_bytes(b))
        .collect::<sotto_proto::Result<Vec<_>>>()?;
    let sessions = store
        .sessions()?
        .iter()
        .map(|b| Session::from_bytes(b))
        .collect::<sotto_proto::Result<Vec<_>>>()?;
    Ok(Device::restore(
        key,
        cert,
        prekeys,
        sessions,
        account.next_prekey_id,
    )?)
}

impl Client {
    /// A client over an open store and its device; locks `store.home()`.
    pub(crate) fn assemble(
        store: ClientStore,
        device: Device,
        user_key: Option<UserKey>,
        username: String,
        api: Api,
    ) -> Client {
        let lock = HomeLock::new(store.home());
        Client {
            store,
            device,
            user_key,
            username,
            api,
            skip_ack: false,
            lock,
            rooms: Default::default(),
        }
    }

    /// Registers a new user `username` with its first device in `home`
    /// (created if missing) on the server at `server_url`
    /// (`https://host:port`). `fingerprint`: the server certificate's
    /// SHA-256 to require, or `None` to trust the one presented (TOFU).
    /// Returns the client and the pinned fingerprint, to show the user.
    pub async fn register(
        home: &Path,
        passphrase: &str,
        username: &str,
        server_url: &str,
        fingerprint: Option<&str>,
    ) -> Result<(Client, String)> {
        let username = check_username(username)?;
        let expected = fingerprint.map(parse_fingerprint).transpose()?;
        let api = Api::new(server_url, expected)?;
        let mut store = store_or_create(home, passphrase)?;
        let now = api.now().await?;
        let user_key = UserKey::generate(&mut OsRng);
        let key = DeviceKey::generate(&mut OsRng);
        let cert = user_key.certify(&key.public_keys(), now);
        let mut device = Device::new(key, cert)?;
        let (prekeys, reserve) = generate_prekeys(&mut device, PREKEY_BATCH, true);
        let req = RegisterRequest {
            username_hash: hex::encode(username_hash(&username)),
            cert: b64::encode(&cert.encode()),
            prekeys,
            reserve: reserve.expect("reserve"),
        };
        let r: ApiResult<serde_json::Value> = api
            .call(Method::POST, "/v1/register", Some(&req), Some(device.key()))
            .await;
        match r {
            Ok(_) => {}
            Err(Failure::Api(e))
                if e.status == StatusCode::CONFLICT || e.code == codes::USERNAME_TAKEN =>
            {
                return Err(Error::UsernameTaken(username))
            }
            Err(e) => return Err(e.into()),
        }
        let fp = api
            .fingerprint()
            .ok_or_else(|| Error::BadResponse("no certificate seen".into()))?;
        store.put_account(&Account {
            username: username.clone(),
            user_key: Some(user_key.to_bytes()),
            device_key: device.key().to_bytes(),
            device_cert: cert.encode(),
            server_url: api.base.clone(),
            server_fingerprint: fp.clone(),
            cursor: 0,
            next_prekey_id: device.next_prekey_id(),
        })?;
        store.save_device(&mut device)?;
        let client = Client::assemble(store, device, Some(user_key), username, api);
        Ok((client, fp))
    }

    /// Opens the device in `home`. Does not contact the server (history
    /// works offline); the first network operation does.
    pub async fn open(home: &Path, passphrase: &str) -> Result<Client> {
        let store = ClientStore::open(home, passphrase)?;
        let account = store
            .account()?
            .ok_or_else(|| Error::NotRegistered(home.to_path_buf()))?;
        let device = load_device(&store, &account)?;
        let user_key = account.user_key.as_ref().map(|k| UserKey::from_bytes(k));
        let api = Api::new(
            &account.server_url,
            Some(account.server_fingerprint.clone()),
        )?;
        Ok(Client::assemble(
            store,
            device,
            user_key,
            account.username.clone(),
            api,
        ))
    }

    /// Starts an operation that changes the device state: takes the home's
    /// lock and, unless this client already held it, reloads the state
    /// another process may have changed.
    pub(crate) async fn begin(&mut self) -> Result<Guard> {
        let guard = self.lock.acquire().await?;
        if guard.fresh {
            self.reload_device()?;
        }
        Ok(guard)
    }

    /// Reloads the protocol state from the store, dropping in-memory
    /// changes that were not committed.
    pub(crate) fn reload_device(&mut self) -> Result<()> {
        self.rooms.cache_on(self.rooms.caching);
        let account = self.account()?;
        self.username = account.username.clone();
        self.device = load_device(&self.store, &account)?;
        Ok(())
    }

    /// This user's name (empty on a linked device until link sync arrived).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// This device's id (hex).
    pub fn device_id(&self) -> String {
        hex::encode(self.device.id().0)
    }

    /// This user's public key (hex).
    pub fn user_key(&self) -> String {
        hex::encode(self.device.cert().user.0)
    }

    /// True when this device holds the user key (can approve devices).
    pub fn holds_user_key(&self) -> bool {
        self.user_key.is_some()
    }

    /// The server URL.
    pub fn server_url(&self) -> &str {
        &self.api.base
    }

    /// The pinned server certificate fingerprint.
    pub fn server_fingerprint(&self) -> Result<String> {
        Ok(self.account()?.server_fingerprint)
    }

    /// Pins a new server certificate fingerprint (after the operator
    /// replaced the certificate and the user confirmed the new one). Takes
    /// effect on the next [`Client::open`].
    pub fn set_server_fingerprint(&mut self, fingerprint: &str) -> Result<()> {
        let fp = parse_fingerprint(fingerprint)?;
        self.store.set_server_fingerprint(&fp)?;
        Ok(())
    }

    fn account(&self) -> Result<Account> {
        self.store
            .account()?
            .ok_or_else(|| Error::NotRegistered(self.store.home().to_path_buf()))
    }

    /// This user's name; [`Error::LinkIncomplete`] while a linked device
    /// has not received it yet.
    pub(crate) fn require_username(&self) -> Result<&str> {
        if self.username.is_empty() {
            Err(Error::LinkIncomplete)
        } else {
            Ok(&self.username)
        }
    }
}
