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
use crate::lock::{Guard, HomeLock};
use crate::net::{local_ms, Api, ApiResult, Failure};
use crate::{parse_fingerprint, Client, Error, Result};

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
    pub(crate) fn assemble(store: ClientStore, core: Machine, api: Api) -> Client {
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
        let r: ApiResult<serde_json::Value> = api
            .call(
                Method::POST,
                paths::REGISTER,
                Some(&req),
                Some(new.device_key()),
            )
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
        let home = Home {
            server_url: api.base.clone(),
            server_fingerprint: fp.clone(),
            clock_offset_ms: offset,
        };
        let core = new.finish(Box::new(store.clone()), Box::new(OsRng), home)?;
        Ok((Client::assemble(store, core, api), fp))
    }

    /// Opens the device in `home`. Does not contact the server (history
    /// works offline); the first network operation does.
    pub async fn open(home: &Path, passphrase: &str) -> Result<Client> {
        let store = ClientStore::open(home, passphrase)?;
        let core = machine(&store)?;
        let account = core.account()?;
        let api = Api::new(
            &account.server_url,
            Some(account.server_fingerprint.clone()),
        )?;
        Ok(Client::assemble(store, core, api))
    }

    /// Starts an operation that changes the device state: takes the home's
    /// lock and, unless this client already held it, reloads the state
    /// another process may have changed.
    pub(crate) async fn begin(&mut self) -> Result<Guard> {
        let guard = self.lock.acquire().await?;
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
        let offset = self.api.offset().await?;
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

    /// The server URL.
    pub fn server_url(&self) -> &str {
        &self.api.base
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
