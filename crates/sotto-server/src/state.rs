//! What every request handler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sotto_proto::DeviceId;
use sotto_store::server::Reply;
use sotto_store::server::{DeviceRecord, ServerStore};
use tokio::sync::{oneshot, watch};

use crate::api::ApiError;
use crate::hub::Hub;
use crate::limits::Limits;
use crate::metrics::{Metrics, Timer};
use crate::rate::Limiters;

#[derive(Clone)]
pub(crate) struct AppState(Arc<Inner>);

pub(crate) struct Inner {
    pub store: Arc<dyn ServerStore>,
    pub hub: Hub,
    pub metrics: Metrics,
    pub retention_ms: u64,
    pub limits: Limits,
    /// `None` when rate limits are off ([`Limits::rates`]).
    pub limiters: Option<Limiters>,
    /// Becomes true when the server shuts down (WebSockets close on it).
    pub shutdown: watch::Receiver<bool>,
    /// Delivery to phone numbers.
    pub phone: Arc<crate::phone::Phone>,
    /// Registered devices, so authenticating a request costs no database
    /// read. A device removed here leaves the cache at once, and so does
    /// one removed through another node (the relay tells); were that
    /// message lost, it is refused here once its entry is older than
    /// [`DEVICE_CACHE_TTL`].
    devices: Mutex<HashMap<DeviceId, (DeviceRecord, Instant)>>,
}

/// Devices cached before the cache is emptied and refilled on demand.
const DEVICE_CACHE: usize = 100_000;
/// How long a cached device is trusted without reading the database again.
const DEVICE_CACHE_TTL: Duration = Duration::from_secs(10);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        store: Arc<dyn ServerStore>,
        retention_ms: u64,
        limits: Limits,
        shutdown: watch::Receiver<bool>,
        phone: Arc<crate::phone::Phone>,
    ) -> AppState {
        let metrics = Metrics::new();
        AppState(Arc::new(Inner {
            store,
            hub: Hub::new(&limits, metrics.pushes.clone()),
            retention_ms,
            limiters: limits
                .rates
                .as_ref()
                .map(|r| Limiters::new(r, metrics.rate_limited.clone())),
            metrics,
            limits,
            shutdown,
            phone,
            devices: Mutex::new(HashMap::new()),
        }))
    }

    /// Runs a rate check (nothing when rate limits are off).
    pub fn rate(
        &self,
        check: impl FnOnce(&Limiters) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        match &self.limiters {
            Some(l) => check(l),
            None => Ok(()),
        }
    }

    pub fn cached_device(&self, device: &DeviceId) -> Option<DeviceRecord> {
        let cache = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(device) {
            Some((record, at)) if at.elapsed() < DEVICE_CACHE_TTL => Some(record.clone()),
            _ => None,
        }
    }

    pub fn cache_device(&self, record: DeviceRecord) {
        let mut cache = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= DEVICE_CACHE {
            cache.clear();
        }
        cache.insert(record.device, (record, Instant::now()));
    }

    /// Forgets a removed device: its next request reads the database.
    pub fn forget_device(&self, device: &DeviceId) {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(device);
    }

    /// Hands a write to the store's writer (`enqueue_with`, `ack_with`)
    /// without occupying a thread while its commit is awaited.
    pub fn submit<T, F>(&self, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ServerStore, Reply<T>),
    {
        let (tx, rx) = oneshot::channel();
        let (histogram, started) = (self.metrics.store_seconds.clone(), Instant::now());
        f(
            &*self.store,
            Box::new(move |answer| {
                histogram.observe(started.elapsed().as_secs_f64());
                let _ = tx.send(answer);
            }),
        );
        rx
    }

    /// Runs a store call on the blocking pool: the store is synchronous
    /// (and a write waits for its group commit), the runtime must not.
    pub async fn db<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ServerStore) -> sotto_store::server::Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        let _timer = Timer::start(&self.metrics.store_seconds);
        match tokio::task::spawn_blocking(move || f(&*store)).await {
            Ok(result) => result.map_err(ApiError::from),
            Err(_) => Err(ApiError::internal("a store call failed")),
        }
    }
}

/// A store write handed to the writer without a blocking thread: answers
/// through a oneshot channel (see [`AppState::write`]).
pub(crate) type Pending<T> = oneshot::Receiver<sotto_store::server::Result<T>>;

/// The master clock: milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    #[cfg(feature = "testing")]
    let ms = ms
        .saturating_add_signed(testing::CLOCK_OFFSET_MS.load(std::sync::atomic::Ordering::Relaxed));
    ms
}

/// Test hook (feature `testing`): a master clock that is not the machine's,
/// so that client tests can run against a server whose clock is skewed.
#[cfg(feature = "testing")]
pub mod testing {
    use std::sync::atomic::{AtomicI64, Ordering};

    pub(crate) static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

    /// Moves the master clock of every server in this process by `ms`
    /// (a test binary that uses it should run only servers it means to
    /// skew).
    pub fn set_clock_offset_ms(ms: i64) {
        CLOCK_OFFSET_MS.store(ms, Ordering::Relaxed);
    }
}

/// The answer of a [`AppState::submit`]ted write.
pub(crate) async fn answer<T>(pending: Pending<T>) -> Result<T, ApiError> {
    match pending.await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError::internal("a store call failed")),
    }
}
