//! The shared store suite on the in-memory backend (`sotto-store` runs the
//! same suite on SQLCipher).

use sotto_device::testing::suite::Backend;
use sotto_device::testing::MemoryStore;
use sotto_device::Store;

struct Memory(MemoryStore);

impl Backend for Memory {
    fn create(&mut self) -> Box<dyn Store> {
        Box::new(self.0.clone())
    }

    fn reopen(&mut self) -> Box<dyn Store> {
        Box::new(self.0.clone())
    }
}

sotto_device::store_suite!(Memory(MemoryStore::default()));
