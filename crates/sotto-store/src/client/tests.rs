use std::fs;

use rand_core::OsRng;
use sotto_device::testing::suite::{self, Backend};
use sotto_device::Store;
use sotto_proto::{Device, DeviceKey, UserKey};
use zeroize::Zeroizing;

use super::*;

const PW: &str = "a passphrase";

/// The shared store suite on SQLCipher: each test in its own directory.
struct SqlCipher(tempfile::TempDir);

impl SqlCipher {
    fn new() -> SqlCipher {
        SqlCipher(tempfile::tempdir().unwrap())
    }
}

impl Backend for SqlCipher {
    fn create(&mut self) -> Box<dyn Store> {
        Box::new(ClientStore::create(self.0.path(), PW).unwrap())
    }

    fn reopen(&mut self) -> Box<dyn Store> {
        Box::new(ClientStore::open(self.0.path(), PW).unwrap())
    }
}

sotto_device::store_suite!(SqlCipher::new());

fn account(device: &Device, user: &UserKey) -> Account {
    Account {
        user_key: Some(user.to_bytes()),
        device_key: device.key().to_bytes(),
        device_cert: device.cert().encode(),
        ..suite::account()
    }
}

fn new_device(user: &UserKey) -> Device {
    let key = DeviceKey::generate(&mut OsRng);
    let cert = user.certify(&key.public_keys(), 1);
    Device::new(key, cert).unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn raw_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.push((p.clone(), fs::read(&p).unwrap()));
        }
    }
    out
}

fn with_account(store: &ClientStore, device: &Device, user: &UserKey) {
    store
        .commit(ChangeSet {
            account: Some(account(device, user)),
            ..ChangeSet::default()
        })
        .unwrap();
}

#[test]
fn wrong_passphrase_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let user = UserKey::generate(&mut OsRng);
    let device = new_device(&user);
    {
        let store = ClientStore::create(dir.path(), "correct horse").unwrap();
        with_account(&store, &device, &user);
    }
    assert!(matches!(
        ClientStore::open(dir.path(), "wrong horse"),
        Err(StoreError::WrongPassphrase)
    ));
    assert!(matches!(
        ClientStore::open(dir.path(), ""),
        Err(StoreError::WrongPassphrase)
    ));
    let store = ClientStore::open(dir.path(), "correct horse").unwrap();
    let a = store.account().unwrap().unwrap();
    assert_eq!(a.username, "alice-unique-name");
    assert_eq!(&a.device_key[..], &device.key().to_bytes()[..]);
    assert_eq!(&a.user_key.unwrap()[..], &user.to_bytes()[..]);
    assert!(matches!(
        ClientStore::create(dir.path(), "another passphrase"),
        Err(StoreError::AlreadyExists(_))
    ));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        ClientStore::open(empty.path(), PW),
        Err(StoreError::NotInitialized(_))
    ));
}

/// After writes, no file in the home directory holds a message body, a
/// username or key bytes in clear.
#[test]
fn nothing_readable_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let user = UserKey::generate(&mut OsRng);
    let device = new_device(&user);
    let body = "the meeting moved to 3pm, secret-marker-xyzzy";
    {
        let store = ClientStore::create(dir.path(), PW).unwrap();
        with_account(&store, &device, &user);
        store
            .commit(ChangeSet {
                prekeys: vec![(1, Some(Zeroizing::new(vec![5; 40])))],
                messages: (0..50u8).map(|i| suite::message(i, body)).collect(),
                contacts: vec![Contact {
                    username: "bobby-unique-name".into(),
                    username_hash: [3; 32],
                    user_key: [4; 32],
                    verified: true,
                    devices: vec![],
                }],
                blocks: vec![("mallory-unique-name".into(), true)],
                ..ChangeSet::default()
            })
            .unwrap();
        // Check while the WAL still holds the writes, and after close.
        check_clean(dir.path(), body, &user, &device);
    }
    check_clean(dir.path(), body, &user, &device);
}

