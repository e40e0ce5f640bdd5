//! Setting up a device: registering a new user, opening an existing home,
//! the accessors, and what every operation starts from (the home lock, a
//! reload of what another process may have changed, the master clock).

use std::path::Path;

use rand_core::OsRng;
use reqwest::{Method, StatusCode};
use sotto_api::{b64, codes, paths, username_hash, RegisterRequest};
use sotto_device::{check_username, Home, Machine, NewUser};
use sotto_store::client::ClientStore;

use crate::exec::b64_prekeys;
use crate::net::{local_ms, Api, ApiResult, Failure};
use crate::{parse_fingerprint, Client, Error, Result};
use sotto_store::client::{Guard, HomeLock};

/// How long an operation waits for another process's operation on the
/// same home to end.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

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

/// The device core over `store`, with OS randomness.
pub(crate) fn machine(store: &ClientStore) -> Result<Machine> {
    match Machine::load(Box::new(store.clone()), Box::new(OsRng)) {
        Ok(m) => Ok(m),
        Err(sotto_device::Error::NoAccount) => {
            Err(Error::NotRegistered(store.home().to_path_buf()))
        }
        Err(e) => Err(e.into()),
    }
}

impl Client {
    /// A client over an open store and its device; locks `store.home()`.
    pub(crate) fn assemble(store: ClientStore, core: Machine, api: Option<Api>) -> Client {
        let lock = HomeLock::new(store.home());
        Client {
            core,
            store,
            api,
            lock,
        }
    }

