use std::fs;

use rand_core::OsRng;
use sotto_proto::{content, Device, DeviceKey, Payload, PrekeyBundle, UserKey};

use super::*;

const PW: &str = "a passphrase";

fn account(device: &Device, user: &UserKey) -> Account {
    Account {
        username: "alice-unique-name".into(),
        user_key: Some(user.to_bytes()),
        device_key: device.key().to_bytes(),
        device_cert: device.cert().encode(),
        server_url: "https://127.0.0.1:7443".into(),
        server_fingerprint: "ab".repeat(32),
        cursor: 0,
        next_prekey_id: device.next_prekey_id(),
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

fn message(id: u8, body: &str) -> StoredMessage {
    StoredMessage {
        id: [id; 16],
        conversation: [9; 32],
        from: "alice-unique-name".into(),
        to: "bobby-unique-name".into(),
        sent_at: 1000 + id as u64,
        received_at: 2000,
        body: body.into(),
        ttl: 0,
        outgoing: false,
    }
}

#[test]
fn wrong_passphrase_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let user = UserKey::generate(&mut OsRng);
    let device = new_device(&user);
    {
        let store = ClientStore::create(dir.path(), "correct horse").unwrap();
        store.put_account(&account(&device, &user)).unwrap();
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

#[test]
fn history_dedupes_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ClientStore::create(dir.path(), PW).unwrap();
    assert!(store.insert_message(&message(1, "one")).unwrap());
    assert!(!store.insert_message(&message(1, "one again")).unwrap());
    assert!(store.insert_message(&message(2, "two")).unwrap());
    let mut other = message(3, "elsewhere");
    other.conversation = [8; 32];
    other.ttl = 1;
    assert!(store.insert_message(&other).unwrap());
    let all = store.history(&HistoryQuery::default()).unwrap();
    assert_eq!(
        all.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["one", "two", "elsewhere"]
    );
    let conv = store
        .history(&HistoryQuery {
            conversation: Some([9; 32]),
            limit: Some(1),
            peer: None,
        })
        .unwrap();
    assert_eq!(conv.len(), 1);
    assert_eq!(conv[0].body, "two");
    assert!(store.has_message(&[1; 16]).unwrap());
    let q = HistoryQuery {
        peer: Some("Bobby-Unique-Name".into()),
        ..Default::default()
    };
    assert_eq!(store.history(&q).unwrap().len(), 3);
    let q = HistoryQuery {
        peer: Some("carol".into()),
        ..Default::default()
    };
    assert!(store.history(&q).unwrap().is_empty());
    assert_eq!(store.purge_expired(1003 + 1000).unwrap(), 1);
    assert_eq!(store.history(&HistoryQuery::default()).unwrap().len(), 2);
}

#[test]
fn contacts_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = ClientStore::create(dir.path(), PW).unwrap();
    let c = Contact {
        username: "Bob".into(),
        username_hash: [1; 32],
        user_key: [2; 32],
        verified: false,
        devices: vec![vec![1, 2, 3], vec![]],
    };
    store.put_contact(&c).unwrap();
    let got = store.contact("bob").unwrap().unwrap();
    assert_eq!(got.username, "bob");
    assert_eq!(got.devices, c.devices);
    assert_eq!(
        store.contact_by_hash(&[1; 32]).unwrap().unwrap().user_key,
        [2; 32]
    );
    assert!(store.contact("carol").unwrap().is_none());
    store.block("Carol").unwrap();
    assert!(store.is_blocked("carol").unwrap());
    assert_eq!(store.blocked().unwrap(), ["carol"]);
    store.unblock("carol").unwrap();
    assert!(!store.is_blocked("carol").unwrap());
}

/// A received message's history row and the device's changes land in one
/// transaction; the device restored from the store opens the next message.
#[test]
fn device_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (UserKey::generate(&mut OsRng), UserKey::generate(&mut OsRng));
    let mut a = new_device(&alice);
    let mut b = new_device(&bob);
    let mut store = ClientStore::create(dir.path(), PW).unwrap();
    store.put_account(&account(&b, &bob)).unwrap();
    let pks = b.generate_prekeys(&mut OsRng, 3);
    b.generate_reserve(&mut OsRng);
    store.save_device(&mut b).unwrap();
    assert_eq!(store.prekeys().unwrap().len(), 4);

    let bundle = PrekeyBundle {
        cert: *b.cert(),
        prekey: pks[0],
    }
    .verify(&bob.public())
    .unwrap();
    a.start_session(&mut OsRng, &bundle).unwrap();
    let payload = |id: u8, body: &str| Payload {
        message_id: [id; 16],
        conversation: [1; 32],
        sender: alice.public(),
        sent_at: 5,
        ttl: 0,
        content_type: content::TEXT,
        body: body.as_bytes().to_vec(),
    };
    let dg1 = a.seal(&mut OsRng, &payload(1, "first"), &[b.id()]).unwrap();
    let dg2 = a
        .seal(&mut OsRng, &payload(2, "second"), &[b.id()])
        .unwrap();
    let opened = b.open(&dg1).unwrap();
    {
        let changes = b.take_changes();
        let tx = store.transaction().unwrap();
        tx.apply_device_changes(&b, &changes).unwrap();
        assert!(tx
            .insert_message(&message(
                1,
                std::str::from_utf8(&opened.payload.body).unwrap()
            ))
            .unwrap());
        tx.set_cursor(7).unwrap();
        tx.commit().unwrap();
    }
    drop(store);

    let store = ClientStore::open(dir.path(), PW).unwrap();
    let acc = store.account().unwrap().unwrap();
    assert_eq!(acc.cursor, 7);
    let key = DeviceKey::from_bytes(&acc.device_key);
    let cert = sotto_proto::DeviceCert::decode(&acc.device_cert).unwrap();
    let prekeys = store
        .prekeys()
        .unwrap()
        .iter()
        .map(|b| sotto_proto::PrekeySecret::from_bytes(b).unwrap())
        .collect();
    let sessions = store
        .sessions()
        .unwrap()
        .iter()
        .map(|b| sotto_proto::Session::from_bytes(b).unwrap())
        .collect();
    let mut b2 = Device::restore(key, cert, prekeys, sessions, acc.next_prekey_id).unwrap();
    assert_eq!(b2.one_time_prekeys(), 2, "the used one-time prekey is gone");
    assert_eq!(b2.open(&dg2).unwrap().payload.body, b"second");
    assert_eq!(b2.open(&dg1).unwrap_err(), sotto_proto::Error::Replay);
}

