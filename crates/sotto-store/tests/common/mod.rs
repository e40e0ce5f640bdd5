//! Fixtures of the server store tests: made-up ids, keys and names (any
//! bytes do for the store), a registration shortcut, and the backends the
//! suite runs on ([`backend`], [`store_tests!`]).
#![allow(dead_code)]

pub mod backend;

#[allow(unused_imports)] // each test binary uses its own subset
pub use backend::{Backend, Postgres, Sqlite};
use sotto_store::server::*;

/// Expands each named generic test `fn name<B: Backend>(b: B)` into
/// `sqlite::name` and `postgres::name` (which prints why it is skipped
/// when `SOTTO_TEST_POSTGRES_URL` is unset).
#[macro_export]
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name($crate::common::Sqlite::new())
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                if let Some(b) = $crate::common::Postgres::new() {
                    super::$name(b)
                }
            })*
        }
    };
}

/// No quota: the tests of quotas set their own.
pub const Q: &MailboxQuota = &MailboxQuota::UNLIMITED;

pub fn dev(n: u32) -> DeviceId {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[31] = 0xd0;
    DeviceId(b)
}

pub fn user_key(n: u32) -> UserPublic {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[31] = 0xa0;
    UserPublic(b)
}

pub fn name(s: &str) -> UsernameHash {
    // Any 32 bytes do for the store; derive them from the name.
    let mut b = [0u8; 32];
    for (i, c) in s.bytes().enumerate() {
        b[i % 32] ^= c.wrapping_mul(31).wrapping_add(i as u8);
    }
    b[31] ^= 0x5a;
    b
}

pub fn new_device(d: DeviceId, prekeys: u32) -> NewDevice {
    NewDevice {
        device: d,
        cert: [b"cert:".as_slice(), &d.0].concat(),
        prekeys: (1..=prekeys)
            .map(|i| (i, format!("otk-{i}").into_bytes()))
            .collect(),
        reserve: b"reserve-1".to_vec(),
        reserve_id: prekeys + 1,
    }
}

pub fn register<S: ServerStore + ?Sized>(s: &S, username: &str, u: u32, d: u32, prekeys: u32) {
    let user = NewUser {
        username_hash: name(username),
        user: user_key(u),
        device: new_device(dev(d), prekeys),
    };
    s.register(user, 1_000).unwrap();
}

/// A plain connection to the SQLite database in `dir` (to look at what is
/// stored, as someone who copied the directory would).
#[allow(dead_code)]
pub fn raw(dir: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(DB_FILE)).unwrap()
}