    /// Registers a new user `username` with its first device in `home`
    /// (created if missing) on the server at `server_url`
    /// (`https://host:port`). `fingerprint`: the server certificate's
    /// SHA-256 to require, or `None` to trust the one presented (TOFU).
    /// Returns the client and the pinned fingerprint, to show the user.
    ///
    /// A home made by [`Client::init`] (a user and device with no server)
    /// is registered as it is: the same user key, device certificate and
    /// prekeys are published, so contacts made peer to peer keep their
    /// keys and safety numbers.
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
        if let Some(client) = Client::unpublished(home, passphrase, &username)? {
            return client.publish(api).await;
        }
        let store = store_or_create(home, passphrase)?;
        let offset = api.offset().await?;
        let now = local_ms().saturating_add_signed(offset);
        let new = NewUser::new(&mut OsRng, now, &username)?;
        let req = RegisterRequest {
            username_hash: hex::encode(username_hash(&username)),
            cert: b64::encode(&new.cert().encode()),
            prekeys: b64_prekeys(new.prekeys()),
            reserve: b64::encode(&new.reserve().encode()),
        };
        post_registration(&api, &req, new.device_key(), &username).await?;
        let fp = api
            .fingerprint()
            .ok_or_else(|| Error::BadResponse("no certificate seen".into()))?;
        let home = Home {
            server_url: api.base.clone(),
            server_fingerprint: fp.clone(),
            clock_offset_ms: offset,
        };
        let core = new.finish(Box::new(store.clone()), Box::new(OsRng), home)?;
        Ok((Client::assemble(store, core, Some(api)), fp))
    }

    /// Makes a new user `username` with its first device in `home`, with no
    /// server: for peer to peer. [`Client::register`] on this home later
    /// publishes the same identity.
    pub fn init(home: &Path, passphrase: &str, username: &str) -> Result<Client> {
        let username = check_username(username)?;
        let store = store_or_create(home, passphrase)?;
        let new = NewUser::new(&mut OsRng, local_ms(), &username)?;
        let core = new.finish(Box::new(store.clone()), Box::new(OsRng), Home::default())?;
        Ok(Client::assemble(store, core, None))
    }

    /// The device in `home` if it was made by [`Client::init`] for
    /// `username` and has no server yet; `None` for a home with no
    /// account. A home registered elsewhere, or for another name, is
    /// [`Error::AlreadyRegistered`].
    fn unpublished(home: &Path, passphrase: &str, username: &str) -> Result<Option<Client>> {
        if !ClientStore::exists(home) {
            return Ok(None);
        }
        let store = ClientStore::open(home, passphrase)?;
        match store.account()? {
            None => Ok(None),
            Some(a) if a.server_url.is_empty() && a.username == username => {
                let core = machine(&store)?;
                Ok(Some(Client::assemble(store, core, None)))
            }
            Some(_) => Err(Error::AlreadyRegistered(home.to_path_buf())),
        }
    }

    /// Registers this device's existing identity (made by
    /// [`Client::init`]) on the server of `api`.
    async fn publish(mut self, api: Api) -> Result<(Client, String)> {
        let guard = self.begin().await?;
        let offset = api.offset().await?;
        let now = local_ms();
        let reg = self.core.registration(now)?;
        let req = RegisterRequest {
            username_hash: hex::encode(username_hash(&reg.username)),
            cert: b64::encode(&reg.cert.encode()),
            prekeys: b64_prekeys(&reg.one_time),
            reserve: b64::encode(&reg.reserve.encode()),
        };
        post_registration(&api, &req, self.core.device().key(), &reg.username).await?;
        let fp = api
            .fingerprint()
            .ok_or_else(|| Error::BadResponse("no certificate seen".into()))?;
        self.core.set_server(&api.base, &fp, offset)?;
        drop(guard);
        self.api = Some(api);
        Ok((self, fp))
    }

    /// Opens the device in `home`. Does not contact the server (history
    /// works offline); the first network operation does.
    pub async fn open(home: &Path, passphrase: &str) -> Result<Client> {
        let store = ClientStore::open(home, passphrase)?;
        let core = machine(&store)?;
        let account = core.account()?;
        let api = if account.server_url.is_empty() {
            None
        } else {
            Some(Api::new(
                &account.server_url,
                Some(account.server_fingerprint.clone()),
            )?)
        };
        Ok(Client::assemble(store, core, api))
    }

    /// Starts an operation that changes the device state: takes the home's
    /// lock and, unless this client already held it, reloads the state
    /// another process may have changed.
    pub(crate) async fn begin(&mut self) -> Result<Guard> {
        let guard = self
            .lock
            .acquire(LOCK_WAIT, tokio::time::sleep)
            .await?
            .ok_or_else(|| Error::HomeBusy(self.lock.home().to_path_buf()))?;
        if guard.fresh {
            self.core.reload()?;
        }
        Ok(guard)
    }

    /// [`Client::begin`], for an operation that talks to the server: also
    /// measures the master clock (once per process) and hands the offset
    /// to the core, which keeps it for every TTL decision. Returns the
    /// local time to hand the core.
    pub(crate) async fn begin_online(&mut self) -> Result<(Guard, u64)> {
        let guard = self.begin().await?;
        let offset = self.api()?.offset().await?;
        self.core.set_clock_offset(offset)?;
        Ok((guard, local_ms()))
    }

    /// This user's name (empty on a linked device until link sync arrived).
    pub fn username(&self) -> &str {
        self.core.username()
    }

    /// This device's id (hex).
    pub fn device_id(&self) -> String {
        hex::encode(self.core.device().id().0)
    }

    /// This user's public key (hex).
    pub fn user_key(&self) -> String {
        hex::encode(self.core.device().cert().user.0)
    }

    /// True when this device holds the user key (can approve devices).
    pub fn holds_user_key(&self) -> bool {
        self.core.holds_user_key()
    }

    /// The server URL (empty for a device with no server).
    pub fn server_url(&self) -> &str {
        self.api.as_ref().map_or("", |a| a.base.as_str())
    }

    /// True when this device is registered with a server.
    pub fn has_server(&self) -> bool {
        self.api.is_some()
    }

    /// The server's API, or [`Error::NoServer`].
    pub(crate) fn api(&self) -> Result<&Api> {
        self.api.as_ref().ok_or(Error::NoServer)
    }

    /// The pinned server certificate fingerprint.
    pub fn server_fingerprint(&self) -> Result<String> {
        Ok(self.core.account()?.server_fingerprint)
    }

    /// Pins a new server certificate fingerprint (after the operator
    /// replaced the certificate and the user confirmed the new one). Takes
    /// effect on the next [`Client::open`].
    pub fn set_server_fingerprint(&mut self, fingerprint: &str) -> Result<()> {
        let fp = parse_fingerprint(fingerprint)?;
        self.store.set_server_fingerprint(&fp)?;
        Ok(())
    }
}

/// `POST /v1/register`, signed by the new device; a taken name is
/// [`Error::UsernameTaken`].
async fn post_registration(
    api: &Api,
    req: &RegisterRequest,
    key: &sotto_proto::DeviceKey,
    username: &str,
) -> Result<()> {
    let r: ApiResult<serde_json::Value> = api
        .call(Method::POST, paths::REGISTER, Some(req), Some(key))
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(Failure::Api(e))
            if e.status == StatusCode::CONFLICT || e.code == codes::USERNAME_TAKEN =>
        {
            Err(Error::UsernameTaken(username.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}
