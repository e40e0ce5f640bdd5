//! Safety numbers: what two users compare out of band (read aloud, or one
//! scans the other's code) to know that the keys their apps hold are each
//! other's. Computed from both user keys only, so it stays the same across
//! device changes, and both sides see the same number.

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::keys::UserPublic;

/// Hash iterations per fingerprint: slows a search for a key whose number
/// collides with a target's.
const ITERATIONS: u32 = 5_200;
const FINGERPRINT_VERSION: u8 = 1;

/// A safety number: 60 digits, and a string a QR code can carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetyNumber {
    /// 60 decimal digits (two 30-digit halves, one per user, in a fixed order).
    pub digits: String,
    /// `sotto-safety:1:<hex>:<hex>` with both fingerprints in the same order.
    pub qr: String,
}

impl SafetyNumber {
    /// The digits in twelve groups of five, as shown to people.
    pub fn grouped(&self) -> String {
        let chunks: Vec<&str> = (0..self.digits.len())
            .step_by(5)
            .map(|i| &self.digits[i..i + 5])
            .collect();
        chunks.join(" ")
    }
}

fn fingerprint(user: &UserPublic) -> [u8; 30] {
    let mut digest: [u8; 64] = {
        let mut h = Sha512::new();
        h.update([0, FINGERPRINT_VERSION]);
        h.update(b"sotto/v1/safety");
        h.update(user.0);
        h.finalize().into()
    };
    for _ in 1..ITERATIONS {
        let mut h = Sha512::new();
        h.update(digest);
        h.update(user.0);
        digest = h.finalize().into();
    }
    let mut out = [0u8; 30];
    out.copy_from_slice(&digest[..30]);
    out
}

fn digits(fp: &[u8; 30]) -> String {
    let mut s = String::with_capacity(30);
    for chunk in fp.chunks(5) {
        let v = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        s.push_str(&format!("{:05}", v % 100_000));
    }
    s
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One user's half of every safety number it is part of: 30 digits in six
/// groups of five. A newly linked device shows it for the account it joins
/// (the same digits appear in any contact's `verify` with that user).
pub fn user_fingerprint(user: &UserPublic) -> String {
    let d = digits(&fingerprint(user));
    let chunks: Vec<&str> = (0..d.len()).step_by(5).map(|i| &d[i..i + 5]).collect();
    chunks.join(" ")
}

/// The safety number of two users; the same whichever side computes it.
pub fn safety_number(a: &UserPublic, b: &UserPublic) -> SafetyNumber {
    let (fa, fb) = (fingerprint(a), fingerprint(b));
    let (first, second) = if fa <= fb { (fa, fb) } else { (fb, fa) };
    SafetyNumber {
        digits: format!("{}{}", digits(&first), digits(&second)),
        qr: format!(
            "sotto-safety:{FINGERPRINT_VERSION}:{}:{}",
            hex(&first),
            hex(&second)
        ),
    }
}

/// What a caller learns when a contact presents a user key.
#[must_use = "a changed key must be shown to the user before trusting it"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContactKey {
    /// No key was known: trust on first use, and offer to verify.
    FirstSeen,
    /// The same key as before.
    Unchanged,
    /// The contact's key is not the one held before: someone may be in the
    /// middle, or the contact reinstalled. Refuse until the user decides.
    Changed { previous: UserPublic },
}

/// Compares a presented user key with the one held for that contact.
pub fn check_contact_key(known: Option<&UserPublic>, presented: &UserPublic) -> ContactKey {
    match known {
        None => ContactKey::FirstSeen,
        Some(k) if bool::from(k.0.ct_eq(&presented.0)) => ContactKey::Unchanged,
        Some(k) => ContactKey::Changed { previous: *k },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_on_both_sides_and_distinct_per_pair() {
        let (a, b, c) = (
            UserPublic([1; 32]),
            UserPublic([2; 32]),
            UserPublic([3; 32]),
        );
        let ab = safety_number(&a, &b);
        assert_eq!(ab, safety_number(&b, &a));
        assert_eq!(ab.digits.len(), 60);
        assert!(ab.digits.bytes().all(|d| d.is_ascii_digit()));
        assert_ne!(ab, safety_number(&a, &c));
        assert_eq!(ab.grouped().split(' ').count(), 12);
        assert!(ab.qr.starts_with("sotto-safety:1:"));
    }

    #[test]
    fn key_change_is_reported() {
        let (a, b) = (UserPublic([1; 32]), UserPublic([2; 32]));
        assert_eq!(check_contact_key(None, &a), ContactKey::FirstSeen);
        assert_eq!(check_contact_key(Some(&a), &a), ContactKey::Unchanged);
        assert_eq!(
            check_contact_key(Some(&a), &b),
            ContactKey::Changed { previous: a }
        );
    }
}
