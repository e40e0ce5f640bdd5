//! Delivery to a phone number, end to end with real processes: a `sotto
//! server` with the SMS sink, `sotto admin`, the sender API over curl, a
//! local webhook receiver, and handsets registering by OTP. Each test
//! also plays the attacker of its feature.

mod common;
mod phone;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::*;
use phone::*;

const BODY: &str = "Your appointment is at 10:00";

fn register_phone(home: &std::path::Path, server: &Server, number: &str) -> String {
    ok(home, &["register-phone", number, "--server", &server.url])
}

#[test]
fn a_held_message_reaches_the_number_once_after_it_registers_and_leaves_nothing_readable() {
    let s = setup(&[]);
    let hook = Receiver::start("/replies");
    let (key, secret) = add_sender(&s.data, "acme", "Acme Clinic", &hook.url);
    let body = format!(r#"{{"to": "{NUMBER}", "body": "{BODY}"}}"#);
    let a = send(&s.server, &key, &body);
    assert_eq!(a.status, 202, "{}", a.body);
    let id = a.json()["id"].as_str().unwrap().to_string();
    assert_eq!(a.json()["status"], "held");
    // A second message: still one invitation per sender.
    assert_eq!(
        send(&s.server, &key, &body.replace("10:00", "11:00")).status,
        202
    );
    let invite = wait_sms(&s.sink, NUMBER, "Acme Clinic");
    assert!(invite.contains("register-phone"), "{invite}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let invites = sms(&s.sink)
        .into_iter()
        .filter(|(_, t)| t.contains("Acme Clinic"))
        .count();
    assert_eq!(invites, 1, "one SMS per sender, not per message");

    // The held list: id, sender, status, times; no body, no number.
    let held = json_lines(&admin(&s.data, &["held", "--json"]));
    assert_eq!(held.len(), 2);
    let first = held.iter().find(|h| h["id"] == id.as_str()).unwrap();
    assert_eq!(first["sender"], "acme");
    assert_eq!(first["status"], "held");
    assert!(first["created"].as_u64().unwrap() < first["expires"].as_u64().unwrap());
    let listing = admin(&s.data, &["held", "--json"]);
    assert!(
        !listing.contains(BODY) && !listing.contains(NUMBER) && !listing.contains("5551234567")
    );
    assert_eq!(status(&s.server, &key, &id).json()["status"], "held");

    // At rest, before registration: neither body nor number in clear
    // anywhere in the data directory (database, WAL, keys), the
    // development sink aside.
    let raw = raw_files(&s.data, &s.sink);
    assert!(!contains(&raw, BODY) && !contains(&raw, "Your appointment"));
    assert!(!contains(&raw, NUMBER) && !contains(&raw, "5551234567"));

    let pat = s.dir.path().join("pat");
    let out = register_phone(&pat, &s.server, NUMBER);
    assert!(out.contains("verify-phone"), "says what to do next: {out}");
    let otp = otp_for(&s.sink, NUMBER);
    let out = ok(&pat, &["verify-phone", &otp]);
    assert!(out.contains("2 held messages delivered"), "{out}");

    let inbox = ok(&pat, &["inbox"]);
    assert!(inbox.contains(r#"acme ("Acme Clinic")"#), "{inbox}");
    assert_eq!(inbox.matches(BODY).count(), 1, "exactly once: {inbox}");
    let again = ok(&pat, &["inbox"]);
    assert_eq!(again.matches(BODY).count(), 1, "still once: {again}");

    // Delivered (a device acknowledged it), and the sender was told.
    wait_until(
        "status delivered",
        20,
        || status(&s.server, &key, &id).json()["status"] == "delivered",
        || status(&s.server, &key, &id).body,
    );
    let delivered = hook.wait("delivered event", |r| {
        r.body.contains(&id) && r.body.contains("\"delivered\"")
    });
    assert!(
        signature_ok(&delivered, &secret),
        "webhook posts are signed"
    );
    assert!(!signature_ok(&delivered, &"00".repeat(32)));

    // The held copies and their keys are gone.
    assert!(json_lines(&admin(&s.data, &["held", "--json"])).is_empty());
    let raw = raw_files(&s.data, &s.sink);
    assert!(!contains(&raw, BODY) && !contains(&raw, NUMBER) && !contains(&raw, "5551234567"));
    let db = rusqlite::Connection::open(s.data.join("server.db")).unwrap();
    let sealed: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM sender_messages WHERE sealed IS NOT NULL OR number_key IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sealed, 0, "no held copy, no key, no number key left");
}

#[test]
fn a_registered_number_gets_messages_at_once_on_every_device_and_replies_reach_the_webhook() {
    let s = setup(&[]);
    let hook = Receiver::start("/replies");
    let (key, secret) = add_sender(&s.data, "acme", "Acme Clinic", &hook.url);
    let pat = s.dir.path().join("pat");
    register_phone(&pat, &s.server, NUMBER);
    ok(&pat, &["verify-phone", &otp_for(&s.sink, NUMBER)]);

    // A second handset registers the same number, the other way round:
    // the app makes the code and the handset texts it to the server.
    let pat2 = s.dir.path().join("pat2");
    let mut child = sotto()
        .arg("--home")
        .arg(&pat2)
        .args([
            "register-phone",
            NUMBER,
            "--server",
            &s.server.url,
            "--by-sms",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = loop {
        let l = lines.next().expect("printed the SMS to send").unwrap();
        if l.starts_with("send SMS: ") {
            break l;
        }
    };
    let (text, to) = line
        .strip_prefix("send SMS: ")
        .unwrap()
        .rsplit_once(" to ")
        .unwrap();
    // The SMS from another number does not count.
    let stranger = curl(&[
        "--data-urlencode",
        "From=+15559999999",
        "--data-urlencode",
        &format!("Body={text}"),
        &format!("{}/v1/sms/inbound", s.server.url),
    ]);
    assert_eq!(stranger.json()["matched"], false);
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        child.try_wait().unwrap().is_none(),
        "not finished by a stranger's SMS"
    );
    let a = curl(&[
        "--data-urlencode",
        &format!("From={NUMBER}"),
        "--data-urlencode",
        &format!("To={to}"),
        "--data-urlencode",
        &format!("Body={text}"),
        &format!("{}/v1/sms/inbound", s.server.url),
    ]);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["matched"], true);
    let status_ = child.wait().unwrap();
    assert!(status_.success(), "register-phone --by-sms finished");

    let a = send(
        &s.server,
        &key,
        &format!(r#"{{"to": "{NUMBER}", "body": "Bring your card"}}"#),
    );
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.json()["status"], "sent");
    for home in [&pat, &pat2] {
        let inbox = ok(home, &["inbox"]);
        assert!(
            inbox.contains(r#"acme ("Acme Clinic") -> "#) && inbox.contains("Bring your card"),
            "{inbox}"
        );
    }

    // A reply reaches the webhook, signed, naming the message it answers.
    ok(&pat, &["send", "acme", "I'll be there"]);
    let reply = hook.wait("the reply", |r| r.body.contains("I'll be there"));
    assert!(signature_ok(&reply, &secret));
    let event: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(event["type"], "reply");
    assert_eq!(event["in_reply_to"], a.json()["id"]);

    // Webhook down, then up: the next reply arrives once, with its id.
    hook.respond.store(503, std::sync::atomic::Ordering::SeqCst);
    ok(&pat2, &["send", "acme", "running late"]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!hook.all().iter().any(|r| r.body.contains("running late")));
    hook.respond.store(200, std::sync::atomic::Ordering::SeqCst);
    hook.wait("the queued reply", |r| r.body.contains("running late"));
    std::thread::sleep(std::time::Duration::from_secs(3));
    let late: Vec<_> = hook
        .all()
        .into_iter()
        .filter(|r| r.body.contains("running late"))
        .collect();
    assert_eq!(late.len(), 1, "delivered once");
    assert!(late[0].header("x-sotto-event").is_some());
}

#[test]
fn one_time_passwords_refuse_wrong_expired_reused_foreign_and_guessed_codes() {
    let s = setup(&["--otp-ttl", "30m"]);
    let pat = s.dir.path().join("pat");
    register_phone(&pat, &s.server, NUMBER);
    let otp = otp_for(&s.sink, NUMBER);
    let wrong = if otp == "000000" { "111111" } else { "000000" };

    // Another number's code does not register this one.
    let other = "+15557654321";
    let mallory = s.dir.path().join("mallory");
    register_phone(&mallory, &s.server, other);
    let e = err(&mallory, &["verify-phone", &otp]);
    assert!(e.contains("wrong code"), "{e}");

    // Five attempts, then even the right code is refused.
    for left in (1..5).rev() {
        let e = err(&pat, &["verify-phone", wrong]);
        assert!(e.contains(&format!("{left} attempts left")), "{e}");
    }
    let e = err(&pat, &["verify-phone", wrong]);
    assert!(e.contains("0 attempts left"), "{e}");
    let e = err(&pat, &["verify-phone", &otp]);
    assert!(e.contains("too many wrong attempts"), "{e}");

    // A new code works once; used again it is refused.
    let before = sms(&s.sink).len();
    register_phone(&pat, &s.server, NUMBER);
    wait_until(
        "a new code",
        20,
        || sms(&s.sink).len() > before,
        String::new,
    );
    let otp = otp_for(&s.sink, NUMBER);
    ok(&pat, &["verify-phone", &otp]);
    let thief = s.dir.path().join("thief");
    // (The thief's request asks for no code of its own: it replays.)
    let out = sotto()
        .arg("--home")
        .arg(&thief)
        .args(["register-phone", NUMBER, "--server", &s.server.url])
        .output()
        .unwrap();
    if out.status.success() {
        // Its request made a new code (rate permitting): the old one is
        // still no good.
        let e = err(&thief, &["verify-phone", &otp]);
        assert!(e.contains("wrong code") || e.contains("used"), "{e}");
    }

    // Asking for codes for one number is rate-limited.
    let spam = s.dir.path().join("spam");
    let mut limited = false;
    for _ in 0..6 {
        let out = run(&spam, &["register-phone", other, "--server", &s.server.url]);
        if !out.status.success() {
            let e = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(e.contains("429") || e.contains("too many"), "{e}");
            limited = true;
            break;
        }
    }
    assert!(
        limited,
        "the fourth code request for a number within a minute is refused"
    );
}

#[test]
fn an_expired_code_is_refused() {
    let s = setup(&["--otp-ttl", "1s"]);
    let pat = s.dir.path().join("pat");
    register_phone(&pat, &s.server, NUMBER);
    let otp = otp_for(&s.sink, NUMBER);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let e = err(&pat, &["verify-phone", &otp]);
    assert!(e.contains("expired"), "{e}");
}

#[test]
fn the_sender_api_refuses_strangers_and_bad_requests_and_keeps_serving() {
    let s = setup(&[]);
    let hook = Receiver::start("/replies");
    let (key, _) = add_sender(&s.data, "acme", "Acme Clinic", &hook.url);
    let secret_body = "stranger secret body 8472";
    let body = format!(r#"{{"to": "{NUMBER}", "body": "{secret_body}"}}"#);
    let url = format!("{}/v1/sender/messages", s.server.url);

    // No key, a wrong key: 401, nothing stored.
    let a = curl(&["-H", "content-type: application/json", "-d", &body, &url]);
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(send(&s.server, "sk_not_a_key", &body).status, 401);
    assert_eq!(status(&s.server, "sk_not_a_key", "x").status, 401);

    // A revoked key: 401 at once.
    let out = admin(&s.data, &["sender", "add-key", "acme"]);
    let second = out.strip_prefix("api key: ").unwrap().trim().to_string();
    assert_eq!(
        send(
            &s.server,
            &second,
            r#"{"to": "+15550001111", "body": "ok"}"#
        )
        .status,
        202
    );
    admin(&s.data, &["sender", "revoke-key", "acme", &second]);
    assert_eq!(send(&s.server, &second, &body).status, 401);
    assert!(
        json_lines(&admin(&s.data, &["held", "--json"])).len() == 1,
        "only the accepted one"
    );
    let raw = raw_files(&s.data, &s.sink);
    assert!(
        !contains(&raw, secret_body),
        "a refused body leaves no trace"
    );

    // Bad requests: 4xx with a clear message.
    for (bad, expect) in [
        ("{not json", "invalid JSON"),
        (
            r#"{"to": "+15551234567", "body": "x", "extra": 1}"#,
            "unknown field",
        ),
        (r#"{"to": "5551234567", "body": "x"}"#, "E.164"),
        (r#"{"to": "+1555", "body": "x"}"#, "E.164"),
        (r#"{"to": "+15551234567"}"#, "missing field"),
        (r#"{"to": "+15551234567", "body": ""}"#, "empty"),
    ] {
        let a = send(&s.server, &key, bad);
        assert!(
            (400..500).contains(&a.status),
            "{bad}: {} {}",
            a.status,
            a.body
        );
        assert!(
            a.json()["error"].as_str().unwrap().contains(expect),
            "{bad}: {}",
            a.body
        );
    }
    let big = format!(r#"{{"to": "{NUMBER}", "body": "{}"}}"#, "x".repeat(20_000));
    let a = send(&s.server, &key, &big);
    assert_eq!(a.status, 413, "{}", a.body);
    let huge = format!(r#"{{"to": "{NUMBER}", "body": "{}"}}"#, "x".repeat(2 << 20));
    let file = s.dir.path().join("huge.json");
    std::fs::write(&file, huge).unwrap();
    let a = curl(&[
        "-H",
        &format!("Authorization: Bearer {key}"),
        "-H",
        "content-type: application/json",
        "-H",
        "Expect:",
        "--data-binary",
        &format!("@{}", file.display()),
        &url,
    ]);
    // 413, or the connection cut while curl was still sending the rest.
    assert!(a.status == 413 || a.status == 0, "{} {}", a.status, a.body);
    // Still serving.
    assert_eq!(send(&s.server, &key, &body).status, 202);
}

#[test]
fn no_user_can_be_or_pose_as_a_sender() {
    let s = setup(&[]);
    let hook = Receiver::start("/replies");
    // A user who took a name first keeps it: the sender cannot.
    let early = register(s.dir.path(), "bigbank", &s.server);
    let out = sotto()
        .args(["admin", "--data"])
        .arg(&s.data)
        .args([
            "sender",
            "add",
            "bigbank",
            "--name",
            "Big Bank",
            "--webhook",
            &hook.url,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken"));
    // A sender's handle cannot be registered by a user.
    add_sender(&s.data, "acme", "Acme Clinic", &hook.url);
    let e = err(
        &s.dir.path().join("fake"),
        &["register", "acme", "--server", &s.server.url],
    );
    assert!(e.contains("taken"), "{e}");
    // A user's messages never carry an organisation's name, whatever
    // they say.
    let pat = s.dir.path().join("pat");
    register_phone(&pat, &s.server, NUMBER);
    let out = ok(&pat, &["verify-phone", &otp_for(&s.sink, NUMBER)]);
    let user = out
        .split("(user ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("verify-phone names the user")
        .to_string();
    let fake = register(s.dir.path(), "acme-clinic", &s.server);
    ok(&fake, &["send", &user, "Acme Clinic: pay here"]);
    let inbox = ok(&pat, &["inbox"]);
    assert!(inbox.contains("acme-clinic -> "), "{inbox}");
    assert!(!inbox.contains("(\"Acme Clinic\")"), "{inbox}");
    drop(early);
}

#[test]
fn inbound_sms_without_the_providers_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("srv");
    let twilio = Receiver::start("");
    let inbound = "https://sotto.example/v1/sms/inbound";
    let mut child = sotto()
        .env("SOTTO_TWILIO_AUTH_TOKEN", "token-123")
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .args([
            "--twilio-account-sid",
            "AC123",
            "--twilio-from",
            "+15550009999",
            "--twilio-base-url",
            &twilio.url,
            "--sms-inbound-url",
            inbound,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = lines.next().unwrap().unwrap();
    let url = addr.strip_prefix("listening on ").unwrap().to_string();
    let server_url = url.clone();

    // The provider stand-in fails once (5xx): the SMS is retried.
    twilio
        .respond
        .store(500, std::sync::atomic::Ordering::SeqCst);
    let pat = dir.path().join("pat");
    ok(&pat, &["register-phone", NUMBER, "--server", &server_url]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(twilio.all().is_empty());
    twilio
        .respond
        .store(200, std::sync::atomic::Ordering::SeqCst);
    let req = twilio.wait("the SMS request", |r| r.path.contains("/Messages.json"));
    assert_eq!(req.path, "/2010-04-01/Accounts/AC123/Messages.json");
    let auth = req.header("authorization").unwrap();
    assert_eq!(
        auth, "Basic QUMxMjM6dG9rZW4tMTIz",
        "basic auth: SID and token"
    );
    let form: Vec<(String, String)> = form_urlencoded_pairs(&req.body);
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(field("To").as_deref(), Some(NUMBER));
    assert_eq!(field("From").as_deref(), Some("+15550009999"));
    assert!(field("Body").unwrap().contains("code"));

    let post = |sig: Option<&str>, from: &str| {
        let mut args = vec![
            "--data-urlencode".to_string(),
            format!("From={from}"),
            "--data-urlencode".to_string(),
            "Body=sotto 12345678".to_string(),
        ];
        if let Some(sig) = sig {
            args.push("-H".into());
            args.push(format!("X-Twilio-Signature: {sig}"));
        }
        args.push(format!("{server_url}/v1/sms/inbound"));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&refs)
    };
    assert_eq!(post(None, NUMBER).status, 403, "unsigned");
    assert_eq!(post(Some("bm90IGl0"), NUMBER).status, 403, "mis-signed");
    let params = vec![
        ("Body".to_string(), "sotto 12345678".to_string()),
        ("From".to_string(), NUMBER.to_string()),
    ];
    let good = twilio_signature("token-123", inbound, &params);
    // Signed for other fields: refused.
    assert_eq!(post(Some(&good), "+15550000001").status, 403);
    assert_eq!(post(Some(&good), NUMBER).status, 200);
    let _ = child.kill();
    let _ = child.wait();
}

fn form_urlencoded_pairs(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// Twilio's signature, computed independently of the server's code.
fn twilio_signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(&k);
        data.push_str(&v);
    }
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[test]
fn a_held_message_expires_and_the_webhook_hears_it_once_even_across_a_server_kill() {
    let Setup {
        dir,
        data,
        sink,
        server,
    } = setup(&[]);
    let hook = Receiver::start("/replies");
    hook.respond.store(503, std::sync::atomic::Ordering::SeqCst);
    let (key, secret) = add_sender(&data, "acme", "Acme Clinic", &hook.url);
    let a = send(
        &server,
        &key,
        &format!(r#"{{"to": "{NUMBER}", "body": "{BODY}", "ttl": 1}}"#),
    );
    assert_eq!(a.status, 202, "{}", a.body);
    let id = a.json()["id"].as_str().unwrap().to_string();
    wait_until(
        "status expired",
        20,
        || status(&server, &key, &id).json()["status"] == "expired",
        || status(&server, &key, &id).body,
    );
    assert!(json_lines(&admin(&data, &["held", "--json"])).is_empty());
    // The webhook is down; the server is killed with the event queued.
    server.kill9();
    let server = Server::start_with(
        &data,
        "127.0.0.1:0",
        &["--sms-sink", sink.to_str().unwrap()],
    );
    hook.respond.store(200, std::sync::atomic::Ordering::SeqCst);
    let event = hook.wait("the expired event", |r| r.body.contains("\"expired\""));
    assert!(signature_ok(&event, &secret));
    std::thread::sleep(std::time::Duration::from_secs(3));
    let expired = hook
        .all()
        .into_iter()
        .filter(|r| r.body.contains(&id) && r.body.contains("\"expired\""))
        .count();
    assert_eq!(expired, 1, "told once");
    // The number registering later gets nothing: the message is gone.
    let pat = dir.path().join("pat");
    register_phone(&pat, &server, NUMBER);
    let out = ok(&pat, &["verify-phone", &otp_for(&sink, NUMBER)]);
    assert!(out.contains("0 held messages"), "{out}");
}

/// Outgoing HTTPS verifies the webhook's certificate: a webhook whose
/// certificate chains to a CA given with `--outgoing-ca` is reached; one
/// whose CA is not trusted (an attacker in the path, a misconfigured
/// sender) gets nothing, and the event stays queued, not lost: once its
/// CA is trusted (restart), it arrives, once.
#[test]
fn an_https_webhook_is_reached_only_through_a_trusted_certificate_and_nothing_is_lost() {
    let cas = tempfile::tempdir().unwrap();
    let (trusted, stranger) = (TestCa::new("sender CA"), TestCa::new("unknown CA"));
    let trusted_pem = cas.path().join("trusted.pem");
    std::fs::write(&trusted_pem, trusted.pem()).unwrap();
    let Setup {
        dir: _dir,
        data,
        sink,
        server,
    } = setup(&["--outgoing-ca", trusted_pem.to_str().unwrap()]);
    let good = Receiver::start_tls("/replies", &trusted.leaf());
    let bad = Receiver::start_tls("/replies", &stranger.leaf());
    assert!(good.url.starts_with("https://") && bad.url.starts_with("https://"));
    let (good_key, good_secret) = add_sender(&data, "acme", "Acme Clinic", &good.url);
    let (bad_key, bad_secret) = add_sender(&data, "bank", "Bank", &bad.url);
    let expiring = |key: &str| {
        let a = send(
            &server,
            key,
            &format!(r#"{{"to": "{NUMBER}", "body": "{BODY}", "ttl": 1}}"#),
        );
        assert_eq!(a.status, 202, "{}", a.body);
        a.json()["id"].as_str().unwrap().to_string()
    };
    let (good_id, bad_id) = (expiring(&good_key), expiring(&bad_key));
    let event = good.wait("the expired event over https", |r| {
        r.body.contains(&good_id)
    });
    assert!(signature_ok(&event, &good_secret));
    wait_until(
        "the untrusted webhook's message expired",
        20,
        || status(&server, &bad_key, &bad_id).json()["status"] == "expired",
        || status(&server, &bad_key, &bad_id).body,
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        bad.all().is_empty(),
        "nothing posted to a webhook whose certificate is not trusted"
    );
    // Its CA trusted too (a PEM file with both): the queued event arrives.
    server.kill9();
    let both = cas.path().join("both.pem");
    std::fs::write(&both, trusted.pem() + &stranger.pem()).unwrap();
    let _server = Server::start_with(
        &data,
        "127.0.0.1:0",
        &[
            "--sms-sink",
            sink.to_str().unwrap(),
            "--outgoing-ca",
            both.to_str().unwrap(),
        ],
    );
    let event = bad.wait("the queued event", |r| r.body.contains(&bad_id));
    assert!(signature_ok(&event, &bad_secret));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        bad.all()
            .iter()
            .filter(|r| r.body.contains(&bad_id))
            .count(),
        1,
        "delivered once"
    );
}

/// A CA file that is not one is refused at start with its path.
#[test]
fn an_unreadable_outgoing_ca_file_stops_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let out = sotto()
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("srv"))
        .arg("--outgoing-ca")
        .arg(&not_pem)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ca.pem") && stderr.contains("no CERTIFICATE"),
        "{stderr}"
    );
}

/// `--outgoing-ca` is trusted for senders' webhooks only: a provider
/// stand-in whose certificate chains to that CA (what whoever holds the
/// CA's key could present for api.twilio.com) gets no SMS, so no OTP; the
/// SMS stays queued. The same CA still reaches a webhook.
#[test]
fn an_outgoing_ca_is_not_trusted_for_the_sms_provider() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("srv");
    let ca = TestCa::new("a sender's CA");
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let fake_twilio = Receiver::start_tls("", &ca.leaf());
    let mut child = sotto()
        .env("SOTTO_TWILIO_AUTH_TOKEN", "token-123")
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .args([
            "--twilio-account-sid",
            "AC123",
            "--twilio-from",
            "+15550009999",
            "--twilio-base-url",
            &fake_twilio.url,
            "--sms-inbound-url",
            "https://sotto.example/v1/sms/inbound",
            "--outgoing-ca",
            ca_pem.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = lines.next().unwrap().unwrap();
    let server_url = addr.strip_prefix("listening on ").unwrap().to_string();
    let hook = Receiver::start_tls("/replies", &ca.leaf());
    let (key, secret) = add_sender(&data, "acme", "Acme Clinic", &hook.url);
    let pat = dir.path().join("pat");
    ok(&pat, &["register-phone", NUMBER, "--server", &server_url]);
    // A webhook behind the CA is reached (the CA file was taken)...
    let auth = format!("Authorization: Bearer {key}");
    let a = curl(&[
        "-H",
        &auth,
        "-H",
        "content-type: application/json",
        "-d",
        &format!(r#"{{"to": "+15557654321", "body": "{BODY}", "ttl": 1}}"#),
        &format!("{server_url}/v1/sender/messages"),
    ]);
    assert_eq!(a.status, 202, "{}", a.body);
    let event = hook.wait("the expired event", |r| r.body.contains("\"expired\""));
    assert!(signature_ok(&event, &secret));
    // ... while the provider stand-in presenting a certificate of the same
    // CA never got the OTP (the server refused its certificate).
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        fake_twilio.all().is_empty(),
        "the SMS (with the OTP) went to a provider trusted only through --outgoing-ca"
    );
    let _ = child.kill();
    let _ = child.wait();
}