/// After writes, no file in the home directory holds a message body, a
/// username or key bytes in clear.
#[test]
fn nothing_readable_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let user = UserKey::generate(&mut OsRng);
    let mut device = new_device(&user);
    let body = "the meeting moved to 3pm, secret-marker-xyzzy";
    {
        let mut store = ClientStore::create(dir.path(), PW).unwrap();
        store.put_account(&account(&device, &user)).unwrap();
        device.generate_prekeys(&mut OsRng, 5);
        store.save_device(&mut device).unwrap();
        for i in 0..50u8 {
            store.insert_message(&message(i, body)).unwrap();
        }
        store
            .put_contact(&Contact {
                username: "bobby-unique-name".into(),
                username_hash: [3; 32],
                user_key: [4; 32],
                verified: true,
                devices: vec![],
            })
            .unwrap();
        store.block("mallory-unique-name").unwrap();
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

/// A transaction dropped before commit (a crash mid-receive) leaves neither
/// the history row nor the protocol changes nor the cursor.
#[test]
fn uncommitted_transaction_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let user = UserKey::generate(&mut OsRng);
    let mut device = new_device(&user);
    let mut store = ClientStore::create(dir.path(), PW).unwrap();
    store.put_account(&account(&device, &user)).unwrap();
    device.generate_prekeys(&mut OsRng, 2);
    let changes = device.take_changes();
    {
        let tx = store.transaction().unwrap();
        tx.apply_device_changes(&device, &changes).unwrap();
        assert!(tx.insert_message(&message(1, "lost")).unwrap());
        tx.set_cursor(9).unwrap();
        // dropped: rolled back
    }
    assert!(store.prekeys().unwrap().is_empty());
    assert!(!store.has_message(&[1; 16]).unwrap());
    let acc = store.account().unwrap().unwrap();
    assert_eq!((acc.cursor, acc.next_prekey_id), (0, 1));
    // The cursor never moves back.
    let tx = store.transaction().unwrap();
    tx.set_cursor(5).unwrap();
    tx.set_cursor(3).unwrap();
    tx.commit().unwrap();
    assert_eq!(store.account().unwrap().unwrap().cursor, 5);
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
    let mut store = ClientStore::create(&home, PW).unwrap();
    store.insert_message(&message(1, "x")).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&home), 0o700);
    let files = raw_files(&home);
    assert!(files.len() >= 3, "database, WAL and KDF file: {files:?}");
    for (p, _) in files {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}