fn check_clean(dir: &Path, body: &str, user: &UserKey, device: &Device) {
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("body", body.as_bytes().to_vec()),
        ("body fragment", b"secret-marker".to_vec()),
        ("username", b"alice-unique-name".to_vec()),
        ("contact", b"bobby-unique-name".to_vec()),
        ("blocked", b"mallory-unique-name".to_vec()),
        ("user key", user.to_bytes()[..].to_vec()),
        ("user public key", user.public().0.to_vec()),
        ("device key", device.key().to_bytes()[..32].to_vec()),
        ("device dh key", device.key().to_bytes()[32..].to_vec()),
        ("device id", device.id().0.to_vec()),
        ("server url", b"127.0.0.1:7443".to_vec()),
        ("sqlite header", b"SQLite format 3".to_vec()),
        ("table name", b"CREATE TABLE".to_vec()),
    ];
    let files = raw_files(dir);
    assert!(files.iter().any(|(p, _)| p.ends_with(DB_FILE)));
    for (path, bytes) in &files {
        for (what, needle) in &secrets {
            assert!(
                !contains(bytes, needle),
                "{what} readable in {}",
                path.display()
            );
            let hexed = hex::encode(needle);
            assert!(
                !contains(bytes, hexed.as_bytes()),
                "{what} (hex) readable in {}",
                path.display()
            );
        }
    }
}

/// A change set whose transaction is not committed (a crash mid-receive)
/// leaves neither the history row nor the protocol changes nor the cursor.
#[test]
fn uncommitted_transaction_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let user = UserKey::generate(&mut OsRng);
    let device = new_device(&user);
    let store = ClientStore::create(dir.path(), PW).unwrap();
    with_account(&store, &device, &user);
    {
        let mut db = store.db();
        let tx = db.transaction().unwrap();
        super::tx::apply(
            &tx,
            ChangeSet {
                prekeys: vec![(1, Some(Zeroizing::new(vec![1])))],
                messages: vec![suite::message(1, "lost")],
                cursor: Some(9),
                next_prekey_id: Some(9),
                ..ChangeSet::default()
            },
        )
        .unwrap();
        // dropped: rolled back
    }
    assert!(store.prekeys().unwrap().is_empty());
    assert!(!store.has_message(&[1; 16]).unwrap());
    let acc = store.account().unwrap().unwrap();
    assert_eq!((acc.cursor, acc.next_prekey_id), (0, 5));
}

/// A store made before the clock offset was kept opens, with offset 0.
#[test]
fn an_older_store_gains_the_clock_offset() {
    let dir = tempfile::tempdir().unwrap();
    let user = UserKey::generate(&mut OsRng);
    let device = new_device(&user);
    {
        let store = ClientStore::create(dir.path(), PW).unwrap();
        with_account(&store, &device, &user);
        store
            .db()
            .execute_batch("ALTER TABLE account DROP COLUMN clock_offset_ms")
            .unwrap();
    }
    let store = ClientStore::open(dir.path(), PW).unwrap();
    assert_eq!(store.account().unwrap().unwrap().clock_offset_ms, 0);
}

#[test]
fn a_stored_room_record_can_be_tampered_with_in_tests_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = ClientStore::create(dir.path(), PW).unwrap();
    let g = [1u8; 32];
    let record = RoomRecord {
        hash: [2; 32],
        bytes: vec![3; 10],
        message_key: None,
        datagram_id: None,
        purged: false,
        pending: false,
        time: 5,
        height: 1,
    };
    store
        .commit(ChangeSet {
            rooms: vec![RoomSave {
                group: g,
                title: "Audit".into(),
                head: [0; 32],
                records: vec![record],
                removed: Vec::new(),
                next_expiry: None,
            }],
            ..ChangeSet::default()
        })
        .unwrap();
    assert!(store.tamper_room_record(&g, 0, b"changed").unwrap());
    assert_eq!(store.room_records(&g).unwrap()[0].bytes, b"changed");
    assert!(!store.tamper_room_record(&g, 5, b"x").unwrap());
}

#[test]
fn short_passphrase_is_refused_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    match ClientStore::create(&home, "seven77") {
        Err(e @ StoreError::WeakPassphrase { min: 8 }) => {
            assert!(e.to_string().contains("at least 8 characters"), "{e}")
        }
        other => panic!("expected WeakPassphrase, got {:?}", other.map(|_| ())),
    }
    assert!(!home.exists(), "nothing was written");
    // Eight characters, counted as characters (not bytes).
    ClientStore::create(&home, "ééééé123").unwrap();
}

#[cfg(unix)]
#[test]
fn home_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = ClientStore::create(&home, PW).unwrap();
    store
        .commit(ChangeSet {
            messages: vec![suite::message(1, "x")],
            ..ChangeSet::default()
        })
        .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&home), 0o700);
    let files = raw_files(&home);
    assert!(files.len() >= 3, "database, WAL and KDF file: {files:?}");
    for (p, _) in files {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}
