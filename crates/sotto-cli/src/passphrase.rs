//! The local store's passphrase: SOTTO_PASSPHRASE, or a prompt on the
//! terminal (twice when creating a store).

use zeroize::Zeroizing;

pub const ENV: &str = "SOTTO_PASSPHRASE";

/// The passphrase of an existing store.
pub fn existing() -> Result<Zeroizing<String>, String> {
    if let Ok(p) = std::env::var(ENV) {
        return Ok(Zeroizing::new(p));
    }
    prompt("Passphrase for this device's store: ")
}

/// A passphrase for a new store, confirmed when typed.
pub fn new() -> Result<Zeroizing<String>, String> {
    if let Ok(p) = std::env::var(ENV) {
        return check_new(Zeroizing::new(p));
    }
    let first = prompt("New passphrase for this device's store: ")?;
    let second = prompt("Repeat the passphrase: ")?;
    if *first != *second {
        return Err("the passphrases differ; nothing was created".into());
    }
    check_new(first)
}

fn check_new(p: Zeroizing<String>) -> Result<Zeroizing<String>, String> {
    if p.is_empty() {
        return Err(format!(
            "the passphrase is empty: set {ENV} or type one at the prompt"
        ));
    }
    Ok(p)
}

fn prompt(text: &str) -> Result<Zeroizing<String>, String> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|_| format!("no passphrase: set {ENV} or run sotto in a terminal"))
}
